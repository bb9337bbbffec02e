//! The offline audit: re-reads every frame of a ledger directory and checks the whole chain
//! without any key — checksums and sequence, every leaf recomputed from the stored bytes
//! (ciphertext included), every signature transaction's root against the recomputed tree, its
//! ECDSA signature, its COSE root signature by the service key (and the txid it names), and
//! the signing node's certificate chain up to the service certificate
//! recorded at genesis (and, if given, pinned by the caller); ledger secret rotations are
//! checked for form and order (their secrets stay sealed).
//!
//! [`audit_all`] also checks the files derived from the ledger against what the ledger implies
//! (FORMAT.md §8): `index.redb` (redb's page checksums, then every row: signatures and
//! governance always, collections, tags and idempotency keys with the ledger secret),
//! `tree/frames.idx` (each record's offset, class and leaf bytes) and `tree/level-LL.hashes`
//! (each stored subtree hash against the tree recomputed from the entries), plus the checksums
//! recorded for the tree files at the last checkpoint. Damage there is reported per file; the
//! ledger itself is not implicated, and the files can be rebuilt from it.
//!
//! It reads only: it never truncates a torn tail or touches derived files (the index is
//! checked on a private copy, since redb's integrity check writes). The two leaf bytes of a
//! frame record name the exact transaction that was altered even when its frame checksum was
//! forged; when the record itself is not known to be intact (no checksum covers it), a
//! mismatch is only blamed on the entry once a signature over it fails, and on the record
//! once a signature over it verifies.

use crate::DerivedDamage;
use crate::crypto;
use crate::crypto::KeyRing;
use crate::index::IndexError;
use crate::index::{ExpectedIndex, Index};
use crate::recovery::index_op;
use crate::segment::{self, FrameLocation};
use crate::tree::{
    self, CHECK_CHUNK, ChunkSums, EntryClass, Family, FrameRecord, TILE_STRIDE, TreeSums,
};
use ledger_core::entry::{self, EntryView, TxKind};
use ledger_core::hash::Hash32;
use ledger_core::merkle::{Frontier, Rfc6962, TreeHashing as _};
use ledger_core::x509::Cert;
use ledger_core::{TxId, signing};
use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub segments: usize,
    pub transactions: u64,
    pub entries: u64,
    /// Transactions of application-table writes without a ledger entry (user-defined code).
    pub kv_transactions: u64,
    pub governance: u64,
    pub signatures: u64,
    /// The last signature: every transaction up to it is verified.
    pub last_verified: Option<TxId>,
    /// Transactions after the last signature (durable, not yet signed).
    pub unsigned_tail: u64,
    pub nodes: usize,
    /// Ledger secret rotations recorded (checked for form and order; their secrets are sealed).
    pub key_rotations: u64,
    /// What the check of the derived files found ([`audit_all`] only).
    pub derived: Option<DerivedReport>,
}

/// The derived files checked, and the first problem found in each damaged one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DerivedReport {
    pub checked: Vec<PathBuf>,
    pub damaged: Vec<DerivedDamage>,
    /// What could not be checked, and why.
    pub unchecked: Vec<String>,
}

impl DerivedReport {
    fn damage(&mut self, file: &Path, reason: impl Into<String>) {
        if !self.damaged.iter().any(|d| d.file == file) {
            self.damaged.push(DerivedDamage {
                file: file.to_owned(),
                reason: reason.into(),
            });
        }
    }

