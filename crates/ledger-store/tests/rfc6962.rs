//! The persisted RFC 6962 tree (`tree/rfc6962/level-LL.hashes`), the tree C2SP checkpoints and
//! witnesses use: its roots and proofs equal those of an in-memory RFC 6962 tree over the same
//! leaves (the CCF leaf of each seqno, leaf 0 the 32 zero bytes) after writes and reopens; its
//! files, truncated or damaged, are detected, never served and re-derived; a ledger written
//! before them builds them on open; and the offline audit checks them.

mod common;

use common::*;
use ledger_core::entry::EntryView;
use ledger_core::hash::Hash32;
use ledger_core::merkle::{self, Rfc6962, TreeHashing, rfc6962};
use ledger_store::audit::audit_all;
use ledger_store::segment;
use ledger_store::tree::RFC6962_SUMS_BASE;
use ledger_store::{KekSource, ledger_secret};
use ledger_store::{Ledger, StoreConfig, StoreError};
use redb::{ReadableTable, TableDefinition};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

const TREE_SUMS: TableDefinition<(u32, u64), u32> = TableDefinition::new("tree_checksums");

fn config() -> StoreConfig {
    config_with_segments(SMALL_SEGMENT)
}

/// The ledger's CCF leaves, recomputed from its segments, leaf 0 first.
fn ledger_leaves(dir: &Path) -> Vec<Hash32> {
    let mut leaves = vec![Hash32::ZERO];
    let mut prev = None;
    for (_, path) in segment::list_segments(&ledger_dir(dir)).unwrap() {
        let bytes = fs::read(&path).unwrap();
        let scan = segment::scan_segment(&bytes, prev);
        for frame in scan.frames {
            let payload = &bytes[frame.payload_offset() as usize..frame.end() as usize];
            leaves.push(
                EntryView::parse(payload, frame.txid.seqno())
                    .unwrap()
                    .leaf(),
            );
            prev = Some(frame.txid);
        }
    }
    leaves
}

/// The RFC 6962 tree of `leaves`, in memory.
fn memory_tree(leaves: &[Hash32]) -> rfc6962::MemoryTree {
    let mut tree = rfc6962::MemoryTree::default();
    for leaf in leaves {
        tree.push(Rfc6962::leaf(leaf));
    }
    tree
}

/// Checks the persisted tree against the in-memory one at many committed sizes.
fn assert_matches_memory(ledger: &Ledger, dir: &Path) {
    let committed = ledger.committed().unwrap().seqno() + 1;
    let leaves = ledger_leaves(dir);
    let memory = memory_tree(&leaves[..committed as usize]);
    let mut ccf = merkle::MemoryTree::new();
    leaves[..committed as usize]
        .iter()
        .for_each(|l| ccf.push(*l));
    let sizes: Vec<u64> = [
        1,
        2,
        15,
        16,
        17,
        31,
        255,
        256,
        257,
        committed - 1,
        committed,
    ]
    .into_iter()
    .chain((1..committed).step_by(37))
    .filter(|s| (1..=committed).contains(s))
    .collect();
    for &size in &sizes {
        let root = ledger.rfc6962_root_at(size).unwrap();
        assert_eq!(
            root,
            rfc6962::root(&memory, size).unwrap(),
            "root at {size}"
        );
        // The leaves are the ledger's: the CCF tree over them is the one the ledger signs.
        assert_eq!(
            ledger.root_at(size).unwrap(),
            merkle::root(&ccf, size).unwrap()
        );
        assert_ne!(root, ledger.root_at(size).unwrap());
        for &old in sizes.iter().filter(|&&o| o <= size).step_by(3) {
            let proof = ledger.rfc6962_consistency_proof(old, size).unwrap();
            assert_eq!(
                proof,
                rfc6962::consistency_proof(&memory, old, size).unwrap(),
                "{old} -> {size}"
            );
            let old_root = ledger.rfc6962_root_at(old).unwrap();
            assert_eq!(
                rfc6962::verify_consistency(old, size, old_root, root, &proof),
                Ok(())
            );
        }
        let seqno = size / 2;
        let path = ledger.rfc6962_inclusion_proof(seqno, size).unwrap();
        assert_eq!(
            rfc6962::verify_inclusion(
                Rfc6962::leaf(&leaves[seqno as usize]),
                seqno,
                size,
                &path,
                root
            ),
            Ok(())
        );
    }
    assert!(ledger.rfc6962_root_at(committed + 1).is_err());
    assert!(ledger.rfc6962_consistency_proof(1, committed + 1).is_err());
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

fn flip_byte(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).unwrap();
    file.write_all_at(&[b[0] ^ 0x01], offset).unwrap();
}

fn truncate_to_half(path: &Path) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
}

/// A closed ledger of 600 entries (several level-04 chunks, and a level-08 file).
fn written_ledger(dir: &Path) {
    let (ledger, _) = create_ledger(dir, config());
    for round in 0..6 {
        append_numbered(&ledger, &format!("round {round}"), 100);
    }
    ledger.close();
}

