//! Storage faults: what the writer reports when the disk fails it, and a fault-injecting hook
//! that tests (unit, integration and end-to-end) use to make chosen write-path operations fail.
//!
//! The hook is consulted before each I/O operation of the write path ([`StorageOp`]); with no
//! injector configured (the default) that is one `Option` check. An injector can fail an
//! operation with any `io::Error` (typically `EIO`, `ENOSPC` or `EROFS`, built with
//! [`io::Error::from_raw_os_error`]) or, for writes, really write a prefix of the buffer first
//! and then fail, as a short write on a filling disk does.
//!
//! How the writer reacts is described on [`StorageFault`] and in `docs/FORMAT.md` §9.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A write-path operation the store performs (and an injector can fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageOp {
    /// `write` of a batch's frames to the active segment.
    SegmentWrite,
    /// `fdatasync` of the active segment after a batch.
    SegmentSync,
    /// Zero-filling the active segment ahead of its frames (best effort: when it fails, the
    /// batch is appended growing the file).
    SegmentPreallocate,
    /// Creating the next segment (rotation): create, header write, fsync, directory fsync.
    SegmentCreate,
    /// Cutting a failed batch back off the active segment (`ftruncate` + `fsync`).
    SegmentTruncate,
    /// Appending hashes to the Merkle level files.
    TreeWrite,
    /// fsync of the Merkle level files (checkpoint).
    TreeSync,
    /// A commit of the index database.
    IndexCommit,
    /// Recording the fork guard (checkpoint).
    GuardWrite,
}

impl StorageOp {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageOp::SegmentWrite => "segment write",
            StorageOp::SegmentSync => "segment fdatasync",
            StorageOp::SegmentPreallocate => "segment preallocation",
            StorageOp::SegmentCreate => "segment creation",
            StorageOp::SegmentTruncate => "segment truncate",
            StorageOp::TreeWrite => "tree file write",
            StorageOp::TreeSync => "tree file fsync",
            StorageOp::IndexCommit => "index commit",
            StorageOp::GuardWrite => "fork guard write",
        }
    }

    /// Whether this operation is a flush to stable storage (fsyncgate rules apply).
    pub fn is_sync(self) -> bool {
        matches!(self, StorageOp::SegmentSync | StorageOp::TreeSync)
    }
}

impl fmt::Display for StorageOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of storage trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `ENOSPC` or `EDQUOT`: the filesystem (or the quota) is full.
    DiskFull,
    /// `EROFS`: the filesystem is (or was remounted) read-only.
    ReadOnly,
    /// `EMFILE`, `ENFILE` or `ENOMEM`: the process (or the system) is out of file descriptors
    /// or kernel memory, typically while opening a file or directory. Nothing about the disk
    /// is known to be wrong, and the operation did not run, so it is always transient: even on
    /// a sync step it means the `open` before the fsync failed, not the fsync.
    Resources,
    /// Any other I/O error (`EIO`, ...).
    Io,
}

impl FaultKind {
    /// Classifies an I/O error.
    pub fn of(error: &io::Error) -> FaultKind {
        if matches!(
            error.raw_os_error(),
            Some(errno::EMFILE | errno::ENFILE | errno::ENOMEM)
        ) {
            return FaultKind::Resources;
        }
        match error.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => FaultKind::DiskFull,
            io::ErrorKind::ReadOnlyFilesystem => FaultKind::ReadOnly,
            io::ErrorKind::OutOfMemory => FaultKind::Resources,
            _ => FaultKind::Io,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::DiskFull => "disk full",
            FaultKind::ReadOnly => "read-only filesystem",
            FaultKind::Resources => "out of file descriptors or memory",
            FaultKind::Io => "I/O error",
        }
    }
}

/// A storage fault of the write path, as reported to submitters
/// ([`crate::AppendError::Unavailable`]), to [`crate::StoreObserver::storage_fault`] and by
/// [`crate::Ledger::write_health`].
///
/// - `transient == true` (degraded): nothing of the failed batch was written (it was cut back
///   off the segment and that was made durable); writes are refused until a probe (every
///   `StoreConfig::fault_probe_interval`) finds the operation working again, and then resume by
///   themselves. Reads keep working. Every [`FaultKind::Resources`] fault is transient.
/// - `transient == false` (poisoned): the store cannot know what reached the disk (an
///   `fdatasync` failed with `EIO`, or cutting a failed batch back failed). Writes are refused
///   until the process restarts; recovery on open decides from the disk what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFault {
    pub kind: FaultKind,
    pub operation: StorageOp,
    /// The OS error (and context), for people.
    pub message: String,
    /// The raw OS error number, when there is one.
    pub errno: Option<i32>,
    /// Whether the condition is expected to clear without a restart.
    pub transient: bool,
}