    fn is_damaged(&self, file: &Path) -> bool {
        self.damaged.iter().any(|d| d.file == file)
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {reason}", txid.as_deref().map(|t| format!("transaction {t}")).unwrap_or_else(|| "ledger".into()), location.as_ref().map(|(f, o)| format!(" ({} offset {o})", f.display())).unwrap_or_default())]
pub struct AuditFailure {
    /// The first bad transaction, when one can be named.
    pub txid: Option<String>,
    pub location: Option<(PathBuf, u64)>,
    pub reason: String,
}

fn failure(
    txid: Option<String>,
    location: Option<(PathBuf, u64)>,
    reason: impl Into<String>,
) -> AuditFailure {
    AuditFailure {
        txid,
        location,
        reason: reason.into(),
    }
}

/// Audits the ledger in `data_dir`. `pinned_service_cert` (PEM), when given, must be the
/// service certificate the ledger was created with. Derived files are not checked (see
/// [`audit_all`]); the frame records are only used to name an altered transaction.
pub fn audit(
    data_dir: &Path,
    pinned_service_cert: Option<&str>,
) -> Result<AuditReport, AuditFailure> {
    run(data_dir, pinned_service_cert, None)
}

/// Audits the ledger in `data_dir` as [`audit`] does, and checks every derived file against
/// it: the result's `derived` lists what is damaged. With `secret` (the key ring of the ledger
/// secret, which the audit extends with the rotations it reads) the
/// private rows of the index and the collection class of each frame record are checked too.
/// The derived files must not be written meanwhile (no server running on `data_dir`).
pub fn audit_all(
    data_dir: &Path,
    pinned_service_cert: Option<&str>,
    secret: Option<&KeyRing>,
) -> Result<AuditReport, AuditFailure> {
    run(data_dir, pinned_service_cert, Some(secret))
}

fn run(
    data_dir: &Path,
    pinned_service_cert: Option<&str>,
    derived: Option<Option<&KeyRing>>,
) -> Result<AuditReport, AuditFailure> {
    let ledger_dir = data_dir.join("ledger");
    let segments = segment::list_segments(&ledger_dir).map_err(|e| {
        failure(
            None,
            None,
            format!("cannot list {}: {e}", ledger_dir.display()),
        )
    })?;
    if segments.is_empty() {
        return Err(failure(
            None,
            None,
            format!("{} holds no segment files", ledger_dir.display()),
        ));
    }
    let (derived, records) = match derived {
        Some(secret) => {
            if let Some(ring) = secret {
                // The scan adds the ledger's rotations to the ring, version by version.
                ring.truncate_after(0);
            }
            let (check, records) = DerivedCheck::prepare(data_dir, secret);
            (Some(check), records)
        }
        None => (
            None,
            SeqFile::open(&data_dir.join("tree").join(tree::FRAMES_FILE), 8, None),
        ),
    };
    let mut state = AuditState {
        report: AuditReport {
            segments: segments.len(),
            ..Default::default()
        },
        frontier: Frontier::new(),
        service_cert: None,
        nodes: HashMap::new(),
        records,
        completed: Vec::new(),
        pending: Vec::new(),
        derived,
    };
    state.frontier.push(Hash32::ZERO, &mut state.completed);
    let mut prev: Option<TxId> = None;
    for (_, path) in &segments {
        let bytes = fs::read(path)
            .map_err(|e| failure(None, None, format!("cannot read {}: {e}", path.display())))?;
        let scan = segment::scan_segment(&bytes, prev);
        for frame in &scan.frames {
            state.check_frame(
                path,
                frame,
                &bytes[frame.payload_offset() as usize..frame.end() as usize],
            )?;
            prev = Some(frame.txid);
        }
        if let Some(damage) = scan.damage {
            let txid = match prev {
                Some(p) => format!("{}.{}", p.view(), damage.expected_seqno),
                None => format!("(seqno {})", damage.expected_seqno),
            };
            let hint = if damage.torn {
                " (an interrupted append, or damage to the last frames written; opening the ledger cuts an unsigned torn tail in the last segment)"
            } else {
                ""
            };
            return Err(failure(
                Some(txid),
                Some((path.clone(), damage.offset)),
                format!("{}{hint}", damage.fault),
            ));
        }
    }
    if let Some(pinned) = pinned_service_cert {
        let recorded = state.service_cert.as_deref().unwrap_or_default();
        let same = match (Cert::from_pem(pinned), Cert::from_pem(recorded)) {
            (Ok(a), Ok(b)) => a.der() == b.der(),
            _ => false,
        };
        if !same {
            return Err(failure(
                None,
                None,
                "the ledger was not created with the given service certificate",
            ));
        }
    }
    let end = prev.map_or(0, TxId::seqno);
    let pending = std::mem::take(&mut state.pending);
    let mut report = state.report;
    report.transactions = end;
    report.unsigned_tail = report.transactions - report.last_verified.map_or(0, TxId::seqno);
    report.nodes = state.nodes.len();
    if let Some(derived) = state.derived {
        report.derived = Some(derived.finish(end, &pending, state.records.as_ref()));
    }
    Ok(report)
}

/// A frame record whose leaf bytes differ from its transaction's leaf while nothing says
/// which of the two is intact: decided by the next signature over it.
#[derive(Debug, Clone)]
struct PendingLeaf {
    txid: TxId,
    path: PathBuf,
    offset: u64,
    record: FrameRecord,
    leaf: Hash32,
}

impl PendingLeaf {
    fn entry_altered(&self) -> AuditFailure {
        failure(
            Some(self.txid.to_string()),
            Some((self.path.clone(), self.offset)),
            "the entry's bytes differ from when it was written (its leaf hash changed)",
        )
    }

    fn record_damaged(&self) -> String {
        format!(
            "the record of seqno {} holds leaf bytes {:02x}{:02x}, but the transaction's leaf (verified by a signature) starts with {:02x}{:02x}",
            self.txid.seqno(),
            self.record.leaf_check[0],
            self.record.leaf_check[1],
            self.leaf.0[0],
            self.leaf.0[1]
        )
    }
}

struct AuditState<'a> {
    report: AuditReport,
    frontier: Frontier,
    service_cert: Option<String>,
    /// node id → certificate PEM, as registered by governance transactions.
    nodes: HashMap<Hash32, String>,
    /// `tree/frames.idx`, when present: each record keeps two bytes of the leaf.
    records: Option<SeqFile>,
    completed: Vec<(u32, u64, Hash32)>,
    pending: Vec<PendingLeaf>,
    derived: Option<DerivedCheck<'a>>,
}

impl AuditState<'_> {
    fn check_frame(
        &mut self,
        path: &Path,
        frame: &FrameLocation,
        payload: &[u8],
    ) -> Result<(), AuditFailure> {
        let fail = |reason: String| {
            failure(
                Some(frame.txid.to_string()),
                Some((path.to_owned(), frame.offset)),
                reason,
            )
        };
        let seqno = frame.txid.seqno();
        let view = EntryView::parse(payload, seqno).map_err(|e| fail(e.to_string()))?;
        if view.txid != frame.txid {
            return Err(fail(format!(
                "the entry names txid {} but its frame says {}",
                view.txid, frame.txid
            )));
        }
        let leaf = view.leaf();
        let class = self
            .derived
            .as_mut()
            .map_or(Ok(None), |d| d.model(frame.txid, &view))
            .map_err(fail)?;
        self.check_record(path, frame, &view, leaf, class)
            .map_err(fail)?;
        match view.kind {
            TxKind::Application => self.report.entries += 1,
            TxKind::Kv => self.report.kv_transactions += 1,
            TxKind::Governance => {
                self.report.governance += 1;
                let writes = view.governance_writes().map_err(|e| fail(e.to_string()))?;
                // A ledger secret rotation: the next key version, alone in its transaction.
                if crypto::rotation_record(&writes, self.report.key_rotations + 1)
                    .map_err(|e| fail(format!("ledger secret rotation refused: {e}")))?
                    .is_some()
                {
                    self.report.key_rotations += 1;
                }
                for w in writes {
                    let text = || {
                        w.value
                            .as_ref()
                            .and_then(|v| String::from_utf8(v.clone()).ok())
                    };
                    match w.table.as_str() {
                        entry::tables::SERVICE if w.key == "identity" => {
                            if self.service_cert.is_some() {
                                return Err(fail(
                                    "the service identity was changed after genesis".into(),
                                ));
                            }
                            self.service_cert = Some(
                                text()
                                    .ok_or_else(|| fail("malformed service certificate".into()))?,
                            );
                        }
                        entry::tables::NODES => {
                            let id = Hash32::from_hex(&w.key)
                                .map_err(|_| fail("malformed node id".into()))?;
                            match text() {
                                Some(cert) => {
                                    self.check_node_cert(&id, &cert).map_err(fail)?;
                                    self.nodes.insert(id, cert);
                                }
                                None => {
                                    self.nodes.remove(&id);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            TxKind::Signature => {
                self.report.signatures += 1;
                self.check_signature(&view).map_err(|reason| {
                    // A transaction this signature covers whose record disagrees with its
                    // leaf is the altered one.
                    match self.pending.first() {
                        Some(p) => p.entry_altered(),
                        None => fail(reason),
                    }
                })?;
                // The root verified: the transactions before it are intact, so records that
                // disagree with them are the damaged ones.
                let (covered, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|p| p.txid.seqno() < seqno);
                self.pending = rest;
                if let Some(d) = self.derived.as_mut() {
                    for p in &covered {
                        d.report.damage(&d.records_path, p.record_damaged());
                    }
                }
                self.report.last_verified = Some(frame.txid);
            }
        }
        self.completed.clear();
        self.frontier.push(leaf, &mut self.completed);
        if let Some(d) = self.derived.as_mut() {
            d.check_levels(Family::Ccf, &self.completed);
            d.push_rfc6962(&leaf);
        }
        Ok(())
    }

    fn check_signature(&self, view: &EntryView) -> Result<(), String> {
        let record = view.signature().map_err(|e| e.to_string())?;
        let expected = self.frontier.root().expect("leaf 0 is present");
        if record.root != expected {
            return Err(format!(
                "signed root {} differs from the root {} recomputed from the transactions before it",
                record.root, expected
            ));
        }
        let cert = self.nodes.get(&record.node_id).ok_or_else(|| {
            format!(
                "signed by node {} which the ledger never registered",
                record.node_id
            )
        })?;
        let spki = Cert::from_pem(cert).map_err(|e| e.to_string())?.spki_der();
        signing::verify_root_signature(&spki, &record.root, &record.signature)
            .map_err(|e| format!("signature does not verify: {e}"))?;
        if let Some(cose) = &record.cose_signature {
            let service = self
                .service_cert
                .as_deref()
                .ok_or("a COSE root signature before the service certificate is recorded")?;
            let key = Cert::from_pem(service)
                .and_then(|c| c.public_key())
                .map_err(|e| format!("the recorded service certificate: {e}"))?;
            let claims = ledger_core::cose::verify_root_signature(cose, &record.root, &key)
                .map_err(|e| format!("COSE root signature: {e}"))?;
            if claims.txid != view.txid {
                return Err(format!(
                    "the COSE root signature names transaction {}",
                    claims.txid
                ));
            }
        }
        Ok(())
    }

    /// Compares the frame record of this transaction, when there is one, with the frame.
    /// `class` is the exact class when the auditor could decrypt the entry.
    fn check_record(
        &mut self,
        path: &Path,
        frame: &FrameLocation,
        view: &EntryView,
        leaf: Hash32,
        class: Option<EntryClass>,
    ) -> Result<(), String> {
        let seqno = frame.txid.seqno();
        let Some(records) = self.records.as_mut() else {
            return Ok(());
        };
        // Records may be missing past the last checkpoint; compare what is there.
        let Some(bytes) = records.get(seqno) else {
            return Ok(());
        };
        let verified = records.chunk_verified(seqno);
        let record = FrameRecord::decode(&bytes);
        let derived = self.derived.as_mut();
        let problem = match record {
            None => Some(format!("the record of seqno {seqno} is unreadable")),
            Some(r) if r.offset != frame.offset => Some(format!(
                "the record of seqno {seqno} says its frame is at offset {}, but it is at offset {}",
                r.offset, frame.offset
            )),
            Some(r) if !r.class.admits(view.kind) || class.is_some_and(|c| c != r.class) => {
                Some(format!(
                    "the record of seqno {seqno} says {:?}, but the transaction is {}",
                    r.class,
                    class.map_or_else(
                        || format!("a {:?} transaction", view.kind),
                        |c| format!("{c:?}")
                    )
                ))
            }
            Some(r) if !r.matches_leaf(&leaf) => {
                let pending = PendingLeaf {
                    txid: frame.txid,
                    path: path.to_owned(),
                    offset: frame.offset,
                    record: r,
                    leaf,
                };
                if verified {
                    // The record is as written: the entry changed since.
                    return Err(pending.entry_altered().reason);
                }
                self.pending.push(pending);
                None
            }
            Some(_) => None,
        };
        if let (Some(problem), Some(d)) = (problem, derived) {
            d.report.damage(&d.records_path, problem);
        }
        Ok(())
    }

    /// A node certificate must be issued by the service identity and match its node id.
    fn check_node_cert(&self, id: &Hash32, cert: &str) -> Result<(), String> {
        let service = self
            .service_cert
            .as_deref()
            .ok_or("a node was registered before the service identity")?;
        let service = Cert::from_pem(service).map_err(|e| format!("service certificate: {e}"))?;
        let cert = Cert::from_pem(cert).map_err(|e| format!("node certificate: {e}"))?;
        cert.verify_issued_by(&service)
            .map_err(|e| format!("node certificate not issued by the service: {e}"))?;
        if ledger_core::hash::sha256(&cert.spki_der()) != *id {
            return Err("node id is not the hash of the node certificate's public key".into());
        }
        Ok(())
    }
}

/// One element after another of a tree file, read in large blocks, with the checksums
/// recorded for it (when known) checked as blocks are read.
struct SeqFile {
    path: PathBuf,
    file: File,
    unit: u64,
    /// Elements that may be compared: the durable size when known, else all the file holds.
    len: u64,
    sums: Option<ChunkSums>,
    block: Vec<u8>,
    block_start: u64,
    /// Chunks (by index) whose checksum failed.
    bad_chunks: Vec<u64>,
}

impl SeqFile {
    const BLOCK: u64 = 256 * CHECK_CHUNK;

    /// `limit`: elements to compare (the durable size), when known.
    fn open(path: &Path, unit: u64, limit: Option<u64>) -> Option<SeqFile> {
        let file = File::open(path).ok()?;
        let have = file.metadata().ok()?.len() / unit;
        Some(SeqFile {
            path: path.to_owned(),
            file,
            unit,
            len: limit.map_or(have, |l| l.min(have)),
            sums: None,
            block: Vec::new(),
            block_start: 0,
            bad_chunks: Vec::new(),
        })
    }

    /// Element `i`, if the file holds it.
    fn get(&mut self, i: u64) -> Option<Vec<u8>> {
        if i >= self.len {
            return None;
        }
        let at = i * self.unit;
        let in_block =
            at >= self.block_start && at + self.unit <= self.block_start + self.block.len() as u64;
        if !in_block {
            self.block_start = at - at % Self::BLOCK;
            let end = (self.block_start + Self::BLOCK).min(self.len * self.unit);
            self.block.resize((end - self.block_start) as usize, 0);
            self.file
                .read_exact_at(&mut self.block, self.block_start)
                .ok()?;
            if let Some(sums) = &self.sums {
                for (j, chunk) in self.block.chunks(CHECK_CHUNK as usize).enumerate() {
                    let index = self.block_start / CHECK_CHUNK + j as u64;
                    let ok = sums.0.get(index as usize) == Some(&crc32c::crc32c(chunk));
                    if !ok && !self.bad_chunks.contains(&index) {
                        self.bad_chunks.push(index);
                    }
                }
            }
        }
        let from = (at - self.block_start) as usize;
        Some(self.block[from..from + self.unit as usize].to_vec())
    }

    /// Whether element `i` lies in a chunk whose recorded checksum matched.
    fn chunk_verified(&self, i: u64) -> bool {
        let chunk = i * self.unit / CHECK_CHUNK;
        self.sums.is_some() && !self.bad_chunks.contains(&chunk)
    }
}

/// The check of the derived files, carried along the scan of the ledger.
struct DerivedCheck<'a> {
    report: DerivedReport,
    secret: Option<&'a KeyRing>,
    records_path: PathBuf,
    /// Level files from level 4 up, by stored index - 1.
    levels: Vec<SeqFile>,
    /// The RFC 6962 tree's level files (`tree/rfc6962/`), from level 4 up, by stored index,
    /// and that tree recomputed from the ledger's leaves, to compare them with.
    rfc6962_levels: Vec<SeqFile>,
    rfc6962: Frontier<Rfc6962>,
    rfc6962_completed: Vec<(u32, u64, Hash32)>,
    /// The index, opened on a private copy, and the model of it built from the ledger.
    index: Option<(Index, TempCopy, ExpectedIndex)>,
    indexed_through: u64,
}

/// A copy of a file that is removed when dropped.
struct TempCopy(PathBuf);

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl<'a> DerivedCheck<'a> {
    /// Opens the derived files of `data_dir` for the check; also returns the frame records,
    /// which the scan reads.
    fn prepare(
        data_dir: &Path,
        secret: Option<&'a KeyRing>,
    ) -> (DerivedCheck<'a>, Option<SeqFile>) {
        let mut report = DerivedReport::default();
        let tree_dir = data_dir.join("tree");
        let records_path = tree_dir.join(tree::FRAMES_FILE);
        let index_path = data_dir.join("index.redb");
        // The index, on a copy: redb's integrity check repairs (writes) what it opens.
        let mut index = None;
        let mut tree_size = None;
        let mut sums = TreeSums::default();
        let mut indexed_through = 0;
        if !index_path.exists() {
            report.damage(&index_path, "it is missing");
        } else {
            report.checked.push(index_path.clone());
            let copy = TempCopy(std::env::temp_dir().join(format!(
                "cledger-audit-{}-{}.redb",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            )));
            let opened = match fs::copy(&index_path, &copy.0) {
                Err(e) => Err(Err(format!("could not copy it to check it: {e}"))),
                Ok(_) => Index::open(&copy.0).map_err(|e| Ok(index_reason(e))),
            };
            match opened {
                Ok(opened) => {
                    let meta = opened.indexed_through().and_then(|t| {
                        Ok((t, opened.tree_durable_size()?, opened.tree_checksums()?))
                    });
                    match meta {
                        Ok((through, size, recorded)) => {
                            indexed_through = through;
                            tree_size = Some(size);
                            sums = recorded;
                            index = Some((opened, copy, ExpectedIndex::new(secret.is_some())));
                        }
                        Err(e) => report.damage(&index_path, index_reason(e)),
                    }
                }
                Err(Err(reason)) => report
                    .unchecked
                    .push(format!("{}: {reason}", index_path.display())),
                Err(Ok(reason)) => report.damage(&index_path, reason),
            }
        }
        if secret.is_none() {
            report.unchecked.push(
                "rows of collections, tags and idempotency keys, and the collection class of frame records: the ledger secret is needed".into(),
            );
        }
        // The tree files, against the checksums recorded with the durable size.
        let rfc6962_dir = tree_dir.join(tree::RFC6962_DIR);
        let open_level =
            |family: Family, k: usize, report: &mut DerivedReport| -> Option<SeqFile> {
                let (dir, recorded) = match family {
                    Family::Ccf => (&tree_dir, &sums.ccf),
                    Family::Rfc6962 => (&rfc6962_dir, &sums.rfc6962),
                };
                let path = family.path(dir, k);
                let unit = family.unit(k);
                let wanted = tree_size.map(|size| family.wanted(k, size));
                if !path.exists() {
                    if wanted.is_some_and(|w| w > 0) {
                        report.damage(&path, "it is missing");
                    }
                    return None;
                }
                report.checked.push(path.clone());
                let mut file = SeqFile::open(&path, unit, wanted)?;
                if let Some(w) = wanted.filter(|w| file.len < *w) {
                    report.damage(
                        &path,
                        format!("it holds {} elements, {w} were made durable", file.len),
                    );
                }
                if tree_size.is_some() && file.len > 0 {
                    let needed = ChunkSums::chunks(file.len * unit) as usize;
                    match recorded.get(k) {
                        Some(s) if s.0.len() >= needed => {
                            file.sums = Some(ChunkSums(s.0[..needed].to_vec()));
                        }
                        _ => report.damage(&path, "no checksums are recorded for it"),
                    }
                }
                Some(file)
            };
        let mut records = open_level(Family::Ccf, 0, &mut report);
        if let Some(file) = records.as_mut()
            && file.get(0).is_some_and(|r| r != FrameRecord::NONE.encode())
        {
            report.damage(&records_path, "the record of leaf 0 is not empty");
        }
        let open_levels = |family: Family, first: usize, report: &mut DerivedReport| {
            let dir = match family {
                Family::Ccf => &tree_dir,
                Family::Rfc6962 => &rfc6962_dir,
            };
            let mut levels = Vec::new();
            for k in first.. {
                let wanted = tree_size.map(|size| family.wanted(k, size));
                if !family.path(dir, k).exists() && wanted.is_none_or(|w| w == 0) {
                    break;
                }
                match open_level(family, k, report) {
                    Some(f) => levels.push(f),
                    None => break,
                }
            }
            levels
        };
        let levels = open_levels(Family::Ccf, 1, &mut report);
        let rfc6962_levels = open_levels(Family::Rfc6962, 0, &mut report);
        let mut rfc6962 = Frontier::<Rfc6962>::default();
        rfc6962.push(Rfc6962::leaf(&Hash32::ZERO), &mut Vec::new());
        let check = DerivedCheck {
            report,
            secret,
            records_path,
            levels,
            rfc6962_levels,
            rfc6962,
            rfc6962_completed: Vec::new(),
            index,
            indexed_through,
        };
        (check, records)
    }

    /// Adds transaction `txid` to the model of the index; returns its exact class when the
    /// entry could be decrypted.
    fn model(&mut self, txid: TxId, view: &EntryView) -> Result<Option<EntryClass>, String> {
        if let Some(ring) = self.secret {
            // Rotations are followed in order, so each entry opens with its version's key.
            ring.observe(txid, view).map_err(|e| e.to_string())?;
        }
        let body = match (view.kind, self.secret) {
            (TxKind::Application | TxKind::Kv, None) => None,
            (_, ring) => {
                let opener = ring.map(|r| r.opener(txid.seqno()));
                Some(
                    view.body(opener.as_deref().map(|k| k as &dyn entry::Opener))
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        let class = body.as_ref().map(EntryClass::of);
        if let Some((_, _, expected)) = self.index.as_mut()
            && txid.seqno() <= self.indexed_through
        {
            let op = body.map(index_op);
            expected.apply(txid, op.as_ref());
        }
        Ok(class)
    }

    /// Adds the next leaf to the RFC 6962 tree recomputed from the ledger and compares the
    /// subtrees it completes with that tree's level files.
    fn push_rfc6962(&mut self, leaf: &Hash32) {
        let mut completed = std::mem::take(&mut self.rfc6962_completed);
        completed.clear();
        self.rfc6962.push(Rfc6962::leaf(leaf), &mut completed);
        self.check_levels(Family::Rfc6962, &completed);
        self.rfc6962_completed = completed;
    }

    /// Compares the subtrees just completed at stored levels with `family`'s level files.
    fn check_levels(&mut self, family: Family, completed: &[(u32, u64, Hash32)]) {
        for &(level, index, hash) in completed {
            if level == 0 || level % TILE_STRIDE != 0 {
                continue;
            }
            let k = (level / TILE_STRIDE) as usize;
            let file = match family {
                Family::Ccf => self.levels.get_mut(k - 1),
                Family::Rfc6962 => self.rfc6962_levels.get_mut(k - 1),
            };
            let Some(file) = file else {
                continue;
            };
            if let Some(stored) = file.get(index)
                && stored != hash.0
            {
                let path = file.path.clone();
                self.report.damage(
                    &path,
                    format!(
                        "its hash of leaves {}..{} is {}, the ledger's is {hash}",
                        index << level,
                        (index + 1) << level,
                        hex::encode(&stored)
                    ),
                );
            }
        }
    }

    fn finish(
        mut self,
        end: u64,
        pending: &[PendingLeaf],
        records: Option<&SeqFile>,
    ) -> DerivedReport {
        for p in pending {
            self.report.damage(
                &self.records_path,
                format!(
                    "{}; no signature covers it yet, so the entry may have been altered instead",
                    p.record_damaged()
                ),
            );
        }
        // Checksums, and files that describe more than the ledger holds.
        let files = records
            .into_iter()
            .chain(self.levels.iter())
            .enumerate()
            .map(|(k, file)| (Family::Ccf.level(k), file))
            .chain(
                self.rfc6962_levels
                    .iter()
                    .enumerate()
                    .map(|(k, file)| (Family::Rfc6962.level(k), file)),
            );
        let mut problems = Vec::new();
        for (level, file) in files {
            if let Some(chunk) = file.bad_chunks.first() {
                problems.push((
                    file.path.clone(),
                    format!(
                        "bytes {}..{} do not match their checksum",
                        chunk * CHECK_CHUNK,
                        (chunk + 1) * CHECK_CHUNK
                    ),
                ));
            }
            let leaves = if level < 64 { (end + 1) >> level } else { 0 };
            if file.len > leaves {
                problems.push((
                    file.path.clone(),
                    format!(
                        "it holds {} elements, more than the {leaves} the ledger implies",
                        file.len
                    ),
                ));
            }
        }
        for (path, reason) in problems {
            self.report.damage(&path, reason);
        }
        // The levels were compared along the way; the index now.
        if let Some((index, _copy, expected)) = self.index.take() {
            let original = self
                .report
                .checked
                .iter()
                .find(|p| p.ends_with("index.redb"))
                .cloned()
                .unwrap_or_else(|| index.path().to_owned());
            if self.indexed_through > end {
                self.report.damage(
                    &original,
                    format!(
                        "it says it indexed the ledger through seqno {}, but the ledger ends at {end}",
                        self.indexed_through
                    ),
                );
            } else if !self.report.is_damaged(&original)
                && let Err(e) = index.compare(&expected)
            {
                self.report.damage(&original, index_reason(e));
            }
        }
        self.report
    }
}

/// What is wrong with the index, without the path of the copy it was read from.
fn index_reason(e: IndexError) -> String {
    match e {
        IndexError::Damaged { reason, .. } => reason,
        IndexError::Db { message, .. } => message,
    }
}
