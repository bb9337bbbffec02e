//! Persistent Merkle tree and per-transaction records: hashes of full subtrees, so that any
//! root, inclusion path or consistency proof costs O(log n) small reads and never a rebuild,
//! and where each transaction's frame is.
//!
//! Level files `tree/level-LL.hashes` hold, for every stored level `L` (4, 8, 12, …), the hash
//! of each complete aligned subtree of `2^L` leaves, in order: level 4 the roots of each run of
//! 16 leaves, level 8 of each run of 256, and so on. A subtree at an unstored level is folded
//! from one contiguous read of at most `2^(TILE_STRIDE-1)` hashes of the stored level below it
//! (the "tile"). Leaves themselves (level 0) are not stored: a leaf is recomputed from its
//! entry, and a subtree below level 4 from the entries of its run of 16 (one read of
//! neighbouring frames, see [`TreeNodes`]). That costs about 2 bytes per transaction, against
//! 34 with the leaves stored.
//!
//! In place of level 0, `tree/frames.idx` holds one 8-byte [`FrameRecord`] per leaf: where the
//! transaction's frame is, what kind of transaction it is, and two bytes of its leaf hash
//! (which lets the auditor name an altered transaction even if its checksum was forged).
//!
//! These files are derived from the segments and are not fsync'd on the write path. Their
//! durable size is recorded (in the index's metadata) only after a checkpoint fsyncs them,
//! together with a CRC-32C of every [`CHECK_CHUNK`] bytes of each file; recovery checks them,
//! cuts them back to that size and re-derives the rest from the ledger. While the ledger is
//! open, the checksums of everything written are kept in memory, and every read checks the
//! chunks it reads: a damaged file is [`StoreError::DerivedDamaged`], never used.

use crate::StoreError;
use crate::faults::{Faults, StorageOp, write_all_counted};
use ledger_core::entry::{DEFAULT_COLLECTION, TxBody, TxKind};
use ledger_core::hash::Hash32;
use ledger_core::merkle::{self, Ccf, Frontier, NodeSource, Rfc6962, TreeHashing};
use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// Levels stored on disk are the non-zero multiples of this.
pub const TILE_STRIDE: u32 = 4;
const HASH_LEN: u64 = 32;
/// Leaves in one run of the lowest stored level.
const RUN: u64 = 1 << TILE_STRIDE;
pub const RECORD_LEN: u64 = 8;
pub const FRAMES_FILE: &str = "frames.idx";
/// The leaf hashes of format-1 tree directories; removed when the tree is next opened.
const LEGACY_LEAVES_FILE: &str = "level-00.hashes";

/// The subdirectory of `tree/` holding the RFC 6962 tree's level files.
pub const RFC6962_DIR: &str = "rfc6962";
/// Checkpoints record the checksums of the RFC 6962 files as rows of stored index
/// `RFC6962_SUMS_BASE + k`, beside the CCF tree's rows `k` (an older index has none).
pub const RFC6962_SUMS_BASE: u32 = 1 << 16;

/// Which tree a set of level files holds. Both are over the same leaves, the same size, and
/// are written, checked, checkpointed and cut back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The ledger's own tree (CCF hashing) in `tree/`: stored index 0 is `frames.idx`, the
    /// frame records standing in for its leaves; `k >= 1` is level `4k`.
    Ccf,
    /// The RFC 6962 tree for C2SP checkpoints in `tree/rfc6962/`: stored index `k` is level
    /// `4(k + 1)`; its leaves are recomputed from the CCF leaves.
    Rfc6962,
}

impl Family {
    /// File of stored index `k` in the family's directory.
    pub fn path(self, dir: &Path, k: usize) -> PathBuf {
        match (self, k) {
            (Family::Ccf, 0) => dir.join(FRAMES_FILE),
            _ => dir.join(format!("level-{:02}.hashes", self.level(k))),
        }
    }

    /// Bytes per element of stored index `k`.
    pub fn unit(self, k: usize) -> u64 {
        match (self, k) {
            (Family::Ccf, 0) => RECORD_LEN,
            _ => HASH_LEN,
        }
    }

    /// The tree level stored index `k` holds (0: the frame records, one per leaf).
    pub fn level(self, k: usize) -> u32 {
        let k = k as u32 + u32::from(self == Family::Rfc6962);
        k * TILE_STRIDE
    }

    /// The stored index of a stored level (a non-zero multiple of [`TILE_STRIDE`]).
    fn stored_index(self, level: u32) -> usize {
        debug_assert!(level > 0 && level.is_multiple_of(TILE_STRIDE));
        (level / TILE_STRIDE - u32::from(self == Family::Rfc6962)) as usize
    }

    /// Elements of stored index `k` in a tree of `size` leaves.
    pub fn wanted(self, k: usize, size: u64) -> u64 {
        let level = self.level(k);
        if level < 64 { size >> level } else { 0 }
    }

    fn sums_base(self) -> u32 {
        match self {
            Family::Ccf => 0,
            Family::Rfc6962 => RFC6962_SUMS_BASE,
        }
    }
}

/// A tree hashing whose stored levels have a [`Family`] of files.
pub trait StoredHashing: TreeHashing {
    const FAMILY: Family;
}

impl StoredHashing for Ccf {
    const FAMILY: Family = Family::Ccf;
}

impl StoredHashing for Rfc6962 {
    const FAMILY: Family = Family::Rfc6962;
}

