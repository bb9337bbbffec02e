//! Consistency between two signed states of the ledger: the JSON of
//! `GET /app/transactions/consistency` and its offline verification.
//!
//! A signed state is a signature transaction and the root it signs; its tree size is the
//! signature's seqno (leaves `0..seqno`). CCF's tree has no domain separation, so an interior
//! node could pose as a leaf of a smaller tree: the size is therefore taken from the txid the
//! service key signed (`ccf.v1.txid` of the COSE root signature), never from the proof or an
//! unsigned field. The proof is RFC 9162's consistency proof computed with CCF's hashing.
//!
//! A client that keeps the last state it verified ([`check_extension`]) refuses any later
//! answer that is not a consistent extension of it: a ledger restored from an old backup and
//! extended differently signs another root at a size the client already verified.

use crate::cose::{self, CoseError};
use crate::hash::Hash32;
use crate::merkle::{self, VerifyError};
use crate::signing::EcPublicKey;
use crate::txid::TxId;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One side of a consistency answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedState {
    /// The signature transaction.
    pub transaction_id: String,
    /// Its seqno: the number of leaves its root covers.
    pub tree_size: u64,
    /// Hex.
    pub root: String,
    /// The service key's COSE root signature over `root` (base64); `None` for a signature
    /// written before cledger signed with COSE.
    pub signature: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyResponse {
    pub from: SignedState,
    pub to: SignedState,
    /// Hex hashes, RFC 9162 §2.1.4 order.
    pub proof: Vec<String>,
}

/// A signed state whose signature verified with the service key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedState {
    #[serde(with = "txid_text")]
    pub transaction_id: TxId,
    pub tree_size: u64,
    #[serde(with = "hash_hex")]
    pub root: Hash32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    #[error("the answer is malformed: {0}")]
    Malformed(String),
    #[error("the state at {0} carries no COSE root signature (signed before COSE signatures)")]
    Unsigned(TxId),
    #[error("the root signature of {txid}: {error}")]
    Signature { txid: TxId, error: CoseError },
    #[error("the root signature is for transaction {signed}, the state claims {claimed}")]
    SignedOtherTransaction { claimed: TxId, signed: TxId },
    #[error("the tree size {size} of {txid} is not its seqno")]
    SizeNotSeqno { txid: TxId, size: u64 },
    #[error("the consistency proof does not verify: {0}")]
    Proof(VerifyError),
    #[error(
        "FORK: the ledger signed root {served} at tree size {size} ({txid}), but root {known} \
         was verified at that size before; this is not the history you verified"
    )]
    Fork {
        txid: TxId,
        size: u64,
        known: Hash32,
        served: Hash32,
    },
    #[error(
        "the answer starts from {served}, not from the verified state {known}; ask with \
         from={known}"
    )]
    WrongStart { known: TxId, served: TxId },
    #[error(
        "ROLLBACK: the ledger's newest signed state ({served}, size {served_size}) is older \
         than the verified state ({known}, size {known_size}): it was restored or rolled back"
    )]
    Rollback {
        known: TxId,
        known_size: u64,
        served: TxId,
        served_size: u64,
    },
}

/// Verifies one signed state against the service key.
pub fn verify_state(
    state: &SignedState,
    service_key: &EcPublicKey,
) -> Result<VerifiedState, ConsistencyError> {
    let malformed = |what: &str| ConsistencyError::Malformed(what.to_owned());
    let txid = TxId::parse(&state.transaction_id)
        .map_err(|_| malformed("transactionId is not a transaction id"))?;
    if state.tree_size != txid.seqno() {
        return Err(ConsistencyError::SizeNotSeqno {
            txid,
            size: state.tree_size,
        });
    }
    let root =
        Hash32::from_hex(&state.root).map_err(|_| malformed("root is not 32 bytes of hex"))?;
    let signature = state
        .signature
        .as_deref()
        .ok_or(ConsistencyError::Unsigned(txid))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| malformed("signature is not base64"))?;
    let claims = cose::verify_root_signature(&signature, &root, service_key)
        .map_err(|error| ConsistencyError::Signature { txid, error })?;
    if claims.txid != txid {
        return Err(ConsistencyError::SignedOtherTransaction {
            claimed: txid,
            signed: claims.txid,
        });
    }
    Ok(VerifiedState {
        transaction_id: txid,
        tree_size: txid.seqno(),
        root,
    })
}

