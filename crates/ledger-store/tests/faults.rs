//! Storage faults injected into the write path: for every write-path operation and every kind
//! of failure (EIO, ENOSPC, EROFS, a short write then ENOSPC, and running out of descriptors or
//! memory: EMFILE, ENFILE, ENOMEM), writes are refused with the right error while reads go on,
//! writes resume by themselves when the fault clears (except after an fdatasync that failed
//! with EIO: until reopen), and after reopening every acknowledged write is there with a
//! verifying receipt, the audit passes and no seqno was used twice.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::entry::ApplicationEntry;
use ledger_store::faults::errno::{EIO, EMFILE, ENFILE, ENOMEM, ENOSPC, EROFS};
use ledger_store::{
    AppendError, FaultKind, FaultPlan, Ledger, StorageOp, StoreConfig, WriteRequest, audit,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

static INJECTED: AtomicU64 = AtomicU64::new(0);

fn fault_config(plan: &Arc<FaultPlan>) -> StoreConfig {
    StoreConfig {
        // Small segments rotate every few dozen entries, so segment creation is exercised.
        segment_max_bytes: 4 << 10,
        // A checkpoint after every batch, so tree fsyncs, index commits and the fork guard are.
        checkpoint_interval: Duration::ZERO,
        fault_probe_interval: Duration::from_millis(20),
        faults: Some(plan.clone()),
        ..StoreConfig::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Errno(i32),
    /// Half of the buffer really written, then ENOSPC.
    Short,
}

impl Mode {
    fn kind(self) -> FaultKind {
        match self {
            Mode::Errno(EIO) => FaultKind::Io,
            Mode::Errno(EROFS) => FaultKind::ReadOnly,
            Mode::Errno(EMFILE | ENFILE | ENOMEM) => FaultKind::Resources,
            Mode::Errno(_) | Mode::Short => FaultKind::DiskFull,
        }
    }

    fn arm(self, plan: &FaultPlan, op: StorageOp) {
        match self {
            Mode::Errno(e) => plan.fail(op, e),
            Mode::Short => plan.short_write(op, ENOSPC),
        }
    }
}

const OPS: [StorageOp; 7] = [
    StorageOp::SegmentWrite,
    StorageOp::SegmentSync,
    StorageOp::SegmentCreate,
    StorageOp::TreeWrite,
    StorageOp::TreeSync,
    StorageOp::IndexCommit,
    StorageOp::GuardWrite,
];

const MODES: [Mode; 7] = [
    Mode::Errno(EIO),
    Mode::Errno(ENOSPC),
    Mode::Errno(EROFS),
    Mode::Short,
    Mode::Errno(EMFILE),
    Mode::Errno(ENFILE),
    Mode::Errno(ENOMEM),
];

/// Only a failed fsync with EIO leaves the disk's content unknown (fsyncgate). Running out of
/// descriptors or memory on a sync step (the `open` of the directory before its fsync, in
/// practice) is transient like any other resource shortage.
fn poisons(op: StorageOp, mode: Mode) -> bool {
    op.is_sync() && matches!(mode, Mode::Errno(EIO))
}

fn entry(label: &str, i: u64) -> ApplicationEntry {
    numbered_entry(label, i)
}

/// Reads every acknowledged entry and its receipt until told to stop; returns the number of
/// rounds. Any read failure fails the test.
fn reader(
    ledger: &Ledger,
    acked: &Mutex<Vec<(TxId, ApplicationEntry)>>,
    stop: &AtomicBool,
    cert: &str,
) -> u64 {
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        let snapshot = acked.lock().unwrap().clone();
        assert_entries_intact(ledger, &snapshot);
        if let Some((txid, _)) = snapshot.last() {
            verify_receipt_of(ledger, *txid, cert);
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    rounds
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check_after_reopen(dir: &Path, acked: &[(TxId, ApplicationEntry)], cert: &str) {
    let (ledger, _) = reopen_ok(dir, StoreConfig::default());
    assert_entries_intact(&ledger, acked);
    for (txid, _) in acked {
        verify_receipt_of(&ledger, *txid, cert);
    }
    let seqnos: HashSet<u64> = acked.iter().map(|(t, _)| t.seqno()).collect();
    assert_eq!(seqnos.len(), acked.len(), "a seqno was acknowledged twice");
    // The ledger takes writes after recovery.
    let txid = ledger
        .append(WriteRequest::Entry(entry("after-reopen", 0)))
        .expect("writes work after reopening");
    assert!(txid.seqno() > acked.iter().map(|(t, _)| t.seqno()).max().unwrap_or(0));
    ledger.close();
    drop(ledger);
    let report = audit::audit(dir, Some(cert)).unwrap_or_else(|e| panic!("audit failed: {e}"));
    assert_eq!(report.unsigned_tail, 0);
    // Frames are consecutive (ledger_frames checks every segment); no seqno twice on disk.
    let frames = ledger_frames(dir);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.txid.seqno(), i as u64 + 1);
    }
}

fn run_case(op: StorageOp, mode: Mode) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plan = FaultPlan::new();
    let (ledger, files) = create_ledger(dir, fault_config(&plan));
    let cert = files.service_cert_pem.clone();
    let acked: Mutex<Vec<(TxId, ApplicationEntry)>> = Mutex::new(append_each(&ledger, "before", 3));
    let stop = AtomicBool::new(false);
    let case = format!("{op:?} × {mode:?}");
    let started = Instant::now();
    eprintln!("case {case}");
    std::thread::scope(|scope| {
        let reads = scope.spawn(|| reader(&ledger, &acked, &stop, &cert));
        mode.arm(&plan, op);
        // Write until the fault shows (segment creation needs a rotation first).
        let mut first_error = None;
        for i in 0..400 {
            let e = entry("during", i);
            match ledger.append(WriteRequest::Entry(e.clone())) {
                Ok(txid) => acked.lock().unwrap().push((txid, e)),
                Err(err) => {
                    first_error = Some(err);
                    break;
                }
            }
        }
        let first_error = first_error.unwrap_or_else(|| panic!("{case}: no write failed"));
        match &first_error {
            AppendError::Unavailable(fault) => {
                assert_eq!(fault.operation, op, "{case}: {fault}");
                assert_eq!(fault.kind, mode.kind(), "{case}: {fault}");
            }
            // The batch was durable when the derived files failed, or its fate is unknown.
            AppendError::Indeterminate(_) => {}
            other => panic!("{case}: unexpected error {other:?}"),
        }
        // Writes are refused fast, with the fault.
        let health = ledger.write_health().expect_err("writes are refused");
        let AppendError::Unavailable(fault) = &health else {
            panic!("{case}: write_health says {health:?}");
        };
        assert_eq!(fault.operation, op, "{case}: {fault}");
        assert_eq!(fault.kind, mode.kind(), "{case}: {fault}");
        assert_eq!(fault.transient, !poisons(op, mode), "{case}: {fault}");
        let refused = ledger.append(WriteRequest::Entry(entry("refused", 0)));
        assert!(
            matches!(&refused, Err(AppendError::Unavailable(f)) if f.operation == op),
            "{case}: {refused:?}"
        );
        // Still refused while the fault lasts (probes keep failing).
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            ledger.write_health().is_err(),
            "{case}: recovered while faulty"
        );
        plan.clear();
        if poisons(op, mode) {
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                matches!(ledger.write_health(), Err(AppendError::Unavailable(f)) if !f.transient),
                "{case}: a failed fsync must stop writes until reopen"
            );
            assert!(ledger.failure().is_some());
        } else {
            wait_for(
                &format!("{case}: writes to resume"),
                Duration::from_secs(5),
                || ledger.write_health().is_ok(),
            );
            assert!(ledger.failure().is_none());
            let more = append_each(&ledger, "after", 3);
            acked.lock().unwrap().extend(more);
        }
        stop.store(true, Ordering::Relaxed);
        let rounds = reads.join().expect("reads never fail");
        assert!(rounds > 0);
    });
    INJECTED.fetch_add(plan.injected(), Ordering::Relaxed);
    ledger.close();
    drop(ledger);
    let acked = acked.into_inner().unwrap();
    check_after_reopen(dir, &acked, &files.service_cert_pem);
    eprintln!("case {case}: ok in {:?}", started.elapsed());
}

