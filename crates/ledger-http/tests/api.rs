//! The ACL surface end to end: a real ledger in a temporary directory, driven through the
//! router with `tower::ServiceExt::oneshot`, the caller given as a `Caller` extension the way
//! the transport inserts it.

use axum::body::Body;
use axum::http::{Method, Request};
use ledger_core::TxId;
use ledger_http::{ApiConfig, ApiVersion, Caller, certificate_fingerprint};
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt;

mod common;
use common::*;

const V: &str = "2022-05-13";

fn app() -> App {
    App::new()
}

fn app_with(adjust: impl FnOnce(&mut ApiConfig)) -> App {
    App::with(adjust)
}

impl App {
    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Some(&READER), None).await
    }

    async fn post(&self, query: &str, body: &str) -> Reply {
        let uri = format!("/app/transactions?api-version={V}{query}");
        self.call(
            Method::POST,
            &uri,
            Some(&CONTRIBUTOR),
            Some(("application/json", body.as_bytes().to_vec())),
        )
        .await
    }

    async fn write(&self, query: &str, contents: &str) -> String {
        let r = self
            .post(query, &json!({"contents": contents}).to_string())
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.txid().unwrap()
    }

    fn committed(&self) -> String {
        self.ledger.committed().unwrap().to_string()
    }

    #[track_caller]
    fn expect_ok(&self, r: &Reply) {
        assert_eq!(r.status, 200, "body: {}", r.json);
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(TxId::parse(&r.txid().expect("txid header")).is_ok());
    }
}

fn url(path: &str) -> String {
    format!("{path}?api-version={V}")
}