/// What kind of transaction a record describes (listing the default collection reads it
/// instead of indexing every entry of that collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryClass {
    /// Leaf 0, which has no transaction.
    NoTransaction = 0,
    /// An application entry in the default collection (`subledger:0`).
    DefaultCollectionEntry = 1,
    /// An application entry in any other collection.
    OtherCollectionEntry = 2,
    Governance = 3,
    Signature = 4,
    /// Application-table writes without a ledger entry.
    KeyValue = 5,
}

impl EntryClass {
    pub fn of(body: &TxBody) -> EntryClass {
        match body {
            TxBody::Application(e) if e.collection_id == DEFAULT_COLLECTION => {
                EntryClass::DefaultCollectionEntry
            }
            TxBody::Application(_) => EntryClass::OtherCollectionEntry,
            TxBody::Governance(_) => EntryClass::Governance,
            TxBody::Signature(_) => EntryClass::Signature,
            TxBody::Kv(_) => EntryClass::KeyValue,
        }
    }

    /// Whether a transaction of `kind` may have this class (entries in the default and in
    /// other collections can be told apart only by decrypting them).
    pub fn admits(self, kind: TxKind) -> bool {
        matches!(
            (self, kind),
            (
                EntryClass::DefaultCollectionEntry | EntryClass::OtherCollectionEntry,
                TxKind::Application
            ) | (EntryClass::Governance, TxKind::Governance)
                | (EntryClass::Signature, TxKind::Signature)
                | (EntryClass::KeyValue, TxKind::Kv)
        )
    }

    fn from_byte(b: u8) -> Option<EntryClass> {
        Some(match b {
            0 => EntryClass::NoTransaction,
            1 => EntryClass::DefaultCollectionEntry,
            2 => EntryClass::OtherCollectionEntry,
            3 => EntryClass::Governance,
            4 => EntryClass::Signature,
            5 => EntryClass::KeyValue,
            _ => return None,
        })
    }
}

/// One transaction's record in `tree/frames.idx`: a 40-bit little-endian frame offset within
/// its segment, the [`EntryClass`] byte, and the first two bytes of the leaf hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRecord {
    pub offset: u64,
    pub class: EntryClass,
    pub leaf_check: [u8; 2],
}

impl FrameRecord {
    /// The record of leaf 0.
    pub const NONE: FrameRecord = FrameRecord {
        offset: 0,
        class: EntryClass::NoTransaction,
        leaf_check: [0, 0],
    };

    pub fn new(offset: u64, class: EntryClass, leaf: &Hash32) -> FrameRecord {
        assert!(offset < 1 << 40, "segments are far smaller than 1 TiB");
        FrameRecord {
            offset,
            class,
            leaf_check: [leaf.0[0], leaf.0[1]],
        }
    }

    pub fn encode(&self) -> [u8; RECORD_LEN as usize] {
        let mut b = [0u8; RECORD_LEN as usize];
        b[..5].copy_from_slice(&self.offset.to_le_bytes()[..5]);
        b[5] = self.class as u8;
        b[6..].copy_from_slice(&self.leaf_check);
        b
    }

    pub fn decode(b: &[u8]) -> Option<FrameRecord> {
        let mut offset = [0u8; 8];
        offset[..5].copy_from_slice(b.get(..5)?);
        Some(FrameRecord {
            offset: u64::from_le_bytes(offset),
            class: EntryClass::from_byte(*b.get(5)?)?,
            leaf_check: b.get(6..8)?.try_into().ok()?,
        })
    }

    /// Whether `leaf` may be the leaf this record was written with.
    pub fn matches_leaf(&self, leaf: &Hash32) -> bool {
        self.leaf_check == [leaf.0[0], leaf.0[1]]
    }
}

/// Bytes of a tree file covered by one checksum. Every read checks each chunk it touches, so
/// reading one record costs a read of 1 KiB and a CRC of it (a page's worth cost a receipt
/// ~8 µs more: it reads a chunk of several level files); 10M transactions have ~100,000
/// chunks, whose checksums the node keeps in memory (400 KB) and the index on disk.
pub const CHECK_CHUNK: u64 = 1024;

/// CRC-32C of each [`CHECK_CHUNK`]-byte chunk of one tree file, in order; the last one covers
/// what there is of a partial chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkSums(pub Vec<u32>);

impl ChunkSums {
    /// The checksums of a whole file's bytes.
    pub fn of(bytes: &[u8]) -> ChunkSums {
        let mut sums = ChunkSums::default();
        sums.extend(0, bytes);
        sums
    }

    /// How many chunks a file of `len` bytes has.
    pub fn chunks(len: u64) -> u64 {
        len.div_ceil(CHECK_CHUNK)
    }

    /// Accounts for `bytes` appended to a file of `len` bytes.
    fn extend(&mut self, mut len: u64, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let in_chunk = len % CHECK_CHUNK;
            let take = ((CHECK_CHUNK - in_chunk) as usize).min(bytes.len());
            let (piece, rest) = bytes.split_at(take);
            match self.0.last_mut() {
                Some(last) if in_chunk != 0 => *last = crc32c::crc32c_append(*last, piece),
                _ => self.0.push(crc32c::crc32c(piece)),
            }
            len += take as u64;
            bytes = rest;
        }
    }
}

/// The checksums recorded for both families of tree files, by stored index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSums {
    pub ccf: Vec<ChunkSums>,
    pub rfc6962: Vec<ChunkSums>,
}

