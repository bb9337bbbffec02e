//! The cluster as the HTTP personality sees it: a [`LedgerHandle`] whose writes go through
//! consensus ([`Cluster::write`]) and whose reads answer from this node's committed ledger.
//! Writes reaching a node that does not lead are refused with `NotPrimary` (the server
//! redirects them to the primary before they get here; this covers a change of primary in
//! between).

use crate::cluster::{Cluster, WriteError};
use ledger_core::TxId;
use ledger_core::hash::Hash32;
use ledger_store::{
    AppendError, Completion, Consistency, ConsistencyRefusal, DerivedDamage, EntryRecord, KvPair,
    LedgerHandle, ReceiptBundle, StoreError, TxStatus, WriteRequest,
};
use std::sync::Arc;
use std::time::Duration;

pub struct ClusterHandle {
    cluster: Arc<Cluster>,
    runtime: tokio::runtime::Handle,
}

impl ClusterHandle {
    /// `runtime` runs the writes (the caller's runtime).
    pub fn new(cluster: Arc<Cluster>, runtime: tokio::runtime::Handle) -> Self {
        ClusterHandle { cluster, runtime }
    }
}

fn append_error(e: WriteError) -> AppendError {
    match e {
        WriteError::Refused(e) => e,
        WriteError::NotPrimary { .. } => AppendError::NotPrimary,
        WriteError::Pending { .. } => AppendError::Indeterminate(e.to_string()),
        WriteError::RolledBack(_) => AppendError::Failed(e.to_string()),
        WriteError::Closed => AppendError::Closed,
    }
}

impl LedgerHandle for ClusterHandle {
    /// Proposes at once (so writes enter the log in the order they were submitted) and
    /// waits for the outcome on the runtime.
    fn submit(&self, request: WriteRequest, done: Completion) -> Result<(), AppendError> {
        self.write_health()?;
        let proposed = self.cluster.propose(request).map_err(append_error)?;
        let cluster = self.cluster.clone();
        self.runtime.spawn(async move {
            done(cluster.settle(proposed).await.map_err(append_error));
        });
        Ok(())
    }
    fn write_health(&self) -> Result<(), AppendError> {
        if let Some(stopped) = self.cluster.stopped() {
            return Err(AppendError::Failed(stopped));
        }
        if !self.cluster.is_primary() {
            return Err(AppendError::NotPrimary);
        }
        self.cluster.ledger().write_health()
    }
    fn queue_depth(&self) -> usize {
        self.cluster.ledger().queue_depth()
    }
    fn failure(&self) -> Option<String> {
        self.cluster.ledger().failure()
    }
    fn close(&self) {
        self.cluster.ledger().close()
    }
    fn derived_damage(&self) -> Vec<DerivedDamage> {
        self.cluster.ledger().derived_damage()
    }
    fn committed(&self) -> Option<TxId> {
        self.cluster.ledger().committed()
    }
    fn status(&self, txid: TxId) -> TxStatus {
        self.cluster.ledger().status(txid)
    }
    fn try_status(&self, txid: TxId) -> Result<TxStatus, StoreError> {
        self.cluster.ledger().try_status(txid)
    }
    fn wait_committed(&self, txid: TxId, timeout: Duration) -> TxStatus {
        self.cluster.ledger().wait_committed(txid, timeout)
    }
    fn entry(&self, txid: TxId) -> Result<Option<EntryRecord>, StoreError> {
        self.cluster.ledger().entry(txid)
    }
    fn entries(
        &self,
        collection: &str,
        tag: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        self.cluster
            .ledger()
            .entries(collection, tag, from, to, limit)
    }
    fn latest_entry(&self, collection: &str) -> Result<Option<EntryRecord>, StoreError> {
        self.cluster.ledger().latest_entry(collection)
    }
    fn collections(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.cluster.ledger().collections()
    }
    fn tags(&self, collection: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.cluster.ledger().tags(collection)
    }
    fn has_tag(&self, collection: &str, tag: &str) -> Result<bool, StoreError> {
        self.cluster.ledger().has_tag(collection, tag)
    }
    fn receipt(&self, txid: TxId) -> Result<Option<ReceiptBundle>, StoreError> {
        self.cluster.ledger().receipt(txid)
    }
    fn consistency(
        &self,
        from: TxId,
        to: Option<TxId>,
    ) -> Result<Result<Consistency, ConsistencyRefusal>, StoreError> {
        self.cluster.ledger().consistency(from, to)
    }
    fn rfc6962_inclusion_proof(
        &self,
        seqno: u64,
        size: u64,
    ) -> Result<Vec<ledger_core::merkle::ProofStep>, StoreError> {
        self.cluster.ledger().rfc6962_inclusion_proof(seqno, size)
    }
    fn idempotent_write(&self, key_digest: &Hash32) -> Result<Option<(TxId, u64)>, StoreError> {
        self.cluster.ledger().idempotent_write(key_digest)
    }
    fn governance(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.cluster.ledger().governance(table, key)
    }
    fn governance_table(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.cluster.ledger().governance_table(table)
    }
    fn kv_get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.cluster.ledger().kv_get(table, key)
    }
    fn kv_scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, StoreError> {
        self.cluster.ledger().kv_scan(table, after, limit)
    }
}
