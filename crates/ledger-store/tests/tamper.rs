//! Tampering with committed segment files: a flipped byte anywhere must stop `Ledger::open` and
//! fail the offline audit, both naming the damaged transaction; an alteration whose frame
//! checksum was recomputed (a forgery rather than an accident) must still fail the audit.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::entry::TxKind;
use ledger_core::receipt::verify_receipt;
use ledger_store::audit::{AuditFailure, audit};
use ledger_store::segment::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use ledger_store::{StoreConfig, StoreError};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const ROUNDS: u64 = 12;
const ENTRIES_PER_ROUND: u64 = 25;
/// Fixed so that the sampled positions are the same on every run (CLEDGER_TEST_SEED overrides).
const SAMPLE_SEED: u64 = 0x7A3B_E5ED;

fn tamper_config() -> StoreConfig {
    config_with_segments(SMALL_SEGMENT)
}

/// A closed ledger of ROUNDS × ENTRIES_PER_ROUND entries over several segments, in `dir`.
/// Returns the service certificate.
fn build_ledger(dir: &Path) -> String {
    let (ledger, files) = create_ledger(dir, tamper_config());
    for round in 0..ROUNDS {
        append_numbered(&ledger, &format!("round {round}"), ENTRIES_PER_ROUND);
    }
    ledger.close();
    let segments = segment_paths(dir).len();
    assert!(
        segments >= 2,
        "the ledger must span several segments, has {segments}"
    );
    files.service_cert_pem
}

/// Where a sampled byte lies, and which transaction damage there belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Region {
    SegmentHeader,
    FrameHeader,
    Payload,
    LastFrame,
}

struct Sample {
    region: Region,
    path: PathBuf,
    offset: u64,
    /// How recovery and the audit name the transaction at the damage.
    txid: String,
}

/// How damage where seqno `seqno` was expected is named: the damaged frame's own header cannot
/// be trusted, so by that seqno with the view of the intact transaction before it, or as
/// `(seqno 1)` when nothing precedes it. (All test ledgers are in view 1.)
fn damage_txid(seqno: u64) -> String {
    if seqno == 1 {
        "(seqno 1)".to_owned()
    } else {
        format!("1.{seqno}")
    }
}

fn sample_positions(frames: &[FrameInfo], rng: &mut XorShift) -> Vec<Sample> {
    let (last, earlier) = frames.split_last().expect("frames");
    let mut segments: Vec<(u64, PathBuf)> = frames
        .iter()
        .map(|f| (f.segment_first, f.path.clone()))
        .collect();
    segments.dedup();
    let mut samples = Vec::new();
    for _ in 0..30 {
        let (first, path) = rng.pick(&segments).clone();
        let offset = rng.range(0, SEGMENT_HEADER_LEN as u64);
        samples.push(Sample {
            region: Region::SegmentHeader,
            path,
            offset,
            txid: damage_txid(first),
        });
    }
    let in_frame = |region, frame: &FrameInfo, offset| Sample {
        region,
        path: frame.path.clone(),
        offset,
        txid: damage_txid(frame.txid.seqno()),
    };
    for _ in 0..40 {
        let frame = rng.pick(earlier);
        samples.push(in_frame(
            Region::FrameHeader,
            frame,
            frame.offset + rng.range(0, FRAME_HEADER_LEN as u64),
        ));
    }
    for _ in 0..50 {
        let frame = rng.pick(earlier);
        samples.push(in_frame(
            Region::Payload,
            frame,
            rng.range(frame.payload_offset(), frame.end),
        ));
    }
    for _ in 0..30 {
        samples.push(in_frame(
            Region::LastFrame,
            last,
            rng.range(last.offset, last.end),
        ));
    }
    samples
}

fn xor_byte(path: &Path, offset: u64, mask: u8) {
    let mut bytes = fs::read(path).expect("segment reads");
    bytes[offset as usize] ^= mask;
    fs::write(path, bytes).expect("segment writes");
}