impl StorageFault {
    pub(crate) fn new(operation: StorageOp, error: &io::Error, transient: bool) -> StorageFault {
        StorageFault {
            kind: FaultKind::of(error),
            operation,
            message: error.to_string(),
            errno: error.raw_os_error(),
            transient,
        }
    }
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} during {}: {}{}",
            self.kind.as_str(),
            self.operation,
            self.message,
            if self.transient {
                " (writes resume when it clears)"
            } else {
                " (writes stay stopped until the ledger is reopened)"
            }
        )
    }
}

/// What an injector does to one operation.
#[derive(Debug)]
pub enum Injected {
    /// The operation fails with this error, having done nothing.
    Error(io::Error),
    /// For writes: the first `written` bytes are really written, then the write fails with
    /// `error`. For other operations, the same as `Error(error)`.
    ShortWrite { written: usize, error: io::Error },
}

/// Decides, before each write-path operation, whether it fails. Called on the writer thread;
/// must be cheap and must not block.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    /// `len` is the number of bytes about to be written (0 for operations that write nothing).
    fn inject(&self, op: StorageOp, len: usize) -> Option<Injected>;
}

/// The store's handle on the configured injector (none in production).
#[derive(Clone, Default)]
pub(crate) struct Faults(pub Option<Arc<dyn FaultInjector>>);

impl Faults {
    pub fn none() -> Faults {
        Faults(None)
    }

    /// Fails `op` if the injector says so.
    pub fn check(&self, op: StorageOp) -> io::Result<()> {
        match self.0.as_ref().and_then(|f| f.inject(op, 0)) {
            None => Ok(()),
            Some(Injected::Error(e) | Injected::ShortWrite { error: e, .. }) => Err(e),
        }
    }

    /// For a write of `len` bytes: `Err((n, e))` means write only the first `n` bytes, then
    /// fail with `e`.
    pub fn check_write(&self, op: StorageOp, len: usize) -> Result<(), (usize, io::Error)> {
        match self.0.as_ref().and_then(|f| f.inject(op, len)) {
            None => Ok(()),
            Some(Injected::Error(e)) => Err((0, e)),
            Some(Injected::ShortWrite { written, error }) => Err((written.min(len), error)),
        }
    }
}

