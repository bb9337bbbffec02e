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
//! durable size is recorded (in the index's metadata) only after a checkpoint fsyncs them;
//! recovery cuts them back to that size and re-derives the rest from the ledger.

use crate::faults::{Faults, StorageOp, write_all_counted};
use ledger_core::entry::{DEFAULT_COLLECTION, TxBody};
use ledger_core::hash::{Hash32, hash_children};
use ledger_core::merkle::{self, Frontier, NodeSource};
use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io;
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

/// File of stored index `k`: the frame records for `k = 0`, level `4k` otherwise.
fn stored_path(dir: &Path, k: usize) -> PathBuf {
    if k == 0 {
        dir.join(FRAMES_FILE)
    } else {
        dir.join(format!("level-{:02}.hashes", k as u32 * TILE_STRIDE))
    }
}

/// Bytes per element of stored index `k`.
fn unit_len(k: usize) -> u64 {
    if k == 0 { RECORD_LEN } else { HASH_LEN }
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
        }
    }

    fn from_byte(b: u8) -> Option<EntryClass> {
        Some(match b {
            0 => EntryClass::NoTransaction,
            1 => EntryClass::DefaultCollectionEntry,
            2 => EntryClass::OtherCollectionEntry,
            3 => EntryClass::Governance,
            4 => EntryClass::Signature,
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

/// Read access to the level files, shared by readers and the writer.
pub struct TreeFiles {
    dir: PathBuf,
    /// Index `k` is stored level `k * TILE_STRIDE`.
    levels: RwLock<Vec<File>>,
    /// The writer's view: bytes of each level file known to be written, and whether a failed
    /// append may have left a partial write beyond them.
    written: Mutex<(Vec<u64>, bool)>,
}

impl TreeFiles {
    /// Opens the tree directory and cuts the level files back to the durable size `size`
    /// (everything beyond it may be a partial write from before a crash).
    pub fn open(dir: &Path, size: u64) -> io::Result<TreeFiles> {
        fs::create_dir_all(dir)?;
        match fs::remove_file(dir.join(LEGACY_LEAVES_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut levels = Vec::new();
        let mut lens = Vec::new();
        for k in 0usize.. {
            let level = k as u32 * TILE_STRIDE;
            let path = stored_path(dir, k);
            let unit = unit_len(k);
            let wanted = if level < 64 { size >> level } else { 0 };
            if !path.exists() {
                if wanted == 0 {
                    break;
                }
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} is missing", path.display()),
                ));
            }
            // Append mode: new hashes must go after the kept ones, not at the file's start.
            let file = OpenOptions::new().read(true).append(true).open(&path)?;
            let have = file.metadata()?.len() / unit;
            if have < wanted {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} holds {have} elements, {wanted} were made durable",
                        path.display()
                    ),
                ));
            }
            file.set_len(wanted * unit)?;
            levels.push(file);
            lens.push(wanted * unit);
        }
        Ok(TreeFiles {
            dir: dir.to_owned(),
            levels: RwLock::new(levels),
            written: Mutex::new((lens, false)),
        })
    }

    /// Removes all level files (the tree is then rebuilt from the ledger).
    pub fn reset(dir: &Path) -> io::Result<()> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)
    }

    fn read_stored(&self, stored_index: usize, first: u64, count: u64) -> io::Result<Vec<u8>> {
        let levels = self.levels.read().expect("tree lock poisoned");
        let file = levels
            .get(stored_index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "tree level not stored yet"))?;
        let unit = unit_len(stored_index);
        let mut buf = vec![0u8; (count * unit) as usize];
        file.read_exact_at(&mut buf, first * unit)?;
        Ok(buf)
    }

    /// The frame records of leaves `first .. first + count`.
    pub fn records(&self, first: u64, count: u64) -> io::Result<Vec<FrameRecord>> {
        let bytes = self.read_stored(0, first, count)?;
        bytes
            .chunks_exact(RECORD_LEN as usize)
            .map(|b| {
                FrameRecord::decode(b).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "unreadable frame record")
                })
            })
            .collect()
    }

    /// The frame record of leaf (seqno) `seqno`, if it has been written.
    pub fn record(&self, seqno: u64) -> io::Result<Option<FrameRecord>> {
        if seqno >= self.records_written() {
            return Ok(None);
        }
        Ok(self.records(seqno, 1)?.pop())
    }

    /// How many records (leaves) have been written.
    pub fn records_written(&self) -> u64 {
        let written = self.written.lock().expect("tree lock poisoned");
        written.0.first().map_or(0, |len| len / RECORD_LEN)
    }

    /// The hash of a complete subtree at a stored level (a non-zero multiple of
    /// [`TILE_STRIDE`]) or above it.
    fn upper_subtree_hash(&self, level: u32, index: u64) -> io::Result<Hash32> {
        let base = level - level % TILE_STRIDE;
        debug_assert!(base > 0, "level 0 is not stored");
        let width = 1u64 << (level - base);
        let bytes = self.read_stored((base / TILE_STRIDE) as usize, index * width, width)?;
        let hashes = bytes
            .chunks_exact(HASH_LEN as usize)
            .map(|c| Hash32(c.try_into().expect("32 bytes")))
            .collect();
        Ok(fold(hashes))
    }

    /// Appends hashes of newly completed subtrees; `pending[k]` goes to stored level `k`.
    /// What was appended is removed from `pending`; after a failure the rest stays there and a
    /// partial write is cut off before the next attempt, so retrying never duplicates hashes.
    fn append(&self, pending: &mut [Vec<u8>], faults: &Faults) -> io::Result<()> {
        let mut written = self.written.lock().expect("tree lock poisoned");
        let (lens, dirty) = &mut *written;
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
                let path = stored_path(&self.dir, k);
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
            }
            let levels = self.levels.read().expect("tree lock poisoned");
            let file = &levels[k];
            if let Err((n, e)) = write_all_counted(file, bytes, faults, StorageOp::TreeWrite) {
                *dirty = n > 0;
                return Err(e);
            }
            lens[k] += bytes.len() as u64;
            bytes.clear();
        }
        Ok(())
    }

    /// Cuts the files back to a tree of `size` leaves, when a suffix of the ledger is cut off
    /// (a follower's uncommitted suffix). Not durable until the next [`TreeFiles::sync`].
    pub(crate) fn truncate(&self, size: u64) -> io::Result<()> {
        let mut written = self.written.lock().expect("tree lock poisoned");
        let (lens, dirty) = &mut *written;
        let levels = self.levels.read().expect("tree lock poisoned");
        for (k, (file, len)) in levels.iter().zip(lens.iter_mut()).enumerate() {
            let level = k as u32 * TILE_STRIDE;
            let wanted = if level < 64 { size >> level } else { 0 } * unit_len(k);
            if wanted < *len || *dirty {
                *len = wanted.min(*len);
                file.set_len(*len)?;
            }
        }
        *dirty = false;
        Ok(())
    }

    /// fsyncs every level file and the directory (new level files).
    pub fn sync(&self) -> io::Result<()> {
        self.sync_with(&Faults::none())
    }

    pub(crate) fn sync_with(&self, faults: &Faults) -> io::Result<()> {
        faults.check(StorageOp::TreeSync)?;
        for file in self.levels.read().expect("tree lock poisoned").iter() {
            file.sync_data()?;
        }
        File::open(&self.dir)?.sync_all()
    }
}

