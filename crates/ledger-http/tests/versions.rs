//! Version-dependent shapes of the newer ACL api-versions (acl-api.md §2.5–§2.9), driven
//! through the router in-process: application claims, the user lists, multi-role users,
//! tags, user-defined roles and their enforcement, and the version and role gates of the
//! user-defined code routes.

use axum::http::Method;
use ledger_core::claims::ApplicationClaim;
use ledger_core::receipt::{Receipt, verify_receipt};
use serde_json::{Value, json};

mod common;
use common::*;

const STABLE: &str = "2022-05-13";
const CLAIMS: &str = "2023-01-18-preview";
const USERS_V: &str = "2024-01-26-preview";
const UDE: &str = "2024-08-22-preview";
const TAGS: &str = "2024-12-09-preview";
const NEWEST: &str = "2026-02-23";
const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn app() -> App {
    App::new()
}

impl Reply {
    /// A success with a transaction id; the JSON body.
    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "body: {}", self.json);
        assert!(self.txid().is_some());
        &self.json
    }
}

impl App {
    async fn get(&self, uri: &str, caller: &str) -> Reply {
        self.call_json(Method::GET, uri, caller, None).await
    }

    async fn post(&self, version: &str, query: &str, contents: &str) -> Reply {
        let uri = format!("/app/transactions?api-version={version}{query}");
        self.call_json(
            Method::POST,
            &uri,
            &CONTRIBUTOR,
            Some(json!({"contents": contents})),
        )
        .await
    }

    async fn write(&self, version: &str, query: &str, contents: &str) -> String {
        let r = self.post(version, query, contents).await;
        r.ok();
        r.txid().unwrap()
    }

    async fn receipt(&self, txid: &str, version: &str) -> Value {
        let uri = format!("/app/transactions/{txid}/receipt?api-version={version}");
        self.get(&uri, &READER).await.ok().clone()
    }
}

fn claims_of(response: &Value) -> Vec<ApplicationClaim> {
    serde_json::from_value(response["applicationClaims"].clone()).unwrap()
}

#[tokio::test]
async fn application_claims_depend_on_the_write_version() {
    let app = app();
    let with = app
        .write(CLAIMS, "&collectionId=c1", "claimed contents")
        .await;
    let without = app
        .write(STABLE, "&collectionId=c1", "plain contents")
        .await;
    let newest = app.write(NEWEST, "", "newest stable").await;

    for (txid, claimed) in [(&with, true), (&without, false), (&newest, true)] {
        for version in [STABLE, CLAIMS, USERS_V, TAGS, NEWEST] {
            let r = app.receipt(txid, version).await;
            let digest = r["receipt"]["leafComponents"]["claimsDigest"]
                .as_str()
                .unwrap();
            // The digest is the entry's, whatever version asks for the receipt.
            assert_eq!(digest != ZERO, claimed, "{txid} via {version}: {r}");
            let shows = matches!(version, CLAIMS | NEWEST);
            assert_eq!(
                r.get("applicationClaims").is_some(),
                claimed && shows,
                "{txid} via {version}: {r}"
            );
            let receipt = Receipt::from_value(&r["receipt"]).unwrap();
            verify_receipt(&receipt, &app.files.service_cert_pem, None).unwrap();
        }
    }

    let r = app.receipt(&with, CLAIMS).await;
    let claims = claims_of(&r);
    assert_eq!(
        r["applicationClaims"][0]["ledgerEntry"]["contents"],
        "claimed contents"
    );
    assert_eq!(
        r["applicationClaims"][0]["ledgerEntry"]["collectionId"],
        "c1"
    );
    assert_eq!(r["applicationClaims"][0]["kind"], "LedgerEntry");
    assert_eq!(
        r["applicationClaims"][0]["ledgerEntry"]["protocol"],
        "LedgerEntryV1"
    );
    let receipt = Receipt::from_value(&r["receipt"]).unwrap();
    verify_receipt(&receipt, &app.files.service_cert_pem, Some(&claims)).unwrap();

    // Altered contents (or collection) no longer match the receipt's claims digest.
    for (field, value) in [("contents", "claimed contents!"), ("collectionId", "c2")] {
        let mut altered = r["applicationClaims"].clone();
        altered[0]["ledgerEntry"][field] = json!(value);
        let altered: Vec<ApplicationClaim> = serde_json::from_value(altered).unwrap();
        assert!(verify_receipt(&receipt, &app.files.service_cert_pem, Some(&altered)).is_err());
    }

    // The default collection's claim names the effective collection id.
    let r = app.receipt(&newest, NEWEST).await;
    assert_eq!(
        r["applicationClaims"][0]["ledgerEntry"]["collectionId"],
        "subledger:0"
    );
    let receipt = Receipt::from_value(&r["receipt"]).unwrap();
    verify_receipt(&receipt, &app.files.service_cert_pem, Some(&claims_of(&r))).unwrap();

    // Keys are fresh per write.
    let again = app
        .write(CLAIMS, "&collectionId=c1", "claimed contents")
        .await;
    let r2 = app.receipt(&again, CLAIMS).await;
    assert_ne!(
        r2["applicationClaims"][0]["ledgerEntry"]["secretKey"],
        r["applicationClaims"][0]["ledgerEntry"]["secretKey"]
    );
}

