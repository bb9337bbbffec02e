//! Indexes over the ledger, kept in one redb database (`index.redb`): which entries belong to
//! each collection (except the default one) and tag, where the signatures are, the current
//! value of every governance table key, and idempotency keys. Where each transaction's frame
//! is lives in `tree/frames.idx` (see `tree`), at 8 bytes per transaction.
//!
//! All of it is derived from the segments. The writer commits index updates without fsync
//! (redb `Durability::None`) and a checkpoint makes them durable together with the
//! `indexed_through` watermark, so after a crash redb rolls back to the last checkpoint and
//! recovery replays the ledger from the watermark. A missing or unreadable index is rebuilt
//! from scratch the same way.

use ledger_core::TxId;
use ledger_core::entry::DEFAULT_COLLECTION;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
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
/// key digest → (seqno, view, Unix seconds of the write).
const IDEMPOTENCY: TableDefinition<&[u8; 32], (u64, u64, u64)> =
    TableDefinition::new("idempotency");

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

#[derive(Debug, thiserror::Error)]
#[error("index database: {0}")]
pub struct IndexError(String);

fn err(e: impl std::fmt::Display) -> IndexError {
    IndexError(e.to_string())
}

/// Index updates of one transaction.
#[derive(Debug, Clone)]
pub enum IndexOp {
    Entry {
        collection: String,
        tags: Vec<String>,
        idempotency: Option<ledger_core::entry::IdempotencyRecord>,
    },
    Governance(Vec<(String, String, Option<Vec<u8>>)>),
    Signature,
}

pub struct Index {
    path: PathBuf,
    /// `None` only while a reopen after a storage fault has not succeeded yet.
    db: RwLock<Option<Database>>,
}

