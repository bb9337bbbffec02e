//! The writer: one thread that owns the write path and runs its three stages in order —
//! the [`Sequencer`] (seqnos, encoding, sealing, leaves, signatures), the [`SegmentLog`] (one
//! `write` and one `fdatasync` per batch: *durable here*), and the commit point,
//! [`Writer::commit`] (*committed*): the only code that applies index and governance changes,
//! advances the committed txid and completes waiting requests. A reader sees nothing that is
//! not committed.
//!
//! What moves the commit point depends on the node's [`Role`]. A standalone node commits
//! through each signature as soon as it is durable, so a write is acknowledged after one
//! fsync. A follower takes a primary's encoded transactions unchanged
//! ([`Control::Replicate`]) and commits only when told how far consensus has committed
//! ([`Control::CommitThrough`]), always at a signature, as CCF does.
//!
//! If an append fails, nothing of the batch is published and its seqnos are not consumed.
//! What happens next depends on the fault (`docs/FORMAT.md` §9): a full or read-only
//! filesystem (or an `EIO` on a write that could be cut back) makes the store *degraded*: the
//! batch is cut back off the segment, writes are refused with the fault, reads go on, and a
//! probe every `fault_probe_interval` retries until the operation works again, then finishes
//! whatever was left (derived files, signing the durable tail) and takes writes again. A failed
//! `fdatasync` (`EIO`), or a failed cut-back, *poisons* the store until it is reopened: after a
//! failed fsync the page cache cannot be trusted, so only recovery re-reading the disk can say
//! what is there (PostgreSQL's "fsyncgate" lesson).

use crate::faults::{FaultKind, Faults, StorageFault, StorageOp};
use crate::guard::{ForkGuard, GuardError, SignedPoint};
use crate::index::IndexOp;
use crate::log::{AppendOutcome, SegmentLog};
use crate::reader::Transactions;
use crate::recovery;
use crate::sequencer::{ReplicaOp, ReplicateError, SequenceError, Sequenced, Sequencer};
use crate::tree::TreeWriter;
use crate::{AppendError, Completion, FollowerRefusal, Role, Shared, StoreConfig};
use ledger_core::TxId;
use ledger_core::entry::{self, TxBody};
use ledger_core::hash::Hash32;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

/// A transaction waiting to be sequenced.
pub(crate) struct Submission {
    pub body: TxBody,
    pub claims_digest: Hash32,
    pub done: Completion,
    pub submitted: Instant,
}

/// A durable transaction waiting to be committed.
pub(crate) struct Pending {
    pub txid: TxId,
    /// Taken when the submitter has been answered.
    pub done: Option<Completion>,
    pub submitted: Option<Instant>,
}

/// Where the writer sends the answer to a [`Command`] other than a submission.
pub(crate) type Reply<T> = SyncSender<Result<T, AppendError>>;

/// What the writer thread is asked to do. Submissions are most of the traffic and are moved
/// through the queue by value (boxing them would cost an allocation per write); control
/// commands are rare, so their unused space does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// A client's write (a primary's): sequenced, made durable, committed.
    Submit(Submission),
    /// Anything else; handled between batches.
    Control(Control),
}

/// Called once, on the writer thread, with the newest durable txid once a replica's append is
/// durable, or with why it was not written. It must not block.
pub type ReplicaDone = Box<dyn FnOnce(Result<Option<TxId>, AppendError>) + Send>;

/// Called once, on the writer thread, with the newest written txid once the batch holding a
/// replica's append is written to its segment, before its fsync: from then on
/// [`crate::Ledger::written_transactions`] serves it. Not called if the write fails. It must
/// not block.
pub type ReplicaWritten = Box<dyn FnOnce(TxId) + Send>;

