//! Test vectors for the C2SP witness tests (`tests/verify/test_c2sp_witness.py`), and the Rust
//! side of their cosignature check.
//!
//! `cargo run -q -p ledger-core --example c2sp_vectors` prints JSON: signed checkpoints of an
//! RFC 6962 tree over deterministic ledger leaves (leaf 0 the zero hash, leaf i the SHA-256 of
//! i's 8 little-endian bytes, hashed as RFC 6962 leaves), the RFC 6962 consistency proofs
//! between their sizes, checkpoints of a fork of that tree (leaf 50 differs: a split view),
//! and checkpoints that no witness may accept (signed by another key, or of another origin).
//!
//! `... --example c2sp_vectors verify-cosignature <witness vkey>` reads a cosigned checkpoint
//! note on stdin and prints the timestamps of the witness's cosignatures that verify, as JSON;
//! it exits non-zero if none does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ledger_core::hash::{Hash32, sha256};
use ledger_core::merkle::{NodeSource as _, Rfc6962, TreeHashing, rfc6962};
use ledger_core::note::{Checkpoint, CosignatureVerifier, Ed25519Signer, Note};
use serde_json::{Value, json};
use std::io::Read as _;
use std::process::ExitCode;

const ORIGIN: &str = "example.com/cledger-test";
const LOG_SEED: [u8; 32] = [0x11; 32];
const OTHER_SEED: [u8; 32] = [0x22; 32];
const SIZES: [u64; 5] = [3, 10, 64, 100, 1000];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            println!("{}", vectors());
            ExitCode::SUCCESS
        }
        [mode, vkey] if mode == "verify-cosignature" => verify_cosignature(vkey),
        _ => {
            eprintln!("usage: c2sp_vectors [verify-cosignature <witness vkey>]");
            ExitCode::from(2)
        }
    }
}

fn tree(fork_at: Option<u64>) -> rfc6962::MemoryTree {
    let mut tree = rfc6962::MemoryTree::default();
    for i in 0..*SIZES.last().expect("sizes") {
        let mut data = if i == 0 {
            Hash32::ZERO
        } else {
            sha256(&i.to_le_bytes())
        };
        if fork_at == Some(i) {
            data = sha256(b"a different transaction");
        }
        tree.push(Rfc6962::leaf(&data));
    }
    tree
}

fn signed(signer: &Ed25519Signer, origin: &str, size: u64, root: Hash32) -> String {
    let text = Checkpoint::new(origin, size, root)
        .expect("valid checkpoint")
        .text();
    let mut note = Note::new(text.clone()).expect("valid text");
    note.add_signature(signer.sign(&text).expect("signs"))
        .expect("one signature");
    note.to_string()
}

fn checkpoints(tree: &rfc6962::MemoryTree, signer: &Ed25519Signer) -> Value {
    SIZES
        .iter()
        .map(|&size| {
            let root = rfc6962::root(tree, size).expect("size within the tree");
            json!({"size": size, "root": BASE64.encode(root.0), "note": signed(signer, ORIGIN, size, root)})
        })
        .collect()
}

fn proofs(tree: &rfc6962::MemoryTree) -> Value {
    let mut out = Vec::new();
    for &new in &SIZES {
        for &old in SIZES.iter().filter(|&&old| old <= new) {
            let proof = rfc6962::consistency_proof(tree, old, new).expect("sizes within the tree");
            out.push(json!({
                "old": old,
                "new": new,
                "proof": proof.iter().map(|h| BASE64.encode(h.0)).collect::<Vec<_>>(),
            }));
        }
    }
    Value::Array(out)
}

fn vectors() -> Value {
    let log = Ed25519Signer::from_seed(ORIGIN, &LOG_SEED).expect("valid name");
    let other = Ed25519Signer::from_seed(ORIGIN, &OTHER_SEED).expect("valid name");
    let stranger = Ed25519Signer::from_seed("example.com/unknown-log", &LOG_SEED).expect("name");
    let real = tree(None);
    let fork = tree(Some(50));
    let size = 100;
    let root = rfc6962::root(&real, size).expect("size within the tree");
    json!({
        "origin": ORIGIN,
        "log_vkey": log.verifier().vkey(),
        "leaf_hashes_of_first_3": (0..3)
            .map(|i| BASE64.encode(real.subtree_hash(0, i).expect("leaf").0))
            .collect::<Vec<_>>(),
        "checkpoints": checkpoints(&real, &log),
        "proofs": proofs(&real),
        "fork": {
            "differs_from_leaf": 50,
            "checkpoints": checkpoints(&fork, &log),
            "proofs": proofs(&fork),
        },
        "signed_by_another_key": signed(&other, ORIGIN, size, root),
        "unknown_origin": signed(&stranger, "example.com/unknown-log", size, root),
    })
}

fn verify_cosignature(vkey: &str) -> ExitCode {
    let verifier = match CosignatureVerifier::from_vkey(vkey) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("witness vkey: {e}");
            return ExitCode::from(2);
        }
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading stdin: {e}");
        return ExitCode::from(2);
    }
    let note = match Note::parse(&input) {
        Ok(note) => note,
        Err(e) => {
            eprintln!("note: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = Checkpoint::parse(note.text()) {
        eprintln!("checkpoint: {e}");
        return ExitCode::FAILURE;
    }
    match note.verify(&[&verifier]) {
        Ok(verified) => {
            let timestamps: Vec<Option<u64>> = verified
                .iter()
                .map(|s| CosignatureVerifier::timestamp(s))
                .collect();
            println!(
                "{}",
                json!({ "verified": verified.len(), "timestamps": timestamps })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cosignature: {e}");
            ExitCode::FAILURE
        }
    }
}
