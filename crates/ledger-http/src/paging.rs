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

/// Most bytes of entry contents per page (a page holds at least one entry). Without it a page
/// of 100 entries of 1 MiB would be a response of hundreds of MiB once JSON-escaped; with it
/// pages stay a few MiB, and clients follow `nextLink` as they do anyway.
pub const PAGE_CONTENT_BYTES: usize = 1 << 20;

/// How many of the entries whose contents have these sizes go on one page: at most
/// `max_entries`, at least one, and no more than fit in `max_bytes` together.
pub fn entries_on_page(
    sizes: impl IntoIterator<Item = usize>,
    max_entries: usize,
    max_bytes: usize,
) -> usize {
    let mut total = 0usize;
    let mut count = 0;
    for size in sizes.into_iter().take(max_entries) {
        total = total.saturating_add(size);
        if count > 0 && total > max_bytes {
            break;
        }
        count += 1;
    }
    count
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded_in_entries_and_bytes() {
        assert_eq!(entries_on_page([10; 150], 100, 1 << 20), 100);
        assert_eq!(entries_on_page([400_000; 10], 100, 1 << 20), 2);
        assert_eq!(entries_on_page([5 << 20, 1], 100, 1 << 20), 1); // at least one
        assert_eq!(entries_on_page([], 100, 1 << 20), 0);
        assert_eq!(entries_on_page([1 << 20, 0, 1], 100, 1 << 20), 2); // exactly full
    }
}
