//! One flipped byte at a time, in every file of a stopped ledger's data directory (keys and
//! PEM files aside): the ledger's segments, the fork guard, and the derived files
//! (`index.redb`, `tree/frames.idx`, `tree/level-LL.hashes`). For every flip, either the
//! audit fails naming the flipped file, or the open rebuilds it, or everything the ledger
//! serves (every collection list and tag list, the newest entry of each collection, the
//! collections and tags themselves, sampled entries and receipts, governance tables) is
//! identical to before — or a read answers with an error naming the flipped derived file.
//! Never a silent difference, never a panic.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::entry::tables;
use ledger_store::StoreError;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Fixed so that the flipped positions are the same on every run (CLEDGER_TEST_SEED overrides).
const FLIP_SEED: u64 = 0xB17F_11B5;
const ROUNDS: u64 = 12;
const ENTRIES_PER_ROUND: u64 = 50;

fn config() -> ledger_store::StoreConfig {
    config_with_segments(64 << 10)
}

/// A stopped ledger of ROUNDS × ENTRIES_PER_ROUND entries in three collections with tags.
fn build_ledger(dir: &Path) -> Vec<TxId> {
    let (ledger, _) = create_ledger(dir, config());
    let mut txids = Vec::new();
    for round in 0..ROUNDS {
        let written = append_numbered(&ledger, &format!("round {round}"), ENTRIES_PER_ROUND);
        txids.extend(written.into_iter().map(|(t, _)| t));
    }
    ledger.close();
    txids
}

/// One answer of the ledger: its debug rendering, or the error.
type Answer = Result<String, StoreError>;

/// Everything a client could be served, query by query, in a fixed order.
fn served(
    ledger: &ledger_store::Ledger,
    collections: &[(String, Vec<String>)],
    sample: &[TxId],
) -> Vec<(String, Answer)> {
    let mut out: Vec<(String, Answer)> = Vec::new();
    let mut ask = |name: String, answer: Answer| out.push((name, answer));
    ask("committed".into(), Ok(format!("{:?}", ledger.committed())));
    ask(
        "collections".into(),
        ledger.collections().map(|c| format!("{c:?}")),
    );
    for (collection, tags) in collections {
        ask(
            format!("tags of {collection}"),
            ledger.tags(collection).map(|t| format!("{t:?}")),
        );
        ask(
            format!("list {collection}"),
            ledger
                .entries(collection, None, 0, u64::MAX, usize::MAX)
                .map(|e| format!("{e:?}")),
        );
        ask(
            format!("latest of {collection}"),
            ledger.latest_entry(collection).map(|e| format!("{e:?}")),
        );
        for tag in tags {
            ask(
                format!("list {collection} tag {tag}"),
                ledger
                    .entries(collection, Some(tag), 0, u64::MAX, usize::MAX)
                    .map(|e| format!("{e:?}")),
            );
        }
    }
    for txid in sample {
        ask(
            format!("entry {txid}"),
            ledger.entry(*txid).map(|e| format!("{e:?}")),
        );
        ask(
            format!("receipt {txid}"),
            ledger.receipt(*txid).map(|r| {
                r.map(|b| {
                    format!(
                        "{} {:?}",
                        serde_json::to_string(&b.receipt).expect("receipts serialise"),
                        b.application_claims
                    )
                })
                .unwrap_or_default()
            }),
        );
    }
    for table in [tables::NODES, tables::SERVICE, tables::CONFIG] {
        ask(
            format!("governance {table}"),
            ledger.governance_table(table).map(|t| format!("{t:?}")),
        );
    }
    out
}

fn collections_and_tags(ledger: &ledger_store::Ledger) -> Vec<(String, Vec<String>)> {
    ledger
        .collections()
        .expect("collections")
        .into_iter()
        .map(|(c, _)| {
            let tags = ledger
                .tags(&c)
                .expect("tags")
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            (c, tags)
        })
        .collect()
}

