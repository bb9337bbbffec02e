//! Persistent Merkle tree: hashes of full subtrees, so that any root, inclusion path or
//! consistency proof costs O(log n) small reads and never a rebuild.
//!
//! Level files `tree/level-LL.hashes` hold, for every stored level `L` (a multiple of
//! [`TILE_STRIDE`]), the hash of each complete aligned subtree of `2^L` leaves, in order: level
//! 0 is the leaf hashes, level 4 the roots of each run of 16 leaves, and so on. A subtree at an
//! unstored level is folded from one contiguous read of at most `2^(TILE_STRIDE-1)` hashes of
//! the stored level below it (the "tile"). Storing every fourth level costs about 2 bytes per
//! leaf beyond the leaf hash itself, against 32 for storing every level.
//!
//! These files are derived from the segments and are not fsync'd on the write path. Their
//! durable size is recorded (in the index's metadata) only after a checkpoint fsyncs them;
//! recovery cuts them back to that size and re-derives the rest from the ledger.

use crate::faults::{Faults, StorageOp, write_all_counted};
use ledger_core::hash::{Hash32, hash_children};
use ledger_core::merkle::{self, Frontier, NodeSource};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// Levels stored on disk are the multiples of this.
pub const TILE_STRIDE: u32 = 4;
const HASH_LEN: u64 = 32;

fn level_path(dir: &Path, level: u32) -> PathBuf {
    dir.join(format!("level-{level:02}.hashes"))
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
        let mut levels = Vec::new();
        let mut lens = Vec::new();
        for k in 0.. {
            let level = k * TILE_STRIDE;
            let path = level_path(dir, level);
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
            let have = file.metadata()?.len() / HASH_LEN;
            if have < wanted {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} holds {have} hashes, {wanted} were made durable",
                        path.display()
                    ),
                ));
            }
            file.set_len(wanted * HASH_LEN)?;
            levels.push(file);
            lens.push(wanted * HASH_LEN);
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

    fn read_hashes(&self, stored_index: usize, first: u64, count: u64) -> io::Result<Vec<Hash32>> {
        let levels = self.levels.read().expect("tree lock poisoned");
        let file = levels
            .get(stored_index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "tree level not stored yet"))?;
        let mut buf = vec![0u8; (count * HASH_LEN) as usize];
        file.read_exact_at(&mut buf, first * HASH_LEN)?;
        Ok(buf
            .chunks_exact(32)
            .map(|c| Hash32(c.try_into().expect("32 bytes")))
            .collect())
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
                let path = level_path(&self.dir, k as u32 * TILE_STRIDE);
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

impl NodeSource for TreeFiles {
    type Error = io::Error;

    fn subtree_hash(&self, level: u32, index: u64) -> io::Result<Hash32> {
        let base = level - level % TILE_STRIDE;
        let width = 1u64 << (level - base);
        let mut hashes = self.read_hashes((base / TILE_STRIDE) as usize, index * width, width)?;
        while hashes.len() > 1 {
            hashes = hashes
                .chunks_exact(2)
                .map(|p| hash_children(&p[0], &p[1]))
                .collect();
        }
        Ok(hashes[0])
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
    /// Rebuilds the frontier for a tree of `size` leaves from the files.
    pub fn resume(
        files: &TreeFiles,
        size: u64,
    ) -> Result<TreeWriter, merkle::ProofError<io::Error>> {
        let frontier = if size == 0 {
            Frontier::new()
        } else {
            Frontier::from_source(files, size)?
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

    pub fn push(&mut self, leaf: Hash32) {
        self.completed.clear();
        self.frontier.push(leaf, &mut self.completed);
        for &(level, _, hash) in &self.completed {
            if level % TILE_STRIDE == 0 {
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
