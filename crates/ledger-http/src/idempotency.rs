//! Idempotent writes: a `POST /app/transactions` carrying an `Idempotency-Key` header (or, when
//! configured, `x-ms-client-request-id`, which the Azure SDKs keep across their own retries)
//! is written once; a retry with the same key from the same caller within the retention
//! window is answered with the original transaction id instead of a second entry.
//!
//! Why the key lives in the ledger: an acknowledged write must stay deduplicated across a
//! crash, so the (hashed, caller-scoped) key is recorded inside the entry's encrypted part,
//! in the same transaction, and the store's index maps it to the transaction; recovery
//! rebuilds that map from the ledger like every other index. A side table written after the
//! commit could lose the key for a write the client was told about.
//!
//! Concurrent requests with the same key are serialised on a per-key lock, so the second one
//! finds the first one's transaction instead of racing it.

use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use ledger_core::hash::Hash32;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
pub const CLIENT_REQUEST_ID_HEADER: &str = "x-ms-client-request-id";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The caller-scoped digest that identifies a write: SHA-256 over a label, the caller's user
/// id and the key. Two callers using the same key never collide, and the raw key is not
/// stored.
pub fn key_digest(user_id: &str, key: &str) -> Hash32 {
    let mut input = Vec::with_capacity(32 + user_id.len() + key.len());
    input.extend_from_slice(b"cledger/v1/idempotency-key\0");
    input.extend_from_slice(user_id.as_bytes());
    input.push(0);
    input.extend_from_slice(key.as_bytes());
    ledger_core::hash::sha256(&input)
}

/// The request's idempotency key, if it has one: `Idempotency-Key`, else (when
/// `use_client_request_id`) `x-ms-client-request-id`.
pub fn request_key(headers: &HeaderMap, use_client_request_id: bool) -> ApiResult<Option<String>> {
    let value = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        Some(v) => v,
        None => match headers.get(CLIENT_REQUEST_ID_HEADER) {
            Some(v) if use_client_request_id => v,
            _ => return Ok(None),
        },
    };
    let key = value.to_str().ok().filter(|k| {
        !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
    });
    match key {
        Some(k) => Ok(Some(k.to_owned())),
        None => Err(ApiError::InvalidInput(format!(
            "The idempotency key must be 1 to {MAX_KEY_LEN} visible ASCII characters."
        ))),
    }
}

/// Per-key locks of the requests in progress.
#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<Hash32, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a key's lock; the table entry goes when its last holder or waiter is done.
pub struct KeyGuard<'a> {
    table: &'a KeyLocks,
    digest: Hash32,
    lock: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl KeyLocks {
    pub async fn lock(&self, digest: Hash32) -> KeyGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(digest).or_default().clone()
        };
        let held = lock.clone().lock_owned().await;
        KeyGuard {
            table: self,
            digest,
            lock,
            _held: held,
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.table.locks.lock().unwrap_or_else(|p| p.into_inner());
        // The table's reference, ours, and the one inside our guard: nobody else holds or
        // waits for this key.
        if Arc::strong_count(&self.lock) == 3 {
            locks.remove(&self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn keys_are_scoped_by_caller() {
        assert_ne!(key_digest("A", "k"), key_digest("B", "k"));
        assert_ne!(key_digest("A", "k1"), key_digest("A", "k2"));
        // The separator keeps (user, key) pairs from running into each other.
        assert_ne!(key_digest("ab", "c"), key_digest("a", "bc"));
    }

    #[test]
    fn header_choice_and_validation() {
        let mut h = HeaderMap::new();
        assert_eq!(request_key(&h, true).unwrap(), None);
        h.insert(CLIENT_REQUEST_ID_HEADER, HeaderValue::from_static("req-1"));
        assert_eq!(request_key(&h, false).unwrap(), None);
        assert_eq!(request_key(&h, true).unwrap().as_deref(), Some("req-1"));
        h.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_static("key-1"));
        assert_eq!(request_key(&h, true).unwrap().as_deref(), Some("key-1"));
        h.insert(
            IDEMPOTENCY_KEY_HEADER,
            HeaderValue::from_static("has space"),
        );
        assert!(request_key(&h, false).is_err());
        let long = "x".repeat(MAX_KEY_LEN + 1);
        h.insert(
            IDEMPOTENCY_KEY_HEADER,
            HeaderValue::from_str(&long).unwrap(),
        );
        assert!(request_key(&h, false).is_err());
    }

    #[tokio::test]
    async fn same_key_waits_and_the_table_empties() {
        let locks = Arc::new(KeyLocks::default());
        let d = key_digest("u", "k");
        let first = locks.lock(d).await;
        let l2 = locks.clone();
        let second = tokio::spawn(async move {
            let _g = l2.lock(d).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the second holder must wait");
        drop(first);
        second.await.unwrap();
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
