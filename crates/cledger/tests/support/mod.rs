//! Test support for the end-to-end suites: runs the real `cledger serve` binary on a free
//! loopback port and talks to it over real TLS with reqwest.
//!
//! Every [`Server`] kills its process when dropped, so a failing test never leaks one.

#![allow(dead_code)]

pub mod cluster;
pub mod jwt;
pub mod netns;

use reqwest::header::HeaderMap;
use reqwest::{Certificate, Client, Identity, Method, StatusCode};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const API_VERSION: &str = "2022-05-13";
pub const DEFAULT_COLLECTION: &str = "subledger:0";
pub const TXID_HEADER: &str = "x-ms-ccf-transaction-id";
const READY_PREFIX: &str = "listening on https://127.0.0.1:";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cledger"))
}

/// Output a process wrote so far (collected by background threads).
#[derive(Clone, Default)]
pub struct Output {
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Output {
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
    pub fn describe(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

/// A running `cledger serve`.
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub base: String,
    pub output: Output,
}

/// A `cledger serve` that did not get to "listening on ...".
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Removes every `CLEDGER_*` variable of this process's environment from `command`.
pub fn clear_cledger_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CLEDGER_") {
            command.env_remove(key);
        }
    }
}

/// Runs `cledger serve ...`, or `WRAPPER... cledger serve ...` when `wrapper` is not empty
/// (e.g. `prlimit --nofile=N:N`, which execs the server in its own process).
fn spawn(
    wrapper: &[&str],
    data_dir: &Path,
    extra: &[&str],
) -> (Child, Output, mpsc::Receiver<String>) {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary());
            command
        }
        None => Command::new(binary()),
    };
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Nothing from the developer's environment may change the server under test.
    clear_cledger_env(&mut command);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
    let output = Output::default();
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let sink = output.stdout.clone();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
            let _ = lines_tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let sink = output.stderr.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
    (child, output, lines_rx)
}

