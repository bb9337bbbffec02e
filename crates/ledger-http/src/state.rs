//! The shared state of all routes, and the bridge from the store's writer thread to async code.
//!
//! `Ledger::append` blocks its thread until commit, which would stall a tokio worker; writes
//! go through [`ApiState::commit`] instead, which hands the store a completion that fires a
//! oneshot channel. Checks that must hold at the moment of a write (collection capacity, "not
//! the last administrator") run under [`ApiState::check_then_write`], so two concurrent
//! requests cannot both pass a check that only one of them may pass.

use crate::config::{ApiConfig, ConfigError};
use crate::constitution;
use crate::error::{ApiError, ApiResult};
use crate::users::UserRecord;
use ledger_core::TxId;
use ledger_store::{AppendError, LedgerHandle, WriteRequest};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub struct ApiState {
    pub(crate) ledger: Arc<dyn LedgerHandle>,
    pub(crate) config: ApiConfig,
    /// Hex SHA-256 of the service certificate's DER: the one member's id.
    pub(crate) member_id: String,
    pub(crate) constitution_digest: String,
    /// Serializes check-then-write sequences (see the module docs).
    pub(crate) check_then_write: tokio::sync::Mutex<()>,
    /// Collections known to exist. Collections are never removed, and this process is the
    /// ledger's only writer, so a hit needs no store read.
    known_collections: Mutex<HashSet<String>>,
    /// Bytes of write requests admitted and not yet answered (see `admit_write`).
    write_budget: Arc<tokio::sync::Semaphore>,
    /// Of those, the bytes each caller holds (see `admit_write`).
    write_shares: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    /// Serialises writes that carry the same idempotency key.
    pub(crate) idempotency_locks: crate::idempotency::KeyLocks,
    /// Users' records as the gate reads them on every request (see `user_record`).
    users: Mutex<UserCache>,
    /// User-defined code: execution slots and the application tables' pending writes.
    pub(crate) programs: crate::programs::Programs,
}

/// Cached user records (`None`: not a user), valid for one generation of governance state.
#[derive(Default)]
struct UserCache {
    generation: u64,
    /// A governance write ended indeterminate: it may commit later (when storage recovers),
    /// outside any generation change, so nothing is cached until the next start.
    disabled: bool,
    records: std::collections::HashMap<String, Option<UserRecord>>,
}

/// Most users cached; unknown callers (random certificates) must not grow it without bound.
const MAX_CACHED_USERS: usize = 10_000;

/// Held while an admitted write is in progress; returns its bytes to the budget and to its
/// caller's share when dropped.
pub(crate) struct WriteAdmission {
    _permit: tokio::sync::OwnedSemaphorePermit,
    shares: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    caller: String,
    bytes: usize,
}

impl Drop for WriteAdmission {
    fn drop(&mut self) {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = shares.get_mut(&self.caller) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                shares.remove(&self.caller); // the table holds only callers with writes in flight
            }
        }
    }
}

/// The fraction of the write budget one caller may hold: one caller (a Contributor opening
/// hundreds of HTTP/2 streams that declare a large body and send none) took it all, and every
/// other writer got 503 until the request timeout.
pub const WRITE_SHARE_DIVISOR: usize = 8;

impl ApiState {
    pub fn new(ledger: Arc<dyn LedgerHandle>, config: ApiConfig) -> Result<ApiState, ConfigError> {
        config.validate()?;
        let cert = ledger_core::x509::Cert::from_pem(&config.service_cert_pem)
            .map_err(|e| ConfigError::ServiceCert(e.to_string()))?;
        let write_budget = Arc::new(tokio::sync::Semaphore::new(config.max_pending_write_bytes));
        Ok(ApiState {
            member_id: ledger_core::hash::sha256(cert.der()).to_hex(),
            constitution_digest: constitution::digest(),
            ledger,
            config,
            check_then_write: tokio::sync::Mutex::new(()),
            known_collections: Mutex::new(HashSet::new()),
            write_budget,
            write_shares: Default::default(),
            idempotency_locks: Default::default(),
            users: Mutex::default(),
            programs: Default::default(),
        })
    }