fn fold(mut hashes: Vec<Hash32>) -> Hash32 {
    while hashes.len() > 1 {
        hashes = hashes
            .chunks_exact(2)
            .map(|p| hash_children(&p[0], &p[1]))
            .collect();
    }
    hashes[0]
}

/// Recomputes the leaves of a range of transactions from their entries (the segments).
pub trait LeafReader {
    fn leaves(&self, first: u64, count: u64) -> io::Result<Vec<Hash32>>;
}

/// The whole tree as a [`NodeSource`]: stored levels from the files, and the lower levels of
/// one run of 16 leaves recomputed from its entries. The run is read once and kept, since an
/// inclusion path asks for every lower level of the same run.
pub struct TreeNodes<'a, R> {
    files: &'a TreeFiles,
    reader: &'a R,
    run: RefCell<Option<(u64, Vec<Hash32>)>>,
}

impl<'a, R: LeafReader> TreeNodes<'a, R> {
    pub fn new(files: &'a TreeFiles, reader: &'a R) -> Self {
        TreeNodes {
            files,
            reader,
            run: RefCell::new(None),
        }
    }
}

impl<R: LeafReader> NodeSource for TreeNodes<'_, R> {
    type Error = io::Error;

    fn subtree_hash(&self, level: u32, index: u64) -> io::Result<Hash32> {
        if level >= TILE_STRIDE {
            return self.files.upper_subtree_hash(level, index);
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
            // written leaf.
            let written = self.files.records_written();
            let count = RUN
                .min(written.saturating_sub(run * RUN))
                .max(needed as u64);
            *cached = Some((run, self.reader.leaves(run * RUN, count)?));
        }
        let (_, leaves) = cached.as_ref().expect("filled above");
        let start = (first - run * RUN) as usize;
        Ok(fold(leaves[start..start + width as usize].to_vec()))
    }
}

