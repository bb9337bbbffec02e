//! openraft's state machine over the ledger: applying entries is moving the ledger's commit
//! point (`Ledger::commit_through`), which commits through the last signature at or before the
//! applied index — as in CCF, a transaction is committed only once a signature after it is
//! replicated to a majority. The index, the governance tables and every read then show it.
//!
//! Snapshots are not used: every node keeps the whole ledger (receipts of any transaction need
//! it), so the log is never purged and a lagging or new node is sent the entries it lacks.
//! openraft is configured never to build one ([`openraft::SnapshotPolicy::Never`]); should it
//! ask anyway, the answer is an error that says so.

use crate::log_store::LogShared;
use crate::types::{
    LedgerRaft, LogId, MEMBERSHIP_KEY, MEMBERSHIP_TABLE, MembershipRecord, StoredMembership,
    log_id_of,
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
}

impl LedgerStateMachine {
    pub fn new(shared: Arc<LogShared>) -> Self {
        LedgerStateMachine {
            applied: shared.ledger.committed().map(log_id_of),
            shared,
        }
    }
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
        Ok((self.applied, committed_membership(&self.shared)?))
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
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            last = Some(entry.log_id());
            responders.push(responder);
        }
        let Some(last) = last else {
            return Ok(());
        };
        if last.index > 0 {
            // Committed by a majority, but perhaps not yet durable here (the others were
            // faster): the ledger commits only what it holds.
            self.shared.wait_durable(last.index).await?;
            let ledger = self.shared.ledger.clone();
            let seqno = last.index;
            let committed = tokio::task::spawn_blocking(move || ledger.commit_through(seqno))
                .await
                .map_err(|e| io::Error::other(e.to_string()))?
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.shared
                .committed
                .send_replace(committed.map_or(0, TxId::seqno));
        }
        self.applied = Some(last);
        for responder in responders.into_iter().flatten() {
            responder.send(());
        }
        Ok(())
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
