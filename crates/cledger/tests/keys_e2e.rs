//! A ledger whose data key was rotated many times (ledger secret rotations recorded in the
//! ledger, FORMAT.md §5.1) is served by `cledger serve` as any other: every entry and list
//! reads back over HTTPS, receipts verify, writes continue, a restart changes nothing, and
//! `cledger audit` passes and counts the rotations.
//!
//! The server keeps the default budget (2^24 seals per key), so the rotations are made by
//! writing into its data directory with the store directly and a budget of 30, between runs.

mod support;

use ledger_core::entry::ApplicationEntry;
use ledger_core::signing::EcSigningKey;
use ledger_identity::files::NodeFiles;
use ledger_store::{Ledger, NodeIdentity, StoreConfig, WriteRequest};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use support::*;

const BUDGET: u64 = 30;

/// Writes `count` entries into the stopped ledger of `dir` with a budget of `BUDGET` seals
/// per key, in groups (so rotations fall inside batches); returns (txid, collection, contents)
/// and the number of key versions afterwards.
fn write_with_tiny_budget(dir: &Path, count: usize) -> (Vec<(String, String, String)>, usize) {
    let files = NodeFiles::load(dir).expect("identity files");
    let node = NodeIdentity {
        signing_key: EcSigningKey::from_pkcs8_pem(&files.node_key_pem).unwrap(),
        cert_pem: files.node_cert_pem.clone(),
        service_key: EcSigningKey::from_pkcs8_pem(&files.service_key_pem).unwrap(),
    };
    let config = StoreConfig {
        key_rotation_every: BUDGET,
        ..StoreConfig::default()
    };
    let (ledger, _) = Ledger::open(dir, config, node).expect("the ledger opens");
    let mut written = Vec::new();
    for group in (0..count).collect::<Vec<_>>().chunks(40) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut pending = Vec::new();
        for i in group {
            let collection = ["subledger:0", "keys-a", "keys-b"][i % 3];
            let contents = format!("rotated {i} {}", "r".repeat(i * 13 % 200));
            let entry = ApplicationEntry {
                collection_id: collection.into(),
                contents: contents.clone(),
                tags: Vec::new(),
                claims_key: None,
                idempotency: None,
                kv_writes: Vec::new(),
            };
            let tx = tx.clone();
            ledger
                .submit(
                    WriteRequest::Entry(entry),
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                )
                .expect("submitted");
            pending.push((collection.to_owned(), contents));
        }
        drop(tx);
        let mut txids: Vec<_> = rx.iter().map(|r| r.expect("committed")).collect();
        // Completions arrive in seqno order, which is submission order.
        txids.sort_by_key(|t| t.seqno());
        for (txid, (collection, contents)) in txids.into_iter().zip(pending) {
            written.push((txid.to_string(), collection, contents));
        }
    }
    let versions = ledger.key_versions().len();
    ledger.close();
    (written, versions)
}

/// Runs `cledger ARGS…` (no CLEDGER_* variables) and returns its stdout; it must succeed.
fn run_ok(args: &[&str], dir: &Path) -> String {
    let mut command = Command::new(binary());
    command.args(args).arg("--data-dir").arg(dir);
    clear_cledger_env(&mut command);
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cledger {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn audit_json(dir: &Path) -> Value {
    let stdout = run_ok(&["--json", "audit"], dir);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Every written entry by txid, every collection listed in full, and some receipts.
async fn check_served(server: &Server, written: &[(String, String, String)]) {
    let api = server.admin();
    let cert = server.service_cert_pem();
    let mut by_collection: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (i, (txid, collection, contents)) in written.iter().enumerate() {
        let body = api
            .get(&format!(
                "/app/transactions/{txid}?collectionId={}",
                enc(collection)
            ))
            .await
            .ok();
        assert_eq!(body["entry"]["contents"], contents.as_str(), "{txid}");
        by_collection.entry(collection).or_default().push(txid);
        if i % 9 == 0 {
            verify_receipt_of(&api, txid, &cert).await;
        }
    }
    for (collection, txids) in by_collection {
        let (entries, _) = api
            .list_all(&format!(
                "/app/transactions?collectionId={}",
                enc(collection)
            ))
            .await;
        let listed: Vec<&str> = entries
            .iter()
            .map(|e| e["transactionId"].as_str().unwrap())
            .collect();
        assert_eq!(listed, txids, "collection {collection}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_with_many_key_rotations_is_served_audited_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir, &[]);
    let mut written = Vec::new();
    for i in 0..12 {
        let collection = ["subledger:0", "keys-a", "keys-b"][i % 3];
        let contents = format!("served before {i}");
        let txid = server.admin().write_ok(Some(collection), &contents).await;
        written.push((txid, collection.to_owned(), contents));
    }
    server.terminate();
    assert_eq!(audit_json(&dir)["keyRotations"], 0);

    let (rotated, versions) = write_with_tiny_budget(&dir, 300);
    written.extend(rotated);
    assert!(versions > 300 / BUDGET as usize, "{versions} key versions");
    let audited = audit_json(&dir);
    assert_eq!(audited["ok"], true);
    assert_eq!(audited["keyRotations"], versions as u64 - 1);
    assert_eq!(audited["unsignedTail"], 0);
    // The local commands read with the key of each entry's seqno too.
    for (txid, collection, contents) in written.iter().skip(12).step_by(37) {
        let got: Value = serde_json::from_str(&run_ok(&["local", "get", txid], &dir)).unwrap();
        assert_eq!(got["contents"], contents.as_str(), "{txid}");
        assert_eq!(got["collectionId"], collection.as_str(), "{txid}");
        let receipt: Value =
            serde_json::from_str(&run_ok(&["local", "receipt", txid], &dir)).unwrap();
        let receipt = ledger_core::receipt::Receipt::from_value(&receipt["receipt"]).unwrap();
        let cert = std::fs::read_to_string(dir.join("service_cert.pem")).unwrap();
        ledger_core::receipt::verify_receipt(&receipt, &cert, None)
            .unwrap_or_else(|e| panic!("receipt of {txid}: {e}"));
    }

    // Served: every entry and list, receipts; writes go on (under the newest key).
    let server = Server::start(&dir, &[]);
    check_served(&server, &written).await;
    for i in 0..12 {
        let collection = ["subledger:0", "keys-a", "keys-b"][i % 3];
        let contents = format!("served after {i}");
        let txid = server.admin().write_ok(Some(collection), &contents).await;
        written.push((txid, collection.to_owned(), contents));
    }
    server.terminate();

    let server = Server::start(&dir, &[]);
    check_served(&server, &written).await;
    server.terminate();
    let audited = audit_json(&dir);
    assert_eq!(audited["keyRotations"], versions as u64 - 1);
    assert_eq!(audited["entries"], written.len() as u64);
}