/// The writer's side: the frontier (for roots on the hot path) and buffered level appends.
/// Cheap to clone (O(log n)), which the writer does to stage a batch it may have to drop.
#[derive(Clone)]
pub struct TreeWriter {
    frontier: Frontier,
    pending: Vec<Vec<u8>>,
    completed: Vec<(u32, u64, Hash32)>,
}

impl TreeWriter {
    /// Rebuilds the frontier for a tree of `size` leaves.
    pub fn resume(
        nodes: &impl NodeSource<Error = io::Error>,
        size: u64,
    ) -> Result<TreeWriter, merkle::ProofError<io::Error>> {
        let frontier = if size == 0 {
            Frontier::new()
        } else {
            Frontier::from_source(nodes, size)?
        };
        Ok(TreeWriter {
            frontier,
            pending: Vec::new(),
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

    /// Adds the next leaf, with the record of the transaction it is the leaf of.
    pub fn push(&mut self, leaf: Hash32, record: FrameRecord) {
        if self.pending.is_empty() {
            self.pending.push(Vec::new());
        }
        self.pending[0].extend_from_slice(&record.encode());
        self.completed.clear();
        self.frontier.push(leaf, &mut self.completed);
        for &(level, _, hash) in &self.completed {
            if level > 0 && level % TILE_STRIDE == 0 {
                let k = (level / TILE_STRIDE) as usize;
                if self.pending.len() <= k {
                    self.pending.resize_with(k + 1, Vec::new);
                }
                self.pending[k].extend_from_slice(&hash.0);
            }
        }
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
        self.pending.iter().any(|p| !p.is_empty())
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
        fn leaves(&self, first: u64, count: u64) -> io::Result<Vec<Hash32>> {
            self.0
                .get(first as usize..(first + count) as usize)
                .map(<[Hash32]>::to_vec)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "leaf not written"))
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
        let files = TreeFiles::open(dir.path(), 0).unwrap();
        let mut writer = TreeWriter::resume(&TreeNodes::new(&files, &reader), 0).unwrap();
        let mut memory = MemoryTree::new();
        for (i, leaf) in leaves.iter().enumerate() {
            writer.push(
                *leaf,
                FrameRecord::new(i as u64 * 100, EntryClass::Governance, leaf),
            );
            memory.push(*leaf);
            if i % 37 == 0 {
                writer.flush(&files).unwrap();
            }
        }
        writer.flush(&files).unwrap();
        assert_eq!(files.records_written(), 300);
        assert_eq!(files.record(299).unwrap().unwrap().offset, 29_900);
        assert!(!dir.path().join("level-00.hashes").exists());

        let nodes = TreeNodes::new(&files, &reader);
        for size in 1..=300u64 {
            assert_eq!(
                merkle::root(&nodes, size).unwrap(),
                merkle::root(&memory, size).unwrap(),
                "root at {size}"
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
        let files = TreeFiles::open(dir.path(), 213).unwrap();
        let short = Leaves(leaves[..213].to_vec());
        let resumed = TreeWriter::resume(&TreeNodes::new(&files, &short), 213).unwrap();
        assert_eq!(resumed.root(), merkle::root(&memory, 213).ok());
        assert_eq!(files.records_written(), 213);
    }
}
