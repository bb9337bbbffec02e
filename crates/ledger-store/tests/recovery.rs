//! Recovery on open: torn tails and half-created segments are cut, derived files (index, Merkle
//! tree) are rebuilt from the segments, the fork guard refuses rolled-back and forked ledgers,
//! and a ledger reopened many times keeps its seqnos and receipts.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::entry::ApplicationEntry;
use ledger_store::audit::audit;
use ledger_store::segment::{self, encode_frame, encode_segment_header};
use ledger_store::{Ledger, RecoveryReport, StoreConfig, StoreError, TxStatus};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

fn recovery_config() -> StoreConfig {
    config_with_segments(SMALL_SEGMENT)
}

/// A closed ledger over several segments in `dir`: the entries written and the service cert.
fn build_ledger(dir: &Path, rounds: u64) -> (Vec<(TxId, ApplicationEntry)>, String) {
    let (ledger, files) = create_ledger(dir, recovery_config());
    let written = (0..rounds)
        .flat_map(|r| append_numbered(&ledger, &format!("round {r}"), 20))
        .collect();
    ledger.close();
    (written, files.service_cert_pem)
}

fn last_seqno(dir: &Path) -> u64 {
    ledger_frames(dir).last().expect("frames").txid.seqno()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .expect("segment opens")
        .write_all(bytes)
        .expect("append");
}

/// Where a torn append's bytes land: in the zeros the writer preallocated after the last
/// frame, or growing a file that ends at its last frame (a segment of an older release).
#[derive(Debug, Clone, Copy)]
enum TornInto {
    Preallocated,
    Growing,
}

/// Writes `bytes` after the last frame of the segment at `path`, which ends at `data_end`.
fn write_torn_append(path: &Path, data_end: u64, bytes: &[u8], into: TornInto) {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("segment opens");
    match into {
        TornInto::Preallocated => {
            let len = file.metadata().unwrap().len();
            assert!(
                len >= data_end + bytes.len() as u64,
                "the writer preallocated {} bytes after the last frame",
                len - data_end
            );
            file.write_all_at(bytes, data_end).expect("write");
        }
        TornInto::Growing => {
            file.set_len(data_end).expect("cut to the last frame");
            append_bytes(path, bytes);
        }
    }
}

/// Reopens a damaged copy and checks that every entry and receipt survived and the committed
/// end did not move. Returns the open ledger, its recovery report and the end.
fn reopen_intact(
    dir: &Path,
    written: &[(TxId, ApplicationEntry)],
    cert: &str,
) -> (Ledger, RecoveryReport, u64) {
    let end = last_seqno_before_open(dir);
    let (ledger, report) = reopen_ok(dir, recovery_config());
    assert_eq!(
        ledger.committed().map(TxId::seqno),
        Some(end),
        "the committed end moved"
    );
    assert_eq!(report.transactions, end);
    assert_entries_intact(&ledger, written);
    for (txid, _) in written.iter().step_by(7) {
        verify_receipt_of(&ledger, *txid, cert);
    }
    (ledger, report, end)
}

/// Appends a little more after recovery, closes, and runs the audit.
fn append_close_and_audit(ledger: Ledger, end: u64, dir: &Path, cert: &str) {
    let more = append_numbered(&ledger, "after recovery", 5);
    assert!(more.iter().all(|(t, _)| t.seqno() > end));
    ledger.close();
    let audited = audit(dir, Some(cert)).unwrap_or_else(|e| panic!("audit after recovery: {e}"));
    assert_eq!(audited.unsigned_tail, 0);
    assert!(
        audited.transactions > end + more.len() as u64,
        "the new entries and a signature are audited"
    );
}

/// The frames of `before` are still at the same places in `dir`.
fn assert_frames_kept(before: &[FrameInfo], dir: &Path) {
    let after = ledger_frames(dir);
    let place = |f: &FrameInfo| {
        (
            f.txid,
            f.path.file_name().unwrap().to_owned(),
            f.offset,
            f.end,
        )
    };
    assert_eq!(
        after[..before.len()].iter().map(place).collect::<Vec<_>>(),
        before.iter().map(place).collect::<Vec<_>>()
    );
}

