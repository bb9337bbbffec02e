//! The writer: one thread that sequences, encodes and durably appends transactions in groups.
//!
//! Per batch: assign seqnos, encode and seal each transaction, compute its leaf, add a
//! signature transaction when it is due (the queue is empty, or `sign_every` transactions or
//! `sign_interval` have passed since the last one), then one `write` and one
//! `fdatasync` for the whole batch. Only after that are the tree files and indexes updated and
//! the new commit point published; a transaction is reported committed once it is durable
//! *and* covered by a durable signature, so its receipt can be served at once.
//!
//! If the append fails, nothing of the batch is published and its seqnos are not consumed.
//! What happens next depends on the fault (`docs/FORMAT.md` §9): a full or read-only
//! filesystem (or an `EIO` on a write that could be cut back) makes the store *degraded*: the
//! batch is cut back off the segment, writes are refused with the fault, reads go on, and a
//! probe every `fault_probe_interval` retries until the operation works again, then finishes
//! whatever was left (derived files, signing the durable tail) and takes writes again. A failed
//! `fdatasync` (`EIO`), or a failed cut-back, *poisons* the store until it is reopened: after a
//! failed fsync the page cache cannot be trusted, so only recovery re-reading the disk can say
//! what is there (PostgreSQL's "fsyncgate" lesson).

use crate::crypto::LedgerSecret;
use crate::faults::{FaultKind, Faults, StorageFault, StorageOp};
use crate::guard::{ForkGuard, GuardError, SignedPoint};
use crate::index::IndexOp;
use crate::reader::SegmentFile;
use crate::recovery::{self, index_op};
use crate::segment::FrameLayout;
use crate::segment::{self, ActiveSegment, AppendFailure};
use crate::tree::{EntryClass, FrameRecord, TreeWriter};
use crate::{AppendError, Completion, Shared, StoreConfig};
use ledger_core::TxId;
use ledger_core::entry::{self, EntryView, SignatureRecord, TxBody};
use ledger_core::hash::Hash32;
use ledger_core::signing::NodeSigningKey;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// A transaction waiting to be sequenced.
pub(crate) struct Submission {
    pub body: TxBody,
    pub claims_digest: Hash32,
    pub done: Completion,
    pub submitted: Instant,
}

/// A durable transaction waiting for a signature (or for being published).
pub(crate) struct Pending {
    pub txid: TxId,
    /// Taken when the submitter has been answered.
    pub done: Option<Completion>,
    pub submitted: Option<Instant>,
}

/// Durable in the segments, not yet published (derived files behind).
struct Unpublished {
    last: TxId,
    /// The newest durable signature among the unpublished transactions.
    signature: Option<TxId>,
}

