//! Listings are blocking work (segment reads and decryption of a page of entries, index
//! scans) and must not hold up the async worker they arrive on: six clients of a slow read
//! slowed `/healthz` from 4 to 93 ms. Here a listing that blocks until the test lets it go runs
//! on a runtime with a single worker; other tasks must still run meanwhile.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use common::{ADMIN, App, certificate_caller};
use ledger_core::TxId;
use ledger_core::hash::Hash32;
use ledger_http::{ApiConfig, router};
use ledger_store::{
    AppendError, Completion, Consistency, ConsistencyRefusal, DerivedDamage, EntryRecord, Ledger,
    LedgerHandle, ReceiptBundle, StoreError, TxStatus, WriteRequest,
};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tower::ServiceExt;

/// A ledger whose `entries` (a listing) blocks its thread until released.
struct Stalling {
    inner: Arc<Ledger>,
    release: Mutex<mpsc::Receiver<()>>,
    entered: mpsc::SyncSender<()>,
}

impl LedgerHandle for Stalling {
    fn latest_entry(&self, collection: &str) -> Result<Option<EntryRecord>, StoreError> {
        self.inner.latest_entry(collection)
    }

    fn submit(&self, request: WriteRequest, done: Completion) -> Result<(), AppendError> {
        LedgerHandle::submit(&*self.inner, request, done)
    }
    fn write_health(&self) -> Result<(), AppendError> {
        self.inner.write_health()
    }
    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }
    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }
    fn close(&self) {
        self.inner.close()
    }
    fn derived_damage(&self) -> Vec<DerivedDamage> {
        self.inner.derived_damage()
    }
    fn committed(&self) -> Option<TxId> {
        self.inner.committed()
    }
    fn status(&self, txid: TxId) -> TxStatus {
        self.inner.status(txid)
    }
    fn try_status(&self, txid: TxId) -> Result<TxStatus, StoreError> {
        self.inner.try_status(txid)
    }
    fn wait_committed(&self, txid: TxId, timeout: Duration) -> TxStatus {
        self.inner.wait_committed(txid, timeout)
    }
    fn entry(&self, txid: TxId) -> Result<Option<EntryRecord>, StoreError> {
        self.inner.entry(txid)
    }
    fn entries(
        &self,
        collection: &str,
        tag: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        let _ = self.entered.send(());
        let _ = self
            .release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
        self.inner.entries(collection, tag, from, to, limit)
    }
    fn collections(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.collections()
    }
    fn tags(&self, collection: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.tags(collection)
    }
    fn has_tag(&self, collection: &str, tag: &str) -> Result<bool, StoreError> {
        self.inner.has_tag(collection, tag)
    }
    fn receipt(&self, txid: TxId) -> Result<Option<ReceiptBundle>, StoreError> {
        self.inner.receipt(txid)
    }
    fn consistency(
        &self,
        from: TxId,
        to: Option<TxId>,
    ) -> Result<Result<Consistency, ConsistencyRefusal>, StoreError> {
        self.inner.consistency(from, to)
    }
    fn rfc6962_inclusion_proof(
        &self,
        seqno: u64,
        size: u64,
    ) -> Result<Vec<ledger_core::merkle::ProofStep>, StoreError> {
        self.inner.rfc6962_inclusion_proof(seqno, size)
    }
    fn idempotent_write(&self, key_digest: &Hash32) -> Result<Option<(TxId, u64)>, StoreError> {
        self.inner.idempotent_write(key_digest)
    }
    fn governance(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.governance(table, key)
    }
    fn governance_table(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.governance_table(table)
    }
    fn kv_get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.kv_get(table, key)
    }
    fn kv_scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<ledger_store::KvPair>, StoreError> {
        self.inner.kv_scan(table, after, limit)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_blocking_listing_does_not_hold_up_its_worker() {
    let app = App::new();
    let (release, released) = mpsc::channel();
    let (entered, entering) = mpsc::sync_channel(1);
    let handle = Arc::new(Stalling {
        inner: app.ledger.clone(),
        release: Mutex::new(released),
        entered,
    });
    let config = ApiConfig::new(
        "testledger".into(),
        app.files.service_cert_pem.clone(),
        app.node_id.clone(),
    );
    let stalling = router(handle, config);
    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/app/collections?api-version=2022-05-13")
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(certificate_caller(&ADMIN));
    let mut current = Request::builder()
        .method(Method::GET)
        .uri("/app/transactions?api-version=2022-05-13")
        .body(Body::empty())
        .unwrap();
    current.extensions_mut().insert(certificate_caller(&ADMIN));
    // The only worker takes the read, which blocks in the ledger...
    let read = tokio::spawn(stalling.clone().oneshot(current));
    tokio::task::spawn_blocking(move || entering.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the read never reached the ledger");
    // ...and other tasks still run: another request is answered meanwhile. (Waited for on a
    // plain thread: with its only worker blocked the runtime's own timers would not fire.)
    let (answer, answered) = mpsc::channel();
    tokio::spawn(async move {
        let _ = answer.send(stalling.oneshot(request).await.map(|r| r.status()));
    });
    let answered =
        tokio::task::spawn_blocking(move || answered.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap();
    let _ = release.send(());
    let answered = answered.expect("a blocking listing held up every other task on its worker");
    assert_eq!(answered.unwrap(), 200);
    let read = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(read.status(), 200);
}