/// The same path inside a copy of the data directory.
fn in_copy(original: &Path, copy: &Path, path: &Path) -> PathBuf {
    copy.join(
        path.strip_prefix(original)
            .expect("path inside the data dir"),
    )
}

fn variant(e: &StoreError) -> &'static str {
    match e {
        StoreError::Corrupt { .. } => "Corrupt",
        StoreError::SignatureMismatch { .. } => "SignatureMismatch",
        StoreError::Forked { .. } => "Forked",
        StoreError::RolledBack { .. } => "RolledBack",
        StoreError::Decode { .. } => "Decode",
        StoreError::Tree(_) => "Tree",
        _ => "other",
    }
}

#[test]
fn every_flipped_byte_stops_open_and_fails_the_audit_at_its_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let cert = build_ledger(&original);
    let frames = ledger_frames(&original);
    let mut rng = XorShift::new(test_seed(Some(SAMPLE_SEED)));
    let samples = sample_positions(&frames, &mut rng);
    assert_eq!(samples.len(), 150);

    let mut outcomes: BTreeMap<(Region, &'static str), u32> = BTreeMap::new();
    for (i, sample) in samples.iter().enumerate() {
        let copy = tmp.path().join(format!("flip-{i}"));
        copy_dir(&original, &copy);
        let mask = rng.range(1, 256) as u8;
        xor_byte(
            &in_copy(&original, &copy, &sample.path),
            sample.offset,
            mask,
        );
        let what = format!(
            "{:?} byte {} of {} ^ {mask:#04x}",
            sample.region,
            sample.offset,
            sample.path.display()
        );

        match reopen(&copy, tamper_config()) {
            Ok(_) => panic!("{what}: the ledger opened"),
            Err(e) => {
                *outcomes.entry((sample.region, variant(&e))).or_default() += 1;
                match &e {
                    StoreError::Corrupt { txid, .. } => {
                        assert_eq!(txid, &sample.txid, "{what}: {e}")
                    }
                    _ => panic!("{what}: open failed with {e}, not Corrupt"),
                }
            }
        }
        match audit(&copy, Some(&cert)) {
            Ok(report) => panic!("{what}: the audit passed: {report:?}"),
            Err(AuditFailure { txid, .. }) => {
                assert_eq!(txid.as_deref(), Some(sample.txid.as_str()), "{what}")
            }
        }
        fs::remove_dir_all(&copy).unwrap();
    }
    println!("open failures by region: {outcomes:?}");
}

/// Alters the payload byte `from_end` bytes before the end of `frame` and recomputes the
/// frame's CRC-32C over bytes 8.. of the frame, as a forger would.
fn forge(path: &Path, frame: &FrameInfo, from_end: u64) {
    let mut bytes = fs::read(path).expect("segment reads");
    let (start, end) = (frame.offset as usize, frame.end as usize);
    bytes[end - 1 - from_end as usize] ^= 0x01;
    let crc = crc32c::crc32c(&bytes[start + 8..end]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, bytes).expect("segment writes");
}

/// A copy of `dir` named `name` (beside it) without its file or directory `part`.
fn copy_without(dir: &Path, name: &str, part: &str) -> PathBuf {
    let copy = dir.with_file_name(name);
    copy_dir(dir, &copy);
    let removed = copy.join(part);
    if removed.is_dir() {
        fs::remove_dir_all(removed)
    } else {
        fs::remove_file(removed)
    }
    .expect("removing a part of the copy");
    copy
}

struct Forgery {
    dir: PathBuf,
    target: FrameInfo,
    /// The first signature after the target, which signed a root over it.
    next_signature: TxId,
    last_signature: TxId,
}

