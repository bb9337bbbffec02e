//! Indexes over the ledger, kept in one redb database (`index.redb`): which entries belong to
//! each collection (except the default one) and tag, where the signatures are, the current
//! value of every governance table key, idempotency keys, and the checksums of the tree files
//! at the last checkpoint. Where each transaction's frame is lives in `tree/frames.idx` (see
//! `tree`), at 8 bytes per transaction.
//!
//! All of it is derived from the segments. The writer commits index updates without fsync
//! (redb `Durability::None`) and a checkpoint makes them durable together with the
//! `indexed_through` watermark, so after a crash redb rolls back to the last checkpoint and
//! recovery replays the ledger from the watermark. A missing or unreadable index is rebuilt
//! from scratch the same way.
//!
//! The file is not trusted: it is opened with redb's integrity check (the checksum of every
//! page of the committed trees is verified), every call into redb runs under
//! `catch_unwind` (redb may panic on a page altered after it was opened), and errors that
//! mean damage — a corrupted page, a table of the wrong shape, a panic — are
//! [`IndexError::Damaged`], which the store reports as a damaged derived file and rebuilds.

use crate::tree::{TreeFiles, TreeSums, sums_from_rows};
use ledger_core::TxId;
use ledger_core::entry::DEFAULT_COLLECTION;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// (collection, seqno) → ()
const COLLECTION_ENTRIES: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("collection_entries");
/// (collection, tag, seqno) → ()
const TAG_ENTRIES: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("tag_entries");
/// collection → number of entries
const COLLECTIONS: TableDefinition<&str, u64> = TableDefinition::new("collections");
/// (collection, tag) → number of entries
const TAGS: TableDefinition<(&str, &str), u64> = TableDefinition::new("tags");
/// signature seqno → ()
const SIGNATURES: TableDefinition<u64, ()> = TableDefinition::new("signatures");
/// (table, key) → current value
const GOVERNANCE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("governance");
/// name → value
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (application table, key) → seqno of the transaction that last set it. The value stays in
/// that transaction's sealed section: the index holds no application value in plaintext.
const APP_KV: TableDefinition<(&str, &[u8]), u64> = TableDefinition::new("app_kv");
/// key digest → (seqno, view, Unix seconds of the write).
const IDEMPOTENCY: TableDefinition<&[u8; 32], (u64, u64, u64)> =
    TableDefinition::new("idempotency");
/// (stored tree index: 0 = `frames.idx`, k = `level-4k.hashes`; chunk) → CRC-32C of that
/// [`crate::tree::CHECK_CHUNK`]-byte chunk at the last checkpoint.
const TREE_SUMS: TableDefinition<(u32, u64), u32> = TableDefinition::new("tree_checksums");

const META_INDEXED_THROUGH: &str = "indexed_through";
const META_TREE_SIZE: &str = "tree_durable_size";
/// redb's page cache. Its default (1 GiB) made a node serving a 10M-entry ledger reach
/// ~860 MB RSS; index pages beyond this are read through the OS page cache instead, which
/// the kernel can reclaim (docs/PERFORMANCE.md).
const INDEX_CACHE_BYTES: usize = 64 << 20;
const META_FORMAT: &str = "index_format";
/// 3: no per-transaction locations (they are in `tree/frames.idx`), and entries of the default
/// collection are not listed in `collection_entries`.
const INDEX_FORMAT: u64 = 3;

/// Why the index could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// redb failed for a reason other than damage to the file (an I/O error, a latched
    /// earlier I/O error, the file in use by another process).
    #[error("index database {}: {message}", path.display())]
    Db { path: PathBuf, message: String },
    /// The file's content is damaged: a page fails its checksum, a table has the wrong shape,
    /// redb panicked reading it, or a row contradicts the ledger.
    #[error("index database {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
}