#[test]
fn every_operation_and_fault_kind() {
    let started = Instant::now();
    let before = INJECTED.load(Ordering::Relaxed);
    for op in OPS {
        for mode in MODES {
            run_case(op, mode);
        }
    }
    eprintln!(
        "faults: {} cases, {} faults injected, {:?}",
        OPS.len() * MODES.len(),
        INJECTED.load(Ordering::Relaxed) - before,
        started.elapsed()
    );
}

/// A short write whose cut-back fails leaves the disk's content unknown: the batch is
/// Indeterminate and the store is poisoned; reopening truncates the torn tail.
#[test]
fn failed_cut_back_poisons() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plan = FaultPlan::new();
    let (ledger, files) = create_ledger(dir, fault_config(&plan));
    let acked = append_each(&ledger, "before", 3);
    plan.short_write(StorageOp::SegmentWrite, ENOSPC);
    plan.fail(StorageOp::SegmentTruncate, EIO);
    let r = ledger.append(WriteRequest::Entry(entry("torn", 0)));
    assert!(matches!(r, Err(AppendError::Indeterminate(_))), "{r:?}");
    let health = ledger.write_health();
    assert!(
        matches!(&health, Err(AppendError::Unavailable(f)) if !f.transient && f.operation == StorageOp::SegmentTruncate),
        "{health:?}"
    );
    plan.clear();
    std::thread::sleep(Duration::from_millis(60));
    assert!(ledger.write_health().is_err());
    assert_entries_intact(&ledger, &acked);
    INJECTED.fetch_add(plan.injected(), Ordering::Relaxed);
    eprintln!(
        "failed_cut_back_poisons: {} faults injected",
        plan.injected()
    );
    drop(ledger);
    // Half a batch is on disk: recovery cuts it off as a torn tail (or, should the half end
    // on a frame boundary, signs the whole frames): either way the audit passes below.
    let (ledger, report) = reopen_ok(dir, StoreConfig::default());
    eprintln!("recovery after the failed cut-back: {report:?}");
    drop(ledger);
    check_after_reopen(dir, &acked, &files.service_cert_pem);
}

