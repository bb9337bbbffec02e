//! Evidence packages: a notarized document's entry, transaction id, receipt (with the
//! application claims that bind the entry to it) and service certificate, verifiable offline.

use crate::{Client, Error};
use base64::Engine as _;
use ledger_core::claims::ApplicationClaim;
use ledger_core::receipt::{ReceiptError, ReceiptResponse, verify_receipt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::io::Read as _;
use std::path::{Path, PathBuf};

pub const PACKAGE_VERSION: &str = "cledger-evidence/v1";
pub const PROOF_TYPE: &str = "doc-integrity-proof/v1";
const BUFFER: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageEntry {
    pub collection_id: String,
    pub contents: String,
    pub transaction_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidencePackage {
    pub version: String,
    pub entry: PackageEntry,
    pub transaction_id: String,
    pub receipt: ReceiptResponse,
    /// PEM.
    pub service_certificate: String,
    pub document: DocumentInfo,
    /// The COSE receipt of the same transaction (base64), which CCF's and SCITT's tools
    /// verify. Absent from packages made before cledger served COSE receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cose_receipt: Option<String>,
    /// The entry's proof in a C2SP checkpoint of the ledger, with the witnesses'
    /// cosignatures it had when the package was made. Absent if the ledger publishes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<ledger_core::witnessed::CheckpointEvidence>,
}

/// The `doc-integrity-proof/v1` entry contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocProof {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// SHA-256 (lowercase hex) and size of a file, read through a fixed 64 KiB buffer.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// RFC 3339 UTC (`2025-01-02T03:04:05Z`) of a Unix time in seconds.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn now_rfc3339() -> String {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(unix)
}

/// The entry JSON (keys in a fixed order).
pub fn proof_contents(
    name: &str,
    size: u64,
    sha256: &str,
    time: &str,
    note: Option<&str>,
) -> String {
    let mut v =
        json!({"type": PROOF_TYPE, "name": name, "size": size, "sha256": sha256, "time": time});
    if let Some(note) = note {
        v["note"] = Value::String(note.to_owned());
    }
    v.to_string()
}

/// `FILE.evidence.json` next to `FILE`.
pub fn package_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".evidence.json");
    PathBuf::from(name)
}

/// Notarizes `file`: streamed hash, a `doc-integrity-proof/v1` entry written with application
/// claims, wait for commit, fetch and verify the receipt, write `FILE.evidence.json`.
pub fn notarize(
    client: &Client,
    file: &Path,
    note: Option<&str>,
    collection: Option<&str>,
    witness_vkeys: &[String],
) -> Result<(EvidencePackage, PathBuf), Error> {
    let (size, sha256) =
        hash_file(file).map_err(|e| Error::Io(format!("{}: {e}", file.display())))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let contents = proof_contents(&name, size, &sha256, &now_rfc3339(), note);
    let appended = client.append_with_claims(&contents, collection)?;
    let receipt = client.receipt_with_claims(&appended.transaction_id)?;
    let cose = client.cose_receipt(&appended.transaction_id)?;
    let checkpoint = client.checkpoint_evidence(
        &appended.transaction_id,
        receipt.verified.leaf,
        witness_vkeys,
    )?;
    if receipt.response.application_claims.is_none() {
        return Err(Error::Protocol(
            "the server returned no applicationClaims for a claims-capable write".into(),
        ));
    }
    let package = EvidencePackage {
        version: PACKAGE_VERSION.to_owned(),
        entry: PackageEntry {
            collection_id: appended.collection_id.clone(),
            contents,
            transaction_id: appended.transaction_id.clone(),
        },
        transaction_id: appended.transaction_id,
        receipt: receipt.response,
        service_certificate: client.config().service_cert_pem.clone(),
        document: DocumentInfo { name, size, sha256 },
        cose_receipt: Some(base64::engine::general_purpose::STANDARD.encode(&cose.bytes)),
        checkpoint,
    };
    // Refuse to hand out a package that would not verify.
    verify_package(&package, None, None, witness_vkeys)
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let out = package_path(file);
    let text = serde_json::to_string_pretty(&package).map_err(|e| Error::Io(e.to_string()))?;
    std::fs::write(&out, text + "\n").map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
    Ok((package, out))
}