/// The checksums of each stored index from (stored index, chunk, CRC-32C) rows in order, as
/// checkpoints record them (RFC 6962 files from [`RFC6962_SUMS_BASE`]); `None` if a row is
/// missing or out of place.
pub fn sums_from_rows(rows: impl IntoIterator<Item = (u32, u64, u32)>) -> Option<TreeSums> {
    let mut sums = TreeSums::default();
    for (k, chunk, sum) in rows {
        let (out, k) = match k.checked_sub(RFC6962_SUMS_BASE) {
            Some(k) => (&mut sums.rfc6962, k as usize),
            None => (&mut sums.ccf, k as usize),
        };
        if k > out.len() {
            return None;
        }
        if k == out.len() {
            out.push(ChunkSums::default());
        }
        if chunk != out[k].0.len() as u64 {
            return None;
        }
        out[k].0.push(sum);
    }
    Some(sums)
}

/// What a checkpoint records about the tree files (in the index, with their durable size):
/// the checksums of the chunks written since the last checkpoint, as (stored index, chunk,
/// CRC-32C) rows. `fresh`: nothing was recorded for these files yet (new or rebuilt), so rows
/// of earlier files must go.
#[derive(Debug, Clone, Default)]
pub struct SumsUpdate {
    /// Bytes of each file covered, CCF family then RFC 6962 family.
    pub lens: [Vec<u64>; 2],
    pub rows: Vec<(u32, u64, u32)>,
    pub fresh: bool,
}

/// The writer's view of the files: bytes of each known to be written, their checksums, and
/// how much of them the last recorded checkpoint covers.
struct Written {
    lens: Vec<u64>,
    /// A failed append may have left a partial write beyond `lens`.
    dirty: bool,
    sums: Vec<ChunkSums>,
    recorded: Vec<u64>,
}

/// One family of level files (see [`Family`]): what is written, its checksums, and reads
/// checked against them.
struct LevelFiles {
    family: Family,
    dir: PathBuf,
    /// Index `k` is stored index `k` of the family.
    levels: RwLock<Vec<File>>,
    written: Mutex<Written>,
}

impl LevelFiles {
    fn open(
        family: Family,
        dir: &Path,
        size: u64,
        recorded: &[ChunkSums],
    ) -> Result<LevelFiles, StoreError> {
        let existed = dir.exists();
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut levels = Vec::new();
        let mut lens = Vec::new();
        let mut sums = Vec::new();
        for k in 0usize.. {
            let path = family.path(dir, k);
            let unit = family.unit(k);
            let wanted = family.wanted(k, size);
            let damaged = |reason: String| StoreError::DerivedDamaged {
                file: path.clone(),
                reason,
            };
            if !path.exists() {
                if wanted == 0 {
                    break;
                }
                if !existed && family == Family::Rfc6962 {
                    return Err(damaged(format!(
                        "it is missing ({wanted} elements were made durable): the ledger was written by a release without the RFC 6962 tree, which is now built from its segments"
                    )));
                }
                return Err(damaged(format!(
                    "it is missing, but {wanted} elements of it were made durable"
                )));
            }
            // Append mode: new hashes must go after the kept ones, not at the file's start.
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?;
            let have = file.metadata().map_err(|e| StoreError::io(&path, e))?.len() / unit;
            if have < wanted {
                return Err(damaged(format!(
                    "it holds {have} elements, {wanted} were made durable"
                )));
            }
            let len = wanted * unit;
            let file_sums = if len == 0 {
                ChunkSums::default()
            } else {
                let expected = recorded.get(k).map_or(&[][..], |s| &s.0[..]);
                let needed = ChunkSums::chunks(len) as usize;
                if expected.len() < needed {
                    return Err(damaged(format!(
                        "its checksums were not recorded ({} of {needed} chunks): written by an earlier release, or the index was rebuilt",
                        expected.len()
                    )));
                }
                verify_file(&file, &path, len, &expected[..needed])?;
                ChunkSums(expected[..needed].to_vec())
            };
            file.set_len(len).map_err(|e| StoreError::io(&path, e))?;
            levels.push(file);
            lens.push(len);
            sums.push(file_sums);
        }
        Ok(LevelFiles {
            family,
            dir: dir.to_owned(),
            levels: RwLock::new(levels),
            written: Mutex::new(Written {
                recorded: lens.clone(),
                lens,
                dirty: false,
                sums,
            }),
        })
    }