/// Transactions made durable without a signature before the disk filled up are reported
/// Indeterminate, and are signed (committed) by the writer once space returns.
#[test]
fn durable_unsigned_tail_is_signed_after_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plan = FaultPlan::new();
    let config = StoreConfig {
        max_batch: 4,
        sign_every: 1_000_000,
        sign_interval: Duration::from_secs(3600),
        ..fault_config(&plan)
    };
    let (ledger, files) = create_ledger(dir, config);
    let acked_before = append_each(&ledger, "before", 2);
    // The first three batches reach the disk; the fourth fails with ENOSPC.
    plan.fail_after(StorageOp::SegmentWrite, ENOSPC, 3);
    let (tx, rx) = mpsc::channel();
    let n = 40u64;
    let mut refused_at_submit = 0;
    for i in 0..n {
        let tx = tx.clone();
        let done = Box::new(move |r| {
            let _ = tx.send((i, r));
        });
        let e = ApplicationEntry {
            collection_id: "tail".into(),
            ..entry("tail", i)
        };
        if ledger.submit(WriteRequest::Entry(e), done).is_err() {
            refused_at_submit += 1;
        }
    }
    drop(tx);
    let mut ok = 0;
    let mut indeterminate = 0;
    let mut unavailable = 0;
    for (_, r) in rx.iter() {
        match r {
            Ok(_) => ok += 1,
            Err(AppendError::Indeterminate(_)) => indeterminate += 1,
            Err(AppendError::Unavailable(f)) => {
                assert_eq!(f.kind, FaultKind::DiskFull);
                unavailable += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok + indeterminate + unavailable + refused_at_submit, n);
    assert!(unavailable + refused_at_submit > 0);
    plan.clear();
    wait_for("writes to resume", Duration::from_secs(5), || {
        ledger.write_health().is_ok()
    });
    // Everything that reached the disk is committed now: the acknowledged and the
    // indeterminate ones, and nothing else.
    let stored = ledger.entries("tail", None, 0, u64::MAX, 1000).unwrap();
    assert_eq!(
        stored.len() as u64,
        ok + indeterminate,
        "ok {ok}, indeterminate {indeterminate}"
    );
    eprintln!(
        "durable_unsigned_tail: {ok} ok, {indeterminate} indeterminate then committed, {} refused; {} faults injected",
        unavailable + refused_at_submit,
        plan.injected()
    );
    INJECTED.fetch_add(plan.injected(), Ordering::Relaxed);
    let mut acked = acked_before;
    acked.extend(stored.into_iter().map(|r| (r.txid, r.entry)));
    drop(ledger);
    check_after_reopen(dir, &acked, &files.service_cert_pem);
}

/// The observer hears about durable batches, commits and faults; the queue depth is reported.
#[test]
fn observer_and_queue_depth() {
    #[derive(Default)]
    struct Counts {
        batches: AtomicU64,
        transactions: AtomicU64,
        signatures: AtomicU64,
        committed: AtomicU64,
        faults: Mutex<Vec<ledger_store::StorageFault>>,
    }
    impl ledger_store::StoreObserver for Counts {
        fn batch_durable(&self, t: usize, s: usize, bytes: usize, _: Duration) {
            assert!(bytes > 0);
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.transactions.fetch_add(t as u64, Ordering::Relaxed);
            self.signatures.fetch_add(s as u64, Ordering::Relaxed);
        }
        fn committed(&self, latencies: &[Duration]) {
            self.committed
                .fetch_add(latencies.len() as u64, Ordering::Relaxed);
        }
        fn storage_fault(&self, fault: &ledger_store::StorageFault) {
            self.faults.lock().unwrap().push(fault.clone());
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let counts = Arc::new(Counts::default());
    let config = StoreConfig {
        observer: Some(counts.clone()),
        ..fault_config(&plan)
    };
    let (ledger, _) = create_ledger(tmp.path(), config);
    assert_eq!(ledger.queue_depth(), 0);
    append_numbered(&ledger, "obs", 50);
    // Genesis + 50 entries (the genesis is submitted too).
    assert_eq!(counts.transactions.load(Ordering::Relaxed), 51);
    assert_eq!(counts.committed.load(Ordering::Relaxed), 51);
    assert!(counts.signatures.load(Ordering::Relaxed) >= 1);
    assert!(ledger.write_health().is_ok());
    plan.fail(StorageOp::SegmentSync, ENOSPC);
    assert!(ledger.append(WriteRequest::Entry(entry("x", 0))).is_err());
    let faults = counts.faults.lock().unwrap().clone();
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].kind, FaultKind::DiskFull);
    assert_eq!(faults[0].operation, StorageOp::SegmentSync);
    assert_eq!(ledger.queue_depth(), 0);
    plan.clear();
    INJECTED.fetch_add(plan.injected(), Ordering::Relaxed);
}

/// Faults under a steady stream of writes from several submitters (each batch is several
/// writes, and writes keep arriving while a batch is synced): every acknowledged write
/// survives reopening, and no write refused as `Unavailable` (a definite "not written") is
/// found in the ledger afterwards.
#[test]
fn faults_under_a_steady_stream_of_writes() {
    const SUBMITTERS: u64 = 4;
    for (op, mode) in [
        (StorageOp::SegmentSync, Mode::Errno(EIO)),
        (StorageOp::SegmentSync, Mode::Errno(ENOSPC)),
        (StorageOp::SegmentWrite, Mode::Short),
        (StorageOp::SegmentCreate, Mode::Errno(EMFILE)),
        (StorageOp::TreeWrite, Mode::Errno(ENOSPC)),
        (StorageOp::IndexCommit, Mode::Errno(EIO)),
    ] {
        let case = format!("{op:?} × {mode:?} under a stream of writes");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let plan = FaultPlan::new();
        let (ledger, files) = create_ledger(dir, fault_config(&plan));
        let (results, outcomes) = mpsc::channel();
        let failed = AtomicBool::new(false);
        let committed = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for s in 0..SUBMITTERS {
                let (ledger, results, failed, committed, plan) =
                    (&ledger, results.clone(), &failed, &committed, &plan);
                scope.spawn(move || {
                    // Submitted without waiting, so writes keep arriving while a batch syncs.
                    for i in 0.. {
                        if failed.load(Ordering::SeqCst) {
                            break;
                        }
                        if s == 0 && committed.load(Ordering::SeqCst) >= 300 && plan.injected() == 0
                        {
                            mode.arm(plan, op);
                        }
                        let e = entry(&format!("submitter {s}"), i);
                        let results = results.clone();
                        let kept = e.clone();
                        let done = Box::new(move |result: Result<TxId, AppendError>| {
                            let _ = results.send((kept, result));
                        });
                        match ledger.submit(WriteRequest::Entry(e), done) {
                            Ok(()) => {}
                            Err(AppendError::Busy) => {}
                            Err(_) => break,
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                });
            }
            drop(results);
            // Watch the outcomes until the fault shows.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !failed.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "{case}: no write failed");
                if ledger.write_health().is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                committed.store(ledger.committed().map_or(0, TxId::seqno), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // While the fault lasts, a write is refused as not written.
        let after = entry("after the fault", 0);
        let refused_after = ledger.append(WriteRequest::Entry(after.clone()));
        assert!(
            matches!(refused_after, Err(AppendError::Unavailable(_))),
            "{case}: a write after the fault: {refused_after:?}"
        );
        plan.clear();
        // Closing answers every submission still queued.
        ledger.close();
        drop(ledger);
        let mut acked = Vec::new();
        let mut refused = vec![after];
        for (e, result) in outcomes.iter() {
            match result {
                Ok(txid) => acked.push((txid, e)),
                Err(AppendError::Unavailable(_)) => refused.push(e),
                Err(AppendError::Indeterminate(_)) => {}
                Err(other) => panic!("{case}: unexpected error {other:?}"),
            }
        }
        INJECTED.fetch_add(plan.injected(), Ordering::Relaxed);
        assert!(acked.len() >= 200, "{case}: {} acknowledged", acked.len());
        check_after_reopen(dir, &acked, &files.service_cert_pem);
        let (ledger, _) = reopen_ok(dir, StoreConfig::default());
        let stored: HashSet<String> = ledger_frames(dir)
            .iter()
            .filter_map(|f| ledger.entry(f.txid).ok().flatten())
            .map(|record| record.entry.contents)
            .collect();
        for e in &refused {
            assert!(
                !stored.contains(&e.contents),
                "{case}: {:?} was refused as not written, but the ledger holds it",
                e.contents
            );
        }
        eprintln!(
            "{case}: {} acknowledged, {} refused, {} faults injected",
            acked.len(),
            refused.len(),
            plan.injected()
        );
    }
}

/// (data end, file length) of each segment of the ledger in `dir`, in order.
fn segment_extents(dir: &Path) -> Vec<(u64, u64)> {
    let mut prev = None;
    segment_paths(dir)
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let scan = ledger_store::segment::scan_segment(&bytes, prev);
            assert_eq!(scan.damage, None, "{}", path.display());
            prev = scan.frames.last().map(|f| f.txid).or(prev);
            (scan.data_end(), bytes.len() as u64)
        })
        .collect()
}

/// The writer zero-fills the active segment ahead of its frames, a step at a time and never
/// past the segment size (a sealed segment ends at its last frame). When zero-filling fails (a
/// disk with room for the batch but not for the zeros) writes go on, growing the file, and
/// zero-filling resumes once it works again.
#[test]
fn preallocation_runs_ahead_and_when_it_fails_no_write_does() {
    use ledger_store::segment::PREALLOCATION_STEP;
    let tmp = tempfile::tempdir().unwrap();

    // Small segments: the zeros stop at the segment size.
    let small = tmp.path().join("small");
    let plan = FaultPlan::new();
    let (ledger, _) = create_ledger(&small, fault_config(&plan));
    append_each(&ledger, "rotating", 40);
    ledger.close();
    drop(ledger);
    let extents = segment_extents(&small);
    assert!(extents.len() > 3, "the segments rotated: {extents:?}");
    let (active, sealed) = extents.split_last().unwrap();
    for (i, (data_end, len)) in sealed.iter().enumerate() {
        assert_eq!(data_end, len, "sealed segment {i} ends at its last frame");
    }
    assert!(active.1 <= active.0.max(4 << 10), "{active:?}");

    let dir = tmp.path().join("large");
    let config = StoreConfig {
        segment_max_bytes: 4 << 20,
        ..fault_config(&plan)
    };
    let (ledger, files) = create_ledger(&dir, config);
    let last = || *segment_extents(&dir).last().unwrap();
    let mut acked = append_numbered(&ledger, "preallocated", 100);
    let (data_end, len) = last();
    assert!(
        len > data_end + PREALLOCATION_STEP / 2 && len <= data_end + PREALLOCATION_STEP + 4096,
        "zeros ahead of the frames: {data_end} {len}"
    );
    assert_eq!(len % 4096, 0, "whole pages");

    plan.fail(StorageOp::SegmentPreallocate, ENOSPC);
    while last().0 <= len {
        acked.extend(append_numbered(&ledger, "growing", 1000));
    }
    let (data_end, grown) = last();
    assert_eq!(grown, data_end, "nothing was zero-filled while it failed");
    plan.clear();
    acked.extend(append_numbered(&ledger, "again", 10));
    let (data_end, len) = last();
    assert!(len > data_end, "zero-filling resumed");
    ledger.close();
    drop(ledger);
    check_after_reopen(&dir, &acked, &files.service_cert_pem);
}
