//! A ledger written by an earlier release (segment and entry format 1, index format 2, leaf
//! hashes in `tree/level-00.hashes`) opens in place: its entries and receipts are served
//! unchanged, new writes go to format-2 segments after it, and the whole passes the audit.
//!
//! The fixture under `tests/fixtures/format1/` was made by the release before format 2 with
//! `cledger local init --curve p256` and `cledger local append` (default collection, an
//! `audit` collection with tags, a claims entry and a 3 KB entry); the JSON files beside it
//! are what that release printed for `cledger local get` and `cledger local receipt`.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::entry::DEFAULT_COLLECTION;
use ledger_store::audit::audit;
use ledger_store::segment::{self, SEGMENT_HEADER_LEN, check_segment_header};
use ledger_store::{StoreConfig, WriteRequest};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format1");
const OLD_ENTRIES: [&str; 5] = ["1.3", "1.5", "1.7", "1.9", "1.11"];

fn fixture_json(name: &str) -> Value {
    let path = Path::new(FIXTURE).join(name);
    serde_json::from_slice(&fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("fixture JSON parses")
}

fn txid(s: &str) -> TxId {
    s.parse().expect("txid")
}

fn segment_versions(dir: &Path) -> Vec<u32> {
    segment::list_segments(&dir.join("ledger"))
        .unwrap()
        .into_iter()
        .map(|(first, path)| {
            let bytes = fs::read(path).unwrap();
            check_segment_header(&bytes[..SEGMENT_HEADER_LEN], first).expect("header")
        })
        .collect()
}

/// The old entries read back, and their receipts, byte for byte as the old release gave them.
fn assert_old_ledger_served(ledger: &ledger_store::Ledger, what: &str) {
    for t in OLD_ENTRIES {
        let expected = fixture_json(&format!("get-{t}.json"));
        let record = ledger
            .entry(txid(t))
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: {t} has no entry"));
        assert_eq!(
            record.entry.collection_id, expected["collectionId"],
            "{what}: {t}"
        );
        assert_eq!(record.entry.contents, expected["contents"], "{what}: {t}");
        let tags: Vec<Value> = record
            .entry
            .tags
            .iter()
            .map(|t| Value::from(t.as_str()))
            .collect();
        assert_eq!(Value::from(tags), expected["tags"], "{what}: {t}");

        let expected = fixture_json(&format!("receipt-{t}.json"));
        let bundle = ledger.receipt(txid(t)).unwrap().expect("committed");
        assert_eq!(
            serde_json::to_value(&bundle.receipt).unwrap(),
            expected["receipt"],
            "{what}: the receipt of {t} changed"
        );
        let claims = serde_json::to_value(&bundle.application_claims).unwrap();
        let expected_claims = expected
            .get("applicationClaims")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(claims, expected_claims, "{what}: the claims of {t} changed");
    }
}

fn copy_fixture(tmp: &Path, name: &str, keep_derived: bool) -> PathBuf {
    let dir = tmp.join(name);
    copy_dir(&Path::new(FIXTURE).join("ledger"), &dir);
    if !keep_derived {
        fs::remove_file(dir.join("index.redb")).unwrap();
        fs::remove_dir_all(dir.join("tree")).unwrap();
    }
    dir
}

#[test]
fn a_format_1_ledger_is_served_unchanged_and_grows_in_format_2() {
    let tmp = tempfile::tempdir().unwrap();
    for keep_derived in [true, false] {
        let what = if keep_derived {
            "with its old index and tree"
        } else {
            "segments only"
        };
        let dir = copy_fixture(tmp.path(), &format!("derived-{keep_derived}"), keep_derived);
        let cert = fs::read_to_string(dir.join("service_cert.pem")).unwrap();
        assert_eq!(segment_versions(&dir), [1]);

        let (ledger, report) = reopen_ok(&dir, StoreConfig::default());
        // The old index (format 2) and leaf file are replaced by the new derived files.
        assert!(report.index_rebuilt, "{what}: {report:?}");
        assert_eq!(
            report.tree_replayed, report.transactions,
            "{what}: {report:?}"
        );
        assert_eq!(report.transactions, 12, "{what}");
        assert!(!dir.join("tree/level-00.hashes").exists(), "{what}");
        assert!(dir.join("tree/frames.idx").exists(), "{what}");
        assert_old_ledger_served(&ledger, what);

        // New writes: a new segment in format 2, after the format-1 one.
        let new_default = ledger
            .append(WriteRequest::Entry(numbered_entry("after the upgrade", 0)))
            .unwrap();
        let new_tagged = ledger
            .append(WriteRequest::Entry(ledger_core::entry::ApplicationEntry {
                collection_id: "audit".into(),
                contents: "a later audit event".into(),
                tags: vec!["alpha".into()],
                claims_key: None,
                idempotency: None,
                kv_writes: Vec::new(),
            }))
            .unwrap();
        assert_eq!(segment_versions(&dir), [1, 2], "{what}");
        for t in [new_default, new_tagged] {
            verify_receipt_of(&ledger, t, &cert);
        }
        for t in OLD_ENTRIES {
            verify_receipt_of(&ledger, txid(t), &cert);
        }

        // Listing spans both formats: the default collection from the frame records, others
        // from the index.
        let end = ledger.committed().unwrap().seqno();
        let listed = |collection: &str, tag: Option<&str>| -> Vec<TxId> {
            ledger
                .entries(collection, tag, 1, end, 100)
                .unwrap()
                .into_iter()
                .map(|r| r.txid)
                .collect()
        };
        let mut defaults: Vec<TxId> = ["1.3", "1.5", "1.9", "1.11"].map(txid).to_vec();
        defaults.push(new_default);
        assert_eq!(listed(DEFAULT_COLLECTION, None), defaults, "{what}");
        assert_eq!(listed("audit", None), [txid("1.7"), new_tagged], "{what}");
        assert_eq!(
            listed("audit", Some("alpha")),
            [txid("1.7"), new_tagged],
            "{what}"
        );
        assert_eq!(listed("audit", Some("beta")), [txid("1.7")], "{what}");
        assert_eq!(
            ledger
                .latest_entry(DEFAULT_COLLECTION)
                .unwrap()
                .unwrap()
                .txid,
            new_default,
            "{what}"
        );
        ledger.close();
        drop(ledger);

        let report = audit(&dir, Some(&cert)).unwrap_or_else(|e| panic!("{what}: audit: {e}"));
        assert_eq!(report.entries, 7, "{what}");
        // And once more from the files the upgrade wrote.
        let (ledger, report) = reopen_ok(&dir, StoreConfig::default());
        assert!(
            !report.index_rebuilt && report.tree_replayed == 0,
            "{what}: {report:?}"
        );
        assert_old_ledger_served(&ledger, what);
        ledger.close();
    }
}
