//! Measures the store alone (no HTTP): durable committed appends per second with group commit,
//! then receipts built and verified per second.
//!
//! `cargo run --release -p ledger-store --example store_bench -- [SECONDS] [IN_FLIGHT] [ENTRY_BYTES] [DIR]`
//!
//! Every append is fsync'd (one `fdatasync` per group) and signed at the default cadence; the
//! figure is "committed", i.e. durable and covered by a durable signature.

use ledger_core::TxId;
use ledger_core::entry::ApplicationEntry;
use ledger_core::receipt::verify_receipt;
use ledger_core::signing::EcSigningKey;
use ledger_identity::Curve;
use ledger_identity::files::NodeFiles;
use ledger_store::{Genesis, Ledger, NodeIdentity, StoreConfig, WriteRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().map_or(5, |s| s.parse().expect("SECONDS"));
    let in_flight: usize = args.get(1).map_or(256, |s| s.parse().expect("IN_FLIGHT"));
    let size: usize = args.get(2).map_or(256, |s| s.parse().expect("ENTRY_BYTES"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .get(3)
        .map_or_else(|| tmp.path().to_owned(), std::path::PathBuf::from);

    let files = NodeFiles::create(&dir, Curve::P384, &[]).expect("identity");
    let node = NodeIdentity {
        signing_key: EcSigningKey::from_pkcs8_pem(&files.node_key_pem).expect("key"),
        cert_pem: files.node_cert_pem.clone(),
        service_key: EcSigningKey::from_pkcs8_pem(&files.service_key_pem).expect("key"),
    };
    let genesis = Genesis {
        ledger_id: "bench".into(),
        service_cert_pem: files.service_cert_pem.clone(),
        writes: vec![],
    };
    let ledger =
        Arc::new(Ledger::create(&dir, StoreConfig::default(), node, genesis).expect("create"));

    // Closed loop: keep IN_FLIGHT submissions outstanding.
    let slots = Arc::new((Mutex::new(in_flight), Condvar::new()));
    let committed = Arc::new(AtomicU64::new(0));
    let contents = "x".repeat(size);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut submitted = 0u64;
    while Instant::now() < deadline {
        {
            let (lock, cv) = &*slots;
            let mut free = lock.lock().unwrap();
            while *free == 0 {
                free = cv.wait(free).unwrap();
            }
            *free -= 1;
        }
        let entry = ApplicationEntry {
            collection_id: format!("c{}", submitted % 4),
            contents: contents.clone(),
            tags: vec![],
            claims_key: None,
            idempotency: None,
            kv_writes: Vec::new(),
        };
        let (slots2, committed2) = (slots.clone(), committed.clone());
        let done = Box::new(move |r: Result<TxId, ledger_store::AppendError>| {
            r.expect("append failed");
            committed2.fetch_add(1, Ordering::Relaxed);
            let (lock, cv) = &*slots2;
            *lock.lock().unwrap() += 1;
            cv.notify_one();
        });
        match ledger.submit(WriteRequest::Entry(entry), done) {
            Ok(()) => submitted += 1,
            Err(e) => panic!("submit: {e}"),
        }
    }
    {
        let (lock, cv) = &*slots;
        let mut free = lock.lock().unwrap();
        while *free < in_flight {
            free = cv.wait(free).unwrap();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = committed.load(Ordering::Relaxed);
    let last = ledger.committed().expect("committed");
    let signatures = last.seqno() - n - 1; // genesis + entries + signatures
    println!(
        "appends: {n} committed in {elapsed:.2} s = {:.0}/s ({size}-byte entries, {in_flight} in flight)",
        n as f64 / elapsed
    );
    println!(
        "signatures: {signatures} ({:.1} entries per signature)",
        n as f64 / signatures.max(1) as f64
    );

    // Receipts of random committed transactions, then verification of each.
    let samples = 2000u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let txids: Vec<TxId> = (0..samples)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            TxId::new(last.view(), 1 + x % last.seqno()).unwrap()
        })
        .collect();
    let t = Instant::now();
    let receipts: Vec<_> = txids
        .iter()
        .map(|t| ledger.receipt(*t).expect("receipt").expect("committed"))
        .collect();
    let build = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &receipts {
        verify_receipt(&r.receipt, &files.service_cert_pem, None).expect("verifies");
    }
    let verify = t.elapsed().as_secs_f64();
    println!(
        "receipts: built {:.0}/s, verified {:.0}/s (one thread, ledger of {} transactions)",
        samples as f64 / build,
        samples as f64 / verify,
        last.seqno()
    );
    ledger.close();
}
