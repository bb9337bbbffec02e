//! End-to-end tests of the newer ACL api-versions through the real `cledger serve` binary
//! over mTLS: application claims (2023-01-18-preview, 2026-02-23) verified with the Rust
//! receipt verifier, the user lists of 2024-01-26-preview on, and tags (2024-12-09-preview).
//! Shapes per version are covered in depth in-process (`crates/ledger-http/tests/versions.rs`).

mod support;

use ledger_core::claims::ApplicationClaim;
use ledger_core::receipt::{Receipt, verify_receipt};
use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const CLAIMS: &str = "2023-01-18-preview";
const TAGS: &str = "2024-12-09-preview";
const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

async fn post(api: &Api, query: &str, contents: &str) -> String {
    let resp = api
        .raw(
            Method::POST,
            &format!("/app/transactions?{query}"),
            Some("application/json"),
            Some(serde_json::to_vec(&json!({"contents": contents})).unwrap()),
        )
        .await;
    resp.txid().to_string()
}

async fn get(api: &Api, path_and_query: &str) -> Value {
    api.raw(Method::GET, path_and_query, None, None).await.ok()
}

#[tokio::test]
async fn claims_users_and_tags_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path(), &[]);
    let admin = server.admin();
    let cert = server.service_cert_pem();

    // Application claims: recorded by the claims-capable write, shown to a claims-capable
    // receipt request, verifiable with them, and not with altered contents.
    let claimed = post(
        &admin,
        &format!("api-version={CLAIMS}&collectionId=e2e"),
        "hello claims",
    )
    .await;
    let plain = post(&admin, "api-version=2022-05-13&collectionId=e2e", "hello").await;
    let r = get(
        &admin,
        &format!("/app/transactions/{claimed}/receipt?api-version={CLAIMS}"),
    )
    .await;
    let receipt = Receipt::from_value(&r["receipt"]).unwrap();
    let claims: Vec<ApplicationClaim> =
        serde_json::from_value(r["applicationClaims"].clone()).expect("applicationClaims");
    verify_receipt(&receipt, &cert, Some(&claims)).unwrap();
    let mut altered = r["applicationClaims"].clone();
    altered[0]["ledgerEntry"]["contents"] = json!("hello claims?");
    let altered: Vec<ApplicationClaim> = serde_json::from_value(altered).unwrap();
    assert!(verify_receipt(&receipt, &cert, Some(&altered)).is_err());

    let r = get(
        &admin,
        &format!("/app/transactions/{claimed}/receipt?api-version=2022-05-13"),
    )
    .await;
    assert!(r.get("applicationClaims").is_none());
    assert_ne!(r["receipt"]["leafComponents"]["claimsDigest"], ZERO);
    let r = get(
        &admin,
        &format!("/app/transactions/{plain}/receipt?api-version={CLAIMS}"),
    )
    .await;
    assert!(r.get("applicationClaims").is_none());
    assert_eq!(r["receipt"]["leafComponents"]["claimsDigest"], ZERO);
    verify_receipt(&Receipt::from_value(&r["receipt"]).unwrap(), &cert, None).unwrap();

    // User lists.
    let r = get(&admin, "/app/users?api-version=2024-01-26-preview").await;
    assert_eq!(r["users"].as_array().unwrap().len(), 1);
    assert_eq!(r["users"][0]["assignedRole"], "Administrator");
    let r = get(&admin, &format!("/app/ledgerUsers?api-version={TAGS}")).await;
    assert_eq!(
        r["ledgerUsers"][0]["assignedRoles"],
        json!(["Administrator"])
    );

    // Tags.
    let tagged = post(
        &admin,
        &format!("api-version={TAGS}&collectionId=e2e&tags=red,blue"),
        "t",
    )
    .await;
    let r = get(
        &admin,
        &format!("/app/transactions?api-version={TAGS}&collectionId=e2e&tag=blue"),
    )
    .await;
    let entries = r["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["transactionId"], tagged);
    let r = get(
        &admin,
        &format!("/app/collections/tags?api-version={TAGS}&collectionId=e2e"),
    )
    .await;
    assert_eq!(r, json!({"tags": ["blue", "red"]}));

    server.assert_alive();
}