/// What an offline verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPackage {
    pub transaction_id: String,
    pub collection_id: String,
    pub document: DocumentInfo,
    pub time: String,
    pub note: Option<String>,
    /// Hex of the signed Merkle root.
    pub root: String,
    /// SHA-256 fingerprint of the service certificate the receipt chains to.
    pub service_cert_fingerprint: String,
    /// Whether a FILE was hashed and matched.
    pub file_checked: bool,
    /// Whether an expected service certificate was given and matched.
    pub service_cert_pinned: bool,
    /// Whether the package carries a COSE receipt (it verified, for the same leaf).
    pub cose_receipt_checked: bool,
    /// The checkpoint the entry was proven in, if the package carries one.
    pub checkpoint: Option<ledger_core::witnessed::WitnessedEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("the package could not be read: {0}")]
    Io(String),
    #[error("the package is malformed: {0}")]
    Malformed(String),
    #[error(
        "the package's service certificate is not the expected one (expected {expected}, package has {actual})"
    )]
    ServiceCertMismatch { expected: String, actual: String },
    #[error(
        "the receipt's certificate chain does not verify against the package's service certificate: {0}"
    )]
    CertChain(ReceiptError),
    #[error(
        "the receipt signature does not verify (receipt altered or not signed by the ledger): {0}"
    )]
    ReceiptSignature(ReceiptError),
    #[error(
        "claims digest mismatch: the application claims do not match the receipt's claimsDigest: {0}"
    )]
    ClaimsDigest(ReceiptError),
    #[error("the receipt is invalid: {0}")]
    ReceiptInvalid(ReceiptError),
    #[error("transaction id mismatch: {0}")]
    TransactionMismatch(String),
    #[error(
        "entry contents mismatch: the entry in the package is not the one the receipt proves ({0})"
    )]
    EntryMismatch(String),
    #[error("the entry is not a doc-integrity-proof/v1 record: {0}")]
    NotAProof(String),
    #[error("document mismatch: {0}")]
    DocumentMismatch(String),
    #[error("file hash mismatch: the file's SHA-256 is {actual}, the package proves {expected}")]
    FileHashMismatch { expected: String, actual: String },
    #[error("file size mismatch: the file has {actual} bytes, the package proves {expected}")]
    FileSizeMismatch { expected: u64, actual: u64 },
    #[error("the file could not be read: {0}")]
    FileIo(String),
    #[error("the COSE receipt does not verify: {0}")]
    CoseReceipt(String),
    #[error("the checkpoint: {0}")]
    Checkpoint(ledger_core::witnessed::WitnessError),
    #[error(
        "the package carries no checkpoint, so no witness cosigned the state it proves (made by a ledger without checkpoints, or before this check existed)"
    )]
    NoCheckpoint,
}

impl PackageError {
    /// A stable short name for scripts (`--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            PackageError::Io(_) => "PackageIo",
            PackageError::Malformed(_) => "PackageMalformed",
            PackageError::ServiceCertMismatch { .. } => "ServiceCertMismatch",
            PackageError::CertChain(_) => "CertChain",
            PackageError::ReceiptSignature(_) => "ReceiptSignature",
            PackageError::ClaimsDigest(_) => "ClaimsDigest",
            PackageError::ReceiptInvalid(_) => "ReceiptInvalid",
            PackageError::TransactionMismatch(_) => "TransactionMismatch",
            PackageError::EntryMismatch(_) => "EntryMismatch",
            PackageError::NotAProof(_) => "NotAProof",
            PackageError::DocumentMismatch(_) => "DocumentMismatch",
            PackageError::FileHashMismatch { .. } => "FileHashMismatch",
            PackageError::FileSizeMismatch { .. } => "FileSizeMismatch",
            PackageError::FileIo(_) => "FileIo",
            PackageError::CoseReceipt(_) => "CoseReceipt",
            PackageError::Checkpoint(ledger_core::witnessed::WitnessError::NotCosigned(_)) => {
                "NotCosigned"
            }
            PackageError::Checkpoint(_) => "Checkpoint",
            PackageError::NoCheckpoint => "NoCheckpoint",
        }
    }

    /// I/O problems (exit 2) rather than failed verification (exit 1).
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            PackageError::Io(_) | PackageError::FileIo(_) | PackageError::Malformed(_)
        )
    }
}