/// The last intact frame's seqno, ignoring damage at the very end (what recovery keeps).
fn last_seqno_before_open(dir: &Path) -> u64 {
    let mut prev = None;
    for (_, path) in segment::list_segments(&ledger_dir(dir)).unwrap() {
        let scan = segment::scan_segment(&fs::read(&path).unwrap(), prev);
        prev = scan.frames.last().map(|f| f.txid).or(prev);
    }
    prev.expect("frames").seqno()
}

#[test]
fn a_torn_final_frame_is_cut_and_everything_before_it_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (written, cert) = build_ledger(&base, 3);
    let end = last_seqno(&base);
    let frames = ledger_frames(&base);
    // A real frame for the next seqno, as the writer would have produced it.
    let donor = frames
        .iter()
        .find(|f| f.kind == ledger_core::entry::TxKind::Application)
        .unwrap();
    let mut next_frame = Vec::new();
    encode_frame(&mut next_frame, &donor.payload());
    let mut rng = XorShift::new(test_seed(Some(17)));
    let random: Vec<u8> = (0..300).map(|_| rng.next_u64() as u8).collect();

    let tails: [(&str, &[u8]); 5] = [
        ("first half of a frame", &next_frame[..next_frame.len() / 2]),
        (
            "all but the last byte of a frame",
            &next_frame[..next_frame.len() - 1],
        ),
        (
            "a frame header alone",
            &next_frame[..segment::FRAME_HEADER_LEN],
        ),
        ("part of a frame header", &next_frame[..10]),
        ("random bytes", &random),
    ];
    let intact_len = frames.last().unwrap().end;
    for (what, tail) in tails {
        for into in [TornInto::Preallocated, TornInto::Growing] {
            let what = format!("{what} {into:?}");
            let dir = tmp.path().join(what.replace(' ', "-"));
            copy_dir(&base, &dir);
            let last = segment_paths(&dir).pop().unwrap();
            write_torn_append(&last, intact_len, tail, into);

            let (ledger, report, _) = reopen_intact(&dir, &written, &cert);
            assert_eq!(
                report.truncated_tail,
                Some((last.clone(), intact_len, segment::written_len(tail))),
                "{what}"
            );
            assert_eq!(
                fs::metadata(&last).unwrap().len(),
                intact_len,
                "{what}: the tail is cut from the file"
            );
            append_close_and_audit(ledger, end, &dir, &cert);
            assert_frames_kept(&frames, &dir);
        }
    }
}