/// Verifies a whole answer: both signed states and the proof between them.
pub fn verify(
    response: &ConsistencyResponse,
    service_key: &EcPublicKey,
) -> Result<(VerifiedState, VerifiedState), ConsistencyError> {
    let from = verify_state(&response.from, service_key)?;
    let to = verify_state(&response.to, service_key)?;
    let proof = response
        .proof
        .iter()
        .map(|h| Hash32::from_hex(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ConsistencyError::Malformed("a proof hash is not 32 bytes of hex".into()))?;
    merkle::verify_consistency(from.tree_size, to.tree_size, from.root, to.root, &proof)
        .map_err(ConsistencyError::Proof)?;
    Ok((from, to))
}

/// Verifies `response` as an extension of the state `known` verified earlier, and returns the
/// new state to keep. The answer must start at `known` with the same signed root; anything
/// else is a fork (another root at a size already verified) or a rollback.
pub fn check_extension(
    known: &VerifiedState,
    response: &ConsistencyResponse,
    service_key: &EcPublicKey,
) -> Result<VerifiedState, ConsistencyError> {
    let (from, to) = verify(response, service_key)?;
    if from.tree_size != known.tree_size {
        return Err(ConsistencyError::WrongStart {
            known: known.transaction_id,
            served: from.transaction_id,
        });
    }
    if from.root != known.root || from.transaction_id != known.transaction_id {
        return Err(ConsistencyError::Fork {
            txid: from.transaction_id,
            size: from.tree_size,
            known: known.root,
            served: from.root,
        });
    }
    Ok(to)
}

mod txid_text {
    use crate::txid::TxId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(txid: &TxId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&txid.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TxId, D::Error> {
        let text = String::deserialize(d)?;
        TxId::parse(&text).map_err(D::Error::custom)
    }
}

mod hash_hex {
    use crate::hash::Hash32;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(hash: &Hash32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hash.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash32, D::Error> {
        let text = String::deserialize(d)?;
        Hash32::from_hex(&text).map_err(|_| D::Error::custom("not 32 bytes of hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cose::ServiceSigner;
    use crate::hash::sha256;
    use crate::merkle::MemoryTree;
    use crate::signing::EcSigningKey;
    use proptest::prelude::*;

    const P256_PEM: &str = include_str!("../tests/vectors/test-node-p256.key.pem");

    fn signer() -> ServiceSigner {
        ServiceSigner::new(EcSigningKey::from_pkcs8_pem(P256_PEM).unwrap())
    }

    fn tree(leaves: u64, salt: &[u8]) -> MemoryTree {
        let mut tree = MemoryTree::new();
        for i in 0..leaves {
            tree.push(sha256(&[salt, &i.to_le_bytes()].concat()));
        }
        tree
    }

    fn state(signer: &ServiceSigner, tree: &MemoryTree, size: u64) -> SignedState {
        let root = merkle::root(tree, size).unwrap();
        let txid = TxId::new(2, size).unwrap();
        let signature = signer.sign_root(&root, txid, Some("test"), 1);
        SignedState {
            transaction_id: txid.to_string(),
            tree_size: size,
            root: root.to_hex(),
            signature: Some(base64::engine::general_purpose::STANDARD.encode(signature)),
        }
    }

    fn answer(
        signer: &ServiceSigner,
        tree: &MemoryTree,
        from: u64,
        to: u64,
    ) -> ConsistencyResponse {
        ConsistencyResponse {
            from: state(signer, tree, from),
            to: state(signer, tree, to),
            proof: merkle::consistency_proof(tree, from, to)
                .unwrap()
                .iter()
                .map(Hash32::to_hex)
                .collect(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random pairs of sizes: the answer verifies, and any changed proof hash does not.
        #[test]
        fn random_pairs_verify(from in 1u64..300, extra in 0u64..300, pick in any::<prop::sample::Index>()) {
            let signer = signer();
            let to = from + extra;
            let tree = tree(to, b"a");
            let good = answer(&signer, &tree, from, to);
            let (f, t) = verify(&good, &signer.public_key()).unwrap();
            prop_assert_eq!((f.tree_size, t.tree_size), (from, to));
            if !good.proof.is_empty() {
                let mut bad = good.clone();
                let i = pick.index(bad.proof.len());
                bad.proof[i] = sha256(bad.proof[i].as_bytes()).to_hex();
                prop_assert!(matches!(verify(&bad, &signer.public_key()), Err(ConsistencyError::Proof(_))));
            }
        }
    }

    #[test]
    fn a_diverging_history_is_a_fork_and_an_older_one_a_mismatch() {
        let signer = signer();
        let key = signer.public_key();
        let ours = tree(100, b"a");
        let known = verify_state(&state(&signer, &ours, 40), &key).unwrap();
        // Extended honestly.
        let next = check_extension(&known, &answer(&signer, &ours, 40, 100), &key).unwrap();
        assert_eq!(next.tree_size, 100);
        // Restored from a backup of size 30 and extended differently: the same size 40 has
        // another signed root.
        let mut theirs = tree(30, b"a");
        for i in 30..100u64 {
            theirs.push(sha256(&[b"b".as_slice(), &i.to_le_bytes()].concat()));
        }
        let forked = check_extension(&known, &answer(&signer, &theirs, 40, 100), &key);
        assert!(
            matches!(forked, Err(ConsistencyError::Fork { size: 40, .. })),
            "{forked:?}"
        );
        // An answer from elsewhere is not taken for one from the verified state.
        let elsewhere = check_extension(&known, &answer(&signer, &ours, 50, 100), &key);
        assert!(matches!(
            elsewhere,
            Err(ConsistencyError::WrongStart { .. })
        ));
    }

    #[test]
    fn the_size_comes_from_the_signed_txid() {
        let signer = signer();
        let key = signer.public_key();
        let ours = tree(64, b"a");
        let mut good = state(&signer, &ours, 40);
        good.tree_size = 41;
        assert!(matches!(
            verify_state(&good, &key),
            Err(ConsistencyError::SizeNotSeqno { .. })
        ));
        // A signature of another transaction over the same root.
        let mut other = state(&signer, &ours, 40);
        let root = merkle::root(&ours, 40).unwrap();
        other.signature = Some(
            base64::engine::general_purpose::STANDARD.encode(signer.sign_root(
                &root,
                TxId::new(2, 41).unwrap(),
                None,
                1,
            )),
        );
        assert!(matches!(
            verify_state(&other, &key),
            Err(ConsistencyError::SignedOtherTransaction { .. })
        ));
        let mut unsigned = state(&signer, &ours, 40);
        unsigned.signature = None;
        assert!(matches!(
            verify_state(&unsigned, &key),
            Err(ConsistencyError::Unsigned(_))
        ));
    }
}