#[test]
fn the_persisted_tree_equals_an_in_memory_tree_across_writes_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (ledger, _) = create_ledger(&dir, config());
    append_numbered(&ledger, "first", 40);
    assert_matches_memory(&ledger, &dir);
    append_numbered(&ledger, "second", 300);
    assert_matches_memory(&ledger, &dir);
    ledger.close();
    drop(ledger);
    for name in ["level-04.hashes", "level-08.hashes"] {
        assert!(dir.join("tree/rfc6962").join(name).exists(), "{name}");
    }

    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.rebuilt.is_empty(), "{:?}", report.rebuilt);
    assert_matches_memory(&ledger, &dir);
    append_numbered(&ledger, "after reopen", 50);
    assert_matches_memory(&ledger, &dir);
    ledger.close();
    drop(ledger);
    assert!(audit_damage(&dir).is_empty());
}

#[test]
fn damaged_rfc6962_files_are_found_on_open_and_rederived() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    written_ledger(&base);
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 4] = [
        (
            "level 4 truncated",
            |d| truncate_to_half(&d.join("tree/rfc6962/level-04.hashes")),
            "tree/rfc6962/level-04.hashes",
        ),
        (
            "level 4 flipped",
            |d| flip_byte(&d.join("tree/rfc6962/level-04.hashes"), 700),
            "tree/rfc6962/level-04.hashes",
        ),
        (
            "level 8 deleted",
            |d| fs::remove_file(d.join("tree/rfc6962/level-08.hashes")).unwrap(),
            "tree/rfc6962/level-08.hashes",
        ),
        (
            "level 8 extended by a torn write",
            |d| {
                let path = d.join("tree/rfc6962/level-08.hashes");
                let file = OpenOptions::new().append(true).open(path).unwrap();
                file.write_all_at(&[0xab; 17], 0).unwrap();
            },
            "",
        ),
    ];
    for (what, damage, named) in cases {
        let dir = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&base, &dir);
        damage(&dir);
        if !named.is_empty() {
            let found = audit_damage(&dir);
            assert!(
                found.iter().any(|d| d.file == dir.join(named)),
                "{what}: the audit names {named}: {found:?}"
            );
        }
        let (ledger, report) = reopen_ok(&dir, config());
        if named.is_empty() {
            // Beyond the durable size: cut back at open, nothing to rebuild.
            assert!(report.rebuilt.is_empty(), "{what}: {:?}", report.rebuilt);
        } else {
            assert!(report.tree_rebuilt, "{what}");
            assert_eq!(report.rebuilt[0].file, dir.join(named), "{what}");
        }
        assert_matches_memory(&ledger, &dir);
        ledger.close();
        drop(ledger);
        assert!(audit_damage(&dir).is_empty(), "{what}");
    }
}

#[test]
fn a_file_damaged_while_open_is_never_served_and_rebuilt_at_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (ledger, _) = create_ledger(&dir, config());
    append_numbered(&ledger, "open", 200);
    let good = ledger.rfc6962_root_at(40).unwrap();
    // Subtree [0, 16) of the RFC 6962 tree, which the root of 40 leaves is folded from.
    let level4 = dir.join("tree/rfc6962/level-04.hashes");
    flip_byte(&level4, 3);
    match ledger.rfc6962_root_at(40) {
        Err(StoreError::DerivedDamaged { file, .. }) => assert_eq!(file, level4),
        other => panic!("a damaged level file answered {other:?}"),
    }
    assert!(ledger.rfc6962_consistency_proof(40, 100).is_err());
    assert!(ledger.derived_damage().iter().any(|d| d.file == level4));
    ledger.close();
    drop(ledger);

    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.tree_rebuilt);
    assert_eq!(report.rebuilt[0].file, level4);
    assert_eq!(ledger.rfc6962_root_at(40).unwrap(), good);
    assert_matches_memory(&ledger, &dir);
}

/// A ledger written before the RFC 6962 tree: no `tree/rfc6962/` and no checksum rows for
/// it. Opening it builds the tree from the segments, says so, and serves it.
#[test]
fn a_ledger_without_the_rfc6962_tree_builds_it_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    written_ledger(&dir);
    fs::remove_dir_all(dir.join("tree/rfc6962")).unwrap();
    {
        let db = redb::Database::create(dir.join("index.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut table = tx.open_table(TREE_SUMS).unwrap();
            let ours: Vec<(u32, u64)> = table
                .range((RFC6962_SUMS_BASE, 0)..)
                .unwrap()
                .map(|row| row.unwrap().0.value())
                .collect();
            assert!(
                !ours.is_empty(),
                "checkpoints record the RFC 6962 checksums"
            );
            for key in ours {
                table.remove(key).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let found = audit_damage(&dir);
    assert!(
        found
            .iter()
            .any(|d| d.file == dir.join("tree/rfc6962/level-04.hashes")),
        "{found:?}"
    );

    let (ledger, report) = reopen_ok(&dir, config());
    assert!(report.tree_rebuilt);
    let rebuilt = &report.rebuilt[0];
    assert_eq!(rebuilt.file, dir.join("tree/rfc6962/level-04.hashes"));
    assert!(
        rebuilt.reason.contains("without the RFC 6962 tree"),
        "{}",
        rebuilt.reason
    );
    assert_matches_memory(&ledger, &dir);
    ledger.close();
    drop(ledger);
    assert!(audit_damage(&dir).is_empty());
    let (_, report) = reopen_ok(&dir, config());
    assert!(report.rebuilt.is_empty(), "{:?}", report.rebuilt);
}
