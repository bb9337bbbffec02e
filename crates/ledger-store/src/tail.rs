//! The written tail: a replica's newest transactions as encoded, held in memory from the
//! moment their batch is written to the active segment, before its `fdatasync` returns.
//!
//! A leader sends its followers what it stored, byte for byte. Read back from the segments,
//! that could start only once the leader's own fsync was done, so a write waited for two
//! fsyncs in series (the leader's, then the followers'), and every follower's replication
//! stream read and checked the same frames from disk again. CCF's primary replicates before
//! it flushes; Raft allows it, as a leader counts itself towards a majority only once its own
//! log is durable (openraft's append callback). So the writer keeps each replica batch here
//! once written: readers take the bytes from memory, and the followers' fsyncs overlap the
//! leader's.
//!
//! What is here is exactly what the writer handed to `write(2)`: bytes the sequencer encoded
//! or checked, never read back from a file, so nothing here can be damaged by the disk. A
//! batch whose fsync then fails is taken out again ([`WrittenTail::cut_after`]) before anyone
//! is told of the failure. Its bytes may already be on other nodes, which is what Raft allows
//! of a leader that crashes before its flush: the failed append stops consensus on this node
//! (openraft treats a storage error as fatal), so it never puts other bytes at those log ids,
//! and the others elect a primary that has the batch or cut it off. The cluster tests fail a
//! primary's fsync after its followers took the batch, both ways (EIO, which poisons the store
//! and leaves the bytes to recovery; ENOSPC, which cuts them off).
//!
//! The tail is bounded ([`TAIL_MAX_BYTES`]): a follower further behind is sent entries read
//! from the segments, as before.

use ledger_core::TxId;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex;

/// The most frame bytes the tail holds; the oldest batches go first. About half a second of
/// writes at the rates one node reaches, a few MiB of memory.
pub(crate) const TAIL_MAX_BYTES: usize = 16 << 20;

/// One written batch: its frames as appended, and where each transaction's bytes are.
struct TailBatch {
    frames: Vec<u8>,
    /// Each transaction of the batch, ascending by seqno, consecutive.
    txs: Vec<(TxId, Range<usize>)>,
}

impl TailBatch {
    fn first(&self) -> u64 {
        self.txs.first().map_or(0, |(t, _)| t.seqno())
    }

    fn last(&self) -> u64 {
        self.txs.last().map_or(0, |(t, _)| t.seqno())
    }
}

#[derive(Default)]
struct Batches {
    batches: VecDeque<TailBatch>,
    bytes: usize,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct WrittenTail {
    inner: Mutex<Batches>,
}

impl WrittenTail {
    /// Keeps the batch just written: `frames` as appended, `txs` each transaction's txid and
    /// payload range within it. A batch that does not follow the newest one kept (a cut the
    /// tail missed) replaces everything kept.
    pub(crate) fn push(&self, frames: &[u8], txs: &[(TxId, Range<usize>)]) {
        let Some(first) = txs.first().map(|(t, _)| t.seqno()) else {
            return;
        };
        let mut inner = self.inner.lock().expect("tail lock");
        if inner.batches.back().is_some_and(|b| b.last() + 1 != first) {
            inner.batches.clear();
            inner.bytes = 0;
        }
        inner.bytes += frames.len();
        inner.batches.push_back(TailBatch {
            frames: frames.to_vec(),
            txs: txs.to_vec(),
        });
        while inner.bytes > TAIL_MAX_BYTES && inner.batches.len() > 1 {
            let gone = inner.batches.pop_front().expect("more than one batch");
            inner.bytes -= gone.frames.len();
        }
    }

    /// Forgets every transaction after `seqno` (cut off the log, or never made durable).
    pub(crate) fn cut_after(&self, seqno: u64) {
        let mut inner = self.inner.lock().expect("tail lock");
        while let Some(batch) = inner.batches.back_mut() {
            if batch.last() <= seqno {
                break;
            }
            if batch.first() > seqno {
                let gone = inner.batches.pop_back().expect("a batch");
                inner.bytes -= gone.frames.len();
                continue;
            }
            let keep = batch.txs.partition_point(|(t, _)| t.seqno() <= seqno);
            batch.txs.truncate(keep);
            break;
        }
    }