/// Requests that drive a replica's log.
pub(crate) enum Control {
    /// Append transactions at the seqnos consensus gave them; `written` once they are written,
    /// `done` once they are durable. Consecutive appends are written together (one fsync).
    Replicate {
        ops: Vec<(TxId, ReplicaOp)>,
        written: Option<ReplicaWritten>,
        done: ReplicaDone,
    },
    /// Commit through the last durable signature at or before `seqno`; answered with the
    /// committed txid.
    CommitThrough {
        seqno: u64,
        reply: Reply<Option<TxId>>,
    },
    /// Cut off the uncommitted transactions after `seqno`; answered with the newest durable
    /// txid.
    TruncateAfter {
        seqno: u64,
        reply: Reply<Option<TxId>>,
    },
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

/// A signature transaction and the root it signs.
type SignatureAt = (TxId, SignedPoint);

/// Where the writer starts from: what recovery found.
pub(crate) struct WriterStart {
    pub ledger_dir: PathBuf,
    pub log: SegmentLog,
    pub sequencer: Sequencer,
    pub guard: ForkGuard,
    /// The newest signature recovery committed.
    pub committed: Option<SignatureAt>,
    /// The durable signatures after it (a replica's, which consensus commits), ascending.
    pub uncommitted_signatures: Vec<SignatureAt>,
    /// Index changes of the durable transactions after it (not committed yet).
    pub uncommitted_ops: Vec<(TxId, IndexOp)>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    config: StoreConfig,
    ledger_dir: PathBuf,
    sequencer: Sequencer,
    log: SegmentLog,
    guard: ForkGuard,
    faults: Faults,
    health: Health,
    /// Durable transactions not yet committed, with their submitters' completions.
    uncommitted: Vec<Pending>,
    /// Durable signatures not yet committed, ascending.
    uncommitted_signatures: Vec<SignatureAt>,
    /// The signature through which transactions may be committed now; `committed` catches up
    /// with it in [`Writer::commit`] (it lags only while the index cannot be written).
    commit_target: Option<SignatureAt>,
    /// The newest committed signature (what checkpoints record in the fork guard).
    committed: Option<SignatureAt>,
    /// Index updates of durable transactions not yet applied: those not yet committed, and
    /// committed ones a failed index commit left behind.
    index_ops: Vec<(TxId, IndexOp)>,
    /// The index lost updates (a failed commit): re-derive it from the segments.
    index_resync: bool,
    /// A batch is durable but the tree files and the published durable txid do not show it.
    durable_unpublished: bool,
    last_checkpoint_at: Instant,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, config: StoreConfig, start: WriterStart) -> Writer {
        let faults = Faults(config.faults.clone());
        Writer {
            shared,
            config,
            ledger_dir: start.ledger_dir,
            sequencer: start.sequencer,
            log: start.log,
            guard: start.guard,
            faults,
            health: Health::Healthy,
            uncommitted: Vec::new(),
            uncommitted_signatures: start.uncommitted_signatures,
            commit_target: start.committed,
            committed: start.committed,
            index_ops: start.uncommitted_ops,
            index_resync: false,
            durable_unpublished: false,
            last_checkpoint_at: Instant::now(),
        }
    }

    /// Whether this node signs (a follower only takes signatures from its primary).
    fn signs(&self) -> bool {
        self.config.role == Role::Standalone
    }

