//! Micro-benchmarks of the pure core: Merkle tree appends, roots and proofs, receipts (build,
//! sign, verify on P-384 and P-256), and the entry encoding.
//!
//! `cargo bench -p ledger-core` (add `-- merkle/` etc. to filter). Every benchmark is kept short
//! (1 s warm-up, 3 s measurement) so the whole file runs in about a minute and a half.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ledger_core::entry::{
    self, ApplicationEntry, EntryView, Opener, SEAL_OVERHEAD, Sealer, TxBody,
};
use ledger_core::evidence::{CommitSecret, leaf_hash};
use ledger_core::hash::{Hash32, hash_children, sha256};
use ledger_core::merkle::{self, Frontier, MemoryTree};
use ledger_core::receipt::{Receipt, ReceiptParts, verify_receipt};
use ledger_core::signing::EcSigningKey;
use ledger_core::{TxId, claims};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};
use std::hint::black_box;
use std::time::Duration;

/// Distinct, deterministic leaves.
fn leaf(i: u64) -> Hash32 {
    sha256(&i.to_le_bytes())
}

fn tree_of(size: u64) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for i in 0..size {
        tree.push(leaf(i));
    }
    tree
}

/// A cheap deterministic sequence of indexes in `0..n`, so proofs are not all for one leaf.
struct Indexes {
    state: u64,
    n: u64,
}

impl Indexes {
    fn new(n: u64) -> Self {
        Indexes {
            state: 0x9e37_79b9_7f4a_7c15,
            n,
        }
    }
    fn next_index(&mut self) -> u64 {
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % self.n
    }
}

fn bench_merkle(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(1));

    let (a, b) = (leaf(1), leaf(2));
    g.bench_function("sha256_node_64B", |bench| {
        bench.iter(|| hash_children(black_box(&a), black_box(&b)))
    });
    g.bench_function("leaf_hash_96B", |bench| {
        bench.iter(|| leaf_hash(black_box(&a), black_box(&b), black_box(&Hash32::ZERO)))
    });

    // The writer's append: one leaf into the frontier (amortised O(1) hashes).
    let mut frontier = Frontier::new();
    let mut completed = Vec::with_capacity(64);
    let mut i = 0u64;
    g.bench_function("frontier_push", |bench| {
        bench.iter(|| {
            completed.clear();
            frontier.push(black_box(leaf_of_counter(&mut i)), &mut completed);
        })
    });
    g.bench_function("frontier_root", |bench| {
        bench.iter(|| black_box(&frontier).root())
    });

    // MemoryTree keeps every node, so append in fixed batches to a fresh tree.
    const BATCH: u64 = 1024;
    let leaves: Vec<Hash32> = (0..BATCH).map(leaf).collect();
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("memory_tree_push_1024", |bench| {
        bench.iter(|| {
            let mut tree = MemoryTree::new();
            for l in &leaves {
                tree.push(*l);
            }
            tree
        })
    });
    g.throughput(Throughput::Elements(1));

    for (label, size) in [("1k", 1_000u64), ("1M", 1_000_000)] {
        let tree = tree_of(size);
        let root = tree.root().expect("non-empty");
        g.bench_function(BenchmarkId::new("root", label), |bench| {
            bench.iter(|| merkle::root(&tree, black_box(size)).unwrap())
        });

        let mut idx = Indexes::new(size);
        g.bench_function(BenchmarkId::new("inclusion_path", label), |bench| {
            bench.iter(|| merkle::inclusion_path(&tree, idx.next_index(), size).unwrap())
        });

        let proofs: Vec<(u64, Vec<merkle::ProofStep>)> = {
            let mut idx = Indexes::new(size);
            (0..256)
                .map(|_| {
                    let i = idx.next_index();
                    (i, merkle::inclusion_path(&tree, i, size).unwrap())
                })
                .collect()
        };
        let mut k = 0usize;
        g.bench_function(BenchmarkId::new("verify_inclusion", label), |bench| {
            bench.iter(|| {
                let (i, path) = &proofs[k % proofs.len()];
                k += 1;
                merkle::verify_inclusion(leaf(*i), *i, size, path, root).unwrap()
            })
        });

        // Consistency from a ragged older size to the full size.
        let old = size / 3 + 7;
        let old_root = merkle::root(&tree, old).unwrap();
        g.bench_function(BenchmarkId::new("consistency_proof", label), |bench| {
            bench.iter(|| merkle::consistency_proof(&tree, black_box(old), size).unwrap())
        });
        let proof = merkle::consistency_proof(&tree, old, size).unwrap();
        g.bench_function(BenchmarkId::new("verify_consistency", label), |bench| {
            bench.iter(|| {
                merkle::verify_consistency(black_box(old), size, old_root, root, &proof).unwrap()
            })
        });
    }
    g.finish();
}

