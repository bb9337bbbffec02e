//! Reading transactions back from the segments: which segment holds a seqno, and the checked
//! payload of the frame at a recorded offset (the offsets come from `tree/frames.idx`).
//!
//! Every read checks the frame's length and CRC-32C again, so a block that went bad after the
//! ledger was opened is reported as corruption rather than served; and checks the frame
//! against its record (kind; when the frame fails, whether the segment holds it intact at
//! another offset), so a damaged record is reported as such, not as a corrupt ledger.

use crate::StoreError;
use crate::segment::{self, FrameFault, FrameLayout};
use crate::tree::{CHECK_CHUNK, EntryClass, FrameRecord, LeafReader, RECORD_LEN, TreeFiles};
use ledger_core::TxId;
use ledger_core::entry::EntryView;
use ledger_core::hash::Hash32;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::RwLock;

/// Bytes read beyond a frame header in the hope of getting the whole frame in one `pread`
/// (typical entries are a few hundred bytes).
const READ_AHEAD: usize = 1024;

/// One segment open for reading.
pub(crate) struct SegmentFile {
    pub first_seqno: u64,
    pub layout: FrameLayout,
    pub file: File,
}

/// Read handles of every segment, by first seqno (ascending).
pub(crate) struct Segments {
    ledger_dir: PathBuf,
    files: RwLock<Vec<SegmentFile>>,
}

impl Segments {
    pub fn open(
        ledger_dir: PathBuf,
        list: &[(u64, PathBuf, FrameLayout)],
    ) -> Result<Segments, StoreError> {
        let mut files = Vec::with_capacity(list.len());
        for (first, path, layout) in list {
            files.push(SegmentFile {
                first_seqno: *first,
                layout: *layout,
                file: File::open(path).map_err(|e| StoreError::io(path, e))?,
            });
        }
        Ok(Segments {
            ledger_dir,
            files: RwLock::new(files),
        })
    }

    /// Adds a segment the writer just created. A segment with the same first seqno (an empty
    /// one the writer replaced) is replaced.
    pub fn push(&self, segment: SegmentFile) {
        let mut files = self.files.write().expect("segments lock");
        if files
            .last()
            .is_some_and(|s| s.first_seqno == segment.first_seqno)
        {
            files.pop();
        }
        files.push(segment);
    }

    /// Forgets the segments that start after `first_seqno` (removed when a suffix of the
    /// ledger was cut off). Returns the layout of the last segment kept.
    pub fn retain_through(&self, first_seqno: u64) -> Option<FrameLayout> {
        let mut files = self.files.write().expect("segments lock");
        files.retain(|s| s.first_seqno <= first_seqno);
        files.last().map(|s| s.layout)
    }

    fn path(&self, first_seqno: u64) -> PathBuf {
        self.ledger_dir
            .join(segment::segment_file_name(first_seqno))
    }

    /// The payloads of consecutive transactions `first ..` whose frames start at `offsets`,
    /// reading each segment's share with one `pread` where possible.
    pub fn read_frames(&self, first: u64, offsets: &[u64]) -> Result<Vec<Vec<u8>>, StoreError> {
        let files = self.files.read().expect("segments lock");
        let mut out = Vec::with_capacity(offsets.len());
        let mut i = 0;
        while i < offsets.len() {
            let seqno = first + i as u64;
            let k = files.partition_point(|s| s.first_seqno <= seqno);
            let segment = k
                .checked_sub(1)
                .map(|k| &files[k])
                .ok_or_else(|| self.corrupt(seqno, 0, "no segment holds it".into()))?;
            // Frames of this segment: up to the next segment's first seqno.
            let end = files
                .get(k)
                .map_or(offsets.len(), |next| {
                    ((next.first_seqno - first) as usize).min(offsets.len())
                })
                .max(i + 1);
            let run = &offsets[i..end];
            let start = run[0];
            let last = *run.last().expect("non-empty");
            let span =
                (last.saturating_sub(start)) as usize + segment.layout.header_len() + READ_AHEAD;
            let buf = self.read_at(segment, start, span)?;
            for (j, &offset) in run.iter().enumerate() {
                let at = (offset.checked_sub(start)).map(|a| a as usize);
                let frame = at.and_then(|at| buf.get(at..));
                out.push(self.payload(segment, first + (i + j) as u64, offset, frame)?);
            }
            i = end;
        }
        Ok(out)
    }