    fn received(&self, n: usize) {
        self.shared.queued.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn run(mut self, queue: Receiver<Command>) {
        if self.signs() && self.sequencer.unsigned() > 0 {
            // Durable but unsigned transactions from before a restart: sign them first.
            self.process(Vec::new(), true);
        }
        loop {
            if let Health::Degraded { next_probe, .. } = &self.health {
                let wait = next_probe.saturating_duration_since(Instant::now());
                match queue.recv_timeout(wait) {
                    Ok(command) => self.refuse(command),
                    Err(RecvTimeoutError::Timeout) => self.try_recover(),
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                continue;
            }
            if matches!(self.health, Health::Poisoned(_)) {
                match queue.recv() {
                    Ok(command) => {
                        self.refuse(command);
                        continue;
                    }
                    Err(_) => break,
                }
            }
            let first = if self.signs() && self.sequencer.unsigned() > 0 {
                let wait = self
                    .sequencer
                    .signature_deadline()
                    .saturating_duration_since(Instant::now());
                match queue.recv_timeout(wait) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match queue.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            };
            let mut batch = Vec::new();
            let mut control = None;
            match first {
                Some(Command::Submit(s)) => batch.push(s),
                Some(Command::Control(c)) => control = Some(c),
                None => {}
            }
            let mut idle = false;
            while control.is_none() && batch.len() < self.config.max_batch {
                match queue.try_recv() {
                    Ok(Command::Submit(s)) => batch.push(s),
                    Ok(Command::Control(c)) => control = Some(c),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => idle = true,
                }
                if idle {
                    break;
                }
            }
            self.received(batch.len());
            if control.is_none() || !batch.is_empty() {
                // Nothing else is waiting: sign now rather than make this batch wait for the
                // interval and a second fsync. Under load the queue is never empty and the
                // count/interval cadence bounds the signing cost.
                self.process(batch, idle);
            }
            let mut next = control.map(Command::Control);
            while let Some(command) = next.take() {
                next = match command {
                    Command::Control(c) => self.control(c, &queue),
                    Command::Submit(s) => {
                        self.received(1);
                        self.process(vec![s], true);
                        None
                    }
                };
            }
        }
        // Closing: everything submitted has been processed; sign the rest and checkpoint.
        if matches!(self.health, Health::Degraded { .. }) {
            // One last attempt; what stays unsigned is durable and is signed at the next open.
            self.try_recover();
        }
        if matches!(self.health, Health::Healthy) {
            if self.signs() && self.sequencer.unsigned() > 0 {
                self.process(Vec::new(), true);
            }
            if let Err(fault) = self.checkpoint() {
                self.on_fault(fault, 0, Vec::new());
            }
        }
    }

    /// The answer to anything asked while writes are refused.
    fn refusal(&self) -> Option<AppendError> {
        match &self.health {
            Health::Healthy => None,
            Health::Degraded { fault, .. } => Some(AppendError::Unavailable(fault.clone())),
            Health::Poisoned(e) => Some(e.clone()),
        }
    }

    fn refuse(&self, command: Command) {
        let e = self
            .refusal()
            .unwrap_or_else(|| AppendError::Failed("writes are refused".into()));
        match command {
            Command::Submit(s) => {
                self.received(1);
                (s.done)(Err(e));
            }
            Command::Control(Control::Replicate { done, .. }) => done(Err(e)),
            Command::Control(
                Control::CommitThrough { reply, .. } | Control::TruncateAfter { reply, .. },
            ) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A primary's batch: sequence it, make it durable, commit what a signature covers.
    fn process(&mut self, batch: Vec<Submission>, sign_now: bool) {
        if let Some(e) = self.refusal() {
            for s in batch {
                (s.done)(Err(e.clone()));
            }
            return;
        }
        if !self.signs() {
            for s in batch {
                (s.done)(Err(AppendError::NotPrimary));
            }
            return;
        }
        let base = match self.log.position_for_batch(
            self.sequencer.next_seqno(),
            &self.shared.segments,
            &self.faults,
        ) {
            Ok(base) => base,
            Err(e) => {
                let fault = StorageFault::new(StorageOp::SegmentCreate, &e, true);
                let txid = self.sequencer.next_txid();
                let pending = batch
                    .into_iter()
                    .map(|s| Pending {
                        txid,
                        done: Some(s.done),
                        submitted: None,
                    })
                    .collect();
                return self.on_fault(fault, 4096, pending);
            }
        };
        let sequenced =
            self.sequencer
                .sequence(batch, base, sign_now, &self.shared.keys, &self.guard);
        match sequenced {
            Ok(sequenced) => self.make_durable(sequenced, Vec::new()),
            Err((SequenceError::ForkGuard(reason), txs)) => {
                // Nothing of this batch was written.
                for p in txs {
                    if let Some(done) = p.done {
                        done(Err(AppendError::Failed(reason.clone())));
                    }
                }
                self.poison(AppendError::Failed(reason), None, Vec::new());
            }
        }
    }

    /// A request other than a submission. A replica's append takes the appends queued right
    /// behind it into the same batch (up to `max_batch` transactions); the first other
    /// command met is returned, to be handled next.
    fn control(&mut self, control: Control, queue: &Receiver<Command>) -> Option<Command> {
        if self.refusal().is_some() {
            self.refuse(Command::Control(control));
            return None;
        }
        match control {
            Control::Replicate { ops, written, done } => {
                let mut ops = ops;
                let mut writtens: Vec<ReplicaWritten> = written.into_iter().collect();
                let mut dones = vec![done];
                let mut next = None;
                while ops.len() < self.config.max_batch {
                    match queue.try_recv() {
                        Ok(Command::Control(Control::Replicate {
                            ops: more,
                            written,
                            done,
                        })) => {
                            ops.extend(more);
                            writtens.extend(written);
                            dones.push(done);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let result = self.replicate(ops, writtens);
                for done in dones {
                    done(result.clone());
                }
                return next;
            }
            Control::CommitThrough { seqno, reply } => {
                let _ = reply.send(self.commit_through(seqno));
            }
            Control::TruncateAfter { seqno, reply } => {
                let _ = reply.send(self.truncate_after(seqno));
            }
        }
        None
    }

    fn replicate(
        &mut self,
        ops: Vec<(TxId, ReplicaOp)>,
        written: Vec<ReplicaWritten>,
    ) -> Result<Option<TxId>, AppendError> {
        if self.signs() {
            return Err(AppendError::Refused(FollowerRefusal::NotFollower));
        }
        if ops.is_empty() {
            return Ok(self.sequencer.last());
        }
        let next = self.sequencer.next_seqno();
        let base = self
            .log
            .position_for_batch(next, &self.shared.segments, &self.faults)
            .map_err(|e| {
                let fault = StorageFault::new(StorageOp::SegmentCreate, &e, true);
                self.on_fault(fault.clone(), 4096, Vec::new());
                AppendError::Unavailable(fault)
            })?;
        let sequenced = self
            .sequencer
            .replicate(ops, base, &self.shared.keys, &self.guard)
            .map_err(|e| match e {
                ReplicateError::Refused(r) => AppendError::Refused(r),
                ReplicateError::Failed(reason) => AppendError::Failed(reason),
                ReplicateError::ForkGuard(reason) => {
                    self.poison(AppendError::Failed(reason.clone()), None, Vec::new());
                    AppendError::Failed(reason)
                }
            })?;
        self.make_durable(sequenced, written);
        match self.refusal() {
            Some(e) => Err(e),
            None => Ok(self.sequencer.last()),
        }
    }

    fn commit_through(&mut self, seqno: u64) -> Result<Option<TxId>, AppendError> {
        if self.signs() {
            return Err(AppendError::Refused(FollowerRefusal::NotFollower));
        }
        let durable = self.sequencer.last().map_or(0, TxId::seqno);
        if seqno > durable {
            return Err(AppendError::Refused(FollowerRefusal::BeyondDurable {
                seqno,
                durable,
            }));
        }
        let covered = self
            .uncommitted_signatures
            .partition_point(|(t, _)| t.seqno() <= seqno);
        if covered > 0 {
            self.commit_target = Some(self.uncommitted_signatures[covered - 1]);
        }
        if let Err(fault) = self.finish_derived() {
            self.on_fault(fault.clone(), 0, Vec::new());
            return Err(AppendError::Unavailable(fault));
        }
        Ok(self.committed.map(|(t, _)| t))
    }

    fn truncate_after(&mut self, seqno: u64) -> Result<Option<TxId>, AppendError> {
        if self.signs() {
            return Err(AppendError::Refused(FollowerRefusal::NotFollower));
        }
        let committed = self.commit_target.map_or(0, |(t, _)| t.seqno());
        if seqno < committed {
            return Err(AppendError::Refused(FollowerRefusal::BelowCommitted {
                seqno,
                committed,
            }));
        }
        if self
            .sequencer
            .last()
            .is_none_or(|last| seqno >= last.seqno())
        {
            return Ok(self.sequencer.last());
        }
        let cut = self.cut_log_after(seqno).map_err(|e| {
            // Part of the cut may be on disk: only recovery can say what the files hold.
            StorageFault::new(StorageOp::SegmentTruncate, &e, false)
        });
        let last = match cut {
            Ok(last) => last,
            Err(fault) => {
                self.poison(
                    AppendError::Unavailable(fault.clone()),
                    Some(fault.clone()),
                    Vec::new(),
                );
                return Err(AppendError::Unavailable(fault));
            }
        };
        let gone = self
            .uncommitted
            .partition_point(|p| p.txid.seqno() <= seqno);
        for p in self.uncommitted.split_off(gone) {
            if let Some(done) = p.done {
                done(Err(AppendError::Failed(format!(
                    "transaction {} was rolled back: it was not committed",
                    p.txid
                ))));
            }
        }
        self.uncommitted_signatures
            .retain(|(t, _)| t.seqno() <= seqno);
        self.index_ops.retain(|(t, _)| t.seqno() <= seqno);
        self.shared.published.lock().expect("state lock").durable = Some(last);
        self.shared.committed_changed.notify_all();
        if let Err(fault) = self.checkpoint() {
            self.on_fault(fault.clone(), 0, Vec::new());
            return Err(AppendError::Unavailable(fault));
        }
        Ok(Some(last))
    }

    /// Cuts the segments, the tree files and the key ring back to `seqno` and rewinds the
    /// sequencer there; returns the txid at `seqno`.
    fn cut_log_after(&mut self, seqno: u64) -> io::Result<TxId> {
        let transactions = Transactions {
            tree: &self.shared.tree,
            segments: &self.shared.segments,
        };
        let invalid = |e: crate::StoreError| io::Error::other(e.to_string());
        let next_offset = transactions.record(seqno + 1).map_err(invalid)?.offset;
        let record = transactions.record(seqno).map_err(invalid)?;
        let (last, _) = transactions.read_at(seqno, record).map_err(invalid)?;
        self.shared.tail.cut_after(seqno);
        self.log
            .truncate_after(seqno, next_offset, &self.shared.segments)?;
        self.shared.tree.truncate(seqno + 1)?;
        let tree = TreeWriter::resume(&self.shared.tree, &transactions, seqno + 1)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.shared.keys.truncate_after(seqno);
        let last_signature = self
            .uncommitted_signatures
            .iter()
            .rev()
            .find(|(t, _)| t.seqno() <= seqno)
            .or(self.committed.as_ref())
            .map(|(_, point)| *point);
        self.sequencer.rewind(
            last,
            tree,
            last_signature,
            self.shared.keys.sealing(self.config.key_rotation_every),
        );
        Ok(last)
    }

    /// Appends a sequenced batch to the log; once durable, moves the sequencer on, brings the
    /// derived files up and (standalone) commits through the batch's signature. A replica's
    /// batch goes to the written tail, and `written` is called, between its write and its
    /// fsync.
    fn make_durable(&mut self, mut batch: Sequenced, written: Vec<ReplicaWritten>) {
        if batch.frames.is_empty() {
            return;
        }
        let started = Instant::now();
        let tail = (self.config.role == Role::Replica).then_some(&self.shared.tail);
        let on_written = || {
            let Some(last) = batch.last else { return };
            if let Some(tail) = tail {
                tail.push(&batch.frames, &batch.payloads);
            }
            for written in written {
                written(last);
            }
        };
        if let Err(outcome) = self.log.append(&batch.frames, &self.faults, on_written) {
            // Whatever of the batch was handed out from the tail is taken back before anyone
            // is told of the failure.
            self.shared
                .tail
                .cut_after(self.sequencer.last().map_or(0, TxId::seqno));
            // The batch's seqnos will be sealed again: what it sealed counts against the key,
            // and a rotation a follower took from it is forgotten.
            self.sequencer.discard(batch.ops.len() as u64);
            self.shared
                .keys
                .truncate_after(self.sequencer.last().map_or(0, TxId::seqno));
            let (len, txs) = (batch.frames.len(), batch.txs);
            return match outcome {
                AppendOutcome::CutBack(fault) => self.degrade(fault, len, txs),
                AppendOutcome::Unknown(fault) => {
                    self.poison(AppendError::Unavailable(fault.clone()), Some(fault), txs)
                }
            };
        }
        if let Some(observer) = &self.config.observer {
            observer.batch_durable(
                batch.ops.len() - batch.signatures.len(),
                batch.signatures.len(),
                batch.frames.len(),
                started.elapsed(),
            );
        }
        // Durable. Derived state next, then the commit point.
        self.sequencer.advance(&mut batch, &self.shared.keys);
        self.uncommitted.append(&mut batch.txs);
        self.index_ops.append(&mut batch.ops);
        self.uncommitted_signatures.append(&mut batch.signatures);
        self.durable_unpublished = true;
        if self.signs() {
            // A standalone node's durable signature is committed: no one else must agree.
            self.commit_target = self.uncommitted_signatures.last().copied();
        }
        if let Err(fault) = self.finish_derived() {
            return self.on_fault(fault, 0, Vec::new());
        }
        if self.last_checkpoint_at.elapsed() >= self.config.checkpoint_interval
            && let Err(fault) = self.checkpoint()
        {
            self.on_fault(fault, 0, Vec::new());
        }
    }

    fn on_fault(&mut self, fault: StorageFault, probe_bytes: usize, batch: Vec<Pending>) {
        if fault.transient {
            self.degrade(fault, probe_bytes, batch);
        } else {
            self.poison(AppendError::Unavailable(fault.clone()), Some(fault), batch);
        }
    }

    /// Writes are refused until a probe succeeds. `batch` was not written; the earlier
    /// durable-but-uncommitted transactions are told so (they are committed after recovery).
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
        for p in &mut self.uncommitted {
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

    /// Writes are refused until the ledger is reopened. `batch` and the uncommitted
    /// transactions may or may not be on disk: they are Indeterminate.
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
        for p in batch
            .into_iter()
            .chain(std::mem::take(&mut self.uncommitted))
        {
            if let Some(done) = p.done {
                done(Err(AppendError::Indeterminate(format!(
                    "transaction {}: {indeterminate}",
                    p.txid
                ))));
            }
        }
        self.shared.committed_changed.notify_all();
    }

    /// Brings the tree files up to the durable end and publishes it, then commits through
    /// the commit target.
    fn finish_derived(&mut self) -> Result<(), StorageFault> {
        if self.sequencer.tree().has_pending() {
            self.sequencer
                .tree()
                .flush_with(&self.shared.tree, &self.faults)
                .map_err(|e| StorageFault::new(StorageOp::TreeWrite, &e, true))?;
        }
        if self.durable_unpublished {
            // Published only once the frame records exist: a reader finds a durable
            // transaction's frame through them.
            self.shared.published.lock().expect("state lock").durable = self.sequencer.last();
            self.durable_unpublished = false;
            self.shared.committed_changed.notify_all();
        }
        self.commit()
    }

    /// The commit point: applies the index and governance changes of every transaction
    /// through the commit target, then publishes it as committed and answers its submitters.
    fn commit(&mut self) -> Result<(), StorageFault> {
        let Some((target, point)) = self.commit_target else {
            return Ok(());
        };
        let through = self
            .index_ops
            .partition_point(|(t, _)| t.seqno() <= target.seqno());
        if self.index_resync {
            let index = &self.shared.index;
            self.faults
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
                    recovery::reindex(&self.ledger_dir, &self.shared.keys, index, target.seqno())
                        .map_err(|e| fault_from_message(StorageOp::IndexCommit, e.to_string()))
                })?;
            self.index_ops.drain(..through);
            self.index_resync = false;
        } else if through > 0 {
            let applied = self
                .faults
                .check(StorageOp::IndexCommit)
                .map_err(|e| StorageFault::new(StorageOp::IndexCommit, &e, true))
                .and_then(|()| {
                    self.shared
                        .index
                        .apply(&self.index_ops[..through], None)
                        .map_err(|e| fault_from_message(StorageOp::IndexCommit, e.to_string()))
                });
            if let Err(fault) = applied {
                // Whether redb kept part of it is not ours to guess: re-derive from the ledger.
                self.index_resync = true;
                return Err(fault);
            }
            self.index_ops.drain(..through);
        }
        if !self.sequencer.knows_issuer() {
            // A node that joined empty learns the ledger id once the genesis is applied.
            let recorded = self
                .shared
                .index
                .governance(entry::tables::CONFIG, crate::LEDGER_ID_KEY);
            if let Some(id) = recorded
                .ok()
                .flatten()
                .and_then(|v| crate::recorded_ledger_id(Some(&v)))
            {
                self.sequencer.set_issuer(id);
            }
        }
        if self
            .committed
            .is_some_and(|(c, _)| c.seqno() >= target.seqno())
        {
            return Ok(());
        }
        self.committed = Some((target, point));
        let covered = self
            .uncommitted_signatures
            .partition_point(|(t, _)| t.seqno() <= target.seqno());
        self.uncommitted_signatures.drain(..covered);
        let covered = self
            .uncommitted
            .partition_point(|p| p.txid.seqno() < target.seqno());
        let completions: Vec<Pending> = self.uncommitted.drain(..covered).collect();
        self.shared.published.lock().expect("state lock").committed = Some(target);
        self.shared.committed_changed.notify_all();
        if completions.is_empty() {
            return Ok(());
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
        Ok(())
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
            .and_then(|()| self.log.probe(probe_bytes));
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
        if self.signs() && self.sequencer.unsigned() > 0 {
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

    /// Makes the derived files durable and records the newest committed signature in the
    /// fork guard. Skipped while derived state is behind the ledger (a later checkpoint
    /// covers it).
    fn checkpoint(&mut self) -> Result<(), StorageFault> {
        self.last_checkpoint_at = Instant::now();
        let committed_behind =
            self.commit_target.map(|(t, _)| t.seqno()) != self.committed.map(|(t, _)| t.seqno());
        if self.sequencer.tree().has_pending()
            || self.index_resync
            || self.durable_unpublished
            || committed_behind
        {
            return Ok(());
        }
        if let Err(e) = self.shared.tree.sync_with(&self.faults) {
            // A failed fsync of the tree files (EIO) means their page cache cannot be trusted;
            // they are derived, so a reopen re-derives them, but not while running. Anything
            // else (a full disk, EMFILE opening the directory) is transient.
            let transient = FaultKind::of(&e) != FaultKind::Io;
            return Err(StorageFault::new(StorageOp::TreeSync, &e, transient));
        }
        let tree_size = self.sequencer.tree().size();
        let committed = self
            .faults
            .check(StorageOp::IndexCommit)
            .map_err(|e| StorageFault::new(StorageOp::IndexCommit, &e, true))
            .and_then(|()| {
                self.shared
                    .index
                    .apply(&[], Some((tree_size, &self.shared.tree)))
                    .map_err(|e| fault_from_message(StorageOp::IndexCommit, e.to_string()))
            });
        if let Err(fault) = committed {
            self.index_resync = true;
            return Err(fault);
        }
        if let Some((_, point)) = self.committed {
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
        crate::faults::errno::EMFILE,
        crate::faults::errno::ENFILE,
        crate::faults::errno::ENOMEM,
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

/// Default cadence: sign at least every `SIGN_EVERY` transactions or `SIGN_INTERVAL`. A cluster's
/// primary waits up to `SIGN_INTERVAL` after a signature commits before it proposes the next
/// (tokio's timer adds up to about a millisecond more); 1 ms measured best on a 3-node cluster
/// (docs/PERFORMANCE.md, issue 18 step 7). A standalone node signs at once when idle.
pub const SIGN_EVERY: u64 = 1000;
pub const SIGN_INTERVAL: Duration = Duration::from_millis(1);
