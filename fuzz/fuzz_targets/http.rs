//! The whole REST personality in-process: `ledger_http::router` over a real ledger in a
//! temporary directory (on /dev/shm when available, so writes are cheap), fed short sequences
//! of requests with arbitrary methods, paths (biased toward the real routes and real
//! transaction ids), `api-version` values, query parameters, callers, content types, headers
//! and JSON-ish bodies. Writes really append to the ledger.
//!
//! Properties, for every response:
//! * handling never panics;
//! * the status is below 500, except 503 (busy / storage) and a 500 `InternalError` that
//!   reports a user-defined function's own failure ("Error while executing function …");
//! * every error (4xx/5xx) is JSON of ACL's shape `{"error":{"code":..,"message":..}}` with a
//!   non-empty code, and carries no transaction id;
//! * a JSON content type means a JSON body; a transaction id header is a canonical txid;
//! * a successful `POST /app/transactions` names a transaction the ledger reports committed.
#![no_main]

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use ledger_core::TxId;
use ledger_core::signing::EcSigningKey;
use ledger_http::roles::ALL_ACTIONS;
use ledger_http::users::{Role, user_write};
use ledger_http::{ApiConfig, ApiVersion, Caller, TRANSACTION_ID_HEADER, certificate_fingerprint};
use ledger_identity::Curve;
use ledger_identity::files::NodeFiles;
use ledger_store::{Genesis, Ledger, NodeIdentity, StoreConfig, TxStatus};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use tower::ServiceExt;

const LEDGER_ID: &str = "fuzzledger";

struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    ledger: Arc<Ledger>,
    users: [String; 4],
}

/// `CLEDGER_FUZZ_HTTP_TRACE=1` prints every request and response (to see what the fuzzer reaches).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("CLEDGER_FUZZ_HTTP_TRACE").is_some());

static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = std::env::var_os("CLEDGER_FUZZ_TMPDIR")
        .map(PathBuf::from)
        .or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            shm.is_dir().then_some(shm)
        })
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("cledger-fuzz-http-")
        .tempdir_in(base)
        .expect("temporary directory")
        .keep();
    extern "C" fn remove_dir() {
        let _ = std::fs::remove_dir_all(&*DIR);
    }
    // libFuzzer ends a run with exit(): statics are not dropped, but atexit handlers run.
    unsafe { libc::atexit(remove_dir) };
    dir
});

