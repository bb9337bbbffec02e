//! Opening a ledger: scan every segment, cut a torn tail, bring the derived files (tree and
//! index) up to the end of the ledger, and check them against the last signature and the fork
//! guard before anything is written.
//!
//! Every frame's checksum and sequence is checked on every open, so accidental damage anywhere
//! is found before the node serves or signs anything. The derived files are checked too (the
//! tree files against their recorded checksums and the frames scanned, the index by redb's
//! integrity check when it is opened) and rebuilt from the ledger when damaged. Cryptographic checks of the whole chain
//! (recomputed leaves against signed roots) are the auditor's job (`audit`), which needs no keys.

use crate::crypto::KeyRing;
use crate::guard::{ForkGuard, SignedPoint};
use crate::index::{Index, IndexOp, KvKeyOp};
use crate::reader::{Segments, Transactions};
use crate::segment::{self, FrameFault, FrameLayout, SEGMENT_HEADER_LEN};
use crate::tree::{EntryClass, FrameRecord, TreeFiles, TreeNodes, TreeSums, TreeWriter};
use crate::{DerivedDamage, StoreError};
use ledger_core::entry::{EntryView, SignatureRecord, TxBody};
use ledger_core::hash::Hash32;
use ledger_core::{TxId, merkle};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What recovery found and did; shown to operators on start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub transactions: u64,
    pub segments: usize,
    /// A torn final frame that was cut off: (file, offset, bytes removed).
    pub truncated_tail: Option<(PathBuf, u64, u64)>,
    /// Transactions whose leaves were re-derived into the tree files.
    pub tree_replayed: u64,
    /// Transactions re-indexed.
    pub index_replayed: u64,
    pub index_rebuilt: bool,
    pub tree_rebuilt: bool,
    /// Derived files rebuilt from the ledger because they were damaged (or missing, stale,
    /// or marked damaged by a read while the ledger was last open), each with the reason.
    pub rebuilt: Vec<DerivedDamage>,
    pub last_signature: Option<TxId>,
    /// The newest signature recovery committed: the last one on a standalone node, the one
    /// this node last recorded as committed by consensus on a replica ([`CommitRule`]).
    pub committed: Option<TxId>,
}

/// How far recovery commits the transactions it scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitRule {
    /// A standalone node: its own durable signatures are committed (no one else must agree).
    LastSignature,
    /// A replica: consensus decides what is committed, and this node's own last signature
    /// may belong to a suffix that a new primary cuts off. Only what this node recorded as
    /// committed before it stopped is committed again: through the fork guard's signature or
    /// the end of the index, whichever is further (both move only when consensus commits, so
    /// both are at or before the cluster's commit point). Consensus commits the rest again.
    Recorded,
}

/// The state the writer resumes from.
pub(crate) struct Recovered {
    pub report: RecoveryReport,
    pub last: Option<TxId>,
    pub last_signature: Option<(TxId, SignatureRecord)>,
    /// The newest committed signature ([`CommitRule`]).
    pub committed: Option<(TxId, SignedPoint)>,
    /// The durable signatures after it, ascending (a replica's, not committed yet).
    pub uncommitted_signatures: Vec<(TxId, SignedPoint)>,
    /// Read handles of the segments kept.
    pub segments: Segments,
    /// The last segment (first seqno, path, layout), where appending resumes.
    pub active: (u64, PathBuf, FrameLayout),
    /// End offset of the last intact frame in the last segment.
    pub active_len: u64,
    pub tree: TreeWriter,
    /// Index changes of the durable transactions after the committed signature: not
    /// committed, so not in the index (the writer applies them when a signature commits them).
    pub uncommitted_ops: Vec<(TxId, IndexOp)>,
}

const REPLAY_CHUNK: usize = 10_000;

