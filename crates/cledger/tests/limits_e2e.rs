//! The store's limits through every way of writing, with the real binary: `cledger local fill`
//! and `cledger local append` (straight to the store) refuse an entry, collection id or tag set
//! beyond the store's limits with a clear error and a non-zero exit, write nothing, and leave a
//! ledger that opens and audits clean; `cledger import` (over HTTPS, where the server's tighter
//! limits answer first) stops at the refused line, names it, and keeps what came before.
//! Before these limits, `cledger local fill --size 70000000` was acknowledged and the ledger
//! no longer opened.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::*;

fn cledger(args: &[&str]) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clear_cledger_env(&mut command);
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = cledger(args);
    assert!(
        out.status.success(),
        "cledger {args:?}: {}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command that must fail with exit code 2 (a refused request); returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = cledger(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "cledger {args:?} should fail: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// `cledger audit --json` of a data directory (must pass); its transaction count.
fn audited_transactions(dir: &Path) -> u64 {
    let out = ok(&["audit", "--data-dir", dir.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_str(out.trim()).expect("audit --json");
    assert_eq!(report["ok"], true, "{report}");
    report["transactions"].as_u64().expect("transactions")
}

#[test]
fn local_fill_and_append_beyond_the_store_limits_fail_clearly_and_the_ledger_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    ok(&["local", "init", "--data-dir", d]);
    let first = ok(&["local", "append", "--data-dir", d, "before"]);
    let before = audited_transactions(&dir);

    // The reported case: a 70 MB entry.
    let err = refused(&[
        "local",
        "fill",
        "--data-dir",
        d,
        "--size",
        "70000000",
        "--count",
        "3",
    ]);
    assert!(
        err.contains("--size 70000000 cannot be stored")
            && err.contains("more than the 67108864 bytes a ledger entry may take")
            && err.contains("nothing was written"),
        "{err}"
    );
    // A collection id and tag sets beyond the limits (1024 bytes, 256 tags of 1024 bytes).
    let long_collection = "c".repeat(1025);
    let err = refused(&[
        "local",
        "append",
        "--data-dir",
        d,
        "--collection",
        &long_collection,
        "x",
    ]);
    assert!(
        err.contains("collection id is 1025 bytes long, 1 more than the limit of 1024 bytes")
            && err.contains("nothing was written"),
        "{err}"
    );
    let mut args = vec!["local", "append", "--data-dir", d];
    let tags: Vec<String> = (0..258).map(|i| format!("t{i}")).collect();
    for tag in &tags {
        args.extend(["--tag", tag.as_str()]);
    }
    args.push("x");
    let err = refused(&args);
    assert!(
        err.contains("258 tags, 2 more than the limit of 256 tags per entry"),
        "{err}"
    );
    let long_tag = "t".repeat(1500);
    let err = refused(&[
        "local",
        "append",
        "--data-dir",
        d,
        "--tag",
        "ok",
        "--tag",
        &long_tag,
        "x",
    ]);
    assert!(
        err.contains("tag 1 is 1500 bytes long, 476 more than the limit of 1024 bytes"),
        "{err}"
    );

    // Nothing was written, the ledger opens, and takes writes at the limits.
    assert_eq!(audited_transactions(&dir), before);
    let longest = "c".repeat(1024);
    let txid = ok(&[
        "local",
        "append",
        "--data-dir",
        d,
        "--collection",
        &longest,
        "--tag",
        &"t".repeat(1024),
        "after",
    ]);
    let got: Value =
        serde_json::from_str(ok(&["local", "get", "--data-dir", d, txid.trim()]).trim()).unwrap();
    assert_eq!(got["contents"], "after");
    assert_eq!(got["collectionId"], longest.as_str());
    let got: Value =
        serde_json::from_str(ok(&["local", "get", "--data-dir", d, first.trim()]).trim()).unwrap();
    assert_eq!(got["contents"], "before");
    ok(&[
        "local",
        "fill",
        "--data-dir",
        d,
        "--size",
        "1000",
        "--count",
        "20",
    ]);
    assert!(audited_transactions(&dir) > before + 20);
}

#[tokio::test]
async fn import_stops_at_a_refused_line_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let admin = server.admin();
    let lines = [
        json!({"contents": "one"}),
        json!({"contents": "two", "collectionId": "imported"}),
        // Over the server's entry limit (8192 bytes by default).
        json!({"contents": "x".repeat(9000)}),
        json!({"contents": "four"}),
    ];
    let input = tmp.path().join("in.jsonl");
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&input, body.join("\n") + "\n").unwrap();
    let admin_pem = data.join("admin.pem");
    let cert = data.join("service_cert.pem");
    let out = cledger(&[
        "import",
        input.to_str().unwrap(),
        "--endpoint",
        &server.base,
        "--cert",
        admin_pem.to_str().unwrap(),
        "--service-cert",
        cert.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("EntrySizeCapacityExceeded")
            && err.contains("in.jsonl:3:")
            && err.contains("2 entries before it were imported")
            && err.contains("hint: the server limits entry size"),
        "{err}"
    );
    // The lines before it are in the ledger, the refused one and the one after are not.
    let (entries, _) = admin.list_all("/app/transactions").await;
    let contents: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["contents"].as_str())
        .collect();
    assert_eq!(contents, ["one"]);
    let (imported, _) = admin
        .list_all("/app/transactions?collectionId=imported")
        .await;
    assert_eq!(imported.len(), 1);
    server.terminate();
    audited_transactions(&data);
}
