//! Segment files: the ledger itself, and the only data fsync'd on the write path.
//!
//! A segment is a 32-byte header followed by frames, written only by appending; `docs/FORMAT.md`
//! gives the byte layout. Each frame carries its own length and CRC-32C, so a segment can be
//! scanned without any other file, and a reader can tell an interrupted final write (a torn
//! tail, which recovery truncates) from damage followed by intact frames (corruption, which
//! stops the open with the file, offset and txid).
//!
//! Two frame layouts exist, chosen by the segment header's version. Version 2 (written now) is
//! `length || CRC-32C(payload) || payload`: the seqno is the frame's position (the segment's
//! first seqno plus the number of frames before it) and the view is the entry's own, so neither
//! is stored twice. Version 1 (older ledgers, still read) also repeated view and seqno in a
//! 24-byte header. A ledger upgraded in place keeps its version-1 segments and appends to new
//! version-2 ones.
//!
//! The active segment is zero-filled ahead of its last frame ([`PREALLOCATION_STEP`] at a time)
//! so that an append writes into space the file already has: its `fdatasync` then flushes data
//! only, not the file's size and extents as well (on the virtual disk measured, a 6 KB append's
//! `fdatasync` took 220–260 µs growing the file and 156–160 µs in zero-filled space;
//! `docs/PERFORMANCE.md`, issue 18). A run of zeros from a frame
//! boundary to the end of the file is that unused space, never a frame (no frame has length
//! 0), so a scan ends there as cleanly as at the end of the file.

use crate::faults::{Faults, StorageOp, write_all_counted};
use ledger_core::TxId;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const SEGMENT_MAGIC: &[u8; 8] = b"CLEDGSEG";
/// The segment format written now.
pub const SEGMENT_VERSION: u32 = 2;
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Frame header of version-2 segments: length and checksum.
pub const FRAME_HEADER_LEN: usize = 8;
/// Frame header of version-1 segments: length, checksum, view and seqno.
pub const FRAME_HEADER_LEN_V1: usize = 24;
/// Upper bound on one frame's payload (one entry, [`ledger_core::entry::MAX_ENTRY_BYTES`]); a
/// length field above it is damage, not data. The writer never writes more
/// (`crate::limits`).
pub const MAX_PAYLOAD_LEN: u32 = ledger_core::entry::MAX_ENTRY_BYTES as u32;
const _: () = assert!(MAX_PAYLOAD_LEN as u64 == ledger_core::entry::MAX_ENTRY_BYTES);
const SEGMENT_SUFFIX: &str = ".seg";
/// How far ahead of the data the active segment is zero-filled, at most (and never beyond
/// `segment_max_bytes`). One step's zeros are written, and later flushed, once per step's worth
/// of frames: a larger step writes as many zeros in fewer, longer stalls.
pub const PREALLOCATION_STEP: u64 = 1 << 20;

/// Name of the segment whose first frame has `first_seqno`.
pub fn segment_file_name(first_seqno: u64) -> String {
    format!("{first_seqno:020}{SEGMENT_SUFFIX}")
}

pub fn encode_segment_header(first_seqno: u64) -> [u8; SEGMENT_HEADER_LEN] {
    encode_segment_header_version(first_seqno, SEGMENT_VERSION)
}