fn leaf_of_counter(i: &mut u64) -> Hash32 {
    *i += 1;
    // Not hashed: the benchmark measures the push, not the leaf's creation.
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&i.to_le_bytes());
    Hash32(h)
}

// ---- Receipts ------------------------------------------------------------------------------

/// A service CA and a node certificate it issued, as `receipt.rs`'s tests make them.
struct Pki {
    service_pem: String,
    node_pem: String,
    node_key: EcSigningKey,
    node_key_der: Vec<u8>,
}

/// The root the receipt parts' path leads to.
fn parts_root(parts: &ReceiptParts) -> Hash32 {
    let leaf = leaf_hash(
        &parts.write_set_digest,
        &parts.commit_evidence.digest(),
        &parts.claims_digest,
    );
    merkle::fold_path(leaf, &parts.proof)
}

fn pki(alg: &'static SignatureAlgorithm) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "CCF Network");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let service_key = KeyPair::generate_for(alg).unwrap();
    let service_pem = ca.self_signed(&service_key).unwrap().pem();

    let mut node = CertificateParams::new(vec!["ledger.example".to_owned()]).unwrap();
    node.distinguished_name.push(DnType::CommonName, "CCF Node");
    node.is_ca = IsCa::ExplicitNoCa;
    let node_pair = KeyPair::generate_for(alg).unwrap();
    let node_pem = node
        .signed_by(&node_pair, &Issuer::from_params(&ca, &service_key))
        .unwrap()
        .pem();
    Pki {
        service_pem,
        node_pem,
        node_key: EcSigningKey::from_pkcs8_der(node_pair.serialized_der()).unwrap(),
        node_key_der: node_pair.serialized_der().to_vec(),
    }
}

/// The parts of a ledger-shaped receipt: transaction `2.<seqno>` in a tree of 1000 leaves whose
/// leaves are real leaf hashes, signed by the node.
fn receipt_parts(pki: &Pki) -> ReceiptParts {
    let secret = CommitSecret::derive(&[7; 32]);
    let size = 1_000u64;
    let target = 617u64;
    let mut tree = MemoryTree::new();
    let mut parts = None;
    tree.push(Hash32::ZERO);
    for seqno in 1..size {
        let txid = TxId::new(2, seqno).unwrap();
        let write_set_digest = sha256(format!("entry {seqno}").as_bytes());
        let evidence = secret.evidence(txid);
        let claims_digest = claims::ledger_entry_claims_digest("subledger:0", "hello", &[1; 32]);
        tree.push(leaf_hash(
            &write_set_digest,
            &evidence.digest(),
            &claims_digest,
        ));
        if seqno == target {
            parts = Some((write_set_digest, evidence, claims_digest));
        }
    }
    let (write_set_digest, commit_evidence, claims_digest) = parts.unwrap();
    let root = tree.root().unwrap();
    ReceiptParts {
        write_set_digest,
        commit_evidence,
        claims_digest,
        proof: merkle::inclusion_path(&tree, target, size).unwrap(),
        signature_der: pki.node_key.sign_root(&root),
        node_cert_pem: pki.node_pem.clone(),
        node_id: pki.node_key.node_id(),
        service_endorsements: Vec::new(),
    }
}