#[tokio::test]
async fn user_list_shapes_per_version() {
    let app = app();
    let uri = |v: &str| format!("/app/users?api-version={v}");
    app.get(&uri(STABLE), &ADMIN)
        .await
        .expect_error(404, "ResourceNotFound");
    app.get(&uri(CLAIMS), &ADMIN)
        .await
        .expect_error(404, "ResourceNotFound");
    app.get(&uri(USERS_V), &READER)
        .await
        .expect_error(403, "NotAllowed");
    app.get(&uri(USERS_V), &CONTRIBUTOR)
        .await
        .expect_error(403, "NotAllowed");

    let r = app.get(&uri(USERS_V), &ADMIN).await;
    let users = r.ok()["users"].as_array().unwrap().clone();
    assert!(r.json.get("ledgerUsers").is_none());
    assert_eq!(users.len(), 3);
    assert!(users.contains(&json!({"assignedRole": "Administrator", "userId": *ADMIN})));
    assert!(users.contains(&json!({"assignedRole": "Reader", "userId": *READER})));
    for v in [UDE, TAGS, NEWEST] {
        let r = app.get(&uri(v), &ADMIN).await;
        let users = r.ok()["ledgerUsers"].as_array().unwrap();
        assert!(r.json.get("users").is_none());
        assert_eq!(users.len(), 3);
        assert!(users.contains(&json!({"assignedRole": "Contributor", "userId": *CONTRIBUTOR})));
    }
}

#[tokio::test]
async fn user_lists_page_with_the_version_s_next_link() {
    let app = app();
    for i in 0..120 {
        let uri = format!("/app/users/user-{i:03}?api-version={STABLE}");
        app.call_json(
            Method::PATCH,
            &uri,
            &ADMIN,
            Some(json!({"assignedRole": "Reader"})),
        )
        .await
        .ok();
    }
    for (path, key, version) in [
        ("/app/users", "users", USERS_V),
        ("/app/users", "ledgerUsers", NEWEST),
        ("/app/ledgerUsers", "ledgerUsers", TAGS),
    ] {
        let mut next = Some(format!("{path}?api-version={version}"));
        let mut seen = Vec::new();
        let mut pages = 0;
        while let Some(link) = next {
            let r = app.get(&link, &ADMIN).await;
            let page = r.ok();
            assert!(page.get("@nextLink").is_none());
            for item in page[key].as_array().unwrap() {
                seen.push(item["userId"].as_str().unwrap().to_owned());
            }
            next = page["nextLink"].as_str().map(str::to_owned);
            pages += 1;
        }
        assert_eq!(pages, 2, "{path} {version}");
        assert_eq!(seen.len(), 123);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 123);
    }
}