/// A crash while an append into preallocated space is being written back can leave any of its
/// sectors unwritten (zeros), with intact frames of the same append after the hole. That is a
/// torn append, cut like any other; the same append with a bit flipped instead is damage.
#[test]
fn an_append_with_a_sector_never_written_is_cut_even_with_intact_frames_after_it() {
    use std::os::unix::fs::FileExt;
    const SECTOR: usize = segment::SECTOR_BYTES;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (written, cert) = build_ledger(&base, 3);
    let end = last_seqno(&base);
    let frames = ledger_frames(&base);
    let data_end = frames.last().unwrap().end as usize;
    // The append: a first frame spanning three sectors (the one the hole is in: recovery keeps
    // nothing of the append, so its contents do not matter), then frames of real entries (the
    // scan checks a frame's form and checksum, not what it decrypts to).
    let donors: Vec<Vec<u8>> = frames
        .iter()
        .filter(|f| f.kind == ledger_core::entry::TxKind::Application)
        .take(6)
        .map(FrameInfo::payload)
        .collect();
    let mut first = donors[0].clone();
    first.resize(3 * SECTOR, 0x5a);
    let mut append = Vec::new();
    encode_frame(&mut append, &first);
    let intact_from = append.len();
    for payload in &donors[1..] {
        encode_frame(&mut append, payload);
    }
    // Offsets in the append of the sectors of the file: where its first sector ends (a whole
    // sector when the data ended on a boundary), and the whole sector after it.
    let first_boundary = (data_end + 1).next_multiple_of(SECTOR) - data_end;
    let whole_sector = first_boundary + SECTOR..first_boundary + 2 * SECTOR;
    assert!(
        whole_sector.end <= intact_from,
        "the hole is in the first frame"
    );
    let with_zeros = |range: std::ops::Range<usize>| {
        let mut bytes = append.clone();
        bytes[range].fill(0);
        bytes
    };
    let mut flipped = append.clone();
    flipped[whole_sector.start + 100] ^= 0x04;
    let cases = [
        (
            "the rest of the first sector unwritten",
            with_zeros(0..first_boundary),
            true,
        ),
        ("a whole sector unwritten", with_zeros(whole_sector), true),
        ("a bit flipped", flipped, false),
    ];
    for (what, on_disk, torn) in cases {
        let dir = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&base, &dir);
        let last = segment_paths(&dir).pop().unwrap();
        let file = OpenOptions::new().write(true).open(&last).unwrap();
        file.write_all_at(&on_disk, data_end as u64).unwrap();
        drop(file);
        let scan = segment::scan_segment(&fs::read(&last).unwrap(), None);
        assert!(scan.damage.is_some(), "{what}: the append is damaged");
        if torn {
            let (ledger, report, _) = reopen_intact(&dir, &written, &cert);
            assert_eq!(
                report.truncated_tail,
                Some((
                    last.clone(),
                    data_end as u64,
                    segment::written_len(&on_disk)
                )),
                "{what}"
            );
            append_close_and_audit(ledger, end, &dir, &cert);
            assert_frames_kept(&frames, &dir);
        } else {
            match reopen(&dir, recovery_config()) {
                Err(StoreError::Corrupt { file, offset, .. }) => {
                    assert_eq!((file, offset), (last, data_end as u64), "{what}")
                }
                Err(e) => panic!("{what}: {e}"),
                Ok(_) => panic!("{what}: opened as if the append were torn"),
            }
        }
    }
}

#[test]
fn a_segment_file_left_by_a_crash_during_its_creation_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (written, cert) = build_ledger(&base, 4);
    assert!(segment_paths(&base).len() >= 2);
    let end = last_seqno(&base);
    let frames = ledger_frames(&base);
    let header = encode_segment_header(end + 1);
    for (what, bytes) in [
        ("empty", &header[..0]),
        ("partial header", &header[..10]),
        ("header but one byte", &header[..31]),
    ] {
        let dir = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&base, &dir);
        let half_created = ledger_dir(&dir).join(segment::segment_file_name(end + 1));
        fs::write(&half_created, bytes).unwrap();

        let (ledger, report, _) = reopen_intact(&dir, &written, &cert);
        assert_eq!(
            report.truncated_tail,
            Some((half_created.clone(), 0, bytes.len() as u64)),
            "{what}"
        );
        assert!(
            !half_created.exists(),
            "{what}: the half-created segment is still there"
        );
        // The segment before it is the active one again, whole.
        assert_frames_kept(&frames, &dir);
        append_close_and_audit(ledger, end, &dir, &cert);
        assert_frames_kept(&frames, &dir);
    }

    // A complete header is a valid empty segment: kept, and the next writes go into it.
    let dir = tmp.path().join("complete-header");
    copy_dir(&base, &dir);
    let created = ledger_dir(&dir).join(segment::segment_file_name(end + 1));
    fs::write(&created, header).unwrap();
    let (ledger, report, _) = reopen_intact(&dir, &written, &cert);
    assert_eq!(report.truncated_tail, None);
    append_close_and_audit(ledger, end, &dir, &cert);
    let frames = ledger_frames(&dir);
    assert_eq!(
        frames
            .iter()
            .find(|f| f.txid.seqno() == end + 1)
            .map(|f| &f.path),
        Some(&created)
    );
}