impl Server {
    /// Starts `cledger serve --data-dir DIR --listen 127.0.0.1:0 EXTRA...` and waits for the
    /// "listening on" line. Panics (with the server's output) when it does not come.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        match Server::try_start(data_dir, extra) {
            Ok(server) => server,
            Err(failure) => panic!(
                "cledger serve did not start (exit status {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                failure.status, failure.stdout, failure.stderr
            ),
        }
    }

    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Server, StartFailure> {
        Server::try_start_under(&[], data_dir, extra)
    }

    /// [`Server::start`] through a wrapper command that execs the server, e.g.
    /// `&["prlimit", "--nofile=128:128"]`.
    pub fn start_under(wrapper: &[&str], data_dir: &Path, extra: &[&str]) -> Server {
        match Server::try_start_under(wrapper, data_dir, extra) {
            Ok(server) => server,
            Err(failure) => panic!(
                "cledger serve did not start (exit status {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                failure.status, failure.stdout, failure.stderr
            ),
        }
    }

    pub fn try_start_under(
        wrapper: &[&str],
        data_dir: &Path,
        extra: &[&str],
    ) -> Result<Server, StartFailure> {
        let (mut child, output, lines) = spawn(wrapper, data_dir, extra);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix(READY_PREFIX) {
                        let port: u16 = rest
                            .trim()
                            .trim_end_matches('/')
                            .parse()
                            .unwrap_or_else(|_| panic!("unparsable ready line: {line:?}"));
                        return Ok(Server {
                            child: Some(child),
                            data_dir: data_dir.to_path_buf(),
                            port,
                            base: format!("https://127.0.0.1:{port}"),
                            output,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected)
                | Err(mpsc::RecvTimeoutError::Timeout)
                    if Instant::now() < deadline =>
                {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Give the reader threads a moment to collect the last output.
                        thread::sleep(Duration::from_millis(200));
                        return Err(StartFailure {
                            status: Some(status),
                            stdout: output.stdout(),
                            stderr: output.stderr(),
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    thread::sleep(Duration::from_millis(100));
                    return Err(StartFailure {
                        status: None,
                        stdout: output.stdout(),
                        stderr: output.stderr(),
                    });
                }
            }
        }
    }

    /// Panics when the server process has exited (it must never die on input).
    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("server already stopped");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the server exited ({status}) \n{}", self.output.describe());
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server already stopped").id()
    }

    pub fn service_cert_pem(&self) -> String {
        read_text(&self.data_dir.join("service_cert.pem"))
    }

    pub fn admin_bundle_pem(&self) -> String {
        read_text(&self.data_dir.join("admin.pem"))
    }

    /// A client that pins the service certificate, with an optional client identity
    /// (certificate + private key PEM bundle).
    pub fn client(&self, identity_pem: Option<&str>) -> Api {
        Api::new(&self.base, &self.service_cert_pem(), identity_pem)
    }

    pub fn admin(&self) -> Api {
        self.client(Some(&self.admin_bundle_pem()))
    }

    /// SIGTERM, then wait for the exit. Panics if it does not exit in time.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                    self.output.describe()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Percent-encodes everything except RFC 3986 unreserved characters (for query values and
/// path segments).
pub fn enc(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends `api-version=2022-05-13` to a path (with or without a query).
pub fn versioned(path: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}api-version={API_VERSION}")
}

/// An HTTP client bound to one server and one identity.
#[derive(Clone)]
pub struct Api {
    client: Client,
    pub base: String,
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub method: String,
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "{} {} → {}: body is not JSON ({e}): {:?}",
                self.method, self.url, self.status, self.text
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not ASCII").to_owned())
    }

    /// The `x-ms-ccf-transaction-id` header, checked to be `<view>.<seqno>`.
    pub fn txid(&self) -> ledger_core::TxId {
        let value = self.header(TXID_HEADER).unwrap_or_else(|| {
            panic!(
                "{} {} → {}: no {TXID_HEADER} header (headers: {:?})",
                self.method, self.url, self.status, self.headers
            )
        });
        ledger_core::TxId::parse(&value).unwrap_or_else(|e| {
            panic!(
                "{} {}: bad {TXID_HEADER} {value:?}: {e}",
                self.method, self.url
            )
        })
    }

    /// Asserts the status, and for 2xx the transaction-id header and (when there is a body)
    /// `Content-Type: application/json`.
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{} {}: expected {status}, got {} with body {:?}",
            self.method,
            self.url,
            self.status,
            self.text
        );
        if self.status.is_success() {
            self.txid();
            if !self.text.is_empty() {
                let ct = self.header("content-type").unwrap_or_default();
                assert_eq!(
                    ct, "application/json",
                    "{} {}: Content-Type of a JSON response",
                    self.method, self.url
                );
            }
        }
        self
    }

    pub fn ok(self) -> Value {
        self.expect(200).json()
    }

    /// Asserts `status` and an ACL error body `{"error":{"code","message"}}`; returns the code.
    pub fn error(self, status: u16) -> String {
        let resp = self.expect(status);
        let body = resp.json();
        let code = body["error"]["code"].as_str().unwrap_or_else(|| {
            panic!(
                "{} {} → {}: error body without error.code: {}",
                resp.method, resp.url, resp.status, resp.text
            )
        });
        assert!(
            body["error"]["message"].is_string(),
            "{} {}: error body without error.message: {}",
            resp.method,
            resp.url,
            resp.text
        );
        assert!(!code.is_empty(), "empty error code: {}", resp.text);
        code.to_owned()
    }

    /// Asserts `status` and the exact error code.
    pub fn error_code(self, status: u16, code: &str) {
        let (method, url, text) = (self.method.clone(), self.url.clone(), self.text.clone());
        let actual = self.error(status);
        assert_eq!(actual, code, "{method} {url}: error code (body {text})");
    }
}

