//! Durable storage for cledger: the ledger as append-only segment files written by one
//! group-commit writer, plus the files derived from it (Merkle tiles, indexes), encryption at
//! rest, recovery on open, the fork guard and the offline audit.
//!
//! A data directory looks like this (`docs/FORMAT.md` has the byte layouts):
//!
//! ```text
//! ledger/<first seqno>.seg   segments: the ledger itself, fsync'd per batch
//! tree/frames.idx            where each transaction's frame is (derived, checkpointed)
//! tree/level-LL.hashes       Merkle subtree hashes (derived, checkpointed)
//! index.redb                 indexes and governance state (derived, checkpointed)
//! keys/ledger_secret         the first ledger secret, wrapped by the key-encryption key
//!                            (later ones are recorded in the ledger, see `crypto`)
//! keys/kek                   the generated key-encryption key (embedded default only)
//! fork-guard                 last signed (seqno, root) (path configurable)
//! derived-damaged            derived files to rebuild at the next open (usually absent)
//! ```
//!
//! [`Ledger`] is the handle: writes go through [`Ledger::submit`] (or [`Ledger::append`]) to the
//! writer thread; reads are served from the indexes and files directly, on the caller's thread,
//! and never wait for the writer.
//!
//! The derived files are never trusted: the open checks them and rebuilds a damaged one from
//! the segments ([`RecoveryReport::rebuilt`]); reads check what they use and answer
//! [`StoreError::DerivedDamaged`] rather than anything wrong; the audit compares them with
//! the ledger (`docs/FORMAT.md` §8.1).

pub mod audit;
pub mod backup;
pub mod crypto;
pub mod faults;
pub mod guard;
mod handle;
pub mod index;
pub mod limits;
mod log;
mod reader;
mod recovery;
pub mod segment;
mod sequencer;
mod tail;
pub mod tree;
mod writer;

pub use crypto::KekSource;
pub use faults::{FaultInjector, FaultKind, FaultPlan, StorageFault, StorageOp};
pub use handle::LedgerHandle;
pub use limits::LimitError;
pub use recovery::RecoveryReport;
pub use sequencer::{PreparedWrite, ReplicaOp};
pub use writer::{ReplicaDone, ReplicaWritten, SIGN_EVERY, SIGN_INTERVAL};

pub use crypto::{KeyRing, LedgerSecret};
use guard::ForkGuard;
use index::Index;
use ledger_core::claims::{self, ApplicationClaim};
use ledger_core::cose::{self, ServiceSigner};
use ledger_core::entry::{self, ApplicationEntry, EntryView, KvWrite, TableWrite, TxBody};
use ledger_core::hash::Hash32;
use ledger_core::receipt::{Receipt, ReceiptParts};
use ledger_core::signing::EcSigningKey;
use ledger_core::{TxId, merkle};
use reader::{RecordCursor, Segments, Transactions};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tree::{EntryClass, FrameRecord, LeafReader, TreeFiles, TreeNodes};
use writer::{Command, Control, Submission, Writer, WriterStart};

/// What the writer reports as it works, for metrics. Called on the writer thread; must not
/// block.
pub trait StoreObserver: Send + Sync {
    /// A group commit reached the disk: `transactions` client/governance transactions and
    /// `signatures` (0 or 1) appended in `bytes` bytes; `write_sync` is the time spent in
    /// write + fdatasync.
    fn batch_durable(
        &self,
        transactions: usize,
        signatures: usize,
        bytes: usize,
        write_sync: Duration,
    );
    /// Transactions became committed; one latency per transaction, from `submit` to commit
    /// (called once per signature that commits submitted transactions).
    fn committed(&self, latencies: &[Duration]);
    /// The write path hit a storage fault.
    fn storage_fault(&self, fault: &StorageFault);
    /// A read found a derived file damaged (it is rebuilt from the ledger at the next open).
    /// Called once per file, on the reading thread.
    fn derived_damaged(&self, _damage: &DerivedDamage) {}
}

/// Who moves this node's commit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// One node: it sequences and signs its clients' writes, and a transaction is committed as
    /// soon as a signature after it is durable here.
    #[default]
    Standalone,
    /// A replica in a cluster: consensus decides what it appends and how far it commits.
    /// It appends only what [`Ledger::replicate`] gives it at the seqnos given (a primary's
    /// encoded transactions unchanged, or, while it leads, its own proposals, which it
    /// encodes, seals and signs at the seqnos consensus assigned), and commits only through
    /// [`Ledger::commit_through`] (what consensus has committed). Clients' writes through
    /// [`Ledger::submit`] are refused with [`AppendError::NotPrimary`]. Opening commits only
    /// what this node recorded as committed before it stopped (its own last signature may be
    /// of a suffix a new primary cuts off); consensus commits the rest again.
    Replica,
}

/// How far opening the ledger commits: see [`Role`].
fn commit_rule(role: Role) -> recovery::CommitRule {
    match role {
        Role::Standalone => recovery::CommitRule::LastSignature,
        Role::Replica => recovery::CommitRule::Recorded,
    }
}

/// Tunables of the store. The defaults keep commit latency in single-digit milliseconds.
#[derive(Clone)]
pub struct StoreConfig {
    /// Who moves the commit point (see [`Role`]).
    pub role: Role,
    /// Sign once this many transactions are waiting for a signature...
    pub sign_every: u64,
    /// ...or once this long has passed since the last signature, whichever comes first.
    pub sign_interval: Duration,
    /// Most transactions in one group commit.
    pub max_batch: usize,
    /// Submissions waiting for the writer; beyond this, `submit` answers `Busy`.
    pub queue_capacity: usize,
    /// A new segment is started once the active one reaches this size.
    pub segment_max_bytes: u64,
    /// How often derived files are fsync'd and the fork guard recorded.
    pub checkpoint_interval: Duration,
    pub kek: KekSource,
    /// Where the fork guard lives; default `<data dir>/fork-guard`.
    pub fork_guard_path: Option<PathBuf>,
    /// While writes are refused after a transient storage fault, how often the writer probes
    /// whether the failed operation works again.
    pub fault_probe_interval: Duration,
    /// Fails chosen write-path operations (tests); `None` in production.
    pub faults: Option<Arc<dyn FaultInjector>>,
    /// Receives metrics events from the writer.
    pub observer: Option<Arc<dyn StoreObserver>>,
    /// Key-use budget: the most private sections one data key seals (its rotation record
    /// included, at least 2) before the writer rotates to a new ledger secret (FORMAT.md §5.1).
    /// Default [`crypto::DEFAULT_KEY_ROTATION_EVERY`] (2^24), far below the 2^32 NIST allows
    /// for random nonces.
    pub key_rotation_every: u64,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("role", &self.role)
            .field("sign_every", &self.sign_every)
            .field("sign_interval", &self.sign_interval)
            .field("max_batch", &self.max_batch)
            .field("queue_capacity", &self.queue_capacity)
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("kek", &self.kek)
            .field("fork_guard_path", &self.fork_guard_path)
            .field("fault_probe_interval", &self.fault_probe_interval)
            .field("faults", &self.faults)
            .field("observer", &self.observer.as_ref().map(|_| "StoreObserver"))
            .field("key_rotation_every", &self.key_rotation_every)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            role: Role::Standalone,
            sign_every: writer::SIGN_EVERY,
            sign_interval: writer::SIGN_INTERVAL,
            max_batch: 8192,
            queue_capacity: 65_536,
            segment_max_bytes: 64 << 20,
            checkpoint_interval: Duration::from_secs(1),
            kek: KekSource::DataDir,
            fork_guard_path: None,
            fault_probe_interval: Duration::from_secs(1),
            faults: None,
            observer: None,
            key_rotation_every: crypto::DEFAULT_KEY_ROTATION_EVERY,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no ledger (no segment files)")]
    NotALedger(PathBuf),
    #[error("{0} already holds a ledger")]
    AlreadyExists(PathBuf),
    #[error("ledger is corrupt: {file} at offset {offset}, transaction {txid}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        txid: String,
        reason: String,
    },
    #[error(
        "the ledger ends at seqno {end}, but this node already signed seqno {signed} (fork guard {guard}); \
         the data looks restored from an older backup, and signing again would fork the ledger"
    )]
    RolledBack {
        guard: PathBuf,
        signed: u64,
        end: u64,
    },
    #[error(
        "the ledger's root at seqno {seqno} differs from the root this node signed there (fork guard {guard}); \
         refusing to open a forked ledger"
    )]
    Forked { guard: PathBuf, seqno: u64 },
    #[error("the ledger's content does not match the root signed at {txid}")]
    SignatureMismatch { txid: TxId },
    #[error("the index is ahead of the ledger (indexed through {indexed}, ledger ends at {end})")]
    IndexAhead { indexed: u64, end: u64 },
    #[error(transparent)]
    Keys(#[from] crypto::KeyError),
    #[error(transparent)]
    Guard(#[from] guard::GuardError),
    #[error(transparent)]
    Index(index::IndexError),
    /// A derived file (`index.redb`, `tree/frames.idx`, `tree/level-LL.hashes`) contradicts
    /// its checksums or the ledger: nothing was served from it. The ledger itself is not at
    /// fault; the file is rebuilt from the ledger when the ledger is next opened.
    #[error(
        "derived file {} is damaged: {reason}; the ledger itself is intact and the file is rebuilt from it at the next start",
        file.display()
    )]
    DerivedDamaged { file: PathBuf, reason: String },
    #[error("Merkle tree files: {0}")]
    Tree(String),
    #[error("transaction {txid} could not be decoded: {reason}")]
    Decode { txid: TxId, reason: String },
    #[error(
        "the ledger secret rotation in transaction {txid} ({file} at offset {offset}) is refused: {source}"
    )]
    KeyRotation {
        file: PathBuf,
        offset: u64,
        txid: TxId,
        source: crypto::RotationError,
    },
    #[error("the ledger has no certificate for node {0}")]
    UnknownNode(Hash32),
    #[error("the ledger stopped accepting writes: {0}")]
    Append(#[from] AppendError),
    #[error(
        "a replica cannot create a ledger: it receives its service's ledger (Ledger::create_replica)"
    )]
    FollowerCannotCreate,
    #[error("Ledger::create_replica needs a StoreConfig with Role::Replica")]
    ReplicaRoleRequired,
    /// `segment_max_bytes` beyond what the frame records' 40-bit offsets can address.
    #[error(
        "segment_max_bytes is {configured}, more than the {limit} bytes frame offsets can address"
    )]
    SegmentTooLarge { configured: u64, limit: u64 },
}

