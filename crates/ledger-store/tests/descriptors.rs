//! The process runs out of file descriptors for real (no fault injection): the soft
//! `RLIMIT_NOFILE` of this test process is lowered, every free descriptor is taken, and the
//! next checkpoint's `open` of the tree directory fails with EMFILE. The store must treat that
//! as transient: writes are refused with a `Resources` fault while descriptors are short, and
//! resume by themselves once they are back, without reopening the ledger. (Before `Resources`
//! existed, EMFILE was classified like a failed fsync and poisoned the store until restart.)
//!
//! This file holds one test on purpose: it exhausts the descriptors of the whole process.

mod common;

use common::*;
use ledger_store::faults::errno::{EMFILE, ENFILE};
use ledger_store::{AppendError, FaultKind, StorageOp, StoreConfig, WriteRequest, audit};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::fs::File;
use std::time::{Duration, Instant};

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Descriptors this process has open now (Linux).
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

#[test]
fn running_out_of_descriptors_is_transient_and_writes_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = StoreConfig {
        // A checkpoint after every batch, so the next write's checkpoint meets the shortage.
        checkpoint_interval: Duration::ZERO,
        fault_probe_interval: Duration::from_millis(20),
        ..StoreConfig::default()
    };
    let (ledger, files) = create_ledger(dir, config);
    let mut acked = append_each(&ledger, "before", 5);

    // A low soft limit, so that taking every free descriptor is quick whatever the hard
    // limit is; restored at the end.
    let original = getrlimit(Resource::Nofile);
    let low = open_descriptors() + 32;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(low),
            maximum: original.maximum,
        },
    )
    .expect("lower the soft open-file limit");
    // `append` returns at commit, before the batch's checkpoint has run: let it finish (and
    // close what it opened) first, so the shortage meets the next write's checkpoint.
    std::thread::sleep(Duration::from_millis(300));
    let mut hog = Vec::new();
    for _ in 0..3 {
        let shortage = loop {
            match File::open("/dev/null") {
                Ok(f) => hog.push(f),
                Err(e) => break e,
            }
            assert!(hog.len() < 1 << 16, "the lowered limit did not hold");
        };
        assert!(
            matches!(shortage.raw_os_error(), Some(EMFILE | ENFILE)),
            "{shortage}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ledger.write_health().is_ok(), "no fault before the write");

    // The batch itself needs no new descriptor; its checkpoint opens the tree directory.
    match ledger.append(WriteRequest::Entry(numbered_entry("short", 0))) {
        Ok(txid) => acked.push((txid, numbered_entry("short", 0))),
        Err(AppendError::Unavailable(f)) => assert_eq!(f.kind, FaultKind::Resources, "{f}"),
        Err(e) => panic!("unexpected {e:?}"),
    }
    wait_for("the shortage to show", Duration::from_secs(5), || {
        ledger.write_health().is_err()
    });
    let health = ledger.write_health().unwrap_err();
    let AppendError::Unavailable(fault) = &health else {
        panic!("write_health says {health:?}");
    };
    assert_eq!(fault.kind, FaultKind::Resources, "{fault}");
    // The checkpoint's first step: fsync the tree files, after opening their directory.
    assert_eq!(fault.operation, StorageOp::TreeSync, "{fault}");
    assert!(
        fault.transient,
        "a descriptor shortage must not poison: {fault}"
    );
    assert_eq!(fault.errno, Some(EMFILE), "{fault}");
    assert!(ledger.failure().is_none(), "not poisoned");
    // Still short: probes fail, writes are refused at once, reads work.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        ledger.write_health().is_err(),
        "recovered while still short"
    );
    let refused = ledger.append(WriteRequest::Entry(numbered_entry("refused", 0)));
    assert!(
        matches!(&refused, Err(AppendError::Unavailable(f)) if f.kind == FaultKind::Resources && f.transient),
        "{refused:?}"
    );
    assert_entries_intact(&ledger, &acked);

    // The descriptors come back: the next probe succeeds and writes resume by themselves.
    drop(hog);
    setrlimit(Resource::Nofile, original).expect("restore the open-file limit");
    wait_for("writes to resume", Duration::from_secs(5), || {
        ledger.write_health().is_ok()
    });
    acked.extend(append_each(&ledger, "after", 5));
    assert_entries_intact(&ledger, &acked);
    for (txid, _) in &acked {
        verify_receipt_of(&ledger, *txid, &files.service_cert_pem);
    }
    ledger.close();
    drop(ledger);

    let (ledger, _) = reopen_ok(dir, StoreConfig::default());
    assert_entries_intact(&ledger, &acked);
    drop(ledger);
    let report =
        audit::audit(dir, Some(&files.service_cert_pem)).unwrap_or_else(|e| panic!("audit: {e}"));
    assert_eq!(report.unsigned_tail, 0);
}
