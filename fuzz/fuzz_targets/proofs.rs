//! The parsers and verifiers of issue 16's proofs on arbitrary bytes: COSE receipts and root
//! signatures, consistency answers (JSON), and C2SP notes and checkpoints.
//!
//! Properties: nothing panics; a COSE receipt that verifies against the fixed service key
//! proves exactly what the genuine receipt made at startup proves (a mutation may never change
//! what is proven); a note that parses formats back to bytes that parse to the same note.
#![no_main]

use ledger_core::TxId;
use ledger_core::consistency::{self, ConsistencyResponse};
use ledger_core::cose::{self, ReceiptLeaf, ServiceSigner};
use ledger_core::evidence::CommitSecret;
use ledger_core::hash::{Hash32, sha256};
use ledger_core::merkle::{self, MemoryTree};
use ledger_core::note::{Checkpoint, Note};
use ledger_core::signing::{EcPublicKey, EcSigningKey};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

const SERVICE_KEY: &str =
    include_str!("../../crates/ledger-core/tests/vectors/test-node-p256.key.pem");

struct Genuine {
    key: EcPublicKey,
    receipt: Vec<u8>,
    verified: cose::VerifiedCoseReceipt,
}

static GENUINE: LazyLock<Genuine> = LazyLock::new(|| {
    let signer = ServiceSigner::new(EcSigningKey::from_pkcs8_pem(SERVICE_KEY).expect("key"));
    let leaf = ReceiptLeaf {
        write_set_digest: sha256(b"entry"),
        commit_evidence: CommitSecret::derive(&[1; 32]).evidence(TxId::new(2, 5).expect("txid")),
        claims_digest: Hash32::ZERO,
    };
    let mut tree = MemoryTree::new();
    for i in 0..9u64 {
        tree.push(if i == 5 { leaf.leaf() } else { sha256(&i.to_le_bytes()) });
    }
    let root = tree.root().expect("root");
    let signature = signer.sign_root(&root, TxId::new(2, 9).expect("txid"), Some("fuzz"), 1);
    let path = merkle::inclusion_path(&tree, 5, 9).expect("path");
    let receipt = cose::build_receipt(&signature, &leaf, &path).expect("receipt");
    let key = signer.public_key();
    let verified = cose::verify_receipt(&receipt, &key).expect("the genuine receipt verifies");
    Genuine {
        key,
        receipt,
        verified,
    }
});

fuzz_target!(|data: &[u8]| {
    let genuine = &*GENUINE;
    // Half the inputs are mutations of the genuine receipt, so verification goes deep.
    let receipt: Vec<u8> = if data.first().is_some_and(|b| b & 1 == 1) {
        let mut r = genuine.receipt.clone();
        for pair in data[1..].chunks(3) {
            if let [at_hi, at_lo, value] = *pair {
                let at = usize::from(u16::from_be_bytes([at_hi, at_lo])) % r.len();
                r[at] ^= value;
            }
        }
        r
    } else {
        data.to_vec()
    };
    if let Ok(verified) = cose::verify_receipt(&receipt, &genuine.key) {
        assert_eq!(verified.txid, genuine.verified.txid);
        assert_eq!(verified.leaf, genuine.verified.leaf);
        assert_eq!(verified.root, genuine.verified.root);
        assert_eq!(verified.signature.txid, genuine.verified.signature.txid);
    }
    let _ = cose::read_claims(data);
    let _ = cose::verify_root_signature(data, &genuine.verified.root, &genuine.key);

    if let Ok(answer) = serde_json::from_slice::<ConsistencyResponse>(data) {
        let _ = consistency::verify(&answer, &genuine.key);
    }

    if let Ok(note) = Note::parse(data) {
        let again = Note::parse(note.to_string().as_bytes()).expect("a parsed note formats to a note");
        assert_eq!(again.text(), note.text());
        assert_eq!(again.signatures(), note.signatures());
        let _ = Checkpoint::parse(note.text());
    }
});