/// Every file of the data directory the test flips bytes in, relative to it.
fn flippable_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for item in fs::read_dir(&d).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap().to_owned();
            let name = rel.to_string_lossy();
            if name.starts_with("keys/") || name.starts_with("identity/") || name.ends_with(".pem")
            {
                continue;
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Positions to flip in a file: a few anywhere, and for `index.redb` also in its header and
/// in every page that looks like a B-tree page (redb leaf pages start with 1, branch pages
/// with 2).
fn positions(rel: &Path, bytes: &[u8], rng: &mut XorShift) -> Vec<usize> {
    let len = bytes.len();
    let name = rel.to_string_lossy();
    let mut out = Vec::new();
    if len == 0 {
        return out;
    }
    let anywhere = if name.ends_with(".seg") { 3 } else { 6 };
    for _ in 0..anywhere {
        out.push(rng.range(0, len as u64) as usize);
    }
    if name == "index.redb" {
        for _ in 0..6 {
            out.push(rng.range(0, 512.min(len as u64)) as usize);
        }
        const PAGE: usize = 4096;
        for page in (PAGE..len).step_by(PAGE) {
            if matches!(bytes[page], 1 | 2) {
                // The page header (type, entry count), then somewhere in its body.
                out.push(page + rng.range(0, 8) as usize);
                out.push(page + rng.range(8, PAGE as u64) as usize);
            }
        }
    }
    if name == "tree/frames.idx" {
        // Each part of a record: offset, class, leaf bytes.
        for part in [0u64, 2, 4, 5, 6, 7] {
            let record = rng.range(1, len as u64 / 8);
            out.push((record * 8 + part) as usize);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// The open stopped, naming the flipped file.
    OpenRefused,
    /// The open rebuilt the flipped derived file; everything served is as before.
    Rebuilt,
    /// Everything served is as before; the audit failed naming the file.
    SameAuditNamed,
    /// Everything served is as before and the audit passed: the flip did not matter.
    Harmless,
    /// Some reads answered with an error naming the flipped derived file; the rest as before.
    ReadsRefused,
}

#[test]
fn flipped_bytes_in_any_file_are_caught_or_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let txids = build_ledger(&original);
    let cert = identity(&original).service_cert_pem;
    let sample: Vec<TxId> = txids.iter().step_by(23).copied().collect();

    let (ledger, _) = reopen_ok(&original, config());
    let collections = collections_and_tags(&ledger);
    assert_eq!(collections.len(), 3, "{collections:?}");
    let before = served(&ledger, &collections, &sample);
    ledger.close();
    drop(ledger);
    for (name, answer) in &before {
        assert!(
            answer.is_ok(),
            "{name} fails on the intact ledger: {answer:?}"
        );
    }
    // Reopening an intact ledger serves the same.
    audit_ok(&original, &cert);

    let mut rng = XorShift::new(test_seed(Some(FLIP_SEED)));
    let files = flippable_files(&original);
    let mut outcomes: BTreeMap<(String, Outcome), u32> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut flips = 0;
    for rel in &files {
        let bytes = fs::read(original.join(rel)).unwrap();
        for pos in positions(rel, &bytes, &mut rng) {
            flips += 1;
            let mask = rng.range(1, 256) as u8;
            let copy = tmp.path().join("flipped");
            if copy.exists() {
                fs::remove_dir_all(&copy).unwrap();
            }
            copy_dir(&original, &copy);
            let path = copy.join(rel);
            let mut flipped = bytes.clone();
            flipped[pos] ^= mask;
            fs::write(&path, &flipped).unwrap();
            let what = format!("{} byte {pos} ^ {mask:#04x}", rel.display());
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check_flip(&copy, rel, &cert, &collections, &sample, &before)
            }))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic))));
            match checked {
                Ok(outcome) => {
                    let kind = file_kind(rel);
                    *outcomes.entry((kind, outcome)).or_default() += 1;
                }
                Err(problem) => problems.push(format!("{what}: {problem}")),
            }
        }
    }
    println!("{flips} flips; outcomes by file kind: {outcomes:#?}");
    assert!(
        problems.is_empty(),
        "{} of {flips} flips went wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn file_kind(rel: &Path) -> String {
    let name = rel.to_string_lossy();
    if name.ends_with(".seg") {
        "segment".into()
    } else {
        name.into_owned()
    }
}

fn audit_ok(dir: &Path, cert: &str) {
    let secret = ledger_store::ledger_secret(dir, &ledger_store::KekSource::DataDir)
        .expect("the ledger secret loads");
    let report =
        ledger_store::audit::audit_all(dir, Some(cert), Some(&ledger_store::KeyRing::new(secret)))
            .expect("the intact ledger audits");
    let derived = report.derived.expect("the derived files were checked");
    assert_eq!(derived.damaged, vec![], "the intact ledger's derived files");
    assert!(derived.unchecked.is_empty(), "{:?}", derived.unchecked);
    assert!(derived.checked.len() >= 4, "{:?}", derived.checked);
}

