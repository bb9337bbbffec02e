//! The characters no name may hold: collection ids, tags, user ids, role names and token
//! principals are shown verbatim to other users (lists, logs, terminals), so none of them may
//! carry a control character (NUL, a line break that forges a log line, ESC that starts a
//! terminal escape sequence), a Unicode line or paragraph separator, or a bidirectional
//! formatting character (U+202E and its kin reorder the text around them, so that
//! `invoice\u{202E}fdp.exe` reads as `invoiceexe.pdf`). One check, used for every kind of name,
//! so that they cannot drift apart.

/// Explicit bidirectional formatting characters (Unicode's `Bidi_Control` property): the
/// embeddings, overrides and isolates, and the implicit marks.
const BIDI_CONTROLS: [char; 12] = [
    '\u{061C}', // ARABIC LETTER MARK
    '\u{200E}', // LEFT-TO-RIGHT MARK
    '\u{200F}', // RIGHT-TO-LEFT MARK
    '\u{202A}', // LEFT-TO-RIGHT EMBEDDING
    '\u{202B}', // RIGHT-TO-LEFT EMBEDDING
    '\u{202C}', // POP DIRECTIONAL FORMATTING
    '\u{202D}', // LEFT-TO-RIGHT OVERRIDE
    '\u{202E}', // RIGHT-TO-LEFT OVERRIDE
    '\u{2066}', // LEFT-TO-RIGHT ISOLATE
    '\u{2067}', // RIGHT-TO-LEFT ISOLATE
    '\u{2068}', // FIRST STRONG ISOLATE
    '\u{2069}', // POP DIRECTIONAL ISOLATE
];

/// The first character of `name` that no name may hold, with its byte offset.
pub fn forbidden_char(name: &str) -> Option<(usize, char)> {
    name.char_indices().find(|(_, c)| kind(*c).is_some())
}

/// Why `c` may not be in a name, or `None` if it may.
fn kind(c: char) -> Option<&'static str> {
    if c.is_control() {
        Some("a control character")
    } else if matches!(c, '\u{2028}' | '\u{2029}') {
        Some("a line or paragraph separator")
    } else if BIDI_CONTROLS.contains(&c) {
        Some("a bidirectional formatting character")
    } else {
        None
    }
}

/// Checks `name`. The error says which character, where and what it is ("holds U+001B (a
/// control character) at byte 0"), for each caller to word into its own error.
pub fn check(name: &str) -> Result<(), String> {
    match forbidden_char(name) {
        None => Ok(()),
        Some((at, c)) => Err(format!(
            "holds U+{:04X} ({}) at byte {at}",
            u32::from(c),
            kind(c).unwrap_or("a forbidden character")
        )),
    }
}

/// What every error about a forbidden character adds, so that a person knows the rule.
pub const RULE: &str = "names may not hold control characters, line or paragraph separators, or \
                        bidirectional formatting characters";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_controls_separators_and_bidi_and_names_them() {
        for (name, expected) in [
            ("nul\0", "holds U+0000 (a control character) at byte 3"),
            ("a\nb", "holds U+000A (a control character) at byte 1"),
            ("\u{1b}[31m", "holds U+001B (a control character) at byte 0"),
            ("\u{85}", "holds U+0085 (a control character) at byte 0"),
            (
                "x\u{2028}",
                "holds U+2028 (a line or paragraph separator) at byte 1",
            ),
            (
                "abc\u{202E}fdp.exe",
                "holds U+202E (a bidirectional formatting character) at byte 3",
            ),
            (
                "\u{2067}",
                "holds U+2067 (a bidirectional formatting character) at byte 0",
            ),
        ] {
            assert_eq!(check(name).unwrap_err(), expected, "{name:?}");
        }
        for fine in [
            "subledger:0",
            "my collection",
            "ü✓ a+b",
            "عربى",
            "שלום",
            "日本",
        ] {
            assert_eq!(check(fine), Ok(()), "{fine:?}");
        }
    }
}