/// Copies `original` to `name` and forges the payload of the `nth` frame of `kind`.
fn forged_copy(original: &Path, name: &str, kind: TxKind, nth: usize, from_end: u64) -> Forgery {
    let frames = ledger_frames(original);
    let target = frames
        .iter()
        .filter(|f| f.kind == kind)
        .nth(nth)
        .expect("enough frames")
        .clone();
    let signatures: Vec<TxId> = frames
        .iter()
        .filter(|f| f.kind == TxKind::Signature)
        .map(|f| f.txid)
        .collect();
    let next_signature = *signatures
        .iter()
        .find(|s| **s > target.txid)
        .expect("a later signature");
    let last_signature = *signatures.last().unwrap();
    assert!(
        next_signature < last_signature,
        "the forged frame must not be covered only by the last signature"
    );
    let dir = original.with_file_name(name);
    copy_dir(original, &dir);
    forge(&in_copy(original, &dir, &target.path), &target, from_end);
    // Every checksum is intact: only cryptography can tell.
    assert_eq!(ledger_frames(&dir).len(), frames.len());
    Forgery {
        dir,
        target,
        next_signature,
        last_signature,
    }
}

#[test]
fn a_forged_entry_with_a_valid_checksum_fails_the_audit_at_that_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let cert = build_ledger(&original);
    let entries = (ROUNDS * ENTRIES_PER_ROUND) as usize;
    // The last byte of an application payload is the AES-GCM tag.
    let forged = forged_copy(&original, "forged", TxKind::Application, entries / 3, 0);
    let target = forged.target.txid;
    println!(
        "forged {target}; next signature {}, last {}",
        forged.next_signature, forged.last_signature
    );

    // With the tree files: the stored leaf no longer matches, naming exactly the entry.
    let failure = audit(&forged.dir, Some(&cert)).expect_err("audit of a forged ledger");
    assert_eq!(failure.txid, Some(target.to_string()), "{failure}");
    assert!(failure.reason.contains("leaf hash changed"), "{failure}");

    // Without them: the next signature's root no longer matches the recomputed tree.
    let no_tree = copy_without(&forged.dir, "forged-no-tree", "tree");
    let no_index = copy_without(&forged.dir, "forged-no-index", "index.redb");
    let failure = audit(&no_tree, Some(&cert)).expect_err("audit without tree files");
    assert_eq!(
        failure.txid,
        Some(forged.next_signature.to_string()),
        "{failure}"
    );
    assert!(
        failure.reason.contains("differs from the root"),
        "{failure}"
    );

    // Observed behaviour of `Ledger::open`, which checks frame checksums but re-derives nothing
    // it already has: with the index and tree files intact, it opens. The forged entry cannot
    // be read (its AES-GCM tag fails) and so has no receipt. Leaves are not stored: the lowest
    // levels of a path are recomputed from the entries of the leaf's run of 16, so the paths
    // of the forged entry's neighbours in that run no longer lead to the signed root; their
    // receipts are refused, naming the forged entry (whose leaf differs from the leaf bytes of
    // its frame record), rather than served unverifiable. Entries of other runs are served as
    // before.
    let (ledger, _) = reopen(&forged.dir, tamper_config()).expect("open re-checks only checksums");
    assert!(matches!(ledger.entry(target), Err(StoreError::Decode { txid, .. }) if txid == target));
    assert!(
        matches!(ledger.receipt(target), Err(StoreError::Decode { txid, .. }) if txid == target)
    );
    // A neighbour whose receipt is anchored at a signature over the forged leaf, with the
    // forged leaf (or the level-1 subtree holding it) on its path.
    let run_start = target.seqno() & !15;
    let in_run = if target.seqno() == run_start {
        run_start + 1
    } else {
        target.seqno() - 1
    };
    match ledger.receipt(TxId::new(1, in_run).unwrap()) {
        Err(StoreError::Corrupt { txid, reason, .. }) => {
            assert_eq!(txid, format!("(seqno {})", target.seqno()));
            assert!(reason.contains("leaf hash changed"), "{reason}");
        }
        other => panic!("the receipt of {in_run}, beside the forgery: {other:?}"),
    }
    for neighbour in [run_start - 1, run_start + 16] {
        verify_receipt_of(&ledger, TxId::new(1, neighbour).unwrap(), &cert);
    }
    ledger.close();

    // Rebuilding the index decrypts every entry again: open names the forged one.
    match reopen(&no_index, tamper_config()) {
        Err(StoreError::Corrupt { txid, .. }) => assert_eq!(txid, target.to_string()),
        other => panic!("open with a rebuilt index: {:?}", other.map(|(_, r)| r)),
    }
    // Rebuilding the tree decrypts every entry again too (its record says which collection
    // it is in): open names the forged one.
    match reopen(&no_tree, tamper_config()) {
        Err(StoreError::Corrupt { txid, .. }) => assert_eq!(txid, target.to_string()),
        other => panic!("open with a rebuilt tree: {:?}", other.map(|(_, r)| r)),
    }
}

