//! User-defined code through the router, in process, against a real ledger: concurrent
//! read-modify-write executions stay serializable (optimistic concurrency over the pending
//! writes), a hook's reads see the writes of the hooks before it, and deployed endpoints
//! authenticate by their policies and write in their own transactions.

mod common;

use axum::http::Method;
use common::{ADMIN, App, CONTRIBUTOR, READER};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

const V: &str = "2024-12-09-preview";

fn uri(path: &str) -> String {
    format!("{path}?api-version={V}")
}

const INCREMENT: &str = "export function main() { const t = ccf.kv['public:counter']; \
    const k = ccf.strToBuf('n'); const v = t.get(k); \
    const n = (v === undefined ? 0 : Number(ccf.bufToStr(v))) + 1; \
    t.set(k, ccf.strToBuf(String(n))); return String(n); }";

async fn put_function(app: &App, id: &str, code: &str) {
    let r = app
        .call_json(
            Method::PUT,
            &uri(&format!("/app/userDefinedFunctions/{id}")),
            &ADMIN,
            Some(json!({"code": code})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_are_serializable() {
    let app = Arc::new(App::new());
    put_function(&app, "increment", INCREMENT).await;
    const TASKS: usize = 12;
    const EACH: usize = 6;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..EACH {
                    let r = app
                        .call_json(
                            Method::POST,
                            &uri("/app/userDefinedFunctions/increment:execute"),
                            &CONTRIBUTOR,
                            Some(json!({})),
                        )
                        .await;
                    outcomes.push(r);
                }
                outcomes
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut busy = 0;
    for task in tasks {
        for r in task.await.unwrap() {
            if r.status == 503 {
                // Five conflicting attempts in a row: refused whole, nothing written.
                r.expect_error(503, "ServiceBusy");
                busy += 1;
                continue;
            }
            assert_eq!(r.status, 200, "{}", r.json);
            assert_eq!(r.json["status"], "Succeeded", "{}", r.json);
            assert!(r.txid().is_some(), "a write answers its transaction");
            let n: u64 = r.json["result"]["returnValue"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                seen.insert(n),
                "two executions both returned {n}: a lost update"
            );
        }
    }
    let successes = seen.len() as u64;
    assert_eq!(successes + busy, (TASKS * EACH) as u64);
    assert!(successes > 0);
    // Every increment that succeeded is in the counter, each exactly once: 1..=successes.
    assert_eq!(seen, (1..=successes).collect::<BTreeSet<_>>());
    assert_eq!(
        app.ledger.kv_get("public:counter", b"n").unwrap(),
        Some(successes.to_string().into_bytes())
    );
}

#[tokio::test]
async fn hooks_see_earlier_hooks_writes_and_share_the_entrys_transaction() {
    let app = App::new();
    put_function(&app, "increment", INCREMENT).await;
    let r = app
        .call_json(
            Method::POST,
            &uri("/app/transactions"),
            &CONTRIBUTOR,
            Some(json!({
                "contents": "x",
                "preHooks": [{"functionId": "increment"}, {"functionId": "increment"}],
                "postHooks": [{"functionId": "increment"}],
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let txid = ledger_core::TxId::parse(&r.txid().unwrap()).unwrap();
    assert_eq!(
        app.ledger.kv_get("public:counter", b"n").unwrap(),
        Some(b"3".to_vec())
    );
    // One transaction: the entry carries the hooks' final writes.
    let entry = app.ledger.entry(txid).unwrap().unwrap().entry;
    assert_eq!(entry.contents, "x");
    assert_eq!(entry.kv_writes.len(), 1);
    assert_eq!(entry.kv_writes[0].value.as_deref(), Some(&b"3"[..]));

    // A reader may not run hooks; an older api-version may not name them.
    app.call_json(
        Method::POST,
        &uri("/app/transactions"),
        &READER,
        Some(json!({"contents": "x", "preHooks": [{"functionId": "increment"}]})),
    )
    .await
    .expect_error(403, "NotAllowed");
    app.call_json(
        Method::POST,
        "/app/transactions?api-version=2022-05-13",
        &ADMIN,
        Some(json!({"contents": "x", "preHooks": [{"functionId": "increment"}]})),
    )
    .await
    .expect_error(404, "ResourceNotFound");
    let too_many: Vec<Value> = (0..6).map(|_| json!({"functionId": "increment"})).collect();
    app.call_json(
        Method::POST,
        &uri("/app/transactions"),
        &ADMIN,
        Some(json!({"contents": "x", "preHooks": too_many})),
    )
    .await
    .expect_error(400, "InvalidInput");
    assert_eq!(
        app.ledger.kv_get("public:counter", b"n").unwrap(),
        Some(b"3".to_vec()),
        "refused writes ran no hook"
    );
}

#[tokio::test]
async fn deployed_endpoints_authenticate_by_policy_and_write_in_their_own_transaction() {
    let app = App::new();
    let bundle = json!({
        "metadata": {"endpoints": {
            "/records/{id}": {
                "put": {"js_module": "app.js", "js_function": "put", "authn_policies": ["user_cert"],
                        "mode": "readwrite"},
                "get": {"js_module": "app.js", "js_function": "get", "authn_policies": ["no_auth"],
                        "mode": "readonly"}
            },
            "/sneaky": {"get": {"js_module": "app.js", "js_function": "sneaky",
                                "authn_policies": ["no_auth"], "mode": "readonly"}}
        }},
        "modules": [{"name": "app.js", "module": "\
            const t = () => ccf.kv['records'];\n\
            export function put(request) {\n\
              t().set(ccf.strToBuf(request.params.id), ccf.strToBuf(request.body.text()));\n\
              return { statusCode: 204 };\n\
            }\n\
            export function get(request) {\n\
              const v = t().get(ccf.strToBuf(request.params.id));\n\
              if (v === undefined) return { statusCode: 404, body: { error: 'no such record' } };\n\
              return { body: { id: request.params.id, value: ccf.bufToStr(v), caller: request.caller.policy } };\n\
            }\n\
            export function sneaky(request) { t().set(ccf.strToBuf('x'), ccf.strToBuf('y')); return {}; }\n"}]
    });
    let r = app
        .call_json(
            Method::PUT,
            &uri("/app/userDefinedEndpoints"),
            &ADMIN,
            Some(bundle),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);

    // user_cert: a user's certificate is admitted, an anonymous caller is not.
    let put = |caller: Option<&'static str>| {
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                "/app/records/r%201",
                caller,
                Some(("text/plain", b"hello".to_vec())),
            )
            .await
        }
    };
    put(None)
        .await
        .expect_error(401, "InvalidAuthenticationInfo");
    let r = put(Some(READER.as_str())).await;
    assert_eq!(r.status, 204, "{}", r.json);
    let txid = ledger_core::TxId::parse(&r.txid().expect("a write names its transaction")).unwrap();
    assert_eq!(app.ledger.status(txid), ledger_store::TxStatus::Committed);

    let r = app
        .call(Method::GET, "/app/records/r%201", None, None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json,
        json!({"id": "r 1", "value": "hello", "caller": "no_auth"})
    );
    let r = app.call(Method::GET, "/app/records/none", None, None).await;
    assert_eq!(
        (r.status.as_u16(), r.json.clone()),
        (404, json!({"error": "no such record"}))
    );
    // A read-only endpoint cannot write: the script's error, nothing written.
    let r = app.call(Method::GET, "/app/sneaky", None, None).await;
    assert_eq!(r.status, 500, "{}", r.json);
    assert_eq!(app.ledger.kv_get("records", b"x").unwrap(), None);
    // Unknown paths are still 404, and built-in routes still answer.
    app.call(Method::GET, "/app/nothing", None, None)
        .await
        .expect_error(404, "ResourceNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_scripts_hold_their_slots_only() {
    let app = Arc::new(App::new());
    put_function(&app, "spin", "export function main() { while (true) {} }").await;
    // Scripts that each run until their 3-second limit, as many as there are execution slots
    // on a 2-core machine (more cores have more slots, and the check below still holds).
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                app.call_json(
                    Method::POST,
                    &uri("/app/userDefinedFunctions/spin:execute"),
                    &ADMIN,
                    Some(json!({"runtimeOptions": {"max_execution_time_ms": 3000}})),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Meanwhile writes commit and reads answer: neither needs an execution slot.
    let r = app
        .call_json(
            Method::POST,
            &uri("/app/transactions"),
            &CONTRIBUTOR,
            Some(json!({"contents": "written while scripts spin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let txid = r.txid().unwrap();
    let r = app
        .call_json(
            Method::GET,
            &uri(&format!("/app/transactions/{txid}")),
            &READER,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    put_function(&app, "quick", "export function main() { return 'ok' }").await;
    assert!(
        spinners.iter().all(|s| !s.is_finished()),
        "all of that happened while the runaway scripts were still running"
    );
    // Another execution gets a slot (at the latest when a runaway one ends).
    let r = app
        .call_json(
            Method::POST,
            &uri("/app/userDefinedFunctions/quick:execute"),
            &CONTRIBUTOR,
            None,
        )
        .await;
    assert_eq!(r.json["result"]["returnValue"], "ok", "{}", r.json);
    for spinner in spinners {
        let r = spinner.await.unwrap();
        assert_eq!(r.json["status"], "Failed", "{}", r.json);
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(message.contains("time limit of 3s"), "{message}");
    }
}

#[tokio::test]
async fn functions_read_the_newest_entry_of_a_collection_and_cannot_write_entries() {
    let app = App::new();
    for (collection, contents) in [
        ("subledger:0", "first"),
        ("subledger:0", "second"),
        ("orders", "o1"),
    ] {
        let path = if collection == "subledger:0" {
            uri("/app/transactions")
        } else {
            format!("{}&collectionId={collection}", uri("/app/transactions"))
        };
        let r = app
            .call_json(
                Method::POST,
                &path,
                &CONTRIBUTOR,
                Some(json!({"contents": contents})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    // ACL's documented example, and an iteration over the table.
    put_function(
        &app,
        "newest",
        "export function main(c) { const t = ccf.kv['public:confidentialledger.logs']; \
         const seen = []; t.forEach((v, k) => seen.push(ccf.bufToStr(k) + '=' + ccf.bufToStr(v))); \
         return ccf.bufToStr(t.get(ccf.strToBuf(c))) + ' ' + seen.join(','); }",
    )
    .await;
    let r = app
        .call_json(
            Method::POST,
            &uri("/app/userDefinedFunctions/newest:execute"),
            &CONTRIBUTOR,
            Some(json!({"arguments": ["subledger:0"]})),
        )
        .await;
    assert_eq!(
        r.json["result"]["returnValue"], "second orders=o1,subledger:0=second",
        "{}",
        r.json
    );
    put_function(
        &app,
        "forge",
        "export function main() { ccf.kv['public:confidentialledger.logs'].set(ccf.strToBuf('subledger:0'), ccf.strToBuf('forged')); }",
    )
    .await;
    let r = app
        .call_json(
            Method::POST,
            &uri("/app/userDefinedFunctions/forge:execute"),
            &CONTRIBUTOR,
            None,
        )
        .await;
    assert_eq!(r.json["status"], "Failed", "{}", r.json);
    assert!(r.txid().is_none());
}

#[tokio::test]
async fn the_function_list_is_paged() {
    let app = App::new();
    for i in 0..130 {
        put_function(&app, &format!("f{i:03}"), "export function main() {}").await;
    }
    let mut ids = Vec::new();
    let mut next = Some(uri("/app/userDefinedFunctions"));
    let mut pages = 0;
    while let Some(link) = next {
        let r = app.call_json(Method::GET, &link, &ADMIN, None).await;
        assert_eq!(r.status, 200, "{}", r.json);
        let page = r.json["functions"].as_array().unwrap();
        assert!(page.len() <= 100);
        ids.extend(page.iter().map(|f| f["id"].as_str().unwrap().to_owned()));
        next = r.json["nextLink"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!(pages, 2);
    let expected: Vec<String> = (0..130).map(|i| format!("f{i:03}")).collect();
    assert_eq!(ids, expected);
}
