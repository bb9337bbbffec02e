//! Idempotent writes through the real server: a retried `POST /app/transactions` with the same
//! `Idempotency-Key` gets the original transaction, across concurrent retries, a graceful
//! restart and a SIGKILL; keys are per caller; a key reused for another write is refused;
//! `x-ms-client-request-id` counts only when configured; the retention window ends.

mod support;

use serde_json::json;
use support::*;

const KEY: &str = "Idempotency-Key";

async fn write(api: &Api, key: &str, contents: &str) -> Resp {
    api.post_json_with(
        "/app/transactions",
        &[(KEY, key)],
        &json!({ "contents": contents }),
    )
    .await
}

/// How many entries of the default collection have exactly these contents.
async fn copies(api: &Api, contents: &str) -> usize {
    let mut count = 0;
    let mut next = Some(versioned("/app/transactions"));
    while let Some(path) = next {
        let page = api.raw(reqwest::Method::GET, &path, None, None).await.ok();
        count += page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["contents"] == contents)
            .count();
        next = page["nextLink"].as_str().map(|l| {
            let at = l.find("/app/").expect("relative link");
            l[at..].to_owned()
        });
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_get_the_original_transaction_even_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let admin = server.admin();

    let first = write(&admin, "order-1", "pay 10").await.expect(200);
    let txid = first.txid();
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = write(&admin, "order-1", "pay 10").await.expect(200);
    assert_eq!(again.txid(), txid);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.json(), json!({"collectionId": "subledger:0"}));

    // The same key for a different write is refused, and nothing is written.
    write(&admin, "order-1", "pay 1000")
        .await
        .error_code(409, "IdempotencyKeyReused");
    assert_eq!(copies(&admin, "pay 1000").await, 0);
    // Keys that cannot be a key are refused.
    write(&admin, "has space", "x")
        .await
        .error_code(400, "InvalidInput");

    // Concurrent retries of one write: one entry, one transaction id for all.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let admin = admin.clone();
            tokio::spawn(async move { write(&admin, "order-2", "pay 20").await.expect(200).txid() })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert!(ids.iter().all(|t| *t == ids[0]), "{ids:?}");
    assert_eq!(copies(&admin, "pay 20").await, 1);

    // Keys belong to their caller: another user's "order-1" is a new write.
    let (other_pem, other_id) = new_user("other");
    admin
        .patch_user(&other_id, &json!({ "assignedRole": "Contributor" }))
        .await
        .expect(200);
    let other = server.client(Some(&other_pem));
    let theirs = write(&other, "order-1", "pay 10").await.expect(200);
    assert_ne!(theirs.txid(), txid);

    // Graceful restart: still the original.
    server.terminate();
    let server = Server::start(dir.path(), &[]);
    let admin = server.admin();
    assert_eq!(
        write(&admin, "order-1", "pay 10").await.expect(200).txid(),
        txid
    );

    // SIGKILL right after the acknowledgement, then the retry.
    let acked = write(&admin, "order-3", "pay 30").await.expect(200).txid();
    drop(server); // kill -9
    let server = Server::start(dir.path(), &[]);
    let admin = server.admin();
    let retried = write(&admin, "order-3", "pay 30").await.expect(200);
    assert_eq!(retried.txid(), acked);
    assert_eq!(copies(&admin, "pay 30").await, 1);
    assert_eq!(copies(&admin, "pay 10").await, 2, "one per caller");

    // x-ms-client-request-id is an ordinary header unless configured.
    let rid = [("x-ms-client-request-id", "sdk-req-1")];
    let body = json!({"contents": "sdk write"});
    let a = admin
        .post_json_with("/app/transactions", &rid, &body)
        .await
        .expect(200)
        .txid();
    let b = admin
        .post_json_with("/app/transactions", &rid, &body)
        .await
        .expect(200)
        .txid();
    assert_ne!(a, b);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_request_id_when_configured_and_the_retention_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cledger.toml");
    std::fs::write(
        &config,
        "idempotency_client_request_id = true\nidempotency_retention_secs = 2\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let config_arg = config.display().to_string();
    let server = Server::start(&data, &["--config", &config_arg]);
    let admin = server.admin();
    let rid = [("x-ms-client-request-id", "sdk-req-1")];
    let body = json!({"contents": "sdk write"});
    let a = admin
        .post_json_with("/app/transactions", &rid, &body)
        .await
        .expect(200)
        .txid();
    let b = admin
        .post_json_with("/app/transactions", &rid, &body)
        .await
        .expect(200);
    assert_eq!(b.txid(), a);
    assert_eq!(
        b.header("x-ms-client-request-id").as_deref(),
        Some("sdk-req-1")
    );
    // After the retention window the key is free again: the same request is a new write.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let c = admin
        .post_json_with("/app/transactions", &rid, &body)
        .await
        .expect(200)
        .txid();
    assert_ne!(c, a);
    assert_eq!(copies(&admin, "sdk write").await, 2);
    server.terminate();
}
