//! Assembling a page: the template's `{{CSP}}`, `{{STYLE}}`, `{{SCRIPT}}` (and the explorer's
//! `{{LEDGER_ID}}`) filled in, once per process for what does not depend on the ledger.
//!
//! The page script is `verify.mjs`, then `report-view.js`, then the page's UI module, each
//! without its `import { ... } from "./<sibling>";` lines: an inline `<script type="module">`
//! has no URL to resolve a sibling file against (and the offline file has no sibling), so the
//! modules become one, which defines the same names. The assets keep their imports so that
//! each is a valid module on its own (for editors and the JavaScript tests).

use crate::csp::{self, Connect, Policy};
use std::sync::LazyLock;

const VERIFIER_HTML: &str = include_str!("../assets/verifier.html");
const EXPLORER_HTML: &str = include_str!("../assets/explorer.html");
const STYLE: &str = include_str!("../assets/style.css");
const VERIFY_MJS: &str = include_str!("../assets/verify.mjs");
const REPORT_VIEW_JS: &str = include_str!("../assets/report-view.js");
const VERIFIER_JS: &str = include_str!("../assets/verifier.js");
const EXPLORER_JS: &str = include_str!("../assets/explorer.js");

/// A page's parts that do not depend on the ledger.
pub(crate) struct Page {
    template: &'static str,
    /// The exact text of the inline `<script type="module">`.
    pub script: String,
    pub policy: Policy,
}

impl Page {
    fn new(template: &'static str, ui_module: &str, connect: Connect) -> Page {
        let script = script(ui_module);
        let policy = csp::policy(&script, STYLE, connect);
        Page {
            template,
            script,
            policy,
        }
    }

    /// The HTML, with `more` placeholders (values already escaped) besides the common ones.
    fn render(&self, more: &[(&str, &str)]) -> String {
        let csp = escape_attribute(&self.policy.meta);
        let mut values = vec![
            ("CSP", csp.as_str()),
            ("STYLE", STYLE),
            ("SCRIPT", self.script.as_str()),
        ];
        values.extend_from_slice(more);
        fill(self.template, &values)
    }
}

pub(crate) static VERIFIER: LazyLock<Page> =
    LazyLock::new(|| Page::new(VERIFIER_HTML, VERIFIER_JS, Connect::Nowhere));
pub(crate) static EXPLORER: LazyLock<Page> =
    LazyLock::new(|| Page::new(EXPLORER_HTML, EXPLORER_JS, Connect::SameOrigin));
static VERIFIER_PAGE: LazyLock<String> = LazyLock::new(|| VERIFIER.render(&[]));

/// The offline evidence verifier: one self-contained HTML file (served at `/verify`, written
/// by `cledger verifier-page`). Its policy forbids every network request.
pub fn verifier_page() -> &'static str {
    &VERIFIER_PAGE
}

/// The read-only ledger explorer for the ledger named `ledger_id` (served at `/explorer`); it
/// may only call its own origin's REST API.
pub fn explorer_page(ledger_id: &str) -> String {
    EXPLORER.render(&[("LEDGER_ID", &escape_attribute(ledger_id))])
}

/// The modules every page script starts with, in dependency order, under the names the other
/// assets import them by.
const SHARED_MODULES: [(&str, &str); 2] = [
    ("./verify.mjs", VERIFY_MJS),
    ("./report-view.js", REPORT_VIEW_JS),
];

/// The shared modules then `ui_module`, each followed by a newline and without its imports of
/// siblings; every other byte is kept, so the text is exactly what the policy hashes.
fn script(ui_module: &str) -> String {
    let mut script = String::with_capacity(
        SHARED_MODULES
            .iter()
            .map(|(_, m)| m.len() + 1)
            .sum::<usize>()
            + ui_module.len(),
    );
    for module in SHARED_MODULES.iter().map(|(_, m)| *m).chain([ui_module]) {
        for line in module.split_inclusive('\n') {
            if sibling_import(line).is_none() {
                script.push_str(line);
            }
        }
        if !script.ends_with('\n') {
            script.push('\n');
        }
    }
    script
}