/// Scans and repairs. `index` is already open. The tree files are checked (their checksums,
/// their records against the frames scanned, their root against the last signature) and
/// rebuilt from the ledger once if any check fails, or from the start if `rebuild_tree` says
/// why they must be (the report lists every rebuild with its reason).
pub(crate) fn recover(
    ledger_dir: &Path,
    keys: &KeyRing,
    index: &Index,
    tree_dir: &Path,
    guard: &ForkGuard,
    rebuild_tree: Option<DerivedDamage>,
    rule: CommitRule,
) -> Result<(Recovered, TreeFiles), StoreError> {
    let mut rebuild = rebuild_tree;
    loop {
        if rebuild.is_some() {
            TreeFiles::reset(tree_dir).map_err(|e| StoreError::io(tree_dir, e))?;
        }
        match recover_once(
            ledger_dir,
            keys,
            index,
            tree_dir,
            guard,
            rebuild.is_some(),
            rule,
        ) {
            Ok((mut recovered, files)) => {
                recovered.report.tree_rebuilt = rebuild.is_some();
                recovered.report.rebuilt.extend(rebuild);
                return Ok((recovered, files));
            }
            // Derived data: rebuild it from the ledger, once.
            Err(StoreError::DerivedDamaged { file, reason })
                if rebuild.is_none() && file.starts_with(tree_dir) =>
            {
                rebuild = Some(DerivedDamage { file, reason });
            }
            Err(e) => return Err(e),
        }
    }
}