/// Writes `bytes` with `write` (retrying partial writes), consulting the injector first.
/// Returns the number of bytes written before a failure.
pub(crate) fn write_all_counted(
    mut out: impl io::Write,
    bytes: &[u8],
    faults: &Faults,
    op: StorageOp,
) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    if let Err((n, e)) = faults.check_write(op, bytes.len()) {
        // Model a short write: the prefix really reaches the file.
        while written < n {
            match out.write(&bytes[written..n]) {
                Ok(0) => break,
                Ok(k) => written += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        return Err((written, e));
    }
    while written < bytes.len() {
        match out.write(&bytes[written..]) {
            Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
            Ok(k) => written += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// A [`FaultInjector`] for tests: rules switched on and off at runtime, and a count of the
/// faults it injected.
#[derive(Debug, Default)]
pub struct FaultPlan {
    rules: Mutex<Vec<Rule>>,
    injected: AtomicU64,
}

#[derive(Debug, Clone)]
struct Rule {
    op: StorageOp,
    errno: i32,
    short: bool,
    /// Injections left; `None` until cleared.
    remaining: Option<u64>,
    /// Operations let through before the first injection.
    skip: u64,
}

impl FaultPlan {
    pub fn new() -> Arc<FaultPlan> {
        Arc::new(FaultPlan::default())
    }

    /// Fails every `op` with OS error `errno` until [`FaultPlan::clear`].
    pub fn fail(&self, op: StorageOp, errno: i32) {
        self.add(op, errno, false, None);
    }

    /// Fails the next `times` `op`s with `errno`.
    pub fn fail_times(&self, op: StorageOp, errno: i32, times: u64) {
        self.add(op, errno, false, Some(times));
    }

    /// Every write of `op` writes half its bytes, then fails with `errno`, until cleared.
    pub fn short_write(&self, op: StorageOp, errno: i32) {
        self.add(op, errno, true, None);
    }

    /// Lets the next `skip` `op`s through, then fails every one with `errno` until cleared.
    pub fn fail_after(&self, op: StorageOp, errno: i32, skip: u64) {
        self.rules.lock().expect("fault plan lock").push(Rule {
            op,
            errno,
            short: false,
            remaining: None,
            skip,
        });
    }

    fn add(&self, op: StorageOp, errno: i32, short: bool, remaining: Option<u64>) {
        self.rules.lock().expect("fault plan lock").push(Rule {
            op,
            errno,
            short,
            remaining,
            skip: 0,
        });
    }

    /// Removes every rule: operations succeed again.
    pub fn clear(&self) {
        self.rules.lock().expect("fault plan lock").clear();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

impl FaultInjector for FaultPlan {
    fn inject(&self, op: StorageOp, len: usize) -> Option<Injected> {
        let mut rules = self.rules.lock().expect("fault plan lock");
        let i = rules.iter().position(|r| r.op == op)?;
        if rules[i].skip > 0 {
            rules[i].skip -= 1;
            return None;
        }
        let rule = rules[i].clone();
        if let Some(n) = &mut rules[i].remaining {
            *n -= 1;
            if *n == 0 {
                rules.remove(i);
            }
        }
        drop(rules);
        self.injected.fetch_add(1, Ordering::Relaxed);
        let error = io::Error::from_raw_os_error(rule.errno);
        Some(if rule.short {
            Injected::ShortWrite {
                written: len / 2,
                error,
            }
        } else {
            Injected::Error(error)
        })
    }
}

/// Linux error numbers, for classifying errors and building injected ones without a libc
/// dependency.
pub mod errno {
    pub const EIO: i32 = 5;
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EDQUOT: i32 = 122;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let full = io::Error::from_raw_os_error(errno::ENOSPC);
        assert_eq!(FaultKind::of(&full), FaultKind::DiskFull);
        let quota = io::Error::from_raw_os_error(errno::EDQUOT);
        assert_eq!(FaultKind::of(&quota), FaultKind::DiskFull);
        let ro = io::Error::from_raw_os_error(errno::EROFS);
        assert_eq!(FaultKind::of(&ro), FaultKind::ReadOnly);
        let eio = io::Error::from_raw_os_error(errno::EIO);
        assert_eq!(FaultKind::of(&eio), FaultKind::Io);
        for n in [errno::EMFILE, errno::ENFILE, errno::ENOMEM] {
            let short = io::Error::from_raw_os_error(n);
            assert_eq!(FaultKind::of(&short), FaultKind::Resources, "{short}");
        }
        let oom = io::Error::from(io::ErrorKind::OutOfMemory);
        assert_eq!(FaultKind::of(&oom), FaultKind::Resources);
    }

    #[test]
    fn plan_counts_and_clears() {
        let plan = FaultPlan::new();
        let faults = Faults(Some(plan.clone()));
        assert!(faults.check(StorageOp::SegmentSync).is_ok());
        plan.fail_times(StorageOp::SegmentSync, errno::EIO, 2);
        assert!(faults.check(StorageOp::SegmentSync).is_err());
        assert!(faults.check(StorageOp::SegmentWrite).is_ok());
        assert!(faults.check(StorageOp::SegmentSync).is_err());
        assert!(faults.check(StorageOp::SegmentSync).is_ok());
        plan.short_write(StorageOp::SegmentWrite, errno::ENOSPC);
        let mut out = Vec::new();
        let r = write_all_counted(&mut out, &[7u8; 10], &faults, StorageOp::SegmentWrite);
        assert_eq!(r.unwrap_err().0, 5);
        assert_eq!(out.len(), 5);
        plan.clear();
        assert!(write_all_counted(&mut out, &[7u8; 10], &faults, StorageOp::SegmentWrite).is_ok());
        assert_eq!(plan.injected(), 3);
    }
}