/// The names between the braces when `line` is `import { ... } from "./<shared module>";`
/// (single quotes and a missing semicolon accepted), else `None`.
fn sibling_import(line: &str) -> Option<&str> {
    let line = line.trim();
    let line = line.strip_suffix(';').unwrap_or(line).trim_end();
    let rest = line.strip_prefix("import")?.trim_start();
    let rest = SHARED_MODULES.iter().find_map(|(name, _)| {
        rest.strip_suffix(&format!("\"{name}\""))
            .or_else(|| rest.strip_suffix(&format!("'{name}'")))
    })?;
    rest.trim_end()
        .strip_suffix("from")?
        .trim_end()
        .strip_prefix('{')?
        .strip_suffix('}')
}

/// Replaces each `{{NAME}}` of `template` that `values` names, in one pass: text inserted is
/// never searched again (a script may contain `{{` of its own). Unknown names are left as is.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let known = after.find("}}").and_then(|end| {
            let name = &after[..end];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| (end, *value))
        });
        match known {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for a double- or single-quoted HTML attribute value.
fn escape_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use sha2::{Digest, Sha256};

    const SCRIPT_OPEN: &str = "<script type=\"module\">";

    /// The text between `open` and the next `close` (there must be exactly one `open`).
    fn between<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
        assert_eq!(page.matches(open).count(), 1, "one {open} in the page");
        let start = page.find(open).unwrap() + open.len();
        let len = page[start..].find(close).expect("closing tag");
        &page[start..start + len]
    }

    fn unescape(text: &str) -> String {
        text.replace("&#39;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// The `content` of the one `<meta>` element with `{attribute}="{value}"`, unescaped.
    fn meta(page: &str, attribute: &str, value: &str) -> String {
        let wanted = format!(" {attribute}=\"{value}\"");
        let tags: Vec<&str> = page
            .match_indices("<meta ")
            .map(|(i, _)| &page[i..i + page[i..].find('>').expect("end of <meta>")])
            .filter(|tag| tag.contains(&wanted))
            .collect();
        assert_eq!(tags.len(), 1, "one <meta{wanted}>");
        unescape(between(tags[0], "content=\"", "\""))
    }

    fn pages() -> [(&'static str, String, &'static Page); 2] {
        [
            ("verifier", verifier_page().to_owned(), &*VERIFIER),
            ("explorer", explorer_page("my-ledger"), &*EXPLORER),
        ]
    }

    #[test]
    fn placeholders_are_all_replaced() {
        for (name, page, p) in pages() {
            // Outside the inlined assets (which may use `{{` themselves), nothing is left.
            let html = page.replace(&p.script, "").replace(STYLE, "");
            assert!(!html.contains("{{"), "{name}: a placeholder is left");
            assert!(html.contains("<style></style>"), "{name}");
            assert!(html.contains(&format!("{SCRIPT_OPEN}</script>")), "{name}");
        }
    }

    #[test]
    fn scripts_import_nothing_and_contain_both_modules() {
        for (name, page, p) in pages() {
            let script = between(&page, SCRIPT_OPEN, "</script>");
            assert_eq!(script, p.script, "{name}");
            assert!(script.starts_with(VERIFY_MJS), "{name}");
            for line in script.lines() {
                let line = line.trim();
                assert!(
                    !line.starts_with("import "),
                    "{name}: import left in the page script: {line}"
                );
            }
        }
    }

    /// Concatenating the modules keeps the imported names only if they are not renamed.
    #[test]
    fn ui_modules_import_names_unrenamed() {
        for ui in [REPORT_VIEW_JS, VERIFIER_JS, EXPLORER_JS] {
            for names in ui.lines().filter_map(sibling_import) {
                assert!(
                    !names.split(',').any(|n| n.contains(" as ")),
                    "rename in an import of a shared module: {names}"
                );
            }
        }
    }

    #[test]
    fn import_lines_recognized() {
        let names = sibling_import("import { a, b } from \"./verify.mjs\";\n");
        assert_eq!(names, Some(" a, b "));
        assert!(sibling_import("import {a} from './verify.mjs'").is_some());
        assert!(sibling_import("import { b } from \"./report-view.js\"").is_some());
        assert!(sibling_import("import * as v from \"./verify.mjs\";").is_none());
        assert!(sibling_import("import { a } from \"./other.mjs\";").is_none());
        assert!(sibling_import("// import { a } from \"./verify.mjs\";").is_none());
        let s = script("import { a } from \"./verify.mjs\";\r\nconst b = a;\r\n");
        assert!(s.starts_with(VERIFY_MJS), "verify.mjs first, whole");
        assert!(
            s.ends_with("\nconst b = a;\r\n"),
            "the UI module last, its import dropped"
        );
        assert!(
            !s.contains("from \"./verify.mjs\""),
            "report-view's import dropped"
        );
        assert!(
            s.contains("export function showReport("),
            "report-view.js in between"
        );
    }

    #[test]
    fn policy_hashes_are_those_of_the_inline_texts() {
        let hash = |text: &str| {
            let digest = Sha256::digest(text.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        for (name, page, p) in pages() {
            let script = between(&page, SCRIPT_OPEN, "</script>");
            let style = between(&page, "<style>", "</style>");
            let csp = meta(&page, "http-equiv", "Content-Security-Policy");
            assert_eq!(csp, p.policy.meta, "{name}");
            assert!(
                csp.contains(&format!("; script-src {}; ", hash(script))),
                "{name}: {csp}"
            );
            assert!(
                csp.contains(&format!("; style-src {}; ", hash(style))),
                "{name}: {csp}"
            );
            assert_eq!(
                p.policy.header,
                format!("{csp}; frame-ancestors 'none'"),
                "{name}"
            );
        }
        assert!(VERIFIER.policy.meta.contains("connect-src 'none'"));
        assert!(EXPLORER.policy.meta.contains("connect-src 'self'"));
    }

    /// The HTML parser ends a script at the first `</script` whatever the JavaScript means
    /// (and `<!--` can make it skip one); likewise `</style`. Assets are constants, so a test
    /// is the check.
    #[test]
    fn inline_texts_cannot_end_their_element() {
        for (name, _, p) in pages() {
            let script = p.script.to_ascii_lowercase();
            assert!(
                !script.contains("</script"),
                "{name}: </script in the script"
            );
            assert!(!script.contains("<!--"), "{name}: <!-- in the script");
        }
        assert!(!STYLE.to_ascii_lowercase().contains("</style"));
    }

    /// The policy allows only the hashed elements: inline `style="..."` attributes and
    /// `on...=` handlers in the templates would be blocked.
    #[test]
    fn templates_have_no_inline_attributes_the_policy_blocks() {
        for template in [VERIFIER_HTML, EXPLORER_HTML] {
            let lower = template.to_ascii_lowercase();
            assert!(!lower.contains(" style="), "inline style attribute");
            for handler in ["onclick=", "onload=", "onchange=", "onsubmit=", "oninput="] {
                assert!(!lower.contains(handler), "inline {handler} handler");
            }
        }
    }

    #[test]
    fn ledger_id_is_escaped() {
        let page = explorer_page("a\"<b");
        assert!(page.contains("content=\"a&quot;&lt;b\""));
        assert!(!page.contains("a\"<b"));
        assert_eq!(meta(&page, "name", "cledger-ledger-id"), "a\"<b");
        assert_eq!(
            meta(&explorer_page("cledger"), "name", "cledger-ledger-id"),
            "cledger"
        );
        assert_eq!(escape_attribute("&'>"), "&amp;&#39;&gt;");
    }

    #[test]
    fn fill_is_one_pass() {
        let out = fill("<{{A}}|{{B}}|{{C}}|{{A", &[("A", "{{B}}"), ("B", "b")]);
        assert_eq!(out, "<{{B}}|b|{{C}}|{{A");
    }
}
