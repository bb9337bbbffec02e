//! Derived files (`index.redb`, `tree/frames.idx`, `tree/level-LL.hashes`) that go bad while
//! the ledger is open, or that were altered together with their checksums (so that the open's
//! checks pass): reads refuse with `StoreError::DerivedDamaged` naming the file — never a
//! wrong entry, a shortened list or a receipt that does not verify — the damage is recorded
//! (`Ledger::derived_damage`, the `derived-damaged` marker), the next open rebuilds the file,
//! and the audit names it. Damage to the ledger itself is still reported as corruption.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_store::audit::audit_all;
use ledger_store::{EntryRecord, KekSource, Ledger, StoreError, ledger_secret};
use redb::TableDefinition;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn config() -> ledger_store::StoreConfig {
    ledger_store::StoreConfig::default()
}

/// XORs one byte of a file in place (the ledger's open handles see it).
fn xor_at(path: &Path, offset: u64, mask: u8) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= mask;
    file.write_all_at(&byte, offset).unwrap();
}

fn list(ledger: &Ledger, collection: &str) -> Result<Vec<EntryRecord>, StoreError> {
    ledger.entries(collection, None, 0, u64::MAX, usize::MAX)
}

fn damaged_file(result: Result<impl std::fmt::Debug, StoreError>) -> PathBuf {
    match result {
        Err(StoreError::DerivedDamaged { file, .. }) => file,
        other => panic!("expected DerivedDamaged, got {other:?}"),
    }
}

/// A level-04 hash `run` (leaves `16·run .. 16·run + 16`, odd, under level-08 hash 0, which
/// the open reads instead of it) and a leaf of the run before it, whose receipt's path has
/// that subtree as its level-4 sibling: its receipt is anchored at a signature past the run.
/// Where signatures fall depends on how the writer batched the writes, so the run is chosen
/// from the ledger's actual signatures.
fn run_and_neighbour(dir: &Path) -> (u64, TxId) {
    let signatures = signature_txids(dir);
    for run in (1..16).step_by(2) {
        for seqno in 16 * (run - 1)..16 * run {
            let anchor = signatures.iter().find(|s| s.seqno() > seqno);
            if seqno > 0 && anchor.is_some_and(|a| a.seqno() >= 16 * (run + 1)) {
                return (run, TxId::new(1, seqno).unwrap());
            }
        }
    }
    panic!("no leaf of the first 256 has a receipt past the next run: signatures {signatures:?}");
}

fn audit_damage(dir: &Path) -> Vec<ledger_store::DerivedDamage> {
    let secret = ledger_secret(dir, &KekSource::DataDir).unwrap();
    let cert = identity(dir).service_cert_pem;
    audit_all(dir, Some(&cert), Some(&ledger_store::KeyRing::new(secret)))
        .expect("the ledger itself audits")
        .derived
        .expect("derived files checked")
        .damaged
}

