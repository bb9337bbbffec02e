//! Continuation links of paged lists (acl-api.md §2.4).
//!
//! A link is a relative URL repeating the query with a moved start, parameters in the order
//! the SDKs send them, every value percent-encoded. Clients keep the path and the parameters
//! and overwrite `api-version` with their own, so the link must carry every bound needed to
//! make the next page stable (e.g. the pinned end of a range).

use crate::query;
use crate::version::ApiVersion;
use serde_json::{Map, Value};

/// Most entries per page of `GET /app/transactions`.
pub const PAGE_SIZE: usize = 100;

/// `path?api-version=..&k=v..`, values percent-encoded.
pub fn link(version: ApiVersion, path: &str, params: &[(&str, &str)]) -> String {
    let mut out = format!("{path}?api-version={}", query::encode(version.as_str()));
    for (key, value) in params {
        out.push('&');
        out.push_str(key);
        out.push('=');
        out.push_str(&query::encode(value));
    }
    out
}

/// Adds the next-page link under the member name `version` uses.
pub fn insert_next_link(page: &mut Map<String, Value>, version: ApiVersion, link: String) {
    page.insert(version.next_link_key().to_owned(), Value::String(link));
}
