//! API behaviour of a running ledger: concurrent appends and group commit, transaction status,
//! entry queries, receipts (with and without application claims), Merkle roots and consistency
//! proofs, and the write path's refusals (closed, busy).

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::claims::{ApplicationClaim, LedgerEntryClaim, ledger_entry_claim};
use ledger_core::entry::{ApplicationEntry, TxKind};
use ledger_core::merkle::verify_consistency;
use ledger_core::receipt::{ReceiptError, verify_receipt};
use ledger_store::audit::audit;
use ledger_store::{AppendError, StoreConfig, TxStatus, WriteRequest};
use std::collections::BTreeSet;
use std::sync::mpsc;

const THREADS: u64 = 8;
const APPENDS_PER_THREAD: u64 = 500;

#[test]
fn concurrent_appends_commit_densely_and_share_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, files) = create_ledger(tmp.path(), StoreConfig::default());
    let written: Vec<(TxId, ApplicationEntry)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let ledger = &ledger;
                s.spawn(move || {
                    (0..APPENDS_PER_THREAD)
                        .map(|i| {
                            let entry = numbered_entry(&format!("thread {t}"), i);
                            let txid = ledger
                                .append(WriteRequest::Entry(entry.clone()))
                                .expect("append commits");
                            (txid, entry)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    assert_eq!(written.len() as u64, THREADS * APPENDS_PER_THREAD);

    // Every append got its own seqno, and each is committed as soon as append returns.
    let appended: BTreeSet<u64> = written.iter().map(|(t, _)| t.seqno()).collect();
    assert_eq!(appended.len(), written.len(), "two appends share a seqno");
    for (txid, _) in &written {
        assert_eq!(ledger.status(*txid), TxStatus::Committed, "{txid}");
    }
    assert_entries_intact(&ledger, &written);
    let end = ledger.committed().expect("committed").seqno();
    ledger.close();

    // Seqnos are dense: the ledger's frames are 1..=end with no gaps, and the appended ones
    // are exactly its application entries.
    let frames = ledger_frames(tmp.path());
    assert_eq!(
        frames.iter().map(|f| f.txid.seqno()).collect::<Vec<_>>(),
        (1..=end).collect::<Vec<_>>()
    );
    let entry_seqnos: BTreeSet<u64> = frames
        .iter()
        .filter(|f| f.kind == TxKind::Application)
        .map(|f| f.txid.seqno())
        .collect();
    assert_eq!(entry_seqnos, appended);

    let report = audit(tmp.path(), Some(&files.service_cert_pem)).expect("audit passes");
    println!("audit: {report:?}");
    assert_eq!(report.entries, THREADS * APPENDS_PER_THREAD);
    assert_eq!(report.unsigned_tail, 0);
    // Group commit: with 8 writers waiting, one signature covers several transactions.
    assert!(
        report.signatures * 2 <= report.entries,
        "group commit did not batch: {} signatures for {} entries",
        report.signatures,
        report.entries
    );
}

#[test]
fn status_distinguishes_committed_unknown_and_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, _) = create_ledger(tmp.path(), StoreConfig::default());
    let written = append_numbered(&ledger, "status", 5);
    let end = ledger.committed().unwrap();
    for (txid, _) in &written {
        assert_eq!(ledger.status(*txid), TxStatus::Committed);
    }
    assert_eq!(
        ledger.status(TxId::new(1, 1).unwrap()),
        TxStatus::Committed,
        "genesis"
    );
    assert_eq!(
        ledger.status(end),
        TxStatus::Committed,
        "the last signature"
    );
    assert_eq!(
        ledger.status(TxId::new(1, end.seqno() + 1).unwrap()),
        TxStatus::Unknown
    );
    assert_eq!(
        ledger.status(TxId::new(1, end.seqno() + 1000).unwrap()),
        TxStatus::Unknown
    );
    let (first, _) = written[0];
    assert_eq!(
        ledger.status(TxId::new(first.view() + 1, first.seqno()).unwrap()),
        TxStatus::Invalid
    );
    assert_eq!(
        ledger.status(TxId::new(7, end.seqno()).unwrap()),
        TxStatus::Invalid
    );
    assert_eq!(
        ledger.status(TxId::new(7, end.seqno() + 1).unwrap()),
        TxStatus::Unknown
    );
}

fn entry(collection: &str, contents: &str, tags: &[&str]) -> ApplicationEntry {
    ApplicationEntry {
        collection_id: collection.into(),
        contents: contents.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        claims_key: None,
        idempotency: None,
        kv_writes: Vec::new(),
    }
}

fn seqnos(records: &[ledger_store::EntryRecord]) -> Vec<u64> {
    records.iter().map(|r| r.txid.seqno()).collect()
}

#[test]
fn entry_queries_respect_collections_tags_and_inclusive_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, _) = create_ledger(tmp.path(), StoreConfig::default());
    let written = append_all(
        &ledger,
        vec![
            entry("red", "r0", &["hot"]),
            entry("blue", "b0", &[]),
            entry("red", "r1", &[]),
            entry("red", "r2", &["hot", "new"]),
            entry("blue", "b1", &["new"]),
            entry("red", "r3", &["hot"]),
        ],
    );
    let at = |i: usize| written[i].0.seqno();
    let red_all = vec![at(0), at(2), at(3), at(5)];

    assert_eq!(
        seqnos(&ledger.entries("red", None, 0, u64::MAX, 100).unwrap()),
        red_all
    );
    // Both bounds are inclusive.
    assert_eq!(
        seqnos(&ledger.entries("red", None, at(2), at(3), 100).unwrap()),
        vec![at(2), at(3)]
    );
    assert_eq!(
        seqnos(&ledger.entries("red", None, at(0), at(0), 100).unwrap()),
        vec![at(0)]
    );
    // Bounds between entries select nothing more.
    assert_eq!(
        seqnos(
            &ledger
                .entries("red", None, at(0) + 1, at(2) - 1, 100)
                .unwrap()
        ),
        Vec::<u64>::new()
    );
    assert_eq!(
        seqnos(&ledger.entries("red", None, at(3), at(2), 100).unwrap()),
        Vec::<u64>::new(),
        "from > to"
    );
    assert_eq!(
        seqnos(&ledger.entries("red", None, 0, u64::MAX, 2).unwrap()),
        vec![at(0), at(2)],
        "limit"
    );
    assert_eq!(
        seqnos(
            &ledger
                .entries("red", Some("hot"), 0, u64::MAX, 100)
                .unwrap()
        ),
        vec![at(0), at(3), at(5)]
    );
    assert_eq!(
        seqnos(
            &ledger
                .entries("red", Some("hot"), at(3), at(5), 100)
                .unwrap()
        ),
        vec![at(3), at(5)]
    );
    assert_eq!(
        seqnos(
            &ledger
                .entries("red", Some("new"), 0, u64::MAX, 100)
                .unwrap()
        ),
        vec![at(3)]
    );
    assert_eq!(
        seqnos(
            &ledger
                .entries("blue", Some("new"), 0, u64::MAX, 100)
                .unwrap()
        ),
        vec![at(4)]
    );
    assert_eq!(
        seqnos(&ledger.entries("green", None, 0, u64::MAX, 100).unwrap()),
        Vec::<u64>::new()
    );

    let records = ledger.entries("blue", None, 0, u64::MAX, 100).unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| r.entry.contents.as_str())
            .collect::<Vec<_>>(),
        ["b0", "b1"]
    );
    assert_eq!(records[1].entry, written[4].1);

    assert_eq!(
        ledger.latest_entry("red").unwrap().map(|r| r.txid),
        Some(written[5].0)
    );
    assert_eq!(
        ledger
            .latest_entry("blue")
            .unwrap()
            .map(|r| r.entry.contents),
        Some("b1".into())
    );
    assert_eq!(ledger.latest_entry("green").unwrap(), None);

    assert_eq!(
        ledger.collections().unwrap(),
        vec![("blue".into(), 2), ("red".into(), 4)]
    );
    assert_eq!(
        ledger.tags("red").unwrap(),
        vec![("hot".into(), 3), ("new".into(), 1)]
    );
    assert_eq!(ledger.tags("blue").unwrap(), vec![("new".into(), 1)]);
    assert_eq!(ledger.tags("green").unwrap(), Vec::<(String, u64)>::new());
}