#[test]
fn tree_files_damaged_while_open_are_refused_naming_them_and_rebuilt_at_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (ledger, files) = create_ledger(&dir, config());
    // 700 entries: frame records span several checksum chunks (128 records each).
    let written = append_numbered(&ledger, "open", 700);
    let before: Vec<_> = ["subledger:0", "alpha", "beta"]
        .iter()
        .map(|c| list(&ledger, c).unwrap())
        .collect();
    let records = dir.join("tree/frames.idx");
    let marker = dir.join("derived-damaged");

    // The class byte of a default-collection entry's record (seqno < 512: chunk 0).
    let (target, _) = written[0];
    assert!(target.seqno() < 512);
    xor_at(&records, target.seqno() * 8 + 5, 0x03);
    assert_eq!(damaged_file(list(&ledger, "subledger:0")), records);
    assert_eq!(damaged_file(ledger.entry(target)), records);
    assert_eq!(damaged_file(list(&ledger, "alpha")), records);
    // Records of another chunk are intact: those transactions are served.
    let (late, late_entry) = written.last().unwrap().clone();
    assert!(late.seqno() >= 512);
    assert_eq!(ledger.entry(late).unwrap().unwrap().entry, late_entry);
    let damage = ledger.derived_damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0].file, records);
    assert!(
        damage[0].reason.contains("checksum"),
        "{}",
        damage[0].reason
    );
    let marked = fs::read_to_string(&marker).expect("the marker is written");
    assert!(marked.starts_with(&*records.to_string_lossy()), "{marked}");
    // Writes do not read the records: they go on.
    ledger
        .append(ledger_store::WriteRequest::Entry(numbered_entry(
            "after", 3,
        )))
        .unwrap();

    // The damage goes away (it was in the page cache only, say); a level file goes bad.
    xor_at(&records, target.seqno() * 8 + 5, 0x03);
    assert_eq!(ledger.entry(target).unwrap().unwrap().entry, written[0].1);
    let level4 = dir.join("tree/level-04.hashes");
    // A receipt whose path needs the subtree of level-04 hash `run`.
    let (run, neighbour) = run_and_neighbour(&dir);
    xor_at(&level4, run * 32 + 7, 0x10);
    assert_eq!(damaged_file(ledger.receipt(neighbour)), level4);
    // Damage to the ledger itself is still corruption, and not recorded as derived.
    let frames = ledger_frames(&dir);
    let frame = frames.iter().find(|f| f.txid == written[5].0).unwrap();
    xor_at(&frame.path, frame.end - 1, 0x01);
    assert!(matches!(
        ledger.entry(written[5].0),
        Err(StoreError::Corrupt { .. })
    ));
    xor_at(&frame.path, frame.end - 1, 0x01);
    xor_at(&level4, run * 32 + 7, 0x10);
    assert_eq!(ledger.derived_damage().len(), 2);
    ledger.close();
    drop(ledger);

    // The files on disk are intact again, but the marker says to rebuild them.
    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.tree_rebuilt, "{report:?}");
    assert!(
        report
            .rebuilt
            .iter()
            .any(|d| d.file == records && d.reason.contains("found by a read")),
        "{:?}",
        report.rebuilt
    );
    assert!(!marker.exists());
    assert!(ledger.derived_damage().is_empty());
    for (c, was) in ["subledger:0", "alpha", "beta"].iter().zip(&before) {
        let now = list(&ledger, c).unwrap();
        assert_eq!(&now[..was.len()], &was[..], "{c}");
    }
    verify_receipt_of(&ledger, neighbour, &files.service_cert_pem);
    verify_receipt_of(&ledger, target, &files.service_cert_pem);
}

/// `collection_entries` of `index.redb`, as the store defines it.
const COLLECTION_ENTRIES: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("collection_entries");
const TREE_SUMS: TableDefinition<(u32, u64), u32> = TableDefinition::new("tree_checksums");

#[test]
fn an_index_row_listing_an_entry_of_another_collection_is_refused_and_named_by_the_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (ledger, _) = create_ledger(&dir, config());
    let written = append_numbered(&ledger, "rows", 60);
    let alpha = list(&ledger, "alpha").unwrap();
    ledger.close();
    drop(ledger);
    // The newest beta entry, listed in alpha too, by a well-formed redb write (its pages
    // have valid checksums: only comparing with the ledger can tell).
    let (beta, _) = written
        .iter()
        .rev()
        .find(|(_, e)| e.collection_id == "beta")
        .unwrap()
        .clone();
    let index = dir.join("index.redb");
    {
        let db = redb::Database::create(&index).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(COLLECTION_ENTRIES)
            .unwrap()
            .insert(("alpha", beta.seqno()), ())
            .unwrap();
        tx.commit().unwrap();
    }
    let damage = audit_damage(&dir);
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0].file, index);
    assert!(
        damage[0]
            .reason
            .contains(&format!("lists seqno {}", beta.seqno())),
        "{}",
        damage[0].reason
    );

    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.rebuilt.is_empty(), "{:?}", report.rebuilt);
    match list(&ledger, "alpha") {
        Err(StoreError::DerivedDamaged { file, reason }) => {
            assert_eq!(file, index);
            assert!(reason.contains("in collection \"beta\""), "{reason}");
        }
        other => panic!("listing alpha: {other:?}"),
    }
    assert_eq!(damaged_file(ledger.latest_entry("alpha")), index);
    ledger.close();
    drop(ledger);

    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.index_rebuilt);
    assert_eq!(report.rebuilt[0].file, index);
    assert_eq!(list(&ledger, "alpha").unwrap(), alpha);
    ledger.close();
    drop(ledger);
    assert!(audit_damage(&dir).is_empty());
}

