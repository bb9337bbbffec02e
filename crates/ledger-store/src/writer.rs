//! The writer: one thread that sequences, encodes and durably appends transactions in groups.
//!
//! Per batch: assign seqnos, encode and seal each transaction, compute its leaf, add a
//! signature transaction when it is due (the queue is empty, or `sign_every` transactions or
//! `sign_interval` have passed since the last one), then one `write` and one
//! `fdatasync` for the whole batch. Only after that are the tree files and indexes updated and
//! the new commit point published; a transaction is reported committed once it is durable
//! *and* covered by a durable signature, so its receipt can be served at once.
//!
//! If the append fails, nothing of the batch is published, its seqnos are not consumed, and the
//! store stops accepting writes (reads go on): the ledger on disk is still consistent, and
//! the operator decides what to do with the failing disk.

use crate::crypto::LedgerSecret;
use crate::guard::{ForkGuard, SignedPoint};
use crate::index::{IndexOp, Location};
use crate::recovery::index_op;
use crate::segment::{self, ActiveSegment};
use crate::tree::TreeWriter;
use crate::{AppendError, Completion, Shared, StoreConfig};
use ledger_core::TxId;
use ledger_core::entry::{self, EntryView, SignatureRecord, TxBody};
use ledger_core::hash::Hash32;
use ledger_core::signing::NodeSigningKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// A transaction waiting to be sequenced.
pub(crate) struct Submission {
    pub body: TxBody,
    pub claims_digest: Hash32,
    pub done: Completion,
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub config: StoreConfig,
    pub ledger_dir: PathBuf,
    pub segment: ActiveSegment,
    pub tree: TreeWriter,
    pub guard: ForkGuard,
    pub key: NodeSigningKey,
    pub node_id: Hash32,
    pub view: u64,
    pub next_seqno: u64,
    /// Durable transactions not yet covered by a signature, with their completions.
    pub unsigned: Vec<(TxId, Option<Completion>)>,
    pub last_signature: Option<SignedPoint>,
    pub last_signature_at: Instant,
    pub last_checkpoint_at: Instant,
}