    /// Elements `first .. first + count` of stored index `k`, read with the whole chunks that
    /// hold them and checked against their checksums.
    fn read_stored(
        &self,
        stored_index: usize,
        first: u64,
        count: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let path = self.family.path(&self.dir, stored_index);
        let unit = self.family.unit(stored_index);
        let (start, end) = (first * unit, (first + count) * unit);
        let (first_chunk, last_chunk) = (start / CHECK_CHUNK, end.div_ceil(CHECK_CHUNK));
        let (len, sums) = {
            let written = self.written.lock().expect("tree lock poisoned");
            let len = written.lens.get(stored_index).copied().unwrap_or(0);
            if end > len {
                return Err(StoreError::Tree(format!(
                    "{} holds {} elements; elements {first}..{} were asked for",
                    path.display(),
                    len / unit,
                    first + count
                )));
            }
            let sums =
                written.sums[stored_index].0[first_chunk as usize..last_chunk as usize].to_vec();
            (len, sums)
        };
        let from = first_chunk * CHECK_CHUNK;
        let to = (last_chunk * CHECK_CHUNK).min(len);
        let mut buf = vec![0u8; (to - from) as usize];
        {
            let levels = self.levels.read().expect("tree lock poisoned");
            levels[stored_index]
                .read_exact_at(&mut buf, from)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => StoreError::DerivedDamaged {
                        file: path.clone(),
                        reason: format!("it is shorter than the {len} bytes written to it"),
                    },
                    _ => StoreError::io(&path, e),
                })?;
        }
        check_chunks(&buf, from, &sums, &path)?;
        buf.truncate((end - from) as usize);
        buf.drain(..(start - from) as usize);
        Ok(buf)
    }

    /// The hash of a complete subtree at a stored level (a non-zero multiple of
    /// [`TILE_STRIDE`]) or above it.
    fn upper_subtree_hash<H: TreeHashing>(
        &self,
        level: u32,
        index: u64,
    ) -> Result<Hash32, StoreError> {
        let base = level - level % TILE_STRIDE;
        debug_assert!(base > 0, "level 0 is not stored");
        let width = 1u64 << (level - base);
        let bytes = self.read_stored(self.family.stored_index(base), index * width, width)?;
        let hashes = bytes
            .chunks_exact(HASH_LEN as usize)
            .map(|c| Hash32(c.try_into().expect("32 bytes")))
            .collect();
        Ok(fold::<H>(hashes))
    }

    /// Appends hashes of newly completed subtrees; `pending[k]` goes to stored level `k`.
    /// What was appended is removed from `pending`; after a failure the rest stays there and a
    /// partial write is cut off before the next attempt, so retrying never duplicates hashes.
    fn append(&self, pending: &mut [Vec<u8>], faults: &Faults) -> io::Result<()> {
        let mut written = self.written.lock().expect("tree lock poisoned");
        let Written {
            lens, dirty, sums, ..
        } = &mut *written;
        if *dirty {
            let levels = self.levels.read().expect("tree lock poisoned");
            for (file, len) in levels.iter().zip(lens.iter()) {
                if file.metadata()?.len() != *len {
                    file.set_len(*len)?;
                }
            }
            *dirty = false;
        }
        for (k, bytes) in pending.iter_mut().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            if k == lens.len() {
                let path = self.family.path(&self.dir, k);
                faults.check(StorageOp::TreeWrite)?;
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(path)?;
                let len = file.metadata()?.len();
                if len != 0 {
                    file.set_len(0)?;
                }
                self.levels.write().expect("tree lock poisoned").push(file);
                lens.push(0);
                sums.push(ChunkSums::default());
            }
            let levels = self.levels.read().expect("tree lock poisoned");
            let file = &levels[k];
            if let Err((n, e)) = write_all_counted(file, bytes, faults, StorageOp::TreeWrite) {
                *dirty = n > 0;
                return Err(e);
            }
            sums[k].extend(lens[k], bytes);
            lens[k] += bytes.len() as u64;
            bytes.clear();
        }
        Ok(())
    }

    /// Cuts the files back to a tree of `size` leaves, when a suffix of the ledger is cut off
    /// (a follower's uncommitted suffix), with their chunk checksums. Not durable until the
    /// next [`TreeFiles::sync`] and checkpoint.
    fn truncate(&self, size: u64) -> io::Result<()> {
        let mut written = self.written.lock().expect("tree lock poisoned");
        let Written {
            lens,
            dirty,
            sums,
            recorded,
        } = &mut *written;
        let levels = self.levels.read().expect("tree lock poisoned");
        for (k, (file, len)) in levels.iter().zip(lens.iter_mut()).enumerate() {
            let wanted = self.family.wanted(k, size) * self.family.unit(k);
            if wanted >= *len && !*dirty {
                continue;
            }
            *len = wanted.min(*len);
            file.set_len(*len)?;
            if let Some(sums) = sums.get_mut(k) {
                // Whole chunks keep their checksums; the last, now partial, one is summed anew.
                let whole = *len / CHECK_CHUNK;
                sums.0.truncate(whole as usize);
                let tail = (*len % CHECK_CHUNK) as usize;
                if tail > 0 {
                    let mut bytes = vec![0u8; tail];
                    file.read_exact_at(&mut bytes, whole * CHECK_CHUNK)?;
                    sums.0.push(crc32c::crc32c(&bytes));
                }
            }
            if let Some(r) = recorded.get_mut(k) {
                *r = (*r).min(*len);
            }
        }
        *dirty = false;
        Ok(())
    }

    /// The checksums of the chunks written since the last recorded checkpoint, as rows
    /// (stored index from the family's base), with the lengths they cover and whether nothing
    /// was recorded for these files before.
    fn sums_update(&self) -> (Vec<u64>, Vec<(u32, u64, u32)>, bool) {
        let written = self.written.lock().expect("tree lock poisoned");
        let mut rows = Vec::new();
        for (k, (len, sums)) in written.lens.iter().zip(&written.sums).enumerate() {
            let recorded = written.recorded.get(k).copied().unwrap_or(0);
            for chunk in recorded / CHECK_CHUNK..ChunkSums::chunks(*len) {
                rows.push((
                    self.family.sums_base() + k as u32,
                    chunk,
                    sums.0[chunk as usize],
                ));
            }
        }
        let fresh = written.recorded.iter().all(|len| *len == 0);
        (written.lens.clone(), rows, fresh)
    }

    fn sums_recorded(&self, lens: &[u64]) {
        self.written.lock().expect("tree lock poisoned").recorded = lens.to_vec();
    }

    /// fsyncs every level file and the directory (new level files).
    fn sync(&self) -> io::Result<()> {
        for file in self.levels.read().expect("tree lock poisoned").iter() {
            file.sync_data()?;
        }
        File::open(&self.dir)?.sync_all()
    }
}

