//! The written tail: a replica serves its newest transactions from memory as soon as their
//! batch is written, before its fsync (a leader replicates while it makes them durable), the
//! bytes are exactly those that become durable, and what does not become durable (a failed
//! fsync, a cut suffix) is never served again.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_store::faults::errno::{EIO, ENOSPC};
use ledger_store::{AppendError, FaultPlan, Ledger, ReplicaOp, Role, StorageOp, StoreConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

fn replica_config(faults: Option<Arc<FaultPlan>>) -> StoreConfig {
    StoreConfig {
        role: Role::Replica,
        faults: faults.map(|f| f as _),
        fault_probe_interval: Duration::from_millis(20),
        ..StoreConfig::default()
    }
}

/// A primary with transactions a replica, copied from it before them, does not hold: `later`
/// entries, each with its signature.
struct Setup {
    _tmp: tempfile::TempDir,
    replica_dir: PathBuf,
    /// The replica's end before them.
    start: u64,
    later: Vec<(TxId, Vec<u8>)>,
}

fn setup(later: u64) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let primary_dir = tmp.path().join("primary");
    let replica_dir = tmp.path().join("replica");
    ledger_and_copy(&primary_dir, &replica_dir, 3);
    let (primary, _) = reopen_ok(&primary_dir, StoreConfig::default());
    let start = primary.committed().expect("history").seqno();
    append_each(&primary, "later", later);
    assert_eq!(
        primary.written_transactions(1, 1),
        None,
        "a standalone node keeps no tail"
    );
    let later = transactions_after(&primary, start);
    primary.close();
    Setup {
        _tmp: tmp,
        replica_dir,
        start,
        later,
    }
}

fn open_replica(dir: &Path, faults: Option<Arc<FaultPlan>>) -> Ledger {
    reopen(dir, replica_config(faults))
        .unwrap_or_else(|e| panic!("replica opens: {e}"))
        .0
}

fn encoded(txs: &[(TxId, Vec<u8>)]) -> Vec<(TxId, ReplicaOp)> {
    txs.iter()
        .map(|(t, b)| (*t, ReplicaOp::Encoded(b.clone())))
        .collect()
}

/// Appends `txs` to `replica`; the writer stops between the batch's write and its fsync until
/// `inspect` (run on this thread, with what `written` reported) returns. Returns the append's
/// result.
fn append_held_at_written(
    replica: &Ledger,
    txs: &[(TxId, Vec<u8>)],
    inspect: impl FnOnce(TxId),
) -> Result<Option<TxId>, AppendError> {
    let (written_tx, written_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    replica
        .replicate(
            encoded(txs),
            Some(Box::new(move |last| {
                written_tx.send(last).expect("test waits");
                go_rx.recv().expect("test releases the writer");
            })),
            Box::new(move |result| done_tx.send(result).expect("test waits")),
        )
        .expect("queued");
    let last = written_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the batch is written");
    inspect(last);
    go_tx.send(()).expect("writer waits");
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the append finishes")
}

#[test]
fn a_replica_serves_what_it_wrote_before_the_fsync_and_exactly_what_becomes_durable() {
    let s = setup(12);
    let replica = open_replica(&s.replica_dir, None);
    let (first, last) = (s.later[0].0.seqno(), s.later.last().expect("later").0);
    assert_eq!(replica.written_transactions(first, last.seqno()), None);

    let result = append_held_at_written(&replica, &s.later, |written| {
        assert_eq!(written, last);
        // Written, not yet durable: served from the tail, byte for byte.
        assert_eq!(replica.durable().map(TxId::seqno), Some(s.start));
        assert_eq!(
            replica.written_transactions(first, last.seqno()).as_deref(),
            Some(&s.later[..])
        );
        assert_eq!(
            replica
                .written_transactions(first + 3, first + 5)
                .as_deref(),
            Some(&s.later[3..=5])
        );
        assert_eq!(
            replica.written_transactions(first, last.seqno() + 1),
            None,
            "not written yet"
        );
    });
    assert_eq!(result, Ok(Some(last)));
    let durable = replica
        .durable_transactions(first, last.seqno())
        .expect("reads");
    assert_eq!(durable, s.later);
    assert_eq!(
        replica.written_transactions(first, last.seqno()),
        Some(durable)
    );

    // A cut suffix is not served any more, from memory or the segments.
    assert_eq!(
        replica
            .truncate_after(first + 4)
            .map(|t| t.map(TxId::seqno)),
        Ok(Some(first + 4))
    );
    assert_eq!(replica.written_transactions(first + 4, first + 5), None);
    assert_eq!(
        replica.written_transactions(first, first + 4).as_deref(),
        Some(&s.later[..=4])
    );
    // The primary's bytes again at the cut seqnos: held again.
    assert_eq!(
        replica.append_encoded(s.later[5..].to_vec()),
        Ok(Some(last))
    );
    assert_eq!(
        replica.written_transactions(first, last.seqno()).as_deref(),
        Some(&s.later[..])
    );
}

/// The batch is written and handed out, then its fsync fails: it is taken back before the
/// failure is reported, whether the store cuts it off and degrades (ENOSPC) or is poisoned
/// (EIO: what the disk holds is unknown until reopened).
#[test]
fn a_batch_whose_fsync_fails_is_taken_back_before_the_failure_is_reported() {
    for (errno, poisoned) in [(ENOSPC, false), (EIO, true)] {
        let s = setup(6);
        let plan = FaultPlan::new();
        let replica = open_replica(&s.replica_dir, Some(plan.clone()));
        let (first, last) = (s.later[0].0.seqno(), s.later.last().expect("later").0);
        plan.fail_times(StorageOp::SegmentSync, errno, 1);
        let result = append_held_at_written(&replica, &s.later, |written| {
            assert_eq!(written, last);
            assert_eq!(
                replica.written_transactions(first, last.seqno()).as_deref(),
                Some(&s.later[..]),
                "errno {errno}: written, so served"
            );
        });
        assert!(
            matches!(result, Err(AppendError::Unavailable(_))),
            "errno {errno}: {result:?}"
        );
        assert_eq!(
            replica.written_transactions(first, first),
            None,
            "errno {errno}: taken back"
        );
        assert_eq!(replica.durable().map(TxId::seqno), Some(s.start));
        if poisoned {
            replica.close();
            drop(replica);
            let replica = open_replica(&s.replica_dir, None);
            // Reopened: the fault was injected, the page cache kept the bytes; either way the
            // replica holds a prefix of the primary's log and nothing else.
            let end = replica.durable().map_or(0, TxId::seqno);
            assert_eq!(
                replica.durable_transactions(first, end).expect("reads"),
                s.later[..(end - s.start) as usize]
            );
        } else {
            // Degraded: once the probe passes, the same bytes are taken at the same seqnos.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let appended = loop {
                match replica.append_encoded(s.later.clone()) {
                    Err(AppendError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    other => break other,
                }
            };
            assert_eq!(appended, Ok(Some(last)));
            assert_eq!(
                replica.written_transactions(first, last.seqno()).as_deref(),
                Some(&s.later[..])
            );
        }
    }
}
