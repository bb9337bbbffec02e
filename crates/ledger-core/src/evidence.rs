//! Commit evidence and the Merkle leaf of a transaction.
//!
//! Commit evidence `ce:<view>.<seqno>:<64 hex>` carries a nonce that only the holder of the
//! ledger secret can compute. The ledger stores only its SHA-256; the string itself is revealed
//! in a receipt once the transaction is committed, which proves the ledger (and not just
//! someone who copied its files) vouched for the commit.
//!
//! The leaf is `SHA256(write_set_digest || SHA256(commit_evidence) || claims_digest)`, CCF's
//! `WriteSetWithCommitEvidenceAndClaims` form, which is what `verify_receipt` recomputes.

use crate::hash::{Hash32, sha256, sha256_concat};
use crate::txid::TxId;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Domain label for deriving the commit secret from the ledger secret. (CCF's own derivation
/// uses a truncated label; nothing outside cledger derives our commit secret, so we use a
/// clear one.)
const COMMIT_SECRET_LABEL: &[u8] = b"cledger/v1/commit-secret";

/// Per-ledger key for commit nonces.
#[derive(Clone)]
pub struct CommitSecret([u8; 32]);

impl CommitSecret {
    /// Derives the commit secret from the 32-byte ledger secret.
    pub fn derive(ledger_secret: &[u8; 32]) -> CommitSecret {
        CommitSecret(hmac(ledger_secret, COMMIT_SECRET_LABEL))
    }

    /// The commit evidence of `txid`: `ce:<view>.<seqno>:<hex(HMAC(secret, "<view>.<seqno>"))>`.
    pub fn evidence(&self, txid: TxId) -> CommitEvidence {
        let id = txid.to_string();
        let nonce = hmac(&self.0, id.as_bytes());
        CommitEvidence(format!("ce:{id}:{}", hex::encode(nonce)))
    }
}

impl fmt::Debug for CommitSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CommitSecret(<redacted>)")
    }
}

pub(crate) fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A commit evidence string, known to be well formed.
#[derive(Clone, PartialEq, Eq)]
pub struct CommitEvidence(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("commit evidence must look like `ce:<view>.<seqno>:<64 lowercase hex>`")]
pub struct CommitEvidenceError;

impl CommitEvidence {
    /// Parses received evidence (e.g. from a receipt), requiring the exact format we emit.
    pub fn parse(text: &str) -> Result<CommitEvidence, CommitEvidenceError> {
        let rest = text.strip_prefix("ce:").ok_or(CommitEvidenceError)?;
        let (id, nonce) = rest.rsplit_once(':').ok_or(CommitEvidenceError)?;
        TxId::parse(id).map_err(|_| CommitEvidenceError)?;
        let lower_hex = nonce.len() == 64
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex {
            return Err(CommitEvidenceError);
        }
        Ok(CommitEvidence(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The transaction id the evidence names.
    pub fn txid(&self) -> TxId {
        let id = &self.0[3..self.0.len() - 65];
        TxId::parse(id).expect("validated at construction")
    }

    /// `SHA256(evidence)`, the value stored in the ledger and folded into the leaf.
    pub fn digest(&self) -> Hash32 {
        sha256(self.0.as_bytes())
    }
}

impl fmt::Debug for CommitEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitEvidence({})", self.0)
    }
}

/// The three values a receipt's `leafComponents` reveal, as hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafInputs {
    pub write_set_digest: Hash32,
    pub commit_evidence_digest: Hash32,
    pub claims_digest: Hash32,
}

impl LeafInputs {
    pub fn leaf(&self) -> Hash32 {
        leaf_hash(
            &self.write_set_digest,
            &self.commit_evidence_digest,
            &self.claims_digest,
        )
    }
}

/// `SHA256(wsd || ced || cd)`.
pub fn leaf_hash(
    write_set_digest: &Hash32,
    commit_evidence_digest: &Hash32,
    claims_digest: &Hash32,
) -> Hash32 {
    sha256_concat(&[
        &write_set_digest.0,
        &commit_evidence_digest.0,
        &claims_digest.0,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_shape_and_determinism() {
        let secret = CommitSecret::derive(&[7u8; 32]);
        let id = TxId::parse("2.13").unwrap();
        let ce = secret.evidence(id);
        assert!(ce.as_str().starts_with("ce:2.13:"));
        assert_eq!(ce.as_str().len(), "ce:2.13:".len() + 64);
        assert_eq!(ce, secret.evidence(id));
        assert_ne!(ce, secret.evidence(TxId::parse("2.14").unwrap()));
        assert_ne!(ce, CommitSecret::derive(&[8u8; 32]).evidence(id));
        assert_eq!(CommitEvidence::parse(ce.as_str()).unwrap(), ce);
        assert_eq!(ce.txid(), id);
    }

    #[test]
    fn evidence_parser_is_strict() {
        let good = format!("ce:2.13:{}", "ab".repeat(32));
        assert!(CommitEvidence::parse(&good).is_ok());
        for bad in [
            format!("ce:2.13:{}", "AB".repeat(32)),
            format!("ce:2.13:{}", "ab".repeat(31)),
            format!("ce:2.x:{}", "ab".repeat(32)),
            format!("cx:2.13:{}", "ab".repeat(32)),
            format!("ce:2.13{}", "ab".repeat(32)),
        ] {
            assert!(CommitEvidence::parse(&bad).is_err(), "{bad}");
        }
    }

    /// The SDK test vector (acl-api.md §5.6): commit evidence `ce:2.13:850a…` with the given
    /// write-set and claims digests gives leaf `ab64db6e…`.
    #[test]
    fn leaf_matches_sdk_vector() {
        let ce = CommitEvidence::parse(
            "ce:2.13:850a25da46643fa41392750b6ca03c7c7d117c27ae14e3322873de6322aa7cd3",
        )
        .unwrap();
        let inputs = LeafInputs {
            write_set_digest: Hash32::from_hex(
                "6637eddb8741ab54cc8a44725be67fd9be390e605f0537e5a278703860ace035",
            )
            .unwrap(),
            commit_evidence_digest: ce.digest(),
            claims_digest: Hash32::from_hex(
                "d08d8764437d09b2d4d07d52293cddaf40f44a3ea2176a0528819a80002df9f6",
            )
            .unwrap(),
        };
        assert_eq!(
            inputs.leaf().to_hex(),
            "ab64db6ebde6fa0427dd5b7d74e1ac3376f463648515a180adc2bb8cfaac4b4a"
        );
    }
}
