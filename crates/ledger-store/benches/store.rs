//! Micro-benchmarks of the store's hot per-transaction work that needs no disk: segment frame
//! encoding and scanning (CRC-32C), AES-256-GCM sealing and opening of private sections, whole
//! entries through the real sealer, and unwrapping the ledger secret.
//!
//! `cargo bench -p ledger-store`. Each benchmark runs 1 s warm-up + 3 s measurement.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledger_core::TxId;
use ledger_core::entry::{self, ApplicationEntry, EntryView, Opener, Sealer, TxBody};
use ledger_core::hash::{Hash32, sha256};
use ledger_store::KekSource;
use ledger_store::crypto::{LedgerSecret, load_kek};
use ledger_store::segment::{encode_frame, encode_segment_header, scan_segment};
use std::hint::black_box;
use std::time::Duration;

fn app_body() -> TxBody {
    TxBody::Application(ApplicationEntry {
        collection_id: "subledger:0".into(),
        contents: "x".repeat(256),
        tags: Vec::new(),
        claims_key: None,
        idempotency: None,
        kv_writes: Vec::new(),
    })
}

fn bench_segment(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment");
    // A frame payload the size of a stored 256-byte application entry (~330 bytes), starting
    // like a format-2 entry of view 1 (the scanner reads the view from it).
    let mut payload = vec![entry::FORMAT_VERSION, 1, 1];
    payload.resize(330, 0x5a);
    let mut out = Vec::with_capacity(1024);
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_frame_330B", |bench| {
        bench.iter(|| {
            out.clear();
            encode_frame(&mut out, black_box(&payload));
        })
    });
    // Decoding and checking frames is what recovery and the audit do: scan a whole segment.
    const FRAMES: u64 = 1000;
    let mut segment = encode_segment_header(1).to_vec();
    for _ in 1..=FRAMES {
        encode_frame(&mut segment, &payload);
    }
    assert!(scan_segment(&segment, None).damage.is_none());
    g.throughput(Throughput::Elements(FRAMES));
    g.bench_function("scan_segment_1000x330B", |bench| {
        bench.iter(|| {
            let scan = scan_segment(black_box(&segment), None);
            assert_eq!(scan.frames.len(), FRAMES as usize);
            scan
        })
    });
    g.finish();
}

fn bench_crypto(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let kek = load_kek(&KekSource::DataDir, dir.path(), true).unwrap();
    let secret_path = dir.path().join("keys").join("ledger_secret");
    let secret = LedgerSecret::create(&secret_path, &kek).unwrap();

    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));
    let aad = [0x11_u8; 90];
    let plaintext = vec![0x42_u8; 256];
    // Includes drawing the 96-bit nonce from the OS, as every write does.
    g.bench_function("seal_256B", |bench| {
        bench.iter(|| {
            secret
                .sealer()
                .unwrap()
                .seal(black_box(&aad), black_box(&plaintext))
        })
    });
    let sealed = secret.sealer().unwrap().seal(&aad, &plaintext);
    g.bench_function("open_256B", |bench| {
        bench.iter(|| secret.open(black_box(&aad), black_box(&sealed)).unwrap())
    });

    // A whole application entry with 256 bytes of contents through the real sealer.
    let body = app_body();
    let txid = TxId::new(2, 4711).unwrap();
    let ce = sha256(b"commit evidence");
    g.bench_function("entry_encode_seal_256B", |bench| {
        bench.iter(|| {
            entry::encode(
                black_box(txid),
                &body,
                &ce,
                &Hash32::ZERO,
                &mut secret.sealer().unwrap(),
            )
        })
    });
    let bytes = entry::encode(
        txid,
        &body,
        &ce,
        &Hash32::ZERO,
        &mut secret.sealer().unwrap(),
    );
    g.bench_function("entry_parse_open_256B", |bench| {
        bench.iter(|| {
            EntryView::parse(black_box(&bytes), 4711)
                .unwrap()
                .application(&secret)
                .unwrap()
        })
    });
    // Key unwrapping: read keys/ledger_secret and open it under the KEK (done once per open).
    g.bench_function("ledger_secret_load", |bench| {
        bench.iter(|| LedgerSecret::load(black_box(&secret_path), &kek).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench_segment, bench_crypto
}
criterion_main!(benches);
