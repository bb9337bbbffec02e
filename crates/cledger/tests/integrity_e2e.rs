//! End-to-end: a derived file damaged under a running `cledger serve`. A read that needs it is
//! answered 503 `StorageUnavailable` naming `tree/frames.idx` (not "ledger is corrupt"),
//! `/readyz` says `degraded`; with the server stopped `cledger audit` names the file and says
//! it can be rebuilt (exit 1), `cledger audit --repair` rebuilds it (exit 0), and the restarted
//! server serves the entry again.

mod support;

use reqwest::Method;
use std::os::unix::fs::FileExt;
use std::process::Command;
use support::*;

fn flip(path: &std::path::Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x04], offset).unwrap();
}

fn audit(data_dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(binary())
        .args(["audit", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_damaged_frame_record_is_a_503_naming_it_then_audited_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let admin = server.admin();
    let mut written = Vec::new();
    for i in 0..20 {
        written.push(admin.write_ok(None, &format!("entry {i}")).await);
    }
    let target = written[3].clone();
    let seqno = txid_of(&target).seqno();
    // The offset bytes of its frame record: the page cache the server reads from.
    let records = data.join("tree/frames.idx");
    flip(&records, seqno * 8 + 1);

    let resp = admin.get(&format!("/app/transactions/{target}")).await;
    let body = resp.json();
    assert_eq!(resp.status.as_u16(), 503, "{body}");
    assert_eq!(body["error"]["code"], "StorageUnavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("tree/frames.idx"), "{message}");
    assert!(message.contains("the ledger itself is intact"), "{message}");
    assert!(!message.contains("corrupt"), "{message}");
    assert!(!message.contains(&*data.to_string_lossy()), "{message}");
    let ready = admin.raw(Method::GET, "/readyz", None, None).await;
    let ready_body = ready.json();
    assert_eq!(ready.status.as_u16(), 503, "{ready_body}");
    assert_eq!(ready_body["status"], "degraded", "{ready_body}");
    assert!(
        ready_body["reason"]
            .as_str()
            .unwrap()
            .contains("tree/frames.idx"),
        "{ready_body}"
    );
    // Writes go on.
    admin
        .write_ok(None, "written while a derived file is damaged")
        .await;
    assert!(server.terminate().success());

    // Stopped: the audit names the file, the ledger verifies, and says how to rebuild.
    let (ok, text) = audit(&data, &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("ledger verified"), "{text}");
    assert!(text.contains("DERIVED FILE DAMAGED"), "{text}");
    assert!(text.contains("frames.idx"), "{text}");
    assert!(text.contains("--repair"), "{text}");
    let (ok, text) = audit(&data, &["--repair"]);
    assert!(ok, "{text}");
    assert!(text.contains("rebuilt index.redb and tree/"), "{text}");
    assert!(text.contains("derived files verified"), "{text}");

    let server = Server::start(&data, &[]);
    let admin = server.admin();
    let got = admin.get(&format!("/app/transactions/{target}")).await.ok();
    assert_eq!(got["entry"]["contents"], "entry 3", "{got}");
    let ready = admin.raw(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.text);
    // --repair refuses to run beside a server.
    let (ok, text) = audit(&data, &["--repair"]);
    assert!(!ok, "{text}");
    assert!(text.contains("stop it before --repair"), "{text}");
    assert!(server.terminate().success());
}