    /// The transactions `from..=to`, if the tail holds every one of them.
    pub(crate) fn get(&self, from: u64, to: u64) -> Option<Vec<(TxId, Vec<u8>)>> {
        if from > to {
            return Some(Vec::new());
        }
        let inner = self.inner.lock().expect("tail lock");
        let start = inner.batches.partition_point(|b| b.last() < from);
        let first = inner.batches.get(start)?;
        if first.first() > from || inner.batches.back()?.last() < to {
            return None;
        }
        let mut out = Vec::with_capacity((to - from + 1) as usize);
        for batch in inner.batches.range(start..) {
            for (txid, span) in &batch.txs {
                let seqno = txid.seqno();
                if seqno < from {
                    continue;
                }
                if seqno > to {
                    return Some(out);
                }
                out.push((*txid, batch.frames[span.clone()].to_vec()));
            }
        }
        debug_assert_eq!(out.len() as u64, to - from + 1, "the tail is consecutive");
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txid(seqno: u64) -> TxId {
        TxId::new(2, seqno).expect("valid")
    }

    /// A batch of `seqnos` whose payloads are the seqno's byte repeated `len` times, each behind
    /// a 2-byte header.
    fn batch(seqnos: Range<u64>, len: usize) -> (Vec<u8>, Vec<(TxId, Range<usize>)>) {
        let mut frames = Vec::new();
        let mut txs = Vec::new();
        for seqno in seqnos {
            frames.extend_from_slice(&[0xff, 0xfe]);
            let start = frames.len();
            frames.extend(std::iter::repeat_n(seqno as u8, len));
            txs.push((txid(seqno), start..frames.len()));
        }
        (frames, txs)
    }

    fn push(tail: &WrittenTail, seqnos: Range<u64>, len: usize) {
        let (frames, txs) = batch(seqnos, len);
        tail.push(&frames, &txs);
    }

    #[test]
    fn serves_ranges_across_batches_and_only_whole_ones() {
        let tail = WrittenTail::default();
        assert_eq!(tail.get(1, 1), None);
        push(&tail, 5..8, 3);
        push(&tail, 8..10, 3);
        let got = tail.get(6, 9).expect("held");
        let seqnos: Vec<u64> = got.iter().map(|(t, _)| t.seqno()).collect();
        assert_eq!(seqnos, [6, 7, 8, 9]);
        assert!(got.iter().all(|(t, b)| *b == vec![t.seqno() as u8; 3]));
        assert_eq!(tail.get(4, 6), None, "seqno 4 is not held");
        assert_eq!(tail.get(8, 10), None, "seqno 10 is not held");
        assert_eq!(tail.get(9, 8), Some(Vec::new()));
    }

    #[test]
    fn a_cut_forgets_the_suffix_and_a_gap_forgets_everything() {
        let tail = WrittenTail::default();
        push(&tail, 1..4, 1);
        push(&tail, 4..7, 1);
        tail.cut_after(4);
        assert_eq!(tail.get(1, 4).map(|v| v.len()), Some(4));
        assert_eq!(tail.get(5, 5), None);
        tail.cut_after(2);
        assert_eq!(tail.get(3, 3), None);
        push(&tail, 3..5, 1);
        assert_eq!(tail.get(1, 4).map(|v| v.len()), Some(4));
        // A batch that does not follow: what was held no longer is the log's tail.
        push(&tail, 9..10, 1);
        assert_eq!(tail.get(1, 1), None);
        assert_eq!(tail.get(9, 9).map(|v| v.len()), Some(1));
    }

    #[test]
    fn the_oldest_batches_go_beyond_the_bound() {
        let tail = WrittenTail::default();
        let per_batch = TAIL_MAX_BYTES / 4;
        for i in 0..6u64 {
            push(&tail, i + 1..i + 2, per_batch);
        }
        assert_eq!(tail.get(1, 1), None, "evicted");
        assert_eq!(tail.get(4, 6).map(|v| v.len()), Some(3));
        let bytes = tail.inner.lock().expect("lock").bytes;
        assert!(bytes <= TAIL_MAX_BYTES, "{bytes}");
    }
}