fn classify(e: ReceiptError) -> PackageError {
    match e {
        ReceiptError::ClaimsMismatch { .. } | ReceiptError::Claims(_) => {
            PackageError::ClaimsDigest(e)
        }
        ReceiptError::NodeCert(_)
        | ReceiptError::NodeCertNotEc
        | ReceiptError::NodeKeyUnsupported(_)
        | ReceiptError::EndorsementChain { .. }
        | ReceiptError::EndorsementNotCa { .. }
        | ReceiptError::ServiceCertNotCa
        | ReceiptError::ServiceCertNotSelfSigned => PackageError::CertChain(e),
        ReceiptError::SignatureInvalid(_)
        | ReceiptError::NodeIdMismatch
        | ReceiptError::BadSignatureEncoding => PackageError::ReceiptSignature(e),
        other => PackageError::ReceiptInvalid(other),
    }
}

/// Reads and parses a package file.
pub fn load_package(path: &Path) -> Result<EvidencePackage, PackageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PackageError::Io(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| PackageError::Malformed(e.to_string()))
}

fn normalize_pem(pem: &str) -> Result<Vec<u8>, String> {
    ledger_core::x509::Cert::from_pem(pem)
        .map(|c| c.der().to_vec())
        .map_err(|e| e.to_string())
}