/// Read access to the tree files of both trees, shared by readers and the writer.
pub struct TreeFiles {
    dir: PathBuf,
    ccf: LevelFiles,
    rfc6962: LevelFiles,
}

impl TreeFiles {
    /// Opens the tree directory, checks the files of both trees against the checksums
    /// recorded at the last checkpoint (`recorded`) and cuts them back to the durable size
    /// `size` (everything beyond it may be a partial write from before a crash). A missing,
    /// short or damaged file is [`StoreError::DerivedDamaged`] naming it: the caller rebuilds
    /// the tree files. So does a directory without the RFC 6962 files that should have some
    /// (a ledger from before them): that is how they are first built.
    pub fn open(dir: &Path, size: u64, recorded: &TreeSums) -> Result<TreeFiles, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let legacy = dir.join(LEGACY_LEAVES_FILE);
        match fs::remove_file(&legacy) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(StoreError::io(&legacy, e));
            }
            _ => {}
        }
        let ccf = LevelFiles::open(Family::Ccf, dir, size, &recorded.ccf)?;
        let rfc6962 = LevelFiles::open(
            Family::Rfc6962,
            &dir.join(RFC6962_DIR),
            size,
            &recorded.rfc6962,
        )?;
        Ok(TreeFiles {
            dir: dir.to_owned(),
            ccf,
            rfc6962,
        })
    }

    /// Removes all tree files (they are then rebuilt from the ledger).
    pub fn reset(dir: &Path) -> io::Result<()> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)
    }

    /// The path of the frame records, `tree/frames.idx`.
    pub fn records_path(&self) -> PathBuf {
        Family::Ccf.path(&self.dir, 0)
    }

    /// The tree directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn family(&self, family: Family) -> &LevelFiles {
        match family {
            Family::Ccf => &self.ccf,
            Family::Rfc6962 => &self.rfc6962,
        }
    }

    /// The frame records of leaves `first .. first + count`.
    pub fn records(&self, first: u64, count: u64) -> Result<Vec<FrameRecord>, StoreError> {
        let bytes = self.ccf.read_stored(0, first, count)?;
        bytes
            .chunks_exact(RECORD_LEN as usize)
            .enumerate()
            .map(|(i, b)| {
                FrameRecord::decode(b).ok_or_else(|| StoreError::DerivedDamaged {
                    file: self.records_path(),
                    reason: format!("the record of seqno {} is unreadable", first + i as u64),
                })
            })
            .collect()
    }

    /// The frame record of leaf (seqno) `seqno`, if it has been written.
    pub fn record(&self, seqno: u64) -> Result<Option<FrameRecord>, StoreError> {
        if seqno >= self.records_written() {
            return Ok(None);
        }
        Ok(self.records(seqno, 1)?.pop())
    }

    /// How many records (leaves) have been written.
    pub fn records_written(&self) -> u64 {
        let written = self.ccf.written.lock().expect("tree lock poisoned");
        written.lens.first().map_or(0, |len| len / RECORD_LEN)
    }

    /// The hash of a complete subtree of the tree hashed by `H` at a stored level (a non-zero
    /// multiple of [`TILE_STRIDE`]) or above it.
    fn upper_subtree_hash<H: StoredHashing>(
        &self,
        level: u32,
        index: u64,
    ) -> Result<Hash32, StoreError> {
        self.family(H::FAMILY).upper_subtree_hash::<H>(level, index)
    }

    /// Appends the hashes of newly completed subtrees of both trees (see
    /// [`LevelFiles::append`]); the RFC 6962 tree's only once the CCF tree's are written, so
    /// a retry after a failure never writes either twice.
    fn append(&self, pending: &mut [Vec<Vec<u8>>; 2], faults: &Faults) -> io::Result<()> {
        let [ccf, rfc6962] = pending;
        self.ccf.append(ccf, faults)?;
        self.rfc6962.append(rfc6962, faults)
    }

    /// Cuts the files of both trees back to a tree of `size` leaves, when a suffix of the
    /// ledger is cut off (a follower's uncommitted suffix), with their chunk checksums. Not
    /// durable until the next [`TreeFiles::sync`] and checkpoint.
    pub(crate) fn truncate(&self, size: u64) -> io::Result<()> {
        self.ccf.truncate(size)?;
        self.rfc6962.truncate(size)
    }

    /// The checksums a checkpoint records: those of the chunks written since the last one.
    /// Call when every file is written up to the size being checkpointed.
    pub(crate) fn sums_update(&self) -> SumsUpdate {
        let (ccf_lens, mut rows, ccf_fresh) = self.ccf.sums_update();
        let (rfc_lens, rfc_rows, _) = self.rfc6962.sums_update();
        rows.extend(rfc_rows);
        SumsUpdate {
            lens: [ccf_lens, rfc_lens],
            rows,
            // Both families are only ever created or rebuilt together (a reset removes the
            // whole directory), and `frames.idx` exists from leaf 0 on; the RFC 6962 family
            // alone has no files below 16 leaves, which says nothing about older rows.
            fresh: ccf_fresh,
        }
    }

    /// `update` is recorded (durably, with the durable tree size).
    pub(crate) fn sums_recorded(&self, update: &SumsUpdate) {
        self.ccf.sums_recorded(&update.lens[0]);
        self.rfc6962.sums_recorded(&update.lens[1]);
    }

    /// fsyncs every tree file and the directories (new files).
    pub fn sync(&self) -> io::Result<()> {
        self.sync_with(&Faults::none())
    }

    pub(crate) fn sync_with(&self, faults: &Faults) -> io::Result<()> {
        faults.check(StorageOp::TreeSync)?;
        self.rfc6962.sync()?;
        self.ccf.sync()
    }
}