impl Writer {
    pub fn run(mut self, queue: Receiver<Submission>) {
        if !self.unsigned.is_empty() {
            // Durable but unsigned transactions from before a restart: sign them first.
            self.process(Vec::new(), true);
        }
        loop {
            let first = if self.unsigned.is_empty() {
                match queue.recv() {
                    Ok(s) => Some(s),
                    Err(_) => break,
                }
            } else {
                let deadline = self.last_signature_at + self.config.sign_interval;
                match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(s) => Some(s),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut batch: Vec<Submission> = first.into_iter().collect();
            let mut idle = false;
            while batch.len() < self.config.max_batch {
                match queue.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                        idle = true;
                        break;
                    }
                }
            }
            // Nothing else is waiting: sign now rather than make this batch wait for the
            // interval and a second fsync. Under load the queue is never empty and the
            // count/interval cadence bounds the signing cost.
            self.process(batch, idle);
        }
        // Closing: everything submitted has been processed; sign the rest and checkpoint.
        if !self.unsigned.is_empty() {
            self.process(Vec::new(), true);
        }
        self.checkpoint();
    }

    fn process(&mut self, batch: Vec<Submission>, sign_now: bool) {
        if let Some(reason) = self.shared.failure() {
            for s in batch {
                (s.done)(Err(AppendError::Failed(reason.clone())));
            }
            return;
        }
        let mut tree = self.tree.clone();
        let mut buf = Vec::new();
        let mut ops: Vec<(Location, IndexOp)> = Vec::with_capacity(batch.len() + 1);
        let mut batch_txs: Vec<(TxId, Option<Completion>)> = Vec::with_capacity(batch.len());
        let mut seqno = self.next_seqno;
        let Some(base) = self.segment_for_batch() else {
            return self.fail_batch(batch, "could not start a new segment file");
        };
        for sub in batch {
            let txid = TxId::new(self.view, seqno).expect("view and seqno are >= 1");
            let Some(bytes) = self.encode(txid, &sub.body, &sub.claims_digest) else {
                (sub.done)(Err(AppendError::Failed(
                    "the OS random number generator failed".into(),
                )));
                continue;
            };
            let view = EntryView::parse(&bytes).expect("we just encoded it");
            tree.push(view.leaf());
            let loc = push_frame(&mut buf, base, self.segment.first_seqno, txid, &bytes);
            ops.push((loc, index_op(sub.body)));
            batch_txs.push((txid, Some(sub.done)));
            seqno += 1;
        }
        let pending = self.unsigned.len() + batch_txs.len();
        let due = pending as u64 >= self.config.sign_every
            || self.last_signature_at.elapsed() >= self.config.sign_interval
            || sign_now;
        let mut signed = None;
        if pending > 0 && due {
            let txid = TxId::new(self.view, seqno).expect("view and seqno are >= 1");
            // A signature at seqno s signs the root of leaves 0..s, i.e. everything before it.
            let root = tree.root().expect("leaf 0 is always present");
            if let Some(g) = self
                .guard
                .last()
                .filter(|g| g.seqno == seqno && g.root != root)
            {
                let reason = format!(
                    "refusing to sign seqno {} with root {root}: this node already signed root {} there (fork guard)",
                    g.seqno, g.root
                );
                return self.fail_all(batch_txs, reason);
            }
            let record = SignatureRecord {
                node_id: self.node_id,
                root,
                signature: self.key.sign_root(&root),
            };
            let body = TxBody::Signature(record);
            let bytes = self
                .encode(txid, &body, &Hash32::ZERO)
                .expect("signatures have no private part");
            tree.push(EntryView::parse(&bytes).expect("just encoded").leaf());
            let loc = push_frame(&mut buf, base, self.segment.first_seqno, txid, &bytes);
            ops.push((loc, IndexOp::Signature));
            signed = Some(SignedPoint { seqno, root });
            seqno += 1;
        }
        if buf.is_empty() {
            return;
        }
        if let Err(e) = self.segment.append_durably(&buf) {
            let reason = format!("appending to {} failed: {e}", self.segment.path.display());
            return self.fail_all(batch_txs, reason);
        }
        // Durable. Derived state next, then publish.
        self.next_seqno = seqno;
        self.tree = tree;
        let derived = self
            .tree
            .flush(&self.shared.tree)
            .map_err(|e| format!("tree files: {e}"))
            .and_then(|()| {
                self.shared
                    .index
                    .apply(&ops, None)
                    .map_err(|e| e.to_string())
            });
        if let Err(reason) = derived {
            // The ledger holds the batch; recovery will re-derive. Stop writing until then.
            self.unsigned.extend(batch_txs);
            return self.fail_all(Vec::new(), reason);
        }
        self.unsigned.extend(batch_txs);
        let last = TxId::new(self.view, seqno - 1).expect(">= 1");
        let mut published = self.shared.published.lock().expect("state lock");
        published.durable = Some(last);
        let completions = if let Some(point) = signed {
            published.committed = Some(last);
            self.last_signature = Some(point);
            self.last_signature_at = Instant::now();
            std::mem::take(&mut self.unsigned)
        } else {
            Vec::new()
        };
        drop(published);
        self.shared.committed_changed.notify_all();
        for (txid, done) in completions {
            if let Some(done) = done {
                done(Ok(txid));
            }
        }
        if self.last_checkpoint_at.elapsed() >= self.config.checkpoint_interval {
            self.checkpoint();
        }
    }

    /// Returns the first seqno of the segment this batch goes into, rotating when the active
    /// segment is full.
    fn segment_for_batch(&mut self) -> Option<u64> {
        if self.segment.len() >= self.config.segment_max_bytes && !self.segment.is_empty() {
            match ActiveSegment::create(&self.ledger_dir, self.next_seqno) {
                Ok(next) => {
                    let reader = next.reader().ok()?;
                    self.shared
                        .segments
                        .write()
                        .expect("segments lock")
                        .push((next.first_seqno, reader));
                    self.segment = next;
                }
                Err(_) => return None,
            }
        }
        Some(self.segment.len())
    }

    fn encode(&self, txid: TxId, body: &TxBody, claims_digest: &Hash32) -> Option<Vec<u8>> {
        let secret: &LedgerSecret = &self.shared.secret;
        let evidence = secret.commit_secret().evidence(txid);
        let mut sealer = secret.sealer().ok()?;
        Some(entry::encode(
            txid,
            body,
            &evidence.digest(),
            claims_digest,
            &mut sealer,
        ))
    }

    /// Makes the derived files durable and records the fork guard.
    fn checkpoint(&mut self) {
        self.last_checkpoint_at = Instant::now();
        let result = self
            .shared
            .tree
            .sync()
            .map_err(|e| format!("tree files: {e}"))
            .and_then(|()| {
                self.shared
                    .index
                    .apply(&[], Some(self.tree.size()))
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| match self.last_signature {
                Some(point) => self.guard.record(point).map_err(|e| e.to_string()),
                None => Ok(()),
            });
        if let Err(reason) = result {
            self.shared.fail(format!("checkpoint failed: {reason}"));
        }
    }

    fn fail_batch(&mut self, batch: Vec<Submission>, reason: &str) {
        self.shared.fail(reason.to_owned());
        for s in batch {
            (s.done)(Err(AppendError::Failed(reason.to_owned())));
        }
    }

    /// Fails this batch (not written) and the earlier durable-but-unsigned transactions, whose
    /// fate is decided at the next open (they are signed then), so their callers are told so.
    fn fail_all(&mut self, batch: Vec<(TxId, Option<Completion>)>, reason: String) {
        self.shared.fail(reason.clone());
        for (_, done) in batch {
            if let Some(done) = done {
                done(Err(AppendError::Failed(reason.clone())));
            }
        }
        for (_, done) in std::mem::take(&mut self.unsigned) {
            if let Some(done) = done {
                done(Err(AppendError::Indeterminate(reason.clone())));
            }
        }
    }
}

fn push_frame(buf: &mut Vec<u8>, base: u64, segment: u64, txid: TxId, payload: &[u8]) -> Location {
    let offset = base + buf.len() as u64;
    segment::encode_frame(buf, txid, payload);
    Location {
        txid,
        segment,
        offset,
        payload_len: payload.len() as u32,
    }
}

/// Default cadence: sign at least every `SIGN_EVERY` transactions or `SIGN_INTERVAL`.
pub const SIGN_EVERY: u64 = 1000;
pub const SIGN_INTERVAL: Duration = Duration::from_millis(2);