impl From<index::IndexError> for StoreError {
    fn from(e: index::IndexError) -> StoreError {
        match e {
            index::IndexError::Damaged { path, reason } => {
                StoreError::DerivedDamaged { file: path, reason }
            }
            other => StoreError::Index(other),
        }
    }
}

/// A derived file found damaged, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedDamage {
    pub file: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for DerivedDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Why a write was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the write queue is full; retry shortly")]
    Busy,
    #[error("the ledger is closed")]
    Closed,
    /// The write exceeds one of the store's limits (`limits`): nothing was written, and the
    /// same write will always be refused.
    #[error("the write is refused, nothing was written: {0}")]
    Limit(#[from] LimitError),
    /// Nothing was written.
    #[error("the write failed and was not recorded: {0}")]
    Failed(String),
    /// The storage refuses writes: nothing was written. With `fault.transient` the store
    /// retries by itself and writes resume once the condition clears (space returns, the
    /// filesystem is writable again); otherwise only reopening the ledger resumes them.
    #[error("the ledger cannot write now, nothing was written: {0}")]
    Unavailable(StorageFault),
    /// The transaction may be (or is) durable but is not committed now: it is committed when
    /// storage recovers or when the ledger is next opened, if it reached the disk.
    #[error("the write may be on disk but could not be committed now: {0}")]
    Indeterminate(String),
    /// This node is a follower: writes go to the primary.
    #[error("this node is not the primary; send writes to the primary")]
    NotPrimary,
    /// A follower refused what it was asked to append or commit; nothing was written.
    #[error("{0}")]
    Refused(FollowerRefusal),
    /// A governance write names a table only the store itself writes (the ledger secret
    /// rotations); nothing was written.
    #[error("table {0} is written by the ledger itself; nothing was written")]
    ReservedTable(String),
}

/// Why a follower's log refused a primary's transactions or a commit point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowerRefusal {
    #[error("only a follower takes encoded transactions or a commit point from outside")]
    NotFollower,
    #[error("transaction {got} is out of sequence: the next seqno here is {expected}")]
    OutOfSequence { expected: u64, got: TxId },
    #[error("transaction {got} goes back to an older view than {view}")]
    ViewRegressed { view: u64, got: TxId },
    #[error("transaction {txid} is malformed: {reason}")]
    Malformed { txid: TxId, reason: String },
    #[error("signature transaction {txid} signs a root that differs from this node's tree")]
    RootMismatch { txid: TxId },
    #[error(
        "signature transaction {txid} has no valid COSE root signature by the service key: {reason}"
    )]
    BadRootSignature { txid: TxId, reason: String },
    #[error("cannot commit through seqno {seqno}: only {durable} is durable here")]
    BeyondDurable { seqno: u64, durable: u64 },
    #[error("cannot cut the log back to seqno {seqno}: {committed} is committed")]
    BelowCommitted { seqno: u64, committed: u64 },
}

/// Called once, on the writer thread, when a submitted transaction is committed or has failed.
/// It must not block.
pub type Completion = Box<dyn FnOnce(Result<TxId, AppendError>) + Send>;

/// A key and its value in an application table.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// What a client may write. Signatures are the writer's alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRequest {
    Entry(ApplicationEntry),
    Governance(Vec<TableWrite>),
    /// Application-table writes of a user-defined function or endpoint, without a ledger entry.
    Kv(Vec<KvWrite>),
}

/// What a node signs with: its own key and the certificate the service issued for it (raw
/// root signatures, the JSON receipts' `signature`), and the service identity key every node
/// holds (COSE root signatures, from which COSE receipts are made; FORMAT.md §3.3).
pub struct NodeIdentity {
    pub signing_key: EcSigningKey,
    pub cert_pem: String,
    pub service_key: EcSigningKey,
}

/// What a new ledger records in its first transaction.
pub struct Genesis {
    pub ledger_id: String,
    pub service_cert_pem: String,
    /// Further governance writes of the first transaction (e.g. initial administrators).
    pub writes: Vec<TableWrite>,
}

/// The prefix of the governance tables consensus writes itself (a new view, a membership
/// change): every node encodes those transactions from the Raft entry, so no client may write
/// to them ([`Ledger::prepare`] refuses it with [`AppendError::ReservedTable`]).
pub const CONSENSUS_TABLES: &str = "public:cledger.raft.";

/// Status of a transaction id, as `/status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Committed,
    /// Sequenced and durable, not yet covered by a signature.
    Pending,
    /// No such seqno yet.
    Unknown,
    /// The seqno exists with a different view.
    Invalid,
}

/// A user entry read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub txid: TxId,
    pub entry: ApplicationEntry,
}

/// A receipt for a committed transaction, with the application claims it commits to (if the
/// entry was written with claims). Which API versions show the claims is the caller's choice.
#[derive(Debug, Clone)]
pub struct ReceiptBundle {
    pub txid: TxId,
    pub receipt: Receipt,
    pub application_claims: Option<Vec<ApplicationClaim>>,
    pub cose: CoseReceipt,
}

/// A signed state of the ledger: a committed signature transaction and the root it signs,
/// the tree of `txid.seqno()` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTreeHead {
    pub txid: TxId,
    pub root: Hash32,
    /// The service key's COSE root signature (absent before COSE signatures).
    pub cose_signature: Option<Vec<u8>>,
}

/// Two signed states and the RFC 9162 consistency proof (CCF hashing) between their trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consistency {
    pub from: SignedTreeHead,
    pub to: SignedTreeHead,
    pub proof: Vec<Hash32>,
}

/// Why no consistency proof is given between two transaction ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyRefusal {
    #[error("transaction {0} is not committed (or the ledger has not reached it)")]
    NotCommitted(TxId),
    #[error("transaction {0} is not a signature transaction")]
    NotASignature(TxId),
    #[error("transaction {asked} does not exist: its seqno holds transaction {stored}")]
    WrongView { asked: TxId, stored: TxId },
    #[error("from ({from}) is after to ({to})")]
    FromAfterTo { from: TxId, to: TxId },
}

/// The COSE receipt of a committed transaction (FORMAT.md §3.3), or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoseReceipt {
    /// A tagged COSE_Sign1: the signature's stored root signature with this transaction's
    /// inclusion proof in its unprotected header.
    Ready(Vec<u8>),
    /// The transaction is itself a signature: its root signature is the evidence, and CCF
    /// gives signature transactions no COSE receipt.
    SignatureTransaction,
    /// The signature covering the transaction was written before cledger signed roots with
    /// COSE (its JSON receipt verifies).
    NotSigned,
}

pub(crate) struct Published {
    pub durable: Option<TxId>,
    pub committed: Option<TxId>,
    /// Set when the store is poisoned (writes stopped until reopened).
    pub failure: Option<String>,
    /// The storage fault that makes the store refuse writes (degraded or poisoned).
    pub fault: Option<StorageFault>,
}

pub(crate) struct Shared {
    /// Read handles of every segment.
    pub segments: Segments,
    pub tree: TreeFiles,
    pub index: Index,
    /// Every data key version, by the seqno from which it applies; the commit secret.
    pub keys: KeyRing,
    pub published: Mutex<Published>,
    pub committed_changed: Condvar,
    /// Submissions queued and not yet taken by the writer.
    pub queued: AtomicUsize,
    /// Derived files that reads found damaged.
    pub integrity: Integrity,
    /// A replica's newest written transactions (see [`tail`]).
    pub tail: tail::WrittenTail,
}

