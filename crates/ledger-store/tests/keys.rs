//! The key-use budget of encryption at rest (FORMAT.md §5.1): with a budget of a few dozen
//! seals per data key the writer rotates the ledger secret again and again, and the ledger
//! still reads every entry back, serves verifying receipts (which do not depend on the key
//! version), audits clean, and survives reopening, a torn tail that held a rotation, and a
//! failed batch that held one. A garbled rotation record stops the open with a clear error.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::entry::{ApplicationEntry, EntryView, TableWrite, TxKind};
use ledger_store::audit::audit;
use ledger_store::crypto::{LEDGER_SECRETS, RotationError};
use ledger_store::faults::errno::ENOSPC;
use ledger_store::segment::encode_frame;
use ledger_store::{
    AppendError, FaultPlan, Ledger, StorageOp, StoreConfig, StoreError, WriteRequest,
};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const BUDGET: u64 = 50;

fn budget_config() -> StoreConfig {
    StoreConfig {
        key_rotation_every: BUDGET,
        ..config_with_segments(SMALL_SEGMENT)
    }
}

/// A rotation transaction found in the segments: where it is and the version it records.
#[derive(Debug, Clone)]
struct Rotation {
    frame: FrameInfo,
    version: u64,
}

fn rotations(dir: &Path) -> Vec<Rotation> {
    ledger_frames(dir)
        .into_iter()
        .filter(|f| f.kind == TxKind::Governance)
        .filter_map(|frame| {
            let bytes = frame.payload();
            let writes = EntryView::parse(&bytes, frame.txid.seqno())
                .unwrap()
                .governance_writes()
                .unwrap();
            let write = writes.iter().find(|w| w.table == LEDGER_SECRETS)?;
            assert_eq!(writes.len(), 1, "a rotation is alone in its transaction");
            let version = write.key.parse().expect("a decimal version");
            Some(Rotation { frame, version })
        })
        .collect()
}

/// The ring of an open ledger matches the rotation transactions in its segments, versions
/// are 1, 2, 3… and no key seals more than the budget: its entries and the record of the next
/// key. Returns the number of versions.
fn check_ring(ledger: &Ledger, dir: &Path) -> usize {
    let found = rotations(dir);
    let firsts = ledger.key_versions();
    assert_eq!(
        firsts,
        std::iter::once(1)
            .chain(found.iter().map(|r| r.frame.txid.seqno() + 1))
            .collect::<Vec<_>>(),
        "the key ring is the rotations in the ledger"
    );
    for (i, r) in found.iter().enumerate() {
        assert_eq!(r.version, i as u64 + 1, "versions are consecutive");
    }
    let frames = ledger_frames(dir);
    let seals = |from: u64, to: u64| {
        frames
            .iter()
            .filter(|f| (from..to).contains(&f.txid.seqno()))
            .filter(|f| f.kind == TxKind::Application)
            .count() as u64
    };
    for pair in firsts.windows(2) {
        // The rotation at pair[1] - 1 was sealed under the key it retires.
        let sealed = seals(pair[0], pair[1]) + 1;
        assert!(
            sealed <= BUDGET,
            "the key of seqnos {}..{} sealed {sealed} times",
            pair[0],
            pair[1]
        );
    }
    assert!(seals(*firsts.last().unwrap(), u64::MAX) < BUDGET);
    // The index follows the table like any governance table.
    let table = ledger.governance_table(LEDGER_SECRETS).unwrap();
    assert_eq!(table.len(), found.len());
    firsts.len()
}

/// Lists, tags and the newest entry of every collection, as a client sees them.
fn listed(ledger: &Ledger) -> BTreeMap<String, Vec<(TxId, ApplicationEntry)>> {
    let mut out = BTreeMap::new();
    for collection in ["subledger:0", "alpha", "beta"] {
        let all: Vec<_> = ledger
            .entries(collection, None, 1, u64::MAX, 100_000)
            .unwrap()
            .into_iter()
            .map(|r| (r.txid, r.entry))
            .collect();
        assert_eq!(
            ledger.latest_entry(collection).unwrap().map(|r| r.txid),
            all.last().map(|(t, _)| *t)
        );
        out.insert(collection.to_owned(), all);
        for tag in ["five", "odd"] {
            let tagged: Vec<_> = ledger
                .entries(collection, Some(tag), 1, u64::MAX, 100_000)
                .unwrap()
                .into_iter()
                .map(|r| (r.txid, r.entry))
                .collect();
            out.insert(format!("{collection}/{tag}"), tagged);
        }
    }
    out
}