#[tokio::test]
async fn multi_role_users() {
    let app = app();
    let one = |v: &str| format!("/app/ledgerUsers/alice?api-version={v}");
    app.call_json(
        Method::PATCH,
        &one(UDE),
        &ADMIN,
        Some(json!({"assignedRoles": ["Reader"]})),
    )
    .await
    .expect_error(404, "ResourceNotFound");
    let r = app
        .call_json(
            Method::PATCH,
            &one(TAGS),
            &ADMIN,
            Some(json!({"assignedRoles": ["Reader", "Contributor", "Reader"]})),
        )
        .await;
    assert_eq!(
        r.ok(),
        &json!({"assignedRoles": ["Reader", "Contributor"], "userId": "alice"})
    );
    let r = app.get(&one(NEWEST), &ADMIN).await;
    assert_eq!(r.ok()["assignedRoles"], json!(["Reader", "Contributor"]));
    // The single-role view shows the highest role, and the user may write (union of roles).
    let r = app
        .get(&format!("/app/users/alice?api-version={STABLE}"), &ADMIN)
        .await;
    assert_eq!(r.ok()["assignedRole"], "Contributor");
    let r = app
        .call_json(
            Method::POST,
            &format!("/app/transactions?api-version={STABLE}"),
            "alice",
            Some(json!({"contents": "by alice"})),
        )
        .await;
    r.ok();
    let r = app
        .get(&format!("/app/ledgerUsers?api-version={TAGS}"), &ADMIN)
        .await;
    assert!(
        r.ok()["ledgerUsers"]
            .as_array()
            .unwrap()
            .contains(&json!({"assignedRoles": ["Reader", "Contributor"], "userId": "alice"}))
    );

    for bad in [
        json!({"assignedRoles": []}),
        json!({"assignedRoles": ["Auditor"]}),
        json!({"assignedRoles": "Reader"}),
    ] {
        app.call_json(Method::PATCH, &one(TAGS), &ADMIN, Some(bad))
            .await
            .expect_error(400, "InvalidInput");
    }
    // The last administrator keeps the role.
    let me = format!("/app/ledgerUsers/{}?api-version={TAGS}", *ADMIN);
    app.call_json(
        Method::PATCH,
        &me,
        &ADMIN,
        Some(json!({"assignedRoles": ["Reader"]})),
    )
    .await
    .expect_error(400, "LastAdministrator");
    app.call_json(
        Method::PATCH,
        &me,
        &CONTRIBUTOR,
        Some(json!({"assignedRoles": ["Reader"]})),
    )
    .await
    .expect_error(403, "NotAllowed");

    let r = app
        .call_json(Method::DELETE, &one(TAGS), &ADMIN, None)
        .await;
    assert_eq!(r.status, 204);
    app.get(&one(TAGS), &ADMIN)
        .await
        .expect_error(404, "ResourceNotFound");
}

#[tokio::test]
async fn tags_write_filter_and_list() {
    let app = app();
    app.post(STABLE, "&tags=a", "x")
        .await
        .expect_error(400, "InvalidQueryParameterValue");
    app.get(
        &format!("/app/transactions?api-version={UDE}&tag=a"),
        &READER,
    )
    .await
    .expect_error(400, "InvalidQueryParameterValue");
    app.get(&format!("/app/collections/tags?api-version={UDE}"), &READER)
        .await
        .expect_error(404, "ResourceNotFound");
    for bad in [
        "&tags=",
        "&tags=a,,b",
        &format!("&tags={}", "x".repeat(257)),
    ] {
        app.post(TAGS, bad, "x")
            .await
            .expect_error(400, "InvalidQueryParameterValue");
    }

    let t1 = app
        .write(TAGS, "&collectionId=c&tags=alpha,beta", "one")
        .await;
    let t2 = app.write(NEWEST, "&collectionId=c&tags=beta", "two").await;
    let _t3 = app.write(TAGS, "&collectionId=c", "three").await;
    let _t4 = app
        .write(TAGS, "&collectionId=other&tags=gamma", "four")
        .await;

    let list = |tag: &str| format!("/app/transactions?api-version={TAGS}&collectionId=c&tag={tag}");
    let txids = |v: &Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["transactionId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        txids(app.get(&list("alpha"), &READER).await.ok()),
        [t1.as_str()]
    );
    assert_eq!(txids(app.get(&list("beta"), &READER).await.ok()), [t1, t2]);
    assert!(txids(app.get(&list("gamma"), &READER).await.ok()).is_empty());

    let tags = |c: &str, v: &str| format!("/app/collections/tags?api-version={v}&collectionId={c}");
    assert_eq!(
        app.get(&tags("c", TAGS), &READER).await.ok(),
        &json!({"tags": ["alpha", "beta"]})
    );
    assert_eq!(
        app.get(&tags("other", NEWEST), &READER).await.ok(),
        &json!({"tags": ["gamma"]})
    );
    assert_eq!(
        app.get(&tags("none", NEWEST), &READER).await.ok(),
        &json!({"tags": []})
    );
}

