//! Application key-value tables (the state user-defined functions and endpoints keep): writes
//! as key-value transactions and as an entry's hook writes, committed reads through the index,
//! the refusals of malformed write sets, and the same state after a reopen, after the index is
//! rebuilt from the ledger, and in the audit's model of the index.

mod common;

use common::*;
use ledger_core::entry::{ApplicationEntry, KvWrite};
use ledger_store::audit::audit_all;
use ledger_store::ledger_secret;
use ledger_store::{AppendError, KekSource, LimitError, StoreConfig, WriteRequest};
use std::path::Path;

fn write(table: &str, key: &[u8], value: Option<&[u8]>) -> KvWrite {
    KvWrite {
        table: table.into(),
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    }
}

fn entry_with_hooks(contents: &str, kv_writes: Vec<KvWrite>) -> ApplicationEntry {
    ApplicationEntry {
        collection_id: "John".into(),
        contents: contents.into(),
        tags: Vec::new(),
        claims_key: None,
        idempotency: None,
        kv_writes,
    }
}

/// The state every test below expects after [`write_history`].
fn assert_state(ledger: &ledger_store::Ledger) {
    assert_eq!(
        ledger.kv_get("public:payment_metadata", b"John").unwrap(),
        Some(b"Normal".to_vec())
    );
    assert_eq!(
        ledger.kv_get("public:payment_metadata", b"Mark").unwrap(),
        Some(b"Alert".to_vec())
    );
    // Removed by the third transaction.
    assert_eq!(
        ledger.kv_get("public:payment_metadata", b"Jane").unwrap(),
        None
    );
    assert_eq!(
        ledger.kv_get("private:secrets", b"\x00\xff").unwrap(),
        Some(Vec::new())
    );
    assert_eq!(ledger.kv_get("public:other", b"John").unwrap(), None);
    let all = ledger.kv_scan("public:payment_metadata", None, 10).unwrap();
    assert_eq!(
        all,
        vec![
            (b"John".to_vec(), b"Normal".to_vec()),
            (b"Mark".to_vec(), b"Alert".to_vec())
        ]
    );
    // Paged: after a key, at most `limit`.
    assert_eq!(
        ledger
            .kv_scan("public:payment_metadata", Some(b"John"), 10)
            .unwrap(),
        all[1..]
    );
    assert_eq!(
        ledger.kv_scan("public:payment_metadata", None, 1).unwrap(),
        all[..1]
    );
    assert!(ledger.kv_scan("public:none", None, 10).unwrap().is_empty());
}

fn write_history(ledger: &ledger_store::Ledger) {
    ledger
        .append(WriteRequest::Kv(vec![
            write("public:payment_metadata", b"Jane", Some(b"Normal")),
            write("public:payment_metadata", b"Mark", Some(b"Normal")),
        ]))
        .unwrap();
    let entry = ledger
        .append(WriteRequest::Entry(entry_with_hooks(
            "100",
            vec![write("public:payment_metadata", b"Mark", Some(b"Alert"))],
        )))
        .unwrap();
    assert_eq!(
        ledger.entry(entry).unwrap().unwrap().entry.contents,
        "100",
        "an entry with hook writes is an entry"
    );
    ledger
        .append(WriteRequest::Kv(vec![
            write("private:secrets", b"\x00\xff", Some(b"")),
            write("public:payment_metadata", b"Jane", None),
            write("public:payment_metadata", b"John", Some(b"Normal")),
        ]))
        .unwrap();
}

fn audit_with_secret(dir: &Path) -> ledger_store::audit::AuditReport {
    let secret = ledger_secret(dir, &KekSource::DataDir).unwrap();
    let cert = identity(dir).service_cert_pem;
    audit_all(dir, Some(&cert), Some(&ledger_store::KeyRing::new(secret))).expect("audit passes")
}

#[test]
fn key_value_state_is_committed_read_back_and_survives_reopen_rebuild_and_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ledger, _files) = create_ledger(dir, StoreConfig::default());
    write_history(&ledger);
    assert_state(&ledger);
    ledger.close();
    drop(ledger);

    let (ledger, _) = reopen_ok(dir, StoreConfig::default());
    assert_state(&ledger);
    ledger.close();
    drop(ledger);

    let report = audit_with_secret(dir);
    assert_eq!(report.kv_transactions, 2);
    assert_eq!(report.entries, 1);
    let derived = report.derived.expect("derived files checked");
    assert!(derived.damaged.is_empty(), "{:?}", derived.damaged);

    // The index is derived: rebuilt from the ledger, it says the same.
    std::fs::remove_file(dir.join("index.redb")).unwrap();
    let (ledger, _) = reopen_ok(dir, StoreConfig::default());
    assert_state(&ledger);
}

#[test]
fn malformed_write_sets_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (ledger, _files) = create_ledger(tmp.path(), StoreConfig::default());
    let before = ledger.committed();
    let refused = |request: WriteRequest| match ledger.append(request) {
        Err(AppendError::Limit(LimitError::WriteSet(reason))) => reason,
        other => panic!("expected a refused write set, got {other:?}"),
    };
    assert_eq!(refused(WriteRequest::Kv(Vec::new())), "empty");
    let unsorted = vec![write("public:t", b"b", None), write("public:t", b"a", None)];
    assert_eq!(
        refused(WriteRequest::Kv(unsorted.clone())),
        "not in ascending (table, key) order"
    );
    let twice = vec![
        write("public:t", b"a", None),
        write("public:t", b"a", Some(b"x")),
    ];
    assert_eq!(
        refused(WriteRequest::Kv(twice)),
        "not in ascending (table, key) order"
    );
    assert_eq!(
        refused(WriteRequest::Entry(entry_with_hooks("x", unsorted))),
        "not in ascending (table, key) order"
    );
    assert_eq!(ledger.committed(), before);
}