/// A segment header of an older `version` (for tests and fixtures of older ledgers).
pub fn encode_segment_header_version(first_seqno: u64, version: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[16..24].copy_from_slice(&first_seqno.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends one version-2 frame to `out`. The payload must be an entry (its view is read back
/// from it when the segment is scanned) of at most [`MAX_PAYLOAD_LEN`] bytes: the writer checks
/// that first (`limits::check_frame`); tests and fixtures build their own payloads.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n <= MAX_PAYLOAD_LEN)
        .expect("callers bound payloads by MAX_PAYLOAD_LEN");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one version-1 frame to `out` (for tests and fixtures of older ledgers).
pub fn encode_frame_v1(out: &mut Vec<u8>, txid: TxId, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payloads are bounded far below 4 GiB");
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&txid.view().to_le_bytes());
    out.extend_from_slice(&txid.seqno().to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Where a frame lives inside its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLocation {
    pub txid: TxId,
    /// Offset of the frame header.
    pub offset: u64,
    pub header_len: u32,
    pub payload_len: u32,
}

impl FrameLocation {
    pub fn payload_offset(&self) -> u64 {
        self.offset + u64::from(self.header_len)
    }
    pub fn end(&self) -> u64 {
        self.payload_offset() + u64::from(self.payload_len)
    }
}

/// What is wrong at a position of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameFault {
    BadSegmentHeader(&'static str),
    ShortHeader,
    BadLength(u32),
    PastEndOfFile,
    ChecksumMismatch,
    UnexpectedTxId {
        found: String,
    },
    /// A version-2 frame whose payload does not start like an entry.
    UnreadableEntry(String),
}

impl std::fmt::Display for FrameFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFault::BadSegmentHeader(what) => write!(f, "bad segment header ({what})"),
            FrameFault::ShortHeader => f.write_str("file ends inside a frame header"),
            FrameFault::BadLength(n) => write!(f, "impossible frame length {n}"),
            FrameFault::PastEndOfFile => f.write_str("frame extends past the end of the file"),
            FrameFault::ChecksumMismatch => f.write_str("frame checksum mismatch"),
            FrameFault::UnexpectedTxId { found } => {
                write!(f, "frame has txid {found} out of sequence")
            }
            FrameFault::UnreadableEntry(why) => write!(f, "frame holds no readable entry ({why})"),
        }
    }
}

/// The first bad frame of a segment, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    /// The seqno the damaged frame should have had.
    pub expected_seqno: u64,
    pub fault: FrameFault,
    /// True when the damage looks like an append a crash interrupted: no intact frame follows
    /// it, or the damaged frame overlaps a sector the append never wrote ([`unwritten_sector`]).
    /// Whether it may be cut as such depends on where it is (recovery: the last segment, after
    /// the fork guard).
    pub torn: bool,
}

/// The unit a disk writes atomically at the least. A crash while an append's pages are being
/// written back can leave any of its sectors unwritten.
pub const SECTOR_BYTES: usize = 512;

/// Whether the damaged stretch `bytes[from..to]` (from the damaged frame to the next intact
/// frame) holds a sector the interrupted append never wrote: a whole sector of zeros, or zeros
/// from `from` to the end of its sector (the start of that sector holds the end of the batch
/// before, durable and intact). In preallocated space an unwritten sector reads as zeros; a
/// frame holds none (its length field is not zero, and ciphertext is not 512 zero bytes), so
/// such a stretch is a torn append even with intact frames after it (pages of one append reach
/// the disk in any order). The same rule as etcd's write-ahead log (`isTornEntry`).
pub fn unwritten_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    let first_boundary = from.next_multiple_of(SECTOR_BYTES).min(to);
    let head = &bytes[from..first_boundary];
    if !head.is_empty() && written_len(head) == 0 {
        return true;
    }
    bytes[first_boundary..to]
        .chunks_exact(SECTOR_BYTES)
        .any(|sector| written_len(sector) == 0)
}

/// The result of scanning one segment's bytes.
#[derive(Debug)]
pub struct Scan {
    pub first_seqno: u64,
    /// The frame layout of the segment; `None` when its header is damaged.
    pub layout: Option<FrameLayout>,
    pub frames: Vec<FrameLocation>,
    pub damage: Option<Damage>,
    /// Zero bytes from the end of the last frame to the end of the file: space preallocated
    /// for frames not written yet (0 when the scan stopped at damage).
    pub unused: u64,
}

impl Scan {
    /// Where the intact frames end: the end of the last one, or of the header.
    pub fn data_end(&self) -> u64 {
        self.frames
            .last()
            .map_or(SEGMENT_HEADER_LEN as u64, FrameLocation::end)
    }
}