#[test]
fn receipts_of_every_transaction_kind_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, files) = create_ledger(tmp.path(), StoreConfig::default());
    let written = append_each(&ledger, "kinds", 4);
    let cert = &files.service_cert_pem;

    let genesis = TxId::new(1, 1).unwrap();
    assert_eq!(verify_receipt_of(&ledger, genesis, cert).txid, genesis);
    for (txid, entry) in &written {
        verify_receipt_of(&ledger, *txid, cert);
        let bundle = ledger.receipt(*txid).unwrap().unwrap();
        assert_eq!(
            bundle.application_claims.is_some(),
            entry.claims_key.is_some(),
            "{txid}"
        );
    }
    let signatures = signature_txids(tmp.path());
    assert!(
        signatures.len() >= 4,
        "one signature per append: {signatures:?}"
    );
    // A signature transaction is proven by the next signature.
    verify_receipt_of(&ledger, signatures[0], cert);
    // Nothing is known about transactions that are not committed.
    let end = ledger.committed().unwrap();
    assert!(
        ledger
            .receipt(TxId::new(1, end.seqno() + 1).unwrap())
            .unwrap()
            .is_none()
    );
    assert!(
        ledger
            .receipt(TxId::new(2, written[0].0.seqno()).unwrap())
            .unwrap()
            .is_none(),
        "wrong view"
    );
}