    /// Admits a write of (at most) the request's declared size, or its body limit when it
    /// declares none, before its body is read: memory for writes stays bounded however many
    /// clients send at once, and the excess is told to retry (503 `ServiceBusy`) at once
    /// rather than queued without bound. Reads never pass through here.
    ///
    /// One caller (`caller`, a user id) may hold at most a [`WRITE_SHARE_DIVISOR`]th of the
    /// budget (and never less than one largest body), so no single user can starve the others.
    pub(crate) fn admit_write(
        &self,
        caller: &str,
        headers: &axum::http::HeaderMap,
    ) -> ApiResult<WriteAdmission> {
        let declared =
            crate::body::declared_length(headers).map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        // Oversized bodies are refused by the body reader with 413; charge them the cap here.
        let bytes = declared
            .unwrap_or(self.config.max_body_bytes)
            .clamp(1, self.config.max_body_bytes);
        let share = self.write_share();
        let mut shares = self.write_shares.lock().unwrap_or_else(|p| p.into_inner());
        let held = shares.get(caller).copied().unwrap_or(0);
        if held + bytes > share {
            return Err(ApiError::CallerBusy { held, share });
        }
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let permit = self
            .write_budget
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| ApiError::Busy)?;
        *shares.entry(caller.to_owned()).or_insert(0) += bytes;
        Ok(WriteAdmission {
            _permit: permit,
            shares: self.write_shares.clone(),
            caller: caller.to_owned(),
            bytes,
        })
    }

    /// Bytes of the write budget one caller may hold.
    fn write_share(&self) -> usize {
        (self.config.max_pending_write_bytes / WRITE_SHARE_DIVISOR).max(self.config.max_body_bytes)
    }

    /// A user's stored record, from the cache when possible. This process is the ledger's only
    /// writer and every governance write goes through [`ApiState::commit`], which starts a new
    /// generation once the write is decided; a record read during an older generation is never
    /// cached, so a change of roles takes effect for the next request.
    pub(crate) fn user_record(&self, user_id: &str) -> ApiResult<Option<UserRecord>> {
        let generation = {
            let cache = self.users.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(record) = cache.records.get(user_id) {
                return Ok(record.clone());
            }
            cache.generation
        };
        let record = crate::auth::record_of(&*self.ledger, user_id)?;
        let mut cache = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.disabled
            && cache.generation == generation
            && cache.records.len() < MAX_CACHED_USERS
        {
            cache.records.insert(user_id.to_owned(), record.clone());
        }
        Ok(record)
    }

    fn governance_changed(&self, indeterminate: bool) {
        let mut cache = self.users.lock().unwrap_or_else(|p| p.into_inner());
        cache.generation += 1;
        cache.records.clear();
        cache.disabled |= indeterminate;
    }

    /// Submits a write and waits, without blocking the thread, until it is committed.
    pub(crate) async fn commit(&self, request: WriteRequest) -> ApiResult<TxId> {
        let governance = matches!(request, WriteRequest::Governance(_));
        let result = self.commit_inner(request).await;
        if governance {
            let indeterminate = matches!(result, Err(ApiError::WriteIndeterminate(_)));
            self.governance_changed(indeterminate);
        }
        result
    }

    async fn commit_inner(&self, request: WriteRequest) -> ApiResult<TxId> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ledger
            .submit(
                request,
                Box::new(move |result| {
                    let _ = tx.send(result);
                }),
            )
            .map_err(append_error)?;
        match rx.await {
            Ok(result) => result.map_err(append_error),
            Err(_) => Err(ApiError::StorageUnavailable(
                "The ledger stopped before confirming the write.".into(),
            )),
        }
    }

    /// Submits a write carrying JavaScript's `writes` (a key-value transaction, or an entry
    /// with its hooks' writes) unless something in `reads` was written after `snapshot` (see
    /// `programs::pending`), and waits until it is committed.
    pub(crate) async fn commit_programmed(
        &self,
        snapshot: &crate::programs::pending::Snapshot,
        reads: &crate::programs::pending::ReadSet,
        request: WriteRequest,
        writes: &[ledger_core::entry::KvWrite],
    ) -> Result<TxId, crate::programs::pending::SubmitError> {
        use crate::programs::pending::SubmitError;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.programs.pending.submit(
            snapshot,
            reads,
            writes,
            |completion| self.ledger.submit(request, completion),
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        )?;
        match rx.await {
            Ok(result) => result.map_err(SubmitError::Refused),
            Err(_) => Err(SubmitError::Refused(AppendError::Closed)),
        }
    }

    /// Commits what an execution wrote, as a key-value transaction: `Ok(None)` when it wrote
    /// nothing, `Err(None)` when it must run again (a write it could have read came first).
    pub(crate) async fn commit_kv_writes(
        &self,
        snapshot: &crate::programs::pending::Snapshot,
        reads: &crate::programs::pending::ReadSet,
        writes: Vec<ledger_core::entry::KvWrite>,
    ) -> Result<Option<TxId>, Option<ApiError>> {
        use crate::programs::pending::SubmitError;
        if writes.is_empty() {
            return Ok(None);
        }
        match self
            .commit_programmed(snapshot, reads, WriteRequest::Kv(writes.clone()), &writes)
            .await
        {
            Ok(txid) => Ok(Some(txid)),
            Err(SubmitError::Conflict) => Err(None),
            Err(SubmitError::Refused(e)) => Err(Some(append_error(e))),
        }
    }

    /// The transaction id reads are served at: the last committed one. Take it *after* reading,
    /// so it is never older than the state that was read.
    pub(crate) fn read_txid(&self) -> ApiResult<TxId> {
        self.ledger.committed().ok_or_else(|| {
            ApiError::StorageUnavailable("The ledger has no committed transaction yet.".into())
        })
    }

    pub(crate) fn collection_known(&self, id: &str) -> bool {
        self.known_collections
            .lock()
            .is_ok_and(|known| known.contains(id))
    }

    pub(crate) fn remember_collection(&self, id: &str) {
        if let Ok(mut known) = self.known_collections.lock() {
            known.insert(id.to_owned());
        }
    }
}