impl Index {
    /// Opens (or creates) the index. An index of an unknown format is reported as an error so
    /// the caller can rebuild it.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let db = Self::open_db(path)?;
        Ok(Index {
            path: path.to_owned(),
            db: RwLock::new(Some(db)),
        })
    }

    fn open_db(path: &Path) -> Result<Database, IndexError> {
        let db = redb::Builder::new()
            .set_cache_size(INDEX_CACHE_BYTES)
            .create(path)
            .map_err(err)?;
        let mut tx = db.begin_write().map_err(err)?;
        tx.set_durability(Durability::Immediate).map_err(err)?;
        {
            let mut meta = tx.open_table(META).map_err(err)?;
            let format = meta.get(META_FORMAT).map_err(err)?.map(|v| v.value());
            match format {
                None => {
                    meta.insert(META_FORMAT, INDEX_FORMAT).map_err(err)?;
                }
                Some(INDEX_FORMAT) => {}
                Some(other) => return Err(IndexError(format!("unknown index format {other}"))),
            }
            tx.open_table(COLLECTION_ENTRIES).map_err(err)?;
            tx.open_table(TAG_ENTRIES).map_err(err)?;
            tx.open_table(COLLECTIONS).map_err(err)?;
            tx.open_table(TAGS).map_err(err)?;
            tx.open_table(SIGNATURES).map_err(err)?;
            tx.open_table(GOVERNANCE).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(db)
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

    fn begin_read(&self) -> Result<redb::ReadTransaction, IndexError> {
        let db = self.db.read().expect("index lock poisoned");
        db.as_ref()
            .ok_or_else(|| IndexError("the index is being reopened after a storage fault".into()))?
            .begin_read()
            .map_err(err)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, IndexError> {
        let db = self.db.read().expect("index lock poisoned");
        db.as_ref()
            .ok_or_else(|| IndexError("the index is being reopened after a storage fault".into()))?
            .begin_write()
            .map_err(err)
    }

    fn meta(&self, key: &str) -> Result<u64, IndexError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(META).map_err(err)?;
        Ok(table.get(key).map_err(err)?.map_or(0, |v| v.value()))
    }

    /// Highest seqno whose index updates are durable.
    pub fn indexed_through(&self) -> Result<u64, IndexError> {
        self.meta(META_INDEXED_THROUGH)
    }

    /// Number of leaves of the tree files known to be durable.
    pub fn tree_durable_size(&self) -> Result<u64, IndexError> {
        self.meta(META_TREE_SIZE)
    }

    /// Applies the updates of consecutive transactions. `checkpoint` makes this commit, and
    /// everything before it, durable, and records `tree_size` as the durable tree size (the
    /// caller fsyncs the tree files first).
    pub fn apply(
        &self,
        ops: &[(TxId, IndexOp)],
        checkpoint: Option<u64>,
    ) -> Result<(), IndexError> {
        let mut tx = self.begin_write()?;
        let durability = if checkpoint.is_some() {
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(durability).map_err(err)?;
        {
            let mut collection_entries = tx.open_table(COLLECTION_ENTRIES).map_err(err)?;
            let mut tag_entries = tx.open_table(TAG_ENTRIES).map_err(err)?;
            let mut collections = tx.open_table(COLLECTIONS).map_err(err)?;
            let mut tags = tx.open_table(TAGS).map_err(err)?;
            let mut signatures = tx.open_table(SIGNATURES).map_err(err)?;
            let mut governance = tx.open_table(GOVERNANCE).map_err(err)?;
            let mut meta = tx.open_table(META).map_err(err)?;
            let mut idempotency_keys = tx.open_table(IDEMPOTENCY).map_err(err)?;
            for (txid, op) in ops {
                let seqno = txid.seqno();
                match op {
                    IndexOp::Entry {
                        collection,
                        tags: entry_tags,
                        idempotency,
                    } => {
                        if let Some(record) = idempotency {
                            // A later write with the same key (after the retention window)
                            // takes the key over.
                            idempotency_keys
                                .insert(
                                    &record.key_digest.0,
                                    (seqno, txid.view(), record.unix_secs),
                                )
                                .map_err(err)?;
                        }
                        // The default collection is listed from the frame records instead:
                        // most entries are in it, and a row each would cost ~50 bytes.
                        if collection != DEFAULT_COLLECTION {
                            collection_entries
                                .insert((collection.as_str(), seqno), ())
                                .map_err(err)?;
                        }
                        let n = collections
                            .get(collection.as_str())
                            .map_err(err)?
                            .map_or(0, |v| v.value());
                        collections
                            .insert(collection.as_str(), n + 1)
                            .map_err(err)?;
                        for tag in entry_tags {
                            tag_entries
                                .insert((collection.as_str(), tag.as_str(), seqno), ())
                                .map_err(err)?;
                            let key = (collection.as_str(), tag.as_str());
                            let n = tags.get(key).map_err(err)?.map_or(0, |v| v.value());
                            tags.insert(key, n + 1).map_err(err)?;
                        }
                    }
                    IndexOp::Governance(writes) => {
                        for (table, key, value) in writes {
                            match value {
                                Some(v) => {
                                    governance.insert((table.as_str(), key.as_str()), v.as_slice())
                                }
                                None => governance.remove((table.as_str(), key.as_str())),
                            }
                            .map_err(err)?;
                        }
                    }
                    IndexOp::Signature => {
                        signatures.insert(seqno, ()).map_err(err)?;
                    }
                }
            }
            if let Some((last, _)) = ops.last() {
                meta.insert(META_INDEXED_THROUGH, last.seqno())
                    .map_err(err)?;
            }
            if let Some(tree_size) = checkpoint {
                meta.insert(META_TREE_SIZE, tree_size).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The first signature with seqno strictly greater than `seqno`.
    pub fn signature_after(&self, seqno: u64) -> Result<Option<u64>, IndexError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(SIGNATURES).map_err(err)?;
        let mut range = table.range(seqno.saturating_add(1)..).map_err(err)?;
        Ok(range
            .next()
            .transpose()
            .map_err(err)?
            .map(|(k, _)| k.value()))
    }

    /// The last signature with seqno at most `seqno`.
    pub fn signature_at_or_before(&self, seqno: u64) -> Result<Option<u64>, IndexError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(SIGNATURES).map_err(err)?;
        let mut range = table.range(..=seqno).map_err(err)?;
        Ok(range
            .next_back()
            .transpose()
            .map_err(err)?
            .map(|(k, _)| k.value()))
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
        let tx = self.begin_read()?;
        let mut out = Vec::new();
        match tag {
            None => {
                let table = tx.open_table(COLLECTION_ENTRIES).map_err(err)?;
                for item in table
                    .range((collection, from)..=(collection, to))
                    .map_err(err)?
                    .take(limit)
                {
                    out.push(item.map_err(err)?.0.value().1);
                }
            }
            Some(tag) => {
                let table = tx.open_table(TAG_ENTRIES).map_err(err)?;
                for item in table
                    .range((collection, tag, from)..=(collection, tag, to))
                    .map_err(err)?
                    .take(limit)
                {
                    out.push(item.map_err(err)?.0.value().2);
                }
            }
        }
        Ok(out)
    }

    /// The newest entry of `collection` at or before `to` (not for the default collection).
    pub fn latest_entry(&self, collection: &str, to: u64) -> Result<Option<u64>, IndexError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(COLLECTION_ENTRIES).map_err(err)?;
        let mut range = table
            .range((collection, 0)..=(collection, to))
            .map_err(err)?;
        Ok(range
            .next_back()
            .transpose()
            .map_err(err)?
            .map(|(k, _)| k.value().1))
    }

    /// All collections with their entry counts.
    pub fn collections(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(COLLECTIONS).map_err(err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_owned(), v.value()));
        }
        Ok(out)
    }

    /// Tags used in `collection`, with their entry counts.
    pub fn tags(&self, collection: &str) -> Result<Vec<(String, u64)>, IndexError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(TAGS).map_err(err)?;
        let mut out = Vec::new();
        for item in table.range((collection, "")..).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            let (c, t) = k.value();
            if c != collection {
                break;
            }
            out.push((t.to_owned(), v.value()));
        }
        Ok(out)
    }

    /// The write made with an idempotency key digest, and its Unix seconds.
    pub fn idempotent_write(
        &self,
        key_digest: &[u8; 32],
    ) -> Result<Option<(TxId, u64)>, IndexError> {
        let tx = self.begin_read()?;
        let table = match tx.open_table(IDEMPOTENCY) {
            Ok(t) => t,
            // No idempotent write was ever indexed.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let Some((seqno, view, unix_secs)) = table.get(key_digest).map_err(err)?.map(|v| v.value())
        else {
            return Ok(None);
        };
        let txid =
            TxId::new(view, seqno).ok_or_else(|| err("an indexed transaction has view 0"))?;
        Ok(Some((txid, unix_secs)))
    }

    /// Whether any entry of `collection` carries `tag` (a point lookup, unlike [`Index::tags`]).
    pub fn has_tag(&self, collection: &str, tag: &str) -> Result<bool, IndexError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(TAGS).map_err(err)?;
        Ok(table.get((collection, tag)).map_err(err)?.is_some())
    }

    /// Current value of a governance key.
    pub fn governance(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let tx = self.begin_read()?;
        let t = tx.open_table(GOVERNANCE).map_err(err)?;
        Ok(t.get((table, key))
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    /// All keys and values of a governance table.
    pub fn governance_table(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        let tx = self.begin_read()?;
        let t = tx.open_table(GOVERNANCE).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range((table, "")..).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            let (tb, key) = k.value();
            if tb != table {
                break;
            }
            out.push((key.to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}
