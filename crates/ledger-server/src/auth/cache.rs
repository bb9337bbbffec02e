//! Bearer tokens already verified, so that a client sending the same token with every request
//! pays for its signature check once, not per request.
//!
//! Verifying an ES256 or RS256 signature cost ~30% of the server's CPU under a write load of
//! token clients (h2load, 64 connections): more than the ledger's own work per write. A token
//! is immutable, so once it verified, the same bytes verify again until its `exp` — as long as
//! the key that signed it is still one the issuer publishes. An entry is therefore kept only:
//! * until the token's `exp` (plus the same leeway validation allows);
//! * while its issuer's key set is the very one it was verified with: a key refresh (which
//!   is how a revoked key disappears) makes every entry of that issuer verify again.
//!
//! Only successes are kept; a refused token is checked in full every time. Authorization is
//! not cached here: roles are read from the ledger on every request.
//!
//! Entries are keyed by SHA-256 of the token, so the map holds no token. The map is bounded:
//! when it is full, expired entries are dropped, and if none were, all of them (a burst of
//! distinct valid tokens then simply verifies in full, as without a cache).

use super::keys::KeySet;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most tokens remembered at once (each entry is ~100 bytes).
pub const CAPACITY: usize = 10_000;

/// What a full check of a token established, and how long it may be remembered.
pub struct VerifiedToken {
    pub user: String,
    /// Index of the issuer (in the validator's list) whose key verified it.
    pub issuer: usize,
    /// That issuer's key set the signature was checked against.
    pub keys: Arc<KeySet>,
    /// Unix seconds after which it is no longer used: `exp` + leeway.
    pub valid_until: u64,
}

pub struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], VerifiedToken>>,
    capacity: usize,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The user and issuer of `token` if it verified before, is not past `valid_until` at
    /// `now` (Unix seconds), and `current_keys(issuer)` is still the key set it verified with.
    pub fn get(
        &self,
        token: &str,
        now: u64,
        current_keys: impl Fn(usize) -> Arc<KeySet>,
    ) -> Option<(String, usize)> {
        let key = fingerprint(token);
        let mut entries = self.lock();
        let entry = entries.get(&key)?;
        if now <= entry.valid_until && Arc::ptr_eq(&entry.keys, &current_keys(entry.issuer)) {
            return Some((entry.user.clone(), entry.issuer));
        }
        entries.remove(&key);
        None
    }

    /// Remembers that `token` verified, at `now`.
    pub fn insert(&self, token: &str, verified: VerifiedToken, now: u64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, e| now <= e.valid_until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(fingerprint(token), verified);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], VerifiedToken>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn fingerprint(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(keys: &Arc<KeySet>, valid_until: u64) -> VerifiedToken {
        VerifiedToken {
            user: "user-1".to_owned(),
            issuer: 0,
            keys: keys.clone(),
            valid_until,
        }
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let cache = VerifiedTokens::new(CAPACITY);
        let keys = Arc::new(KeySet::default());
        let current = |_| keys.clone();
        assert_eq!(cache.get("t", 100, current), None);
        cache.insert("t", verified(&keys, 200), 100);
        assert_eq!(cache.get("t", 150, current), Some(("user-1".to_owned(), 0)));
        assert_eq!(cache.get("t", 200, current), Some(("user-1".to_owned(), 0)));
        assert_eq!(cache.get("other", 150, current), None);
        // Past its time: refused from the cache, and forgotten.
        assert_eq!(cache.get("t", 201, current), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_key_refresh_forgets_what_the_old_keys_verified() {
        let cache = VerifiedTokens::new(CAPACITY);
        let old = Arc::new(KeySet::default());
        cache.insert("t", verified(&old, 200), 100);
        // An equal but newly fetched key set is another set: verify again.
        let refreshed = Arc::new(KeySet::default());
        assert_eq!(cache.get("t", 150, |_| refreshed.clone()), None);
        assert_eq!(cache.get("t", 150, |_| old.clone()), None, "forgotten");
    }

    #[test]
    fn the_map_stays_bounded() {
        let cache = VerifiedTokens::new(3);
        let keys = Arc::new(KeySet::default());
        cache.insert("expired", verified(&keys, 50), 10);
        cache.insert("a", verified(&keys, 500), 10);
        cache.insert("b", verified(&keys, 500), 10);
        // Full at 100: the expired entry makes room.
        cache.insert("c", verified(&keys, 500), 100);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("a", 100, |_| keys.clone()).is_some());
        // Full of live entries: all go, the new one stays.
        cache.insert("d", verified(&keys, 500), 100);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("d", 100, |_| keys.clone()).is_some());
    }
}