pub(crate) fn append_error(e: AppendError) -> ApiError {
    match e {
        AppendError::Busy => ApiError::Busy,
        AppendError::Closed => {
            ApiError::StorageUnavailable("The ledger is shutting down; nothing was written.".into())
        }
        AppendError::Failed(reason) => ApiError::StorageUnavailable(format!(
            "The ledger cannot write ({reason}); nothing was written."
        )),
        AppendError::Unavailable(fault) => storage_fault_error(&fault),
        // Writes reaching a backup are redirected to the primary before they get here; this is
        // a change of primary in between, or none elected yet.
        AppendError::NotPrimary => ApiError::NoPrimary,
        e @ AppendError::Refused(_) => ApiError::StorageUnavailable(format!(
            "This node cannot take the write ({e}); nothing was written."
        )),
        AppendError::ReservedTable(table) => {
            ApiError::InvalidInput(format!("Table {table} is written by the ledger itself."))
        }
        AppendError::Limit(limit) => limit.into(),
        AppendError::Indeterminate(reason) => ApiError::WriteIndeterminate(format!(
            "The write may be in the ledger but is not committed yet ({reason}). Check the \
             status of the transaction named here before sending it again: it becomes Committed \
             once storage recovers, the ledger restarts or (in a cluster) a primary commits it, \
             and Invalid if it was rolled back."
        )),
    }
}

/// 503 with `StorageFull` / `StorageReadOnly` / `StorageUnavailable` for a storage fault.
pub(crate) fn storage_fault_error(fault: &ledger_store::StorageFault) -> ApiError {
    use ledger_store::FaultKind;
    let (code, what) = match fault.kind {
        FaultKind::DiskFull => ("StorageFull", "the ledger's disk is full"),
        FaultKind::ReadOnly => ("StorageReadOnly", "the ledger's filesystem is read-only"),
        FaultKind::Io => (
            "StorageUnavailable",
            "the ledger's storage reported an I/O error",
        ),
        FaultKind::Resources => (
            "StorageUnavailable",
            "the server ran out of file descriptors or memory",
        ),
    };
    let next = if fault.transient {
        "The ledger retries by itself and accepts writes again once the condition clears; \
         retry after the Retry-After delay."
    } else {
        "The ledger accepts no writes until it is restarted."
    };
    ApiError::StorageFault {
        code,
        message: format!(
            "The ledger cannot write now: {what} ({} failed: {}); nothing was written. \
             Reads keep working. {next}",
            fault.operation, fault.message
        ),
        transient: fault.transient,
    }
}