/// What `listed` must show for `written`.
fn expected_lists(
    written: &[(TxId, ApplicationEntry)],
) -> BTreeMap<String, Vec<(TxId, ApplicationEntry)>> {
    let mut sorted = written.to_vec();
    sorted.sort_by_key(|(t, _)| t.seqno());
    let mut out = BTreeMap::new();
    for collection in ["subledger:0", "alpha", "beta"] {
        let of = |e: &ApplicationEntry| e.collection_id == collection;
        out.insert(
            collection.to_owned(),
            sorted.iter().filter(|(_, e)| of(e)).cloned().collect(),
        );
        for tag in ["five", "odd"] {
            out.insert(
                format!("{collection}/{tag}"),
                sorted
                    .iter()
                    .filter(|(_, e)| of(e) && e.tags.iter().any(|t| t == tag))
                    .cloned()
                    .collect(),
            );
        }
    }
    out
}

fn check_everything(
    ledger: &Ledger,
    dir: &Path,
    written: &[(TxId, ApplicationEntry)],
    cert: &str,
) -> usize {
    assert_entries_intact(ledger, written);
    for (txid, _) in written {
        verify_receipt_of(ledger, *txid, cert);
    }
    assert_eq!(listed(ledger), expected_lists(written));
    check_ring(ledger, dir)
}

#[test]
fn a_ledger_rotated_every_50_seals_reads_back_audits_and_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (ledger, files) = create_ledger(&dir, budget_config());
    let cert = files.service_cert_pem.as_str();
    // Large groups (rotations in the middle of a batch) and single writes (a rotation, an
    // entry and a signature per batch).
    let mut written = Vec::new();
    for round in 0..4 {
        written.extend(append_numbered(&ledger, &format!("group {round}"), 100));
        written.extend(append_each(&ledger, &format!("single {round}"), 25));
    }
    assert_eq!(written.len(), 500);
    let versions = check_everything(&ledger, &dir, &written, cert);
    assert!(
        versions > 500 / BUDGET as usize,
        "only {versions} key versions for 500 entries"
    );
    let receipts: Vec<String> = written
        .iter()
        .step_by(7)
        .map(|(t, _)| receipt_json(&ledger, *t))
        .collect();
    let ring = ledger.key_versions();
    ledger.close();
    drop(ledger);

    let audited = audit(&dir, Some(cert)).unwrap_or_else(|e| panic!("audit: {e}"));
    assert_eq!(audited.key_rotations, versions as u64 - 1);
    assert_eq!(audited.entries, 500);
    assert_eq!(audited.unsigned_tail, 0);

    // Reopened: the ring is rebuilt from the ledger, everything reads back, receipts are
    // byte for byte the same.
    let (ledger, report) = reopen_ok(&dir, budget_config());
    assert_eq!(report.truncated_tail, None);
    assert_eq!(ledger.key_versions(), ring);
    check_everything(&ledger, &dir, &written, cert);
    let again: Vec<String> = written
        .iter()
        .step_by(7)
        .map(|(t, _)| receipt_json(&ledger, *t))
        .collect();
    assert_eq!(again, receipts, "receipts changed across a reopen");

    // More writes continue the ring where it was.
    written.extend(append_numbered(&ledger, "after reopen", 150));
    written.extend(append_each(&ledger, "after reopen, single", 10));
    let more = check_everything(&ledger, &dir, &written, cert);
    assert!(
        more >= versions + 3,
        "{more} versions after 160 more entries"
    );
    assert_eq!(ledger.key_versions()[..ring.len()], ring[..]);
    ledger.close();
    drop(ledger);
    let audited = audit(&dir, Some(cert)).unwrap_or_else(|e| panic!("audit: {e}"));
    assert_eq!(audited.key_rotations, more as u64 - 1);

    // The derived files rebuilt from scratch need the ring too (they hold collection names).
    fs::remove_file(dir.join("index.redb")).unwrap();
    fs::remove_dir_all(dir.join("tree")).unwrap();
    let (ledger, report) = reopen_ok(&dir, budget_config());
    assert!(report.index_rebuilt);
    assert_eq!(
        report.tree_replayed, report.transactions,
        "every leaf re-derived"
    );
    check_everything(&ledger, &dir, &written, cert);
}

