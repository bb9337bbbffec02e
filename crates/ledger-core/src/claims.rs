//! Application claims: what a ledger entry commits to in its Merkle leaf besides the write set.
//!
//! From api-version 2023-01-18-preview (and stable 2026-02-23) on, ACL binds every write to a
//! *claims digest*. The receipt carries it in `leafComponents.claimsDigest`, and the `/receipt`
//! response reveals the claims themselves as `applicationClaims`, so a client can recompute the
//! digest from `(collectionId, contents)` and check that the receipt covers exactly that entry.
//! The secret key is a per-entry random value that the caller passes in (this crate has no
//! randomness). Keying the HMACs with it means a receipt without the key says nothing about the
//! contents.
//!
//! The byte rules follow the Python SDK's `_claims_digest_computation.py` (acl-api.md §5.4). The
//! JSON shapes follow acl-api.md §2.9: camelCase keys, emitted in sorted order as CCF does.

use crate::hash::{Hash32, sha256_concat};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use sha2::Sha256;

/// The only ledger-entry claim protocol that exists.
pub const LEDGER_ENTRY_V1: &str = "LedgerEntryV1";

/// One element of `applicationClaims`.
///
/// Deserializing accepts unknown keys next to `kind` and rejects them inside `ledgerEntry` and
/// `digest`, as the SDK does (its inner models are dataclasses).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind")]
pub enum ApplicationClaim {
    /// The entry in clear text plus the key: the client can recompute everything.
    LedgerEntry {
        #[serde(rename = "ledgerEntry")]
        ledger_entry: LedgerEntryClaim,
    },
    /// Only the protocol's inner digest: it proves the same claim hash without revealing the
    /// contents.
    ClaimDigest { digest: ClaimDigest },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerEntryClaim {
    pub collection_id: String,
    pub contents: String,
    pub protocol: String,
    /// Standard base64 with padding.
    pub secret_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimDigest {
    pub protocol: String,
    /// Hex of the protocol's inner digest.
    pub value: String,
}

// Hand-written so that keys come out sorted like the rest of CCF's JSON (`digest` < `kind` <
// `ledgerEntry`); serde's tagged derive always puts the tag first.
impl Serialize for ApplicationClaim {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        match self {
            ApplicationClaim::LedgerEntry { ledger_entry } => {
                map.serialize_entry("kind", "LedgerEntry")?;
                map.serialize_entry("ledgerEntry", ledger_entry)?;
            }
            ApplicationClaim::ClaimDigest { digest } => {
                map.serialize_entry("digest", digest)?;
                map.serialize_entry("kind", "ClaimDigest")?;
            }
        }
        map.end()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the claim's secretKey is not standard padded base64")]
    SecretKeyNotBase64,
    #[error("unsupported claim protocol `{0}` (only LedgerEntryV1 exists)")]
    UnsupportedProtocol(String),
    #[error("the ClaimDigest value is not hex")]
    DigestValueNotHex,
    #[error("an application claims list must not be empty")]
    Empty,
    #[error("more than 2^32-1 application claims")]
    TooMany,
}

/// The claim ACL records for a ledger entry. `collection_id` is the effective collection
/// (`subledger:0` for the default one).
pub fn ledger_entry_claim(
    collection_id: &str,
    contents: &str,
    secret_key: &[u8; 32],
) -> ApplicationClaim {
    ApplicationClaim::LedgerEntry {
        ledger_entry: LedgerEntryClaim {
            collection_id: collection_id.to_owned(),
            contents: contents.to_owned(),
            protocol: LEDGER_ENTRY_V1.to_owned(),
            secret_key: BASE64.encode(secret_key),
        },
    }
}

/// LedgerEntryV1's inner digest `SHA256(HMAC(key, collectionId) || HMAC(key, contents))`. This is
/// the `value` of the equivalent `ClaimDigest` claim.
pub fn ledger_entry_v1_inner(collection_id: &str, contents: &str, key: &[u8]) -> Hash32 {
    sha256_concat(&[
        &hmac_sha256(key, collection_id.as_bytes()),
        &hmac_sha256(key, contents.as_bytes()),
    ])
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The hash one claim contributes: `SHA256(protocol || inner digest)`.
///
/// Like the SDK, a `ClaimDigest` is hashed with whatever protocol it names (the protocol only
/// labels the digest there), while a `LedgerEntry` must use a protocol we know how to compute.
pub fn claim_hash(claim: &ApplicationClaim) -> Result<Hash32, ClaimsError> {
    match claim {
        ApplicationClaim::LedgerEntry { ledger_entry: e } => {
            if e.protocol != LEDGER_ENTRY_V1 {
                return Err(ClaimsError::UnsupportedProtocol(e.protocol.clone()));
            }
            // `STANDARD` is strict like Python's `b64decode(validate=True)`: no whitespace, no
            // URL-safe alphabet, padding required.
            let key = BASE64
                .decode(&e.secret_key)
                .map_err(|_| ClaimsError::SecretKeyNotBase64)?;
            let inner = ledger_entry_v1_inner(&e.collection_id, &e.contents, &key);
            Ok(sha256_concat(&[e.protocol.as_bytes(), inner.as_bytes()]))
        }
        ApplicationClaim::ClaimDigest { digest } => {
            let value = hex::decode(&digest.value).map_err(|_| ClaimsError::DigestValueNotHex)?;
            Ok(sha256_concat(&[digest.protocol.as_bytes(), &value]))
        }
    }
}

/// The claims digest of a transaction: `SHA256(u32_le(n) || claim_hash_1 || ... || claim_hash_n)`.
/// An empty list is an error, as in the SDK: a transaction without claims has the all-zero
/// digest instead, which no list produces.
pub fn claims_digest(claims: &[ApplicationClaim]) -> Result<Hash32, ClaimsError> {
    if claims.is_empty() {
        return Err(ClaimsError::Empty);
    }
    let count = u32::try_from(claims.len()).map_err(|_| ClaimsError::TooMany)?;
    let hashes = claims
        .iter()
        .map(claim_hash)
        .collect::<Result<Vec<_>, _>>()?;
    let mut parts: Vec<&[u8]> = Vec::with_capacity(hashes.len() + 1);
    let count = count.to_le_bytes();
    parts.push(&count);
    parts.extend(hashes.iter().map(|h| h.as_bytes().as_slice()));
    Ok(sha256_concat(&parts))
}

/// The claims digest of the single `LedgerEntryV1` claim ACL records per write.
pub fn ledger_entry_claims_digest(
    collection_id: &str,
    contents: &str,
    secret_key: &[u8; 32],
) -> Hash32 {
    let inner = ledger_entry_v1_inner(collection_id, contents, secret_key);
    let hash = sha256_concat(&[LEDGER_ENTRY_V1.as_bytes(), inner.as_bytes()]);
    sha256_concat(&[&1u32.to_le_bytes(), hash.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    // acl-api.md §5.6, from the SDK's claims_constants.py.
    const KEY_B64: &str = "Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M=";
    const INNER: &str = "feb516ef1f903c64f1e388d9ee9fde11f64d1e2bc170248828c9eab9894f9ab9";
    const CLAIM_HASH: &str = "d7a056b7b1be1a546cf22efa4bf4f8c3af81f90972d826463046f78842a9808b";
    const DIGEST: &str = "d08d8764437d09b2d4d07d52293cddaf40f44a3ea2176a0528819a80002df9f6";

    fn sdk_key() -> [u8; 32] {
        BASE64.decode(KEY_B64).unwrap().try_into().unwrap()
    }

    #[test]
    fn sdk_vector_ledger_entry() {
        let key = sdk_key();
        assert_eq!(
            ledger_entry_v1_inner("subledger:0", "Hello world", &key).to_hex(),
            INNER
        );
        let claim = ledger_entry_claim("subledger:0", "Hello world", &key);
        assert_eq!(claim_hash(&claim).unwrap().to_hex(), CLAIM_HASH);
        assert_eq!(claims_digest(&[claim]).unwrap().to_hex(), DIGEST);
        assert_eq!(
            ledger_entry_claims_digest("subledger:0", "Hello world", &key).to_hex(),
            DIGEST
        );
    }

    #[test]
    fn sdk_vector_claim_digest_is_equivalent() {
        let claims: Vec<ApplicationClaim> = serde_json::from_str(include_str!(
            "../tests/vectors/sdk-claims-claim-digest.json"
        ))
        .unwrap();
        assert_eq!(claim_hash(&claims[0]).unwrap().to_hex(), CLAIM_HASH);
        assert_eq!(claims_digest(&claims).unwrap().to_hex(), DIGEST);
        // Uppercase hex is accepted, like Python's bytes.fromhex.
        let upper = ApplicationClaim::ClaimDigest {
            digest: ClaimDigest {
                protocol: LEDGER_ENTRY_V1.into(),
                value: INNER.to_uppercase(),
            },
        };
        assert_eq!(claims_digest(&[upper]).unwrap().to_hex(), DIGEST);
    }

    #[test]
    fn json_shape_is_the_sdk_shape_with_sorted_keys() {
        let text = include_str!("../tests/vectors/sdk-claims-ledger-entry.json");
        let claims: Vec<ApplicationClaim> = serde_json::from_str(text).unwrap();
        assert_eq!(
            claims,
            vec![ledger_entry_claim("subledger:0", "Hello world", &sdk_key())]
        );
        assert_eq!(
            serde_json::to_string(&claims).unwrap(),
            r#"[{"kind":"LedgerEntry","ledgerEntry":{"collectionId":"subledger:0","contents":"Hello world","protocol":"LedgerEntryV1","secretKey":"Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M="}}]"#
        );
        let digest: Vec<ApplicationClaim> = serde_json::from_str(include_str!(
            "../tests/vectors/sdk-claims-claim-digest.json"
        ))
        .unwrap();
        assert_eq!(
            serde_json::to_string(&digest).unwrap(),
            format!(
                r#"[{{"digest":{{"protocol":"LedgerEntryV1","value":"{INNER}"}},"kind":"ClaimDigest"}}]"#
            )
        );
    }

    #[test]
    fn parsing_mirrors_the_sdk_models() {
        // Extra keys next to `kind` are tolerated.
        let ok = r#"{"kind":"ClaimDigest","extra":1,"digest":{"protocol":"p","value":"00"}}"#;
        assert!(serde_json::from_str::<ApplicationClaim>(ok).is_ok());
        for bad in [
            r#"{"kind":"ClaimDigest","digest":{"protocol":"p","value":"00","extra":1}}"#,
            r#"{"kind":"LedgerEntry","ledgerEntry":{"collectionId":"c","contents":"x","protocol":"LedgerEntryV1","secretKey":"","x":1}}"#,
            r#"{"kind":"LedgerEntry","ledgerEntry":{"collectionId":"c","contents":"x","protocol":"LedgerEntryV1"}}"#,
            r#"{"kind":"LedgerEntry","digest":{"protocol":"p","value":"00"}}"#,
            r#"{"kind":"Other","digest":{"protocol":"p","value":"00"}}"#,
            r#"{"digest":{"protocol":"p","value":"00"}}"#,
            r#"{"kind":"ClaimDigest","digest":{"protocol":"p","value":0}}"#,
        ] {
            assert!(
                serde_json::from_str::<ApplicationClaim>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors() {
        let mut claim = ledger_entry_claim("c", "x", &[1; 32]);
        let ApplicationClaim::LedgerEntry { ledger_entry } = &mut claim else {
            unreachable!()
        };
        ledger_entry.protocol = "LedgerEntryV2".into();
        assert_eq!(
            claim_hash(&claim),
            Err(ClaimsError::UnsupportedProtocol("LedgerEntryV2".into()))
        );
        for key in ["not base64!", "AAAA AAAA", "AA", "AB==", "-_8="] {
            let mut claim = ledger_entry_claim("c", "x", &[1; 32]);
            let ApplicationClaim::LedgerEntry { ledger_entry } = &mut claim else {
                unreachable!()
            };
            ledger_entry.secret_key = key.into();
            assert_eq!(
                claim_hash(&claim),
                Err(ClaimsError::SecretKeyNotBase64),
                "{key}"
            );
        }
        let bad_hex = ApplicationClaim::ClaimDigest {
            digest: ClaimDigest {
                protocol: LEDGER_ENTRY_V1.into(),
                value: "abc".into(),
            },
        };
        assert_eq!(claim_hash(&bad_hex), Err(ClaimsError::DigestValueNotHex));
        assert_eq!(claims_digest(&[]), Err(ClaimsError::Empty));
    }

    #[test]
    fn count_prefix_and_order_matter() {
        let a = ledger_entry_claim("subledger:0", "a", &[1; 32]);
        let b = ledger_entry_claim("subledger:0", "b", &[2; 32]);
        let (ha, hb) = (claim_hash(&a).unwrap(), claim_hash(&b).unwrap());
        let two = claims_digest(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(
            two,
            sha256_concat(&[&[2, 0, 0, 0], ha.as_bytes(), hb.as_bytes()])
        );
        assert_ne!(two, claims_digest(&[b, a]).unwrap());
        // The key changes the digest even for identical contents.
        assert_ne!(
            ledger_entry_claims_digest("subledger:0", "a", &[1; 32]),
            ledger_entry_claims_digest("subledger:0", "a", &[3; 32])
        );
    }
}