/// The length of `tail` up to and including its last non-zero byte: what a torn append really
/// wrote into preallocated space, without the zeros after it.
pub fn written_len(tail: &[u8]) -> u64 {
    tail.iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

/// Reads and checks every frame of a segment held in memory. `prev` is the txid of the last
/// frame of the previous segment (None for the first segment); frames must continue it with
/// consecutive seqnos and non-decreasing views.
pub fn scan_segment(bytes: &[u8], prev: Option<TxId>) -> Scan {
    let expected_first = prev.map_or(1, |t| t.seqno() + 1);
    let mut scan = Scan {
        first_seqno: expected_first,
        layout: None,
        frames: Vec::new(),
        damage: None,
        unused: 0,
    };
    let layout = match check_segment_header(bytes, expected_first) {
        Ok(version) => FrameLayout::of(version),
        Err(what) => {
            scan.damage = Some(Damage {
                offset: 0,
                expected_seqno: expected_first,
                fault: FrameFault::BadSegmentHeader(what),
                torn: false,
            });
            return scan;
        }
    };
    scan.layout = Some(layout);
    let mut pos = SEGMENT_HEADER_LEN;
    let mut last = prev;
    while pos < bytes.len() {
        let expected = last.map_or(1, |t| t.seqno() + 1);
        match layout.check_frame(bytes, pos, last) {
            Ok(loc) => {
                pos = loc.end() as usize;
                last = Some(loc.txid);
                scan.frames.push(loc);
            }
            Err(_) if written_len(&bytes[pos..]) == 0 => {
                scan.unused = (bytes.len() - pos) as u64;
                break;
            }
            Err(fault) => {
                let torn = match layout.next_intact_frame(bytes, pos, last) {
                    None => true,
                    Some(next) => unwritten_sector(bytes, pos, next),
                };
                scan.damage = Some(Damage {
                    offset: pos as u64,
                    expected_seqno: expected,
                    fault,
                    torn,
                });
                break;
            }
        }
    }
    scan
}

/// Checks a segment header and returns its format version.
pub fn check_segment_header(bytes: &[u8], expected_first: u64) -> Result<u32, &'static str> {
    let h = bytes
        .get(..SEGMENT_HEADER_LEN)
        .ok_or("file shorter than the header")?;
    if &h[..8] != SEGMENT_MAGIC {
        return Err("magic");
    }
    if crc32c::crc32c(&h[..24]) != le_u32(&h[24..28]) {
        return Err("checksum");
    }
    if h[28..32] != [0u8; 4] {
        return Err("reserved bytes are not zero");
    }
    let version = le_u32(&h[8..12]);
    if version != 1 && version != SEGMENT_VERSION {
        return Err("unknown version");
    }
    if le_u64(&h[16..24]) != expected_first {
        return Err("first seqno does not continue the previous segment");
    }
    Ok(version)
}

/// The checksum covers everything after the length and checksum fields (in version 1 that
/// includes view and seqno).
const CHECKSUMMED_FROM: usize = 8;

/// How the frames of a segment are laid out, by segment version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLayout {
    /// `length || CRC-32C(view, seqno, payload) || view || seqno || payload`.
    V1,
    /// `length || CRC-32C(payload) || payload`.
    V2,
}

impl FrameLayout {
    /// The layout of a segment of `version` (already checked by [`check_segment_header`]).
    pub fn of(version: u32) -> FrameLayout {
        if version == 1 {
            FrameLayout::V1
        } else {
            FrameLayout::V2
        }
    }

    pub fn header_len(self) -> usize {
        match self {
            FrameLayout::V1 => FRAME_HEADER_LEN_V1,
            FrameLayout::V2 => FRAME_HEADER_LEN,
        }
    }

    /// The payload length the frame header at the start of `bytes` declares, if it is a
    /// possible one (checked before anything that size is read or allocated).
    pub(crate) fn declared_len(self, bytes: &[u8]) -> Result<u32, FrameFault> {
        let header = bytes
            .get(..self.header_len())
            .ok_or(FrameFault::ShortHeader)?;
        let len = le_u32(&header[0..4]);
        if len == 0 || len > MAX_PAYLOAD_LEN {
            return Err(FrameFault::BadLength(len));
        }
        Ok(len)
    }

    /// Checks a frame read back on its own (`bytes` start with it), which must be the frame
    /// of `seqno`: the same checks as a scan, with the predecessor's view unknown.
    pub(crate) fn check_frame_of(
        self,
        bytes: &[u8],
        seqno: u64,
    ) -> Result<FrameLocation, FrameFault> {
        // Views are >= 1, so a predecessor of view 1 constrains only the seqno.
        self.check_frame(bytes, 0, TxId::new(1, seqno - 1))
    }

