//! The log store: the second stage of the write path. It appends a batch of already-encoded
//! frames to the active segment with one `write` and one `fdatasync` (the durability point),
//! into space zero-filled ahead of it (`ActiveSegment::preallocate`),
//! starts a new segment when the active one is full, and, when an append fails, decides from
//! the failure whether the batch can be cut back off the file (the store is then *degraded*
//! and retries) or whether what reached the disk is unknown (the store is *poisoned* until it
//! is reopened; `docs/FORMAT.md` §9). Reading back is `reader::Segments`' job.

use crate::faults::{FaultKind, Faults, StorageFault, StorageOp};
use crate::reader::{SegmentFile, Segments};
use crate::segment::{self, ActiveSegment, AppendFailure, FrameLayout};
use std::io::{self, Write};
use std::path::PathBuf;

/// What a failed append left behind.
pub(crate) enum AppendOutcome {
    /// Nothing of the batch is in the file (it was cut back and that is durable).
    CutBack(StorageFault),
    /// The file's content is unknown until recovery reads the disk again.
    Unknown(StorageFault),
}

pub(crate) struct SegmentLog {
    dir: PathBuf,
    active: ActiveSegment,
    /// A new segment is started once the active one reaches this size.
    max_bytes: u64,
}

impl SegmentLog {
    pub fn new(dir: PathBuf, active: ActiveSegment, max_bytes: u64) -> SegmentLog {
        SegmentLog {
            dir,
            active,
            max_bytes,
        }
    }

    /// The offset at which a batch starting with `next_seqno` goes into the active segment,
    /// after starting a new segment when the active one is full or is a version-1 segment of a
    /// ledger written by an older release (frames of one layout per segment).
    pub fn position_for_batch(
        &mut self,
        next_seqno: u64,
        segments: &Segments,
        faults: &Faults,
    ) -> io::Result<u64> {
        let full = self.active.len() >= self.max_bytes && !self.active.is_empty();
        if full || self.active.layout != FrameLayout::V2 {
            let next = ActiveSegment::create_with(&self.dir, next_seqno, faults)?;
            segments.push(SegmentFile {
                first_seqno: next.first_seqno,
                layout: next.layout,
                file: next.reader()?,
            });
            self.active = next;
        }
        Ok(self.active.len())
    }

    /// Appends `frames` durably (one write, one fdatasync), calling `written` between the two.
    /// On failure, the batch is cut back off the segment when that is safe.
    pub fn append(
        &mut self,
        frames: &[u8],
        faults: &Faults,
        written: impl FnOnce(),
    ) -> Result<(), AppendOutcome> {
        self.active
            .preallocate(frames.len(), self.max_bytes, faults);
        let Err(failure) = self.active.append(frames, faults, written) else {
            return Ok(());
        };
        let AppendFailure { op, error, written } = failure;
        if op.is_sync() && FaultKind::of(&error) == FaultKind::Io {
            // fsyncgate: the kernel may have dropped the dirty pages and will not say so again.
            // Whether the batch is on disk is unknown until recovery reads the disk.
            return Err(AppendOutcome::Unknown(StorageFault::new(op, &error, false)));
        }
        if written > 0 || op == StorageOp::SegmentSync {
            if let Err(e) = self.active.truncate_back(faults) {
                return Err(AppendOutcome::Unknown(StorageFault {
                    kind: FaultKind::of(&e),
                    operation: StorageOp::SegmentTruncate,
                    message: format!(
                        "{op} failed ({error}), then cutting the failed batch back off {} failed: {e}",
                        self.active.path.display()
                    ),
                    errno: e.raw_os_error(),
                    transient: false,
                }));
            }
        } else if let Err(e) = self.active.reset_position() {
            return Err(AppendOutcome::Unknown(StorageFault::new(
                StorageOp::SegmentTruncate,
                &e,
                false,
            )));
        }
        let mut fault = StorageFault::new(op, &error, true);
        fault.message = format!("{} ({})", fault.message, self.active.path.display());
        Err(AppendOutcome::CutBack(fault))
    }

    /// Cuts the log back so that it ends with seqno `seqno`; `next_offset` is where the frame
    /// of `seqno + 1` starts in its segment. Later segments are removed newest first and the
    /// directory synced before the holding segment is cut, so a crash at any point leaves a
    /// ledger that is a prefix of the one before (never one with a gap), and running the cut
    /// again finishes it.
    pub fn truncate_after(
        &mut self,
        seqno: u64,
        next_offset: u64,
        segments: &Segments,
    ) -> io::Result<()> {
        let target = seqno + 1;
        let list = segment::list_segments(&self.dir)?;
        let holder = list
            .iter()
            .rposition(|(first, _)| *first <= target)
            .ok_or_else(|| io::Error::other(format!("no segment holds seqno {target}")))?;
        // A segment that starts exactly at the cut goes whole (seqno 1's never does).
        let (keep, cut_at) = if list[holder].0 == target && holder > 0 {
            (holder - 1, None)
        } else {
            (holder, Some(next_offset))
        };
        for (_, path) in list[keep + 1..].iter().rev() {
            std::fs::remove_file(path)?;
        }
        segment::sync_dir(&self.dir)?;
        let (first, path) = &list[keep];
        let layout = segments.retain_through(*first).unwrap_or(FrameLayout::V2);
        let len = match cut_at {
            Some(offset) => offset,
            None => data_end(path, *first)?,
        };
        self.active = ActiveSegment::reopen(path, *first, len, layout)?;
        Ok(())
    }

    /// Whether writing works again: a scratch file of `bytes` (the failed batch's size) is
    /// written and fsync'd next to the segments, then removed.
    pub fn probe(&self, bytes: usize) -> io::Result<()> {
        let path = self.dir.join(".write-probe");
        let result = (|| {
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&vec![0u8; bytes.clamp(4096, 16 << 20)])?;
            file.sync_data()
        })();
        let _ = std::fs::remove_file(&path);
        result
    }
}

/// Where the frames of the segment at `path` (first seqno `first`) end: its length, less the
/// zeros written ahead of them (a segment the writer had rotated away from has none, but
/// appending after zeros would leave them in the middle of the data).
fn data_end(path: &std::path::Path, first: u64) -> io::Result<u64> {
    let bytes = std::fs::read(path)?;
    // Views never decrease, so view 1 for the frame before the segment passes the check.
    let before = first
        .checked_sub(1)
        .and_then(|s| ledger_core::TxId::new(1, s));
    let scan = segment::scan_segment(&bytes, before);
    match scan.damage {
        None => Ok(scan.data_end()),
        Some(damage) => Err(io::Error::other(format!(
            "{} at offset {}: {}",
            path.display(),
            damage.offset,
            damage.fault
        ))),
    }
}