fn bench_receipts(c: &mut Criterion) {
    let mut g = c.benchmark_group("receipt");
    g.throughput(Throughput::Elements(1));
    for (label, alg) in [
        ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
    ] {
        let pki = pki(alg);
        let parts = receipt_parts(&pki);
        let root = sha256(b"a root");

        g.bench_function(BenchmarkId::new("sign_root", label), |bench| {
            bench.iter(|| pki.node_key.sign_root(black_box(&root)))
        });
        // What the server does per receipt request once it has the path: assemble and serialise.
        g.bench_function(BenchmarkId::new("build_json", label), |bench| {
            bench.iter_batched(
                || parts.clone(),
                |parts| serde_json::to_string(&Receipt::build(parts)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        // The COSE root signature each signature transaction now also carries (service key;
        // here the node key stands in, same curve), a COSE receipt built from it, and its
        // verification.
        let service = ledger_core::cose::ServiceSigner::new(
            EcSigningKey::from_pkcs8_der(&pki.node_key_der).unwrap(),
        );
        let sig_txid = TxId::new(2, 1_000).unwrap();
        g.bench_function(BenchmarkId::new("cose_sign_root", label), |bench| {
            bench.iter(|| service.sign_root(black_box(&root), sig_txid, Some("bench"), 1))
        });
        let cose_root = service.sign_root(&parts_root(&parts), sig_txid, Some("bench"), 1);
        let leaf = ledger_core::cose::ReceiptLeaf {
            write_set_digest: parts.write_set_digest,
            commit_evidence: parts.commit_evidence.clone(),
            claims_digest: parts.claims_digest,
        };
        g.bench_function(BenchmarkId::new("cose_build", label), |bench| {
            bench.iter(|| {
                ledger_core::cose::build_receipt(black_box(&cose_root), &leaf, &parts.proof)
                    .unwrap()
            })
        });
        let cose_receipt =
            ledger_core::cose::build_receipt(&cose_root, &leaf, &parts.proof).unwrap();
        let key = service.public_key();
        g.bench_function(BenchmarkId::new("cose_verify", label), |bench| {
            bench
                .iter(|| ledger_core::cose::verify_receipt(black_box(&cose_receipt), &key).unwrap())
        });
        let receipt = Receipt::build(parts.clone());
        let json = serde_json::to_string(&receipt).unwrap();
        verify_receipt(&receipt, &pki.service_pem, None).expect("the bench receipt verifies");
        // What a client does: parse the JSON, check the chain, the leaf, the path and signature.
        g.bench_function(BenchmarkId::new("parse_verify", label), |bench| {
            bench.iter(|| {
                let r = Receipt::from_json(black_box(&json)).unwrap();
                verify_receipt(&r, &pki.service_pem, None).unwrap()
            })
        });
    }
    g.finish();
}

// ---- Entries -------------------------------------------------------------------------------

/// A stand-in for AES-GCM (which the store's benchmark measures): zero nonce and tag around the
/// plaintext, so this measures the encoding alone.
struct PlainSealer;

impl Sealer for PlainSealer {
    fn seal(&mut self, _aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(plaintext);
        out.extend_from_slice(&[0; 16]);
        out
    }
}

impl Opener for PlainSealer {
    fn open(&self, _aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        Some(sealed.get(12..sealed.len().checked_sub(16)?)?.to_vec())
    }
}

fn bench_entries(c: &mut Criterion) {
    let mut g = c.benchmark_group("entry");
    g.throughput(Throughput::Elements(1));
    let body = TxBody::Application(ApplicationEntry {
        collection_id: "subledger:0".into(),
        contents: "x".repeat(256),
        tags: vec!["tag1".into()],
        claims_key: None,
        idempotency: None,
        kv_writes: Vec::new(),
    });
    let txid = TxId::new(2, 4711).unwrap();
    let ce = sha256(b"commit evidence");
    g.bench_function("encode_app_256B", |bench| {
        bench.iter(|| {
            entry::encode(
                black_box(txid),
                black_box(&body),
                &ce,
                &Hash32::ZERO,
                &mut PlainSealer,
            )
        })
    });
    let bytes = entry::encode(txid, &body, &ce, &Hash32::ZERO, &mut PlainSealer);
    g.bench_function("parse_app_256B", |bench| {
        bench.iter(|| EntryView::parse(black_box(&bytes), 4711).unwrap())
    });
    g.bench_function("parse_decode_app_256B", |bench| {
        bench.iter(|| {
            EntryView::parse(black_box(&bytes), 4711)
                .unwrap()
                .application(&PlainSealer)
                .unwrap()
        })
    });
    // The leaf of a stored entry: SHA-256 of the whole entry plus the leaf hash.
    g.bench_function("leaf_app_256B", |bench| {
        bench.iter(|| EntryView::parse(black_box(&bytes), 4711).unwrap().leaf())
    });
    let secret = CommitSecret::derive(&[3; 32]);
    g.bench_function("commit_evidence", |bench| {
        bench.iter(|| secret.evidence(black_box(txid)))
    });
    g.finish();
}

fn bench_txid(c: &mut Criterion) {
    c.bench_function("txid/parse", |bench| {
        bench.iter(|| TxId::parse(black_box("2.1234567")).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench_merkle, bench_receipts, bench_entries, bench_txid
}
criterion_main!(benches);
