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
    /// True when no intact frame follows: the signature of an interrupted append.
    pub reaches_end: bool,
}

/// The result of scanning one segment's bytes.
#[derive(Debug)]
pub struct Scan {
    pub first_seqno: u64,
    /// The frame layout of the segment; `None` when its header is damaged.
    pub layout: Option<FrameLayout>,
    pub frames: Vec<FrameLocation>,
    pub damage: Option<Damage>,
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
    };
    let layout = match check_segment_header(bytes, expected_first) {
        Ok(version) => FrameLayout::of(version),
        Err(what) => {
            scan.damage = Some(Damage {
                offset: 0,
                expected_seqno: expected_first,
                fault: FrameFault::BadSegmentHeader(what),
                reaches_end: false,
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
            Err(fault) => {
                let reaches_end = !layout.intact_frame_after(bytes, pos, last);
                scan.damage = Some(Damage {
                    offset: pos as u64,
                    expected_seqno: expected,
                    fault,
                    reaches_end,
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

    /// Whether any intact frame starts after `pos`. A torn append leaves garbage only at the
    /// end; an intact frame beyond the damage means the damage is in the middle of the data.
    /// Damage to a length field hides where the next frame starts, so every later offset is a
    /// candidate; a candidate must look like a frame (a plausible seqno in version 1, an entry
    /// version and kind in version 2) before its checksum is computed, which keeps the search
    /// linear in practice.
    fn intact_frame_after(self, bytes: &[u8], pos: usize, prev: Option<TxId>) -> bool {
        let expected = prev.map_or(1, |t| t.seqno() + 1);
        let header_len = self.header_len();
        let max_frames = (bytes.len() - pos) as u64 / (header_len as u64 + 1) + 1;
        (pos + 1..bytes.len().saturating_sub(header_len - 1)).any(|p| {
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
    len: u64,
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
        })
    }

    /// Reopens an existing segment for appending after its last intact frame at `len`,
    /// truncating anything beyond (a torn tail already reported by recovery). The writer only
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
        Ok(())
    }

    /// Cuts the file back to the end of the last durable batch and makes that durable, so a
    /// failed batch can never be recovered later.
    pub(crate) fn truncate_back(&mut self, faults: &Faults) -> io::Result<()> {
        faults.check(StorageOp::SegmentTruncate)?;
        self.file.set_len(self.len)?;
        self.file.sync_all()?;
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
                    Some(d) => assert!(d.reaches_end, "cut at {cut}: {d:?}"),
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
                            !damage.reaches_end,
                            "{layout:?}: flip at {i} misread as torn: {damage:?}"
                        );
                    } else {
                        assert!(damage.reaches_end, "{layout:?}: flip at {i}: {damage:?}");
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
    fn zero_filled_tail_is_torn() {
        for layout in LAYOUTS {
            let mut bytes = build_layout(layout, 3, 1);
            bytes.extend_from_slice(&[0u8; 100]);
            let d = scan_segment(&bytes, None).damage.unwrap();
            assert!(d.reaches_end);
            assert_eq!(d.expected_seqno, 4);
        }
    }
}