#[tokio::test]
async fn tag_filter_pages_keep_the_tag() {
    let app = app();
    for i in 0..105 {
        let tags = if i % 2 == 0 {
            "&tags=even"
        } else {
            "&tags=odd"
        };
        app.write(TAGS, tags, &format!("n{i}")).await;
    }
    let mut next = Some(format!("/app/transactions?api-version={TAGS}&tag=even"));
    let mut count = 0;
    while let Some(link) = next {
        let r = app.get(&link, &READER).await;
        let page = r.ok();
        for e in page["entries"].as_array().unwrap() {
            let n: usize = e["contents"].as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(n % 2, 0);
            count += 1;
        }
        next = page["nextLink"].as_str().map(str::to_owned);
        if let Some(link) = &next {
            assert!(link.contains("tag=even"), "{link}");
        }
    }
    assert_eq!(count, 53);
    let _ = &app.ledger;
}

#[tokio::test]
async fn user_defined_code_routes_need_their_version_and_role() {
    let app = app();
    for (method, path, since) in [
        (
            Method::GET,
            "/app/userDefinedEndpoints",
            "2024-08-22-preview",
        ),
        (
            Method::GET,
            "/app/userDefinedEndpoints/runtimeOptions",
            "2024-08-22-preview",
        ),
        (
            Method::GET,
            "/app/userDefinedEndpoints/runTimeOptions",
            "2024-08-22-preview",
        ),
        (
            Method::GET,
            "/app/userDefinedEndpoints/modules",
            "2024-08-22-preview",
        ),
        (
            Method::GET,
            "/app/userDefinedFunctions",
            "2024-12-09-preview",
        ),
        (
            Method::GET,
            "/app/userDefinedFunctions/f1",
            "2024-12-09-preview",
        ),
    ] {
        let old = format!("{path}?api-version=2024-01-26-preview");
        let r = app.call_json(method.clone(), &old, &ADMIN, None).await;
        r.expect_error(404, "ResourceNotFound");
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(since), "{message}");
        let uri = format!("{path}?api-version={NEWEST}");
        app.call_json(method, &uri, &READER, None)
            .await
            .expect_error(403, "NotAllowed");
    }
    // Administrators read them; a contributor may run functions but not change them.
    let uri = |path: &str| format!("{path}?api-version={NEWEST}");
    let r = app
        .call_json(Method::GET, &uri("/app/userDefinedEndpoints"), &ADMIN, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json,
        json!({"metadata": {"endpoints": {}}, "modules": []})
    );
    app.call_json(
        Method::PUT,
        &uri("/app/userDefinedFunctions/f1"),
        &CONTRIBUTOR,
        Some(json!({"code": "export function main() {}"})),
    )
    .await
    .expect_error(403, "NotAllowed");
    app.call_json(
        Method::POST,
        &uri("/app/userDefinedFunctions/f1:execute"),
        &CONTRIBUTOR,
        None,
    )
    .await
    .expect_error(404, "ResourceNotFound");
}

const AUDITOR: &str = "auditor";
const A: &str = "Microsoft.ConfidentialLedger/ledger/";