impl IndexError {
    fn of(path: &Path, e: impl Into<redb::Error>) -> IndexError {
        let e: redb::Error = e.into();
        let damaged = matches!(
            e,
            redb::Error::Corrupted(_)
                | redb::Error::UpgradeRequired(_)
                | redb::Error::TableTypeMismatch { .. }
                | redb::Error::TableIsMultimap(_)
                | redb::Error::TableIsNotMultimap(_)
                | redb::Error::TypeDefinitionChanged { .. }
                | redb::Error::TableDoesNotExist(_)
                | redb::Error::UnorderedKey
        );
        if damaged {
            IndexError::Damaged {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        } else {
            IndexError::Db {
                path: path.to_owned(),
                message: e.to_string(),
            }
        }
    }

    fn damaged(path: &Path, reason: impl Into<String>) -> IndexError {
        IndexError::Damaged {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Runs `f`, which calls into redb, turning a panic (redb panics on some damaged pages, e.g.
/// a slice of the wrong length in `types.rs`) into [`IndexError::Damaged`].
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, IndexError>) -> Result<T, IndexError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(IndexError::damaged(
            path,
            format!("reading it made redb panic ({what})"),
        ))
    })
}

/// A table of a write transaction opened the first time it is needed: a commit writes the
/// root of every table opened in it, and most batches touch three of the index's nine.
struct LazyTable<'t, K: redb::Key + 'static, V: redb::Value + 'static> {
    tx: &'t redb::WriteTransaction,
    definition: TableDefinition<'static, K, V>,
    table: Option<redb::Table<'t, K, V>>,
}

impl<'t, K: redb::Key + 'static, V: redb::Value + 'static> LazyTable<'t, K, V> {
    fn new(tx: &'t redb::WriteTransaction, definition: TableDefinition<'static, K, V>) -> Self {
        LazyTable {
            tx,
            definition,
            table: None,
        }
    }

    fn get(&mut self) -> Result<&mut redb::Table<'t, K, V>, redb::TableError> {
        let table = match self.table.take() {
            Some(table) => table,
            None => self.tx.open_table(self.definition)?,
        };
        Ok(self.table.insert(table))
    }
}

/// Adds `added` to the counts stored under each key of `definition` (missing: 0).
fn add_counts<K>(
    tx: &redb::WriteTransaction,
    definition: TableDefinition<'static, K, u64>,
    added: BTreeMap<K::SelfType<'_>, u64>,
) -> Result<(), redb::Error>
where
    K: redb::Key + 'static,
{
    if added.is_empty() {
        return Ok(());
    }
    let mut table = tx.open_table(definition)?;
    for (key, n) in added {
        let stored = table.get(&key)?.map_or(0, |v| v.value());
        table.insert(&key, stored + n)?;
    }
    Ok(())
}

/// Index updates of one transaction.
#[derive(Debug, Clone)]
pub enum IndexOp {
    Entry {
        collection: String,
        tags: Vec<String>,
        idempotency: Option<ledger_core::entry::IdempotencyRecord>,
        /// The application-table keys its hooks wrote.
        kv: Vec<KvKeyOp>,
    },
    Governance(Vec<(String, String, Option<Vec<u8>>)>),
    Signature,
    /// A key-value transaction's keys.
    Kv(Vec<KvKeyOp>),
}

/// An application-table key a transaction set (`removed: false`) or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvKeyOp {
    pub table: String,
    pub key: Vec<u8>,
    pub removed: bool,
}

impl KvKeyOp {
    pub fn of(writes: &[ledger_core::entry::KvWrite]) -> Vec<KvKeyOp> {
        writes
            .iter()
            .map(|w| KvKeyOp {
                table: w.table.clone(),
                key: w.key.clone(),
                removed: w.value.is_none(),
            })
            .collect()
    }
}

pub struct Index {
    path: PathBuf,
    /// `None` only while a reopen after a storage fault has not succeeded yet.
    db: RwLock<Option<Database>>,
    /// The newest entry of the default collection applied since the index was opened (0:
    /// none). The default collection has no rows here (see `apply`), and finding its newest
    /// entry in the frame records meant scanning back over every other transaction: 18 ms on 3
    /// million. The ledger scans once and keeps the answer here.
    pub(crate) latest_default: LatestDefault,
}

/// See [`Index::latest_default`].
#[derive(Default)]
pub(crate) struct LatestDefault {
    seqno: std::sync::atomic::AtomicU64,
    /// Whether `seqno` also accounts for everything before the index was opened.
    complete: std::sync::atomic::AtomicBool,
}

impl LatestDefault {
    fn applied(&self, seqno: u64) {
        self.seqno
            .fetch_max(seqno, std::sync::atomic::Ordering::AcqRel);
    }

    /// The newest default-collection entry, if known for the whole ledger.
    pub fn get(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        self.complete
            .load(Ordering::Acquire)
            .then(|| self.seqno.load(Ordering::Acquire))
    }

    /// Records what a scan of the whole ledger up to the committed transaction found.
    pub fn scanned(&self, found: Option<u64>) {
        use std::sync::atomic::Ordering;
        if let Some(seqno) = found {
            self.applied(seqno);
        }
        self.complete.store(true, Ordering::Release);
    }
}