fn recover_once(
    ledger_dir: &Path,
    keys: &KeyRing,
    index: &Index,
    tree_dir: &Path,
    guard: &ForkGuard,
    force_tree_rebuild: bool,
    rule: CommitRule,
) -> Result<(Recovered, TreeFiles), StoreError> {
    let segments = segment::list_segments(ledger_dir).map_err(|e| StoreError::io(ledger_dir, e))?;
    if segments.is_empty() {
        return Err(StoreError::NotALedger(ledger_dir.to_owned()));
    }
    let mut report = RecoveryReport {
        segments: segments.len(),
        ..Default::default()
    };
    // The scan below rebuilds the key ring from the rotation transactions it keeps.
    keys.truncate_after(0);

    // First pass over the files: checksums, sequence, torn tail. Collects frame locations
    // lazily per segment so memory stays at one segment's bytes.
    let indexed_through = index.indexed_through()?;
    let commit_limit = match rule {
        CommitRule::LastSignature => u64::MAX,
        CommitRule::Recorded => guard.last().map_or(0, |g| g.seqno).max(indexed_through),
    };
    let (tree_size, recorded) = if force_tree_rebuild {
        (0, TreeSums::default())
    } else {
        (index.tree_durable_size()?, index.tree_checksums()?)
    };
    // The frontier's lowest subtrees are recomputed from the entries, so the segments are
    // opened for reading first (their frames are checked below; a damaged one fails the
    // resume, and the tree is then rebuilt while the scan names the damage).
    let resume_segments = Segments::open(ledger_dir.to_owned(), &with_layouts(&segments))?;
    let tree_files =
        TreeFiles::open(tree_dir, tree_size, &recorded).map_err(tree_damage(tree_dir))?;
    let mut tree = {
        let reader = Transactions {
            tree: &tree_files,
            segments: &resume_segments,
        };
        TreeWriter::resume(&tree_files, &reader, tree_size)
            .map_err(proof_error)
            .map_err(tree_damage(tree_dir))?
    };
    drop(resume_segments);
    if tree.size() == 0 {
        tree.push(Hash32::ZERO, FrameRecord::NONE);
    } else if tree_files.record(0)? != Some(FrameRecord::NONE) {
        return Err(StoreError::DerivedDamaged {
            file: tree_files.records_path(),
            reason: "the record of leaf 0 is not empty".into(),
        });
    }
    let tree_start = tree.size();
    let mut kept = KeptRecords {
        files: &tree_files,
        end: tree_start,
        first: 0,
        records: Vec::new(),
    };

    let mut prev: Option<TxId> = None;
    let mut last_signature = None;
    let mut committed = None;
    let mut uncommitted_signatures = Vec::new();
    let mut ops: Vec<(TxId, IndexOp)> = Vec::new();
    let mut active_len = SEGMENT_HEADER_LEN as u64;
    let mut kept_segments = Vec::new();
    let last_index = segments.len() - 1;
    for (i, (first, path)) in segments.iter().enumerate() {
        let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
        let scan = segment::scan_segment(&bytes, prev);
        let is_last = i == last_index;
        // Zeros after the last frame (space preallocated for frames never written) end the
        // data as cleanly as the end of the file; reopening the segment cuts them.
        let mut end = scan.data_end();
        if let Some(damage) = &scan.damage {
            let guarded = guard
                .last()
                .is_some_and(|g| damage.expected_seqno <= g.seqno);
            let torn_header = damage.offset == 0 && bytes.len() <= SEGMENT_HEADER_LEN;
            let torn = is_last && !guarded && (damage.torn && damage.offset > 0 || torn_header);
            if !torn {
                return Err(StoreError::Corrupt {
                    file: path.clone(),
                    offset: damage.offset,
                    // Named with the view of the last intact frame before the damage.
                    txid: damage_txid(
                        scan.frames.last().map(|f| f.txid).or(prev),
                        damage.expected_seqno,
                    ),
                    reason: describe(&damage.fault, guarded),
                });
            }
            if torn_header {
                // Crash while creating a segment: nothing in it was ever written.
                fs::remove_file(path).map_err(|e| StoreError::io(path, e))?;
                segment::sync_dir(ledger_dir).map_err(|e| StoreError::io(ledger_dir, e))?;
                report.truncated_tail = Some((path.clone(), 0, bytes.len() as u64));
                break;
            }
            // What the interrupted append wrote, not the preallocated zeros after it.
            report.truncated_tail = Some((
                path.clone(),
                damage.offset,
                segment::written_len(&bytes[damage.offset as usize..]),
            ));
            end = damage.offset;
        }
        for frame in &scan.frames {
            let payload = &bytes[frame.payload_offset() as usize..frame.end() as usize];
            let corrupt = |reason: String| StoreError::Corrupt {
                file: path.clone(),
                offset: frame.offset,
                txid: frame.txid.to_string(),
                reason,
            };
            let seqno = frame.txid.seqno();
            let view = EntryView::parse(payload, seqno).map_err(|e| corrupt(e.to_string()))?;
            if view.txid != frame.txid {
                return Err(corrupt(format!(
                    "entry names txid {} but its frame says {}",
                    view.txid, frame.txid
                )));
            }
            // A ledger secret rotation: the next data key, for the entries after it.
            keys.observe(frame.txid, &view)
                .map_err(|source| StoreError::KeyRotation {
                    file: path.clone(),
                    offset: frame.offset,
                    txid: frame.txid,
                    source,
                })?;
            let body = if seqno > indexed_through
                || seqno >= tree_start
                || view.kind == ledger_core::entry::TxKind::Signature
            {
                Some(
                    view.body(Some(&*keys.opener(seqno)))
                        .map_err(|e| corrupt(e.to_string()))?,
                )
            } else {
                None
            };
            // The records kept from before (checked against their checksums as they are read)
            // must say where each frame is and what kind of transaction it holds.
            if let Some(record) = kept.get(seqno)? {
                let class_ok = match &body {
                    Some(body) => record.class == EntryClass::of(body),
                    None => record.class.admits(view.kind),
                };
                if record.offset != frame.offset || !class_ok {
                    return Err(StoreError::DerivedDamaged {
                        file: tree_files.records_path(),
                        reason: format!(
                            "the record of seqno {seqno} says {:?} at offset {}, but the frame there is a {:?} transaction at offset {}",
                            record.class, record.offset, view.kind, frame.offset
                        ),
                    });
                }
            }
            if seqno >= tree_start {
                let leaf = view.leaf();
                let class = EntryClass::of(body.as_ref().expect("decoded above"));
                tree.push(leaf, FrameRecord::new(frame.offset, class, &leaf));
            }
            if let Some(TxBody::Signature(record)) = &body {
                let point = SignedPoint {
                    seqno,
                    root: record.root,
                };
                if seqno <= commit_limit {
                    committed = Some((frame.txid, point));
                } else {
                    uncommitted_signatures.push((frame.txid, point));
                }
                last_signature = Some((frame.txid, record.clone()));
            }
            if seqno > indexed_through {
                let is_signature = view.kind == ledger_core::entry::TxKind::Signature;
                ops.push((frame.txid, index_op(body.expect("decoded above"))));
                // Only what a committed signature covers is committed, so only that is
                // indexed.
                if is_signature && seqno <= commit_limit && ops.len() >= REPLAY_CHUNK {
                    report.index_replayed += ops.len() as u64;
                    index.apply(&ops, None)?;
                    ops.clear();
                }
            }
            prev = Some(frame.txid);
        }
        kept_segments.push((*first, path.clone(), scan.layout.unwrap_or(FrameLayout::V2)));
        // The end of the last kept segment, which is where appending resumes. (Not only when
        // `is_last`: a half-created last segment is removed above, and then the one before it
        // is the active segment.)
        active_len = end;
        tree.flush(&tree_files)
            .map_err(|e| StoreError::io(tree_dir, e))?;
    }
    drop(kept);
    let end = prev.map_or(0, TxId::seqno);
    if indexed_through > end {
        return Err(StoreError::IndexAhead {
            indexed: indexed_through,
            end,
        });
    }
    if tree_start > end + 1 {
        return Err(StoreError::DerivedDamaged {
            file: tree_files.records_path(),
            reason: format!(
                "it describes {} transactions, the ledger holds {end}",
                tree_start - 1
            ),
        });
    }
    let committed_through = committed.as_ref().map_or(0, |(t, _)| t.seqno());
    let uncommitted_ops =
        ops.split_off(ops.partition_point(|(t, _)| t.seqno() <= committed_through));
    report.index_replayed += ops.len() as u64;
    index.apply(&ops, None)?;
    report.segments = kept_segments.len();
    report.tree_replayed = tree.size() - tree_start;
    report.transactions = prev.map_or(0, TxId::seqno);
    report.last_signature = last_signature.as_ref().map(|(t, _)| *t);
    report.committed = committed.as_ref().map(|(t, _)| *t);

    let segments = Segments::open(ledger_dir.to_owned(), &kept_segments)?;
    let reader = Transactions {
        tree: &tree_files,
        segments: &segments,
    };
    let nodes = TreeNodes::new(&tree_files, &reader);
    // The tree must reproduce the last signed root; a mismatch means the tree files are stale
    // (e.g. from another ledger), so re-derive them once before declaring the ledger damaged.
    if let Some((sig_txid, record)) = &last_signature {
        let root = merkle::root(&nodes, sig_txid.seqno()).map_err(proof_error)?;
        if root != record.root {
            if force_tree_rebuild {
                return Err(StoreError::SignatureMismatch { txid: *sig_txid });
            }
            return Err(StoreError::DerivedDamaged {
                file: tree_dir.to_owned(),
                reason: format!("the tree files do not reproduce the root signed at {sig_txid}"),
            });
        }
    }
    check_guard(guard, &nodes, prev)?;
    drop(nodes);
    tree_files.sync().map_err(|e| StoreError::io(tree_dir, e))?;
    index.apply(&[], Some((tree.size(), &tree_files)))?;
    let active = kept_segments
        .last()
        .cloned()
        .ok_or_else(|| StoreError::NotALedger(ledger_dir.to_owned()))?;
    Ok((
        Recovered {
            report,
            last: prev,
            last_signature,
            committed,
            uncommitted_signatures,
            segments,
            active,
            active_len,
            tree,
            uncommitted_ops,
        },
        tree_files,
    ))
}

