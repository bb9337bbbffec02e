//! The fork guard: the last (seqno, root) this node signed, remembered apart from the ledger.
//!
//! If an old backup is copied over the segments, the ledger would resume from an earlier seqno
//! and sign different roots for sizes it has already signed: two valid receipts for one txid
//! that disagree. The guard makes the store refuse that. Recovery compares the guard with the
//! ledger: a ledger that ends before the guarded signature, or whose root at the guarded size
//! differs, is not opened. The guard file is replaced atomically at checkpoints (about once a
//! second) and at close, and it lives outside the data directory when `fork_guard_path` says
//! so, which also survives a restore of the whole directory.

use ledger_core::hash::Hash32;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedPoint {
    /// Seqno of the signature transaction; it signs the root of the leaves before it.
    pub seqno: u64,
    pub root: Hash32,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("fork guard {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fork guard {0} is malformed; it must be `<seqno> <64 hex root>`")]
    Malformed(PathBuf),
}

pub struct ForkGuard {
    path: PathBuf,
    last: Option<SignedPoint>,
}

impl ForkGuard {
    pub fn load(path: &Path) -> Result<ForkGuard, GuardError> {
        let last = match fs::read_to_string(path) {
            Ok(text) => Some(parse(&text).ok_or_else(|| GuardError::Malformed(path.to_owned()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(GuardError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(ForkGuard {
            path: path.to_owned(),
            last,
        })
    }

    pub fn last(&self) -> Option<SignedPoint> {
        self.last
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably records `point` (write a temporary file, fsync, rename, fsync the directory).
    pub fn record(&mut self, point: SignedPoint) -> Result<(), GuardError> {
        if self.last == Some(point) {
            return Ok(());
        }
        let io = |source| GuardError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(format!("{} {}\n", point.seqno, point.root.to_hex()).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.last = Some(point);
        Ok(())
    }
}

fn parse(text: &str) -> Option<SignedPoint> {
    let (seqno, root) = text.trim().split_once(' ')?;
    Some(SignedPoint {
        seqno: seqno.parse().ok()?,
        root: Hash32::from_hex(root).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fork-guard");
        let mut guard = ForkGuard::load(&path).unwrap();
        assert_eq!(guard.last(), None);
        let point = SignedPoint {
            seqno: 42,
            root: ledger_core::hash::sha256(b"r"),
        };
        guard.record(point).unwrap();
        assert_eq!(ForkGuard::load(&path).unwrap().last(), Some(point));
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            ForkGuard::load(&path),
            Err(GuardError::Malformed(_))
        ));
    }
}