#[tokio::test]
async fn user_defined_roles_are_enforced() {
    let app = app();
    let roles = |v: &str, q: &str| format!("/app/roles?api-version={v}{q}");
    let define = |actions: &[&str]| {
        json!([{"roleName": AUDITOR,
                "roleActions": actions.iter().map(|a| format!("{A}{a}")).collect::<Vec<_>>()}])
    };
    // Version gates, validation, authorization of the roles routes themselves.
    app.call_json(
        Method::PUT,
        &roles(USERS_V, ""),
        &ADMIN,
        Some(define(&["users/read"])),
    )
    .await
    .expect_error(404, "ResourceNotFound");
    app.call_json(
        Method::PUT,
        &roles(UDE, ""),
        &READER,
        Some(define(&["users/read"])),
    )
    .await
    .expect_error(403, "NotAllowed");
    for bad in [
        json!([{"roleName": "auditor", "roleActions": ["Microsoft.ConfidentialLedger/ledger/everything"]}]),
        json!([{"roleName": "Reader", "roleActions": []}]),
        json!([{"roleName": "", "roleActions": []}]),
        json!([{"roleName": "x"}]),
        json!([]),
        json!("auditor"),
    ] {
        app.call_json(Method::PUT, &roles(UDE, ""), &ADMIN, Some(bad))
            .await
            .expect_error(400, "InvalidInput");
    }
    app.call_json(
        Method::PATCH,
        &roles(UDE, ""),
        &ADMIN,
        Some(define(&["users/read"])),
    )
    .await
    .expect_error(404, "ResourceNotFound");

    // 2024-08-22-preview: PUT answers 200 with no body; GET returns one Role.
    let r = app
        .call_json(
            Method::PUT,
            &roles(UDE, ""),
            &ADMIN,
            Some(define(&["transactions/read", "users/read"])),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("x-ms-ccf-transaction-id").is_some());
    assert_eq!(r.json, Value::Null);
    let expected = json!({"roleActions": [format!("{A}transactions/read"), format!("{A}users/read")],
                          "roleName": AUDITOR});
    let r = app.get(&roles(UDE, "&roleName=auditor"), &ADMIN).await;
    assert_eq!(r.ok(), &expected);
    let r = app.get(&roles(TAGS, "&roleName=auditor"), &ADMIN).await;
    assert_eq!(r.ok(), &json!([expected]));
    let r = app.get(&roles(NEWEST, ""), &ADMIN).await;
    let names: Vec<&str> = r
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["roleName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Reader", "Contributor", "Administrator", AUDITOR]);
    app.get(&roles(TAGS, "&roleName=nobody"), &ADMIN)
        .await
        .expect_error(404, "ResourceNotFound");

    // bob holds only the auditor role: exactly its actions.
    let bob = format!("/app/ledgerUsers/bob?api-version={TAGS}");
    app.call_json(
        Method::PATCH,
        &bob,
        &ADMIN,
        Some(json!({"assignedRoles": [AUDITOR]})),
    )
    .await
    .ok();
    let write = format!("/app/transactions?api-version={STABLE}");
    let entry = || Some(json!({"contents": "by bob"}));
    app.get(&format!("/app/transactions?api-version={STABLE}"), "bob")
        .await
        .ok();
    app.get(&format!("/app/users?api-version={TAGS}"), "bob")
        .await
        .ok();
    app.get(&format!("/app/collections?api-version={STABLE}"), "bob")
        .await
        .expect_error(403, "NotAllowed");
    app.call_json(Method::POST, &write, "bob", entry())
        .await
        .expect_error(403, "NotAllowed");
    app.call_json(
        Method::PATCH,
        &bob,
        "bob",
        Some(json!({"assignedRoles": ["Administrator"]})),
    )
    .await
    .expect_error(403, "NotAllowed");

    // PATCH replaces the action list (2026-02-23: with a body); the next request sees it.
    let r = app
        .call_json(
            Method::PATCH,
            &roles(NEWEST, ""),
            &ADMIN,
            Some(define(&["transactions/write"])),
        )
        .await;
    assert_eq!(
        r.ok(),
        &json!({"roles": [{"roleActions": [format!("{A}transactions/write")], "roleName": AUDITOR}]})
    );
    app.call_json(Method::POST, &write, "bob", entry())
        .await
        .ok();
    app.get(&format!("/app/transactions?api-version={STABLE}"), "bob")
        .await
        .expect_error(403, "NotAllowed");

    // The union of several roles.
    app.call_json(
        Method::PATCH,
        &bob,
        &ADMIN,
        Some(json!({"assignedRoles": [AUDITOR, "Reader"]})),
    )
    .await
    .ok();
    app.get(&format!("/app/collections?api-version={STABLE}"), "bob")
        .await
        .ok();
    app.call_json(Method::POST, &write, "bob", entry())
        .await
        .ok();
    app.get(&format!("/app/users?api-version={TAGS}"), "bob")
        .await
        .expect_error(403, "NotAllowed");

    // A role in use cannot be deleted; built-ins never.
    app.call_json(
        Method::DELETE,
        &roles(NEWEST, "&roleName=auditor"),
        &ADMIN,
        None,
    )
    .await
    .expect_error(400, "InvalidInput");
    app.call_json(
        Method::DELETE,
        &roles(NEWEST, "&roleName=Reader"),
        &ADMIN,
        None,
    )
    .await
    .expect_error(400, "InvalidInput");
    app.call_json(
        Method::PATCH,
        &bob,
        &ADMIN,
        Some(json!({"assignedRoles": ["Reader"]})),
    )
    .await
    .ok();
    let r = app
        .call_json(
            Method::DELETE,
            &roles(NEWEST, "&roleName=auditor"),
            &ADMIN,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.call_json(
        Method::DELETE,
        &roles(NEWEST, "&roleName=auditor"),
        &ADMIN,
        None,
    )
    .await
    .expect_error(404, "ResourceNotFound");
    // Older versions answer 200 to DELETE.
    app.call_json(Method::PUT, &roles(TAGS, ""), &ADMIN, Some(define(&[])))
        .await;
    let r = app
        .call_json(
            Method::DELETE,
            &roles(TAGS, "&roleName=auditor"),
            &ADMIN,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // An undefined role cannot be assigned.
    app.call_json(
        Method::PATCH,
        &bob,
        &ADMIN,
        Some(json!({"assignedRoles": [AUDITOR]})),
    )
    .await
    .expect_error(400, "InvalidInput");
}

/// At most 10,000 distinct tags per collection: entries with tags already in use are still
/// accepted at the cap; a new one is refused and nothing is written.
#[tokio::test]
async fn tag_capacity_is_enforced_per_collection() {
    const CAP: usize = 10_000;
    const PER_ENTRY: usize = 64;
    let app = app();
    let tag_list = |range: std::ops::Range<usize>| {
        range.map(|i| format!("t{i}")).collect::<Vec<_>>().join(",")
    };
    for start in (0..CAP).step_by(PER_ENTRY) {
        let query = format!(
            "&collectionId=capped&tags={}",
            tag_list(start..(start + PER_ENTRY).min(CAP))
        );
        app.write(TAGS, &query, "tagged").await;
    }
    assert_eq!(app.ledger.tags("capped").unwrap().len(), CAP);
    app.write(TAGS, "&collectionId=capped&tags=t0,t9999", "reuses tags")
        .await;
    let before = app.ledger.committed();
    app.post(
        TAGS,
        "&collectionId=capped&tags=t1,brand-new",
        "one tag too many",
    )
    .await
    .expect_error(400, "TagCapacityExceeded");
    assert_eq!(app.ledger.committed(), before, "nothing was written");
    // The cap counts per collection: another collection takes new tags.
    app.write(TAGS, "&collectionId=other&tags=brand-new", "elsewhere")
        .await;
}

/// PostgreSQL's ADMIN OPTION rule: a user may only grant or take away a role whose every
/// action its own roles allow, and only give a role (or take from it) actions it holds.
/// Refused with 403 `InsufficientPrivileges` naming the role or action; nothing is written.
#[tokio::test]
async fn nobody_grants_what_they_do_not_hold() {
    let app = app();
    let roles = format!("/app/roles?api-version={TAGS}");
    let user = |id: &str| format!("/app/ledgerUsers/{id}?api-version={TAGS}");
    let single = |id: &str| format!("/app/users/{id}?api-version={STABLE}");
    let define = |name: &str, actions: &[&str]| {
        json!([{"roleName": name,
                "roleActions": actions.iter().map(|a| format!("{A}{a}")).collect::<Vec<_>>()}])
    };
    let committed = |app: &App| app.ledger.committed();
    #[track_caller]
    fn refused(r: &Reply, names: &str) {
        r.expect_error(403, "InsufficientPrivileges");
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "expected {names:?} in {message}");
    }

    // mallory may manage users and nothing else.
    app.call_json(
        Method::PUT,
        &roles,
        &ADMIN,
        Some(define(
            "userAdmin",
            &["users/read", "users/write", "users/delete"],
        )),
    )
    .await
    .ok();
    app.call_json(
        Method::PATCH,
        &user("mallory"),
        &ADMIN,
        Some(json!({"assignedRoles": ["userAdmin"]})),
    )
    .await
    .ok();
    let before = committed(&app);
    // She cannot make herself (or anyone) Administrator, in either API shape.
    let r = app
        .call_json(
            Method::PATCH,
            &single("mallory"),
            "mallory",
            Some(json!({"assignedRole": "Administrator"})),
        )
        .await;
    refused(&r, "'Administrator'");
    let r = app
        .call_json(
            Method::PATCH,
            &user("mallory"),
            "mallory",
            Some(json!({"assignedRoles": ["userAdmin", "Administrator"]})),
        )
        .await;
    refused(&r, "'Administrator'");
    // Nor grant Reader, whose actions she lacks.
    let r = app
        .call_json(
            Method::PATCH,
            &user("trent"),
            "mallory",
            Some(json!({"assignedRoles": ["Reader"]})),
        )
        .await;
    refused(&r, "'Reader'");
    // Nor take a role she does not hold away from someone: demote or delete an administrator
    // or a contributor.
    let r = app
        .call_json(
            Method::PATCH,
            &single(&ADMIN),
            "mallory",
            Some(json!({"assignedRole": "Reader"})),
        )
        .await;
    refused(&r, "'Administrator'");
    let r = app
        .call_json(Method::DELETE, &single(&CONTRIBUTOR), "mallory", None)
        .await;
    refused(&r, "'Contributor'");
    assert_eq!(committed(&app), before, "a refused change was written");
    assert_eq!(
        app.get(&user("mallory"), &ADMIN).await.ok()["assignedRoles"],
        json!(["userAdmin"])
    );
    // What she holds, she may grant.
    let r = app
        .call_json(
            Method::PATCH,
            &user("trent"),
            "mallory",
            Some(json!({"assignedRoles": ["userAdmin"]})),
        )
        .await;
    assert_eq!(r.ok()["assignedRoles"], json!(["userAdmin"]));

    // eve may define roles: not with actions she lacks, not even on her own role.
    app.call_json(
        Method::PUT,
        &roles,
        &ADMIN,
        Some(define(
            "roleAdmin",
            &["roles/read", "roles/write", "roles/delete"],
        )),
    )
    .await
    .ok();
    app.call_json(
        Method::PATCH,
        &user("eve"),
        &ADMIN,
        Some(json!({"assignedRoles": ["roleAdmin"]})),
    )
    .await
    .ok();
    let everything: Vec<&str> = ledger_http::roles::ALL_ACTIONS
        .iter()
        .map(|a| a.strip_prefix(A).unwrap())
        .collect();
    let before = committed(&app);
    let r = app
        .call_json(
            Method::PATCH,
            &roles,
            "eve",
            Some(define("roleAdmin", &everything)),
        )
        .await;
    refused(&r, &format!("{A}users/write"));
    let r = app
        .call_json(
            Method::PUT,
            &roles,
            "eve",
            Some(define("writer", &["roles/read", "transactions/write"])),
        )
        .await;
    refused(&r, &format!("{A}transactions/write"));
    // Nor strip actions she lacks from a role (or delete it).
    let r = app
        .call_json(Method::PUT, &roles, "eve", Some(define("userAdmin", &[])))
        .await;
    refused(&r, &format!("{A}users/write"));
    let r = app
        .call_json(
            Method::DELETE,
            &format!("{roles}&roleName=userAdmin"),
            "eve",
            None,
        )
        .await;
    // (userAdmin is in use, but her privileges are checked first.)
    refused(&r, &format!("{A}users/write"));
    assert_eq!(committed(&app), before, "a refused change was written");
    let r = app
        .get(&format!("{roles}&roleName=roleAdmin"), &ADMIN)
        .await;
    assert_eq!(r.ok()[0]["roleActions"].as_array().unwrap().len(), 3);
    // Roles made of actions she holds are fine.
    app.call_json(
        Method::PUT,
        &roles,
        "eve",
        Some(define("roleReader", &["roles/read"])),
    )
    .await
    .ok();

    // Built-in roles cannot be redefined or deleted, in any letter case.
    for name in ["Administrator", "administrator", "READER"] {
        app.call_json(Method::PUT, &roles, &ADMIN, Some(define(name, &[])))
            .await
            .expect_error(400, "InvalidInput");
        app.call_json(
            Method::DELETE,
            &format!("{roles}&roleName={name}"),
            &ADMIN,
            None,
        )
        .await
        .expect_error(400, "InvalidInput");
    }
}
