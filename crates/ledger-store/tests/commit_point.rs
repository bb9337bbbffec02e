//! The commit point: "durable here" and "committed" are two moments. A follower takes a
//! primary's encoded transactions unchanged, and nothing of them — entries, lists, counts,
//! governance (users and roles), receipts — is visible until `commit_through` commits them,
//! always at a signature. Bad input to a follower is refused and writes nothing.

mod common;

use common::*;
use ledger_core::TxId;
use ledger_core::entry::{ApplicationEntry, TableWrite, tables};
use ledger_store::audit::audit;
use ledger_store::{
    AppendError, FollowerRefusal, Ledger, Role, StoreConfig, TxStatus, WriteRequest,
};
use std::path::Path;

fn follower_config() -> StoreConfig {
    StoreConfig {
        role: Role::Replica,
        ..StoreConfig::default()
    }
}

fn open_follower(dir: &Path) -> Ledger {
    reopen(dir, follower_config())
        .unwrap_or_else(|e| panic!("follower opens: {e}"))
        .0
}

fn user_write(user: &str, role: &str) -> WriteRequest {
    WriteRequest::Governance(vec![TableWrite {
        table: tables::USERS.into(),
        key: user.into(),
        value: Some(format!(r#"{{"assignedRole":"{role}"}}"#).into_bytes()),
    }])
}

fn entry_in(collection: &str, i: u64) -> ApplicationEntry {
    ApplicationEntry {
        collection_id: collection.into(),
        contents: format!("replicated #{i}"),
        tags: vec!["t".into()],
        claims_key: None,
        idempotency: None,
        kv_writes: Vec::new(),
    }
}

/// A primary with some history, and a follower holding a copy of it (same keys).
struct Pair {
    _tmp: tempfile::TempDir,
    primary_dir: std::path::PathBuf,
    follower_dir: std::path::PathBuf,
    service_cert: String,
}

fn pair() -> Pair {
    let tmp = tempfile::tempdir().expect("tempdir");
    let primary_dir = tmp.path().join("primary");
    let follower_dir = tmp.path().join("follower");
    let files = ledger_and_copy(&primary_dir, &follower_dir, 4);
    Pair {
        _tmp: tmp,
        primary_dir,
        follower_dir,
        service_cert: files.service_cert_pem,
    }
}

#[test]
fn follower_shows_nothing_until_commit_through_a_signature() {
    let p = pair();
    let (primary, _) = reopen_ok(&p.primary_dir, StoreConfig::default());
    let follower = open_follower(&p.follower_dir);
    let start = follower.committed().expect("follower has history");
    assert_eq!(start, primary.committed().expect("primary has history"));

    // The primary commits a role change and tagged entries in a new collection.
    let user_txid = primary
        .append(user_write("alice", "Reader"))
        .expect("commits");
    let written: Vec<(TxId, ApplicationEntry)> = (0..3)
        .map(|i| {
            let e = entry_in("replicated", i);
            (
                primary
                    .append(WriteRequest::Entry(e.clone()))
                    .expect("commits"),
                e,
            )
        })
        .collect();
    let txs = transactions_after(&primary, start.seqno());
    let last = txs.last().expect("new transactions").0;

    // Durable on the follower, not committed: nothing of it can be seen.
    let durable = follower
        .append_encoded(txs.clone())
        .expect("follower appends");
    assert_eq!(durable, Some(last));
    assert_eq!(follower.committed(), Some(start));
    assert_eq!(follower.status(user_txid), TxStatus::Pending);
    assert_eq!(
        follower.governance(tables::USERS, "alice").expect("reads"),
        None
    );
    for (txid, _) in &written {
        assert_eq!(follower.status(*txid), TxStatus::Pending);
        assert!(follower.entry(*txid).expect("reads").is_none());
        assert!(follower.receipt(*txid).expect("reads").is_none());
    }
    assert!(
        follower
            .entries("replicated", None, 1, u64::MAX, 100)
            .expect("lists")
            .is_empty()
    );
    assert!(
        follower
            .latest_entry("replicated")
            .expect("reads")
            .is_none()
    );
    assert!(
        !follower
            .collections()
            .expect("lists")
            .iter()
            .any(|(c, _)| c == "replicated"),
        "an uncommitted collection is counted"
    );
    assert!(!follower.has_tag("replicated", "t").expect("reads"));

    // A commit point before the first new signature commits nothing new.
    let first_signature = signature_txids(&p.follower_dir)
        .into_iter()
        .find(|t| t.seqno() > start.seqno())
        .expect("a signature was replicated");
    assert_eq!(
        follower.commit_through(first_signature.seqno() - 1),
        Ok(Some(start))
    );
    assert_eq!(
        follower.governance(tables::USERS, "alice").expect("reads"),
        None
    );

    // Through the last signature: everything is visible, and the same as on the primary.
    assert_eq!(follower.commit_through(last.seqno()), Ok(Some(last)));
    assert_eq!(follower.committed(), Some(last));
    assert_eq!(
        follower.governance(tables::USERS, "alice").expect("reads"),
        primary.governance(tables::USERS, "alice").expect("reads")
    );
    assert_entries_intact(&follower, &written);
    assert_eq!(
        follower
            .entries("replicated", Some("t"), 1, u64::MAX, 100)
            .expect("lists"),
        primary
            .entries("replicated", Some("t"), 1, u64::MAX, 100)
            .expect("lists")
    );
    assert_eq!(
        follower.collections().expect("lists"),
        primary.collections().expect("lists")
    );
    for (txid, _) in &written {
        assert_eq!(
            receipt_json(&follower, *txid),
            receipt_json(&primary, *txid)
        );
        verify_receipt_of(&follower, *txid, &p.service_cert);
    }

    // Writes go to the primary.
    assert_eq!(
        follower.append(WriteRequest::Entry(entry_in("x", 9))),
        Err(AppendError::NotPrimary)
    );
    // And a standalone node takes no primary's bytes.
    assert_eq!(
        primary.append_encoded(Vec::new()),
        Err(AppendError::Refused(FollowerRefusal::NotFollower))
    );
    assert_eq!(
        primary.commit_through(1),
        Err(AppendError::Refused(FollowerRefusal::NotFollower))
    );

    // The follower holds the primary's ledger, byte for byte.
    assert_eq!(
        transactions_after(&follower, 0),
        transactions_after(&primary, 0)
    );
    follower.close();
    drop(follower);
    audit(&p.follower_dir, Some(&p.service_cert)).unwrap_or_else(|e| panic!("audit: {e}"));
    let follower = open_follower(&p.follower_dir);
    assert_eq!(follower.committed(), Some(last));
    assert_entries_intact(&follower, &written);
}

#[test]
fn an_unsigned_tail_is_indexed_only_once_a_signature_commits_it() {
    let p = pair();
    let (primary, _) = reopen_ok(&p.primary_dir, StoreConfig::default());
    let follower = open_follower(&p.follower_dir);
    let start = follower.committed().expect("history").seqno();
    let user_txid = primary
        .append(user_write("bob", "Administrator"))
        .expect("commits");
    let mut txs = transactions_after(&primary, start);
    // Everything but the signature that covers it: durable, never committable as it is.
    assert_eq!(
        txs.pop().map(|(t, _)| t.seqno()),
        Some(user_txid.seqno() + 1)
    );
    follower.append_encoded(txs).expect("appends");
    assert_eq!(
        follower
            .commit_through(user_txid.seqno())
            .expect("no signature"),
        Some(TxId::new(1, start).expect(">= 1"))
    );
    assert_eq!(
        follower.governance(tables::USERS, "bob").expect("reads"),
        None
    );
    follower.close();
    drop(follower);

    // Reopened, recovery does not index the unsigned tail either...
    let follower = open_follower(&p.follower_dir);
    assert_eq!(follower.status(user_txid), TxStatus::Pending);
    assert_eq!(
        follower.governance(tables::USERS, "bob").expect("reads"),
        None
    );
    follower.close();
    drop(follower);

    // ...until a standalone node signs it at open, which commits it.
    let (standalone, report) = reopen_ok(&p.follower_dir, StoreConfig::default());
    assert_eq!(report.last_signature.map(TxId::seqno), Some(start));
    assert_eq!(
        standalone.wait_committed(user_txid, std::time::Duration::from_secs(10)),
        TxStatus::Committed
    );
    assert!(
        standalone
            .governance(tables::USERS, "bob")
            .expect("reads")
            .is_some()
    );
}

#[test]
fn a_follower_refuses_bad_input_and_writes_nothing() {
    let p = pair();
    let (primary, _) = reopen_ok(&p.primary_dir, StoreConfig::default());
    let follower = open_follower(&p.follower_dir);
    let start = follower.committed().expect("history");
    let entry_txid = primary
        .append(WriteRequest::Entry(entry_in("c", 1)))
        .expect("commits");
    let user_txid = primary
        .append(user_write("carol", "Contributor"))
        .expect("commits");
    let good = transactions_after(&primary, start.seqno());

    let refused = |txs: Vec<(TxId, Vec<u8>)>| match follower.append_encoded(txs) {
        Err(AppendError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // A gap.
    assert!(matches!(
        refused(good[1..].to_vec()),
        FollowerRefusal::OutOfSequence { .. }
    ));
    // A txid that is not what the bytes say (another view).
    let mut renamed = good.clone();
    renamed[0].0 = TxId::new(2, renamed[0].0.seqno()).expect(">= 1");
    assert!(matches!(
        refused(renamed),
        FollowerRefusal::Malformed { .. }
    ));
    // A sealed entry altered in transit: its private section no longer opens.
    let mut altered = good.clone();
    let i = altered
        .iter()
        .position(|(t, _)| *t == entry_txid)
        .expect("sent");
    let n = altered[i].1.len();
    altered[i].1[n - 1] ^= 1;
    assert!(matches!(
        refused(altered),
        FollowerRefusal::Malformed { .. }
    ));
    // A public governance write altered: it decodes, but the signature after it no longer
    // signs this tree.
    let mut forged = good.clone();
    let i = forged
        .iter()
        .position(|(t, _)| *t == user_txid)
        .expect("sent");
    let bytes = &mut forged[i].1;
    let at = bytes
        .windows(b"Contributor".len())
        .position(|w| w == b"Contributor")
        .expect("role in the public section");
    bytes[at..at + 11].copy_from_slice(b"Administrat");
    assert!(matches!(
        refused(forged),
        FollowerRefusal::RootMismatch { .. }
    ));
    // Empty or oversized frames.
    let mut empty = good.clone();
    empty[0].1.clear();
    assert!(matches!(refused(empty), FollowerRefusal::Malformed { .. }));
    // A commit point beyond what is durable.
    let beyond = good.last().expect("sent").0.seqno();
    assert_eq!(
        follower.commit_through(beyond),
        Err(AppendError::Refused(FollowerRefusal::BeyondDurable {
            seqno: beyond,
            durable: start.seqno()
        }))
    );

    // Nothing of any of that was written; the real transactions still go in.
    assert_eq!(follower.status(entry_txid), TxStatus::Unknown);
    let durable = follower.append_encoded(good.clone()).expect("appends");
    assert_eq!(durable, Some(good.last().expect("sent").0));
    assert_eq!(
        follower.commit_through(beyond),
        Ok(Some(good.last().expect("sent").0))
    );
    assert!(follower.entry(entry_txid).expect("reads").is_some());
    follower.close();
    audit(&p.follower_dir, Some(&p.service_cert)).unwrap_or_else(|e| panic!("audit: {e}"));
}

#[test]
fn a_follower_cuts_an_uncommitted_suffix_and_takes_another_primarys() {
    let p = pair();
    let small = config_with_segments(SMALL_SEGMENT);
    // A second primary from the same history: the fork a new primary writes after a view
    // change, over the seqnos the old one did not get committed.
    let other_dir = p.primary_dir.with_file_name("other");
    copy_dir(&p.primary_dir, &other_dir);
    let (primary, _) = reopen_ok(&p.primary_dir, small.clone());
    let (other, _) = reopen_ok(&other_dir, small.clone());
    let follower = reopen(
        &p.follower_dir,
        StoreConfig {
            role: Role::Replica,
            ..small
        },
    )
    .expect("follower opens")
    .0;
    let start = follower.committed().expect("history");
    let segments_before = segment_paths(&p.follower_dir).len();

    // The old primary's suffix spans several small segments, then is never committed.
    let old_written = append_numbered(&primary, "old", 120);
    let admin = primary
        .append(user_write("mallory", "Administrator"))
        .expect("commits");
    // In batches, as a primary replicates its group commits (a segment fills between them).
    for batch in transactions_after(&primary, start.seqno()).chunks(10) {
        follower.append_encoded(batch.to_vec()).expect("appends");
    }
    assert!(segment_paths(&p.follower_dir).len() > segments_before + 1);
    assert_eq!(
        follower.truncate_after(start.seqno() - 1),
        Err(AppendError::Refused(FollowerRefusal::BelowCommitted {
            seqno: start.seqno() - 1,
            committed: start.seqno()
        }))
    );
    assert_eq!(follower.truncate_after(start.seqno()), Ok(Some(start)));
    assert_eq!(segment_paths(&p.follower_dir).len(), segments_before);
    assert_eq!(follower.status(admin), TxStatus::Unknown);
    for (txid, _) in &old_written {
        assert_eq!(follower.status(*txid), TxStatus::Unknown);
    }

    // The new primary's transactions take those seqnos and commit.
    let new_written = append_numbered(&other, "new", 30);
    let new = transactions_after(&other, start.seqno());
    let last = new.last().expect("new transactions").0;
    assert_eq!(follower.append_encoded(new), Ok(Some(last)));
    assert_eq!(follower.commit_through(last.seqno()), Ok(Some(last)));
    assert_entries_intact(&follower, &new_written);
    assert_eq!(
        follower
            .governance(tables::USERS, "mallory")
            .expect("reads"),
        None
    );
    assert_eq!(
        follower
            .entries("alpha", None, 1, u64::MAX, 1000)
            .expect("lists"),
        other
            .entries("alpha", None, 1, u64::MAX, 1000)
            .expect("lists")
    );
    for (txid, _) in new_written.iter().step_by(7) {
        assert_eq!(receipt_json(&follower, *txid), receipt_json(&other, *txid));
    }
    assert_eq!(
        transactions_after(&follower, 0),
        transactions_after(&other, 0)
    );
    follower.close();
    drop(follower);
    audit(&p.follower_dir, Some(&p.service_cert)).unwrap_or_else(|e| panic!("audit: {e}"));
    let follower = open_follower(&p.follower_dir);
    assert_eq!(follower.committed(), Some(last));
    assert_entries_intact(&follower, &new_written);
}

/// A replica that stops with durable, signed transactions consensus never committed (an old
/// primary killed before its last batch reached a majority) must not commit them when it
/// opens: they may be the suffix a new primary cuts. It commits again only what it recorded
/// as committed (the fork guard, the index); consensus commits the rest, or cuts it.
#[test]
fn a_reopened_replica_commits_only_what_it_recorded_as_committed() {
    let p = pair();
    let (primary, _) = reopen_ok(&p.primary_dir, StoreConfig::default());
    let follower = open_follower(&p.follower_dir);
    let start = follower.committed().expect("history");

    // Two batches, each ending at a signature: consensus commits the first only.
    let first_written = append_numbered(&primary, "first", 5);
    let first = transactions_after(&primary, start.seqno());
    let first_end = first.last().expect("new transactions").0;
    follower.append_encoded(first).expect("appends");
    assert_eq!(
        follower.commit_through(first_end.seqno()),
        Ok(Some(first_end))
    );
    // The next primary holds what was committed, and not what follows.
    primary.close();
    drop(primary);
    let other_dir = p.primary_dir.with_file_name("other");
    copy_dir(&p.primary_dir, &other_dir);
    let (primary, _) = reopen_ok(&p.primary_dir, StoreConfig::default());
    let unconfirmed = append_numbered(&primary, "unconfirmed", 5);
    let suffix = transactions_after(&primary, first_end.seqno());
    let suffix_end = suffix.last().expect("new transactions").0;
    follower.append_encoded(suffix).expect("appends");
    assert!(
        signature_txids(&p.follower_dir).contains(&suffix_end),
        "the suffix ends at a durable signature"
    );
    follower.close();
    drop(follower);

    // Reopened: the signed suffix is durable but not committed, and nothing of it shows.
    let follower = open_follower(&p.follower_dir);
    assert_eq!(follower.committed(), Some(first_end));
    assert_eq!(follower.durable(), Some(suffix_end));
    assert_entries_intact(&follower, &first_written);
    for (txid, _) in &unconfirmed {
        assert_eq!(follower.status(*txid), TxStatus::Pending);
        assert!(follower.entry(*txid).expect("reads").is_none());
    }
    follower.close();
    drop(follower);

    // The same with the index lost: the fork guard alone says how far it was committed.
    std::fs::remove_file(p.follower_dir.join("index.redb")).expect("index removed");
    let follower = open_follower(&p.follower_dir);
    assert_eq!(follower.committed(), Some(first_end));
    for (txid, _) in &unconfirmed {
        assert_eq!(follower.status(*txid), TxStatus::Pending);
    }

    // A new primary's log does not hold the suffix: it is cut, and the new one commits.
    assert_eq!(
        follower.truncate_after(first_end.seqno() - 1),
        Err(AppendError::Refused(FollowerRefusal::BelowCommitted {
            seqno: first_end.seqno() - 1,
            committed: first_end.seqno()
        }))
    );
    let (other, _) = reopen_ok(&other_dir, StoreConfig::default());
    assert_eq!(other.committed(), Some(first_end));
    assert_eq!(
        follower.truncate_after(first_end.seqno()),
        Ok(Some(first_end))
    );
    for (txid, _) in &unconfirmed {
        assert_eq!(follower.status(*txid), TxStatus::Unknown);
    }
    let newer = append_numbered(&other, "newer", 5);
    let new = transactions_after(&other, first_end.seqno());
    let last = new.last().expect("new transactions").0;
    follower.append_encoded(new).expect("appends");
    assert_eq!(follower.commit_through(last.seqno()), Ok(Some(last)));
    assert_entries_intact(&follower, &newer);
    follower.close();
    drop(follower);
    audit(&p.follower_dir, Some(&p.service_cert)).unwrap_or_else(|e| panic!("audit: {e}"));
    let follower = open_follower(&p.follower_dir);
    assert_eq!(follower.committed(), Some(last));
    assert_entries_intact(&follower, &newer);
}