/// The length of the COSE root signature of the `nth` signature transaction of `dir`, whose
/// frame ends with it, a 4-byte length before it, and a zero private-section length after.
fn cose_signature_len(dir: &Path, nth: usize) -> u64 {
    let frame = ledger_frames(dir)
        .into_iter()
        .filter(|f| f.kind == TxKind::Signature)
        .nth(nth)
        .expect("enough signatures");
    let bytes = fs::read(&frame.path).expect("segment reads");
    let payload = &bytes[(frame.offset + frame.header_len) as usize..frame.end as usize];
    let view = ledger_core::entry::EntryView::parse(payload, frame.txid.seqno()).expect("parses");
    view.signature()
        .expect("a signature")
        .cose_signature
        .expect("COSE-signed")
        .len() as u64
}

/// Each of a signature transaction's two signatures forged in turn (the last byte of its
/// ECDSA `s`, so the encoding stays well formed): the audit names the signature, and the
/// receipts anchored at it — JSON for the node's, COSE for the service key's — fail.
#[test]
fn a_forged_signature_fails_the_audit_and_its_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let cert = build_ledger(&original);
    let service_key = ledger_core::x509::Cert::from_pem(&cert)
        .unwrap()
        .public_key()
        .unwrap();
    let cose_len = cose_signature_len(&original, 3);
    for (name, from_end) in [("forged-cose", 4), ("forged-node", 4 + cose_len + 4)] {
        let forged = forged_copy(&original, name, TxKind::Signature, 3, from_end);
        let signature = forged.target.txid;

        let failure = audit(&forged.dir, Some(&cert)).expect_err("audit of a forged ledger");
        assert_eq!(failure.txid, Some(signature.to_string()), "{failure}");
        assert!(failure.reason.contains("leaf hash changed"), "{failure}");
        let no_tree = copy_without(&forged.dir, &format!("{name}-no-tree"), "tree");
        let failure = audit(&no_tree, Some(&cert)).expect_err("audit without tree files");
        assert_eq!(failure.txid, Some(signature.to_string()), "{failure}");
        assert!(
            failure.reason.contains("signature does not verify"),
            "{failure}"
        );

        // Open does not verify signatures; the receipts anchored at the forged one do not.
        let (ledger, _) =
            reopen(&forged.dir, tamper_config()).expect("open does not check signatures");
        let previous = signature_txids(&forged.dir)
            .into_iter()
            .rfind(|s| *s < signature)
            .unwrap();
        let covered: Vec<TxId> = (previous.seqno() + 1..signature.seqno())
            .map(|s| TxId::new(1, s).unwrap())
            .collect();
        assert!(!covered.is_empty());
        for txid in covered {
            let bundle = ledger.receipt(txid).unwrap().expect("committed");
            let json = verify_receipt(&bundle.receipt, &cert, bundle.application_claims.as_deref());
            let ledger_store::CoseReceipt::Ready(cose) = &bundle.cose else {
                panic!("{txid} has no COSE receipt: {:?}", bundle.cose);
            };
            let cose = ledger_core::cose::verify_receipt(cose, &service_key);
            let (forged_one, other) = if name == "forged-cose" {
                (cose.is_err(), json.is_ok())
            } else {
                (json.is_err(), cose.is_ok())
            };
            assert!(
                forged_one,
                "{name}: a receipt of {txid} anchored at it verified"
            );
            assert!(other, "{name}: the other receipt of {txid} failed");
        }
    }
}