/// Derived files found damaged by reads while the ledger is open. Each is recorded once: in
/// memory (for [`Ledger::derived_damage`], which `/readyz` reports), in the marker file
/// `derived-damaged` of the data directory (so that the next open rebuilds it even if the
/// damage no longer shows, e.g. it was only in the page cache), and to the observer (logs).
pub(crate) struct Integrity {
    marker: PathBuf,
    damaged: Mutex<Vec<DerivedDamage>>,
    observer: Option<Arc<dyn StoreObserver>>,
}

impl Integrity {
    fn record(&self, damage: &DerivedDamage) {
        let mut damaged = self.damaged.lock().expect("integrity lock");
        if damaged.iter().any(|d| d.file == damage.file) {
            return;
        }
        // Best effort: without the marker the next open still checks every derived file.
        let _ = append_marker(
            &self.marker,
            &damage.file,
            &format!(
                "found by a read while the ledger was open: {}",
                damage.reason
            ),
        );
        if let Some(observer) = &self.observer {
            observer.derived_damaged(damage);
        }
        damaged.push(damage.clone());
    }
}

/// The marker file of derived files to rebuild at the next open.
const DAMAGE_MARKER: &str = "derived-damaged";

/// Marks derived files of the ledger in `dir` for rebuilding at its next open (what
/// `cledger audit` does with the damage it finds: some, such as rows altered together with
/// the checksums of their pages, the open's own checks cannot see). `by` says who found it.
pub fn mark_for_rebuild(dir: &Path, damage: &[DerivedDamage], by: &str) -> Result<(), StoreError> {
    let marker = dir.join(DAMAGE_MARKER);
    for d in damage {
        append_marker(&marker, &d.file, &format!("found by {by}: {}", d.reason))
            .map_err(|e| StoreError::io(&marker, e))?;
    }
    Ok(())
}

/// Appends a line to the marker: the file, a tab, the reason.
fn append_marker(marker: &Path, file: &Path, reason: &str) -> std::io::Result<()> {
    use std::io::Write;
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(marker)?;
    writeln!(out, "{}\t{reason}", file.display())?;
    out.sync_data()
}

/// The derived files named in the marker (none if there is no marker).
fn read_marker(marker: &Path) -> Result<Vec<DerivedDamage>, StoreError> {
    let text = match fs::read(marker) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(marker, e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let (file, reason) = line.split_once('\t')?;
            Some(DerivedDamage {
                file: PathBuf::from(file),
                reason: format!("marked for rebuilding, {reason}"),
            })
        })
        .collect())
}

impl Shared {
    pub fn failure(&self) -> Option<String> {
        self.published.lock().expect("state lock").failure.clone()
    }

    /// Why writes are refused now, if they are.
    pub fn refusal(&self) -> Option<AppendError> {
        let p = self.published.lock().expect("state lock");
        match (&p.fault, &p.failure) {
            (Some(fault), _) => Some(AppendError::Unavailable(fault.clone())),
            (None, Some(reason)) => Some(AppendError::Failed(reason.clone())),
            (None, None) => None,
        }
    }
}

pub struct Ledger {
    shared: Arc<Shared>,
    role: Role,
    key_rotation_every: u64,
    queue: Mutex<Option<SyncSender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

const LEDGER_DIR: &str = "ledger";
const TREE_DIR: &str = "tree";
const INDEX_FILE: &str = "index.redb";
const SECRET_FILE: &str = "keys/ledger_secret";
const GUARD_FILE: &str = "fork-guard";

impl Ledger {
    /// Creates a new ledger in `dir` (which may exist but must not hold a ledger) and commits
    /// its genesis transaction: the service certificate, this node's certificate and the
    /// ledger id.
    pub fn create(
        dir: &Path,
        config: StoreConfig,
        node: NodeIdentity,
        genesis: Genesis,
    ) -> Result<Ledger, StoreError> {
        if config.role == Role::Replica {
            return Err(StoreError::FollowerCannotCreate);
        }
        limits::check_config(&config)?;
        let ledger_dir = dir.join(LEDGER_DIR);
        if ledger_dir.exists()
            && !segment::list_segments(&ledger_dir)
                .map_err(|e| StoreError::io(&ledger_dir, e))?
                .is_empty()
        {
            return Err(StoreError::AlreadyExists(dir.to_owned()));
        }
        fs::create_dir_all(&ledger_dir).map_err(|e| StoreError::io(&ledger_dir, e))?;
        let kek = crypto::load_kek(&config.kek, dir, true)?;
        let secret_path = dir.join(SECRET_FILE);
        if secret_path.exists() {
            return Err(StoreError::AlreadyExists(dir.to_owned()));
        }
        let secret = LedgerSecret::create(&secret_path, &kek)?;
        // The first segment exists (durably) before the writer starts; the writer reopens it.
        segment::ActiveSegment::create(&ledger_dir, 1)
            .map_err(|e| StoreError::io(&ledger_dir, e))?;
        let mut writes = vec![
            TableWrite {
                table: entry::tables::SERVICE.into(),
                key: "identity".into(),
                value: Some(genesis.service_cert_pem.clone().into_bytes()),
            },
            TableWrite {
                table: entry::tables::CONFIG.into(),
                key: LEDGER_ID_KEY.into(),
                value: Some(serde_json::to_vec(&genesis.ledger_id).expect("a string serializes")),
            },
            node_registration(&node),
        ];
        writes.extend(genesis.writes);
        let (ledger, _) = Self::start(dir, config, node, secret, Some(writes))?;
        Ok(ledger)
    }

    /// Creates an empty replica ledger in `dir` for a node joining a service: no genesis (the
    /// service's transactions arrive through [`Ledger::replicate`]), and the service's ledger
    /// `secret`, received when joining, stored under this node's key-encryption key.
    pub fn create_replica(
        dir: &Path,
        config: StoreConfig,
        node: NodeIdentity,
        secret: &[u8; 32],
    ) -> Result<Ledger, StoreError> {
        if config.role != Role::Replica {
            return Err(StoreError::ReplicaRoleRequired);
        }
        limits::check_config(&config)?;
        let ledger_dir = dir.join(LEDGER_DIR);
        let secret_path = dir.join(SECRET_FILE);
        if secret_path.exists()
            || (ledger_dir.exists()
                && !segment::list_segments(&ledger_dir)
                    .map_err(|e| StoreError::io(&ledger_dir, e))?
                    .is_empty())
        {
            return Err(StoreError::AlreadyExists(dir.to_owned()));
        }
        fs::create_dir_all(&ledger_dir).map_err(|e| StoreError::io(&ledger_dir, e))?;
        let kek = crypto::load_kek(&config.kek, dir, true)?;
        if let Some(parent) = secret_path.parent() {
            fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        }
        let secret = LedgerSecret::install(&secret_path, &kek, secret)?;
        segment::ActiveSegment::create(&ledger_dir, 1)
            .map_err(|e| StoreError::io(&ledger_dir, e))?;
        let (ledger, _) = Self::start(dir, config, node, secret, None)?;
        Ok(ledger)
    }

    /// Opens an existing ledger, recovering it (see [`RecoveryReport`]).
    pub fn open(
        dir: &Path,
        config: StoreConfig,
        node: NodeIdentity,
    ) -> Result<(Ledger, RecoveryReport), StoreError> {
        limits::check_config(&config)?;
        let kek = crypto::load_kek(&config.kek, dir, false)?;
        let secret = LedgerSecret::load(&dir.join(SECRET_FILE), &kek)?;
        Self::start(dir, config, node, secret, None)
    }

    /// Rebuilds every derived file of the ledger in `dir` (`index.redb` and the tree files)
    /// from the segments, without opening the ledger for writing: nothing is signed or
    /// appended, though, as on every open, an unsigned torn tail is cut. The ledger must not
    /// be open elsewhere (the server stopped). A damaged segment stops it as it stops an open.
    pub fn rebuild_derived(dir: &Path, config: &StoreConfig) -> Result<RecoveryReport, StoreError> {
        let ledger_dir = dir.join(LEDGER_DIR);
        if segment::list_segments(&ledger_dir)
            .map_err(|e| StoreError::io(&ledger_dir, e))?
            .is_empty()
        {
            return Err(StoreError::NotALedger(dir.to_owned()));
        }
        let keys = KeyRing::new(ledger_secret(dir, &config.kek)?);
        let guard_path = config
            .fork_guard_path
            .clone()
            .unwrap_or_else(|| dir.join(GUARD_FILE));
        let guard = ForkGuard::load(&guard_path)?;
        let index_path = dir.join(INDEX_FILE);
        let tree_dir = dir.join(TREE_DIR);
        remove_if_exists(&index_path)?;
        let index = Index::open(&index_path)?;
        let asked = DerivedDamage {
            file: tree_dir.clone(),
            reason: "a rebuild was asked for".into(),
        };
        let (recovered, tree_files) = recovery::recover(
            &ledger_dir,
            &keys,
            &index,
            &tree_dir,
            &guard,
            Some(asked),
            commit_rule(config.role),
        )?;
        drop(tree_files);
        drop(index);
        remove_if_exists(&dir.join(DAMAGE_MARKER))?;
        let mut report = recovered.report;
        report.index_rebuilt = true;
        report.rebuilt.insert(
            0,
            DerivedDamage {
                file: index_path,
                reason: "a rebuild was asked for".into(),
            },
        );
        Ok(report)
    }