static APP: LazyLock<App> = LazyLock::new(|| {
    let dir = DIR.as_path();
    let files = NodeFiles::create(dir, Curve::P256, &[]).unwrap();
    let signing_key = EcSigningKey::from_pkcs8_pem(&files.node_key_pem).unwrap();
    let node_id = signing_key.node_id().to_hex();
    let node = NodeIdentity {
        signing_key,
        cert_pem: files.node_cert_pem.clone(),
        service_key: EcSigningKey::from_pkcs8_pem(&files.service_key_pem).unwrap(),
    };
    let users = [
        certificate_fingerprint(b"admin"),
        certificate_fingerprint(b"contributor"),
        certificate_fingerprint(b"reader"),
        certificate_fingerprint(b"stranger"),
    ];
    let genesis = Genesis {
        ledger_id: LEDGER_ID.into(),
        service_cert_pem: files.service_cert_pem.clone(),
        writes: vec![
            user_write(&users[0], Role::Administrator),
            user_write(&users[1], Role::Contributor),
            user_write(&users[2], Role::Reader),
        ],
    };
    let ledger = Arc::new(Ledger::create(dir, StoreConfig::default(), node, genesis).unwrap());
    let mut config = ApiConfig::new(LEDGER_ID.into(), files.service_cert_pem.clone(), node_id);
    config.max_entry_bytes = 1024;
    config.max_body_bytes = 1024 + 4096;
    config.max_collections = 64;
    let router = ledger_http::router(ledger.clone(), config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    App {
        rt,
        router,
        ledger,
        users,
    }
});

#[derive(Arbitrary, Debug)]
struct Input {
    requests: Vec<Req>,
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: Meth,
    path: PathSel,
    version: Version,
    params: Vec<(Key, Val)>,
    caller: Who,
    content_type: ContentType,
    body: BodySel,
    headers: Vec<(HeaderSel, String)>,
}

#[derive(Arbitrary, Debug)]
enum Meth {
    Get,
    Post,
    Patch,
    Put,
    Delete,
    Head,
    Options,
    Other(String),
}

/// A transaction id: a real recent one, a plausible one, or any text.
#[derive(Arbitrary, Debug)]
enum Id {
    Recent(u8),
    Plausible(u8, u16),
    Text(String),
}

/// A user id for paths: never the administrator, so the fuzzer cannot lock itself out.
#[derive(Arbitrary, Debug)]
enum UserId {
    Contributor,
    Reader,
    Stranger,
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum PathSel {
    Transactions,
    Current,
    Transaction(Id),
    Receipt(Id),
    Status(Id),
    Collections,
    CollectionTags,
    Users,
    User(UserId),
    LedgerUsers,
    LedgerUser(UserId),
    Roles,
    Constitution,
    Members,
    EnclaveQuotes,
    LedgerIdentity(Option<String>),
    /// User-defined functions and endpoints.
    Programs(u8),
    /// Any path; one that is not a valid URI is skipped.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Version {
    Known(u8),
    Missing,
    Text(String),
    Twice(u8, u8),
}

#[derive(Arbitrary, Debug)]
enum Key {
    CollectionId,
    FromTransactionId,
    ToTransactionId,
    Tag,
    Tags,
    RoleName,
    AfterUserId,
    AfterTag,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Val {
    Collection(u8),
    Txid(Id),
    Text(String),
    /// Sent without percent-encoding; skipped if that makes an invalid URI.
    Raw(String),
    Empty,
}

#[derive(Arbitrary, Debug)]
enum Who {
    Admin,
    Contributor,
    Reader,
    Stranger,
    Anonymous,
    Certificate(String),
    Token(String),
}

#[derive(Arbitrary, Debug)]
enum ContentType {
    None,
    Json,
    JsonCharset,
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderSel {
    Accept,
    ContentLength,
    TransferEncoding,
    Authorization,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Leaf {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
}

#[derive(Arbitrary, Debug)]
enum Json {
    Leaf(Leaf),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

#[derive(Arbitrary, Debug)]
enum RoleSel {
    Administrator,
    Contributor,
    Reader,
    Custom(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum BodySel {
    Empty,
    Entry {
        contents: String,
        extra: Option<(String, Leaf)>,
    },
    User(RoleSel),
    LedgerUser(Vec<RoleSel>),
    Roles {
        wrapped: bool,
        roles: Vec<(RoleSel, Vec<u8>)>,
    },
    Json(Json),
    Raw(Vec<u8>),
}

impl Leaf {
    fn value(&self) -> Value {
        match self {
            Leaf::Null => Value::Null,
            Leaf::Bool(b) => Value::Bool(*b),
            Leaf::Int(i) => Value::from(*i),
            Leaf::Str(s) => Value::String(s.clone()),
        }
    }
}

impl Json {
    fn value(&self, depth: usize) -> Value {
        match self {
            Json::Leaf(l) => l.value(),
            _ if depth > 8 => Value::Null,
            Json::Array(items) => items.iter().map(|j| j.value(depth + 1)).collect(),
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value(depth + 1)))
                    .collect(),
            ),
        }
    }
}

impl RoleSel {
    fn name(&self) -> String {
        match self {
            RoleSel::Administrator => "Administrator".into(),
            RoleSel::Contributor => "Contributor".into(),
            RoleSel::Reader => "Reader".into(),
            RoleSel::Custom(n) => format!("role{}", n % 4),
            RoleSel::Text(s) => s.clone(),
        }
    }
}

/// Percent-encodes what a URI cannot carry, plus the characters that delimit query parts.
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'/')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

fn id_text(id: &Id, ledger: &Ledger) -> String {
    match id {
        Id::Recent(back) => match ledger.committed() {
            Some(c) => format!(
                "{}.{}",
                c.view(),
                c.seqno().saturating_sub(u64::from(*back)).max(1)
            ),
            None => "1.1".into(),
        },
        Id::Plausible(view, seqno) => format!("{}.{}", view % 4, seqno),
        Id::Text(s) => enc(s),
    }
}

fn user_id(id: &UserId, users: &[String; 4]) -> String {
    match id {
        UserId::Contributor => users[1].clone(),
        UserId::Reader => users[2].clone(),
        UserId::Stranger => users[3].clone(),
        UserId::Text(s) if *s == users[0] => "x".into(),
        UserId::Text(s) => enc(s),
    }
}

fn path(p: &PathSel, app: &App) -> String {
    let ledger = &app.ledger;
    match p {
        PathSel::Transactions => "/app/transactions".into(),
        PathSel::Current => "/app/transactions/current".into(),
        PathSel::Transaction(id) => format!("/app/transactions/{}", id_text(id, ledger)),
        PathSel::Receipt(id) => format!("/app/transactions/{}/receipt", id_text(id, ledger)),
        PathSel::Status(id) => format!("/app/transactions/{}/status", id_text(id, ledger)),
        PathSel::Collections => "/app/collections".into(),
        PathSel::CollectionTags => "/app/collections/tags".into(),
        PathSel::Users => "/app/users".into(),
        PathSel::User(u) => format!("/app/users/{}", user_id(u, &app.users)),
        PathSel::LedgerUsers => "/app/ledgerUsers".into(),
        PathSel::LedgerUser(u) => format!("/app/ledgerUsers/{}", user_id(u, &app.users)),
        PathSel::Roles => "/app/roles".into(),
        PathSel::Constitution => "/app/governance/constitution".into(),
        PathSel::Members => "/app/governance/members".into(),
        PathSel::EnclaveQuotes => "/app/enclaveQuotes".into(),
        PathSel::LedgerIdentity(None) => format!("/ledgerIdentity/{LEDGER_ID}"),
        PathSel::LedgerIdentity(Some(s)) => format!("/ledgerIdentity/{}", enc(s)),
        PathSel::Programs(i) => {
            let all = [
                "/app/userDefinedFunctions",
                "/app/userDefinedFunctions/f1",
                "/app/userDefinedFunctions/f1:execute",
                "/app/userDefinedEndpoints",
                "/app/userDefinedEndpoints/runtimeOptions",
                "/app/userDefinedEndpoints/modules",
            ];
            all[usize::from(*i) % all.len()].into()
        }
        PathSel::Raw(s) => format!("/{s}"),
    }
}

fn version_param(v: &Version) -> Vec<String> {
    let known = |i: &u8| ApiVersion::ALL[usize::from(*i) % ApiVersion::ALL.len()].as_str();
    match v {
        Version::Known(i) => vec![format!("api-version={}", known(i))],
        Version::Missing => vec![],
        Version::Text(s) => vec![format!("api-version={}", enc(s))],
        Version::Twice(a, b) => vec![
            format!("api-version={}", known(a)),
            format!("api-version={}", known(b)),
        ],
    }
}

fn param(key: &Key, val: &Val, ledger: &Ledger) -> String {
    let key = match key {
        Key::CollectionId => "collectionId".into(),
        Key::FromTransactionId => "fromTransactionId".into(),
        Key::ToTransactionId => "toTransactionId".into(),
        Key::Tag => "tag".into(),
        Key::Tags => "tags".into(),
        Key::RoleName => "roleName".into(),
        Key::AfterUserId => "afterUserId".into(),
        Key::AfterTag => "afterTag".into(),
        Key::Raw(s) => enc(s),
    };
    let val = match val {
        Val::Collection(n) => format!("c{}", n % 8),
        Val::Txid(id) => id_text(id, ledger),
        Val::Text(s) => enc(s),
        Val::Raw(s) => s.clone(),
        Val::Empty => return key,
    };
    format!("{key}={val}")
}

fn body_bytes(b: &BodySel) -> Option<Vec<u8>> {
    let value = match b {
        BodySel::Empty => return None,
        BodySel::Raw(bytes) => return Some(bytes.clone()),
        BodySel::Entry { contents, extra } => {
            let mut map = serde_json::Map::new();
            map.insert("contents".into(), Value::String(contents.clone()));
            if let Some((k, v)) = extra {
                map.insert(k.clone(), v.value());
            }
            Value::Object(map)
        }
        BodySel::User(role) => serde_json::json!({"assignedRole": role.name()}),
        BodySel::LedgerUser(roles) => serde_json::json!({
            "assignedRoles": roles.iter().map(RoleSel::name).collect::<Vec<_>>()
        }),
        BodySel::Roles { wrapped, roles } => {
            let list: Vec<Value> = roles
                .iter()
                .map(|(name, actions)| {
                    let actions: Vec<&str> = actions
                        .iter()
                        .map(|a| ALL_ACTIONS[usize::from(*a) % ALL_ACTIONS.len()])
                        .collect();
                    serde_json::json!({"roleName": name.name(), "roleActions": actions})
                })
                .collect();
            if *wrapped {
                serde_json::json!({ "roles": list })
            } else {
                Value::Array(list)
            }
        }
        BodySel::Json(j) => j.value(0),
    };
    Some(value.to_string().into_bytes())
}

/// Builds the request, or `None` when the fuzz input does not make a valid HTTP request.
/// The caller of a certificate user; the users are made-up fingerprints, valid at all times.
fn certificate(fingerprint: &str) -> Caller {
    Caller::Certificate {
        fingerprint: fingerprint.into(),
        validity: Some(ledger_http::auth::Validity {
            not_before_unix: 0,
            not_after_unix: u64::MAX,
        }),
        pem: None,
    }
}

fn request(req: &Req, app: &App) -> Option<Request<Body>> {
    let method = match &req.method {
        Meth::Get => Method::GET,
        Meth::Post => Method::POST,
        Meth::Patch => Method::PATCH,
        Meth::Put => Method::PUT,
        Meth::Delete => Method::DELETE,
        Meth::Head => Method::HEAD,
        Meth::Options => Method::OPTIONS,
        Meth::Other(m) => Method::from_bytes(m.as_bytes()).ok()?,
    };
    let mut query = version_param(&req.version);
    query.extend(
        req.params
            .iter()
            .take(6)
            .map(|(k, v)| param(k, v, &app.ledger)),
    );
    let mut uri = path(&req.path, app);
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(&query.join("&"));
    }
    let mut builder = Request::builder().method(method).uri(uri);
    let content_type = match &req.content_type {
        ContentType::None => None,
        ContentType::Json => Some("application/json".to_owned()),
        ContentType::JsonCharset => Some("application/json; charset=utf-8".to_owned()),
        ContentType::Text(t) => Some(t.clone()),
    };
    if let Some(ct) = content_type {
        builder = builder.header("content-type", HeaderValue::from_str(&ct).ok()?);
    }
    for (name, value) in req.headers.iter().take(4) {
        let name = match name {
            HeaderSel::Accept => HeaderName::from_static("accept"),
            // Lying about the body's length or framing must not confuse the handlers.
            HeaderSel::ContentLength => HeaderName::from_static("content-length"),
            HeaderSel::TransferEncoding => HeaderName::from_static("transfer-encoding"),
            HeaderSel::Authorization => HeaderName::from_static("authorization"),
            HeaderSel::Raw(n) => HeaderName::from_bytes(n.as_bytes()).ok()?,
        };
        builder = builder.header(name, HeaderValue::from_str(value).ok()?);
    }
    let body = body_bytes(&req.body).map_or_else(Body::empty, Body::from);
    let mut request = builder.body(body).ok()?;
    let caller = match &req.caller {
        Who::Admin => Some(certificate(&app.users[0])),
        Who::Contributor => Some(certificate(&app.users[1])),
        Who::Reader => Some(certificate(&app.users[2])),
        Who::Stranger => Some(certificate(&app.users[3])),
        Who::Anonymous => None,
        Who::Certificate(fp) => Some(certificate(fp)),
        Who::Token(oid) => Some(Caller::Token {
            user_id: oid.as_str().into(),
        }),
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    Some(request)
}

fuzz_target!(|input: Input| {
    let app = &*APP;
    for req in input.requests.iter().take(4) {
        let Some(request) = request(req, app) else {
            continue;
        };
        let method = request.method().clone();
        let uri = request.uri().clone();
        let is_create = method == Method::POST && uri.path() == "/app/transactions";
        let (status, headers, body) = app.rt.block_on(async {
            let response = app.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, headers, body)
        });
        let what = || format!("{method} {uri} -> {status}: {}", String::from_utf8_lossy(&body));
        if *TRACE {
            eprintln!("{}", what());
        }

        let user_code_failed = status == StatusCode::INTERNAL_SERVER_ERROR
            && serde_json::from_slice::<Value>(&body).is_ok_and(|j| {
                j["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Error while executing function"))
            });
        assert!(
            status.as_u16() < 500 || status == StatusCode::SERVICE_UNAVAILABLE || user_code_failed,
            "server error: {}",
            what()
        );
        let txid_header = headers
            .get(TRANSACTION_ID_HEADER)
            .map(|v| v.to_str().ok().and_then(|t| TxId::parse(t).ok()));
        if let Some(parsed) = &txid_header {
            assert!(parsed.is_some(), "bad transaction id header: {}", what());
        }
        let is_json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if method == Method::HEAD {
            continue;
        }
        if status.is_client_error() || status.is_server_error() {
            assert!(is_json, "error without JSON content type: {}", what());
            let json: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", what()));
            let error = &json["error"];
            let code = error["code"].as_str().unwrap_or_default();
            assert!(!code.is_empty(), "error without a code: {}", what());
            assert!(error["message"].is_string(), "error without a message: {}", what());
            assert!(txid_header.is_none(), "error with a transaction id: {}", what());
        } else if is_json {
            serde_json::from_slice::<Value>(&body)
                .unwrap_or_else(|e| panic!("JSON content type, body is not JSON ({e}): {}", what()));
        }
        if is_create && status == StatusCode::OK {
            let txid = txid_header.flatten().unwrap_or_else(|| panic!("write without txid: {}", what()));
            assert_eq!(app.ledger.status(txid), TxStatus::Committed, "{}", what());
        }
    }
});