impl Index {
    /// Opens (or creates) the index, verifying the checksums of all its pages. An index that
    /// is damaged or of an unknown format is reported as an error so the caller can rebuild it.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let db = Self::open_db(path)?;
        Ok(Index {
            path: path.to_owned(),
            db: RwLock::new(Some(db)),
            latest_default: LatestDefault::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_db(path: &Path) -> Result<Database, IndexError> {
        let e = |e: redb::Error| IndexError::of(path, e);
        guarded(path, || {
            let db = redb::Builder::new()
                .set_cache_size(INDEX_CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .create(path)
                .map_err(|x| e(x.into()))?;
            let mut tx = db.begin_write().map_err(|x| e(x.into()))?;
            tx.set_durability(Durability::Immediate)
                .map_err(|x| e(x.into()))?;
            {
                let mut meta = tx.open_table(META).map_err(|x| e(x.into()))?;
                let format = meta
                    .get(META_FORMAT)
                    .map_err(|x| e(x.into()))?
                    .map(|v| v.value());
                match format {
                    None => {
                        meta.insert(META_FORMAT, INDEX_FORMAT)
                            .map_err(|x| e(x.into()))?;
                    }
                    Some(INDEX_FORMAT) => {}
                    Some(other) => {
                        return Err(IndexError::damaged(
                            path,
                            format!("unknown index format {other}"),
                        ));
                    }
                }
                tx.open_table(COLLECTION_ENTRIES).map_err(|x| e(x.into()))?;
                tx.open_table(TAG_ENTRIES).map_err(|x| e(x.into()))?;
                tx.open_table(COLLECTIONS).map_err(|x| e(x.into()))?;
                tx.open_table(TAGS).map_err(|x| e(x.into()))?;
                tx.open_table(SIGNATURES).map_err(|x| e(x.into()))?;
                tx.open_table(GOVERNANCE).map_err(|x| e(x.into()))?;
                tx.open_table(IDEMPOTENCY).map_err(|x| e(x.into()))?;
                tx.open_table(APP_KV).map_err(|x| e(x.into()))?;
                tx.open_table(TREE_SUMS).map_err(|x| e(x.into()))?;
            }
            tx.commit().map_err(|x| e(x.into()))?;
            Ok(db)
        })
    }

    /// Closes and reopens the database: after an I/O error redb refuses every later operation
    /// until it is reopened, and reopening rolls it back to its last durable commit (the
    /// caller then replays the ledger after [`Index::indexed_through`]).
    pub(crate) fn reopen(&self) -> Result<(), IndexError> {
        let mut db = self.db.write().expect("index lock poisoned");
        db.take();
        *db = Some(Self::open_db(&self.path)?);
        Ok(())
    }

    /// Whether the database still answers (redb latches I/O errors).
    pub(crate) fn healthy(&self) -> bool {
        self.indexed_through().is_ok()
    }

    /// Runs `f` in a read transaction, with redb's errors and panics classified.
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, IndexError> {
        guarded(&self.path, || {
            let db = self.db.read().expect("index lock poisoned");
            let db = db.as_ref().ok_or_else(|| IndexError::Db {
                path: self.path.clone(),
                message: "the index is being reopened after a storage fault".into(),
            })?;
            let tx = db.begin_read().map_err(|e| IndexError::of(&self.path, e))?;
            f(&tx).map_err(|e| IndexError::of(&self.path, e))
        })
    }

    /// Runs `f` in a write transaction of `durability` and commits it.
    fn write(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), IndexError> {
        guarded(&self.path, || {
            let db = self.db.read().expect("index lock poisoned");
            let db = db.as_ref().ok_or_else(|| IndexError::Db {
                path: self.path.clone(),
                message: "the index is being reopened after a storage fault".into(),
            })?;
            let e = |e: redb::Error| IndexError::of(&self.path, e);
            let mut tx = db.begin_write().map_err(|x| e(x.into()))?;
            tx.set_durability(durability).map_err(|x| e(x.into()))?;
            f(&tx).map_err(e)?;
            tx.commit().map_err(|x| e(x.into()))
        })
    }

    fn meta(&self, key: &str) -> Result<u64, IndexError> {
        self.read(|tx| {
            let table = tx.open_table(META)?;
            Ok(table.get(key)?.map_or(0, |v| v.value()))
        })
    }

    /// Highest seqno whose index updates are durable.
    pub fn indexed_through(&self) -> Result<u64, IndexError> {
        self.meta(META_INDEXED_THROUGH)
    }

    /// Number of leaves of the tree files known to be durable.
    pub fn tree_durable_size(&self) -> Result<u64, IndexError> {
        self.meta(META_TREE_SIZE)
    }

    /// The checksums of the tree files recorded at the last checkpoint, by family and stored
    /// index (empty for an index written by a release that did not record them).
    pub fn tree_checksums(&self) -> Result<TreeSums, IndexError> {
        let rows = self.read(|tx| {
            let table = match tx.open_table(TREE_SUMS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut rows = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                let (stored, chunk) = k.value();
                rows.push((stored, chunk, v.value()));
            }
            Ok(rows)
        })?;
        sums_from_rows(rows)
            .ok_or_else(|| IndexError::damaged(&self.path, "the tree checksums have gaps"))
    }

    /// Applies the updates of consecutive transactions. `checkpoint` (the tree size and the
    /// tree files, which the caller has fsync'd) makes this commit, and everything before it,
    /// durable, recording the durable tree size and the checksums of the tree files.
    pub fn apply(
        &self,
        ops: &[(TxId, IndexOp)],
        checkpoint: Option<(u64, &TreeFiles)>,
    ) -> Result<(), IndexError> {
        let durability = if checkpoint.is_some() {
            Durability::Immediate
        } else {
            Durability::None
        };
        let sums = checkpoint.map(|(_, tree)| tree.sums_update());
        self.write(durability, |tx| {
            let mut collection_entries = LazyTable::new(tx, COLLECTION_ENTRIES);
            let mut tag_entries = LazyTable::new(tx, TAG_ENTRIES);
            let mut signatures = LazyTable::new(tx, SIGNATURES);
            let mut governance = LazyTable::new(tx, GOVERNANCE);
            let mut idempotency_keys = LazyTable::new(tx, IDEMPOTENCY);
            let mut app_kv = LazyTable::new(tx, APP_KV);
            // Entries counted per collection and tag, each count written once per commit.
            let mut collection_counts: BTreeMap<&str, u64> = BTreeMap::new();
            let mut tag_counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
            let mut apply_kv = |seqno: u64, kv: &[KvKeyOp]| -> Result<(), redb::Error> {
                for op in kv {
                    let key = (op.table.as_str(), op.key.as_slice());
                    if op.removed {
                        app_kv.get()?.remove(key)?;
                    } else {
                        app_kv.get()?.insert(key, seqno)?;
                    }
                }
                Ok(())
            };
            for (txid, op) in ops {
                let seqno = txid.seqno();
                match op {
                    IndexOp::Entry {
                        collection,
                        tags: entry_tags,
                        idempotency,
                        kv,
                    } => {
                        apply_kv(seqno, kv)?;
                        if let Some(record) = idempotency {
                            // A later write with the same key (after the retention window)
                            // takes the key over.
                            idempotency_keys.get()?.insert(
                                &record.key_digest.0,
                                (seqno, txid.view(), record.unix_secs),
                            )?;
                        }
                        // The default collection is listed from the frame records instead:
                        // most entries are in it, and a row each would cost ~50 bytes.
                        if collection != DEFAULT_COLLECTION {
                            collection_entries
                                .get()?
                                .insert((collection.as_str(), seqno), ())?;
                        } else {
                            self.latest_default.applied(seqno);
                        }
                        *collection_counts.entry(collection.as_str()).or_default() += 1;
                        for tag in entry_tags {
                            tag_entries
                                .get()?
                                .insert((collection.as_str(), tag.as_str(), seqno), ())?;
                            *tag_counts
                                .entry((collection.as_str(), tag.as_str()))
                                .or_default() += 1;
                        }
                    }
                    IndexOp::Governance(writes) => {
                        let governance = governance.get()?;
                        for (table, key, value) in writes {
                            match value {
                                Some(v) => {
                                    governance
                                        .insert((table.as_str(), key.as_str()), v.as_slice())?;
                                }
                                None => {
                                    governance.remove((table.as_str(), key.as_str()))?;
                                }
                            }
                        }
                    }
                    IndexOp::Signature => {
                        signatures.get()?.insert(seqno, ())?;
                    }
                    IndexOp::Kv(kv) => apply_kv(seqno, kv)?,
                }
            }
            add_counts(tx, COLLECTIONS, collection_counts)?;
            add_counts(tx, TAGS, tag_counts)?;
            let mut meta = tx.open_table(META)?;
            if let Some((last, _)) = ops.last() {
                meta.insert(META_INDEXED_THROUGH, last.seqno())?;
            }
            if let (Some((tree_size, _)), Some(sums)) = (checkpoint, &sums) {
                meta.insert(META_TREE_SIZE, tree_size)?;
                if sums.fresh {
                    // New or rebuilt tree files: rows of the files they replace must go.
                    tx.delete_table(TREE_SUMS)?;
                }
                let mut table = tx.open_table(TREE_SUMS)?;
                for (stored, chunk, sum) in &sums.rows {
                    table.insert((*stored, *chunk), *sum)?;
                }
            }
            Ok(())
        })?;
        if let (Some((_, tree)), Some(sums)) = (checkpoint, &sums) {
            tree.sums_recorded(sums);
        }
        Ok(())
    }

    /// The first signature with seqno strictly greater than `seqno`.
    pub fn signature_after(&self, seqno: u64) -> Result<Option<u64>, IndexError> {
        self.read(|tx| {
            let table = tx.open_table(SIGNATURES)?;
            let mut range = table.range(seqno.saturating_add(1)..)?;
            Ok(range.next().transpose()?.map(|(k, _)| k.value()))
        })
    }

    /// The last signature with seqno at most `seqno`.
    pub fn signature_at_or_before(&self, seqno: u64) -> Result<Option<u64>, IndexError> {
        self.read(|tx| {
            let table = tx.open_table(SIGNATURES)?;
            let mut range = table.range(..=seqno)?;
            Ok(range.next_back().transpose()?.map(|(k, _)| k.value()))
        })
    }

    /// Seqnos of entries in `collection` (optionally with `tag`) within `from..=to`, ascending,
    /// at most `limit` of them. Entries of the default collection without a tag are not in
    /// this index (the caller reads the frame records).
    pub fn entries(
        &self,
        collection: &str,
        tag: Option<&str>,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<u64>, IndexError> {
        if from > to {
            return Ok(Vec::new());
        }
        self.read(|tx| {
            let mut out = Vec::new();
            match tag {
                None => {
                    let table = tx.open_table(COLLECTION_ENTRIES)?;
                    for item in table
                        .range((collection, from)..=(collection, to))?
                        .take(limit)
                    {
                        out.push(item?.0.value().1);
                    }
                }
                Some(tag) => {
                    let table = tx.open_table(TAG_ENTRIES)?;
                    for item in table
                        .range((collection, tag, from)..=(collection, tag, to))?
                        .take(limit)
                    {
                        out.push(item?.0.value().2);
                    }
                }
            }
            Ok(out)
        })
    }

    /// The newest entry of `collection` at or before `to` (not for the default collection).
    pub fn latest_entry(&self, collection: &str, to: u64) -> Result<Option<u64>, IndexError> {
        self.read(|tx| {
            let table = tx.open_table(COLLECTION_ENTRIES)?;
            let mut range = table.range((collection, 0)..=(collection, to))?;
            Ok(range.next_back().transpose()?.map(|(k, _)| k.value().1))
        })
    }

    /// All collections with their entry counts.
    pub fn collections(&self) -> Result<Vec<(String, u64)>, IndexError> {
        self.read(|tx| {
            let table = tx.open_table(COLLECTIONS)?;
            let mut out = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_owned(), v.value()));
            }
            Ok(out)
        })
    }

    /// Tags used in `collection`, with their entry counts.
    pub fn tags(&self, collection: &str) -> Result<Vec<(String, u64)>, IndexError> {
        self.read(|tx| {
            let table = tx.open_table(TAGS)?;
            let mut out = Vec::new();
            for item in table.range((collection, "")..)? {
                let (k, v) = item?;
                let (c, t) = k.value();
                if c != collection {
                    break;
                }
                out.push((t.to_owned(), v.value()));
            }
            Ok(out)
        })
    }

    /// The write made with an idempotency key digest, and its Unix seconds.
    pub fn idempotent_write(
        &self,
        key_digest: &[u8; 32],
    ) -> Result<Option<(TxId, u64)>, IndexError> {
        let found = self.read(|tx| {
            let table = match tx.open_table(IDEMPOTENCY) {
                Ok(t) => t,
                // No idempotent write was ever indexed.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(key_digest)?.map(|v| v.value()))
        })?;
        let Some((seqno, view, unix_secs)) = found else {
            return Ok(None);
        };
        let txid = TxId::new(view, seqno)
            .ok_or_else(|| IndexError::damaged(&self.path, "an indexed transaction has view 0"))?;
        Ok(Some((txid, unix_secs)))
    }

    /// Whether any entry of `collection` carries `tag` (a point lookup, unlike [`Index::tags`]).
    pub fn has_tag(&self, collection: &str, tag: &str) -> Result<bool, IndexError> {
        self.read(|tx| {
            let table = tx.open_table(TAGS)?;
            Ok(table.get((collection, tag))?.is_some())
        })
    }

    /// Current value of a governance key.
    pub fn governance(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        self.read(|tx| {
            let t = tx.open_table(GOVERNANCE)?;
            Ok(t.get((table, key))?.map(|v| v.value().to_vec()))
        })
    }

    /// The seqno of the transaction that last set `key` of application table `table`.
    pub fn kv_seqno(&self, table: &str, key: &[u8]) -> Result<Option<u64>, IndexError> {
        self.read(|tx| {
            let t = tx.open_table(APP_KV)?;
            Ok(t.get((table, key))?.map(|v| v.value()))
        })
    }

    /// Up to `limit` keys of application table `table` after `after` (from the first when
    /// `None`), ascending, each with the seqno that last set it.
    pub fn kv_keys(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, IndexError> {
        self.read(|tx| {
            let t = tx.open_table(APP_KV)?;
            let mut out = Vec::new();
            let range = match after {
                Some(k) => t.range((table, k)..)?,
                None => t.range((table, &[][..])..)?,
            };
            for item in range {
                let (k, v) = item?;
                let (t_name, key) = k.value();
                if t_name != table {
                    break;
                }
                if after == Some(key) {
                    continue;
                }
                out.push((key.to_vec(), v.value()));
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// All keys and values of a governance table.
    pub fn governance_table(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        self.read(|tx| {
            let t = tx.open_table(GOVERNANCE)?;
            let mut out = Vec::new();
            for item in t.range((table, "")..)? {
                let (k, v) = item?;
                let (tb, key) = k.value();
                if tb != table {
                    break;
                }
                out.push((key.to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Compares every row with `expected`, the index the ledger implies through
    /// `expected.through`; returns the first difference. Rows of collections, tags and
    /// idempotency keys (private) are compared only when `expected.private` (the auditor had
    /// the ledger secret).
    pub(crate) fn compare(&self, expected: &ExpectedIndex) -> Result<(), IndexError> {
        let actual = self.read(|tx| {
            let mut actual = ExpectedIndex {
                private: expected.private,
                through: 0,
                ..Default::default()
            };
            let meta = tx.open_table(META)?;
            actual.through = meta.get(META_INDEXED_THROUGH)?.map_or(0, |v| v.value());
            for item in tx.open_table(SIGNATURES)?.iter()? {
                actual.signatures.push(item?.0.value());
            }
            for item in tx.open_table(GOVERNANCE)?.iter()? {
                let (k, v) = item?;
                let (table, key) = k.value();
                actual
                    .governance
                    .insert((table.to_owned(), key.to_owned()), v.value().to_vec());
            }
            if !expected.private {
                return Ok(actual);
            }
            for item in tx.open_table(COLLECTION_ENTRIES)?.iter()? {
                let (key, _) = item?;
                let (collection, seqno) = key.value();
                actual
                    .collection_entries
                    .entry(collection.to_owned())
                    .or_default()
                    .push(seqno);
            }
            for item in tx.open_table(TAG_ENTRIES)?.iter()? {
                let (key, _) = item?;
                let (collection, tag, seqno) = key.value();
                actual
                    .tag_entries
                    .entry((collection.to_owned(), tag.to_owned()))
                    .or_default()
                    .push(seqno);
            }
            for item in tx.open_table(COLLECTIONS)?.iter()? {
                let (k, v) = item?;
                actual.collections.insert(k.value().to_owned(), v.value());
            }
            for item in tx.open_table(TAGS)?.iter()? {
                let (k, v) = item?;
                let (collection, tag) = k.value();
                actual
                    .tags
                    .insert((collection.to_owned(), tag.to_owned()), v.value());
            }
            for item in tx.open_table(IDEMPOTENCY)?.iter()? {
                let (k, v) = item?;
                actual.idempotency.insert(*k.value(), v.value());
            }
            for item in tx.open_table(APP_KV)?.iter()? {
                let (k, v) = item?;
                let (table, key) = k.value();
                actual
                    .app_kv
                    .insert((table.to_owned(), key.to_vec()), v.value());
            }
            Ok(actual)
        })?;
        expected.difference(&actual).map_or(Ok(()), |reason| {
            Err(IndexError::damaged(&self.path, reason))
        })
    }
}

/// The index a ledger implies, built from its transactions in order (the auditor's model of
/// [`Index::apply`]).
#[derive(Debug, Default)]
pub(crate) struct ExpectedIndex {
    /// Whether the private rows (collections, tags, idempotency keys, application-table keys)
    /// are known.
    pub private: bool,
    /// The last seqno applied.
    pub through: u64,
    collection_entries: BTreeMap<String, Vec<u64>>,
    tag_entries: BTreeMap<(String, String), Vec<u64>>,
    collections: BTreeMap<String, u64>,
    tags: BTreeMap<(String, String), u64>,
    signatures: Vec<u64>,
    governance: BTreeMap<(String, String), Vec<u8>>,
    idempotency: BTreeMap<[u8; 32], (u64, u64, u64)>,
    app_kv: BTreeMap<(String, Vec<u8>), u64>,
}

impl ExpectedIndex {
    pub fn new(private: bool) -> ExpectedIndex {
        ExpectedIndex {
            private,
            ..Default::default()
        }
    }

    /// Applies transaction `txid`'s updates; `op` is `None` for an application entry whose
    /// private section the auditor cannot read.
    pub fn apply(&mut self, txid: TxId, op: Option<&IndexOp>) {
        let seqno = txid.seqno();
        self.through = seqno;
        match op {
            Some(IndexOp::Entry {
                collection,
                tags,
                idempotency,
                kv,
            }) => {
                self.apply_kv(seqno, kv);
                if let Some(record) = idempotency {
                    self.idempotency
                        .insert(record.key_digest.0, (seqno, txid.view(), record.unix_secs));
                }
                if collection != DEFAULT_COLLECTION {
                    self.collection_entries
                        .entry(collection.clone())
                        .or_default()
                        .push(seqno);
                }
                *self.collections.entry(collection.clone()).or_default() += 1;
                for tag in tags {
                    let key = (collection.clone(), tag.clone());
                    self.tag_entries.entry(key.clone()).or_default().push(seqno);
                    *self.tags.entry(key).or_default() += 1;
                }
            }
            Some(IndexOp::Governance(writes)) => {
                for (table, key, value) in writes {
                    let k = (table.clone(), key.clone());
                    match value {
                        Some(v) => self.governance.insert(k, v.clone()),
                        None => self.governance.remove(&k),
                    };
                }
            }
            Some(IndexOp::Signature) => self.signatures.push(seqno),
            Some(IndexOp::Kv(kv)) => self.apply_kv(seqno, kv),
            None => {}
        }
    }

    fn apply_kv(&mut self, seqno: u64, kv: &[KvKeyOp]) {
        for op in kv {
            let k = (op.table.clone(), op.key.clone());
            if op.removed {
                self.app_kv.remove(&k);
            } else {
                self.app_kv.insert(k, seqno);
            }
        }
    }

    /// The first way `actual` differs from this model, in words.
    fn difference(&self, actual: &ExpectedIndex) -> Option<String> {
        if actual.through != self.through {
            return Some(format!(
                "it says it indexed the ledger through seqno {}, the model was built through {}",
                actual.through, self.through
            ));
        }
        if let Some(d) = seqno_difference("signatures", "", &self.signatures, &actual.signatures) {
            return Some(d);
        }
        if let Some(d) = map_difference("governance", &self.governance, &actual.governance) {
            return Some(d);
        }
        if !self.private {
            return None;
        }
        for (collection, seqnos) in keys_of(&self.collection_entries, &actual.collection_entries) {
            let (want, have) = seqnos;
            if let Some(d) = seqno_difference(
                "collection_entries",
                &format!(" of collection {collection:?}"),
                want,
                have,
            ) {
                return Some(d);
            }
        }
        for ((collection, tag), (want, have)) in keys_of(&self.tag_entries, &actual.tag_entries) {
            if let Some(d) = seqno_difference(
                "tag_entries",
                &format!(" of collection {collection:?} tag {tag:?}"),
                want,
                have,
            ) {
                return Some(d);
            }
        }
        map_difference("collections", &self.collections, &actual.collections)
            .or_else(|| map_difference("tags", &self.tags, &actual.tags))
            .or_else(|| map_difference("idempotency", &self.idempotency, &actual.idempotency))
            .or_else(|| map_difference("app_kv", &self.app_kv, &actual.app_kv))
    }
}

/// The seqnos a row key maps to in the model and in the index.
type Both<'a> = (&'a [u64], &'a [u64]);

/// Every key of either map with its value in each (empty when absent).
fn keys_of<'a, K: Ord + Clone>(
    want: &'a BTreeMap<K, Vec<u64>>,
    have: &'a BTreeMap<K, Vec<u64>>,
) -> Vec<(K, Both<'a>)> {
    let mut keys: Vec<&K> = want.keys().chain(have.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let w = want.get(k).map_or(&[][..], Vec::as_slice);
            let h = have.get(k).map_or(&[][..], Vec::as_slice);
            (k.clone(), (w, h))
        })
        .collect()
}

fn seqno_difference(table: &str, of: &str, want: &[u64], have: &[u64]) -> Option<String> {
    let at = want.iter().zip(have).position(|(w, h)| w != h);
    let at = at.or((want.len() != have.len()).then(|| want.len().min(have.len())))?;
    Some(match (want.get(at), have.get(at)) {
        (Some(w), Some(h)) if h < w => {
            format!("table {table}{of} lists seqno {h}, which the ledger does not put there")
        }
        (Some(w), _) => format!("table {table}{of} misses seqno {w}"),
        (None, Some(h)) => {
            format!("table {table}{of} lists seqno {h}, which the ledger does not put there")
        }
        (None, None) => return None,
    })
}

fn map_difference<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    table: &str,
    want: &BTreeMap<K, V>,
    have: &BTreeMap<K, V>,
) -> Option<String> {
    for (k, w) in want {
        match have.get(k) {
            None => return Some(format!("table {table} misses the row {k:?}")),
            Some(h) if h != w => {
                // Values are shown when short (counts), not governance documents.
                let values = format!("{h:?}, the ledger implies {w:?}");
                let values = if values.len() <= 120 {
                    values
                } else {
                    "a value other than the ledger implies".into()
                };
                return Some(format!("table {table} row {k:?} holds {values}"));
            }
            Some(_) => {}
        }
    }
    have.keys()
        .find(|k| !want.contains_key(k))
        .map(|k| format!("table {table} has the row {k:?}, which the ledger does not imply"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::entry::IdempotencyRecord;
    use ledger_core::hash::Hash32;
    use proptest::prelude::*;

    /// One transaction's updates, drawn from few collections, tags and keys so that batches
    /// repeat them.
    fn op() -> impl Strategy<Value = IndexOp> {
        let collection = prop::sample::select(vec![DEFAULT_COLLECTION, "a", "b"]);
        let tags = prop::sample::subsequence(vec!["x", "y"], 0..=2);
        let kv = prop::collection::vec((0u8..3, any::<bool>()), 0..3).prop_map(|keys| {
            keys.into_iter()
                .map(|(key, removed)| KvKeyOp {
                    table: "t".into(),
                    key: vec![key],
                    removed,
                })
                .collect::<Vec<_>>()
        });
        prop_oneof![
            6 => (collection, tags, prop::option::of(0u8..4), kv.clone()).prop_map(
                |(collection, tags, idempotency, kv)| IndexOp::Entry {
                    collection: collection.into(),
                    tags: tags.into_iter().map(String::from).collect(),
                    idempotency: idempotency.map(|k| IdempotencyRecord {
                        key_digest: Hash32([k; 32]),
                        unix_secs: 1,
                    }),
                    kv,
                }
            ),
            1 => Just(IndexOp::Signature),
            1 => (0u8..3, any::<bool>()).prop_map(|(key, removed)| IndexOp::Governance(vec![(
                "public:g".into(),
                format!("k{key}"),
                (!removed).then(|| vec![key]),
            )])),
            1 => kv.prop_map(IndexOp::Kv),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the transactions are split into commits, the index holds what applying
        /// them one by one to the auditor's model gives: counts summed within a commit
        /// (`apply` writes each once) and tables opened only when needed lose nothing.
        #[test]
        fn batched_commits_index_what_each_transaction_implies(
            ops in prop::collection::vec(op(), 1..60),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let index = Index::open(&dir.path().join("index.redb")).unwrap();
            let txs: Vec<(TxId, IndexOp)> = ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| (TxId::new(2, i as u64 + 1).unwrap(), op))
                .collect();
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(txs.len())).collect();
            bounds.extend([0, txs.len()]);
            bounds.sort_unstable();
            bounds.dedup();
            let mut expected = ExpectedIndex::new(true);
            for batch in bounds.windows(2).map(|w| &txs[w[0]..w[1]]) {
                index.apply(batch, None).unwrap();
                for (txid, op) in batch {
                    expected.apply(*txid, Some(op));
                }
                prop_assert_eq!(index.compare(&expected).map_err(|e| e.to_string()), Ok(()));
            }
        }
    }
}