/// The newest signature transaction is committed (its status says so), but no later signature
/// covers its own leaf yet. `receipt` promises a receipt or `None`; it must not fail.
#[test]
fn receipt_of_the_newest_signature_waits_for_the_next_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, files) = create_ledger(tmp.path(), StoreConfig::default());
    append_each(&ledger, "newest", 2);
    let newest = ledger.committed().unwrap();
    assert_eq!(signature_txids(tmp.path()).last(), Some(&newest));
    assert_eq!(ledger.status(newest), TxStatus::Committed);
    // Nothing covers the newest signature yet: no receipt, and no error.
    assert!(matches!(ledger.receipt(newest), Ok(None)));
    // The next signature covers it.
    append_each(&ledger, "later", 1);
    let bundle = ledger
        .receipt(newest)
        .unwrap()
        .expect("covered by the next signature");
    verify_receipt(&bundle.receipt, &files.service_cert_pem, None).expect("receipt verifies");
}

#[test]
fn receipts_with_claims_verify_only_with_the_recorded_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, files) = create_ledger(tmp.path(), StoreConfig::default());
    let key = [7u8; 32];
    let with_claims = ApplicationEntry {
        claims_key: Some(key),
        idempotency: None,
        ..entry("claims", "the claimed contents", &[])
    };
    let [(txid, _)] = append_all(&ledger, vec![with_claims]).try_into().unwrap();
    let cert = &files.service_cert_pem;

    let bundle = ledger.receipt(txid).unwrap().unwrap();
    let claims = bundle
        .application_claims
        .clone()
        .expect("entries written with a key carry claims");
    assert_eq!(
        claims,
        vec![ledger_entry_claim("claims", "the claimed contents", &key)]
    );
    assert_eq!(
        verify_receipt(&bundle.receipt, cert, Some(&claims))
            .unwrap()
            .txid,
        txid
    );

    let altered = |edit: &dyn Fn(&mut LedgerEntryClaim)| {
        let mut claims = claims.clone();
        let ApplicationClaim::LedgerEntry { ledger_entry } = &mut claims[0] else {
            unreachable!()
        };
        edit(ledger_entry);
        claims
    };
    let ApplicationClaim::LedgerEntry {
        ledger_entry: other,
    } = ledger_entry_claim("claims", "the claimed contents", &[8u8; 32])
    else {
        unreachable!()
    };
    for (what, bad) in [
        ("contents", altered(&|c| c.contents.push('!'))),
        ("collection", altered(&|c| c.collection_id = "other".into())),
        (
            "secret key",
            altered(&|c| c.secret_key = other.secret_key.clone()),
        ),
    ] {
        let result = verify_receipt(&bundle.receipt, cert, Some(&bad));
        assert!(
            matches!(result, Err(ReceiptError::ClaimsMismatch { .. })),
            "altered {what}: {result:?}"
        );
    }

    // Without claims the receipt proves the leaf (its claims digest) but not the contents.
    let [(plain_txid, _)] = append_all(&ledger, vec![entry("claims", "no key", &[])])
        .try_into()
        .unwrap();
    let plain = ledger.receipt(plain_txid).unwrap().unwrap();
    assert_eq!(plain.application_claims, None);
    assert_eq!(plain.receipt.leaf_components.claims_digest, "0".repeat(64));
    verify_receipt(&plain.receipt, cert, None).expect("a receipt without claims verifies");
    let result = verify_receipt(&plain.receipt, cert, Some(&claims));
    assert!(
        matches!(result, Err(ReceiptError::ClaimsMismatch { .. })),
        "foreign claims: {result:?}"
    );
}