/// Checks the chunks of `buf` (read from offset `from`, a chunk boundary) against `sums`.
fn check_chunks(buf: &[u8], from: u64, sums: &[u32], path: &Path) -> Result<(), StoreError> {
    for (i, (chunk, sum)) in buf.chunks(CHECK_CHUNK as usize).zip(sums).enumerate() {
        if crc32c::crc32c(chunk) != *sum {
            let at = from + i as u64 * CHECK_CHUNK;
            return Err(StoreError::DerivedDamaged {
                file: path.to_owned(),
                reason: format!(
                    "bytes {at}..{} do not match their checksum",
                    at + chunk.len() as u64
                ),
            });
        }
    }
    Ok(())
}

/// Checks the first `len` bytes of a file against the checksums of its chunks, reading it in
/// large blocks.
fn verify_file(file: &File, path: &Path, len: u64, sums: &[u32]) -> Result<(), StoreError> {
    const BLOCK_CHUNKS: u64 = 256;
    let mut buf = Vec::new();
    let mut chunk = 0u64;
    while chunk * CHECK_CHUNK < len {
        let from = chunk * CHECK_CHUNK;
        let to = ((chunk + BLOCK_CHUNKS) * CHECK_CHUNK).min(len);
        buf.resize((to - from) as usize, 0);
        file.read_exact_at(&mut buf, from)
            .map_err(|e| StoreError::io(path, e))?;
        let n = ChunkSums::chunks(to - from);
        check_chunks(
            &buf,
            from,
            &sums[chunk as usize..(chunk + n) as usize],
            path,
        )?;
        chunk += n;
    }
    Ok(())
}

fn fold<H: TreeHashing>(mut hashes: Vec<Hash32>) -> Hash32 {
    while hashes.len() > 1 {
        hashes = hashes
            .chunks_exact(2)
            .map(|p| H::children(&p[0], &p[1]))
            .collect();
    }
    hashes[0]
}

/// Recomputes the leaves of a range of transactions from their entries (the segments).
pub trait LeafReader {
    /// The ledger's (CCF) leaves of seqnos `first .. first + count`.
    fn leaves(&self, first: u64, count: u64) -> Result<Vec<Hash32>, StoreError>;
}

/// The whole tree hashed by `H` as a [`NodeSource`]: stored levels from the files, and the
/// lower levels of one run of 16 leaves recomputed from its entries (the CCF leaves, hashed
/// by `H`). The run is read once and kept, since an inclusion path asks for every lower level
/// of the same run.
pub struct TreeNodes<'a, R, H = Ccf> {
    files: &'a TreeFiles,
    reader: &'a R,
    run: RefCell<Option<(u64, Vec<Hash32>)>>,
    hashing: PhantomData<H>,
}

impl<'a, R: LeafReader> TreeNodes<'a, R, Ccf> {
    /// The ledger's own tree (CCF hashing).
    pub fn new(files: &'a TreeFiles, reader: &'a R) -> Self {
        Self::hashed(files, reader)
    }

    /// The RFC 6962 tree over the same leaves.
    pub fn rfc6962(files: &'a TreeFiles, reader: &'a R) -> TreeNodes<'a, R, Rfc6962> {
        TreeNodes::hashed(files, reader)
    }
}

impl<'a, R: LeafReader, H: StoredHashing> TreeNodes<'a, R, H> {
    pub fn hashed(files: &'a TreeFiles, reader: &'a R) -> Self {
        TreeNodes {
            files,
            reader,
            run: RefCell::new(None),
            hashing: PhantomData,
        }
    }
}

impl<R: LeafReader, H: StoredHashing> NodeSource for TreeNodes<'_, R, H> {
    type Error = StoreError;

    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash32, StoreError> {
        if level >= TILE_STRIDE {
            return self.files.upper_subtree_hash::<H>(level, index);
        }
        let width = 1u64 << level;
        let first = index * width;
        let run = first / RUN;
        let mut cached = self.run.borrow_mut();
        let needed = (first + width - run * RUN) as usize;
        if cached
            .as_ref()
            .is_none_or(|(r, leaves)| *r != run || leaves.len() < needed)
        {
            // The whole run when it is complete; a run still being filled up to its last
            // written leaf. Kept as this tree's leaf hashes.
            let written = self.files.records_written();
            let count = RUN
                .min(written.saturating_sub(run * RUN))
                .max(needed as u64);
            let leaves = self.reader.leaves(run * RUN, count)?;
            *cached = Some((run, leaves.iter().map(H::leaf).collect()));
        }
        let (_, leaves) = cached.as_ref().expect("filled above");
        let start = (first - run * RUN) as usize;
        Ok(fold::<H>(leaves[start..start + width as usize].to_vec()))
    }
}

/// The writer's side: the frontiers of both trees (for roots on the hot path) and buffered
/// level appends. Cheap to clone (O(log n)), which the writer does to stage a batch it may
/// have to drop.
#[derive(Clone)]
pub struct TreeWriter {
    frontier: Frontier,
    rfc6962: Frontier<Rfc6962>,
    /// Bytes for each stored index of each family ([`Family::Ccf`] first).
    pending: [Vec<Vec<u8>>; 2],
    completed: Vec<(u32, u64, Hash32)>,
}

