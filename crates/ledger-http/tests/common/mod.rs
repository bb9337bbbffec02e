//! The test app shared by the in-process suites: a real ledger in a temporary directory with
//! an administrator, a contributor and a reader registered at genesis, behind the router, and
//! the request/response helpers both suites use.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use ledger_core::signing::EcSigningKey;
use ledger_http::auth::Validity;
use ledger_http::users::{Role, user_write};
use ledger_http::{ApiConfig, Caller, certificate_fingerprint, router};
use ledger_identity::Curve;
use ledger_identity::files::NodeFiles;
use ledger_store::{Genesis, Ledger, NodeIdentity, StoreConfig};
use serde_json::Value;
use std::sync::{Arc, LazyLock};
use tower::ServiceExt;

pub static ADMIN: LazyLock<String> = LazyLock::new(|| certificate_fingerprint(b"admin"));
pub static CONTRIBUTOR: LazyLock<String> =
    LazyLock::new(|| certificate_fingerprint(b"contributor"));
pub static READER: LazyLock<String> = LazyLock::new(|| certificate_fingerprint(b"reader"));
pub static STRANGER: LazyLock<String> = LazyLock::new(|| certificate_fingerprint(b"stranger"));

/// The caller of the certificate user `fingerprint`. The test users have no real certificate
/// (their ids are made-up fingerprints or names), so theirs is valid at all times.
pub fn certificate_caller(fingerprint: &str) -> Caller {
    Caller::Certificate {
        fingerprint: fingerprint.into(),
        validity: Some(Validity {
            not_before_unix: 0,
            not_after_unix: u64::MAX,
        }),
        pem: None,
    }
}

pub struct App {
    pub router: Router,
    pub ledger: Arc<Ledger>,
    pub files: NodeFiles,
    pub node_id: String,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub raw: Vec<u8>,
    pub json: Value,
}

impl Reply {
    pub fn txid(&self) -> Option<String> {
        self.headers
            .get("x-ms-ccf-transaction-id")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// An ACL error: this status and code, a message, JSON, no transaction id, and no
    /// `Retry-After` unless the service is busy.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.code()),
            (status, code),
            "body: {}",
            self.json
        );
        assert!(self.txid().is_none(), "errors carry no transaction id");
        assert_eq!(self.headers["content-type"], "application/json");
        assert!(!self.json["error"]["message"].as_str().unwrap().is_empty());
        if status != 503 {
            assert!(self.headers.get("retry-after").is_none());
        }
    }
}

impl App {
    pub fn new() -> App {
        App::with(|_| {})
    }

    pub fn with(adjust: impl FnOnce(&mut ApiConfig)) -> App {
        let dir = tempfile::tempdir().unwrap();
        let files = NodeFiles::create(dir.path(), Curve::P256, &[]).unwrap();
        let signing_key = EcSigningKey::from_pkcs8_pem(&files.node_key_pem).unwrap();
        let node_id = signing_key.node_id().to_hex();
        let node = NodeIdentity {
            signing_key,
            cert_pem: files.node_cert_pem.clone(),
            service_key: EcSigningKey::from_pkcs8_pem(&files.service_key_pem).unwrap(),
        };
        let genesis = Genesis {
            ledger_id: "testledger".into(),
            service_cert_pem: files.service_cert_pem.clone(),
            writes: vec![
                user_write(&ADMIN, Role::Administrator),
                user_write(&CONTRIBUTOR, Role::Contributor),
                user_write(&READER, Role::Reader),
            ],
        };
        let ledger =
            Arc::new(Ledger::create(dir.path(), StoreConfig::default(), node, genesis).unwrap());
        let mut config = ApiConfig::new(
            "testledger".into(),
            files.service_cert_pem.clone(),
            node_id.clone(),
        );
        adjust(&mut config);
        App {
            router: router(ledger.clone(), config),
            ledger,
            files,
            node_id,
            _dir: dir,
        }
    }

    /// Sends a request as the certificate user `caller` (anonymous when `None`), with an
    /// optional `(content type, body)`.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        caller: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        self.call_as(method, uri, caller.map(certificate_caller), body)
            .await
    }

    /// [`App::call`] as any caller (anonymous when `None`).
    pub async fn call_as(
        &self,
        method: Method,
        uri: &str,
        caller: Option<Caller>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some((content_type, _)) = &body {
            builder = builder.header("content-type", *content_type);
        }
        let mut request = builder
            .body(body.map_or_else(Body::empty, |(_, b)| Body::from(b)))
            .unwrap();
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let json = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            raw,
            json,
        }
    }

    /// [`App::call`] with a JSON body.
    pub async fn call_json(
        &self,
        method: Method,
        uri: &str,
        caller: &str,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.call(method, uri, Some(caller), body).await
    }
}