/// `create` makes the keys, then the first segment (file, header, fsync), then commits the
/// genesis transaction. A crash before the genesis is durable leaves no ledger: opening must
/// say so, not panic, and not start a ledger without a service identity.
#[test]
fn an_interrupted_create_is_not_opened_as_a_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (ledger, _) = create_ledger(&base, recovery_config());
    ledger.close();
    drop(ledger);
    for (what, kept) in [
        ("no segment header", 0),
        ("a segment header only", segment::SEGMENT_HEADER_LEN),
    ] {
        let dir = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&base, &dir);
        let first = segment_paths(&dir).remove(0);
        OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .set_len(kept as u64)
            .unwrap();
        for derived in ["index.redb", "fork-guard"] {
            fs::remove_file(dir.join(derived)).unwrap();
        }
        fs::remove_dir_all(dir.join("tree")).unwrap();

        let opened =
            std::panic::catch_unwind(|| reopen(&dir, recovery_config()).map(|(_, report)| report));
        match opened {
            Ok(Err(StoreError::NotALedger(_))) => {}
            Ok(other) => panic!("{what}: expected NotALedger, got {other:?}"),
            Err(_) => panic!("{what}: Ledger::open panicked"),
        }
    }
}

/// What a client can see of a ledger: entries, counts, and receipts (as JSON).
#[derive(Debug, PartialEq)]
struct Visible {
    collections: Vec<(String, u64)>,
    tags: BTreeMap<String, Vec<(String, u64)>>,
    entries: BTreeMap<String, Vec<(TxId, String)>>,
    receipts: Vec<String>,
}

fn visible(ledger: &Ledger, written: &[(TxId, ApplicationEntry)]) -> Visible {
    let collections = ledger.collections().unwrap();
    let names: Vec<String> = collections.iter().map(|(c, _)| c.clone()).collect();
    Visible {
        tags: names
            .iter()
            .map(|c| (c.clone(), ledger.tags(c).unwrap()))
            .collect(),
        entries: names
            .iter()
            .map(|c| {
                let records = ledger.entries(c, None, 0, u64::MAX, usize::MAX).unwrap();
                (
                    c.clone(),
                    records
                        .into_iter()
                        .map(|r| (r.txid, r.entry.contents))
                        .collect(),
                )
            })
            .collect(),
        receipts: written
            .iter()
            .map(|(t, _)| receipt_json(ledger, *t))
            .collect(),
        collections,
    }
}

#[test]
fn derived_files_are_rebuilt_from_the_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (written, cert) = build_ledger(&base, 4);
    let before = {
        let (ledger, report) = reopen_ok(&base, recovery_config());
        assert_eq!(
            (report.index_replayed, report.tree_replayed),
            (0, 0),
            "a clean close leaves nothing to replay"
        );
        visible(&ledger, &written)
    };
    assert_eq!(
        before.collections.iter().map(|(_, n)| n).sum::<u64>(),
        written.len() as u64
    );

    type Damage = fn(&Path);
    let cases: [(&str, Damage, bool, bool); 4] = [
        (
            "index deleted",
            |d| fs::remove_file(d.join("index.redb")).unwrap(),
            true,
            false,
        ),
        (
            "tree deleted",
            |d| fs::remove_dir_all(d.join("tree")).unwrap(),
            false,
            true,
        ),
        (
            "frame records truncated",
            |d| truncate_to_half(&d.join("tree/frames.idx")),
            false,
            true,
        ),
        (
            "level 4 truncated",
            |d| truncate_to_half(&d.join("tree/level-04.hashes")),
            false,
            true,
        ),
    ];
    for (what, damage, index_rebuilt, tree_rebuilt) in cases {
        let dir = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&base, &dir);
        damage(&dir);
        let (ledger, report) = reopen_ok(&dir, recovery_config());
        println!("{what}: {report:?}");
        assert_eq!(
            (report.index_rebuilt, report.tree_rebuilt),
            (index_rebuilt, tree_rebuilt),
            "{what}"
        );
        if index_rebuilt {
            assert_eq!(report.index_replayed, report.transactions, "{what}");
        }
        if tree_rebuilt {
            assert_eq!(report.tree_replayed, report.transactions, "{what}");
        }
        assert_eq!(
            visible(&ledger, &written),
            before,
            "{what}: the rebuilt ledger shows something else"
        );
        for (txid, _) in &written {
            verify_receipt_of(&ledger, *txid, &cert);
        }
        ledger.close();
        audit(&dir, Some(&cert)).unwrap_or_else(|e| panic!("{what}: audit: {e}"));
    }
}