    /// The payload of the frame of `seqno` at `offset`.
    pub fn read_frame(&self, seqno: u64, offset: u64) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .read_frames(seqno, &[offset])?
            .pop()
            .expect("one frame"))
    }

    /// Reads up to `len` bytes at `offset` (fewer at the end of the file).
    fn read_at(
        &self,
        segment: &SegmentFile,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match segment.file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::io(&self.path(segment.first_seqno), e)),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// Checks the frame whose bytes start `prefix` (possibly only partly read) and returns its
    /// payload, reading the rest of it when the prefix is short.
    fn payload(
        &self,
        segment: &SegmentFile,
        seqno: u64,
        offset: u64,
        prefix: Option<&[u8]>,
    ) -> Result<Vec<u8>, StoreError> {
        let layout = segment.layout;
        let owned;
        let prefix = match prefix {
            Some(p) if p.len() >= layout.header_len() => p,
            _ => {
                owned = self.read_at(segment, offset, layout.header_len() + READ_AHEAD)?;
                &owned
            }
        };
        let corrupt = |fault: FrameFault| self.corrupt(seqno, offset, fault.to_string());
        let total = layout.header_len() + layout.declared_len(prefix).map_err(corrupt)? as usize;
        let whole;
        let frame = if prefix.len() >= total {
            &prefix[..total]
        } else {
            whole = self.read_at(segment, offset, total)?;
            &whole
        };
        let location = layout.check_frame_of(frame, seqno).map_err(corrupt)?;
        Ok(frame[location.payload_offset() as usize..].to_vec())
    }

    /// The first seqno and all bytes of the segment that holds `seqno`.
    fn segment_bytes(&self, seqno: u64) -> Result<(u64, Vec<u8>), StoreError> {
        let files = self.files.read().expect("segments lock");
        let k = files.partition_point(|s| s.first_seqno <= seqno);
        let segment = k
            .checked_sub(1)
            .map(|k| &files[k])
            .ok_or_else(|| self.corrupt(seqno, 0, "no segment holds it".into()))?;
        let path = self.path(segment.first_seqno);
        let len = segment
            .file
            .metadata()
            .map_err(|e| StoreError::io(&path, e))?
            .len();
        let bytes = self.read_at(segment, 0, len as usize)?;
        Ok((segment.first_seqno, bytes))
    }

    pub(crate) fn corrupt(&self, seqno: u64, offset: u64, reason: String) -> StoreError {
        StoreError::Corrupt {
            file: self.ledger_dir.clone(),
            offset,
            txid: format!("(seqno {seqno})"),
            reason,
        }
    }
}

/// Reads transactions through their frame records.
pub(crate) struct Transactions<'a> {
    pub tree: &'a TreeFiles,
    pub segments: &'a Segments,
}

impl Transactions<'_> {
    /// The record of `seqno`, which must have been written.
    pub fn record(&self, seqno: u64) -> Result<FrameRecord, StoreError> {
        let record = self
            .tree
            .record(seqno)?
            .ok_or_else(|| StoreError::Tree(format!("no frame record for seqno {seqno}")))?;
        if record.class == EntryClass::NoTransaction {
            return Err(StoreError::DerivedDamaged {
                file: self.tree.records_path(),
                reason: format!("the record of seqno {seqno} says it has no transaction"),
            });
        }
        Ok(record)
    }

    /// The txid and stored entry bytes of `seqno`, whose frame record is `record`. The frame
    /// is checked as on open, and against its record: a frame that is not where the record
    /// says, or not of the kind it says, is [`StoreError::DerivedDamaged`] naming
    /// `tree/frames.idx`, not corruption of the ledger.
    pub fn read_at(&self, seqno: u64, record: FrameRecord) -> Result<(TxId, Vec<u8>), StoreError> {
        let bytes = match self.segments.read_frame(seqno, record.offset) {
            Ok(bytes) => bytes,
            Err(e @ StoreError::Corrupt { .. }) => return Err(self.blame(seqno, record, e)),
            Err(e) => return Err(e),
        };
        let txid = self.entry_of(seqno, &record, &bytes)?.txid;
        Ok((txid, bytes))
    }

    /// Parses the frame payload of `seqno`, which `record` points at, and checks that it is of
    /// the kind the record says: an unreadable entry is corruption of the segment, a kind that
    /// differs is damage to `tree/frames.idx`.
    fn entry_of<'b>(
        &self,
        seqno: u64,
        record: &FrameRecord,
        payload: &'b [u8],
    ) -> Result<EntryView<'b>, StoreError> {
        let view = EntryView::parse(payload, seqno).map_err(|e| {
            self.segments.corrupt(
                seqno,
                record.offset,
                format!("the frame holds no readable entry: {e}"),
            )
        })?;
        if !record.class.admits(view.kind) {
            return Err(StoreError::DerivedDamaged {
                file: self.tree.records_path(),
                reason: format!(
                    "the record of seqno {seqno} says {:?}, but its frame holds a {:?} transaction",
                    record.class, view.kind
                ),
            });
        }
        Ok(view)
    }

    /// Decides who is to blame when the frame a record points at fails its checks: the
    /// record, if the segment holds the frame of `seqno` intact somewhere else; the segment
    /// (`corrupt`, returned as it is) otherwise. Reads the whole segment: only on this path.
    fn blame(&self, seqno: u64, record: FrameRecord, corrupt: StoreError) -> StoreError {
        let Ok((first, bytes)) = self.segments.segment_bytes(seqno) else {
            return corrupt;
        };
        // Views never decrease, so view 1 for the frame before the segment passes the check.
        let before = first.checked_sub(1).and_then(|s| TxId::new(1, s));
        let scan = segment::scan_segment(&bytes, before);
        match scan.frames.iter().find(|f| f.txid.seqno() == seqno) {
            Some(frame) if frame.offset != record.offset => StoreError::DerivedDamaged {
                file: self.tree.records_path(),
                reason: format!(
                    "the record of seqno {seqno} says its frame is at offset {}, but it is at offset {}",
                    record.offset, frame.offset
                ),
            },
            _ => corrupt,
        }
    }
}