/// Whether the audit of `dir` (the ledger and its derived files) fails naming `rel`
/// (relative to `dir`), and only it.
fn audit_names(dir: &Path, rel: &Path, cert: &str) -> Result<bool, String> {
    let secret = ledger_store::ledger_secret(dir, &ledger_store::KekSource::DataDir)
        .expect("the ledger secret loads");
    match ledger_store::audit::audit_all(dir, Some(cert), Some(&ledger_store::KeyRing::new(secret)))
    {
        Ok(report) => {
            let derived = report.derived.expect("the derived files were checked");
            let flipped = dir.join(rel);
            match derived.damaged.as_slice() {
                [] => Ok(false),
                [one] if one.file == flipped => Ok(true),
                other => Err(format!("the audit blames other derived files: {other:?}")),
            }
        }
        Err(failure) => {
            let named = failure
                .location
                .as_ref()
                .is_some_and(|(f, _)| f == &dir.join(rel))
                || failure.reason.contains(&*rel.to_string_lossy());
            if named {
                Ok(true)
            } else {
                Err(format!("the audit blames something else: {failure}"))
            }
        }
    }
}

fn names_file(e: &StoreError, dir: &Path, rel: &Path) -> bool {
    let text = e.to_string();
    text.contains(&*dir.join(rel).to_string_lossy()) || text.contains(&*rel.to_string_lossy())
}

fn check_flip(
    dir: &Path,
    rel: &Path,
    cert: &str,
    collections: &[(String, Vec<String>)],
    sample: &[TxId],
    before: &[(String, Answer)],
) -> Result<Outcome, String> {
    let audited = audit_names(dir, rel, cert)?;
    let (ledger, report) = match reopen(dir, config()) {
        Ok(opened) => opened,
        Err(e) if names_file(&e, dir, rel) => return Ok(Outcome::OpenRefused),
        Err(e) => return Err(format!("the open failed without naming the file: {e}")),
    };
    let after = served(&ledger, collections, sample);
    let mut refused = false;
    for ((name, was), (_, now)) in before.iter().zip(&after) {
        match now {
            Ok(now) if now == was.as_ref().unwrap() => {}
            Ok(now) => {
                return Err(format!(
                    "{name} silently differs: {}",
                    difference(was.as_ref().unwrap(), now)
                ));
            }
            Err(e) if names_file(e, dir, rel) => refused = true,
            Err(e) => return Err(format!("{name} failed without naming the file: {e}")),
        }
    }
    // The writer survived whatever it read.
    ledger
        .append(ledger_store::WriteRequest::Entry(numbered_entry(
            "after the flip",
            1,
        )))
        .map_err(|e| format!("a write after the flip failed: {e}"))?;
    ledger.close();
    let flipped = dir.join(rel);
    let rebuilt = report
        .rebuilt
        .iter()
        .any(|d| d.file == flipped || flipped.starts_with(&d.file));
    if !report.rebuilt.is_empty() && !rebuilt {
        return Err(format!(
            "the open rebuilt other files: {:?}",
            report.rebuilt
        ));
    }
    // The audit finds at least what the open finds.
    if rebuilt && !audited {
        return Err(format!(
            "the open rebuilt it ({:?}) but the audit passed",
            report.rebuilt
        ));
    }
    Ok(if rebuilt {
        Outcome::Rebuilt
    } else if refused {
        Outcome::ReadsRefused
    } else if audited {
        Outcome::SameAuditNamed
    } else {
        Outcome::Harmless
    })
}

/// Where two renderings first differ, with a little context (they are ASCII).
fn difference(was: &str, now: &str) -> String {
    let at = was
        .bytes()
        .zip(now.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(was.len().min(now.len()));
    let context = |s: &str| {
        s.get(at.saturating_sub(40)..(at + 60).min(s.len()))
            .unwrap_or("")
            .to_owned()
    };
    format!(
        "{} bytes before, {} after; at byte {at}: before …{}… after …{}…",
        was.len(),
        now.len(),
        context(was),
        context(now)
    )
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}