    /// Checks the frame at `pos`, which must follow `prev`.
    fn check_frame(
        self,
        bytes: &[u8],
        pos: usize,
        prev: Option<TxId>,
    ) -> Result<FrameLocation, FrameFault> {
        let header_len = self.header_len();
        let len = self.declared_len(&bytes[pos..])?;
        let header = &bytes[pos..pos + header_len];
        let end = pos + header_len + len as usize;
        if end > bytes.len() {
            return Err(FrameFault::PastEndOfFile);
        }
        if crc32c::crc32c(&bytes[pos + CHECKSUMMED_FROM..end]) != le_u32(&header[4..8]) {
            return Err(FrameFault::ChecksumMismatch);
        }
        let expected = prev.map_or(1, |t| t.seqno() + 1);
        let (view, seqno) = match self {
            FrameLayout::V1 => (le_u64(&header[8..16]), le_u64(&header[16..24])),
            FrameLayout::V2 => {
                let view = ledger_core::entry::peek_view(&bytes[pos + header_len..end])
                    .map_err(|e| FrameFault::UnreadableEntry(e.to_string()))?;
                (view, expected)
            }
        };
        let in_sequence = seqno == expected && prev.is_none_or(|t| view >= t.view());
        let txid = TxId::new(view, seqno).filter(|_| in_sequence);
        let txid = txid.ok_or_else(|| FrameFault::UnexpectedTxId {
            found: format!("{view}.{seqno}"),
        })?;
        Ok(FrameLocation {
            txid,
            offset: pos as u64,
            header_len: header_len as u32,
            payload_len: len,
        })
    }