    fn start(
        dir: &Path,
        config: StoreConfig,
        node: NodeIdentity,
        secret: LedgerSecret,
        genesis: Option<Vec<TableWrite>>,
    ) -> Result<(Ledger, RecoveryReport), StoreError> {
        let node_id = node.signing_key.node_id();
        let registration = node_registration(&node);
        let NodeIdentity {
            signing_key,
            cert_pem: node_cert_pem,
            service_key,
        } = node;
        let ledger_dir = dir.join(LEDGER_DIR);
        let tree_dir = dir.join(TREE_DIR);
        let index_path = dir.join(INDEX_FILE);
        let guard_path = config
            .fork_guard_path
            .clone()
            .unwrap_or_else(|| dir.join(GUARD_FILE));
        let guard = ForkGuard::load(&guard_path)?;
        // Recovery adds the versions recorded in the ledger to the ring as it scans.
        let keys = KeyRing::new(secret);
        // Damage that reads found while the ledger was last open: rebuild what it names.
        let marker = dir.join(DAMAGE_MARKER);
        let mut rebuilt = Vec::new();
        let mut rebuild_tree = None;
        for damage in read_marker(&marker)? {
            if damage.file == index_path
                && !rebuilt.iter().any(|d: &DerivedDamage| d.file == index_path)
            {
                remove_if_exists(&index_path)?;
                rebuilt.push(damage);
            } else if damage.file.starts_with(&tree_dir) && rebuild_tree.is_none() {
                rebuild_tree = Some(damage);
            }
        }
        let mut index_rebuilt = !rebuilt.is_empty();
        if !index_rebuilt && genesis.is_none() && !index_path.exists() {
            // A missing index is built from scratch, like one that had to be discarded.
            index_rebuilt = true;
            rebuilt.push(DerivedDamage {
                file: index_path.clone(),
                reason: "it is missing".into(),
            });
        }
        let (index, (recovered, tree_files)) = loop {
            let index = match Index::open(&index_path) {
                Ok(index) => index,
                Err(e) if !index_rebuilt => {
                    // Derived data in an unknown state: start it again from the ledger.
                    rebuilt.push(DerivedDamage {
                        file: index_path.clone(),
                        reason: index_reason(e),
                    });
                    remove_if_exists(&index_path)?;
                    index_rebuilt = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let result = recovery::recover(
                &ledger_dir,
                &keys,
                &index,
                &tree_dir,
                &guard,
                rebuild_tree.clone(),
                commit_rule(config.role),
            );
            let reason = match result {
                Err(StoreError::IndexAhead { indexed, end }) if !index_rebuilt => format!(
                    "it is ahead of the ledger (indexed through {indexed}, the ledger ends at {end})"
                ),
                Err(StoreError::DerivedDamaged { file, reason })
                    if file == index_path && !index_rebuilt =>
                {
                    reason
                }
                result => break (index, result?),
            };
            drop(index);
            rebuilt.push(DerivedDamage {
                file: index_path.clone(),
                reason,
            });
            remove_if_exists(&index_path)?;
            index_rebuilt = true;
        };
        let mut report = recovered.report;
        report.index_rebuilt |= index_rebuilt;
        rebuilt.append(&mut report.rebuilt);
        report.rebuilt = rebuilt;
        // Everything the marker named has been rebuilt.
        remove_if_exists(&marker)?;
        if let Some((_, _, bytes)) = &report.truncated_tail {
            keys.charge_torn_tail(*bytes);
        }
        if genesis.is_none() && recovered.last.is_none() && config.role != Role::Replica {
            // `create` was interrupted before its genesis transaction was durable (recovery may
            // have removed a half-created first segment): there is no ledger to open, and
            // writing into it would make one without a service identity.
            return Err(StoreError::NotALedger(dir.to_owned()));
        }

        let (last_first, last_path, last_layout) = recovered.active.clone();
        let active = segment::ActiveSegment::reopen(
            &last_path,
            last_first,
            recovered.active_len,
            last_layout,
        )
        .map_err(|e| StoreError::io(&last_path, e))?;
        let committed = recovered.committed.map(|(t, _)| t);
        let shared = Arc::new(Shared {
            segments: recovered.segments,
            tree: tree_files,
            index,
            keys,
            published: Mutex::new(Published {
                durable: recovered.last,
                committed,
                failure: None,
                fault: None,
            }),
            committed_changed: Condvar::new(),
            queued: AtomicUsize::new(0),
            integrity: Integrity {
                marker,
                damaged: Mutex::new(Vec::new()),
                observer: config.observer.clone(),
            },
            tail: tail::WrittenTail::default(),
        });
        // The sequencer continues from the last durable signature, committed or not.
        let last_signature = recovered
            .last_signature
            .as_ref()
            .map(|(t, r)| guard::SignedPoint {
                seqno: t.seqno(),
                root: r.root,
            });
        // The issuer of COSE root signatures is the ledger id: a new ledger's genesis names
        // it, an existing one recorded it.
        let issuer = match &genesis {
            Some(writes) => writes
                .iter()
                .find(|w| w.table == entry::tables::CONFIG && w.key == LEDGER_ID_KEY)
                .and_then(|w| recorded_ledger_id(w.value.as_deref())),
            None => recorded_ledger_id(
                shared
                    .index
                    .governance(entry::tables::CONFIG, LEDGER_ID_KEY)?
                    .as_deref(),
            ),
        };
        let sequencer = sequencer::Sequencer::new(
            recovered.last,
            recovered.tree,
            signing_key,
            node_id,
            ServiceSigner::new(service_key),
            issuer,
            last_signature,
            config.sign_every,
            config.sign_interval,
            shared.keys.sealing(config.key_rotation_every),
        );
        let writer = Writer::new(
            shared.clone(),
            config.clone(),
            WriterStart {
                log: log::SegmentLog::new(ledger_dir.clone(), active, config.segment_max_bytes),
                ledger_dir,
                sequencer,
                guard,
                committed: recovered.committed,
                uncommitted_signatures: recovered.uncommitted_signatures,
                uncommitted_ops: recovered.uncommitted_ops,
            },
        );
        let (queue, receiver): (_, Receiver<Command>) = mpsc::sync_channel(config.queue_capacity);
        let handle = std::thread::Builder::new()
            .name("cledger-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::io(dir, e))?;
        let ledger = Ledger {
            role: config.role,
            key_rotation_every: config.key_rotation_every,
            shared,
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(handle)),
        };

        // The genesis transaction, or registering a node key this ledger has not seen yet (a
        // follower's key is registered by its primary).
        let first_writes = match genesis {
            Some(writes) => Some(writes),
            None if config.role == Role::Replica => None,
            None if ledger.node_certificate(&node_id)?.as_deref()
                != Some(node_cert_pem.as_str()) =>
            {
                Some(vec![registration])
            }
            None => None,
        };
        if let Some(writes) = first_writes {
            ledger.append(WriteRequest::Governance(writes))?;
        }
        Ok((ledger, report))
    }

    /// Queues a write; `done` is called when it is committed or has failed. A write beyond the
    /// store's limits is refused here with [`AppendError::Limit`] (`done` is not called).
    pub fn submit(&self, request: WriteRequest, done: Completion) -> Result<(), AppendError> {
        let PreparedWrite {
            body,
            claims_digest,
        } = Self::prepare(request)?;
        if self.role == Role::Replica {
            return Err(AppendError::NotPrimary);
        }
        if let Some(refused) = self.shared.refusal() {
            return Err(refused);
        }
        let queue = self.queue.lock().expect("queue lock");
        let queue = queue.as_ref().ok_or(AppendError::Closed)?;
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        queue
            .try_send(Command::Submit(Submission {
                body,
                claims_digest,
                done,
                submitted: Instant::now(),
            }))
            .map_err(|e| {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => AppendError::Busy,
                    TrySendError::Disconnected(_) => AppendError::Closed,
                }
            })
    }

    /// Checks a client's write against the store's limits and the tables only the store
    /// writes, and computes its claims digest: what [`Ledger::submit`] does before queueing,
    /// and what a replica that leads does before proposing the write to consensus
    /// ([`ReplicaOp::Write`]).
    pub fn prepare(request: WriteRequest) -> Result<PreparedWrite, AppendError> {
        let body = match request {
            WriteRequest::Entry(e) => TxBody::Application(e),
            WriteRequest::Governance(writes) => {
                if let Some(w) = writes.iter().find(|w| {
                    w.table == crypto::LEDGER_SECRETS || w.table.starts_with(CONSENSUS_TABLES)
                }) {
                    return Err(AppendError::ReservedTable(w.table.clone()));
                }
                TxBody::Governance(writes)
            }
            WriteRequest::Kv(writes) => TxBody::Kv(writes),
        };
        // Before anything is hashed or queued: an over-size entry would otherwise be written
        // and then refused by the next open's scan as damage.
        let has_claims = matches!(&body, TxBody::Application(e) if e.claims_key.is_some());
        limits::check_body(&body, has_claims)?;
        let claims_digest = match &body {
            TxBody::Application(ApplicationEntry {
                collection_id,
                contents,
                claims_key: Some(key),
                ..
            }) => claims::ledger_entry_claims_digest(collection_id, contents, key),
            _ => Hash32::ZERO,
        };
        Ok(PreparedWrite {
            body,
            claims_digest,
        })
    }

    /// A replica's append ([`Role::Replica`]): `ops` at the seqnos consensus gave them, each
    /// the next one, made durable here (appends queued together share one write and one
    /// fsync); `done` is called on the writer thread with the newest durable txid, or with
    /// why nothing of them was written (a refused batch is refused whole). Returns at once;
    /// an error means `done` was not called. Nothing appended is visible to readers until
    /// [`Ledger::commit_through`] commits it.
    ///
    /// `written`, if given, is called on the writer thread once the batch holding `ops` is
    /// written to its segment, before its fsync: from then on [`Ledger::written_transactions`]
    /// holds them (a leader replicates them while it makes them durable).
    pub fn replicate(
        &self,
        ops: Vec<(TxId, ReplicaOp)>,
        written: Option<ReplicaWritten>,
        done: ReplicaDone,
    ) -> Result<(), AppendError> {
        if self.role != Role::Replica {
            return Err(AppendError::Refused(FollowerRefusal::NotFollower));
        }
        let queue = self.queue.lock().expect("queue lock");
        let queue = queue.as_ref().ok_or(AppendError::Closed)?;
        queue
            .send(Command::Control(Control::Replicate { ops, written, done }))
            .map_err(|_| AppendError::Closed)
    }

    /// A replica's transactions `from..=to` as encoded, from those written most recently
    /// (durable or not yet: see [`Ledger::replicate`]), if it still holds every one of them
    /// in memory; otherwise `None`, and [`Ledger::durable_transactions`] reads them once they
    /// are durable. Nothing here is committed until consensus says so.
    pub fn written_transactions(&self, from: u64, to: u64) -> Option<Vec<(TxId, Vec<u8>)>> {
        self.shared.tail.get(from.max(1), to)
    }

    /// A replica's append of a primary's encoded transactions, byte for byte, made durable
    /// here (one write, one fsync). Each must be the next seqno; they are checked (decoding,
    /// commit evidence, signatures against this node's tree) before anything is written.
    /// Returns the newest durable txid. Nothing appended is visible to readers until
    /// [`Ledger::commit_through`] commits it.
    pub fn append_encoded(&self, txs: Vec<(TxId, Vec<u8>)>) -> Result<Option<TxId>, AppendError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let ops = txs
            .into_iter()
            .map(|(txid, bytes)| (txid, ReplicaOp::Encoded(bytes)))
            .collect();
        self.replicate(
            ops,
            None,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        )?;
        answer.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// A follower's commit point: commits every durable transaction through the last
    /// signature at or before `seqno` (a transaction is committed only once a signature covers
    /// it), applying their index and governance changes. Returns the committed txid.
    pub fn commit_through(&self, seqno: u64) -> Result<Option<TxId>, AppendError> {
        self.control(|reply| Control::CommitThrough { seqno, reply })
    }

    /// A follower's rollback: cuts off every durable transaction after `seqno` (a suffix a
    /// former primary did not get committed), from the segments, the tree files and the key
    /// ring, so that different transactions can take those seqnos. Refused below the commit
    /// point. Returns the newest durable txid.
    pub fn truncate_after(&self, seqno: u64) -> Result<Option<TxId>, AppendError> {
        self.control(|reply| Control::TruncateAfter { seqno, reply })
    }

    fn control<T>(&self, make: impl FnOnce(writer::Reply<T>) -> Control) -> Result<T, AppendError> {
        if self.role != Role::Replica {
            return Err(AppendError::Refused(FollowerRefusal::NotFollower));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let queue = self.queue.lock().expect("queue lock");
            let queue = queue.as_ref().ok_or(AppendError::Closed)?;
            queue
                .send(Command::Control(make(reply)))
                .map_err(|_| AppendError::Closed)?;
        }
        answer.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// The transaction written with idempotency key digest `key_digest`, and when (Unix
    /// seconds). It may not be committed yet: callers wait for it as for their own write.
    pub fn idempotent_write(&self, key_digest: &Hash32) -> Result<Option<(TxId, u64)>, StoreError> {
        self.noted(
            self.shared
                .index
                .idempotent_write(&key_digest.0)
                .map_err(StoreError::from),
        )
    }

    /// Submissions waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// `Ok` when writes are accepted; otherwise what `submit` would answer now:
    /// [`AppendError::Unavailable`] (degraded by a storage fault, or poisoned by one),
    /// [`AppendError::Failed`] (stopped for another reason) or [`AppendError::Closed`].
    pub fn write_health(&self) -> Result<(), AppendError> {
        if let Some(refused) = self.shared.refusal() {
            return Err(refused);
        }
        if self.queue.lock().expect("queue lock").is_none() {
            return Err(AppendError::Closed);
        }
        Ok(())
    }

    /// The storage fault that makes the store refuse writes now, if any.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        self.shared
            .published
            .lock()
            .expect("state lock")
            .fault
            .clone()
    }

    /// Writes and waits until committed (the [`LedgerHandle`] way, for callers that hold the
    /// concrete type).
    pub fn append(&self, request: WriteRequest) -> Result<TxId, AppendError> {
        LedgerHandle::append(self, request)
    }

    /// Stops accepting writes, commits what was submitted, checkpoints, and waits for the writer.
    pub fn close(&self) {
        self.queue.lock().expect("queue lock").take();
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }

    /// The first seqno of each data key version, version 0 first (FORMAT.md §5.1): version
    /// `v` seals the private sections of seqnos from its first up to the next version's.
    pub fn key_versions(&self) -> Vec<u64> {
        self.shared.keys.first_seqnos()
    }

    /// The last committed transaction.
    pub fn committed(&self) -> Option<TxId> {
        self.shared.published.lock().expect("state lock").committed
    }

    /// Why the store stopped accepting writes until it is reopened, if it did (a transient
    /// storage fault is not a failure: see [`Ledger::write_health`]).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// The newest durable transaction (committed or not).
    pub fn durable(&self) -> Option<TxId> {
        self.shared.published.lock().expect("state lock").durable
    }

    /// The durable transactions with seqnos `from..=to` (clamped to the durable end), as
    /// encoded in the ledger, committed or not: what a replica that leads sends to the others.
    pub fn durable_transactions(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<(TxId, Vec<u8>)>, StoreError> {
        let end = self.durable().map_or(0, TxId::seqno).min(to);
        (from.max(1)..=end)
            .map(|seqno| self.noted(self.stored(seqno)))
            .collect()
    }

    /// Whether the data key's use budget calls for a rotation within the next `ahead`
    /// transactions: a replica that leads then proposes [`ReplicaOp::Rotation`] (a primary
    /// that sequences its own writes rotates by itself).
    pub fn rotation_due_within(&self, ahead: u64) -> bool {
        let next = self.durable().map_or(1, |t| t.seqno() + 1);
        self.shared
            .keys
            .sealing(self.key_rotation_every)
            .rotation_due(next + ahead)
    }

    /// Blocks until `txid`'s seqno is committed or `timeout` passes; returns the status then.
    pub fn wait_committed(&self, txid: TxId, timeout: Duration) -> TxStatus {
        let deadline = Instant::now() + timeout;
        let mut p = self.shared.published.lock().expect("state lock");
        while p.committed.is_none_or(|c| c.seqno() < txid.seqno()) && p.failure.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            p = self
                .shared
                .committed_changed
                .wait_timeout(p, left)
                .expect("state lock")
                .0;
        }
        drop(p);
        self.status(txid)
    }

    /// The status of `txid`; a committed transaction that cannot be read says
    /// [`TxStatus::Pending`] (see [`Ledger::try_status`] for the reason).
    pub fn status(&self, txid: TxId) -> TxStatus {
        self.try_status(txid).unwrap_or(TxStatus::Pending)
    }

    /// The status of `txid`, or why the transaction at its seqno, which is committed, cannot
    /// be read to tell its view (e.g. [`StoreError::DerivedDamaged`]).
    pub fn try_status(&self, txid: TxId) -> Result<TxStatus, StoreError> {
        let (durable, committed) = {
            let p = self.shared.published.lock().expect("state lock");
            (p.durable, p.committed)
        };
        let seqno = txid.seqno();
        if durable.is_none_or(|d| seqno > d.seqno()) {
            return Ok(TxStatus::Unknown);
        }
        let is_committed = committed.is_some_and(|c| seqno <= c.seqno());
        match self.noted(self.stored(seqno)) {
            Ok((stored, _)) if stored == txid => Ok(if is_committed {
                TxStatus::Committed
            } else {
                TxStatus::Pending
            }),
            Ok(_) => Ok(TxStatus::Invalid),
            Err(e) if is_committed => Err(e),
            // Durable but not recorded yet: the writer publishes only after writing the
            // records, so this is a transaction of the current batch.
            Err(_) => Ok(TxStatus::Pending),
        }
    }

    fn transactions(&self) -> Transactions<'_> {
        Transactions {
            tree: &self.shared.tree,
            segments: &self.shared.segments,
        }
    }

