//! An entry proven in a checkpoint that witnesses cosigned.
//!
//! The ledger publishes C2SP checkpoints (`note`): its origin, a tree size (a signature
//! transaction's seqno) and the root of an RFC 6962 tree over the same leaves as CCF's tree,
//! plus an extension line `ccf-root <txid> <base64 CCF root>` that binds it to the signature
//! transaction. Witnesses cosign a checkpoint only if it consistently extends the last one
//! they cosigned for that origin, so two diverging histories (a split view) cannot both be
//! cosigned by the same witness.
//!
//! The checkpoint key is an Ed25519 key every holder of the service key derives from it
//! ([`CHECKPOINT_KEY_LABEL`]); since an Ed25519 key cannot be read from the service
//! certificate, the ledger vouches for its vkey with a COSE statement by the service key
//! ([`crate::cose::ServiceSigner::endorse`], media type [`CHECKPOINT_KEY_CONTENT_TYPE`]).
//! [`verify`] checks that statement, the log's signature, the RFC 6962 inclusion of the
//! entry's leaf at its seqno, and a cosignature by each witness the caller trusts.

use crate::cose;
use crate::hash::Hash32;
use crate::merkle::{self, rfc6962};
use crate::note::{Checkpoint, CosignatureVerifier, Ed25519Verifier, Note, NoteError};
use crate::signing::EcPublicKey;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// What the service key's derived checkpoint key is derived with.
pub const CHECKPOINT_KEY_LABEL: &[u8] = b"cledger/v1/checkpoint-key";
/// The media type of the service key's statement naming the checkpoint key.
pub const CHECKPOINT_KEY_CONTENT_TYPE: &str = "text/x.cledger.checkpoint-vkey";
/// The first word of the extension line binding a checkpoint to a signature transaction.
pub const CCF_ROOT_EXTENSION: &str = "ccf-root";

/// The checkpoint key's vkey and the service key's statement about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointKey {
    pub vkey: String,
    /// Base64 of the COSE_Sign1 by the service key whose payload is `vkey`.
    pub endorsement: String,
}

/// What an evidence package carries to prove its entry in a cosigned checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointEvidence {
    /// The signed note: checkpoint text, the log's signature, witnesses' cosignatures.
    pub checkpoint: String,
    pub checkpoint_key: CheckpointKey,
    /// The entry's seqno: its leaf index in both trees.
    pub leaf_index: u64,
    /// RFC 6962 audit path of the entry's leaf in the checkpoint's tree (hex, leaf to root).
    pub proof: Vec<String>,
}

/// What [`verify`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessedEntry {
    pub checkpoint: Checkpoint,
    /// Names of the trusted witnesses whose cosignatures verified.
    pub cosigned_by: Vec<String>,
    /// Signatures on the note by keys the caller did not name (not checked).
    pub unchecked_signatures: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("the checkpoint key is not vouched for by the service key: {0}")]
    KeyNotEndorsed(String),
    #[error("the checkpoint: {0}")]
    Note(NoteError),
    #[error("the checkpoint is not signed by the ledger's checkpoint key: {0}")]
    LogSignature(NoteError),
    #[error("the entry (leaf {index}) is not in the checkpoint's tree of {size} leaves: {reason}")]
    NotIncluded {
        index: u64,
        size: u64,
        reason: String,
    },
    #[error("the witness vkey {0:?} is not usable: {1}")]
    BadWitnessKey(String, NoteError),
    #[error(
        "the checkpoint is not cosigned by witness {0}: the witness did not accept this ledger \
         state (it may have seen a different history for this ledger: a split view)"
    )]
    NotCosigned(String),
}