impl Api {
    pub fn new(base: &str, service_cert_pem: &str, identity_pem: Option<&str>) -> Api {
        let cert = Certificate::from_pem(service_cert_pem.as_bytes()).expect("service cert PEM");
        let mut builder = Client::builder()
            .tls_certs_only([cert])
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4);
        if let Some(pem) = identity_pem {
            builder = builder.identity(Identity::from_pem(pem.as_bytes()).expect("identity PEM"));
        }
        Api {
            client: builder.build().expect("reqwest client"),
            base: base.to_owned(),
        }
    }

    /// Sends a request to `path_and_query` exactly as given (no api-version added).
    pub async fn raw(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        let url = format!("{}{}", self.base, path_and_query);
        self.try_raw(method.clone(), path_and_query, content_type, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: request failed: {e:?}"))
    }

    /// Like [`Api::raw`], but transport errors are returned instead of panicking.
    pub async fn try_raw(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Resp, reqwest::Error> {
        self.try_with_headers(method, path_and_query, &[], content_type, body)
            .await
    }

    /// `POST path?api-version=..` of a JSON body with extra request headers.
    pub async fn post_json_with(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let body = serde_json::to_vec(body).unwrap();
        self.try_with_headers(
            Method::POST,
            &versioned(path),
            headers,
            Some("application/json"),
            Some(body),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {path}: request failed: {e:?}"))
    }

    async fn try_with_headers(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Resp, reqwest::Error> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut request = self.client.request(method.clone(), &url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        Ok(Resp {
            method: method.to_string(),
            url,
            status,
            headers,
            text,
        })
    }

    /// GET with `api-version=2022-05-13` appended.
    pub async fn get(&self, path: &str) -> Resp {
        self.raw(Method::GET, &versioned(path), None, None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.raw(Method::DELETE, &versioned(path), None, None).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.raw(
            Method::POST,
            &versioned(path),
            Some("application/json"),
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn patch_user(&self, user_id_in_path: &str, body: &Value) -> Resp {
        self.raw(
            Method::PATCH,
            &versioned(&format!("/app/users/{user_id_in_path}")),
            Some("application/merge-patch+json"),
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    /// POST /app/transactions[?collectionId=] {"contents": contents}.
    pub async fn write(&self, collection: Option<&str>, contents: &str) -> Resp {
        let path = match collection {
            Some(c) => format!("/app/transactions?collectionId={}", enc(c)),
            None => "/app/transactions".to_owned(),
        };
        self.post_json(&path, &serde_json::json!({ "contents": contents }))
            .await
    }

    /// Writes and asserts success; returns the write's transaction id (from the header).
    pub async fn write_ok(&self, collection: Option<&str>, contents: &str) -> String {
        let resp = self.write(collection, contents).await.expect(200);
        let txid = resp.txid().to_string();
        let body = resp.json();
        assert_eq!(
            body,
            serde_json::json!({ "collectionId": collection.unwrap_or(DEFAULT_COLLECTION) }),
            "write result body"
        );
        txid
    }

    /// Follows `nextLink` until it is absent; returns the entries of all pages and the page
    /// sizes.
    pub async fn list_all(&self, first_path: &str) -> (Vec<Value>, Vec<usize>) {
        let mut entries = Vec::new();
        let mut sizes = Vec::new();
        let mut next = versioned(first_path);
        for _ in 0..10_000 {
            let page = self.raw(Method::GET, &next, None, None).await.ok();
            assert_eq!(page["state"], "Ready", "list page state: {page}");
            let items = page["entries"]
                .as_array()
                .unwrap_or_else(|| panic!("list page without `entries` array: {page}"));
            assert!(
                items.len() <= 100,
                "a page holds at most 100 entries, got {}",
                items.len()
            );
            sizes.push(items.len());
            entries.extend(items.iter().cloned());
            match page.get("nextLink") {
                None | Some(Value::Null) => return (entries, sizes),
                Some(Value::String(s)) if s.is_empty() => return (entries, sizes),
                Some(Value::String(link)) => {
                    assert!(
                        link.starts_with("/app/transactions?"),
                        "nextLink should be a relative /app/transactions URL: {link}"
                    );
                    assert!(
                        link.contains("api-version="),
                        "nextLink keeps api-version: {link}"
                    );
                    next = link.clone();
                }
                Some(other) => panic!("nextLink is not a string: {other}"),
            }
        }
        panic!("nextLink chain did not end after 10000 pages");
    }

    /// What has been committed so far, to compare before/after a rejected request: the read
    /// txid of GET /app/collections (bumped by every transaction), the collection list and the
    /// number of entries in the default collection.
    pub async fn snapshot(&self) -> Snapshot {
        let resp = self.get("/app/collections").await.expect(200);
        let txid = resp.txid().to_string();
        let mut collections: Vec<String> = resp.json()["collections"]
            .as_array()
            .expect("collections array")
            .iter()
            .map(|c| c["collectionId"].as_str().expect("collectionId").to_owned())
            .collect();
        collections.sort();
        let (entries, _) = self.list_all("/app/transactions").await;
        Snapshot {
            txid,
            collections,
            default_entries: entries.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub txid: String,
    pub collections: Vec<String>,
    pub default_entries: usize,
}

/// A fresh client identity (P-384, like the ACL docs' openssl recipe) and its user id.
pub fn new_user(cn: &str) -> (String, String) {
    let identity = ledger_identity::create_client_identity(cn, ledger_identity::Curve::P384)
        .expect("create client identity");
    let bundle = identity.bundle_pem();
    let id = ledger_identity::certificate_fingerprint(&identity.cert_pem).expect("fingerprint");
    (bundle, id)
}

/// The user id of the identity in a bundle.
pub fn user_id(bundle_pem: &str) -> String {
    ledger_identity::certificate_fingerprint(bundle_pem).expect("fingerprint")
}

/// Polls /status until Committed (the server may report Pending briefly).
pub async fn wait_committed(api: &Api, txid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = api
            .get(&format!("/app/transactions/{txid}/status"))
            .await
            .ok();
        assert_eq!(body["transactionId"], txid, "status body: {body}");
        match body["state"].as_str() {
            Some("Committed") => return,
            Some("Pending") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("unexpected status state {other:?} for {txid}: {body}"),
        }
    }
}

/// Fetches the receipt of `txid` (polling while Loading) and verifies it against the service
/// certificate with ledger-core's verifier (the SDK's checks).
pub async fn verify_receipt_of(api: &Api, txid: &str, service_cert_pem: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = api
            .get(&format!("/app/transactions/{txid}/receipt"))
            .await
            .ok();
        assert_eq!(body["transactionId"], txid, "receipt body: {body}");
        match body["state"].as_str() {
            Some("Ready") => {
                let receipt = ledger_core::receipt::Receipt::from_value(&body["receipt"])
                    .unwrap_or_else(|e| panic!("receipt of {txid} does not parse: {e}: {body}"));
                let verified =
                    ledger_core::receipt::verify_receipt(&receipt, service_cert_pem, None)
                        .unwrap_or_else(|e| panic!("receipt of {txid} does not verify: {e}"));
                assert_eq!(
                    verified.txid.to_string(),
                    txid,
                    "receipt names another txid"
                );
                return body;
            }
            Some("Loading") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("unexpected receipt state {other:?} for {txid}: {body}"),
        }
    }
}

pub fn is_txid(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| ledger_core::TxId::parse(s).is_ok())
}

pub fn txid_of(value: &str) -> ledger_core::TxId {
    ledger_core::TxId::parse(value).unwrap_or_else(|e| panic!("bad txid {value:?}: {e}"))
}

pub fn is_hex64(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The curve of the public key in a certificate.
pub fn curve_of(cert_pem: &str) -> ledger_core::signing::Curve {
    ledger_core::x509::Cert::from_pem(cert_pem)
        .and_then(|cert| cert.public_key())
        .expect("an EC certificate")
        .curve()
}