#[test]
fn a_torn_tail_holding_a_rotation_is_cut_and_the_ring_forgets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // One segment, so the rotation to cut is in the last one.
    let config = StoreConfig {
        key_rotation_every: BUDGET,
        ..StoreConfig::default()
    };
    let (ledger, files) = create_ledger(&dir, config.clone());
    let cert = files.service_cert_pem.as_str();
    let mut kept = append_numbered(&ledger, "before", 30);
    ledger.close();
    drop(ledger);
    // The fork guard as of now: what a node that crashed before its next checkpoint has.
    let guard = fs::read(dir.join("fork-guard")).unwrap();
    let guarded_end = last_signature(&dir);

    let (ledger, _) = reopen_ok(&dir, config.clone());
    let lost = append_each(&ledger, "lost", 40);
    ledger.close();
    drop(ledger);
    let rotation = rotations(&dir)
        .into_iter()
        .find(|r| r.frame.txid.seqno() > guarded_end)
        .expect("the later writes rotated the key");
    let cut_seqno = rotation.frame.txid.seqno();
    let cut_record = rotation.frame.payload();
    // Cut in the middle of the rotation's frame, with the older fork guard: a torn tail.
    fs::write(dir.join("fork-guard"), &guard).unwrap();
    let cut_at = rotation.frame.offset + 20;
    let segment_len = fs::metadata(&rotation.frame.path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&rotation.frame.path)
        .unwrap()
        .set_len(cut_at)
        .unwrap();
    kept.extend(lost.into_iter().filter(|(t, _)| t.seqno() < cut_seqno));

    let (ledger, report) = reopen_ok(&dir, config.clone());
    let (_, offset, cut_bytes) = report.truncated_tail.clone().expect("a torn tail was cut");
    assert_eq!((offset, cut_bytes), (rotation.frame.offset, 20));
    assert!(segment_len > cut_at);
    let ring = ledger.key_versions();
    assert_eq!(
        ring.len() as u64,
        rotation.version,
        "the cut rotation is not in the ring"
    );
    assert!(ring.iter().all(|first| *first <= cut_seqno));
    assert_entries_intact(&ledger, &kept);

    // Writing on: the seqnos after the cut are sealed again, under a new version recorded
    // anew; the 20 cut bytes count against the budget of the key that sealed them.
    let after = append_numbered(&ledger, "after the cut", 120);
    assert!(after.iter().all(|(t, _)| t.seqno() >= cut_seqno));
    kept.extend(after);
    let versions = check_everything(&ledger, &dir, &kept, cert);
    assert!(versions as u64 > rotation.version + 1);
    let redone = rotations(&dir)
        .into_iter()
        .find(|r| r.version == rotation.version)
        .expect("the version was recorded again");
    assert_eq!(redone.frame.txid, rotation.frame.txid);
    assert_ne!(
        redone.frame.payload(),
        cut_record,
        "a new secret, not the cut one"
    );
    ledger.close();
    drop(ledger);
    let audited = audit(&dir, Some(cert)).unwrap_or_else(|e| panic!("audit: {e}"));
    assert_eq!(audited.key_rotations, versions as u64 - 1);
    let (ledger, _) = reopen_ok(&dir, config);
    check_everything(&ledger, &dir, &kept, cert);
}

fn last_signature(dir: &Path) -> u64 {
    signature_txids(dir).last().unwrap().seqno()
}

