//! openraft's state machine over the ledger: applying entries is moving the ledger's commit
//! point (`Ledger::commit_through`), which commits through the last signature at or before the
//! applied index — as in CCF, a transaction is committed only once a signature after it is
//! replicated to a majority. The index, the governance tables and every read then show it.
//!
//! Only what this node's log holds can be applied: applying an entry the log never took is
//! refused, as there is nothing in the ledger to commit.
//!
//! Snapshots are not used: every node keeps the whole ledger (receipts of any transaction need
//! it), so the log is never purged and a lagging or new node is sent the entries it lacks.
//! openraft is configured never to build one ([`openraft::SnapshotPolicy::Never`]); should it
//! ask anyway, the answer is an error that says so. A snapshot of this state machine could
//! only say "the ledger through log id X": true on a node whose ledger holds X, and of no use
//! to one that does not (it needs the entries, which it is sent instead).

use crate::log_store::{LogShared, blocking};
use crate::types::{
    Entry, LedgerRaft, LogId, MEMBERSHIP_KEY, MEMBERSHIP_TABLE, MembershipRecord, StoredMembership,
    log_id_of, zero_log_id,
};
use futures_util::StreamExt;
use ledger_core::TxId;
use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use std::io;
use std::sync::Arc;

fn no_snapshots() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "cledger nodes keep the whole ledger and never exchange snapshots",
    )
}

/// The state machine handed to openraft.
pub struct LedgerStateMachine {
    shared: Arc<LogShared>,
    applied: Option<LogId>,
    /// The last membership entry applied since the start, if any; before one is, the
    /// committed ledger's. Raft applies entries before a signature covers them, and the ledger
    /// commits only through a signature, so the ledger's membership can lag the applied one.
    membership: Option<StoredMembership>,
}

impl LedgerStateMachine {
    pub fn new(shared: Arc<LogShared>) -> Self {
        LedgerStateMachine {
            applied: shared.ledger.committed().map(log_id_of),
            shared,
            membership: None,
        }
    }

    /// Commits the ledger through the last signature at or before `last`, which this node's
    /// log must hold.
    async fn commit_through(&self, last: LogId) -> io::Result<()> {
        if last.index > self.shared.appended() {
            return Err(not_in_log(&last));
        }
        // Committed by a majority, but perhaps not yet durable here (the others were
        // faster): the ledger commits only what it holds.
        self.shared.wait_durable(last.index).await?;
        let shared = self.shared.clone();
        let committed = blocking(move || {
            if !shared.holds(&last)? {
                return Err(not_in_log(&last));
            }
            shared
                .ledger
                .commit_through(last.index)
                .map_err(|e| io::Error::other(e.to_string()))
        })
        .await?;
        self.shared
            .committed
            .send_replace(committed.map_or(0, TxId::seqno));
        Ok(())
    }
}

fn not_in_log(log_id: &LogId) -> io::Error {
    io::Error::other(format!(
        "cannot apply {log_id}: this node's log does not hold it, and applying is committing the ledger"
    ))
}

/// Index 0 is the virtual blank entry of term 0 (see [`crate::types`]); nothing else can be
/// applied there.
fn check_virtual(entry: &Entry) -> io::Result<()> {
    if entry.log_id == zero_log_id() && matches!(entry.payload, openraft::EntryPayload::Blank) {
        return Ok(());
    }
    Err(not_in_log(&entry.log_id))
}

/// The membership the committed ledger records.
pub fn committed_membership(shared: &LogShared) -> io::Result<StoredMembership> {
    let value = shared
        .ledger
        .governance(MEMBERSHIP_TABLE, MEMBERSHIP_KEY)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(match value {
        Some(bytes) => serde_json::from_slice::<MembershipRecord>(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .stored(),
        None => StoredMembership::default(),
    })
}

impl RaftStateMachine<LedgerRaft> for LedgerStateMachine {
    type SnapshotData = ();
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let membership = match &self.membership {
            Some(membership) => membership.clone(),
            None => committed_membership(&self.shared)?,
        };
        Ok((self.applied, membership))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<LedgerRaft>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        let mut entries = entries;
        let mut responders = Vec::new();
        let mut last = None;
        let mut membership = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            if entry.log_id.index == 0 {
                check_virtual(&entry)?;
            }
            if let Some(m) = entry.get_membership() {
                membership = Some(StoredMembership::new(Some(entry.log_id), m));
            }
            last = Some(entry.log_id());
            responders.push(responder);
        }
        let Some(last) = last else {
            return Ok(());
        };
        if last.index > 0 {
            self.commit_through(last).await?;
        }
        self.applied = Some(last);
        if membership.is_some() {
            self.membership = membership;
        }
        for responder in responders.into_iter().flatten() {
            responder.send(());
        }
        Ok(())
    }

    /// A snapshot is never wanted when openraft may do without one.
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<NoSnapshots> {
        force.then_some(NoSnapshots)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn install_snapshot(
        &mut self,
        _meta: &openraft::type_config::alias::SnapshotMetaOf<LedgerRaft>,
        _snapshot: (),
    ) -> Result<(), io::Error> {
        Err(no_snapshots())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::type_config::alias::SnapshotOf<LedgerRaft, ()>>, io::Error> {
        Ok(None)
    }
}

/// The snapshot builder openraft's traits require; it never builds one.
pub struct NoSnapshots;

impl RaftSnapshotBuilder<LedgerRaft> for NoSnapshots {
    type SnapshotData = ();

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::type_config::alias::SnapshotOf<LedgerRaft, ()>, io::Error> {
        Err(no_snapshots())
    }
}