#[test]
fn a_level_hash_altered_with_its_checksum_fails_no_receipt_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (ledger, files) = create_ledger(&dir, config());
    append_numbered(&ledger, "levels", 600);
    ledger.close();
    drop(ledger);
    // A level-04 hash under level-08 hash 0, so the root the open checks does not read it;
    // its chunk checksum is recomputed, as a forger would.
    let (run, neighbour) = run_and_neighbour(&dir);
    let level4 = dir.join("tree/level-04.hashes");
    let chunk = ledger_store::tree::CHECK_CHUNK as usize;
    let mut bytes = fs::read(&level4).unwrap();
    bytes[run as usize * 32] ^= 0x80;
    fs::write(&level4, &bytes).unwrap();
    {
        let db = redb::Database::create(dir.join("index.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(TREE_SUMS)
            .unwrap()
            .insert((1, 0), crc32c::crc32c(&bytes[..chunk.min(bytes.len())]))
            .unwrap();
        tx.commit().unwrap();
    }
    let damage = audit_damage(&dir);
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0].file, level4);
    let leaves = format!("leaves {}..{}", 16 * run, 16 * run + 16);
    assert!(damage[0].reason.contains(&leaves), "{}", damage[0].reason);

    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.rebuilt.is_empty(), "{:?}", report.rebuilt);
    match ledger.receipt(neighbour) {
        Err(StoreError::DerivedDamaged { file, reason }) => {
            assert_eq!(file, dir.join("tree"));
            assert!(reason.contains("does not lead to the root"), "{reason}");
        }
        other => panic!("receipt of {neighbour}: {other:?}"),
    }
    // Paths that do not use the altered hash are served.
    verify_receipt_of(&ledger, TxId::new(1, 300).unwrap(), &files.service_cert_pem);
    ledger.close();
    drop(ledger);
    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.tree_rebuilt, "{report:?}");
    verify_receipt_of(&ledger, neighbour, &files.service_cert_pem);
}

/// An index written by the release before tree checksums has no `tree_checksums` table: the
/// first open rebuilds the tree files once (their checksums recorded from then on).
#[test]
fn tree_files_without_recorded_checksums_are_rebuilt_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (ledger, files) = create_ledger(&dir, config());
    let written = append_numbered(&ledger, "upgrade", 100);
    ledger.close();
    drop(ledger);
    {
        let db = redb::Database::create(dir.join("index.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        assert!(tx.delete_table(TREE_SUMS).unwrap());
        tx.commit().unwrap();
    }
    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.tree_rebuilt, "{report:?}");
    assert!(!report.index_rebuilt, "{report:?}");
    assert_eq!(report.rebuilt.len(), 1, "{:?}", report.rebuilt);
    assert_eq!(report.rebuilt[0].file, dir.join("tree/frames.idx"));
    assert!(
        report.rebuilt[0]
            .reason
            .contains("checksums were not recorded"),
        "{}",
        report.rebuilt[0].reason
    );
    assert_entries_intact(&ledger, &written);
    verify_receipt_of(&ledger, written[7].0, &files.service_cert_pem);
    ledger.close();
    drop(ledger);
    let (_, report) = reopen_ok(&dir, config());
    assert!(report.rebuilt.is_empty(), "{:?}", report.rebuilt);
    assert!(audit_damage(&dir).is_empty());
}