/// Checks `evidence` for the entry whose CCF leaf hash is `leaf` at `seqno`, against the
/// service key and the witnesses of `witness_vkeys` (each must have cosigned).
pub fn verify(
    evidence: &CheckpointEvidence,
    leaf: Hash32,
    seqno: u64,
    service_key: &EcPublicKey,
    witness_vkeys: &[String],
) -> Result<WitnessedEntry, WitnessError> {
    let endorsement = base64::engine::general_purpose::STANDARD
        .decode(&evidence.checkpoint_key.endorsement)
        .map_err(|e| WitnessError::KeyNotEndorsed(format!("not base64: {e}")))?;
    let vouched = cose::verify_endorsement(&endorsement, CHECKPOINT_KEY_CONTENT_TYPE, service_key)
        .map_err(|e| WitnessError::KeyNotEndorsed(e.to_string()))?;
    if vouched != evidence.checkpoint_key.vkey.as_bytes() {
        return Err(WitnessError::KeyNotEndorsed(
            "the statement names another key".into(),
        ));
    }
    let log = Ed25519Verifier::from_vkey(&evidence.checkpoint_key.vkey)
        .map_err(|e| WitnessError::KeyNotEndorsed(e.to_string()))?;
    let note = Note::parse(evidence.checkpoint.as_bytes()).map_err(WitnessError::Note)?;
    note.verify(&[&log]).map_err(WitnessError::LogSignature)?;
    let checkpoint = Checkpoint::parse(note.text()).map_err(WitnessError::Note)?;
    let not_included = |reason: String| WitnessError::NotIncluded {
        index: evidence.leaf_index,
        size: checkpoint.size,
        reason,
    };
    if evidence.leaf_index != seqno {
        return Err(not_included(format!(
            "the proof is for leaf {}, not the entry's",
            seqno
        )));
    }
    let hashes = evidence
        .proof
        .iter()
        .map(|h| Hash32::from_hex(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| not_included("a proof hash is not 32 bytes of hex".into()))?;
    let path = merkle::audit_path_steps(seqno, checkpoint.size, &hashes).ok_or_else(|| {
        not_included("the proof does not have the length its position needs".into())
    })?;
    rfc6962::verify_inclusion(
        rfc6962::leaf_hash(&leaf.0),
        seqno,
        checkpoint.size,
        &path,
        checkpoint.root,
    )
    .map_err(|e| not_included(e.to_string()))?;
    let mut cosigned_by = Vec::new();
    for vkey in witness_vkeys {
        let witness = CosignatureVerifier::from_vkey(vkey)
            .map_err(|e| WitnessError::BadWitnessKey(vkey.clone(), e))?;
        let name = crate::note::NoteVerifier::name(&witness).to_owned();
        note.verify(&[&witness])
            .map_err(|_| WitnessError::NotCosigned(name.clone()))?;
        cosigned_by.push(name);
    }
    let unchecked_signatures = note
        .signatures()
        .len()
        .saturating_sub(1 + cosigned_by.len());
    Ok(WitnessedEntry {
        checkpoint,
        cosigned_by,
        unchecked_signatures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cose::ServiceSigner;
    use crate::hash::sha256;
    use crate::note::{Cosigner, Ed25519Signer};
    use crate::signing::EcSigningKey;

    const P384_PEM: &str = include_str!("../tests/vectors/test-node-p384.key.pem");
    const ORIGIN: &str = "ledger.example/log";

    struct Setup {
        service: ServiceSigner,
        key: CheckpointKey,
        log: Ed25519Signer,
        tree: rfc6962::MemoryTree,
        leaves: Vec<Hash32>,
    }

    fn setup(salt: &[u8]) -> Setup {
        let service_key = EcSigningKey::from_pkcs8_pem(P384_PEM).unwrap();
        let log =
            Ed25519Signer::from_seed(ORIGIN, &service_key.derive_secret(CHECKPOINT_KEY_LABEL))
                .unwrap();
        let service = ServiceSigner::new(service_key);
        let vkey = log.verifier().vkey();
        let key = CheckpointKey {
            endorsement: base64::engine::general_purpose::STANDARD
                .encode(service.endorse(vkey.as_bytes(), CHECKPOINT_KEY_CONTENT_TYPE)),
            vkey,
        };
        let mut tree = rfc6962::MemoryTree::default();
        let leaves: Vec<Hash32> = (0..20u64)
            .map(|i| sha256(&[salt, &i.to_le_bytes()].concat()))
            .collect();
        for leaf in &leaves {
            tree.push(rfc6962::leaf_hash(&leaf.0));
        }
        Setup {
            service,
            key,
            log,
            tree,
            leaves,
        }
    }

    fn evidence(s: &Setup, seqno: u64, witnesses: &[&Cosigner]) -> CheckpointEvidence {
        let size = s.leaves.len() as u64;
        let checkpoint =
            Checkpoint::new(ORIGIN, size, rfc6962::root(&s.tree, size).unwrap()).unwrap();
        let mut note = Note::new(checkpoint.text()).unwrap();
        note.add_signature(s.log.sign(note.text()).unwrap())
            .unwrap();
        for w in witnesses {
            note.add_signature(w.cosign(note.text(), 1_700_000_000).unwrap())
                .unwrap();
        }
        let path = rfc6962::inclusion_path(&s.tree, seqno, size).unwrap();
        CheckpointEvidence {
            checkpoint: note.to_string(),
            checkpoint_key: s.key.clone(),
            leaf_index: seqno,
            proof: path.iter().map(|step| step.hash().to_hex()).collect(),
        }
    }

    #[test]
    fn an_entry_in_a_cosigned_checkpoint() {
        let s = setup(b"a");
        let witness = Cosigner::from_seed("witness.example", &[9; 32]).unwrap();
        let other = Cosigner::from_seed("other.example", &[8; 32]).unwrap();
        let vkey = witness.verifier().vkey();
        let e = evidence(&s, 7, &[&witness]);
        let key = s.service.public_key();
        let ok = verify(&e, s.leaves[7], 7, &key, std::slice::from_ref(&vkey)).unwrap();
        assert_eq!(ok.cosigned_by, ["witness.example"]);
        assert_eq!(ok.checkpoint.size, 20);
        // Without naming the witness, its cosignature is left unchecked.
        assert_eq!(
            verify(&e, s.leaves[7], 7, &key, &[])
                .unwrap()
                .unchecked_signatures,
            1
        );
        // Another leaf, another position.
        assert!(matches!(
            verify(&e, s.leaves[8], 7, &key, &[]),
            Err(WitnessError::NotIncluded { .. })
        ));
        assert!(matches!(
            verify(&e, s.leaves[7], 8, &key, &[]),
            Err(WitnessError::NotIncluded { .. })
        ));
        // A witness that did not cosign.
        assert_eq!(
            verify(&e, s.leaves[7], 7, &key, &[other.verifier().vkey()]),
            Err(WitnessError::NotCosigned("other.example".into()))
        );
    }

    #[test]
    fn the_checkpoint_key_must_be_the_service_keys() {
        let s = setup(b"a");
        let mut e = evidence(&s, 3, &[]);
        // A key the service never vouched for, vouched for by nobody.
        let stranger = Ed25519Signer::from_seed(ORIGIN, &[1; 32]).unwrap();
        e.checkpoint_key.vkey = stranger.verifier().vkey();
        assert!(matches!(
            verify(&e, s.leaves[3], 3, &s.service.public_key(), &[]),
            Err(WitnessError::KeyNotEndorsed(_))
        ));
        // A checkpoint signed by another key than the vouched one.
        let mut e = evidence(&s, 3, &[]);
        let mut note = Note::parse(e.checkpoint.as_bytes()).unwrap();
        let forged = Note::new(note.text()).map(|mut n| {
            n.add_signature(stranger.sign(note.text()).unwrap())
                .unwrap();
            n
        });
        note = forged.unwrap();
        e.checkpoint = note.to_string();
        assert!(matches!(
            verify(&e, s.leaves[3], 3, &s.service.public_key(), &[]),
            Err(WitnessError::LogSignature(_))
        ));
    }
}
