//! What the HTTP layer needs to know about this ledger, and its limits (acl-api.md §7.1).

/// ACL's documented entry limit.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 8192;
/// The largest `max_entry_bytes` this server accepts.
pub const MAX_ENTRY_BYTES_CEILING: usize = 1 << 20;
/// ACL's documented collection limit (the default collection not counted).
pub const DEFAULT_MAX_COLLECTIONS: usize = 5000;
/// Hard cap on any request body: the largest entry plus room for JSON escaping and framing.
pub const DEFAULT_MAX_BODY_BYTES: usize = (1 << 20) + (64 << 10);
/// Default budget of write request bytes admitted at once (bodies being read plus writes
/// waiting for commit); beyond it writes get 503 `ServiceBusy` and memory stays bounded.
pub const DEFAULT_MAX_PENDING_WRITE_BYTES: usize = 64 << 20;
/// ACL's documented collection id limit, in bytes after URL decoding.
pub const MAX_COLLECTION_ID_BYTES: usize = 256;

// The HTTP limits are the first check, with ACL's errors; the store's own limits
// (`ledger_store::limits`) are a second line and must never be the tighter ones: the largest
// contents, with a collection id, 64 tags and the entry header, stay far below a stored entry.
const _: () = assert!(MAX_COLLECTION_ID_BYTES <= ledger_store::limits::MAX_COLLECTION_ID_BYTES);
const _: () =
    assert!((MAX_ENTRY_BYTES_CEILING + (64 << 10)) as u64 <= ledger_store::limits::MAX_ENTRY_BYTES);

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The ledger's name: the first DNS label of its host, served by `/ledgerIdentity/{id}`.
    pub ledger_id: String,
    /// PEM of the service certificate (the TLS trust anchor clients pin).
    pub service_cert_pem: String,
    /// Hex SHA-256 of the node's DER SubjectPublicKeyInfo (64 lower-case hex characters).
    pub node_id: String,
    /// Largest `contents` accepted, in UTF-8 bytes (default 8192, at most 1 MiB).
    pub max_entry_bytes: usize,
    /// Most collections besides the default one.
    pub max_collections: usize,
    /// Bodies larger than this are refused with 413 without being read further.
    pub max_body_bytes: usize,
    /// Write request bytes admitted at once (see [`DEFAULT_MAX_PENDING_WRITE_BYTES`]).
    pub max_pending_write_bytes: usize,
    /// How long a write's idempotency key is remembered (seconds).
    pub idempotency_retention_secs: u64,
    /// Treat `x-ms-client-request-id` as an idempotency key when there is no
    /// `Idempotency-Key` (the Azure SDKs send the same id on their own retries).
    pub client_request_id_is_idempotency_key: bool,
    /// Where the node's checkpoint publisher leaves the latest checkpoint; `None`: the node
    /// publishes none (the checkpoint routes answer 404).
    pub checkpoints: Option<std::sync::Arc<crate::checkpoints::CheckpointBoard>>,
}

/// Default idempotency retention: a day, like the IETF draft's examples and common APIs.
pub const DEFAULT_IDEMPOTENCY_RETENTION_SECS: u64 = 24 * 60 * 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node_id must be 64 lower-case hex characters, got {0:?}")]
    NodeId(String),
    #[error("max_entry_bytes must be between 1 and {MAX_ENTRY_BYTES_CEILING}, got {0}")]
    MaxEntryBytes(usize),
    #[error("max_body_bytes ({body}) must be at least max_entry_bytes ({entry}) plus 1 KiB")]
    MaxBodyBytes { body: usize, entry: usize },
    #[error("the service certificate is not a PEM certificate: {0}")]
    ServiceCert(String),
    #[error("max_pending_write_bytes ({pending}) must be at least max_body_bytes ({body})")]
    MaxPendingWriteBytes { pending: usize, body: usize },
    #[error("ledger_id must not be empty")]
    LedgerId,
}

impl ApiConfig {
    /// A configuration with ACL's default limits.
    pub fn new(ledger_id: String, service_cert_pem: String, node_id: String) -> ApiConfig {
        ApiConfig {
            ledger_id,
            service_cert_pem,
            node_id,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_collections: DEFAULT_MAX_COLLECTIONS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_pending_write_bytes: DEFAULT_MAX_PENDING_WRITE_BYTES,
            idempotency_retention_secs: DEFAULT_IDEMPOTENCY_RETENTION_SECS,
            client_request_id_is_idempotency_key: false,
            checkpoints: None,
        }
    }

    /// Checks the configuration; [`crate::try_router`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ledger_id.is_empty() {
            return Err(ConfigError::LedgerId);
        }
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if self.node_id.len() != 64 || !self.node_id.chars().all(hex) {
            return Err(ConfigError::NodeId(self.node_id.clone()));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > MAX_ENTRY_BYTES_CEILING {
            return Err(ConfigError::MaxEntryBytes(self.max_entry_bytes));
        }
        if self.max_body_bytes < self.max_entry_bytes + 1024 {
            return Err(ConfigError::MaxBodyBytes {
                body: self.max_body_bytes,
                entry: self.max_entry_bytes,
            });
        }
        if self.max_pending_write_bytes < self.max_body_bytes {
            return Err(ConfigError::MaxPendingWriteBytes {
                pending: self.max_pending_write_bytes,
                body: self.max_body_bytes,
            });
        }
        ledger_core::x509::Cert::from_pem(&self.service_cert_pem)
            .map_err(|e| ConfigError::ServiceCert(e.to_string()))?;
        Ok(())
    }
}
