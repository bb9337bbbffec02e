//! The store's own limits (`ledger_store::limits`, FORMAT.md §3.5), through `Ledger::submit`:
//! a write beyond a limit is refused at once with the typed error naming the limit, nothing is
//! written, and the ledger reopens and audits clean; a write exactly at a limit is written,
//! reads back, reopens and audits clean. Before these checks, a 70 MB entry was acknowledged
//! and then refused by the next open as corruption.

mod common;

use common::*;
use ledger_core::entry::{self, ApplicationEntry, DEFAULT_COLLECTION, TableWrite, TxBody};
use ledger_store::limits::{
    MAX_COLLECTION_ID_BYTES, MAX_ENTRY_BYTES, MAX_SEGMENT_BYTES, MAX_TAG_BYTES, MAX_TAGS_PER_ENTRY,
};
use ledger_store::{
    AppendError, Genesis, Ledger, LimitError, StoreConfig, StoreError, WriteRequest, audit,
};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn entry_with(collection: &str, tags: Vec<String>, contents: String) -> ApplicationEntry {
    ApplicationEntry {
        collection_id: collection.into(),
        contents,
        tags,
        claims_key: None,
        idempotency: None,
        kv_writes: Vec::new(),
    }
}

/// The most `entry` may take once stored, at any view (what the store checks).
fn bound(entry: &ApplicationEntry) -> u64 {
    entry::max_encoded_len(
        &TxBody::Application(entry.clone()),
        entry.claims_key.is_some(),
    )
}

/// An entry whose stored size bound is exactly `size`: contents grown or shrunk to fit.
fn entry_of_bound(size: u64) -> ApplicationEntry {
    let mut e = entry_with(DEFAULT_COLLECTION, Vec::new(), String::new());
    let empty = bound(&e);
    e.contents = "c".repeat((size - empty) as usize);
    while bound(&e) > size {
        e.contents.pop();
    }
    while bound(&e) < size {
        e.contents.push('c');
    }
    assert_eq!(bound(&e), size);
    e
}

/// Submits `request`, which must be refused at once with `expected`; the completion must never
/// run (the write was not queued).
fn assert_refused(ledger: &Ledger, request: WriteRequest, expected: LimitError) {
    let called = Arc::new(AtomicBool::new(false));
    let flag = called.clone();
    let result = ledger.submit(
        request,
        Box::new(move |_| flag.store(true, Ordering::SeqCst)),
    );
    assert_eq!(result, Err(AppendError::Limit(expected)));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(!called.load(Ordering::SeqCst), "a refused write completed");
}

fn segment_bytes(dir: &Path) -> u64 {
    segment_paths(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn reopen_and_audit(dir: &Path, cert: &str) -> Ledger {
    let (ledger, report) = reopen_ok(dir, StoreConfig::default());
    assert_eq!(report.truncated_tail, None, "nothing was torn");
    ledger.close();
    drop(ledger);
    audit::audit(dir, Some(cert)).unwrap_or_else(|e| panic!("audit failed: {e}"));
    reopen_ok(dir, StoreConfig::default()).0
}

#[test]
fn an_entry_over_the_limit_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ledger, files) = create_ledger(dir, StoreConfig::default());
    let before = ledger.append(WriteRequest::Entry(numbered_entry("before", 1)));
    let before = before.expect("a small write");
    let committed = ledger.committed();
    let bytes = segment_bytes(dir);

    // What `cledger local fill --size 70000000` submitted.
    let fill = entry_with(DEFAULT_COLLECTION, Vec::new(), "x".repeat(70_000_000));
    let size = bound(&fill);
    assert_refused(
        &ledger,
        WriteRequest::Entry(fill),
        LimitError::EntryTooLarge {
            size,
            limit: MAX_ENTRY_BYTES,
        },
    );
    // One byte over.
    let over = entry_of_bound(MAX_ENTRY_BYTES + 1);
    assert_refused(
        &ledger,
        WriteRequest::Entry(over.clone()),
        LimitError::EntryTooLarge {
            size: MAX_ENTRY_BYTES + 1,
            limit: MAX_ENTRY_BYTES,
        },
    );
    // `append` (what `cledger local append` uses) says the same.
    let refused = ledger.append(WriteRequest::Entry(over)).unwrap_err();
    assert!(matches!(
        refused,
        AppendError::Limit(LimitError::EntryTooLarge { .. })
    ));
    let message = refused.to_string();
    assert!(
        message.contains("nothing was written") && message.contains("1 more than"),
        "{message}"
    );
    // In a governance write too (its public section has u32 length fields).
    let value = vec![0u8; MAX_ENTRY_BYTES as usize];
    let governance = WriteRequest::Governance(vec![TableWrite {
        table: entry::tables::CONFIG.into(),
        key: "big".into(),
        value: Some(value),
    }]);
    let refused = ledger.append(governance).unwrap_err();
    assert!(
        matches!(refused, AppendError::Limit(LimitError::EntryTooLarge { size, .. }) if size > MAX_ENTRY_BYTES),
        "{refused:?}"
    );

    assert_eq!(ledger.committed(), committed, "nothing was committed");
    assert_eq!(segment_bytes(dir), bytes, "nothing was written");
    assert!(ledger.write_health().is_ok(), "a refused write is no fault");
    let after = ledger
        .append(WriteRequest::Entry(numbered_entry("after", 2)))
        .expect("writes go on");
    assert_eq!(after.seqno(), before.seqno() + 2, "no seqno was used");
    ledger.close();
    drop(ledger);

    let ledger = reopen_and_audit(dir, &files.service_cert_pem);
    assert_eq!(
        ledger.entry(after).unwrap().unwrap().entry,
        numbered_entry("after", 2)
    );
}

