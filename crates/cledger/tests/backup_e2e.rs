//! `cledger backup` while the server writes: the copy verifies, serves every write acknowledged
//! before the backup started, keeps key files private, and the source is unaffected.

mod support;

use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_busy_ledger_restores_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("live");
    let dest = dir.path().join("copy");
    let server = Server::start(&source, &[]);
    let admin = server.admin();

    // Writers that keep going while the backup runs.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (admin, acked, stop) = (admin.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let contents = format!("writer {w} entry {n} {}", "x".repeat(n % 300));
                let resp = admin
                    .post_json("/app/transactions", &json!({"contents": contents}))
                    .await
                    .expect(200);
                acked
                    .lock()
                    .unwrap()
                    .push((resp.txid().to_string(), contents));
                n += 1;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let before: Vec<(String, String)> = acked.lock().unwrap().clone();
    assert!(
        before.len() > 20,
        "too few writes before the backup: {}",
        before.len()
    );
    let run = Command::new(binary())
        .args(["backup", "--data-dir"])
        .arg(&source)
        .arg("--to")
        .arg(&dest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("the copy verifies"), "{stdout}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // A second backup into the same place is refused and changes nothing.
    let again = Command::new(binary())
        .args(["backup", "--data-dir"])
        .arg(&source)
        .arg("--to")
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // Secrets stay private in the copy; derived files are rebuilt, not copied.
    for key in [
        "keys/kek",
        "keys/ledger_secret",
        "identity/node_key.pem",
        "admin.pem",
    ] {
        let mode = std::fs::metadata(dest.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    assert!(!dest.join("index.redb").exists() && !dest.join("cledger.lock").exists());
    let total = acked.lock().unwrap().len();
    server.terminate();

    // The copy serves everything acknowledged before the backup, with verifying receipts.
    let restored = Server::start(&dest, &[]);
    assert_eq!(
        restored.service_cert_pem(),
        read_text(&source.join("service_cert.pem"))
    );
    let api = restored.admin();
    for (txid, contents) in &before {
        let body = api.get(&format!("/app/transactions/{txid}")).await.ok();
        assert_eq!(body["entry"]["contents"], contents.as_str(), "{txid}");
    }
    let (last, _) = before.last().unwrap();
    let receipt = api
        .get(&format!("/app/transactions/{last}/receipt"))
        .await
        .ok();
    let receipt: ledger_core::receipt::ReceiptResponse = serde_json::from_value(receipt).unwrap();
    ledger_core::receipt::verify_receipt(
        receipt.receipt.as_ref().unwrap(),
        &restored.service_cert_pem(),
        None,
    )
    .unwrap();
    restored.terminate();
    let audit = Command::new(binary())
        .args(["audit", "--data-dir"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
    eprintln!(
        "backup_e2e: {} writes acknowledged before the backup restored; {total} acknowledged in all",
        before.len()
    );
}
