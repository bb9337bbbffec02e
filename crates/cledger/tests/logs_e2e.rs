//! The operator's view of `cledger serve`: JSON log lines with request ids, the access log of
//! refused callers, and no secret in any log.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::*;

#[tokio::test]
async fn json_logs_name_refused_callers_and_carry_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--log-format", "json", "--log-level", "info"]);
    let admin = server.admin();
    admin
        .post_json("/app/transactions", &json!({"contents": "logged"}))
        .await
        .expect(200);

    // A certificate the ledger does not know: 403, logged with its fingerprint.
    let (stranger_pem, stranger_id) = new_user("stranger");
    let stranger = server.client(Some(&stranger_pem));
    let refused = stranger.get("/app/transactions/current").await;
    let request_id = refused
        .header("x-ms-request-id")
        .expect("request id header");
    refused.error_code(403, "NotAllowed");
    // No credentials at all: 401.
    server
        .client(None)
        .get("/app/collections")
        .await
        .error_code(401, "InvalidAuthenticationInfo");

    // Log lines are written as they happen; give the reader thread a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stderr = server.output.stderr();
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refusals: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "cledger::access")
        .collect();
    assert_eq!(refusals.len(), 2, "{stderr}");
    let forbidden = refusals
        .iter()
        .find(|l| l["status"] == 403)
        .unwrap_or_else(|| panic!("no 403 line: {stderr}"));
    assert_eq!(forbidden["level"], "WARN");
    assert_eq!(forbidden["code"], "NotAllowed");
    assert_eq!(forbidden["path"], "/app/transactions/current");
    assert!(
        forbidden["caller"]
            .as_str()
            .unwrap()
            .starts_with(&format!("cert:{stranger_id}@127.0.0.1")),
        "{forbidden}"
    );
    assert_eq!(forbidden["request_id"], request_id.as_str(), "{forbidden}");
    let unauthenticated = refusals.iter().find(|l| l["status"] == 401).unwrap();
    assert_eq!(unauthenticated["code"], "InvalidAuthenticationInfo");

    // Successful requests are not logged at info level, and no key material ever is.
    assert!(!stderr.contains("\"status\":200"), "{stderr}");
    for secret in [
        "PRIVATE KEY",
        read_text(&dir.path().join("keys/kek")).trim(),
    ] {
        assert!(!stderr.contains(secret), "the log shows a secret");
    }
    server.terminate();
}