#[tokio::test]
async fn governance_routes() {
    let app = app();
    let r = app.get(&url("/app/governance/constitution")).await;
    app.expect_ok(&r);
    let script = r.json["script"].as_str().unwrap();
    assert_eq!(script, ledger_http::CONSTITUTION);
    let digest = ledger_core::hash::sha256(script.as_bytes()).to_hex();
    assert_eq!(r.json["digest"], digest);
    assert_eq!(r.txid().unwrap(), app.committed());

    let r = app.get(&url("/app/governance/members")).await;
    app.expect_ok(&r);
    let der = ledger_identity::certificate_der(&app.files.service_cert_pem).unwrap();
    assert_eq!(
        r.json,
        json!({"members": [{"certificate": app.files.service_cert_pem,
                             "id": ledger_core::hash::sha256(&der).to_hex()}]})
    );

    let r = app.get(&url("/app/enclaveQuotes")).await;
    app.expect_ok(&r);
    let id = app.node_id.as_str();
    assert_eq!(
        r.json,
        json!({"currentNodeId": id, "enclaveQuotes": {id: {
            "nodeId": id, "quoteVersion": "Insecure_Virtual", "raw": ""}}})
    );

    let r = app.get(&url("/app/collections")).await;
    app.expect_ok(&r);
    assert_eq!(
        r.json,
        json!({"collections": [{"collectionId": "subledger:0"}]})
    );

    // Identity service: no caller at all.
    let r = app
        .call(Method::GET, &url("/ledgerIdentity/testledger"), None, None)
        .await;
    app.expect_ok(&r);
    assert_eq!(
        r.json,
        json!({"ledgerId": "testledger", "ledgerTlsCertificate": app.files.service_cert_pem})
    );
    app.call(Method::GET, &url("/ledgerIdentity/other"), None, None)
        .await
        .expect_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn write_and_read_back() {
    let app = app();
    let r = app.post("", r#"{"contents":"hello"}"#).await;
    app.expect_ok(&r);
    assert_eq!(r.raw, br#"{"collectionId":"subledger:0"}"#);
    let txid = r.txid().unwrap();
    // Answered after commit: the header names the write and /status says Committed at once.
    let r = app
        .get(&url(&format!("/app/transactions/{txid}/status")))
        .await;
    app.expect_ok(&r);
    assert_eq!(r.json, json!({"state": "Committed", "transactionId": txid}));

    let r = app.get(&url(&format!("/app/transactions/{txid}"))).await;
    app.expect_ok(&r);
    assert_eq!(
        String::from_utf8(r.raw.clone()).unwrap(),
        format!(
            r#"{{"entry":{{"collectionId":"subledger:0","contents":"hello","transactionId":"{txid}"}},"state":"Ready"}}"#
        )
    );

    let r = app
        .get(&url(&format!("/app/transactions/{txid}/receipt")))
        .await;
    app.expect_ok(&r);
    assert_eq!(r.json["state"], "Ready");
    assert_eq!(r.json["transactionId"], txid);
    assert!(r.json["receipt"]["signature"].is_string());
    assert!(r.json.get("applicationClaims").is_none());

    let r = app.get(&url("/app/transactions/current")).await;
    app.expect_ok(&r);
    assert_eq!(r.json["contents"], "hello");
    assert_eq!(r.json["collectionId"], "subledger:0");
    assert_eq!(r.json["transactionId"].as_str(), r.txid().as_deref());

    // A governance transaction's receipt works too (user changes are transactions).
    let r = app.get(&url("/app/transactions/1.1/receipt")).await;
    app.expect_ok(&r);
}

#[tokio::test]
async fn collection_ids_are_percent_decoded_and_plus_is_a_space() {
    let app = app();
    let cases = [
        ("my%20collection", "my collection"),
        ("%C3%BC%E2%9C%93", "ü✓"),
        ("a+b", "a b"),
        ("a%2Bb", "a+b"),
        ("x%3Ay", "x:y"),
    ];
    for (raw, decoded) in cases {
        let r = app
            .post(&format!("&collectionId={raw}"), r#"{"contents":"c"}"#)
            .await;
        app.expect_ok(&r);
        assert_eq!(r.json, json!({"collectionId": decoded}));
        let r = app
            .get(&format!(
                "{}&collectionId={raw}",
                url("/app/transactions/current")
            ))
            .await;
        app.expect_ok(&r);
        assert_eq!(r.json["collectionId"], decoded);
    }
    let r = app.get(&url("/app/collections")).await;
    let mut ids: Vec<String> = r.json["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["collectionId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["a b", "a+b", "my collection", "subledger:0", "x:y", "ü✓"]
    );
}

#[tokio::test]
async fn paging_is_inclusive_and_stable() {
    let app = app();
    let collection = "pa ge+";
    let encoded = "pa%20ge%2B";
    let mut txids = Vec::new();
    for i in 0..230 {
        txids.push(
            app.write(&format!("&collectionId={encoded}"), &format!("m{i}"))
                .await,
        );
    }
    // An entry in another collection inside the range must not show up.
    app.write("", "elsewhere").await;
    let first = &txids[10];
    let last = &txids[160]; // 151 entries: a page of 100, then one of 51
    let uri = format!(
        "/app/transactions?api-version={V}&collectionId={encoded}&fromTransactionId={first}&toTransactionId={last}"
    );
    let r = app.get(&uri).await;
    app.expect_ok(&r);
    let entries = r.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 100);
    assert_eq!(entries[0]["transactionId"], first.as_str());
    assert_eq!(entries[0]["contents"], "m10");
    assert_eq!(entries[0]["collectionId"], collection);
    assert_eq!(r.json["state"], "Ready");
    let hundredth = TxId::parse(entries[99]["transactionId"].as_str().unwrap()).unwrap();
    let next = format!("{}.{}", hundredth.view(), hundredth.seqno() + 1);
    let link = r.json["nextLink"].as_str().unwrap();
    assert_eq!(
        link,
        format!(
            "/app/transactions?api-version={V}&collectionId={encoded}&fromTransactionId={next}&toTransactionId={last}"
        )
    );
    let r = app.get(link).await;
    app.expect_ok(&r);
    let entries = r.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 51);
    assert_eq!(entries[50]["transactionId"], last.as_str());
    assert!(r.json.get("nextLink").is_none());
    // The JavaScript SDK appends api-version to the link again: the same page; a conflicting
    // second value is refused.
    let again = app.get(&format!("{link}&api-version={V}")).await;
    app.expect_ok(&again);
    assert_eq!(again.json["entries"], r.json["entries"]);
    app.get(&format!("{link}&api-version=2024-12-09-preview"))
        .await
        .expect_error(400, "InvalidQueryParameterValue");

    // Exactly one page: no link. Empty range: entries present and empty.
    let uri = format!(
        "/app/transactions?api-version={V}&collectionId={encoded}&fromTransactionId={}&toTransactionId={}",
        txids[0], txids[99]
    );
    let r = app.get(&uri).await;
    assert_eq!(r.json["entries"].as_array().unwrap().len(), 100);
    assert!(r.json.get("nextLink").is_none());
    let r = app
        .get(&format!("{}&collectionId=empty", url("/app/transactions")))
        .await;
    app.expect_ok(&r);
    assert_eq!(r.json, json!({"entries": [], "state": "Ready"}));

    // No bounds: the end is pinned to the read point, so later writes do not shift pages.
    let r = app
        .get(&format!(
            "{}&collectionId={encoded}",
            url("/app/transactions")
        ))
        .await;
    let pinned = r.txid().unwrap();
    let link = r.json["nextLink"].as_str().unwrap().to_owned();
    assert!(
        link.ends_with(&format!("&toTransactionId={pinned}")),
        "{link}"
    );
    app.write(&format!("&collectionId={encoded}"), "late").await;
    let r = app.get(&link).await;
    let r2 = app.get(r.json["nextLink"].as_str().unwrap()).await;
    let total = 100
        + r.json["entries"].as_array().unwrap().len()
        + r2.json["entries"].as_array().unwrap().len();
    assert_eq!(total, 230);
    assert!(r2.json.get("nextLink").is_none());

    // The two oldest previews name the link `@nextLink`.
    let r = app
        .get(&format!(
            "/app/transactions?api-version=2022-04-20-preview&collectionId={encoded}"
        ))
        .await;
    assert!(r.json.get("nextLink").is_none());
    assert!(
        r.json["@nextLink"]
            .as_str()
            .unwrap()
            .starts_with("/app/transactions?api-version=2022-04-20-preview&")
    );
}

#[tokio::test]
async fn rejected_writes_write_nothing() {
    let app = app_with(|c| c.max_collections = 2);
    let before = app.committed();
    let long_id = "c".repeat(257);
    let big = "é".repeat(4097); // 8194 bytes
    let cases: Vec<(String, Vec<u8>, &str, u16, &str)> = vec![
        (
            String::new(),
            b"{".to_vec(),
            "application/json",
            400,
            "InvalidInput",
        ),
        (
            String::new(),
            b"".to_vec(),
            "application/json",
            400,
            "InvalidInput",
        ),
        (
            String::new(),
            b"[1]".to_vec(),
            "application/json",
            400,
            "InvalidInput",
        ),
        (
            String::new(),
            br#""x""#.to_vec(),
            "application/json",
            400,
            "InvalidInput",
        ),
        (
            String::new(),
            br#"{"content":"x"}"#.to_vec(),
            "application/json",
            400,
            "InvalidInput",
        ),
        (
            String::new(),
            br#"{"contents":5}"#.to_vec(),
            "application/json",
            400,
            "InvalidInput",
        ),
        (
            String::new(),
            br#"{"contents":null}"#.to_vec(),
            "application/json",
            400,
            "InvalidInput",
        ),
        (
            String::new(),
            b"\xff\xfe".to_vec(),
            "application/json",
            400,
            "InvalidInput",
        ),
        (
            String::new(),
            br#"{"contents":"x"}"#.to_vec(),
            "text/plain",
            415,
            "UnsupportedMediaType",
        ),
        (
            String::new(),
            json!({"contents": big}).to_string().into_bytes(),
            "application/json",
            400,
            "EntrySizeCapacityExceeded",
        ),
        (
            format!("&collectionId={long_id}"),
            br#"{"contents":"x"}"#.to_vec(),
            "application/json",
            400,
            "CollectionIdTooLong",
        ),
        (
            String::new(),
            vec![b' '; (1 << 20) + (64 << 10) + 1],
            "application/json",
            413,
            "RequestBodyTooLarge",
        ),
        (
            "&collectionId=a&collectionId=b".into(),
            br#"{"contents":"x"}"#.to_vec(),
            "application/json",
            400,
            "InvalidQueryParameterValue",
        ),
    ];
    for (query, body, content_type, status, code) in cases {
        let uri = format!("/app/transactions?api-version={V}{query}");
        let r = app
            .call(
                Method::POST,
                &uri,
                Some(&CONTRIBUTOR),
                Some((content_type, body)),
            )
            .await;
        r.expect_error(status, code);
        assert_eq!(app.committed(), before, "{code} wrote something");
    }
    // A declared Content-Length over the cap is refused before reading.
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url("/app/transactions"))
        .header("content-length", "99999999")
        .body(Body::from("{}"))
        .unwrap();
    request
        .extensions_mut()
        .insert(certificate_caller(&CONTRIBUTOR));
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 413);
    let r = app
        .post("", &json!({"contents": "é".repeat(4097)}).to_string())
        .await;
    assert_eq!(
        r.json["error"]["message"],
        "Entry contents of 8194 bytes exceed the limit of 8192 bytes."
    );

    // The limits themselves are allowed.
    app.write("", &"x".repeat(8192)).await;
    app.write(&format!("&collectionId={}", "c".repeat(256)), "x")
        .await;
    // Capacity: 2 collections besides the default; the 256-byte one was the first.
    app.write("&collectionId=two", "x").await;
    let before = app.committed();
    app.post("&collectionId=three", r#"{"contents":"x"}"#)
        .await
        .expect_error(400, "CollectionCapacityExceeded");
    assert_eq!(app.committed(), before);
    app.write(
        "&collectionId=two",
        "existing collections still take writes",
    )
    .await;
    app.write("", "and so does the default one").await;
}

#[tokio::test]
async fn transaction_id_errors() {
    let app = app();
    let txid = app.write("&collectionId=a", "x").await;
    for path in ["", "/status", "/receipt"] {
        for bad in ["abc", "2.", "1.0", "01.2", "1.2.3"] {
            app.get(&url(&format!("/app/transactions/{bad}{path}")))
                .await
                .expect_error(404, "InvalidTransactionId");
        }
        // Another view at an existing seqno cannot exist.
        app.get(&url(&format!("/app/transactions/99.1{path}")))
            .await
            .expect_error(404, "InvalidTransactionId");
        // Well formed, beyond the end.
        app.get(&url(&format!("/app/transactions/1.999999{path}")))
            .await
            .expect_error(404, "TransactionPendingOrUnknown");
    }
    // Committed, but no entry in the requested collection.
    app.get(&url(&format!("/app/transactions/{txid}")))
        .await
        .expect_error(404, "ResourceNotFound");
    let r = app
        .get(&format!(
            "{}&collectionId=a",
            url(&format!("/app/transactions/{txid}"))
        ))
        .await;
    app.expect_ok(&r);
    app.get(&url("/app/transactions/1.1"))
        .await
        .expect_error(404, "ResourceNotFound");
    // The newest signature has no receipt yet.
    let newest = app.committed();
    app.get(&url(&format!("/app/transactions/{newest}/receipt")))
        .await
        .expect_error(404, "TransactionPendingOrUnknown");
    // Query ids.
    app.get(&format!("{}&fromTransactionId=x", url("/app/transactions")))
        .await
        .expect_error(400, "InvalidTransactionId");
    app.get(&format!("{}&toTransactionId=1.", url("/app/transactions")))
        .await
        .expect_error(400, "InvalidTransactionId");
    app.get(&format!(
        "{}&fromTransactionId=1.9&toTransactionId=1.3",
        url("/app/transactions")
    ))
    .await
    .expect_error(400, "InvalidQueryParameterValue");
    app.get(&format!(
        "{}&collectionId=none",
        url("/app/transactions/current")
    ))
    .await
    .expect_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn roles_and_denials() {
    let app = app();
    let txid = app.write("", "x").await;
    let reads = [
        "/app/governance/constitution".to_owned(),
        "/app/governance/members".into(),
        "/app/enclaveQuotes".into(),
        "/app/collections".into(),
        "/app/transactions".into(),
        "/app/transactions/current".into(),
        format!("/app/transactions/{txid}"),
        format!("/app/transactions/{txid}/receipt"),
        format!("/app/transactions/{txid}/status"),
    ];
    let user = format!("/app/users/{}", &*READER);
    let post = || Some(("application/json", br#"{"contents":"y"}"#.to_vec()));
    let patch = || {
        Some((
            "application/merge-patch+json",
            br#"{"assignedRole":"Reader"}"#.to_vec(),
        ))
    };
    for who in [&*READER, &*CONTRIBUTOR, &*ADMIN] {
        for path in &reads {
            let r = app.call(Method::GET, &url(path), Some(who), None).await;
            app.expect_ok(&r);
        }
    }
    // Anonymous: 401 everywhere but the identity service.
    for path in reads.iter().chain([&user]) {
        app.call(Method::GET, &url(path), None, None)
            .await
            .expect_error(401, "InvalidAuthenticationInfo");
    }
    // A certificate that is not a user: 403 with a hint naming its fingerprint.
    let r = app
        .call(
            Method::POST,
            &url("/app/transactions"),
            Some(&STRANGER),
            post(),
        )
        .await;
    r.expect_error(403, "NotAllowed");
    let message = r.json["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Not allowed to call POST /app/transactions"),
        "{message}"
    );
    assert!(message.contains(&*STRANGER), "{message}");

    let before = app.committed();
    app.call(
        Method::POST,
        &url("/app/transactions"),
        Some(&READER),
        post(),
    )
    .await
    .expect_error(403, "NotAllowed");
    for who in [&*READER, &*CONTRIBUTOR] {
        app.call(Method::GET, &url(&user), Some(who), None)
            .await
            .expect_error(403, "NotAllowed");
        app.call(Method::PATCH, &url(&user), Some(who), patch())
            .await
            .expect_error(403, "NotAllowed");
        app.call(Method::DELETE, &url(&user), Some(who), None)
            .await
            .expect_error(403, "NotAllowed");
    }
    assert_eq!(app.committed(), before);
    let r = app
        .call(
            Method::POST,
            &url("/app/transactions"),
            Some(&ADMIN),
            post(),
        )
        .await;
    app.expect_ok(&r);
    let r = app.call(Method::GET, &url(&user), Some(&ADMIN), None).await;
    app.expect_ok(&r);
}

#[tokio::test]
async fn user_management() {
    let app = app();
    let admin = |method, path: &str, body: Option<&str>| {
        let body = body.map(|b| ("application/merge-patch+json", b.as_bytes().to_vec()));
        let uri = url(path);
        let app = &app;
        async move { app.call(method, &uri, Some(&ADMIN), body).await }
    };
    let newbie = certificate_fingerprint(b"newbie");
    // Python sends the colons raw, .NET percent-encodes them; both name the same user.
    let raw_path = format!("/app/users/{newbie}");
    let encoded_path = format!("/app/users/{}", newbie.replace(':', "%3A"));

    admin(Method::GET, &raw_path, None)
        .await
        .expect_error(404, "ResourceNotFound");
    let r = admin(
        Method::PATCH,
        &raw_path,
        Some(r#"{"assignedRole":"Contributor"}"#),
    )
    .await;
    app.expect_ok(&r);
    assert_eq!(
        r.raw,
        format!(r#"{{"assignedRole":"Contributor","userId":"{newbie}"}}"#).as_bytes()
    );
    assert_eq!(r.txid().unwrap(), app.assert_committed(&r));
    // The change applies to the next request.
    let r = app
        .call(
            Method::POST,
            &url("/app/transactions"),
            Some(&newbie),
            Some(("application/json", br#"{"contents":"hi"}"#.to_vec())),
        )
        .await;
    app.expect_ok(&r);
    let r = admin(Method::GET, &encoded_path, None).await;
    app.expect_ok(&r);
    assert_eq!(
        r.json,
        json!({"assignedRole": "Contributor", "userId": newbie})
    );

    // Plain application/json is accepted too; an omitted role keeps the current one.
    let r = app
        .call(
            Method::PATCH,
            &url(&encoded_path),
            Some(&ADMIN),
            Some(("application/json", br#"{"assignedRole":"Reader"}"#.to_vec())),
        )
        .await;
    assert_eq!(r.json["assignedRole"], "Reader");
    let r = admin(Method::PATCH, &raw_path, Some("{}")).await;
    assert_eq!(r.json["assignedRole"], "Reader");

    let before = app.committed();
    for (body, code) in [
        (r#"{"assignedRole":"Owner"}"#, "InvalidInput"),
        (r#"{"assignedRole":"reader"}"#, "InvalidInput"),
        (r#"{"assignedRole":null}"#, "InvalidInput"),
        (r#"{"assignedRole":3}"#, "InvalidInput"),
        ("nope", "InvalidInput"),
    ] {
        admin(Method::PATCH, &raw_path, Some(body))
            .await
            .expect_error(400, code);
    }
    let stranger_path = format!("/app/users/{}", &*STRANGER);
    admin(Method::PATCH, &stranger_path, Some("{}"))
        .await
        .expect_error(400, "InvalidInput");
    // The only administrator cannot be demoted or deleted.
    let admin_path = format!("/app/users/{}", &*ADMIN);
    admin(
        Method::PATCH,
        &admin_path,
        Some(r#"{"assignedRole":"Reader"}"#),
    )
    .await
    .expect_error(400, "LastAdministrator");
    admin(Method::DELETE, &admin_path, None)
        .await
        .expect_error(400, "LastAdministrator");
    admin(Method::DELETE, &stranger_path, None)
        .await
        .expect_error(404, "ResourceNotFound");
    assert_eq!(app.committed(), before);

    // Lower-case fingerprints are stored upper-case.
    let r = admin(
        Method::PATCH,
        &format!("/app/users/{}", newbie.to_lowercase()),
        Some(r#"{"assignedRole":"Reader"}"#),
    )
    .await;
    assert_eq!(r.json["userId"], newbie);

    let r = admin(Method::DELETE, &encoded_path, None).await;
    assert_eq!(r.status, 204);
    assert!(r.raw.is_empty());
    assert_eq!(r.txid().unwrap(), app.assert_committed(&r));
    admin(Method::GET, &raw_path, None)
        .await
        .expect_error(404, "ResourceNotFound");
    app.call(
        Method::GET,
        &url("/app/transactions/current"),
        Some(&newbie),
        None,
    )
    .await
    .expect_error(403, "NotAllowed");
}

impl App {
    /// A governance write's txid is committed: /status confirms it.
    fn assert_committed(&self, r: &Reply) -> String {
        let txid = TxId::parse(&r.txid().unwrap()).unwrap();
        assert_eq!(self.ledger.status(txid), ledger_store::TxStatus::Committed);
        txid.to_string()
    }
}

#[tokio::test]
async fn api_version_rules() {
    let app = app();
    for path in ["/app/collections", "/ledgerIdentity/testledger"] {
        app.get(path)
            .await
            .expect_error(400, "MissingApiVersionParameter");
        app.get(&format!("{path}?api-version=2099-01-01"))
            .await
            .expect_error(400, "UnsupportedApiVersion");
        for v in ApiVersion::ALL {
            let r = app.get(&format!("{path}?api-version={}", v.as_str())).await;
            app.expect_ok(&r);
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = app();
    let r = app.get(&url("/app/nothing")).await;
    r.expect_error(404, "ResourceNotFound");
    let r = app.get("/").await;
    r.expect_error(404, "ResourceNotFound");
    for (method, path) in [
        (Method::PUT, "/app/transactions"),
        (Method::DELETE, "/app/collections"),
        (Method::POST, "/app/transactions/1.2"),
        (Method::POST, "/app/users/x"),
    ] {
        app.call(method, &url(path), Some(&ADMIN), None)
            .await
            .expect_error(405, "MethodNotAllowed");
    }
}

/// Collection ids are listed verbatim to every Reader, so, like tags and user ids, they may
/// not hold control characters (NUL, newline, ESC starting a terminal escape sequence) or
/// bidirectional overrides. Each is refused with `InvalidInput` naming the character, on the
/// write and on every read that takes a collection id, and nothing is written.
#[tokio::test]
async fn collection_ids_refuse_control_and_bidi_characters() {
    let app = app();
    let txid = app.write("&collectionId=fine", "x").await;
    let tags = "2024-12-09-preview";
    for (raw, named) in [
        ("nul%00x", "U+0000"),
        ("line%0Abreak", "U+000A"),
        ("%1B%5B31mred", "U+001B"),
        ("invoice%E2%80%AEfdp.exe", "U+202E"),
    ] {
        let before = app.committed();
        let r = app
            .post(&format!("&collectionId={raw}"), r#"{"contents":"x"}"#)
            .await;
        r.expect_error(400, "InvalidInput");
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{raw}: {message}");
        assert!(message.contains("collection id"), "{raw}: {message}");
        assert_eq!(app.committed(), before, "{raw} wrote something");
        for read in [
            format!("/app/transactions?api-version={V}&collectionId={raw}"),
            format!("/app/transactions/current?api-version={V}&collectionId={raw}"),
            format!("/app/transactions/{txid}?api-version={V}&collectionId={raw}"),
            format!("/app/collections/tags?api-version={tags}&collectionId={raw}"),
        ] {
            let r = app.get(&read).await;
            r.expect_error(400, "InvalidInput");
            let message = r.json["error"]["message"].as_str().unwrap();
            assert!(message.contains(named), "{read}: {message}");
        }
    }

    // A ledger written before this rule may hold such an id: it is still listed (JSON escapes
    // the control characters), and reading around it works.
    let old = "old\u{1b}[31m\u{202e}";
    let written = app
        .ledger
        .append(ledger_store::WriteRequest::Entry(
            ledger_core::entry::ApplicationEntry {
                collection_id: old.into(),
                contents: "from an older version".into(),
                tags: Vec::new(),
                claims_key: None,
                idempotency: None,
                kv_writes: Vec::new(),
            },
        ))
        .unwrap();
    let r = app.get(&url("/app/collections")).await;
    app.expect_ok(&r);
    assert!(
        r.json["collections"]
            .as_array()
            .unwrap()
            .contains(&json!({"collectionId": old})),
        "{}",
        r.json
    );
    app.get(&url(&format!("/app/transactions/{written}")))
        .await
        .expect_error(404, "ResourceNotFound");
    let r = app
        .get(&url(&format!("/app/transactions/{written}/receipt")))
        .await;
    app.expect_ok(&r);
}

/// Check-then-act: an administrator demoted while its own grant is in flight. The grant may
/// commit before the demotion, or be refused; it must never commit after it (the roles that
/// authorize a change are the ones in force when it commits). The two requests race in every
/// round; before the fix the grant committed after the demotion in about a third of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_administrator_cannot_grant_after_the_demotion() {
    const ROUNDS: usize = 30;
    let app = Arc::new(app());
    let admin2 = certificate_fingerprint(b"admin2");
    let patch = |app: Arc<App>, who: String, target: String, role: &'static str| async move {
        let body = format!(r#"{{"assignedRole":"{role}"}}"#).into_bytes();
        app.call(
            Method::PATCH,
            &url(&format!("/app/users/{target}")),
            Some(&who),
            Some(("application/merge-patch+json", body)),
        )
        .await
    };
    let seqno = |r: &Reply| TxId::parse(&r.txid().unwrap()).unwrap().seqno();
    let (mut before, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let promoted = patch(app.clone(), ADMIN.clone(), admin2.clone(), "Administrator").await;
        app.expect_ok(&promoted);
        let newcomer = certificate_fingerprint(format!("newcomer {round}").as_bytes());
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let demotion = tokio::spawn({
            let (app, start, admin2) = (app.clone(), start.clone(), admin2.clone());
            async move {
                start.wait().await;
                patch(app, ADMIN.clone(), admin2, "Reader").await
            }
        });
        let grant = tokio::spawn({
            let (app, start, admin2, newcomer) =
                (app.clone(), start.clone(), admin2.clone(), newcomer.clone());
            async move {
                start.wait().await;
                patch(app, admin2, newcomer, "Administrator").await
            }
        });
        let (demotion, grant) = (demotion.await.unwrap(), grant.await.unwrap());
        app.expect_ok(&demotion);
        let stored = app
            .ledger
            .governance("public:cledger.users", &newcomer)
            .unwrap();
        if grant.status == 200 {
            assert!(
                seqno(&grant) < seqno(&demotion),
                "round {round}: the grant ({}) committed after the demotion ({})",
                grant.txid().unwrap(),
                demotion.txid().unwrap()
            );
            assert!(stored.is_some());
            before += 1;
        } else {
            grant.expect_error(403, "NotAllowed");
            assert!(
                stored.is_none(),
                "round {round}: a refused grant was written"
            );
            refused += 1;
        }
    }
    assert_eq!(before + refused, ROUNDS);
}

/// A client certificate with the validity period `not_before`..`not_after` (year, month, day):
/// its DER and fingerprint.
fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> (Vec<u8>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let der = params.self_signed(&key).unwrap().der().to_vec();
    let fingerprint = certificate_fingerprint(&der);
    (der, fingerprint)
}

/// A registered user's certificate outside its validity period is refused with 401 and the
/// reason, on every route but the public one; within it, the user's role applies.
#[tokio::test]
async fn certificates_outside_their_validity_period_are_refused() {
    let app = app();
    let expired = certificate((2020, 1, 1), (2021, 3, 4));
    let future = certificate((2099, 5, 6), (2100, 1, 1));
    let current = certificate((2020, 1, 1), (2099, 1, 1));
    for (_, id) in [&expired, &future, &current] {
        let r = app
            .call_json(
                Method::PATCH,
                &url(&format!("/app/users/{id}")),
                &ADMIN,
                Some(json!({"assignedRole": "Administrator"})),
            )
            .await;
        app.expect_ok(&r);
    }
    let as_holder = |der: &[u8], path: &str| {
        let (caller, uri) = (Caller::from_certificate(der), url(path));
        let app = &app;
        async move { app.call_as(Method::GET, &uri, Some(caller), None).await }
    };
    let r = as_holder(&current.0, "/app/collections").await;
    app.expect_ok(&r);
    let r = as_holder(&current.0, &format!("/app/users/{}", current.1)).await;
    assert_eq!(r.json["assignedRole"], "Administrator");
    for (der, reason) in [
        (
            &expired.0,
            "The client certificate expired on 2021-03-04T00:00:00Z.",
        ),
        (
            &future.0,
            "The client certificate is not valid before 2099-05-06T00:00:00Z",
        ),
    ] {
        for path in ["/app/collections", "/app/users/x"] {
            let r = as_holder(der, path).await;
            r.expect_error(401, "InvalidAuthenticationInfo");
            let message = r.json["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(reason), "{message}");
        }
        let r = as_holder(der, "/ledgerIdentity/testledger").await;
        app.expect_ok(&r);
    }
    // Bytes that are no certificate have no validity period: refused too.
    let r = app
        .call_as(
            Method::GET,
            &url("/app/collections"),
            Some(Caller::Certificate {
                fingerprint: ADMIN.as_str().into(),
                validity: None,
                pem: None,
            }),
            None,
        )
        .await;
    r.expect_error(401, "InvalidAuthenticationInfo");
}
