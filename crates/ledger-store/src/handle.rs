//! The seam between a ledger and what serves it: [`LedgerHandle`] is everything the HTTP
//! personality (and the node around it) asks of a ledger. A single node serves a [`Ledger`]
//! directly; a replicated ledger implements the same trait over its local store (forwarding
//! writes to the primary, reading committed state here), so the personality does not change.

use crate::DerivedDamage;
use crate::{
    AppendError, Completion, Consistency, ConsistencyRefusal, EntryRecord, KvPair, Ledger,
    ReceiptBundle, StoreError, TxStatus, WriteRequest,
};
use ledger_core::TxId;
use ledger_core::hash::Hash32;
use ledger_core::merkle::ProofStep;
use std::sync::mpsc;
use std::time::Duration;

/// A ledger as its clients see it. Every read answers from committed state only.
pub trait LedgerHandle: Send + Sync {
    /// Queues a write; `done` is called once, when it is committed or has failed.
    fn submit(&self, request: WriteRequest, done: Completion) -> Result<(), AppendError>;

    /// Writes and blocks until committed.
    fn append(&self, request: WriteRequest) -> Result<TxId, AppendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            request,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// `Ok` when writes are accepted; otherwise what `submit` would answer now.
    fn write_health(&self) -> Result<(), AppendError>;
    /// Submissions waiting to be sequenced.
    fn queue_depth(&self) -> usize;
    /// Why writes stopped until a restart, if they did.
    fn failure(&self) -> Option<String>;
    /// Stops accepting writes, commits what was submitted, and waits for it.
    fn close(&self);
    /// Derived files that reads found damaged since the ledger was opened (rebuilt at the next
    /// open); while any is, `/readyz` says the node is degraded.
    fn derived_damage(&self) -> Vec<DerivedDamage>;

    /// The last committed transaction.
    fn committed(&self) -> Option<TxId>;
    fn status(&self, txid: TxId) -> TxStatus;
    /// The status of `txid`, or why its seqno's transaction cannot be read to tell its view.
    fn try_status(&self, txid: TxId) -> Result<TxStatus, StoreError>;
    /// Blocks until `txid` is committed or `timeout` passes; the status then.
    fn wait_committed(&self, txid: TxId, timeout: Duration) -> TxStatus;

    fn entry(&self, txid: TxId) -> Result<Option<EntryRecord>, StoreError>;
    fn entries(
        &self,
        collection: &str,
        tag: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<EntryRecord>, StoreError>;
    fn latest_entry(&self, collection: &str) -> Result<Option<EntryRecord>, StoreError>;
    fn collections(&self) -> Result<Vec<(String, u64)>, StoreError>;
    fn tags(&self, collection: &str) -> Result<Vec<(String, u64)>, StoreError>;
    fn has_tag(&self, collection: &str, tag: &str) -> Result<bool, StoreError>;
    fn receipt(&self, txid: TxId) -> Result<Option<ReceiptBundle>, StoreError>;
    /// See [`Ledger::rfc6962_inclusion_proof`].
    fn rfc6962_inclusion_proof(&self, seqno: u64, size: u64) -> Result<Vec<ProofStep>, StoreError>;
    /// See [`Ledger::consistency`].
    fn consistency(
        &self,
        from: TxId,
        to: Option<TxId>,
    ) -> Result<Result<Consistency, ConsistencyRefusal>, StoreError>;
    fn idempotent_write(&self, key_digest: &Hash32) -> Result<Option<(TxId, u64)>, StoreError>;

    fn governance(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn governance_table(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The committed value of `key` in application table `table` (user-defined code's state).
    fn kv_get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` committed pairs of `table` with keys after `after`, ascending.
    fn kv_scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, StoreError>;
}

impl LedgerHandle for Ledger {
    fn submit(&self, request: WriteRequest, done: Completion) -> Result<(), AppendError> {
        Ledger::submit(self, request, done)
    }
    fn write_health(&self) -> Result<(), AppendError> {
        Ledger::write_health(self)
    }
    fn queue_depth(&self) -> usize {
        Ledger::queue_depth(self)
    }
    fn failure(&self) -> Option<String> {
        Ledger::failure(self)
    }
    fn close(&self) {
        Ledger::close(self)
    }
    fn derived_damage(&self) -> Vec<DerivedDamage> {
        Ledger::derived_damage(self)
    }
    fn committed(&self) -> Option<TxId> {
        Ledger::committed(self)
    }
    fn status(&self, txid: TxId) -> TxStatus {
        Ledger::status(self, txid)
    }
    fn try_status(&self, txid: TxId) -> Result<TxStatus, StoreError> {
        Ledger::try_status(self, txid)
    }
    fn wait_committed(&self, txid: TxId, timeout: Duration) -> TxStatus {
        Ledger::wait_committed(self, txid, timeout)
    }
    fn entry(&self, txid: TxId) -> Result<Option<EntryRecord>, StoreError> {
        Ledger::entry(self, txid)
    }
    fn entries(
        &self,
        collection: &str,
        tag: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        Ledger::entries(self, collection, tag, from, to, limit)
    }
    fn latest_entry(&self, collection: &str) -> Result<Option<EntryRecord>, StoreError> {
        Ledger::latest_entry(self, collection)
    }
    fn collections(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ledger::collections(self)
    }
    fn tags(&self, collection: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ledger::tags(self, collection)
    }
    fn has_tag(&self, collection: &str, tag: &str) -> Result<bool, StoreError> {
        Ledger::has_tag(self, collection, tag)
    }
    fn consistency(
        &self,
        from: TxId,
        to: Option<TxId>,
    ) -> Result<Result<Consistency, ConsistencyRefusal>, StoreError> {
        Ledger::consistency(self, from, to)
    }

    fn rfc6962_inclusion_proof(&self, seqno: u64, size: u64) -> Result<Vec<ProofStep>, StoreError> {
        Ledger::rfc6962_inclusion_proof(self, seqno, size)
    }

    fn receipt(&self, txid: TxId) -> Result<Option<ReceiptBundle>, StoreError> {
        Ledger::receipt(self, txid)
    }
    fn idempotent_write(&self, key_digest: &Hash32) -> Result<Option<(TxId, u64)>, StoreError> {
        Ledger::idempotent_write(self, key_digest)
    }
    fn governance(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ledger::governance(self, table, key)
    }
    fn governance_table(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ledger::governance_table(self, table)
    }
    fn kv_get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ledger::kv_get(self, table, key)
    }
    fn kv_scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, StoreError> {
        Ledger::kv_scan(self, table, after, limit)
    }
}