fn truncate_to_half(path: &Path) {
    let len = fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len();
    assert!(len >= 64, "{} is too short to cut", path.display());
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2 + 5)
        .unwrap();
}

/// The seqno the fork guard file records.
fn guarded_seqno(guard: &Path) -> u64 {
    let text = fs::read_to_string(guard).expect("fork guard reads");
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("fork guard is `<seqno> <root>`")
}

/// A ledger `node` and a copy `backup` taken after its first writes; `node` then writes more.
/// Returns (backup end, node's guarded signature seqno).
fn ledger_with_older_backup(node: &Path, backup: &Path, config: StoreConfig) -> (u64, u64) {
    let (ledger, _) = create_ledger(node, config.clone());
    append_numbered(&ledger, "before backup", 10);
    ledger.close();
    drop(ledger);
    copy_dir(node, backup);
    let (ledger, _) = reopen_ok(node, config);
    append_numbered(&ledger, "after backup", 10);
    let signed = ledger.committed().unwrap().seqno();
    ledger.close();
    (last_seqno(backup), signed)
}

#[test]
fn restoring_old_segments_under_a_newer_fork_guard_is_refused_as_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, backup) = (tmp.path().join("node"), tmp.path().join("backup"));
    let (backup_end, signed) = ledger_with_older_backup(&node, &backup, recovery_config());
    assert_eq!(guarded_seqno(&node.join("fork-guard")), signed);

    replace_dir(&ledger_dir(&backup), &ledger_dir(&node));
    match reopen(&node, recovery_config()) {
        Err(StoreError::RolledBack { signed: s, end, .. }) => {
            assert_eq!((s, end), (signed, backup_end))
        }
        other => panic!("expected RolledBack, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn restoring_the_whole_data_dir_is_refused_only_with_the_fork_guard_outside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let guard = tmp.path().join("elsewhere").join("node-fork-guard");
    fs::create_dir_all(guard.parent().unwrap()).unwrap();
    let outside = StoreConfig {
        fork_guard_path: Some(guard.clone()),
        ..recovery_config()
    };
    let (node, backup) = (tmp.path().join("node"), tmp.path().join("backup"));
    let (backup_end, signed) = ledger_with_older_backup(&node, &backup, outside.clone());
    assert_eq!(guarded_seqno(&guard), signed);
    assert!(
        !node.join("fork-guard").exists(),
        "the guard lives only where configured"
    );

    replace_dir(&backup, &node);
    match reopen(&node, outside) {
        Err(StoreError::RolledBack {
            signed: s,
            end,
            guard: g,
        }) => {
            assert_eq!((s, end, g), (signed, backup_end, guard));
        }
        other => panic!("expected RolledBack, got {:?}", other.map(|(_, r)| r)),
    }

    // With the default guard inside the data dir, a whole-dir restore brings its old guard
    // back and the rollback goes unnoticed: the reason for `fork_guard_path`.
    let (inside_node, inside_backup) = (
        tmp.path().join("inside-node"),
        tmp.path().join("inside-backup"),
    );
    ledger_with_older_backup(&inside_node, &inside_backup, recovery_config());
    replace_dir(&inside_backup, &inside_node);
    let (ledger, report) = reopen_ok(&inside_node, recovery_config());
    assert_eq!(report.transactions, last_seqno(&inside_backup));
    ledger.close();
}

/// A restored backup that went on to write different transactions has, at the seqno this node
/// once signed, a different root. The store must not sign there again.
///
/// The writer also refuses to sign a root that differs from the guard at the guarded seqno,
/// but that check cannot be reached through `open`: a guard beyond the ledger's end is
/// `RolledBack`, so a ledger that opens already reaches the guarded seqno, and its root there
/// is checked against the guarded one (`Forked`); the writer only ever signs beyond it.
#[test]
fn a_ledger_that_diverged_at_a_guarded_seqno_is_refused_as_forked() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, backup) = (tmp.path().join("node"), tmp.path().join("backup"));
    let (_, signed) = ledger_with_older_backup(&node, &backup, recovery_config());

    // The backup, opened with its own (older) guard, writes other transactions past `signed`.
    let fork = tmp.path().join("fork");
    copy_dir(&backup, &fork);
    let (ledger, _) = reopen_ok(&fork, recovery_config());
    let mut round = 0;
    while ledger.committed().unwrap().seqno() < signed {
        append_numbered(&ledger, &format!("divergent {round}"), 7);
        round += 1;
    }
    ledger.close();
    drop(ledger);

    // Given this node's guard, it is refused at the guarded seqno.
    fs::copy(node.join("fork-guard"), fork.join("fork-guard")).unwrap();
    match reopen(&fork, recovery_config()) {
        Err(StoreError::Forked { seqno, .. }) => assert_eq!(seqno, signed),
        other => panic!("expected Forked, got {:?}", other.map(|(_, r)| r)),
    }

    // Before the divergent writes reached the guarded seqno, the same guard says RolledBack.
    let short = tmp.path().join("short");
    copy_dir(&backup, &short);
    fs::copy(node.join("fork-guard"), short.join("fork-guard")).unwrap();
    assert!(matches!(
        reopen(&short, recovery_config()),
        Err(StoreError::RolledBack { .. })
    ));
}