/// The frame records kept from before the open (seqnos below `end`), read in batches as the
/// scan reaches them.
struct KeptRecords<'a> {
    files: &'a TreeFiles,
    end: u64,
    first: u64,
    records: Vec<FrameRecord>,
}

impl KeptRecords<'_> {
    const BATCH: u64 = 8192;

    fn get(&mut self, seqno: u64) -> Result<Option<FrameRecord>, StoreError> {
        if seqno >= self.end {
            return Ok(None);
        }
        if seqno < self.first || seqno >= self.first + self.records.len() as u64 {
            self.records = self
                .files
                .records(seqno, Self::BATCH.min(self.end - seqno))?;
            self.first = seqno;
        }
        Ok(Some(self.records[(seqno - self.first) as usize]))
    }
}

/// Errors opening or resuming the tree files make them derived data to rebuild, named by
/// the file when known.
fn tree_damage(tree_dir: &Path) -> impl Fn(StoreError) -> StoreError + '_ {
    move |e| match e {
        e @ StoreError::DerivedDamaged { .. } => e,
        other => StoreError::DerivedDamaged {
            file: tree_dir.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// A proof over the stored tree failed: the source's own error, or a tree too small.
pub(crate) fn proof_error(e: merkle::ProofError<StoreError>) -> StoreError {
    match e {
        merkle::ProofError::Source(e) => e,
        other => StoreError::Tree(other.to_string()),
    }
}

/// Refuses a ledger that ends before, or disagrees with, the last root this node signed.
fn check_guard(
    guard: &ForkGuard,
    tree: &impl merkle::NodeSource<Error = StoreError>,
    last: Option<TxId>,
) -> Result<(), StoreError> {
    let Some(SignedPoint { seqno, root }) = guard.last() else {
        return Ok(());
    };
    let end = last.map_or(0, TxId::seqno);
    if end < seqno {
        return Err(StoreError::RolledBack {
            guard: guard.path().to_owned(),
            signed: seqno,
            end,
        });
    }
    let ours = merkle::root(tree, seqno).map_err(proof_error)?;
    if ours != root {
        return Err(StoreError::Forked {
            guard: guard.path().to_owned(),
            seqno,
        });
    }
    Ok(())
}

pub(crate) fn index_op(body: TxBody) -> IndexOp {
    match body {
        TxBody::Application(e) => IndexOp::Entry {
            kv: KvKeyOp::of(&e.kv_writes),
            collection: e.collection_id,
            tags: e.tags,
            idempotency: e.idempotency,
        },
        TxBody::Kv(writes) => IndexOp::Kv(KvKeyOp::of(&writes)),
        TxBody::Governance(writes) => IndexOp::Governance(
            writes
                .into_iter()
                .map(|w| (w.table, w.key, w.value))
                .collect(),
        ),
        TxBody::Signature(_) => IndexOp::Signature,
    }
}

fn damage_txid(prev: Option<TxId>, expected_seqno: u64) -> String {
    match prev {
        Some(p) => format!("{}.{expected_seqno}", p.view()),
        None => format!("(seqno {expected_seqno})"),
    }
}

fn describe(fault: &FrameFault, committed: bool) -> String {
    if committed {
        format!(
            "{fault}; this transaction was signed before (fork guard), so it is not a torn write"
        )
    } else {
        fault.to_string()
    }
}

/// Brings the index up to seqno `end` from the segments, after it lost updates (a failed
/// commit, or a reopen that rolled it back to its last checkpoint). Used by the writer while
/// the store is running; frames are checked as on open, and nothing beyond `end` is read.
pub(crate) fn reindex(
    ledger_dir: &Path,
    keys: &KeyRing,
    index: &Index,
    end: u64,
) -> Result<u64, StoreError> {
    let indexed_through = index.indexed_through()?;
    if indexed_through >= end {
        return Ok(0);
    }
    let segments = segment::list_segments(ledger_dir).map_err(|e| StoreError::io(ledger_dir, e))?;
    let mut prev: Option<TxId> = None;
    let mut ops: Vec<(TxId, IndexOp)> = Vec::new();
    let mut replayed = 0;
    for (i, (first, path)) in segments.iter().enumerate() {
        if *first > end {
            break;
        }
        // Segments wholly at or below the watermark need no reading.
        let next_first = segments.get(i + 1).map(|(f, _)| *f);
        if next_first.is_some_and(|n| n <= indexed_through + 1) {
            continue;
        }
        let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
        // Views never decrease, so the previous frame's view (or 1) passes the sequence check.
        let before = TxId::new(prev.map_or(1, TxId::view), first - 1);
        let scan = segment::scan_segment(&bytes, before);
        for frame in &scan.frames {
            let seqno = frame.txid.seqno();
            if seqno > end {
                break;
            }
            prev = Some(frame.txid);
            if seqno <= indexed_through {
                continue;
            }
            let payload = &bytes[frame.payload_offset() as usize..frame.end() as usize];
            let corrupt = |reason: String| StoreError::Corrupt {
                file: path.clone(),
                offset: frame.offset,
                txid: frame.txid.to_string(),
                reason,
            };
            let view = EntryView::parse(payload, seqno).map_err(|e| corrupt(e.to_string()))?;
            let body = view
                .body(Some(&*keys.opener(seqno)))
                .map_err(|e| corrupt(e.to_string()))?;
            ops.push((frame.txid, index_op(body)));
            if ops.len() >= REPLAY_CHUNK {
                replayed += ops.len() as u64;
                index.apply(&ops, None)?;
                ops.clear();
            }
        }
    }
    replayed += ops.len() as u64;
    index.apply(&ops, None)?;
    Ok(replayed)
}

/// The frame layout of each segment, from its header (a damaged header is reported by the scan;
/// here it reads as the current layout).
fn with_layouts(segments: &[(u64, PathBuf)]) -> Vec<(u64, PathBuf, FrameLayout)> {
    segments
        .iter()
        .map(|(first, path)| {
            let mut header = [0u8; SEGMENT_HEADER_LEN];
            let version = File::open(path)
                .and_then(|mut f| f.read_exact(&mut header))
                .ok()
                .and_then(|()| segment::check_segment_header(&header, *first).ok());
            let layout = version.map_or(FrameLayout::V2, FrameLayout::of);
            (*first, path.clone(), layout)
        })
        .collect()
}