impl TreeWriter {
    /// Rebuilds the frontiers of both trees of `size` leaves from their files and the leaves.
    pub fn resume(
        files: &TreeFiles,
        reader: &impl LeafReader,
        size: u64,
    ) -> Result<TreeWriter, merkle::ProofError<StoreError>> {
        let (frontier, rfc6962) = if size == 0 {
            (Frontier::new(), Frontier::default())
        } else {
            (
                Frontier::from_source(&TreeNodes::new(files, reader), size)?,
                Frontier::read(&TreeNodes::rfc6962(files, reader), size)?,
            )
        };
        Ok(TreeWriter {
            frontier,
            rfc6962,
            pending: [Vec::new(), Vec::new()],
            completed: Vec::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Root of the whole tree so far (None only before leaf 0).
    pub fn root(&self) -> Option<Hash32> {
        self.frontier.root()
    }

    /// Root of the whole RFC 6962 tree so far (None only before leaf 0).
    pub fn rfc6962_root(&self) -> Option<Hash32> {
        self.rfc6962.root()
    }

    /// Adds the next leaf, with the record of the transaction it is the leaf of.
    pub fn push(&mut self, leaf: Hash32, record: FrameRecord) {
        let [ccf, rfc6962] = &mut self.pending;
        if ccf.is_empty() {
            ccf.push(Vec::new());
        }
        ccf[0].extend_from_slice(&record.encode());
        self.completed.clear();
        self.frontier.push(leaf, &mut self.completed);
        buffer_stored(Family::Ccf, &self.completed, ccf);
        self.completed.clear();
        self.rfc6962.push(Rfc6962::leaf(&leaf), &mut self.completed);
        buffer_stored(Family::Rfc6962, &self.completed, rfc6962);
        debug_assert_eq!(self.frontier.size(), self.rfc6962.size());
    }

    /// Writes buffered hashes to the level files (no fsync: see the module docs).
    pub fn flush(&mut self, files: &TreeFiles) -> io::Result<()> {
        files.append(&mut self.pending, &Faults::none())
    }

    pub(crate) fn flush_with(&mut self, files: &TreeFiles, faults: &Faults) -> io::Result<()> {
        files.append(&mut self.pending, faults)
    }

    /// Whether hashes are waiting to be written.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().flatten().any(|p| !p.is_empty())
    }
}

/// Buffers the hashes of `completed` subtrees at stored levels for `family`'s files.
fn buffer_stored(family: Family, completed: &[(u32, u64, Hash32)], pending: &mut Vec<Vec<u8>>) {
    for &(level, _, hash) in completed {
        if level > 0 && level.is_multiple_of(TILE_STRIDE) {
            let k = family.stored_index(level);
            if pending.len() <= k {
                pending.resize_with(k + 1, Vec::new);
            }
            pending[k].extend_from_slice(&hash.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::hash::sha256;
    use ledger_core::merkle::MemoryTree;

    /// Leaves from memory, standing in for the segments.
    struct Leaves(Vec<Hash32>);

    impl LeafReader for Leaves {
        fn leaves(&self, first: u64, count: u64) -> Result<Vec<Hash32>, StoreError> {
            self.0
                .get(first as usize..(first + count) as usize)
                .map(<[Hash32]>::to_vec)
                .ok_or_else(|| StoreError::Tree("leaf not written".into()))
        }
    }

    #[test]
    fn records_round_trip_and_refuse_unknown_classes() {
        let leaf = sha256(b"leaf");
        let record = FrameRecord::new((1 << 40) - 1, EntryClass::Signature, &leaf);
        let bytes = record.encode();
        assert_eq!(FrameRecord::decode(&bytes), Some(record));
        assert!(record.matches_leaf(&leaf));
        assert!(!record.matches_leaf(&sha256(b"other")));
        let mut bad = bytes;
        bad[5] = 9;
        assert_eq!(FrameRecord::decode(&bad), None);
        assert_eq!(FrameRecord::decode(&bytes[..7]), None);
    }

    /// Roots, inclusion paths and consistency proofs from the stored levels plus recomputed
    /// leaves equal those of a tree kept whole in memory, at every size, across reopen.
    #[test]
    fn stored_levels_with_recomputed_leaves_give_the_in_memory_tree() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Hash32> = (0..300u32)
            .map(|i| {
                if i == 0 {
                    Hash32::ZERO
                } else {
                    sha256(&i.to_le_bytes())
                }
            })
            .collect();
        let reader = Leaves(leaves.clone());
        let files = TreeFiles::open(dir.path(), 0, &TreeSums::default()).unwrap();
        let mut writer = TreeWriter::resume(&files, &reader, 0).unwrap();
        let mut memory = MemoryTree::new();
        let mut memory_rfc = merkle::rfc6962::MemoryTree::default();
        let mut at_213 = None;
        for (i, leaf) in leaves.iter().enumerate() {
            writer.push(
                *leaf,
                FrameRecord::new(i as u64 * 100, EntryClass::Governance, leaf),
            );
            memory.push(*leaf);
            memory_rfc.push(Rfc6962::leaf(leaf));
            assert_eq!(writer.rfc6962_root(), memory_rfc.root());
            if i % 37 == 0 || i == 212 {
                writer.flush(&files).unwrap();
            }
            if i == 212 {
                // A checkpoint records the checksums of the files as they are now.
                at_213 = Some(files.sums_update());
            }
        }
        writer.flush(&files).unwrap();
        assert_eq!(files.records_written(), 300);
        assert_eq!(files.record(299).unwrap().unwrap().offset, 29_900);
        assert!(!dir.path().join("level-00.hashes").exists());

        let nodes = TreeNodes::new(&files, &reader);
        let rfc_nodes = TreeNodes::rfc6962(&files, &reader);
        assert!(dir.path().join("rfc6962/level-04.hashes").exists());
        assert!(dir.path().join("rfc6962/level-08.hashes").exists());
        assert!(!dir.path().join("rfc6962/level-00.hashes").exists());
        for size in 1..=300u64 {
            assert_eq!(
                merkle::root(&nodes, size).unwrap(),
                merkle::root(&memory, size).unwrap(),
                "root at {size}"
            );
            assert_eq!(
                merkle::rfc6962::root(&rfc_nodes, size).unwrap(),
                merkle::rfc6962::root(&memory_rfc, size).unwrap(),
                "RFC 6962 root at {size}"
            );
        }
        for (old, new) in [(1, 300), (16, 17), (100, 257), (255, 300), (7, 7)] {
            assert_eq!(
                merkle::rfc6962::consistency_proof(&rfc_nodes, old, new).unwrap(),
                merkle::rfc6962::consistency_proof(&memory_rfc, old, new).unwrap(),
                "RFC 6962 consistency {old} -> {new}"
            );
        }
        for (leaf, size) in [(0, 1), (17, 300), (256, 299)] {
            assert_eq!(
                merkle::rfc6962::inclusion_path(&rfc_nodes, leaf, size).unwrap(),
                merkle::rfc6962::inclusion_path(&memory_rfc, leaf, size).unwrap(),
                "RFC 6962 path of {leaf} in {size}"
            );
        }
        for (leaf, size) in [
            (1, 2),
            (17, 300),
            (255, 256),
            (256, 299),
            (298, 299),
            (5, 21),
        ] {
            assert_eq!(
                merkle::inclusion_path(&nodes, leaf, size).unwrap(),
                merkle::inclusion_path(&memory, leaf, size).unwrap(),
                "path of {leaf} in {size}"
            );
        }
        for (old, new) in [(1, 300), (16, 17), (100, 257), (255, 300)] {
            assert_eq!(
                merkle::consistency_proof(&nodes, old, new).unwrap(),
                merkle::consistency_proof(&memory, old, new).unwrap(),
                "consistency {old} -> {new}"
            );
        }

        // A resumed writer (after a checkpoint at 213 leaves) continues the same tree.
        files.sync().unwrap();
        drop(files);
        let recorded = sums_from_rows(at_213.unwrap().rows).unwrap();
        let files = TreeFiles::open(dir.path(), 213, &recorded).unwrap();
        let short = Leaves(leaves[..213].to_vec());
        let resumed = TreeWriter::resume(&files, &short, 213).unwrap();
        assert_eq!(resumed.root(), merkle::root(&memory, 213).ok());
        assert_eq!(
            resumed.rfc6962_root(),
            merkle::rfc6962::root(&memory_rfc, 213).ok()
        );
        assert_eq!(files.records_written(), 213);
    }

    /// Checksums kept while appending in pieces equal those of the whole file; a flipped byte
    /// is found on open and by every read of its chunk, and only of its chunk.
    #[test]
    fn chunks_are_checked_on_open_and_on_every_read() {
        let mut pieces = ChunkSums::default();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut at = 0;
        for n in [1usize, 4095, 1, 3000, 2903] {
            pieces.extend(at as u64, &bytes[at..at + n]);
            at += n;
        }
        assert_eq!(pieces, ChunkSums::of(&bytes));
        assert_eq!(pieces.0.len(), 10_000usize.div_ceil(CHECK_CHUNK as usize));

        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Hash32> = (0..1000u32).map(|i| sha256(&i.to_le_bytes())).collect();
        let files = TreeFiles::open(dir.path(), 0, &TreeSums::default()).unwrap();
        let mut writer = TreeWriter::resume(&files, &Leaves(leaves.clone()), 0).unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            writer.push(
                *leaf,
                FrameRecord::new(i as u64, EntryClass::Governance, leaf),
            );
        }
        writer.flush(&files).unwrap();
        files.sync().unwrap();
        let recorded = sums_from_rows(files.sums_update().rows).unwrap();
        drop(files);
        let records = dir.path().join(FRAMES_FILE);
        let flip = |offset: u64| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&records)
                .unwrap();
            let mut b = [0u8];
            file.read_exact_at(&mut b, offset).unwrap();
            file.write_all_at(&[b[0] ^ 0x20], offset).unwrap();
        };

        flip(5000);
        match TreeFiles::open(dir.path(), 1000, &recorded) {
            Err(StoreError::DerivedDamaged { file, reason }) => {
                assert_eq!(file, records);
                assert_eq!(reason, "bytes 4096..5120 do not match their checksum");
            }
            other => panic!("open of a damaged file: {:?}", other.map(|_| ())),
        }
        flip(5000);
        let files = TreeFiles::open(dir.path(), 1000, &recorded).unwrap();
        assert_eq!(files.record(3).unwrap().unwrap().offset, 3);
        flip(30);
        assert!(matches!(
            files.record(3),
            Err(StoreError::DerivedDamaged { file, .. }) if file == records
        ));
        assert_eq!(files.record(600).unwrap().unwrap().offset, 600);
        // The checksums are the writer's, not re-read from the file.
        assert!(files.records(0, 1000).is_err());
        flip(30);
        assert_eq!(files.records(0, 1000).unwrap().len(), 1000);

        // Without recorded checksums the files cannot be trusted.
        drop(files);
        assert!(matches!(
            TreeFiles::open(dir.path(), 1000, &TreeSums::default()),
            Err(StoreError::DerivedDamaged { .. })
        ));
    }
}