enum Health {
    Healthy,
    /// Writes are refused until a probe succeeds.
    Degraded {
        fault: StorageFault,
        next_probe: Instant,
        probe_bytes: usize,
    },
    /// Writes are refused until the ledger is reopened.
    Poisoned(AppendError),
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
    /// Durable transactions not yet covered by a published signature, with their completions.
    pub unsigned: Vec<Pending>,
    pub last_signature: Option<SignedPoint>,
    pub last_signature_at: Instant,
    pub last_checkpoint_at: Instant,
    pub faults: Faults,
    health: Health,
    unpublished: Option<Unpublished>,
    /// Index updates of durable transactions not yet applied.
    index_ops: Vec<(TxId, IndexOp)>,
    /// The index lost updates (a failed commit): re-derive it from the segments.
    index_resync: bool,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        config: StoreConfig,
        ledger_dir: PathBuf,
        segment: ActiveSegment,
        tree: TreeWriter,
        guard: ForkGuard,
        key: NodeSigningKey,
        node_id: Hash32,
        view: u64,
        next_seqno: u64,
        unsigned: Vec<Pending>,
        last_signature: Option<SignedPoint>,
    ) -> Writer {
        let faults = Faults(config.faults.clone());
        Writer {
            shared,
            config,
            ledger_dir,
            segment,
            tree,
            guard,
            key,
            node_id,
            view,
            next_seqno,
            unsigned,
            last_signature,
            last_signature_at: Instant::now(),
            last_checkpoint_at: Instant::now(),
            faults,
            health: Health::Healthy,
            unpublished: None,
            index_ops: Vec::new(),
            index_resync: false,
        }
    }

    fn received(&self, n: usize) {
        self.shared.queued.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn run(mut self, queue: Receiver<Submission>) {
        if !self.unsigned.is_empty() {
            // Durable but unsigned transactions from before a restart: sign them first.
            self.process(Vec::new(), true);
        }
        loop {
            if let Health::Degraded { next_probe, .. } = &self.health {
                let wait = next_probe.saturating_duration_since(Instant::now());
                match queue.recv_timeout(wait) {
                    Ok(s) => {
                        self.received(1);
                        self.refuse(s);
                    }
                    Err(RecvTimeoutError::Timeout) => self.try_recover(),
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                continue;
            }
            if matches!(self.health, Health::Poisoned(_)) {
                match queue.recv() {
                    Ok(s) => {
                        self.received(1);
                        self.refuse(s);
                        continue;
                    }
                    Err(_) => break,
                }
            }
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
            self.received(batch.len());
            // Nothing else is waiting: sign now rather than make this batch wait for the
            // interval and a second fsync. Under load the queue is never empty and the
            // count/interval cadence bounds the signing cost.
            self.process(batch, idle);
        }
        // Closing: everything submitted has been processed; sign the rest and checkpoint.
        if matches!(self.health, Health::Degraded { .. }) {
            // One last attempt; what stays unsigned is durable and is signed at the next open.
            self.try_recover();
        }
        if matches!(self.health, Health::Healthy) {
            if !self.unsigned.is_empty() {
                self.process(Vec::new(), true);
            }
            if let Err(fault) = self.checkpoint() {
                self.on_fault(fault, 0, Vec::new());
            }
        }
    }

    /// The answer to a submission while writes are refused.
    fn refusal(&self) -> Option<AppendError> {
        match &self.health {
            Health::Healthy => None,
            Health::Degraded { fault, .. } => Some(AppendError::Unavailable(fault.clone())),
            Health::Poisoned(e) => Some(e.clone()),
        }
    }

    fn refuse(&self, s: Submission) {
        let e = self
            .refusal()
            .unwrap_or_else(|| AppendError::Failed("writes are refused".into()));
        (s.done)(Err(e));
    }

    fn process(&mut self, batch: Vec<Submission>, sign_now: bool) {
        if let Some(e) = self.refusal() {
            for s in batch {
                (s.done)(Err(e.clone()));
            }
            return;
        }
        let mut tree = self.tree.clone();
        let mut buf = Vec::new();
        let mut ops: Vec<(TxId, IndexOp)> = Vec::with_capacity(batch.len() + 1);
        let mut batch_txs: Vec<Pending> = Vec::with_capacity(batch.len());
        let mut seqno = self.next_seqno;
        let base = match self.segment_for_batch() {
            Ok(base) => base,
            Err(e) => {
                let fault = StorageFault::new(StorageOp::SegmentCreate, &e, true);
                let pending = batch
                    .into_iter()
                    .map(|s| Pending {
                        txid: TxId::new(self.view, self.next_seqno).expect(">= 1"),
                        done: Some(s.done),
                        submitted: None,
                    })
                    .collect();
                return self.on_fault(fault, 4096, pending);
            }
        };
        for sub in batch {
            let txid = TxId::new(self.view, seqno).expect("view and seqno are >= 1");
            let Some(bytes) = self.encode(txid, &sub.body, &sub.claims_digest) else {
                (sub.done)(Err(AppendError::Failed(
                    "the OS random number generator failed".into(),
                )));
                continue;
            };
            let leaf = EntryView::parse(&bytes, seqno)
                .expect("we just encoded it")
                .leaf();
            let offset = push_frame(&mut buf, base, &bytes);
            tree.push(
                leaf,
                FrameRecord::new(offset, EntryClass::of(&sub.body), &leaf),
            );
            ops.push((txid, index_op(sub.body)));
            batch_txs.push(Pending {
                txid,
                done: Some(sub.done),
                submitted: Some(sub.submitted),
            });
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
                // Nothing of this batch was written.
                for p in batch_txs {
                    if let Some(done) = p.done {
                        done(Err(AppendError::Failed(reason.clone())));
                    }
                }
                return self.poison(AppendError::Failed(reason), None, Vec::new());
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
            let leaf = EntryView::parse(&bytes, seqno)
                .expect("just encoded")
                .leaf();
            let offset = push_frame(&mut buf, base, &bytes);
            tree.push(leaf, FrameRecord::new(offset, EntryClass::Signature, &leaf));
            ops.push((txid, IndexOp::Signature));
            signed = Some(SignedPoint { seqno, root });
            seqno += 1;
        }
        if buf.is_empty() {
            return;
        }
        let started = Instant::now();
        if let Err(failure) = self.segment.append(&buf, &self.faults) {
            return self.append_failed(failure, batch_txs, buf.len());
        }
        if let Some(observer) = &self.config.observer {
            observer.batch_durable(
                batch_txs.len(),
                usize::from(signed.is_some()),
                buf.len(),
                started.elapsed(),
            );
        }
        // Durable. Derived state next, then publish.
        self.next_seqno = seqno;
        self.tree = tree;
        let last = TxId::new(self.view, seqno - 1).expect(">= 1");
        if let Some(point) = signed {
            self.last_signature = Some(point);
            self.last_signature_at = Instant::now();
        }
        self.unsigned.extend(batch_txs);
        self.index_ops.extend(ops);
        let earlier_signature = self.unpublished.take().and_then(|u| u.signature);
        self.unpublished = Some(Unpublished {
            last,
            signature: signed.map(|_| last).or(earlier_signature),
        });
        if let Err(fault) = self.finish_derived() {
            return self.on_fault(fault, 0, Vec::new());
        }
        if self.last_checkpoint_at.elapsed() >= self.config.checkpoint_interval
            && let Err(fault) = self.checkpoint()
        {
            self.on_fault(fault, 0, Vec::new());
        }
    }

    /// The batch did not become durable. Decide between cutting it back (degraded) and
    /// poisoning the store (the disk's content is unknown).
    fn append_failed(&mut self, failure: AppendFailure, batch: Vec<Pending>, len: usize) {
        let AppendFailure { op, error, written } = failure;
        if op.is_sync() && FaultKind::of(&error) == FaultKind::Io {
            // fsyncgate: the kernel may have dropped the dirty pages and will not say so again.
            // Whether the batch is on disk is unknown until recovery reads the disk.
            let fault = StorageFault::new(op, &error, false);
            return self.poison(AppendError::Unavailable(fault.clone()), Some(fault), batch);
        }
        if written > 0 || op == StorageOp::SegmentSync {
            if let Err(e) = self.segment.truncate_back(&self.faults) {
                let fault = StorageFault {
                    kind: FaultKind::of(&e),
                    operation: StorageOp::SegmentTruncate,
                    message: format!(
                        "{op} failed ({error}), then cutting the failed batch back off {} failed: {e}",
                        self.segment.path.display()
                    ),
                    errno: e.raw_os_error(),
                    transient: false,
                };
                return self.poison(AppendError::Unavailable(fault.clone()), Some(fault), batch);
            }
        } else if let Err(e) = self.segment.reset_position() {
            let fault = StorageFault::new(StorageOp::SegmentTruncate, &e, false);
            return self.poison(AppendError::Unavailable(fault.clone()), Some(fault), batch);
        }
        let mut fault = StorageFault::new(op, &error, true);
        fault.message = format!("{} ({})", fault.message, self.segment.path.display());
        self.degrade(fault, len, batch);
    }

    fn on_fault(&mut self, fault: StorageFault, probe_bytes: usize, batch: Vec<Pending>) {
        if fault.transient {
            self.degrade(fault, probe_bytes, batch);
        } else {
            self.poison(AppendError::Unavailable(fault.clone()), Some(fault), batch);
        }
    }

    /// Writes are refused until a probe succeeds. `batch` was not written; the earlier
    /// durable-but-unsigned transactions are told so (they are signed after recovery).
    fn degrade(&mut self, fault: StorageFault, probe_bytes: usize, batch: Vec<Pending>) {
        if let Some(observer) = &self.config.observer {
            observer.storage_fault(&fault);
        }
        // Refuse new submissions before answering anyone, so an answered caller's next write
        // sees the fault.
        self.shared.published.lock().expect("state lock").fault = Some(fault.clone());
        for p in batch {
            if let Some(done) = p.done {
                done(Err(AppendError::Unavailable(fault.clone())));
            }
        }
        let reason = format!(
            "{fault}; the transaction is on disk and is committed once storage recovers (or when the ledger is next opened)"
        );
        for p in &mut self.unsigned {
            if let Some(done) = p.done.take() {
                done(Err(AppendError::Indeterminate(format!(
                    "transaction {}: {reason}",
                    p.txid
                ))));
            }
        }
        let probe_bytes = match &self.health {
            Health::Degraded { probe_bytes: b, .. } => probe_bytes.max(*b),
            _ => probe_bytes,
        };
        self.health = Health::Degraded {
            fault,
            next_probe: Instant::now() + self.config.fault_probe_interval,
            probe_bytes,
        };
        self.shared.committed_changed.notify_all();
    }

    /// Writes are refused until the ledger is reopened. `batch` and the unsigned transactions
    /// may or may not be on disk: they are Indeterminate.
    fn poison(&mut self, error: AppendError, fault: Option<StorageFault>, batch: Vec<Pending>) {
        if let (Some(observer), Some(fault)) = (&self.config.observer, &fault) {
            observer.storage_fault(fault);
        }
        let reason = match &error {
            AppendError::Unavailable(f) => f.to_string(),
            other => other.to_string(),
        };
        let indeterminate = format!(
            "{reason}; whether the transaction is on disk is decided when the ledger is next opened"
        );
        {
            let mut published = self.shared.published.lock().expect("state lock");
            published.failure.get_or_insert(reason);
            if fault.is_some() {
                published.fault = fault;
            }
        }
        self.health = Health::Poisoned(error);
        // Recovery on the next open signs what of them is on disk.
        for p in batch.into_iter().chain(std::mem::take(&mut self.unsigned)) {
            if let Some(done) = p.done {
                done(Err(AppendError::Indeterminate(format!(
                    "transaction {}: {indeterminate}",
                    p.txid
                ))));
            }
        }
        self.shared.committed_changed.notify_all();
    }

    /// Brings the tree files and index up to the durable end, then publishes it.
    fn finish_derived(&mut self) -> Result<(), StorageFault> {
        if self.tree.has_pending() {
            self.tree
                .flush_with(&self.shared.tree, &self.faults)
                .map_err(|e| StorageFault::new(StorageOp::TreeWrite, &e, true))?;
        }
        if self.index_resync {
            let index = &self.shared.index;
            let resync = self
                .faults
                .check(StorageOp::IndexCommit)
                .map_err(|e| StorageFault::new(StorageOp::IndexCommit, &e, true))
                .and_then(|()| {
                    if index.healthy() {
                        Ok(())
                    } else {
                        index
                            .reopen()
                            .map_err(|e| fault_from_message(StorageOp::IndexCommit, e.to_string()))
                    }
                })
                .and_then(|()| {
                    recovery::reindex(
                        &self.ledger_dir,
                        &self.shared.secret,
                        index,
                        self.next_seqno - 1,
                    )
                    .map_err(|e| fault_from_message(StorageOp::IndexCommit, e.to_string()))
                });
            resync?;
            self.index_ops.clear();
            self.index_resync = false;
        } else if !self.index_ops.is_empty() {
            let applied = self
                .faults
                .check(StorageOp::IndexCommit)
                .map_err(|e| StorageFault::new(StorageOp::IndexCommit, &e, true))
                .and_then(|()| {
                    self.shared
                        .index
                        .apply(&self.index_ops, None)
                        .map_err(|e| fault_from_message(StorageOp::IndexCommit, e.to_string()))
                });
            if let Err(fault) = applied {
                // Whether redb kept part of it is not ours to guess: re-derive from the ledger.
                self.index_resync = true;
                return Err(fault);
            }
            self.index_ops.clear();
        }
        self.publish();
        Ok(())
    }

    fn publish(&mut self) {
        let Some(u) = self.unpublished.take() else {
            return;
        };
        let mut published = self.shared.published.lock().expect("state lock");
        published.durable = Some(u.last);
        let mut completions = Vec::new();
        if let Some(sig) = u.signature {
            published.committed = Some(sig);
            let covered = self
                .unsigned
                .partition_point(|p| p.txid.seqno() < sig.seqno());
            completions = self.unsigned.drain(..covered).collect();
        }
        drop(published);
        self.shared.committed_changed.notify_all();
        if completions.is_empty() {
            return;
        }
        let now = Instant::now();
        let latencies: Vec<Duration> = completions
            .iter()
            .filter_map(|p| p.submitted.map(|t| now.saturating_duration_since(t)))
            .collect();
        for p in completions {
            if let Some(done) = p.done {
                done(Ok(p.txid));
            }
        }
        if let Some(observer) = &self.config.observer
            && !latencies.is_empty()
        {
            observer.committed(&latencies);
        }
    }

    /// A probe: the failed operation is retried (through the injector) and a scratch file of
    /// the failed batch's size is written and fsync'd next to the segments. On success, what
    /// the fault left undone is finished and writes are taken again.
    fn try_recover(&mut self) {
        let Health::Degraded {
            fault, probe_bytes, ..
        } = &self.health
        else {
            return;
        };
        let (op, probe_bytes) = (fault.operation, *probe_bytes);
        let probe = self
            .faults
            .check(op)
            .and_then(|()| self.probe_write(probe_bytes));
        if let Err(e) = probe {
            let still = StorageFault::new(op, &e, true);
            self.shared.published.lock().expect("state lock").fault = Some(still.clone());
            self.health = Health::Degraded {
                fault: still,
                next_probe: Instant::now() + self.config.fault_probe_interval,
                probe_bytes,
            };
            return;
        }
        self.health = Health::Healthy;
        if let Err(fault) = self.finish_derived() {
            return self.on_fault(fault, probe_bytes, Vec::new());
        }
        if !self.unsigned.is_empty() {
            self.process(Vec::new(), true);
            if !matches!(self.health, Health::Healthy) {
                return;
            }
        }
        if let Err(fault) = self.checkpoint() {
            return self.on_fault(fault, probe_bytes, Vec::new());
        }
        self.shared.published.lock().expect("state lock").fault = None;
        self.shared.committed_changed.notify_all();
    }

    fn probe_write(&self, bytes: usize) -> io::Result<()> {
        let path = self.ledger_dir.join(".write-probe");
        let result = (|| {
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&vec![0u8; bytes.clamp(4096, 16 << 20)])?;
            file.sync_data()
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Returns the offset at which this batch goes into the active segment, rotating when the
    /// active segment is full or is a version-1 segment of a ledger written by an older
    /// release (frames of one layout per segment).
    fn segment_for_batch(&mut self) -> io::Result<u64> {
        let full = self.segment.len() >= self.config.segment_max_bytes && !self.segment.is_empty();
        if full || self.segment.layout != FrameLayout::V2 {
            let next = ActiveSegment::create_with(&self.ledger_dir, self.next_seqno, &self.faults)?;
            self.shared.segments.push(SegmentFile {
                first_seqno: next.first_seqno,
                layout: next.layout,
                file: next.reader()?,
            });
            self.segment = next;
        }
        Ok(self.segment.len())
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

    /// Makes the derived files durable and records the fork guard. Skipped while derived
    /// state is behind the ledger (a later checkpoint covers it).
    fn checkpoint(&mut self) -> Result<(), StorageFault> {
        self.last_checkpoint_at = Instant::now();
        if self.tree.has_pending() || self.index_resync || !self.index_ops.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.shared.tree.sync_with(&self.faults) {
            // A failed fsync of the tree files (EIO) means their page cache cannot be trusted;
            // they are derived, so a reopen re-derives them, but not while running.
            let transient = FaultKind::of(&e) != FaultKind::Io;
            return Err(StorageFault::new(StorageOp::TreeSync, &e, transient));
        }
        let committed = self
            .faults
            .check(StorageOp::IndexCommit)
            .map_err(|e| StorageFault::new(StorageOp::IndexCommit, &e, true))
            .and_then(|()| {
                self.shared
                    .index
                    .apply(&[], Some((self.tree.size(), &self.shared.tree)))
                    .map_err(|e| fault_from_message(StorageOp::IndexCommit, e.to_string()))
            });
        if let Err(fault) = committed {
            self.index_resync = true;
            return Err(fault);
        }
        if let Some(point) = self.last_signature {
            let recorded = self
                .faults
                .check(StorageOp::GuardWrite)
                .map_err(|e| StorageFault::new(StorageOp::GuardWrite, &e, true))
                .and_then(|()| {
                    self.guard.record(point).map_err(|e| match &e {
                        GuardError::Io { source, .. } => {
                            let mut f = StorageFault::new(StorageOp::GuardWrite, source, true);
                            f.message = e.to_string();
                            f
                        }
                        other => fault_from_message(StorageOp::GuardWrite, other.to_string()),
                    })
                });
            recorded?;
        }
        Ok(())
    }
}

/// A fault from an error known only by its message (redb wraps the OS error).
fn fault_from_message(operation: StorageOp, message: String) -> StorageFault {
    let errno = [
        crate::faults::errno::ENOSPC,
        crate::faults::errno::EDQUOT,
        crate::faults::errno::EROFS,
        crate::faults::errno::EIO,
    ]
    .into_iter()
    .find(|n| message.contains(&format!("(os error {n})")));
    let kind = errno.map_or(FaultKind::Io, |n| {
        FaultKind::of(&io::Error::from_raw_os_error(n))
    });
    StorageFault {
        kind,
        operation,
        message,
        errno,
        transient: true,
    }
}

/// Appends a frame to the batch and returns its offset in the segment.
fn push_frame(buf: &mut Vec<u8>, base: u64, payload: &[u8]) -> u64 {
    let offset = base + buf.len() as u64;
    segment::encode_frame(buf, payload);
    offset
}

/// Default cadence: sign at least every `SIGN_EVERY` transactions or `SIGN_INTERVAL`.
pub const SIGN_EVERY: u64 = 1000;
pub const SIGN_INTERVAL: Duration = Duration::from_millis(2);