#[test]
fn an_entry_exactly_at_the_limit_is_written_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ledger, files) = create_ledger(dir, StoreConfig::default());
    let largest = entry_of_bound(MAX_ENTRY_BYTES);
    let txid = ledger
        .append(WriteRequest::Entry(largest.clone()))
        .expect("an entry at the limit is written");
    let stored = ledger_frames(dir)
        .into_iter()
        .find(|f| f.txid == txid)
        .expect("its frame");
    // Written at view 1, whose varint is 9 bytes shorter than the largest view's.
    assert_eq!(
        stored.end - stored.payload_offset(),
        MAX_ENTRY_BYTES - (entry::MAX_VARINT_LEN - 1)
    );
    let read = ledger.entry(txid).unwrap().expect("reads back").entry;
    assert!(
        read == largest,
        "the entry at the limit reads back unchanged"
    );
    verify_receipt_of(&ledger, txid, &files.service_cert_pem);
    ledger.close();
    drop(ledger);

    let ledger = reopen_and_audit(dir, &files.service_cert_pem);
    let read = ledger.entry(txid).unwrap().expect("reads back").entry;
    assert!(
        read == largest,
        "the entry at the limit reads back after reopening"
    );
    verify_receipt_of(&ledger, txid, &files.service_cert_pem);
}

#[test]
fn collection_ids_and_tags_beyond_the_limits_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ledger, files) = create_ledger(dir, StoreConfig::default());
    let tags =
        |n: usize, len: usize| -> Vec<String> { (0..n).map(|i| format!("{i:0len$}")).collect() };
    let long_collection = "c".repeat(MAX_COLLECTION_ID_BYTES + 1);
    assert_refused(
        &ledger,
        WriteRequest::Entry(entry_with(&long_collection, Vec::new(), "x".into())),
        LimitError::CollectionIdTooLong {
            len: MAX_COLLECTION_ID_BYTES + 1,
            limit: MAX_COLLECTION_ID_BYTES,
        },
    );
    assert_refused(
        &ledger,
        WriteRequest::Entry(entry_with(
            "tags",
            tags(MAX_TAGS_PER_ENTRY + 5, 4),
            "x".into(),
        )),
        LimitError::TooManyTags {
            count: MAX_TAGS_PER_ENTRY + 5,
            limit: MAX_TAGS_PER_ENTRY,
        },
    );
    let mut with_long_tag = tags(5, 4);
    with_long_tag[3] = "t".repeat(MAX_TAG_BYTES + 2);
    assert_refused(
        &ledger,
        WriteRequest::Entry(entry_with("tags", with_long_tag, "x".into())),
        LimitError::TagTooLong {
            index: 3,
            len: MAX_TAG_BYTES + 2,
            limit: MAX_TAG_BYTES,
        },
    );
    let message = AppendError::Limit(LimitError::TagTooLong {
        index: 3,
        len: MAX_TAG_BYTES + 2,
        limit: MAX_TAG_BYTES,
    })
    .to_string();
    assert!(
        message.contains("tag 3") && message.contains("2 more than"),
        "{message}"
    );

    // Exactly at each limit: written.
    let at_limit = vec![
        entry_with(
            &"c".repeat(MAX_COLLECTION_ID_BYTES),
            Vec::new(),
            "longest id".into(),
        ),
        entry_with("tags", tags(MAX_TAGS_PER_ENTRY, 4), "most tags".into()),
        entry_with(
            "tags",
            vec!["t".repeat(MAX_TAG_BYTES), "short".into()],
            "longest tag".into(),
        ),
    ];
    let written = append_all(&ledger, at_limit);
    assert_entries_intact(&ledger, &written);
    assert_eq!(
        ledger
            .entries("tags", Some(&"t".repeat(MAX_TAG_BYTES)), 1, u64::MAX, 10)
            .unwrap()
            .len(),
        1
    );
    ledger.close();
    drop(ledger);
    let ledger = reopen_and_audit(dir, &files.service_cert_pem);
    assert_entries_intact(&ledger, &written);
    // No index row of a refused write.
    let collections: Vec<String> = ledger
        .collections()
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert!(!collections.contains(&long_collection));
    assert_eq!(ledger.tags("tags").unwrap().len(), MAX_TAGS_PER_ENTRY + 2);
}

#[test]
fn a_segment_size_beyond_the_frame_offsets_is_refused_before_anything_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let files = ledger_identity::files::NodeFiles::create(dir, ledger_identity::Curve::P256, &[])
        .expect("identity");
    let config = StoreConfig {
        segment_max_bytes: MAX_SEGMENT_BYTES + 1,
        ..StoreConfig::default()
    };
    let genesis = Genesis {
        ledger_id: "limits".into(),
        service_cert_pem: files.service_cert_pem.clone(),
        writes: Vec::new(),
    };
    let created = Ledger::create(dir, config.clone(), node_identity(&files), genesis);
    assert!(
        matches!(
            created,
            Err(StoreError::SegmentTooLarge { configured, limit })
                if configured == MAX_SEGMENT_BYTES + 1 && limit == MAX_SEGMENT_BYTES
        ),
        "{:?}",
        created.err()
    );
    assert!(!dir.join("ledger").exists(), "nothing was created");
    // The largest allowed size works, and opening with a bad one is refused the same way.
    let config_ok = StoreConfig {
        segment_max_bytes: MAX_SEGMENT_BYTES,
        ..StoreConfig::default()
    };
    let genesis = Genesis {
        ledger_id: "limits".into(),
        service_cert_pem: files.service_cert_pem.clone(),
        writes: Vec::new(),
    };
    Ledger::create(dir, config_ok, node_identity(&files), genesis)
        .expect("created")
        .close();
    assert!(matches!(
        reopen(dir, config),
        Err(StoreError::SegmentTooLarge { .. })
    ));
}
