//! The query string, decoded the way CCF decodes it.
//!
//! Each parameter is split on its first `=`, then key and value are decoded: `%XX` is that
//! byte and `+` is a space (form encoding, which the official JavaScript SDK uses: its
//! `URLSearchParams` sends `my collection` as `my+collection`). CCF's
//! `ccf::http::parse_query` decodes the same way. A plus sign arrives as `%2B` (the Python and
//! .NET SDKs, and our own links, escape it). The encoder is the exact inverse, used for
//! `nextLink`.

use crate::error::ApiError;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is escaped, so a value survives any decoder
/// (a raw `+` would be a space to us, to CCF and to Python's `parse_qs`; `%2B` is safe).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Decoded query parameters, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decodes a raw query string (without the `?`). Empty pieces (`a=1&&b=2`) are skipped.
    pub fn parse(raw: Option<&str>) -> Result<QueryParams, ApiError> {
        let mut pairs = Vec::new();
        for piece in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            let key = decode(key, key)?;
            let value = decode(value, &key)?;
            pairs.push((key, value));
        }
        Ok(QueryParams { pairs })
    }

    /// Every decoded (name, value), in request order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value of `name`. Given more than once with the same value, it is that value: the
    /// official JavaScript SDK appends `api-version` to a `nextLink` that already carries it
    /// (and CCF reads the first of repeated parameters). With different values it is an
    /// error, since which one was meant is a guess.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self
            .pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = found.next();
        if let Some(other) = found.find(|v| Some(*v) != first) {
            return Err(ApiError::InvalidQueryParameter(format!(
                "The query parameter '{name}' is given more than once, with different values \
                 ({:?} and {other:?}).",
                first.unwrap_or_default()
            )));
        }
        Ok(first)
    }
}

fn decode(text: &str, name: &str) -> Result<String, ApiError> {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            ApiError::InvalidQueryParameter(format!(
                "The query parameter '{name}' is not valid UTF-8 once percent-decoded."
            ))
        })
}

/// Percent-encodes a query value (see [`VALUE`]).
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_a_space_and_an_escaped_plus_a_plus() {
        let q = QueryParams::parse(Some("collectionId=a+b%2Bc%20d&x")).unwrap();
        assert_eq!(q.get("collectionId").unwrap(), Some("a b+c d"));
        assert_eq!(q.get("x").unwrap(), Some(""));
        assert_eq!(q.get("y").unwrap(), None);
    }

    #[test]
    fn rejects_conflicting_duplicates_and_bad_utf8() {
        let q = QueryParams::parse(Some("a=1&a=2")).unwrap();
        let err = q.get("a").unwrap_err();
        assert!(
            matches!(&err, ApiError::InvalidQueryParameter(m) if m.contains("different values")),
            "{err:?}"
        );
        let q = QueryParams::parse(Some("a=1&b=x&a=1&a=3")).unwrap();
        assert!(q.get("a").is_err());
        assert!(QueryParams::parse(Some("a=%FF")).is_err());
    }

    #[test]
    fn equal_duplicates_are_one_value() {
        // What @azure-rest/confidential-ledger 1.0.0 sends for page 2.
        let q = QueryParams::parse(Some(
            "api-version=2022-05-13&collectionId=c&fromTransactionId=1.206&api-version=2022-05-13",
        ))
        .unwrap();
        assert_eq!(q.get("api-version").unwrap(), Some("2022-05-13"));
        assert_eq!(q.get("collectionId").unwrap(), Some("c"));
        // Percent-encoding does not make two values different.
        let q = QueryParams::parse(Some("c=a%20b&c=a+b")).unwrap();
        assert_eq!(q.get("c").unwrap(), Some("a b"));
    }

    #[test]
    fn encode_round_trips() {
        for s in ["a b+c/d?e&f=g:h", "ü ✓", "subledger:0", "%2B"] {
            let q = QueryParams::parse(Some(&format!("k={}", encode(s)))).unwrap();
            assert_eq!(q.get("k").unwrap(), Some(s));
        }
        assert_eq!(encode("a b+c:~"), "a%20b%2Bc%3A~");
    }
}