    /// Records damage to a derived file that `result` reports (see [`Ledger::derived_damage`]).
    fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::DerivedDamaged { file, reason }) = &result {
            self.shared.integrity.record(&DerivedDamage {
                file: file.clone(),
                reason: reason.clone(),
            });
        }
        result
    }

    /// Derived files that reads found damaged since the ledger was opened. Nothing is served
    /// from them; they are rebuilt from the ledger at the next open.
    pub fn derived_damage(&self) -> Vec<DerivedDamage> {
        self.shared
            .integrity
            .damaged
            .lock()
            .expect("integrity lock")
            .clone()
    }

    /// The txid and stored bytes of the transaction at `seqno` (which must be durable).
    /// Governance and signature transactions are checked to be the transaction of `seqno`
    /// (their commit evidence is bound to it); application entries are bound to it by their
    /// sealed section, checked when they are decrypted.
    fn stored(&self, seqno: u64) -> Result<(TxId, Vec<u8>), StoreError> {
        self.stored_at(seqno, self.transactions().record(seqno)?)
    }

    /// As [`Ledger::stored`], with the frame record of `seqno` already read.
    fn stored_at(&self, seqno: u64, record: FrameRecord) -> Result<(TxId, Vec<u8>), StoreError> {
        let (txid, bytes) = self.transactions().read_at(seqno, record)?;
        if bytes.get(1) != Some(&(entry::TxKind::Application as u8)) {
            self.check_binding(txid, &bytes)?;
        }
        Ok((txid, bytes))
    }

    /// The frame read for `txid` holds the commit evidence digest of `txid`; otherwise its
    /// frame record pointed at another transaction's frame.
    fn check_binding(&self, txid: TxId, bytes: &[u8]) -> Result<(), StoreError> {
        let view = EntryView::parse(bytes, txid.seqno()).map_err(|e| StoreError::Decode {
            txid,
            reason: e.to_string(),
        })?;
        if view.commit_evidence_digest == self.shared.keys.commit_secret().evidence(txid).digest() {
            return Ok(());
        }
        Err(StoreError::DerivedDamaged {
            file: self.shared.tree.records_path(),
            reason: format!(
                "the record of seqno {} points at a frame that is not the transaction {txid} (its commit evidence differs)",
                txid.seqno()
            ),
        })
    }

    /// The stored bytes of committed transaction `txid` (what its write-set digest covers);
    /// None if it is not committed, or its seqno holds a transaction of another view.
    pub fn transaction_bytes(&self, txid: TxId) -> Result<Option<Vec<u8>>, StoreError> {
        self.noted(self.committed_bytes(txid))
    }

    fn committed_bytes(&self, txid: TxId) -> Result<Option<Vec<u8>>, StoreError> {
        if self.committed().is_none_or(|c| txid.seqno() > c.seqno()) {
            return Ok(None);
        }
        let (stored, bytes) = self.stored(txid.seqno())?;
        Ok((stored == txid).then_some(bytes))
    }

    fn decode_entry(
        &self,
        txid: TxId,
        bytes: &[u8],
    ) -> Result<Option<ApplicationEntry>, StoreError> {
        let decode = |reason: String| StoreError::Decode { txid, reason };
        let view = EntryView::parse(bytes, txid.seqno()).map_err(|e| decode(e.to_string()))?;
        if view.kind != entry::TxKind::Application {
            return Ok(None);
        }
        match view.application(&*self.shared.keys.opener(txid.seqno())) {
            Ok(entry) => Ok(Some(entry)),
            Err(e) => {
                // The sealed section is bound to its seqno: a frame of another transaction
                // fails to open here. Tell that apart from an entry damaged in the ledger.
                self.check_binding(txid, bytes)?;
                Err(decode(e.to_string()))
            }
        }
    }

    /// The user entry written by committed transaction `txid`, if it wrote one.
    pub fn entry(&self, txid: TxId) -> Result<Option<EntryRecord>, StoreError> {
        self.noted((|| {
            let Some(bytes) = self.committed_bytes(txid)? else {
                return Ok(None);
            };
            Ok(self
                .decode_entry(txid, &bytes)?
                .map(|entry| EntryRecord { txid, entry }))
        })())
    }

    /// The entry at `seqno`, found by `listing` (which names the derived file that listed it
    /// and what it claims about it). An entry that is not what the listing claims is
    /// [`StoreError::DerivedDamaged`] naming that file: a list never shows a wrong entry.
    fn listed_entry(
        &self,
        seqno: u64,
        listing: &Listing<'_>,
        records: &mut RecordCursor<'_>,
    ) -> Result<EntryRecord, StoreError> {
        let damaged = |reason: String| StoreError::DerivedDamaged {
            file: listing.source.clone(),
            reason,
        };
        if seqno < listing.from || seqno > listing.to {
            return Err(damaged(format!(
                "it lists seqno {seqno} in {}, outside the range {}..={} asked for",
                listing.what(),
                listing.from,
                listing.to
            )));
        }
        let (txid, bytes) = self.stored_at(seqno, records.get(seqno)?)?;
        let entry = self.decode_entry(txid, &bytes)?.ok_or_else(|| {
            damaged(format!(
                "it lists seqno {seqno} in {}, but that transaction is not an entry",
                listing.what()
            ))
        })?;
        if entry.collection_id != listing.collection
            || listing
                .tag
                .is_some_and(|t| !entry.tags.iter().any(|e| e == t))
        {
            return Err(damaged(format!(
                "it lists seqno {seqno} in {}, but that entry is in collection {:?} with tags {:?}",
                listing.what(),
                entry.collection_id,
                entry.tags
            )));
        }
        Ok(EntryRecord { txid, entry })
    }

    /// Committed entries of `collection` (and `tag`) with seqnos in `from..=to`, ascending, at
    /// most `limit`.
    pub fn entries(
        &self,
        collection: &str,
        tag: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        self.noted((|| {
            let to = to.min(self.committed().map_or(0, TxId::seqno));
            let (seqnos, source) = if collection == entry::DEFAULT_COLLECTION && tag.is_none() {
                let seqnos = self.default_collection_entries(from, to, limit, false)?;
                (seqnos, self.shared.tree.records_path())
            } else {
                let seqnos = self
                    .shared
                    .index
                    .entries(collection, tag, from, to, limit)?;
                (seqnos, self.shared.index.path().to_owned())
            };
            let listing = Listing {
                source,
                collection,
                tag,
                from,
                to,
            };
            if seqnos.windows(2).any(|w| w[0] >= w[1]) || seqnos.len() > limit {
                return Err(StoreError::DerivedDamaged {
                    reason: format!("its list of {} is out of order", listing.what()),
                    file: listing.source,
                });
            }
            let mut records = RecordCursor::new(&self.shared.tree);
            seqnos
                .into_iter()
                .map(|s| self.listed_entry(s, &listing, &mut records))
                .collect()
        })())
    }

    /// Seqnos of default-collection entries in `from..=to` (ascending, or descending from `to`
    /// when `newest_first`), at most `limit`, found by reading the frame records in chunks.
    fn default_collection_entries(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<u64>, StoreError> {
        const CHUNK: u64 = 8192;
        let from = from.max(1);
        let to = to.min(self.shared.tree.records_written().saturating_sub(1));
        let mut out = Vec::new();
        if from > to || limit == 0 {
            return Ok(out);
        }
        let mut window = if newest_first {
            (to.saturating_sub(CHUNK - 1).max(from), to)
        } else {
            (from, to.min(from + CHUNK - 1))
        };
        loop {
            let (lo, hi) = window;
            let records = self.shared.tree.records(lo, hi - lo + 1)?;
            let hits = records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.class == EntryClass::DefaultCollectionEntry)
                .map(|(i, _)| lo + i as u64);
            if newest_first {
                out.extend(hits.rev().take(limit - out.len()));
                if out.len() == limit || lo == from {
                    return Ok(out);
                }
                window = ((lo - 1).saturating_sub(CHUNK - 1).max(from), lo - 1);
            } else {
                out.extend(hits.take(limit - out.len()));
                if out.len() == limit || hi == to {
                    return Ok(out);
                }
                window = (hi + 1, to.min(hi + CHUNK));
            }
        }
    }

    /// The newest committed entry of `collection`.
    pub fn latest_entry(&self, collection: &str) -> Result<Option<EntryRecord>, StoreError> {
        self.noted((|| {
            let to = self.committed().map_or(0, TxId::seqno);
            let (latest, source) = if collection == entry::DEFAULT_COLLECTION {
                let known = &self.shared.index.latest_default;
                let latest = match known.get() {
                    Some(0) => None,
                    Some(seqno) if seqno <= to => Some(seqno),
                    // Applied but not yet published as committed: the answer is before it.
                    Some(_) => self.default_collection_entries(1, to, 1, true)?.pop(),
                    None => {
                        let found = self.default_collection_entries(1, to, 1, true)?.pop();
                        known.scanned(found);
                        found
                    }
                };
                (latest, self.shared.tree.records_path())
            } else {
                let latest = self.shared.index.latest_entry(collection, to)?;
                (latest, self.shared.index.path().to_owned())
            };
            let listing = Listing {
                source,
                collection,
                tag: None,
                from: 1,
                to,
            };
            let mut records = RecordCursor::new(&self.shared.tree);
            latest
                .map(|s| self.listed_entry(s, &listing, &mut records))
                .transpose()
        })())
    }

    /// Collections with their entry counts (committed or about to be).
    pub fn collections(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.noted(self.shared.index.collections().map_err(StoreError::from))
    }

    pub fn tags(&self, collection: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.noted(self.shared.index.tags(collection).map_err(StoreError::from))
    }

    /// Whether `tag` is already used in `collection`.
    pub fn has_tag(&self, collection: &str, tag: &str) -> Result<bool, StoreError> {
        self.noted(
            self.shared
                .index
                .has_tag(collection, tag)
                .map_err(StoreError::from),
        )
    }

    pub fn governance(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.noted(
            self.shared
                .index
                .governance(table, key)
                .map_err(StoreError::from),
        )
    }

    pub fn governance_table(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.noted(
            self.shared
                .index
                .governance_table(table)
                .map_err(StoreError::from),
        )
    }

    /// The committed value of `key` in application table `table`. The index says which
    /// transaction last set it; the value is read from that transaction's sealed write set.
    pub fn kv_get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.noted((|| match self.shared.index.kv_seqno(table, key)? {
            Some(seqno) => self.kv_value_at(seqno, table, key).map(Some),
            None => Ok(None),
        })())
    }

    /// Up to `limit` committed (key, value) pairs of application table `table` with keys after
    /// `after` (from the first when `None`), in ascending key order.
    pub fn kv_scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, StoreError> {
        self.noted((|| {
            let keys = self.shared.index.kv_keys(table, after, limit)?;
            keys.into_iter()
                .map(|(key, seqno)| {
                    let value = self.kv_value_at(seqno, table, &key)?;
                    Ok((key, value))
                })
                .collect()
        })())
    }

    /// The value transaction `seqno` wrote to (`table`, `key`), which the index says it set.
    fn kv_value_at(&self, seqno: u64, table: &str, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (txid, bytes) = self.stored(seqno)?;
        let decode = |reason: String| StoreError::Decode { txid, reason };
        let view = EntryView::parse(&bytes, seqno).map_err(|e| decode(e.to_string()))?;
        let opener = self.shared.keys.opener(seqno);
        let writes = match view.kind {
            entry::TxKind::Application => view.application(&*opener).map(|e| e.kv_writes),
            entry::TxKind::Kv => view.kv_writes(&*opener),
            _ => Ok(Vec::new()),
        };
        let writes = match writes {
            Ok(w) => w,
            Err(e) => {
                self.check_binding(txid, &bytes)?;
                return Err(decode(e.to_string()));
            }
        };
        // Sorted by (table, key): the encoding refuses any other order.
        match writes.binary_search_by(|w| (w.table.as_str(), w.key.as_slice()).cmp(&(table, key))) {
            Ok(i) if writes[i].value.is_some() => Ok(writes[i].value.clone().unwrap_or_default()),
            _ => Err(StoreError::DerivedDamaged {
                file: self.shared.index.path().to_owned(),
                reason: format!(
                    "the index says transaction {txid} set key {} of table {table}, but its write set does not",
                    hex::encode(key)
                ),
            }),
        }
    }

    /// The service certificate recorded in the genesis transaction.
    pub fn service_certificate(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .governance(entry::tables::SERVICE, "identity")?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    /// The certificate of node `node_id`, as recorded in the ledger.
    pub fn node_certificate(&self, node_id: &Hash32) -> Result<Option<String>, StoreError> {
        Ok(self
            .governance(entry::tables::NODES, &node_id.to_hex())?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    /// The receipt of committed transaction `txid`, anchored at the first signature after it
    /// (so a transaction's receipt never changes). `None` if `txid` is not committed, or is the
    /// newest signature transaction, which no signature covers yet. A receipt is served only
    /// if its path leads to the signed root: a stored tree level that makes it fail is
    /// [`StoreError::DerivedDamaged`].
    pub fn receipt(&self, txid: TxId) -> Result<Option<ReceiptBundle>, StoreError> {
        self.noted(self.build_receipt(txid))
    }

    fn build_receipt(&self, txid: TxId) -> Result<Option<ReceiptBundle>, StoreError> {
        let Some(bytes) = self.committed_bytes(txid)? else {
            return Ok(None);
        };
        let decode = |reason: String| StoreError::Decode { txid, reason };
        let view = EntryView::parse(&bytes, txid.seqno()).map_err(|e| decode(e.to_string()))?;
        let evidence = self.shared.keys.commit_secret().evidence(txid);
        if evidence.digest() != view.commit_evidence_digest {
            return Err(decode(
                "stored commit evidence digest does not match the ledger secret".into(),
            ));
        }
        let Some(sig_seqno) = self.shared.index.signature_after(txid.seqno())? else {
            // Every committed transaction is followed by a signature, except the newest
            // signature itself: its receipt exists once the next signature does.
            if view.kind == entry::TxKind::Signature {
                return Ok(None);
            }
            return Err(StoreError::DerivedDamaged {
                file: self.shared.index.path().to_owned(),
                reason: format!("no signature after committed transaction {txid} is indexed"),
            });
        };
        let (sig_txid, sig_bytes) = self.stored(sig_seqno)?;
        let signature = EntryView::parse(&sig_bytes, sig_seqno)
            .and_then(|v| v.signature())
            .map_err(|_| StoreError::DerivedDamaged {
                file: self.shared.index.path().to_owned(),
                reason: format!("it lists seqno {sig_seqno} as a signature, which it is not"),
            })?;
        let node_cert_pem = self
            .node_certificate(&signature.node_id)?
            .ok_or(StoreError::UnknownNode(signature.node_id))?;
        // Decrypting the entry checks it is intact (and bound to its seqno) first.
        let application_claims = match self.decode_entry(txid, &bytes)? {
            Some(ApplicationEntry {
                collection_id,
                contents,
                claims_key: Some(key),
                ..
            }) => Some(vec![claims::ledger_entry_claim(
                &collection_id,
                &contents,
                &key,
            )]),
            _ => None,
        };
        let transactions = self.transactions();
        let nodes = TreeNodes::new(&self.shared.tree, &transactions);
        let path = merkle::inclusion_path(&nodes, txid.seqno(), sig_seqno)
            .map_err(recovery::proof_error)?;
        if merkle::fold_path(view.leaf(), &path) != signature.root {
            return Err(self.blame_path(txid, sig_txid));
        }
        let cose = match &signature.cose_signature {
            _ if view.kind == entry::TxKind::Signature => CoseReceipt::SignatureTransaction,
            None => CoseReceipt::NotSigned,
            Some(root_signature) => {
                let leaf = cose::ReceiptLeaf {
                    write_set_digest: view.write_set_digest(),
                    commit_evidence: evidence.clone(),
                    claims_digest: view.claims_digest,
                };
                let damaged = |reason: String| StoreError::Decode {
                    txid: sig_txid,
                    reason: format!("its COSE root signature: {reason}"),
                };
                // The frame's checksum and the root check above vouch for the bytes; that
                // the signature names its own transaction is checked here, its ECDSA
                // signature by every verifier.
                let claims =
                    cose::read_claims(root_signature).map_err(|e| damaged(e.to_string()))?;
                if claims.txid != sig_txid {
                    return Err(damaged(format!("it names transaction {}", claims.txid)));
                }
                CoseReceipt::Ready(
                    cose::build_receipt(root_signature, &leaf, &path)
                        .map_err(|e| damaged(e.to_string()))?,
                )
            }
        };
        let receipt = Receipt::build(ReceiptParts {
            write_set_digest: view.write_set_digest(),
            commit_evidence: evidence,
            claims_digest: view.claims_digest,
            proof: path,
            signature_der: signature.signature,
            node_cert_pem,
            node_id: signature.node_id,
            service_endorsements: Vec::new(),
        });
        Ok(Some(ReceiptBundle {
            txid,
            receipt,
            application_claims,
            cose,
        }))
    }

    /// Why the inclusion path of `txid` does not lead to the root signed at `sig_txid`: the
    /// lowest levels of the path are recomputed from the entries of its run of 16, so an
    /// entry there whose leaf differs from the leaf bytes its frame record kept (records are
    /// checked against their checksums as they are read) was altered in the ledger; otherwise
    /// the stored tree levels are damaged.
    fn blame_path(&self, txid: TxId, sig_txid: TxId) -> StoreError {
        let run_start = txid.seqno() & !15;
        let count = 16.min(sig_txid.seqno() - run_start);
        let checked = self
            .shared
            .tree
            .records(run_start, count)
            .and_then(|records| {
                let leaves = self.transactions().leaves(run_start, count)?;
                Ok(records
                    .iter()
                    .zip(&leaves)
                    .enumerate()
                    .find(|(i, (r, leaf))| run_start + *i as u64 != 0 && !r.matches_leaf(leaf))
                    .map(|(i, (r, _))| (run_start + i as u64, r.offset)))
            });
        match checked {
            Ok(Some((seqno, offset))) => self.shared.segments.corrupt(
                seqno,
                offset,
                "the entry's bytes differ from when it was written (its leaf hash changed)".into(),
            ),
            Ok(None) => StoreError::DerivedDamaged {
                file: self.shared.tree.dir().to_owned(),
                reason: format!(
                    "the inclusion path of {txid} from the stored tree levels does not lead to the root signed at {sig_txid}"
                ),
            },
            Err(e) => e,
        }
    }

    /// The signed states at the committed signature transactions `from` and `to` (default:
    /// the newest committed signature) and the consistency proof between their trees, checked
    /// against both signed roots before it is returned.
    pub fn consistency(
        &self,
        from: TxId,
        to: Option<TxId>,
    ) -> Result<Result<Consistency, ConsistencyRefusal>, StoreError> {
        self.noted(self.build_consistency(from, to))
    }

    fn build_consistency(
        &self,
        from: TxId,
        to: Option<TxId>,
    ) -> Result<Result<Consistency, ConsistencyRefusal>, StoreError> {
        let Some(committed) = self.committed() else {
            return Ok(Err(ConsistencyRefusal::NotCommitted(from)));
        };
        let to = match to {
            Some(to) => to,
            None => {
                let seqno = self
                    .shared
                    .index
                    .signature_at_or_before(committed.seqno())?
                    .ok_or(ConsistencyRefusal::NotCommitted(from));
                match seqno {
                    Ok(seqno) => self.stored(seqno)?.0,
                    Err(refusal) => return Ok(Err(refusal)),
                }
            }
        };
        let from_head = match self.signed_tree_head(from, committed)? {
            Ok(head) => head,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let to_head = match self.signed_tree_head(to, committed)? {
            Ok(head) => head,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if from.seqno() > to.seqno() {
            return Ok(Err(ConsistencyRefusal::FromAfterTo { from, to }));
        }
        let proof = self.consistency_proof(from.seqno(), to.seqno())?;
        // The proof comes from the stored tree levels: never hand out one that does not link
        // the two signed roots.
        merkle::verify_consistency(
            from.seqno(),
            to.seqno(),
            from_head.root,
            to_head.root,
            &proof,
        )
        .map_err(|e| StoreError::DerivedDamaged {
            file: self.shared.tree.records_path(),
            reason: format!("the consistency proof from {from} to {to} does not verify: {e}"),
        })?;
        Ok(Ok(Consistency {
            from: from_head,
            to: to_head,
            proof,
        }))
    }

    /// The signed state at `txid`, which must be a committed signature transaction.
    fn signed_tree_head(
        &self,
        txid: TxId,
        committed: TxId,
    ) -> Result<Result<SignedTreeHead, ConsistencyRefusal>, StoreError> {
        if txid.seqno() > committed.seqno() {
            return Ok(Err(ConsistencyRefusal::NotCommitted(txid)));
        }
        let (stored, bytes) = self.stored(txid.seqno())?;
        if stored != txid {
            return Ok(Err(ConsistencyRefusal::WrongView {
                asked: txid,
                stored,
            }));
        }
        let view = EntryView::parse(&bytes, txid.seqno()).map_err(|e| StoreError::Decode {
            txid,
            reason: e.to_string(),
        })?;
        if view.kind != entry::TxKind::Signature {
            return Ok(Err(ConsistencyRefusal::NotASignature(txid)));
        }
        let record = view.signature().map_err(|e| StoreError::Decode {
            txid,
            reason: e.to_string(),
        })?;
        Ok(Ok(SignedTreeHead {
            txid,
            root: record.root,
            cose_signature: record.cose_signature,
        }))
    }

    /// Root of the tree of the first `size` leaves (leaf 0 plus seqnos `1..size`), for any
    /// size up to the committed end.
    pub fn root_at(&self, size: u64) -> Result<Hash32, StoreError> {
        self.check_size(size)?;
        let transactions = self.transactions();
        self.noted(
            merkle::root(&TreeNodes::new(&self.shared.tree, &transactions), size)
                .map_err(recovery::proof_error),
        )
    }

    /// Consistency proof between two committed tree sizes.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash32>, StoreError> {
        self.check_size(new_size)?;
        let transactions = self.transactions();
        self.noted(
            merkle::consistency_proof(
                &TreeNodes::new(&self.shared.tree, &transactions),
                old_size,
                new_size,
            )
            .map_err(recovery::proof_error),
        )
    }

    /// Root of the RFC 6962 tree of the first `size` leaves (the data of leaf *i* is the CCF
    /// leaf of seqno *i*; leaf 0 the 32 zero bytes): the root a C2SP checkpoint of tree size
    /// `size` carries. Any size up to the committed end.
    pub fn rfc6962_root_at(&self, size: u64) -> Result<Hash32, StoreError> {
        self.check_size(size)?;
        let transactions = self.transactions();
        self.noted(
            merkle::rfc6962::root(&TreeNodes::rfc6962(&self.shared.tree, &transactions), size)
                .map_err(recovery::proof_error),
        )
    }

    /// RFC 6962 consistency proof between two committed tree sizes (what a C2SP witness is
    /// sent with a checkpoint), in O(log n) reads.
    pub fn rfc6962_consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash32>, StoreError> {
        self.check_size(new_size)?;
        let transactions = self.transactions();
        self.noted(
            merkle::rfc6962::consistency_proof(
                &TreeNodes::rfc6962(&self.shared.tree, &transactions),
                old_size,
                new_size,
            )
            .map_err(recovery::proof_error),
        )
    }

    /// RFC 6962 inclusion proof of the leaf of `seqno` in the tree of `size` committed leaves.
    pub fn rfc6962_inclusion_proof(
        &self,
        seqno: u64,
        size: u64,
    ) -> Result<Vec<merkle::ProofStep>, StoreError> {
        self.check_size(size)?;
        let transactions = self.transactions();
        self.noted(
            merkle::rfc6962::inclusion_path(
                &TreeNodes::rfc6962(&self.shared.tree, &transactions),
                seqno,
                size,
            )
            .map_err(recovery::proof_error),
        )
    }

    fn check_size(&self, size: u64) -> Result<(), StoreError> {
        let committed_size = self.committed().map_or(0, |c| c.seqno() + 1);
        if size > committed_size {
            return Err(StoreError::Tree(format!(
                "tree size {size} is beyond the committed size {committed_size}"
            )));
        }
        Ok(())
    }
}

/// How a list of entries was found: which derived file listed them, for which collection,
/// tag and range.
struct Listing<'a> {
    source: PathBuf,
    collection: &'a str,
    tag: Option<&'a str>,
    from: u64,
    to: u64,
}

impl Listing<'_> {
    fn what(&self) -> String {
        match self.tag {
            Some(tag) => format!("collection {:?} tag {tag:?}", self.collection),
            None => format!("collection {:?}", self.collection),
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
}

/// The key of the ledger id in the `CONFIG` table (a JSON string), written by the genesis.
pub const LEDGER_ID_KEY: &str = "ledger_id";

/// The ledger id from its recorded value, if it is one.
pub(crate) fn recorded_ledger_id(value: Option<&[u8]>) -> Option<String> {
    serde_json::from_slice(value?).ok()
}

/// The governance write that registers `node`'s certificate under its node id: receipts
/// signed by the node find its certificate through it. A cluster's leader writes it for a node
/// that joins.
pub fn node_registration(node: &NodeIdentity) -> TableWrite {
    TableWrite {
        table: entry::tables::NODES.into(),
        key: node.signing_key.node_id().to_hex(),
        value: Some(node.cert_pem.clone().into_bytes()),
    }
}

/// The ledger secret of the ledger in `dir`, unwrapped with the key-encryption key from
/// `kek` (what the auditor needs to check the private rows of the index).
pub fn ledger_secret(dir: &Path, kek: &KekSource) -> Result<LedgerSecret, StoreError> {
    let kek = crypto::load_kek(kek, dir, false)?;
    Ok(LedgerSecret::load(&dir.join(SECRET_FILE), &kek)?)
}

/// The raw ledger secret of the ledger in `dir`: what a node joining the service receives over
/// the authenticated join channel.
pub fn export_ledger_secret(dir: &Path, kek: &KekSource) -> Result<[u8; 32], StoreError> {
    let kek = crypto::load_kek(kek, dir, false)?;
    Ok(LedgerSecret::export(&dir.join(SECRET_FILE), &kek)?)
}

/// Why an index that failed to open is rebuilt, without repeating its path.
fn index_reason(e: index::IndexError) -> String {
    match e {
        index::IndexError::Damaged { reason, .. } => format!("it is damaged: {reason}"),
        index::IndexError::Db { message, .. } => format!("it cannot be opened: {message}"),
    }
}

fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}