#[test]
fn roots_and_consistency_proofs_agree_with_the_verifier() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, _) = create_ledger(tmp.path(), StoreConfig::default());
    for round in 0..6 {
        append_numbered(&ledger, &format!("round {round}"), 7 + round * 5);
    }
    let size = ledger.committed().unwrap().seqno() + 1;
    assert!(size > 64, "size {size}");
    let pairs = [
        (1, 1),
        (1, 2),
        (1, size),
        (2, 3),
        (3, 8),
        (4, 16),
        (7, 17),
        (16, 17),
        (31, 64),
        (33, size),
        (size - 1, size),
        (size, size),
    ];
    for (old, new) in pairs {
        let proof = ledger
            .consistency_proof(old, new)
            .unwrap_or_else(|e| panic!("proof {old}->{new}: {e}"));
        let (old_root, new_root) = (ledger.root_at(old).unwrap(), ledger.root_at(new).unwrap());
        verify_consistency(old, new, old_root, new_root, &proof)
            .unwrap_or_else(|e| panic!("{old}->{new}: {e}"));
        if old < new {
            let wrong = verify_consistency(old, new, new_root, old_root, &proof);
            assert!(wrong.is_err(), "{old}->{new} verified with swapped roots");
        }
    }
    // Each signature transaction at seqno s signed the root of the first s leaves.
    for sig in signature_txids(tmp.path()) {
        let bytes = ledger.transaction_bytes(sig).unwrap().unwrap();
        let record = ledger_core::entry::EntryView::parse(&bytes, sig.seqno())
            .unwrap()
            .signature()
            .unwrap();
        assert_eq!(
            ledger.root_at(sig.seqno()).unwrap(),
            record.root,
            "signature {sig}"
        );
    }
    assert!(
        ledger.root_at(size + 1).is_err(),
        "beyond the committed size"
    );
    assert!(ledger.consistency_proof(1, size + 1).is_err());
}

#[test]
fn writes_after_close_are_refused_as_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, _) = create_ledger(tmp.path(), StoreConfig::default());
    let written = append_numbered(&ledger, "before close", 3);
    ledger.close();
    let (tx, rx) = mpsc::channel();
    let result = ledger.submit(
        WriteRequest::Entry(numbered_entry("after close", 0)),
        Box::new(move |r| tx.send(r).unwrap()),
    );
    assert_eq!(result, Err(AppendError::Closed));
    assert!(
        rx.try_recv().is_err(),
        "a refused submission is never completed"
    );
    assert_eq!(
        ledger.append(WriteRequest::Entry(numbered_entry("after close", 1))),
        Err(AppendError::Closed)
    );
    // Reads go on.
    assert_entries_intact(&ledger, &written);
}

#[test]
fn a_full_queue_answers_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        queue_capacity: 1,
        ..StoreConfig::default()
    };
    let (ledger, _) = create_ledger(tmp.path(), config);
    let (tx, rx) = mpsc::channel();
    let (mut accepted, mut busy) = (0u64, 0u64);
    for i in 0..2000 {
        let tx = tx.clone();
        match ledger.submit(
            WriteRequest::Entry(numbered_entry("flood", i)),
            Box::new(move |r| tx.send(r).unwrap()),
        ) {
            Ok(()) => accepted += 1,
            Err(AppendError::Busy) => busy += 1,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    drop(tx);
    println!("accepted {accepted}, busy {busy}");
    assert!(busy > 0, "2000 submissions never filled a queue of 1");
    // Accepted submissions all commit.
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len() as u64, accepted);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// The default collection has no index rows: its newest entry used to be found by scanning
/// back over every other transaction on each `/current`. It is now kept as entries commit,
/// after one scan per open; this checks the answer stays right through writes to other
/// collections, new default entries and reopening.
#[test]
fn the_default_collections_newest_entry_is_kept_through_writes_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, _files) = create_ledger(tmp.path(), StoreConfig::default());
    let entry = |collection: &str, contents: &str| {
        WriteRequest::Entry(ApplicationEntry {
            collection_id: collection.into(),
            contents: contents.into(),
            tags: vec![],
            claims_key: None,
            idempotency: None,
            kv_writes: Vec::new(),
        })
    };
    let newest = |ledger: &ledger_store::Ledger| {
        ledger
            .latest_entry("subledger:0")
            .unwrap()
            .map(|r| (r.txid, r.entry.contents))
    };
    assert_eq!(newest(&ledger), None);
    for i in 0..20 {
        ledger.append(entry("red", &format!("r{i}"))).unwrap();
    }
    assert_eq!(newest(&ledger), None);
    let first = ledger.append(entry("subledger:0", "d1")).unwrap();
    for i in 0..200 {
        ledger.append(entry("red", &format!("r{i}"))).unwrap();
    }
    assert_eq!(newest(&ledger), Some((first, "d1".into())));
    let second = ledger.append(entry("subledger:0", "d2")).unwrap();
    assert_eq!(newest(&ledger), Some((second, "d2".into())));
    ledger.close();
    drop(ledger);
    let (ledger, _) = reopen_ok(tmp.path(), StoreConfig::default());
    ledger.append(entry("red", "after")).unwrap();
    assert_eq!(newest(&ledger), Some((second, "d2".into())));
    let third = ledger.append(entry("subledger:0", "d3")).unwrap();
    assert_eq!(newest(&ledger), Some((third, "d3".into())));
}
