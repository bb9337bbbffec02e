//! Online backup: a consistent copy of a ledger directory, taken while a server writes to it.
//!
//! Why a plain copy in the right order is enough:
//! * segment files are append-only and a frame is never rewritten, so copying them in
//!   ascending order yields a prefix of the ledger, except that the last copied frame may be
//!   an append still in progress; that partial frame is cut, exactly as crash recovery would;
//! * the fork guard is copied *first*: it only ever names a signature that was already
//!   durable in the segments, so the segments copied after it always reach it, and the copy
//!   opens without looking "rolled back";
//! * the index and the Merkle level files are derived and not copied: the first open of the
//!   copy rebuilds them from the segments (minutes for tens of millions of entries);
//! * keys, identity and the service certificate never change after creation.
//!
//! The copy is then audited (keyless, like `cledger audit`), so a backup that would not verify
//! is reported at once rather than at restore time. Restoring means serving the copy. Entries
//! written after the copy was taken are not in it; see docs/OPERATIONS.md before restoring
//! anything but the latest state.

use crate::audit::{self, AuditReport};
use crate::segment;
use ledger_core::TxId;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Files and directories copied as they are, in this order (the fork guard first).
const STATIC_ENTRIES: [&str; 5] = [
    "fork-guard",
    "service_cert.pem",
    "identity",
    "keys",
    "admin.pem",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub segments: usize,
    pub bytes: u64,
    /// Bytes of an append in progress that were left out of the copy.
    pub cut_bytes: u64,
    /// The last transaction in the copy.
    pub last: Option<TxId>,
    pub audit: AuditReport,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} is not a ledger directory (no ledger/ segments)")]
    NotALedger(PathBuf),
    #[error("{0} exists and is not empty; back up into a new directory")]
    DestinationNotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the copy holds damage, not only an interrupted append: {0}")]
    Damaged(String),
    #[error("the copy does not verify: {0}")]
    Audit(#[from] audit::AuditFailure),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies the ledger in `source` to the new directory `dest` and audits the copy.
pub fn backup(source: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    let ledger_dir = source.join("ledger");
    let segments = segment::list_segments(&ledger_dir).map_err(io_err(&ledger_dir))?;
    if segments.is_empty() {
        return Err(BackupError::NotALedger(source.to_owned()));
    }
    if fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BackupError::DestinationNotEmpty(dest.to_owned()));
    }
    fs::create_dir_all(dest.join("ledger")).map_err(io_err(dest))?;
    for name in STATIC_ENTRIES {
        copy_tree(&source.join(name), &dest.join(name))?;
    }
    // The segment list again, now that the guard is copied: a segment started meanwhile is in.
    let segments = segment::list_segments(&ledger_dir).map_err(io_err(&ledger_dir))?;
    let mut report = BackupReport {
        segments: segments.len(),
        bytes: 0,
        cut_bytes: 0,
        last: None,
        audit: AuditReport::default(),
    };
    let mut prev: Option<TxId> = None;
    for (i, (_, path)) in segments.iter().enumerate() {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let scan = segment::scan_segment(&bytes, prev);
        let keep = match &scan.damage {
            // Preallocated zeros after the last frame are not copied.
            None => scan.data_end(),
            // Only the newest segment may end in an append in progress.
            Some(d) if d.torn && i + 1 == segments.len() => d.offset,
            Some(d) => {
                return Err(BackupError::Damaged(format!(
                    "{} at offset {}: {}",
                    path.display(),
                    d.offset,
                    d.fault
                )));
            }
        };
        if let Some(last) = scan.frames.iter().take_while(|f| f.end() <= keep).last() {
            prev = Some(last.txid);
        }
        let target = dest
            .join("ledger")
            .join(path.file_name().expect("segment file name"));
        fs::write(&target, &bytes[..keep as usize]).map_err(io_err(&target))?;
        sync(&target)?;
        report.bytes += keep;
        report.cut_bytes += segment::written_len(&bytes[keep as usize..]);
    }
    segment::sync_dir(&dest.join("ledger")).map_err(io_err(dest))?;
    segment::sync_dir(dest).map_err(io_err(dest))?;
    report.last = prev;
    let pinned = fs::read_to_string(dest.join("service_cert.pem")).ok();
    report.audit = audit::audit(dest, pinned.as_deref())?;
    Ok(report)
}

/// Copies a file (keeping its permissions, so keys stay 0600) or a directory of files.
fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    let meta = match fs::metadata(from) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(from)(e)),
    };
    if meta.is_dir() {
        fs::create_dir_all(to).map_err(io_err(to))?;
        fs::set_permissions(to, meta.permissions()).map_err(io_err(to))?;
        for entry in fs::read_dir(from).map_err(io_err(from))? {
            let entry = entry.map_err(io_err(from))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        // Created with the source's mode from the start: a key is never readable by others,
        // not even for a moment.
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let mut input = fs::File::open(from).map_err(io_err(from))?;
        let mut output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.permissions().mode() & 0o777)
            .open(to)
            .map_err(io_err(to))?;
        io::copy(&mut input, &mut output).map_err(io_err(to))?;
        output.sync_all().map_err(io_err(to))
    }
}

fn sync(path: &Path) -> Result<(), BackupError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}