/// Frame records read a checksum chunk at a time, for reading many transactions close to
/// each other (a page of a list) with one read and one check per chunk rather than per record.
pub(crate) struct RecordCursor<'a> {
    tree: &'a TreeFiles,
    first: u64,
    records: Vec<FrameRecord>,
}

impl<'a> RecordCursor<'a> {
    pub fn new(tree: &'a TreeFiles) -> RecordCursor<'a> {
        RecordCursor {
            tree,
            first: 0,
            records: Vec::new(),
        }
    }

    /// The record of `seqno`, which must have been written.
    pub fn get(&mut self, seqno: u64) -> Result<FrameRecord, StoreError> {
        let cached = seqno
            .checked_sub(self.first)
            .and_then(|i| self.records.get(i as usize));
        let record = match cached {
            Some(record) => *record,
            None => {
                let per_chunk = CHECK_CHUNK / RECORD_LEN;
                let written = self.tree.records_written();
                if seqno >= written {
                    return Err(StoreError::Tree(format!(
                        "no frame record for seqno {seqno}"
                    )));
                }
                let start = seqno - seqno % per_chunk;
                self.records = self.tree.records(start, per_chunk.min(written - start))?;
                self.first = start;
                self.records[(seqno - start) as usize]
            }
        };
        if record.class == EntryClass::NoTransaction {
            return Err(StoreError::DerivedDamaged {
                file: self.tree.records_path(),
                reason: format!("the record of seqno {seqno} says it has no transaction"),
            });
        }
        Ok(record)
    }
}

impl LeafReader for Transactions<'_> {
    fn leaves(&self, first: u64, count: u64) -> Result<Vec<Hash32>, StoreError> {
        let records = self.tree.records(first, count)?;
        let mut leaves = Vec::with_capacity(records.len());
        // Leaf 0 has no transaction: it is 32 zero bytes.
        let skip = usize::from(first == 0);
        if skip == 1 {
            leaves.push(Hash32::ZERO);
        }
        let offsets: Vec<u64> = records[skip..].iter().map(|r| r.offset).collect();
        let start = first + skip as u64;
        let payloads = match self.segments.read_frames(start, &offsets) {
            Ok(payloads) => payloads,
            Err(e @ StoreError::Corrupt { .. }) => {
                // Find the frame that failed and who is to blame for it.
                for (i, record) in records[skip..].iter().enumerate() {
                    let seqno = start + i as u64;
                    if let Err(e) = self.segments.read_frame(seqno, record.offset) {
                        return Err(self.blame(seqno, *record, e));
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        for (i, (payload, record)) in payloads.iter().zip(&records[skip..]).enumerate() {
            let seqno = start + i as u64;
            let view = self.entry_of(seqno, record, payload)?;
            leaves.push(view.leaf());
        }
        Ok(leaves)
    }
}