#[test]
fn a_failed_batch_holding_a_rotation_leaves_no_key_behind() {
    let plan = FaultPlan::new();
    let config = StoreConfig {
        key_rotation_every: BUDGET,
        fault_probe_interval: Duration::from_millis(20),
        faults: Some(plan.clone()),
        ..config_with_segments(SMALL_SEGMENT)
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (ledger, files) = create_ledger(&dir, config.clone());
    let cert = files.service_cert_pem.as_str();
    let mut written = Vec::new();
    let mut failed = 0;
    for i in 0..60u64 {
        let firsts = ledger.key_versions();
        let next = ledger.committed().unwrap().seqno() + 1;
        // Each append is an entry and a signature; the entry at `next` needs a rotation
        // first when it and the next key's record would pass the budget.
        let rotates = next - firsts.last().unwrap() + 2 > BUDGET;
        let entry = numbered_entry("faulty", i);
        if rotates && failed < 2 {
            // Half the batch (rotation, entry, signature) reaches the file, then ENOSPC.
            plan.short_write(StorageOp::SegmentWrite, ENOSPC);
            let refused = ledger.append(WriteRequest::Entry(entry.clone()));
            assert!(
                matches!(refused, Err(AppendError::Unavailable(_))),
                "{refused:?}"
            );
            assert_eq!(
                ledger.key_versions(),
                firsts,
                "the failed rotation is not kept"
            );
            plan.clear();
            let deadline = Instant::now() + Duration::from_secs(10);
            while ledger.write_health().is_err() {
                assert!(Instant::now() < deadline, "writes did not resume");
                std::thread::sleep(Duration::from_millis(5));
            }
            failed += 1;
        }
        let txid = ledger.append(WriteRequest::Entry(entry.clone())).unwrap();
        let rotated = ledger.key_versions().len() - firsts.len();
        assert_eq!(rotated, usize::from(rotates), "entry {i} at {txid}");
        written.push((txid, entry));
    }
    assert_eq!(failed, 2);
    check_everything(&ledger, &dir, &written, cert);
    ledger.close();
    drop(ledger);
    audit(&dir, Some(cert)).unwrap_or_else(|e| panic!("audit: {e}"));
    let (ledger, _) = reopen_ok(&dir, config);
    check_everything(&ledger, &dir, &written, cert);
}

/// Rewrites the payload of `frame` in place with a valid checksum (same length).
fn forge_payload(frame: &FrameInfo, payload: &[u8]) {
    let mut framed = Vec::new();
    encode_frame(&mut framed, payload);
    assert_eq!(framed.len() as u64, frame.end - frame.offset);
    OpenOptions::new()
        .write(true)
        .open(&frame.path)
        .unwrap()
        .write_all_at(&framed, frame.offset)
        .unwrap();
}

#[test]
fn a_garbled_or_foreign_rotation_record_stops_the_open_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (ledger, files) = create_ledger(&base, budget_config());
    let cert = files.service_cert_pem.clone();
    append_numbered(&ledger, "garble", 120);
    // Clients cannot write the table: refused, nothing written.
    let before = ledger.committed();
    let forged = WriteRequest::Governance(vec![TableWrite {
        table: LEDGER_SECRETS.into(),
        key: "99".into(),
        value: Some(vec![0; 60]),
    }]);
    assert_eq!(
        ledger.append(forged),
        Err(AppendError::ReservedTable(LEDGER_SECRETS.into()))
    );
    assert_eq!(ledger.committed(), before);
    ledger.close();
    drop(ledger);
    let target = rotations(&base)[1].clone();
    let original = target.frame.payload();
    // The public section ends with the write: key "2" (u32 length, byte), the put flag, then
    // the sealed secret as lp-bytes (u32 length, 60 bytes).
    let n = original.len();
    let key_at = n - 60 - 4 - 1 - 1;
    assert_eq!(original[key_at], b'2');
    let mut flipped = original.clone();
    flipped[n - 30] ^= 0x40;
    let mut renumbered = original.clone();
    renumbered[key_at] = b'7';
    // Another ledger's rotation record of the same version at the same place.
    let other = tmp.path().join("other");
    let (ledger, _) = create_ledger(&other, budget_config());
    append_numbered(&ledger, "garble", 120);
    ledger.close();
    drop(ledger);
    let mut foreign = original.clone();
    let other_record = rotations(&other)[1].frame.payload();
    foreign[n - 60..].copy_from_slice(&other_record[other_record.len() - 60..]);

    let cases: [(&str, Vec<u8>, RotationError); 3] = [
        ("a flipped bit", flipped, RotationError::Unseal(1)),
        (
            "another version",
            renumbered,
            RotationError::Version {
                expected: 2,
                found: "7".into(),
            },
        ),
        ("another ledger's record", foreign, RotationError::Unseal(1)),
    ];
    for (what, bytes, expected) in cases {
        let dir = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&base, &dir);
        let frame = FrameInfo {
            path: dir.join(target.frame.path.strip_prefix(&base).unwrap()),
            ..target.frame.clone()
        };
        forge_payload(&frame, &bytes);
        match reopen(&dir, budget_config()) {
            Err(StoreError::KeyRotation {
                file,
                offset,
                txid,
                source,
            }) => {
                assert_eq!(source, expected, "{what}");
                assert_eq!(
                    (file, offset, txid),
                    (frame.path.clone(), frame.offset, frame.txid)
                );
                let message = StoreError::KeyRotation {
                    file: frame.path.clone(),
                    offset: frame.offset,
                    txid: frame.txid,
                    source: expected.clone(),
                }
                .to_string();
                assert!(
                    message.contains(&frame.txid.to_string())
                        && message.contains("ledger secret rotation"),
                    "{message}"
                );
            }
            Err(other) => panic!("{what}: refused with another error: {other}"),
            Ok(_) => panic!("{what}: opened a ledger with a garbled rotation"),
        }
        // The auditor, without keys, fails too: on the record's form, or on its altered bytes
        // (the leaf kept in the frame record, else the next signed root).
        let named = |failure: &ledger_store::audit::AuditFailure| {
            failure
                .txid
                .as_deref()
                .and_then(|t| TxId::parse(t).ok())
                .expect("the audit names a transaction")
        };
        let failure = audit(&dir, Some(&cert)).expect_err(what);
        assert!(
            named(&failure).seqno() >= frame.txid.seqno(),
            "{what}: {failure}"
        );
        // Without the frame records: the record's form, or the next signed root.
        fs::remove_dir_all(dir.join("tree")).unwrap();
        let failure = audit(&dir, Some(&cert)).expect_err(what);
        if matches!(expected, RotationError::Version { .. }) {
            assert_eq!(named(&failure), frame.txid, "{what}: {failure}");
            assert!(
                failure.reason.contains("ledger secret rotation refused"),
                "{failure}"
            );
        } else {
            assert!(
                named(&failure).seqno() > frame.txid.seqno(),
                "{what}: {failure}"
            );
        }
    }
}