/// Verifies a package offline. See the module docs; every check names what failed. Each
/// witness of `witness_vkeys` must have cosigned the package's checkpoint.
pub fn verify_package(
    pkg: &EvidencePackage,
    file: Option<&Path>,
    expected_service_cert_pem: Option<&str>,
    witness_vkeys: &[String],
) -> Result<VerifiedPackage, PackageError> {
    if pkg.version != PACKAGE_VERSION {
        return Err(PackageError::Malformed(format!(
            "version is {:?}, expected {PACKAGE_VERSION:?}",
            pkg.version
        )));
    }
    let fingerprint = crate::cert_fingerprint(&pkg.service_certificate)
        .map_err(|e| PackageError::CertChain(ReceiptError::InvalidShape(e.to_string())))?;
    let mut pinned = false;
    if let Some(expected) = expected_service_cert_pem {
        let want = normalize_pem(expected).map_err(|e| {
            PackageError::Malformed(format!("the expected service certificate: {e}"))
        })?;
        let have = normalize_pem(&pkg.service_certificate).map_err(PackageError::Malformed)?;
        if want != have {
            return Err(PackageError::ServiceCertMismatch {
                expected: crate::cert_fingerprint(expected).unwrap_or_default(),
                actual: fingerprint,
            });
        }
        pinned = true;
    }
    let receipt =
        pkg.receipt.receipt.as_ref().ok_or_else(|| {
            PackageError::Malformed("the receipt response holds no receipt".into())
        })?;
    let claims = pkg
        .receipt
        .application_claims
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            PackageError::Malformed("the receipt has no applicationClaims binding the entry".into())
        })?;
    let verified =
        verify_receipt(receipt, &pkg.service_certificate, Some(claims)).map_err(classify)?;
    let txid = verified.txid.to_string();
    for (what, value) in [
        ("transactionId", &pkg.transaction_id),
        ("entry.transactionId", &pkg.entry.transaction_id),
        ("receipt.transactionId", &pkg.receipt.transaction_id),
    ] {
        if *value != txid {
            return Err(PackageError::TransactionMismatch(format!(
                "{what} is {value}, the receipt proves {txid}"
            )));
        }
    }
    if let Some(cose) = &pkg.cose_receipt {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(cose)
            .map_err(|e| PackageError::Malformed(format!("coseReceipt is not base64: {e}")))?;
        let proven = crate::verify_cose_receipt(&bytes, &pkg.service_certificate)
            .map_err(|e| PackageError::CoseReceipt(e.to_string()))?;
        if proven.txid != verified.txid || proven.leaf.leaf() != verified.leaf {
            return Err(PackageError::CoseReceipt(format!(
                "it proves leaf {} of {}, the JSON receipt leaf {} of {}",
                proven.leaf.leaf(),
                proven.txid,
                verified.leaf,
                verified.txid
            )));
        }
    }
    let checkpoint = match &pkg.checkpoint {
        Some(evidence) => {
            let key = crate::service_public_key(&pkg.service_certificate)
                .map_err(|e| PackageError::Malformed(e.to_string()))?;
            Some(
                ledger_core::witnessed::verify(
                    evidence,
                    verified.leaf,
                    verified.txid.seqno(),
                    &key,
                    witness_vkeys,
                )
                .map_err(PackageError::Checkpoint)?,
            )
        }
        None if !witness_vkeys.is_empty() => return Err(PackageError::NoCheckpoint),
        None => None,
    };
    let [ApplicationClaim::LedgerEntry { ledger_entry }] = claims else {
        return Err(PackageError::EntryMismatch(
            "the receipt's claims are not a single LedgerEntry claim revealing the entry".into(),
        ));
    };
    if ledger_entry.collection_id != pkg.entry.collection_id {
        return Err(PackageError::EntryMismatch(format!(
            "collectionId {:?} in the package, {:?} in the proven claim",
            pkg.entry.collection_id, ledger_entry.collection_id
        )));
    }
    if ledger_entry.contents != pkg.entry.contents {
        return Err(PackageError::EntryMismatch(
            "the contents differ from the proven claim's contents".into(),
        ));
    }
    let proof: DocProof = serde_json::from_str(&pkg.entry.contents)
        .map_err(|e| PackageError::NotAProof(e.to_string()))?;
    if proof.kind != PROOF_TYPE {
        return Err(PackageError::NotAProof(format!("type is {:?}", proof.kind)));
    }
    if proof.sha256 != pkg.document.sha256 {
        return Err(PackageError::DocumentMismatch(format!(
            "document.sha256 is {}, the proven entry says {}",
            pkg.document.sha256, proof.sha256
        )));
    }
    if proof.size != pkg.document.size {
        return Err(PackageError::DocumentMismatch(format!(
            "document.size is {}, the proven entry says {}",
            pkg.document.size, proof.size
        )));
    }
    if proof.name != pkg.document.name {
        return Err(PackageError::DocumentMismatch(format!(
            "document.name is {:?}, the proven entry says {:?}",
            pkg.document.name, proof.name
        )));
    }
    if let Some(file) = file {
        let (size, sha256) = hash_file(file)
            .map_err(|e| PackageError::FileIo(format!("{}: {e}", file.display())))?;
        if sha256 != proof.sha256 {
            return Err(PackageError::FileHashMismatch {
                expected: proof.sha256,
                actual: sha256,
            });
        }
        if size != proof.size {
            return Err(PackageError::FileSizeMismatch {
                expected: proof.size,
                actual: size,
            });
        }
    }
    Ok(VerifiedPackage {
        transaction_id: txid,
        collection_id: pkg.entry.collection_id.clone(),
        document: pkg.document.clone(),
        time: proof.time,
        note: proof.note,
        root: verified.root.to_hex(),
        service_cert_fingerprint: fingerprint,
        file_checked: file.is_some(),
        service_cert_pinned: pinned,
        cose_receipt_checked: pkg.cose_receipt.is_some(),
        checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn streamed_hash_matches_known_digest() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        // Larger than the buffer, so several reads.
        let data = vec![b'a'; BUFFER * 2 + 7];
        f.write_all(&data).unwrap();
        let (size, hash) = hash_file(f.path()).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(hash, hex::encode(Sha256::digest(&data)));
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(
            hash_file(empty.path()).unwrap().1,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_787_045), "2025-01-02T03:04:05Z");
    }

    #[test]
    fn proof_contents_shape() {
        let c = proof_contents("a.pdf", 3, "ab", "1970-01-01T00:00:00Z", Some("n"));
        let p: DocProof = serde_json::from_str(&c).unwrap();
        assert_eq!(p.kind, PROOF_TYPE);
        assert_eq!(p.note.as_deref(), Some("n"));
        assert!(!proof_contents("a", 1, "b", "t", None).contains("note"));
        assert_eq!(
            package_path(Path::new("/x/a.pdf")),
            PathBuf::from("/x/a.pdf.evidence.json")
        );
    }

    #[test]
    fn malformed_package_is_reported() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"{\"version\":").unwrap();
        assert!(matches!(
            load_package(f.path()),
            Err(PackageError::Malformed(_))
        ));
        assert!(matches!(
            load_package(Path::new("/nonexistent/x.json")),
            Err(PackageError::Io(_))
        ));
    }
}
