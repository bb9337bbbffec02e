//! The offline audit: re-reads every frame of a ledger directory and checks the whole chain
//! without any key — checksums and sequence, every leaf recomputed from the stored bytes
//! (ciphertext included), every signature transaction's root against the recomputed tree, its
//! ECDSA signature, and the signing node's certificate chain up to the service certificate
//! recorded at genesis (and, if given, pinned by the caller); ledger secret rotations are
//! checked for form and order (their secrets stay sealed).
//!
//! It reads only: it never truncates a torn tail or touches derived files. When the tree files
//! are present it also compares each recomputed leaf with the stored one, which names the
//! exact transaction that was altered even when its frame checksum was forged.

use crate::crypto;
use crate::segment::{self, FrameLocation};
use crate::tree::{self, FrameRecord};
use ledger_core::entry::{self, EntryView, TxKind};
use ledger_core::hash::Hash32;
use ledger_core::merkle::Frontier;
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
    pub governance: u64,
    pub signatures: u64,
    /// The last signature: every transaction up to it is verified.
    pub last_verified: Option<TxId>,
    /// Transactions after the last signature (durable, not yet signed).
    pub unsigned_tail: u64,
    pub nodes: usize,
    /// Ledger secret rotations recorded (checked for form and order; their secrets are sealed).
    pub key_rotations: u64,
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
/// service certificate the ledger was created with.
pub fn audit(
    data_dir: &Path,
    pinned_service_cert: Option<&str>,
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
    let stored_records = File::open(data_dir.join("tree").join(tree::FRAMES_FILE)).ok();
    let mut state = AuditState {
        report: AuditReport {
            segments: segments.len(),
            ..Default::default()
        },
        frontier: Frontier::new(),
        service_cert: None,
        nodes: HashMap::new(),
        stored_records,
        completed: Vec::new(),
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
            let hint = if damage.reaches_end {
                " (at the end of the data: an interrupted write or damage to the last frame; opening the ledger cuts an unsigned torn tail)"
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
    let mut report = state.report;
    report.transactions = prev.map_or(0, TxId::seqno);
    report.unsigned_tail = report.transactions - report.last_verified.map_or(0, TxId::seqno);
    report.nodes = state.nodes.len();
    Ok(report)
}

struct AuditState {
    report: AuditReport,
    frontier: Frontier,
    service_cert: Option<String>,
    /// node id → certificate PEM, as registered by governance transactions.
    nodes: HashMap<Hash32, String>,
    /// `tree/frames.idx`, when present: each record keeps two bytes of the leaf.
    stored_records: Option<File>,
    completed: Vec<(u32, u64, Hash32)>,
}

impl AuditState {
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
        let view =
            EntryView::parse(payload, frame.txid.seqno()).map_err(|e| fail(e.to_string()))?;
        if view.txid != frame.txid {
            return Err(fail(format!(
                "the entry names txid {} but its frame says {}",
                view.txid, frame.txid
            )));
        }
        let leaf = view.leaf();
        if let Some(file) = &self.stored_records {
            let mut stored = [0u8; tree::RECORD_LEN as usize];
            // Records may be missing past the last checkpoint; compare what is there.
            let record = file
                .read_exact_at(&mut stored, frame.txid.seqno() * tree::RECORD_LEN)
                .ok()
                .and_then(|()| FrameRecord::decode(&stored));
            if let Some(record) = record
                && record.offset == frame.offset
                && !record.matches_leaf(&leaf)
            {
                return Err(fail(
                    "the entry's bytes differ from when it was written (its leaf hash changed)"
                        .into(),
                ));
            }
        }
        match view.kind {
            TxKind::Application => self.report.entries += 1,
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
                let record = view.signature().map_err(|e| fail(e.to_string()))?;
                let expected = self.frontier.root().expect("leaf 0 is present");
                if record.root != expected {
                    return Err(fail(format!(
                        "signed root {} differs from the root {} recomputed from the transactions before it",
                        record.root, expected
                    )));
                }
                let cert = self.nodes.get(&record.node_id).ok_or_else(|| {
                    fail(format!(
                        "signed by node {} which the ledger never registered",
                        record.node_id
                    ))
                })?;
                let spki = Cert::from_pem(cert)
                    .map_err(|e| fail(e.to_string()))?
                    .spki_der();
                signing::verify_root_signature(&spki, &record.root, &record.signature)
                    .map_err(|e| fail(format!("signature does not verify: {e}")))?;
                self.report.last_verified = Some(frame.txid);
            }
        }
        self.completed.clear();
        self.frontier.push(leaf, &mut self.completed);
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
