//! The pages' Content-Security-Policy: nothing is allowed but the one inline script and the
//! one inline style, named by their SHA-256 (CSP Level 2 hash sources).

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Where a page may send requests (`connect-src`: `fetch`, `XMLHttpRequest`, `WebSocket`...).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Connect {
    /// Nowhere: the offline verifier.
    Nowhere,
    /// Its own origin only: the explorer, which reads the server's public API.
    SameOrigin,
}

/// One page's policy, in the two places it is delivered.
#[derive(Debug)]
pub(crate) struct Policy {
    /// For `<meta http-equiv="Content-Security-Policy">` (raw: escape it for the attribute).
    pub meta: String,
    /// For the response header: the same, plus what only a header can say.
    pub header: String,
}

/// The policy for a page whose only inline script is exactly `script` and whose only inline
/// style is exactly `style` (the text between the tags, byte for byte).
pub(crate) fn policy(script: &str, style: &str, connect: Connect) -> Policy {
    let connect = match connect {
        Connect::Nowhere => "'none'",
        Connect::SameOrigin => "'self'",
    };
    let meta = format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:; connect-src {connect}; \
         form-action 'none'; base-uri 'none'",
        hash_source(script),
        hash_source(style),
    );
    // Browsers ignore `frame-ancestors` in a meta policy (CSP3 §6.1.2), so it is header-only.
    let header = format!("{meta}; frame-ancestors 'none'");
    Policy { meta, header }
}

/// `'sha256-<base64>'` of `text` as UTF-8, which is how browsers hash an inline element.
fn hash_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hash_and_shape() {
        // echo -n 'x' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            hash_source("x"),
            "'sha256-LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE='"
        );
        let p = policy("x", "y", Connect::Nowhere);
        assert!(
            p.meta
                .starts_with("default-src 'none'; script-src 'sha256-")
        );
        assert!(p.meta.contains("; connect-src 'none'; "));
        assert!(!p.meta.contains("frame-ancestors"));
        assert_eq!(p.header, format!("{}; frame-ancestors 'none'", p.meta));
        let p = policy("x", "y", Connect::SameOrigin);
        assert!(p.meta.contains("; connect-src 'self'; "));
    }
}
