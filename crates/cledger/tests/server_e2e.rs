//! End-to-end tests of `cledger serve`: the real binary on a free loopback port, real TLS with
//! the service certificate pinned, mTLS client identities, and the ACL data plane of
//! api-version 2022-05-13 (acl-api.md §1.2–§1.5, §2.2, §7.1).
//!
//! Every test starts its own server on its own temporary data directory, so tests are
//! independent and can run in parallel. Servers are killed on drop.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::*;
use tempfile::TempDir;

fn fresh(extra: &[&str]) -> (TempDir, Server) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), extra);
    (dir, server)
}

fn entry(contents: &str, collection: &str, txid: &str) -> Value {
    json!({ "contents": contents, "collectionId": collection, "transactionId": txid })
}

async fn post_raw(api: &Api, path: &str, content_type: &str, body: &[u8]) -> Resp {
    api.raw(
        Method::POST,
        &versioned(path),
        Some(content_type),
        Some(body.to_vec()),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Every operation: status, shape, header
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_operation_status_shape_and_header() {
    let (_dir, server) = fresh(&[]);
    let admin = server.admin();
    let service_cert = server.service_cert_pem();

    // First start without --admin-cert: admin.pem (cert + key, mode 0600) and service_cert.pem.
    let admin_pem_path = server.data_dir.join("admin.pem");
    let mode = std::fs::metadata(&admin_pem_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "admin.pem mode");
    let bundle = server.admin_bundle_pem();
    assert!(
        bundle.contains("-----BEGIN CERTIFICATE-----"),
        "admin.pem holds a certificate"
    );
    assert!(
        bundle.contains("PRIVATE KEY-----"),
        "admin.pem holds a private key"
    );
    assert!(service_cert.contains("-----BEGIN CERTIFICATE-----"));

    // 2.2.1 constitution: digest = hex SHA-256 of the script.
    let body = admin.get("/app/governance/constitution").await.ok();
    let script = body["script"]
        .as_str()
        .expect("constitution.script is a string");
    assert!(!script.trim().is_empty(), "constitution script is empty");
    assert_eq!(
        body["digest"],
        hex::encode(Sha256::digest(script.as_bytes()))
    );

    // 2.2.2 members.
    let body = admin.get("/app/governance/members").await.ok();
    let members = body["members"].as_array().expect("members array");
    assert!(!members.is_empty(), "at least one consortium member");
    for member in members {
        assert!(
            member["certificate"]
                .as_str()
                .is_some_and(|c| c.contains("-----BEGIN CERTIFICATE-----")),
            "member.certificate is a PEM: {member}"
        );
        assert!(
            is_hex64(&member["id"]),
            "member.id is 64 lowercase hex: {member}"
        );
    }
    assert!(
        body.get("nextLink")
            .is_none_or(|l| l.is_null() || l.is_string())
    );

    // 2.2.3 enclave quotes: one per node, honest about the platform.
    let body = admin.get("/app/enclaveQuotes").await.ok();
    let current_node = body["currentNodeId"]
        .as_str()
        .expect("currentNodeId")
        .to_owned();
    assert!(
        is_hex64(&body["currentNodeId"]),
        "currentNodeId is 64 hex: {body}"
    );
    let quotes = body["enclaveQuotes"]
        .as_object()
        .expect("enclaveQuotes object");
    assert!(
        quotes.contains_key(&current_node),
        "the current node has a quote: {body}"
    );
    for (node, quote) in quotes {
        assert_eq!(
            quote["nodeId"],
            node.as_str(),
            "quote.nodeId matches its key"
        );
        let version = quote["quoteVersion"].as_str().expect("quoteVersion");
        assert!(
            !["OE_SGX_v1", "AMD_SEV_SNP_v1"].contains(&version)
                && !version.to_ascii_uppercase().contains("SGX")
                && !version.to_ascii_uppercase().contains("SNP"),
            "quoteVersion must not claim a TEE: {version}"
        );
        assert!(quote["raw"].is_string(), "quote.raw is a string: {quote}");
    }

    // 2.2.6 write: 200, {"collectionId"}, header = the write's txid.
    let resp = admin.write(None, "hello, ledger").await.expect(200);
    let txid = resp.txid().to_string();
    assert_eq!(resp.json(), json!({ "collectionId": DEFAULT_COLLECTION }));

    // 2.2.9 status.
    let status = admin
        .get(&format!("/app/transactions/{txid}/status"))
        .await
        .ok();
    assert!(
        ["Committed", "Pending"].contains(&status["state"].as_str().unwrap_or("")),
        "status state: {status}"
    );
    assert_eq!(status["transactionId"], txid.as_str());
    wait_committed(&admin, &txid).await;

    // 2.2.7 entry.
    let resp = admin
        .get(&format!("/app/transactions/{txid}"))
        .await
        .expect(200);
    assert!(
        resp.txid() >= txid_of(&txid),
        "read txid is at least the write's"
    );
    let body = resp.json();
    assert_eq!(body["state"], "Ready");
    assert_eq!(
        body["entry"],
        entry("hello, ledger", DEFAULT_COLLECTION, &txid)
    );

    // 2.2.7 with an explicit collectionId of the default collection.
    let body = admin
        .get(&format!(
            "/app/transactions/{txid}?collectionId={}",
            enc(DEFAULT_COLLECTION)
        ))
        .await
        .ok();
    assert_eq!(body["entry"]["contents"], "hello, ledger");

    // 2.2.8 receipt: verifies against the service certificate; nodeId = currentNodeId.
    let body = verify_receipt_of(&admin, &txid, &service_cert).await;
    assert_eq!(
        body["receipt"]["nodeId"],
        current_node.as_str(),
        "receipt nodeId"
    );
    assert!(
        body.get("applicationClaims").is_none(),
        "no applicationClaims in 2022-05-13"
    );

    // 2.2.10 current.
    let resp = admin.get("/app/transactions/current").await.expect(200);
    let header = resp.txid();
    let body = resp.json();
    assert_eq!(body["contents"], "hello, ledger");
    assert_eq!(body["collectionId"], DEFAULT_COLLECTION);
    assert!(
        is_txid(&body["transactionId"]),
        "current.transactionId: {body}"
    );
    assert!(txid_of(body["transactionId"].as_str().unwrap()) >= txid_of(&txid));
    assert!(header >= txid_of(&txid));

    // 2.2.5 list.
    let body = admin.get("/app/transactions").await.ok();
    assert_eq!(body["state"], "Ready");
    assert_eq!(
        body["entries"],
        json!([entry("hello, ledger", DEFAULT_COLLECTION, &txid)])
    );
    assert!(
        body.get("nextLink").is_none_or(|l| l.is_null() || l == ""),
        "single page"
    );

    // 2.2.4 collections.
    let body = admin.get("/app/collections").await.ok();
    let ids: Vec<&str> = body["collections"]
        .as_array()
        .expect("collections array")
        .iter()
        .map(|c| c["collectionId"].as_str().expect("collectionId string"))
        .collect();
    assert!(
        ids.contains(&DEFAULT_COLLECTION),
        "collections include subledger:0: {body}"
    );

    // 2.2.11–13 users.
    let me = user_id(&bundle);
    let body = admin.get(&format!("/app/users/{me}")).await.ok();
    assert_eq!(
        body,
        json!({ "assignedRole": "Administrator", "userId": me })
    );

    let (_pem, someone) = new_user("someone");
    let before = admin.get("/app/collections").await.expect(200).txid();
    let resp = admin
        .patch_user(&someone, &json!({ "assignedRole": "Reader" }))
        .await
        .expect(200);
    let patched_at = resp.txid();
    assert!(
        patched_at > before,
        "a user change is a transaction (header {patched_at:?} > {before:?})"
    );
    assert_eq!(
        resp.json(),
        json!({ "assignedRole": "Reader", "userId": someone })
    );
    let body = admin.get(&format!("/app/users/{someone}")).await.ok();
    assert_eq!(body, json!({ "assignedRole": "Reader", "userId": someone }));

    let resp = admin
        .delete(&format!("/app/users/{someone}"))
        .await
        .expect(204);
    assert!(
        resp.text.is_empty(),
        "DELETE 204 has an empty body: {:?}",
        resp.text
    );
    assert!(resp.txid() > patched_at, "a user deletion is a transaction");
    admin.get(&format!("/app/users/{someone}")).await.error(404);
}

// ---------------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn paging_follows_next_link_with_inclusive_bounds() {
    let (_dir, server) = fresh(&[]);
    let admin = server.admin();
    // A collection id that breaks any nextLink that is not percent-encoded.
    let odd = "page + & = ✓ ü/x?y#z";
    let mut odd_written: Vec<(String, String)> = Vec::new();
    let mut default_written: Vec<(String, String)> = Vec::new();
    for i in 0..230 {
        let contents = format!("odd entry {i}");
        let txid = admin.write_ok(Some(odd), &contents).await;
        odd_written.push((txid, contents));
        if i % 3 == 0 {
            let contents = format!("default entry {i}");
            let txid = admin.write_ok(None, &contents).await;
            default_written.push((txid, contents));
        }
    }
    let expect = |written: &[(String, String)], collection: &str| -> Vec<Value> {
        written
            .iter()
            .map(|(t, c)| entry(c, collection, t))
            .collect()
    };

    // Whole collection: several pages, in txid order, nothing from other collections.
    let (entries, pages) = admin
        .list_all(&format!("/app/transactions?collectionId={}", enc(odd)))
        .await;
    assert!(
        pages.len() >= 3,
        "230 entries need at least 3 pages, got {pages:?}"
    );
    assert_eq!(entries, expect(&odd_written, odd));

    // Default collection (no collectionId) and explicit subledger:0 agree.
    let (entries, _) = admin.list_all("/app/transactions").await;
    assert_eq!(entries, expect(&default_written, DEFAULT_COLLECTION));
    let (entries, _) = admin
        .list_all(&format!(
            "/app/transactions?collectionId={}",
            enc(DEFAULT_COLLECTION)
        ))
        .await;
    assert_eq!(entries, expect(&default_written, DEFAULT_COLLECTION));

    // Inclusive bounds across pages.
    let (from, to) = (&odd_written[10].0, &odd_written[170].0);
    let (entries, pages) = admin
        .list_all(&format!(
            "/app/transactions?collectionId={}&fromTransactionId={from}&toTransactionId={to}",
            enc(odd)
        ))
        .await;
    assert!(
        pages.len() >= 2,
        "161 entries need at least 2 pages, got {pages:?}"
    );
    assert_eq!(entries, expect(&odd_written[10..=170], odd));

    // from == to: exactly that entry.
    let one = &odd_written[42].0;
    let (entries, _) = admin
        .list_all(&format!(
            "/app/transactions?collectionId={}&fromTransactionId={one}&toTransactionId={one}",
            enc(odd)
        ))
        .await;
    assert_eq!(entries, expect(&odd_written[42..=42], odd));

    // Only a lower bound / only an upper bound.
    let (entries, _) = admin
        .list_all(&format!(
            "/app/transactions?collectionId={}&fromTransactionId={}",
            enc(odd),
            odd_written[200].0
        ))
        .await;
    assert_eq!(entries, expect(&odd_written[200..], odd));
    let (entries, _) = admin
        .list_all(&format!(
            "/app/transactions?collectionId={}&toTransactionId={}",
            enc(odd),
            odd_written[5].0
        ))
        .await;
    assert_eq!(entries, expect(&odd_written[..=5], odd));

    // Bounds that are txids of another collection's writes: the range still applies.
    let default_tx = &default_written[10].0; // written right after odd entry 30
    let (entries, _) = admin
        .list_all(&format!(
            "/app/transactions?collectionId={}&fromTransactionId={default_tx}&toTransactionId={}",
            enc(odd),
            odd_written[40].0
        ))
        .await;
    assert_eq!(entries, expect(&odd_written[31..=40], odd));

    // A range holding nothing of the collection: Ready, `entries` present and empty.
    let lo = &default_written[1].0;
    let body = admin
        .get(&format!(
            "/app/transactions?fromTransactionId={lo}&toTransactionId={lo}&collectionId={}",
            enc(odd)
        ))
        .await
        .ok();
    assert_eq!(body["state"], "Ready");
    assert_eq!(
        body["entries"],
        json!([]),
        "empty page still has entries: {body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Collections
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn collections_with_spaces_unicode_and_plus() {
    let (_dir, server) = fresh(&[]);
    let admin = server.admin();
    let ids = [
        "orders",
        "my collection",
        "événements clés ✓ 2024",
        "a+b",
        "a b", // must stay distinct from "a+b"
        "100%",
        "slash/and?query&amp=1",
        "日本語",
    ];
    let mut written = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let contents = format!("contents of {id} #{i}");
        let txid = admin.write_ok(Some(id), &contents).await;
        written.push((id, txid, contents));
    }
    admin.write_ok(None, "default").await;

    let body = admin.get("/app/collections").await.ok();
    let listed: BTreeSet<String> = body["collections"]
        .as_array()
        .expect("collections")
        .iter()
        .map(|c| c["collectionId"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.insert(DEFAULT_COLLECTION.to_owned());
    assert_eq!(listed, expected, "list collections");

    for (id, txid, contents) in &written {
        let current = admin
            .get(&format!(
                "/app/transactions/current?collectionId={}",
                enc(id)
            ))
            .await
            .ok();
        assert_eq!(current["contents"], contents.as_str(), "current of {id:?}");
        assert_eq!(current["collectionId"], **id);

        let got = admin
            .get(&format!(
                "/app/transactions/{txid}?collectionId={}",
                enc(id)
            ))
            .await
            .ok();
        assert_eq!(got["entry"], entry(contents, id, txid), "entry in {id:?}");

        let (entries, _) = admin
            .list_all(&format!("/app/transactions?collectionId={}", enc(id)))
            .await;
        assert_eq!(entries, vec![entry(contents, id, txid)], "list of {id:?}");
    }

    // A txid read in the wrong collection is not returned as if it were there.
    let (_, orders_tx, _) = &written[0];
    let resp = admin
        .get(&format!(
            "/app/transactions/{orders_tx}?collectionId={}",
            enc("my collection")
        ))
        .await;
    if resp.status.is_success() {
        let body = resp.json();
        assert!(
            body.get("entry").is_none_or(Value::is_null),
            "entry of another collection returned: {body}"
        );
    } else {
        assert!(resp.status.is_client_error(), "{}", resp.status);
    }

    // Current of a collection that does not exist: not a 2xx with made-up contents.
    let resp = admin
        .get(&format!(
            "/app/transactions/current?collectionId={}",
            enc("never written")
        ))
        .await;
    assert!(
        resp.status.is_client_error(),
        "current of an empty collection: {resp:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input: status + code, and nothing written
// ---------------------------------------------------------------------------------------------

/// (case, path, content type, body, status, exact code or None = any code)
type BadPost<'a> = (&'a str, String, &'a str, Vec<u8>, u16, Option<&'a str>);

#[tokio::test]
async fn bad_input_is_rejected_and_nothing_is_written() {
    let (_dir, mut server) = fresh(&[]);
    let admin = server.admin();
    admin.write_ok(None, "seed").await;
    admin.write_ok(Some("seeded"), "seed").await;
    let before = admin.snapshot().await;

    let too_long_ascii = "a".repeat(8193);
    let too_long_utf8 = "é".repeat(4097); // 4097 chars, 8194 bytes
    let long_collection = "c".repeat(257);
    let long_collection_utf8 = "é".repeat(129); // 258 bytes
    let escaped_too_long = format!("{{\"contents\":\"{}\"}}", "\\u00e9".repeat(4097));

    // (case, path, content type, body, status, exact code or None = any code)
    let cases: Vec<BadPost> = vec![
        (
            "contents 8193 ASCII bytes",
            "/app/transactions".into(),
            "application/json",
            serde_json::to_vec(&json!({ "contents": too_long_ascii })).unwrap(),
            400,
            Some("EntrySizeCapacityExceeded"),
        ),
        (
            "contents 4097 chars = 8194 UTF-8 bytes",
            "/app/transactions".into(),
            "application/json",
            serde_json::to_vec(&json!({ "contents": too_long_utf8 })).unwrap(),
            400,
            Some("EntrySizeCapacityExceeded"),
        ),
        (
            "contents over the limit after JSON unescaping",
            "/app/transactions".into(),
            "application/json",
            escaped_too_long.into_bytes(),
            400,
            Some("EntrySizeCapacityExceeded"),
        ),
        (
            "contents over the limit in a new collection",
            format!("/app/transactions?collectionId={}", enc("new one")),
            "application/json",
            serde_json::to_vec(&json!({ "contents": "a".repeat(9000) })).unwrap(),
            400,
            Some("EntrySizeCapacityExceeded"),
        ),
        (
            "collection id 257 bytes",
            format!("/app/transactions?collectionId={long_collection}"),
            "application/json",
            br#"{"contents":"x"}"#.to_vec(),
            400,
            Some("CollectionIdTooLong"),
        ),
        (
            "collection id 129 chars = 258 bytes",
            format!(
                "/app/transactions?collectionId={}",
                enc(&long_collection_utf8)
            ),
            "application/json",
            br#"{"contents":"x"}"#.to_vec(),
            400,
            Some("CollectionIdTooLong"),
        ),
        (
            "malformed JSON",
            "/app/transactions".into(),
            "application/json",
            br#"{"contents": "x""#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "empty body",
            "/app/transactions".into(),
            "application/json",
            Vec::new(),
            400,
            Some("InvalidInput"),
        ),
        (
            "missing contents",
            "/app/transactions".into(),
            "application/json",
            br#"{}"#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "only other fields",
            "/app/transactions".into(),
            "application/json",
            br#"{"collectionId":"x","transactionId":"1.1"}"#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "numeric contents",
            "/app/transactions".into(),
            "application/json",
            br#"{"contents": 5}"#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "null contents",
            "/app/transactions".into(),
            "application/json",
            br#"{"contents": null}"#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "array contents",
            "/app/transactions".into(),
            "application/json",
            br#"{"contents": ["a"]}"#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "object contents",
            "/app/transactions".into(),
            "application/json",
            br#"{"contents": {"a": 1}}"#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "body is a JSON string",
            "/app/transactions".into(),
            "application/json",
            br#""contents""#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "body is a JSON array",
            "/app/transactions".into(),
            "application/json",
            br#"[{"contents":"x"}]"#.to_vec(),
            400,
            Some("InvalidInput"),
        ),
        (
            "body is not UTF-8",
            "/app/transactions".into(),
            "application/json",
            b"{\"contents\":\"\xff\xfe\"}".to_vec(),
            400,
            Some("InvalidInput"),
        ),
    ];
    let mut observed = Vec::new();
    for (case, path, content_type, body, status, code) in cases {
        let resp = post_raw(&admin, &path, content_type, &body).await;
        let got = resp.clone().error(status);
        if let Some(code) = code {
            assert_eq!(got, code, "{case}: error code (body {})", resp.text);
        }
        observed.push(format!("{case}: {status} {got}"));
        let after = admin.snapshot().await;
        assert_eq!(after, before, "{case}: something was written");
    }
    eprintln!("observed error codes:\n  {}", observed.join("\n  "));

    // Unknown / missing api-version on a write: rejected, nothing written.
    admin
        .raw(
            Method::POST,
            "/app/transactions?api-version=2099-01-01",
            Some("application/json"),
            Some(br#"{"contents":"x"}"#.to_vec()),
        )
        .await
        .error_code(400, "UnsupportedApiVersion");
    admin
        .raw(
            Method::POST,
            "/app/transactions",
            Some("application/json"),
            Some(br#"{"contents":"x"}"#.to_vec()),
        )
        .await
        .error_code(400, "MissingApiVersionParameter");
    assert_eq!(
        admin.snapshot().await,
        before,
        "bad api-version write: something was written"
    );

    // Malformed transaction ids: path and query parameters.
    let bad_txids = [
        "abc",
        "1",
        "1.",
        ".5",
        "1.2.3",
        "-1.5",
        "1.-5",
        "1.x",
        "1.99999999999999999999999",
        "%20",
        "1%2E2x",
    ];
    for bad in bad_txids {
        for path in [
            format!("/app/transactions/{bad}"),
            format!("/app/transactions/{bad}/status"),
            format!("/app/transactions/{bad}/receipt"),
            format!("/app/transactions?fromTransactionId={bad}"),
            format!("/app/transactions?toTransactionId={bad}"),
        ] {
            let resp = admin.get(&path).await;
            let status = resp.status.as_u16();
            assert!(
                status == 400 || status == 404,
                "GET {path}: a malformed txid is a 400/404, got {status} {}",
                resp.text
            );
            resp.error_code(status, "InvalidTransactionId");
        }
    }

    // Body over the hard cap: 413 RequestBodyTooLarge (or at worst a closed connection).
    let huge = format!("{{\"contents\":\"{}\"}}", "a".repeat(16 << 20));
    match admin
        .try_raw(
            Method::POST,
            &versioned("/app/transactions"),
            Some("application/json"),
            Some(huge.into_bytes()),
        )
        .await
    {
        Ok(resp) => resp.error_code(413, "RequestBodyTooLarge"),
        Err(e) => {
            panic!("16 MiB body: expected 413 RequestBodyTooLarge, got a transport error: {e:?}")
        }
    }
    assert_eq!(
        admin.snapshot().await,
        before,
        "oversized body: something was written"
    );
    server.assert_alive();

    // The boundaries themselves are accepted.
    let exact = "a".repeat(8192);
    let txid = admin.write_ok(None, &exact).await;
    let got = admin.get(&format!("/app/transactions/{txid}")).await.ok();
    assert_eq!(got["entry"]["contents"], exact.as_str());
    admin.write_ok(None, &"é".repeat(4096)).await;
    let escaped_exact = format!("{{\"contents\":\"{}\"}}", "\\u00e9".repeat(4096));
    post_raw(
        &admin,
        "/app/transactions",
        "application/json",
        escaped_exact.as_bytes(),
    )
    .await
    .expect(200);
    let c256 = "c".repeat(256);
    admin.write_ok(Some(&c256), "x").await;
    let c256_utf8 = "é".repeat(128);
    admin.write_ok(Some(&c256_utf8), "x").await;
    let after = admin.snapshot().await;
    assert!(after.collections.contains(&c256) && after.collections.contains(&c256_utf8));
    // The snapshot does see writes (so the "nothing written" checks above mean something).
    assert!(after.txid != before.txid && after.default_entries == before.default_entries + 3);
    // Extra fields next to contents are ignored (collectionId/transactionId are read-only).
    let resp = post_raw(
        &admin,
        "/app/transactions",
        "application/json",
        br#"{"contents":"extra","collectionId":"elsewhere","transactionId":"9.9"}"#,
    )
    .await
    .expect(200);
    assert_eq!(resp.json(), json!({ "collectionId": DEFAULT_COLLECTION }));
    server.assert_alive();
}

#[tokio::test]
async fn max_entry_bytes_is_configurable() {
    let (_dir, server) = fresh(&["--max-entry-bytes", "100"]);
    let admin = server.admin();
    admin.write_ok(None, &"a".repeat(100)).await;
    let before = admin.snapshot().await;
    admin
        .write(None, &"a".repeat(101))
        .await
        .error_code(400, "EntrySizeCapacityExceeded");
    assert_eq!(admin.snapshot().await, before);
    drop(server);

    // The top of the range: 1 MiB.
    let (_dir, server) = fresh(&["--max-entry-bytes", "1048576"]);
    let admin = server.admin();
    let txid = admin.write_ok(None, &"b".repeat(1 << 20)).await;
    let got = admin.get(&format!("/app/transactions/{txid}")).await.ok();
    assert_eq!(
        got["entry"]["contents"].as_str().map(str::len),
        Some(1 << 20)
    );
    let before = admin.snapshot().await;
    admin
        .write(None, &"b".repeat((1 << 20) + 1))
        .await
        .error_code(400, "EntrySizeCapacityExceeded");
    assert_eq!(admin.snapshot().await, before);
    drop(server);

    // Beyond 1 MiB is refused at startup.
    let dir = tempfile::tempdir().unwrap();
    match Server::try_start(dir.path(), &["--max-entry-bytes", "2000000"]) {
        Ok(_) => panic!("--max-entry-bytes 2000000 (> 1 MiB) should be refused"),
        Err(failure) => {
            assert!(
                failure.status.is_some_and(|s| !s.success()),
                "should exit non-zero: {failure:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// api-version, 404, 405
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn api_version_rules() {
    let (_dir, server) = fresh(&[]);
    let admin = server.admin();
    admin.write_ok(None, "x").await;
    let paths = [
        "/app/transactions/current",
        "/app/transactions",
        "/app/collections",
        "/app/governance/constitution",
        "/app/governance/members",
        "/app/enclaveQuotes",
    ];
    for path in paths {
        admin
            .raw(Method::GET, path, None, None)
            .await
            .error_code(400, "MissingApiVersionParameter");
        admin
            .raw(
                Method::GET,
                &format!("{path}?api-version=2099-01-01"),
                None,
                None,
            )
            .await
            .error_code(400, "UnsupportedApiVersion");
        admin
            .raw(
                Method::GET,
                &format!("{path}?api-version=banana"),
                None,
                None,
            )
            .await
            .error_code(400, "UnsupportedApiVersion");
        let resp = admin
            .raw(Method::GET, &format!("{path}?api-version="), None, None)
            .await;
        let code = resp.error(400);
        assert!(
            ["MissingApiVersionParameter", "UnsupportedApiVersion"].contains(&code.as_str()),
            "{path}?api-version= → {code}"
        );
        admin.get(path).await.expect(200);
    }
    let me = user_id(&server.admin_bundle_pem());
    admin
        .raw(Method::GET, &format!("/app/users/{me}"), None, None)
        .await
        .error_code(400, "MissingApiVersionParameter");
    admin
        .raw(
            Method::GET,
            &format!("/app/users/{me}?api-version=2099-01-01"),
            None,
            None,
        )
        .await
        .error_code(400, "UnsupportedApiVersion");

    // Parameter order does not matter.
    let body = admin
        .raw(
            Method::GET,
            &format!(
                "/app/transactions?collectionId={}&api-version={API_VERSION}",
                enc(DEFAULT_COLLECTION)
            ),
            None,
            None,
        )
        .await
        .ok();
    assert_eq!(body["entries"].as_array().map(Vec::len), Some(1));

    // Other published versions: informational only (the contract fixes only 2022-05-13).
    for version in [
        "2022-04-20-preview",
        "2023-01-18-preview",
        "2024-01-26-preview",
        "2024-12-09-preview",
    ] {
        let resp = admin
            .raw(
                Method::GET,
                &format!("/app/transactions/current?api-version={version}"),
                None,
                None,
            )
            .await;
        eprintln!(
            "api-version {version}: {} {}",
            resp.status,
            resp.text.chars().take(120).collect::<String>()
        );
    }
}

#[tokio::test]
async fn unknown_routes_404_and_wrong_methods_405() {
    let (_dir, mut server) = fresh(&[]);
    let admin = server.admin();
    let txid = admin.write_ok(None, "x").await;
    let me = user_id(&server.admin_bundle_pem());
    for path in [
        "/app/nothing".to_owned(),
        "/nothing".to_owned(),
        "/app".to_owned(),
        "/".to_owned(),
        format!("/app/transactions/{txid}/nothing"),
        format!("/app/transactions/{txid}/receipt/extra"),
        "/app/governance".to_owned(),
        "/app/users".to_owned(),
        format!("/app/users/{me}/extra"),
    ] {
        admin.get(&path).await.error(404);
    }
    let wrong: [(Method, String); 9] = [
        (Method::PUT, "/app/transactions".into()),
        (Method::DELETE, "/app/transactions".into()),
        (Method::DELETE, "/app/transactions/current".into()),
        (Method::POST, format!("/app/transactions/{txid}")),
        (Method::POST, format!("/app/transactions/{txid}/status")),
        (Method::PATCH, "/app/collections".into()),
        (Method::POST, "/app/governance/constitution".into()),
        (Method::DELETE, "/app/enclaveQuotes".into()),
        (Method::PUT, format!("/app/users/{me}")),
    ];
    let before = admin.snapshot().await;
    for (method, path) in wrong {
        let resp = admin
            .raw(
                method,
                &versioned(&path),
                Some("application/json"),
                Some(br#"{"contents":"x"}"#.to_vec()),
            )
            .await;
        assert!(
            resp.header("allow").is_some(),
            "405 without an Allow header: {resp:?}"
        );
        resp.error(405);
    }
    assert_eq!(admin.snapshot().await, before);
    server.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Authentication, roles, users
// ---------------------------------------------------------------------------------------------

/// Every read operation a Reader may call, for one client; asserts 200 on each.
async fn reads_succeed(api: &Api, txid: &str, service_cert: &str) {
    api.get("/app/transactions/current").await.expect(200);
    api.get("/app/transactions").await.expect(200);
    api.get(&format!("/app/transactions/{txid}"))
        .await
        .expect(200);
    api.get(&format!("/app/transactions/{txid}/status"))
        .await
        .expect(200);
    verify_receipt_of(api, txid, service_cert).await;
    api.get("/app/collections").await.expect(200);
    api.get("/app/governance/constitution").await.expect(200);
    api.get("/app/governance/members").await.expect(200);
    api.get("/app/enclaveQuotes").await.expect(200);
}

/// Every data-plane operation is refused with `status`/`code` for this client.
async fn everything_refused(api: &Api, txid: &str, any_user: &str, status: u16, code: &str) {
    for path in [
        "/app/transactions/current".to_owned(),
        "/app/transactions".to_owned(),
        format!("/app/transactions/{txid}"),
        format!("/app/transactions/{txid}/status"),
        format!("/app/transactions/{txid}/receipt"),
        "/app/collections".to_owned(),
        "/app/governance/constitution".to_owned(),
        "/app/governance/members".to_owned(),
        "/app/enclaveQuotes".to_owned(),
        format!("/app/users/{any_user}"),
    ] {
        api.get(&path).await.error_code(status, code);
    }
    api.write(None, "denied").await.error_code(status, code);
    api.patch_user(any_user, &json!({ "assignedRole": "Administrator" }))
        .await
        .error_code(status, code);
    api.delete(&format!("/app/users/{any_user}"))
        .await
        .error_code(status, code);
}

#[tokio::test]
async fn roles_and_their_denials() {
    let (_dir, server) = fresh(&[]);
    let admin = server.admin();
    let service_cert = server.service_cert_pem();
    let txid = admin.write_ok(None, "readable").await;
    let (reader_pem, reader_id) = new_user("reader");
    let (contrib_pem, contrib_id) = new_user("contributor");
    let (admin2_pem, admin2_id) = new_user("second admin");
    let (stranger_pem, stranger_id) = new_user("stranger");
    let reader = server.client(Some(&reader_pem));
    let contrib = server.client(Some(&contrib_pem));
    let admin2 = server.client(Some(&admin2_pem));
    let stranger = server.client(Some(&stranger_pem));
    let anonymous = server.client(None);

    // No client certificate → 401 InvalidAuthenticationInfo; unregistered → 403 NotAllowed.
    let before = admin.snapshot().await;
    everything_refused(
        &anonymous,
        &txid,
        &stranger_id,
        401,
        "InvalidAuthenticationInfo",
    )
    .await;
    everything_refused(&stranger, &txid, &stranger_id, 403, "NotAllowed").await;
    assert_eq!(
        admin.snapshot().await,
        before,
        "refused callers wrote something"
    );

    // Register the three roles (raw ':' and '%3A' user ids).
    let assign = |role: &str| json!({ "assignedRole": role });
    let body = admin.patch_user(&reader_id, &assign("Reader")).await.ok();
    assert_eq!(
        body,
        json!({ "assignedRole": "Reader", "userId": reader_id })
    );
    let body = admin
        .patch_user(&enc(&contrib_id), &assign("Contributor"))
        .await
        .ok();
    assert_eq!(
        body,
        json!({ "assignedRole": "Contributor", "userId": contrib_id })
    );
    let body = admin
        .patch_user(&admin2_id, &assign("Administrator"))
        .await
        .ok();
    assert_eq!(
        body,
        json!({ "assignedRole": "Administrator", "userId": admin2_id })
    );

    // Reader: reads everything, writes nothing, manages no users.
    reads_succeed(&reader, &txid, &service_cert).await;
    let before = admin.snapshot().await;
    reader
        .write(None, "nope")
        .await
        .error_code(403, "NotAllowed");
    reader
        .write(Some("reader collection"), "nope")
        .await
        .error_code(403, "NotAllowed");
    reader
        .patch_user(&stranger_id, &assign("Reader"))
        .await
        .error_code(403, "NotAllowed");
    reader
        .patch_user(&reader_id, &assign("Administrator"))
        .await
        .error_code(403, "NotAllowed");
    reader
        .delete(&format!("/app/users/{contrib_id}"))
        .await
        .error_code(403, "NotAllowed");
    assert_eq!(admin.snapshot().await, before, "a Reader changed something");

    // Contributor: reads and writes entries, manages no users.
    reads_succeed(&contrib, &txid, &service_cert).await;
    let ctx = contrib.write_ok(None, "by contributor").await;
    contrib
        .write_ok(Some("contributor collection"), "by contributor")
        .await;
    verify_receipt_of(&reader, &ctx, &service_cert).await;
    let before = admin.snapshot().await;
    contrib
        .patch_user(&stranger_id, &assign("Reader"))
        .await
        .error_code(403, "NotAllowed");
    contrib
        .patch_user(&contrib_id, &assign("Administrator"))
        .await
        .error_code(403, "NotAllowed");
    contrib
        .delete(&format!("/app/users/{reader_id}"))
        .await
        .error_code(403, "NotAllowed");
    assert_eq!(
        admin.snapshot().await,
        before,
        "a Contributor changed users"
    );

    // Second administrator: everything, including user management.
    reads_succeed(&admin2, &txid, &service_cert).await;
    admin2.write_ok(None, "by admin2").await;
    let body = admin2.get(&format!("/app/users/{reader_id}")).await.ok();
    assert_eq!(body["assignedRole"], "Reader");
    admin2
        .patch_user(&stranger_id, &assign("Reader"))
        .await
        .ok();
    reads_succeed(&stranger, &txid, &service_cert).await;
    stranger
        .write(None, "nope")
        .await
        .error_code(403, "NotAllowed");
    admin2
        .delete(&format!("/app/users/{stranger_id}"))
        .await
        .expect(204);
    everything_refused(&stranger, &txid, &stranger_id, 403, "NotAllowed").await;

    // Role changes take effect at once (on the same TLS connection pool).
    admin
        .patch_user(&reader_id, &assign("Contributor"))
        .await
        .ok();
    reader.write_ok(None, "reader promoted").await;
    admin
        .patch_user(&enc(&reader_id), &assign("Reader"))
        .await
        .ok();
    reader
        .write(None, "reader demoted")
        .await
        .error_code(403, "NotAllowed");

    // Deleting a user locks it out.
    admin
        .delete(&format!("/app/users/{contrib_id}"))
        .await
        .expect(204);
    contrib
        .write(None, "gone")
        .await
        .error_code(403, "NotAllowed");
    contrib
        .get("/app/transactions/current")
        .await
        .error_code(403, "NotAllowed");
}

#[tokio::test]
async fn user_management_with_raw_and_encoded_ids() {
    let (_dir, server) = fresh(&[]);
    let admin = server.admin();
    let (_pem, id) = new_user("managed");
    let encoded = enc(&id);
    assert!(encoded.contains("%3A"));
    let assign = |role: &str| json!({ "assignedRole": role });

    // Unknown user: 404 with a code, both spellings.
    admin.get(&format!("/app/users/{id}")).await.error(404);
    admin.get(&format!("/app/users/{encoded}")).await.error(404);

    // Create with raw ':', read with both.
    let t1 = admin
        .patch_user(&id, &assign("Reader"))
        .await
        .expect(200)
        .txid();
    let expected = json!({ "assignedRole": "Reader", "userId": id });
    assert_eq!(admin.get(&format!("/app/users/{id}")).await.ok(), expected);
    assert_eq!(
        admin.get(&format!("/app/users/{encoded}")).await.ok(),
        expected
    );

    // Update with '%3A' and application/json (both media types are accepted on PATCH).
    let resp = admin
        .raw(
            Method::PATCH,
            &versioned(&format!("/app/users/{encoded}")),
            Some("application/json"),
            Some(br#"{"assignedRole":"Contributor"}"#.to_vec()),
        )
        .await
        .expect(200);
    let t2 = resp.txid();
    assert!(t2 > t1, "each user change is a transaction");
    assert_eq!(
        resp.json(),
        json!({ "assignedRole": "Contributor", "userId": id })
    );

    // Merge patch with nothing to change keeps the role.
    let body = admin.patch_user(&id, &json!({})).await.ok();
    assert_eq!(body, json!({ "assignedRole": "Contributor", "userId": id }));

    // Invalid patches: 400 with a code, nothing written.
    let before = admin.snapshot().await;
    for (what, bytes) in [
        ("unknown role", br#"{"assignedRole":"Owner"}"#.to_vec()),
        ("lower-case role", br#"{"assignedRole":"reader"}"#.to_vec()),
        ("numeric role", br#"{"assignedRole":5}"#.to_vec()),
        ("malformed JSON", br#"{"assignedRole":"#.to_vec()),
        ("array body", br#"["Reader"]"#.to_vec()),
    ] {
        let resp = admin
            .raw(
                Method::PATCH,
                &versioned(&format!("/app/users/{id}")),
                Some("application/merge-patch+json"),
                Some(bytes),
            )
            .await;
        let code = resp.error(400);
        assert_eq!(code, "InvalidInput", "PATCH user, {what}");
    }
    let (_pem, new_id) = new_user("no role");
    let resp = admin.patch_user(&new_id, &json!({})).await;
    assert!(
        resp.status.is_client_error(),
        "a new user without a role: {resp:?}"
    );
    resp.clone().error(resp.status.as_u16());
    assert_eq!(
        admin.snapshot().await,
        before,
        "an invalid PATCH wrote something"
    );
    admin.get(&format!("/app/users/{new_id}")).await.error(404);

    // Delete with '%3A': 204, empty body, header; then gone.
    let resp = admin
        .delete(&format!("/app/users/{encoded}"))
        .await
        .expect(204);
    assert!(resp.text.is_empty());
    assert!(resp.txid() > t2);
    admin.get(&format!("/app/users/{id}")).await.error(404);
    let again = admin.delete(&format!("/app/users/{id}")).await;
    eprintln!(
        "DELETE of an already-deleted user: {} {}",
        again.status, again.text
    );
    assert!(
        again.status.as_u16() == 204 || again.status.as_u16() == 404,
        "{again:?}"
    );
}

#[tokio::test]
async fn admin_cert_flag_registers_administrators() {
    let certs = tempfile::tempdir().unwrap();
    let (pem1, id1) = new_user("operator one");
    let (pem2, id2) = new_user("operator two");
    // Certificate only (no key), as an operator would hand it over.
    let cert_only = |bundle: &str| {
        let end = "-----END CERTIFICATE-----";
        let stop = bundle.find(end).unwrap() + end.len();
        format!("{}\n", &bundle[..stop])
    };
    let p1 = certs.path().join("one.pem");
    let p2 = certs.path().join("two.pem");
    std::fs::write(&p1, cert_only(&pem1)).unwrap();
    std::fs::write(&p2, cert_only(&pem2)).unwrap();
    let (dir, server) = fresh(&[
        "--admin-cert",
        p1.to_str().unwrap(),
        "--admin-cert",
        p2.to_str().unwrap(),
    ]);
    assert!(
        !dir.path().join("admin.pem").exists(),
        "no admin.pem is generated when --admin-cert is given"
    );
    let one = server.client(Some(&pem1));
    let two = server.client(Some(&pem2));
    assert_eq!(
        one.get(&format!("/app/users/{id2}")).await.ok(),
        json!({ "assignedRole": "Administrator", "userId": id2 })
    );
    assert_eq!(
        two.get(&format!("/app/users/{id1}")).await.ok(),
        json!({ "assignedRole": "Administrator", "userId": id1 })
    );
    one.write_ok(None, "by operator one").await;
    let (_p, someone) = new_user("someone");
    two.patch_user(&someone, &json!({ "assignedRole": "Reader" }))
        .await
        .ok();
}

#[tokio::test]
async fn identity_service_route() {
    let (_dir, server) = fresh(&["--ledger-id", "testledger"]);
    let anonymous = server.client(None);
    let body = anonymous.get("/ledgerIdentity/testledger").await.ok();
    assert_eq!(body["ledgerId"], "testledger");
    assert_eq!(
        body["ledgerTlsCertificate"].as_str().map(str::trim),
        Some(server.service_cert_pem().trim())
    );
    let resp = anonymous.get("/ledgerIdentity/someone-else").await;
    assert_eq!(resp.status.as_u16(), 404, "{resp:?}");
}

#[tokio::test]
async fn tls_names_and_chain() {
    let (_dir, server) = fresh(&[]);
    // The node certificate is valid for localhost as well as 127.0.0.1 (the Python SDK checks
    // the hostname), with only the service certificate as trust anchor.
    let by_name = Api::new(
        &format!("https://localhost:{}", server.port),
        &server.service_cert_pem(),
        Some(&server.admin_bundle_pem()),
    );
    by_name.get("/app/governance/constitution").await.ok();

    // The chain sent is [node, service], the node certificate issued by the service one.
    let output = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", server.port),
        ])
        .args(["-servername", "localhost", "-showcerts", "-CAfile"])
        .arg(server.data_dir.join("service_cert.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&output.stdout);
    let chain_certs = text.matches("-----BEGIN CERTIFICATE-----").count();
    assert_eq!(
        chain_certs, 2,
        "the server should send node + service certificates:\n{text}"
    );
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "openssl does not verify the chain against service_cert.pem:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Lock file, SIGTERM, restart
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn second_server_on_the_same_dir_is_refused() {
    let (dir, mut server) = fresh(&[]);
    match Server::try_start(dir.path(), &[]) {
        Ok(_second) => panic!("a second `cledger serve` on the same data dir started"),
        Err(failure) => {
            assert!(
                failure.status.is_some_and(|s| !s.success()),
                "the second server should exit non-zero: {failure:?}"
            );
            let text = format!("{}\n{}", failure.stdout, failure.stderr).to_lowercase();
            assert!(
                ["lock", "already", "in use", "running"]
                    .iter()
                    .any(|w| text.contains(w)),
                "the refusal should say why (lock / already running): {text}"
            );
        }
    }
    server.assert_alive();
    server.admin().write_ok(None, "still serving").await;
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exit status");
    // The lock is released on exit.
    let again = Server::start(dir.path(), &[]);
    again.admin().get("/app/transactions/current").await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_restart_serves_everything() {
    let (dir, server) = fresh(&[]);
    let admin = server.admin();
    let service_cert = server.service_cert_pem();
    let admin_bundle = server.admin_bundle_pem();
    let odd = "restart ✓ + space";
    let mut written: Vec<(Option<&str>, String, String)> = Vec::new();
    for i in 0..12 {
        let collection = if i % 3 == 0 { Some(odd) } else { None };
        let contents = format!("before restart {i}");
        let txid = admin.write_ok(collection, &contents).await;
        written.push((collection, txid, contents));
    }
    let (reader_pem, reader_id) = new_user("reader");
    admin
        .patch_user(&reader_id, &json!({ "assignedRole": "Reader" }))
        .await
        .ok();

    // SIGTERM while writes are in flight: workers write in a loop until the server goes away;
    // every acknowledged write must survive.
    let inflight = "in flight";
    let mut workers = Vec::new();
    for w in 0..8 {
        let api = admin.clone();
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let contents = format!("in flight {w}/{i}");
                let resp = api
                    .try_raw(
                        Method::POST,
                        &versioned(&format!("/app/transactions?collectionId={}", enc(inflight))),
                        Some("application/json"),
                        Some(serde_json::to_vec(&json!({ "contents": contents })).unwrap()),
                    )
                    .await;
                match resp {
                    Ok(resp) if resp.status.as_u16() == 200 => {
                        acked.push((resp.txid().to_string(), contents))
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exit status: {status}");
    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.await.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "no write was acknowledged before SIGTERM"
    );
    acknowledged.sort_by_key(|(t, _)| txid_of(t));
    eprintln!("{} writes acknowledged before shutdown", acknowledged.len());

    // Restart on the same directory: same identity, same admin, everything readable.
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        server.service_cert_pem(),
        service_cert,
        "service certificate changed"
    );
    assert_eq!(
        server.admin_bundle_pem(),
        admin_bundle,
        "admin.pem was regenerated"
    );
    let admin = server.admin();
    let reader = server.client(Some(&reader_pem));
    for (collection, txid, contents) in &written {
        let path = match collection {
            Some(c) => format!("/app/transactions/{txid}?collectionId={}", enc(c)),
            None => format!("/app/transactions/{txid}"),
        };
        let body = reader.get(&path).await.ok();
        assert_eq!(
            body["entry"],
            entry(contents, collection.unwrap_or(DEFAULT_COLLECTION), txid),
            "entry {txid} after restart"
        );
        verify_receipt_of(&reader, txid, &service_cert).await;
        let status = reader
            .get(&format!("/app/transactions/{txid}/status"))
            .await
            .ok();
        assert_eq!(status["state"], "Committed");
    }
    // Every acknowledged in-flight write is there (the listing may also hold writes that were
    // committed but whose response never arrived); receipts of a sample verify.
    let (listed, _) = reader
        .list_all(&format!("/app/transactions?collectionId={}", enc(inflight)))
        .await;
    let listed: std::collections::BTreeMap<String, String> = listed
        .iter()
        .map(|e| {
            (
                e["transactionId"].as_str().unwrap().to_owned(),
                e["contents"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (txid, contents) in &acknowledged {
        assert_eq!(
            listed.get(txid),
            Some(contents),
            "acknowledged in-flight write {txid} lost across SIGTERM"
        );
    }
    let step = (acknowledged.len() / 10).max(1);
    for (txid, _) in acknowledged.iter().step_by(step).chain(acknowledged.last()) {
        verify_receipt_of(&reader, txid, &service_cert).await;
    }
    let (entries, _) = reader
        .list_all(&format!("/app/transactions?collectionId={}", enc(odd)))
        .await;
    let expected: Vec<Value> = written
        .iter()
        .filter(|(c, _, _)| c.is_some())
        .map(|(_, t, c)| entry(c, odd, t))
        .collect();
    assert_eq!(entries, expected, "collection listing after restart");
    let current = reader
        .get(&format!(
            "/app/transactions/current?collectionId={}",
            enc(odd)
        ))
        .await
        .ok();
    assert_eq!(current["contents"], "before restart 9");
    let collections = admin.snapshot().await.collections;
    assert!(
        collections.contains(&odd.to_owned())
            && collections.contains(&DEFAULT_COLLECTION.to_owned())
    );

    // Users and roles survived.
    assert_eq!(
        admin.get(&format!("/app/users/{reader_id}")).await.ok(),
        json!({ "assignedRole": "Reader", "userId": reader_id })
    );
    reader
        .write(None, "nope")
        .await
        .error_code(403, "NotAllowed");

    // New writes continue after the old ones.
    let last_old = written
        .iter()
        .map(|(_, t, _)| txid_of(t))
        .chain(acknowledged.iter().map(|(t, _)| txid_of(t)))
        .max()
        .unwrap();
    let new_tx = admin.write_ok(None, "after restart").await;
    assert!(
        txid_of(&new_tx) > last_old,
        "new txid {new_tx} after {last_old}"
    );
    verify_receipt_of(&admin, &new_tx, &service_cert).await;
    // An old receipt still verifies after new writes.
    verify_receipt_of(&admin, &written[0].1, &service_cert).await;

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "second SIGTERM exit status");
}

// ---------------------------------------------------------------------------------------------
// The identity's curve
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn curve_is_chosen_on_first_start_and_never_changes() {
    use ledger_core::signing::Curve;
    // Default: P-384, as ACL and CCF.
    let (_default_dir, server) = fresh(&[]);
    assert_eq!(curve_of(&server.service_cert_pem()), Curve::P384);
    drop(server);

    let (dir, server) = fresh(&["--curve", "p256"]);
    let service_cert = server.service_cert_pem();
    assert_eq!(curve_of(&service_cert), Curve::P256);
    assert_eq!(
        curve_of(&read_text(&dir.path().join("identity/node_cert.pem"))),
        Curve::P256,
        "the node key is on the service's curve"
    );
    let admin = server.admin();
    let txid = admin.write_ok(None, "signed on P-256").await;
    // The receipt verifies as the SDK's verify_receipt would (node signature, chain, path).
    verify_receipt_of(&admin, &txid, &service_cert).await;
    stop(server).await;

    // Another curve for the same ledger is refused, saying why and what to do.
    let failure = Server::try_start(dir.path(), &["--curve", "p384"])
        .err()
        .expect("a ledger's curve cannot change");
    assert_ne!(failure.status.and_then(|s| s.code()), Some(0));
    assert!(
        failure.stderr.contains("curve p384 was asked for")
            && failure.stderr.contains("on p256")
            && failure.stderr.contains("never changes"),
        "stderr: {}",
        failure.stderr
    );
    // Its own curve, or none, serves it as before.
    for extra in [&["--curve", "p256"][..], &[]] {
        let server = Server::start(dir.path(), extra);
        assert_eq!(server.service_cert_pem(), service_cert);
        verify_receipt_of(&server.admin(), &txid, &service_cert).await;
        stop(server).await;
    }
}

/// SIGTERM and a clean exit, waited for off the test's runtime: blocking it would keep the
/// test's own client connections from answering the server's goodbye, and the server would
/// wait out its grace period for them.
async fn stop(server: Server) {
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exit status: {status}");
}