    /// Where the first intact frame after `pos` starts, if any. An append interrupted while
    /// growing the file leaves garbage only at the end; an intact frame beyond the damage means
    /// the damage is in the middle of the data, unless the append wrote into preallocated space
    /// and left a sector unwritten ([`unwritten_sector`]).
    /// Damage to a length field hides where the next frame starts, so every later offset is a
    /// candidate; a candidate must look like a frame (a plausible seqno in version 1, an entry
    /// version and kind in version 2) before its checksum is computed, which keeps the search
    /// linear in practice.
    fn next_intact_frame(self, bytes: &[u8], pos: usize, prev: Option<TxId>) -> Option<usize> {
        let expected = prev.map_or(1, |t| t.seqno() + 1);
        let header_len = self.header_len();
        let max_frames = (bytes.len() - pos) as u64 / (header_len as u64 + 1) + 1;
        (pos + 1..bytes.len().saturating_sub(header_len - 1)).find(|&p| {
            let plausible = match self {
                FrameLayout::V1 => {
                    let seqno = le_u64(&bytes[p + 16..p + 24]);
                    seqno >= expected && seqno - expected <= max_frames
                }
                FrameLayout::V2 => bytes
                    .get(p + header_len..p + header_len + 2)
                    .is_some_and(|b| {
                        b[0] == ledger_core::entry::FORMAT_VERSION && (1..=3).contains(&b[1])
                    }),
            };
            plausible && {
                let len = le_u32(&bytes[p..p + 4]);
                let end = p + header_len + len as usize;
                len != 0
                    && len <= MAX_PAYLOAD_LEN
                    && end <= bytes.len()
                    && crc32c::crc32c(&bytes[p + CHECKSUMMED_FROM..end])
                        == le_u32(&bytes[p + 4..p + 8])
            }
        })
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Lists the segment files of a ledger directory, sorted by first seqno.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() == 20
            && let Ok(first) = stem.parse::<u64>()
        {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// fsyncs a directory so that file creations and renames in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Why an append failed, and how far it got.
#[derive(Debug)]
pub(crate) struct AppendFailure {
    pub op: StorageOp,
    pub error: io::Error,
    /// Bytes of the batch written to the file before the failure.
    pub written: usize,
}

/// The segment being appended to.
pub struct ActiveSegment {
    pub first_seqno: u64,
    pub path: PathBuf,
    pub layout: FrameLayout,
    file: File,
    /// End of the durable frames: where the next batch goes.
    len: u64,
    /// Size of the file: `len` plus the zeros written ahead of it. Never below `len`.
    allocated: u64,
}

impl ActiveSegment {
    /// Creates a new segment durably (header written and fsync'd, directory fsync'd).
    pub fn create(dir: &Path, first_seqno: u64) -> io::Result<ActiveSegment> {
        Self::create_with(dir, first_seqno, &Faults::none())
    }

    /// [`ActiveSegment::create`], consulting the fault injector. A failed creation removes the
    /// half-made file (best effort; recovery removes a segment shorter than its header too), and
    /// a header-only file left by an earlier failed attempt is replaced.
    pub(crate) fn create_with(
        dir: &Path,
        first_seqno: u64,
        faults: &Faults,
    ) -> io::Result<ActiveSegment> {
        let path = dir.join(segment_file_name(first_seqno));
        if fs::metadata(&path).is_ok_and(|m| m.len() <= SEGMENT_HEADER_LEN as u64) {
            // No frame in it: a leftover of a creation that failed before.
            fs::remove_file(&path)?;
        }
        faults.check(StorageOp::SegmentCreate)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let made = file
            .write_all(&encode_segment_header(first_seqno))
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_dir(dir));
        if let Err(e) = made {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(ActiveSegment {
            first_seqno,
            path,
            layout: FrameLayout::V2,
            file,
            len: SEGMENT_HEADER_LEN as u64,
            allocated: SEGMENT_HEADER_LEN as u64,
        })
    }

    /// Reopens an existing segment for appending after its last intact frame at `len`,
    /// truncating anything beyond (a torn tail already reported by recovery, or zeros
    /// preallocated before; appends preallocate again). The writer only
    /// appends version-2 frames: a reopened version-1 segment is closed by starting a new one.
    pub fn reopen(
        path: &Path,
        first_seqno: u64,
        len: u64,
        layout: FrameLayout,
    ) -> io::Result<ActiveSegment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
            file.sync_all()?;
        }
        let mut segment = ActiveSegment {
            first_seqno,
            path: path.to_owned(),
            layout,
            file,
            len,
            allocated: len,
        };
        segment.seek_end()?;
        Ok(segment)
    }

    fn seek_end(&mut self) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(self.len)).map(|_| ())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == SEGMENT_HEADER_LEN as u64
    }

    /// Zero-fills the file ahead of the data so that a batch of `batch_len` bytes, and the
    /// batches after it, are written into space the file already has, up to
    /// [`PREALLOCATION_STEP`] ahead and never beyond `limit` (the segment's size setting).
    /// The zeros are made durable by the next batch's `fdatasync`; a crash before it leaves
    /// zeros or nothing, which scans as unused space.
    ///
    /// Best effort: on failure (a full disk, say) the file keeps the zeros that were written
    /// and the batch is appended growing the file, as it would be without preallocation, so a
    /// disk with room for the batch but not for the zeros still takes it.
    pub(crate) fn preallocate(&mut self, batch_len: usize, limit: u64, faults: &Faults) {
        use std::os::unix::fs::FileExt;
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        debug_assert!(
            self.allocated >= self.len,
            "the file holds every durable frame"
        );
        let needed = self.len + batch_len as u64;
        if needed <= self.allocated {
            return;
        }
        // Whole pages, one step beyond the batch.
        let target = (needed + PREALLOCATION_STEP)
            .next_multiple_of(4096)
            .min(limit);
        if target <= needed || faults.check(StorageOp::SegmentPreallocate).is_err() {
            return;
        }
        while self.allocated < target {
            let n = (target - self.allocated).min(ZEROS.len() as u64) as usize;
            match self.file.write_at(&ZEROS[..n], self.allocated) {
                Ok(0) | Err(_) => return,
                Ok(k) => self.allocated += k as u64,
            }
        }
    }

    /// Appends `bytes` and makes them durable (one `write`, one `fdatasync`), calling
    /// `on_written` once the write is done, before the fsync. On failure the
    /// segment's length is unchanged in memory, and the file may hold part or all of `bytes`
    /// beyond it: the caller decides between [`ActiveSegment::truncate_back`] and giving up
    /// (after a failed `fdatasync`, see `docs/FORMAT.md` §9).
    pub(crate) fn append(
        &mut self,
        bytes: &[u8],
        faults: &Faults,
        on_written: impl FnOnce(),
    ) -> Result<(), AppendFailure> {
        if let Err((written, error)) =
            write_all_counted(&mut self.file, bytes, faults, StorageOp::SegmentWrite)
        {
            return Err(AppendFailure {
                op: StorageOp::SegmentWrite,
                error,
                written,
            });
        }
        on_written();
        if let Err(error) = faults
            .check(StorageOp::SegmentSync)
            .and_then(|()| self.file.sync_data())
        {
            return Err(AppendFailure {
                op: StorageOp::SegmentSync,
                error,
                written: bytes.len(),
            });
        }
        self.len += bytes.len() as u64;
        self.allocated = self.allocated.max(self.len);
        Ok(())
    }

    /// Cuts the file back to the end of the last durable batch and makes that durable, so a
    /// failed batch can never be recovered later.
    pub(crate) fn truncate_back(&mut self, faults: &Faults) -> io::Result<()> {
        faults.check(StorageOp::SegmentTruncate)?;
        self.file.set_len(self.len)?;
        self.file.sync_all()?;
        self.allocated = self.len;
        self.seek_end()
    }

    /// Puts the write position back at the end of the durable data (after a failed write that
    /// wrote nothing, the position is already there).
    pub(crate) fn reset_position(&mut self) -> io::Result<()> {
        self.seek_end()
    }

    /// A read handle sharing the file.
    pub fn reader(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload that starts like a format-2 entry of `view` (all the scanner reads of it).
    fn payload(view: u8, seqno: u64) -> Vec<u8> {
        let mut p = vec![ledger_core::entry::FORMAT_VERSION, 3, view];
        p.extend(std::iter::repeat_n(seqno as u8, 10 + (seqno % 7) as usize));
        p
    }

    fn build_layout(layout: FrameLayout, n: u64, start: u64) -> Vec<u8> {
        let version = if layout == FrameLayout::V1 { 1 } else { 2 };
        let mut bytes = encode_segment_header_version(start, version).to_vec();
        for s in start..start + n {
            match layout {
                FrameLayout::V1 => {
                    encode_frame_v1(&mut bytes, TxId::new(1, s).unwrap(), &payload(1, s))
                }
                FrameLayout::V2 => encode_frame(&mut bytes, &payload(1, s)),
            }
        }
        bytes
    }

    fn build(n: u64, start: u64) -> Vec<u8> {
        build_layout(FrameLayout::V2, n, start)
    }

    fn prev_of(start: u64) -> Option<TxId> {
        TxId::new(1, start - 1)
    }

    const LAYOUTS: [FrameLayout; 2] = [FrameLayout::V1, FrameLayout::V2];

    #[test]
    fn clean_segment_scans_fully() {
        for layout in LAYOUTS {
            let bytes = build_layout(layout, 20, 5);
            let scan = scan_segment(&bytes, prev_of(5));
            assert_eq!(scan.layout, Some(layout));
            assert_eq!(scan.frames.len(), 20);
            assert_eq!(scan.damage, None);
            assert_eq!(scan.frames.last().unwrap().end(), bytes.len() as u64);
            assert_eq!(scan.frames[3].txid, TxId::new(1, 8).unwrap());
        }
    }

    #[test]
    fn version_2_frames_are_eight_bytes_of_header() {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, &payload(1, 1));
        assert_eq!(bytes.len(), FRAME_HEADER_LEN + payload(1, 1).len());
    }

    #[test]
    fn every_truncation_is_a_torn_tail() {
        for layout in LAYOUTS {
            let bytes = build_layout(layout, 6, 1);
            let scan = scan_segment(&bytes, None);
            let boundaries: Vec<u64> = scan.frames.iter().map(|f| f.end()).collect();
            for cut in SEGMENT_HEADER_LEN..bytes.len() {
                let scan = scan_segment(&bytes[..cut], None);
                let intact = boundaries.iter().filter(|&&b| b <= cut as u64).count();
                assert_eq!(scan.frames.len(), intact);
                match scan.damage {
                    None => {
                        assert!(boundaries.contains(&(cut as u64)) || cut == SEGMENT_HEADER_LEN)
                    }
                    Some(d) => assert!(d.torn, "cut at {cut}: {d:?}"),
                }
            }
        }
    }

    #[test]
    fn every_byte_flip_is_detected_and_classified() {
        for layout in LAYOUTS {
            let bytes = build_layout(layout, 6, 1);
            let frames = scan_segment(&bytes, None).frames;
            let last_start = frames.last().unwrap().offset as usize;
            for i in 0..bytes.len() {
                for bit in [0x01u8, 0x80] {
                    let mut bad = bytes.clone();
                    bad[i] ^= bit;
                    let scan = scan_segment(&bad, None);
                    let damage = scan
                        .damage
                        .unwrap_or_else(|| panic!("{layout:?}: flip at {i} undetected"));
                    // Damage before the last frame has intact frames after it; only the last
                    // frame's damage looks like a torn tail.
                    if i < SEGMENT_HEADER_LEN {
                        assert_eq!(damage.offset, 0);
                    } else if i < last_start {
                        assert!(
                            !damage.torn,
                            "{layout:?}: flip at {i} misread as torn: {damage:?}"
                        );
                    } else {
                        assert!(damage.torn, "{layout:?}: flip at {i}: {damage:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn sequence_gaps_are_damage() {
        let mut bytes = encode_segment_header_version(1, 1).to_vec();
        encode_frame_v1(&mut bytes, TxId::new(1, 1).unwrap(), b"a");
        encode_frame_v1(&mut bytes, TxId::new(1, 3).unwrap(), b"b");
        let scan = scan_segment(&bytes, None);
        assert_eq!(scan.frames.len(), 1);
        assert!(matches!(
            scan.damage.unwrap().fault,
            FrameFault::UnexpectedTxId { .. }
        ));
        // Version 2 has no seqno to get wrong, but views must not go backwards.
        let mut bytes = encode_segment_header(1).to_vec();
        encode_frame(&mut bytes, &payload(3, 1));
        encode_frame(&mut bytes, &payload(2, 2));
        let scan = scan_segment(&bytes, None);
        assert_eq!(scan.frames.len(), 1);
        assert!(matches!(
            scan.damage.unwrap().fault,
            FrameFault::UnexpectedTxId { .. }
        ));
        // A version-2 frame must hold an entry.
        let mut bytes = encode_segment_header(1).to_vec();
        encode_frame(&mut bytes, b"not an entry");
        assert!(matches!(
            scan_segment(&bytes, None).damage.unwrap().fault,
            FrameFault::UnreadableEntry(_)
        ));
        // A segment must continue its predecessor.
        let scan = scan_segment(&build(2, 9), prev_of(5));
        assert!(matches!(
            scan.damage.unwrap().fault,
            FrameFault::BadSegmentHeader(_)
        ));
    }

    #[test]
    fn a_frame_of_the_largest_payload_scans_and_one_byte_more_is_damage() {
        let mut largest = payload(1, 1);
        largest.resize(MAX_PAYLOAD_LEN as usize, 7);
        let mut bytes = encode_segment_header(1).to_vec();
        encode_frame(&mut bytes, &largest);
        encode_frame(&mut bytes, &payload(1, 2));
        let scan = scan_segment(&bytes, None);
        assert_eq!(scan.damage, None);
        assert_eq!(scan.frames.len(), 2);
        assert_eq!(scan.frames[0].payload_len, MAX_PAYLOAD_LEN);
        // The same frame claiming one byte more (and with the bytes to back it) is not data.
        let mut over = encode_segment_header(1).to_vec();
        largest.push(7);
        over.extend_from_slice(&(MAX_PAYLOAD_LEN + 1).to_le_bytes());
        over.extend_from_slice(&crc32c::crc32c(&largest).to_le_bytes());
        over.extend_from_slice(&largest);
        encode_frame(&mut over, &payload(1, 2));
        let damage = scan_segment(&over, None)
            .damage
            .expect("an over-long frame is damage");
        assert_eq!(damage.fault, FrameFault::BadLength(MAX_PAYLOAD_LEN + 1));
    }

    #[test]
    fn zeros_after_the_last_frame_are_unused_space() {
        for layout in LAYOUTS {
            let data = build_layout(layout, 3, 1);
            for zeros in [1, 7, 8, 100, 4096] {
                let mut bytes = data.clone();
                bytes.resize(data.len() + zeros, 0);
                let scan = scan_segment(&bytes, None);
                assert_eq!(scan.damage, None, "{layout:?} + {zeros} zeros");
                assert_eq!(scan.frames.len(), 3);
                assert_eq!(scan.data_end(), data.len() as u64);
                assert_eq!(scan.unused, zeros as u64);
            }
            // A header and zeros: an empty segment, preallocated.
            let mut empty = build_layout(layout, 0, 1);
            empty.resize(8192, 0);
            let scan = scan_segment(&empty, None);
            assert_eq!((&scan.damage, scan.frames.len()), (&None, 0));
            assert_eq!(scan.data_end(), SEGMENT_HEADER_LEN as u64);
        }
    }

    /// A payload of `len` bytes (at least 3) that starts like an entry; no zero byte in it.
    fn long_payload(seqno: u64, len: usize) -> Vec<u8> {
        let mut p = vec![ledger_core::entry::FORMAT_VERSION, 3, 1];
        p.extend((0..len - 3).map(|i| (seqno as usize * 31 + i) as u8 | 1));
        p
    }

    /// A segment of 4 durable frames, then a batch of 6 frames of ~400 bytes appended into
    /// preallocated space (zeros up to 8 KiB), as a crash can leave it: any subset of the
    /// batch's sectors written, the others still zeros. Returns (durable end, batch end, bytes
    /// with every sector written).
    fn preallocated_batch() -> (usize, usize, Vec<u8>) {
        let mut bytes = encode_segment_header(1).to_vec();
        for s in 1..=4 {
            encode_frame(&mut bytes, &long_payload(s, 100 + s as usize));
        }
        let durable = bytes.len();
        for s in 5..=10 {
            encode_frame(&mut bytes, &long_payload(s, 390 + s as usize));
        }
        let end = bytes.len();
        bytes.resize(8192, 0);
        (durable, end, bytes)
    }

    #[test]
    fn an_append_with_any_sectors_unwritten_is_torn_never_damage() {
        let (durable, end, full) = preallocated_batch();
        let sectors: Vec<usize> = (durable / SECTOR_BYTES..end.div_ceil(SECTOR_BYTES)).collect();
        assert!(sectors.len() >= 5, "the batch spans several sectors");
        for written in 0u32..1 << sectors.len() {
            let mut bytes = full.clone();
            for (i, &sector) in sectors.iter().enumerate() {
                if written & (1 << i) == 0 {
                    // The sector's part of the batch never reached the disk.
                    let from = (sector * SECTOR_BYTES).max(durable);
                    bytes[from..(sector + 1) * SECTOR_BYTES].fill(0);
                }
            }
            let scan = scan_segment(&bytes, None);
            assert!(
                scan.frames.len() >= 4,
                "sectors {written:b}: durable frames lost"
            );
            match scan.damage {
                None => assert!(
                    scan.frames.len() == 10 || scan.frames.len() == 4 && scan.unused > 0,
                    "sectors {written:b}: {} frames and no damage",
                    scan.frames.len()
                ),
                Some(d) => assert!(d.torn, "sectors {written:b}: read as damage: {d:?}"),
            }
        }
    }

    #[test]
    fn damage_with_intact_frames_after_it_and_no_unwritten_sector_is_not_torn() {
        let (_, _, full) = preallocated_batch();
        let frames = scan_segment(&full, None).frames;
        let victim = frames[6];
        let mut cases = Vec::new();
        // A bit flip in a frame of the batch.
        let mut flipped = full.clone();
        flipped[victim.payload_offset() as usize + 50] ^= 0x10;
        cases.push(("a flipped bit", flipped));
        // Zeros inside a frame, less than a sector and not reaching a sector's end.
        let mut zeroed = full.clone();
        let start = victim.payload_offset() as usize + 10;
        let boundary = start.next_multiple_of(SECTOR_BYTES);
        let stop = (start + 200).min(boundary - 1);
        zeroed[start..stop].fill(0);
        cases.push(("a run of zeros shorter than a sector", zeroed));
        for (what, bytes) in cases {
            let damage = scan_segment(&bytes, None).damage.expect("damage found");
            assert_eq!(damage.offset, victim.offset, "{what}");
            assert!(!damage.torn, "{what} read as an interrupted append");
        }
    }

    #[test]
    fn unwritten_sector_needs_a_whole_sector_or_the_rest_of_the_first() {
        let mut bytes = vec![7u8; 4 * SECTOR_BYTES];
        assert!(!unwritten_sector(&bytes, 100, 3 * SECTOR_BYTES));
        // Zeros from the start of the stretch to the end of its sector.
        bytes[100..SECTOR_BYTES].fill(0);
        assert!(unwritten_sector(&bytes, 100, 3 * SECTOR_BYTES));
        assert!(!unwritten_sector(&bytes, 99, 3 * SECTOR_BYTES));
        // A whole sector, but only if it lies within the stretch.
        let mut bytes = vec![7u8; 4 * SECTOR_BYTES];
        bytes[2 * SECTOR_BYTES..3 * SECTOR_BYTES].fill(0);
        assert!(unwritten_sector(&bytes, 100, 3 * SECTOR_BYTES));
        assert!(!unwritten_sector(&bytes, 100, 3 * SECTOR_BYTES - 1));
        assert!(!unwritten_sector(
            &bytes,
            3 * SECTOR_BYTES,
            4 * SECTOR_BYTES
        ));
    }
}