#[test]
fn reopening_many_times_keeps_seqnos_dense_and_receipts_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let (ledger, files) = create_ledger(&dir, recovery_config());
    ledger.close();
    drop(ledger);
    let mut receipts: Vec<(TxId, String)> = Vec::new();
    let mut written = Vec::new();
    for round in 0..10u64 {
        let (ledger, report) = reopen_ok(&dir, recovery_config());
        assert_eq!(report.truncated_tail, None, "round {round}");
        assert_eq!(
            (report.index_replayed, report.tree_replayed),
            (0, 0),
            "round {round}: nothing to replay"
        );
        assert!(
            !report.index_rebuilt && !report.tree_rebuilt,
            "round {round}"
        );

        // Everything from earlier rounds is unchanged, byte for byte.
        assert_entries_intact(&ledger, &written);
        for (txid, json) in &receipts {
            assert_eq!(
                &receipt_json(&ledger, *txid),
                json,
                "round {round}: receipt of {txid} changed"
            );
        }
        let end = ledger.committed().unwrap().seqno();
        for seqno in 1..=end {
            assert_eq!(
                ledger.status(TxId::new(1, seqno).unwrap()),
                TxStatus::Committed,
                "round {round}: seqno {seqno}"
            );
        }
        assert_eq!(
            ledger.status(TxId::new(1, end + 1).unwrap()),
            TxStatus::Unknown
        );

        let new = if round % 2 == 0 {
            append_numbered(&ledger, &format!("round {round}"), 15)
        } else {
            append_each(&ledger, &format!("round {round}"), 4)
        };
        assert_eq!(
            new.iter().map(|(t, _)| t.seqno()).min(),
            Some(end + 1),
            "round {round}: seqnos continue"
        );
        for (txid, _) in &new {
            verify_receipt_of(&ledger, *txid, &files.service_cert_pem);
            receipts.push((*txid, receipt_json(&ledger, *txid)));
        }
        written.extend(new);
        ledger.close();
    }
    let frames = ledger_frames(&dir);
    assert_eq!(
        frames.iter().map(|f| f.txid.seqno()).collect::<Vec<_>>(),
        (1..=frames.len() as u64).collect::<Vec<_>>()
    );
    let report = audit(&dir, Some(&files.service_cert_pem)).expect("audit passes");
    assert_eq!(report.entries, written.len() as u64);
}
