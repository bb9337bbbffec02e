//! A typed, blocking client for the cledger / Azure confidential ledger REST API.
//!
//! Every TLS connection trusts exactly one root: the pinned service certificate. Every receipt
//! the client hands out has been verified against that certificate (and against the
//! application claims when the server revealed them). The one exception to pinning is
//! [`fetch_identity_unverified`], the trust-on-first-use fetch of the certificate itself.
//!
//! [`evidence`] builds and verifies offline evidence packages (`notarize` / `verify`).

pub mod evidence;
pub mod node;
pub mod nonblocking;
pub mod verified_state;
pub mod writer;

use ledger_core::TxId;
use ledger_core::receipt::{ReceiptResponse, VerifiedReceipt, verify_receipt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::blocking::{Client as Http, RequestBuilder};
use reqwest::{Certificate, Identity, Method};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The api-version the client uses unless told otherwise.
pub const DEFAULT_API_VERSION: &str = "2022-05-13";
/// A claims-capable api-version: writes record a `LedgerEntryV1` claim and `/receipt` returns
/// `applicationClaims`.
pub const CLAIMS_API_VERSION: &str = "2023-01-18-preview";
/// The first api-version with tags and `/app/ledgerUsers`.
pub const TAGS_API_VERSION: &str = "2024-12-09-preview";
/// The api-version used for `GET /app/users` (the operation exists from 2024-01-26-preview).
pub const USERS_LIST_API_VERSION: &str = "2024-08-22-preview";
/// The response header naming a write's transaction.
pub const TXID_HEADER: &str = "x-ms-ccf-transaction-id";
/// The default collection of an ACL ledger.
pub const DEFAULT_COLLECTION: &str = "subledger:0";

/// How long `append` waits for `Committed`, and `receipt` for `Ready`.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Default of [`ClientConfig::retry_unavailable`]: longer than an election.
pub const DEFAULT_RETRY_UNAVAILABLE: Duration = Duration::from_secs(15);

/// Most `307`/`308` redirects followed for one request (a backup names the primary, which
/// answers; more hops mean the primary changed meanwhile).
pub const MAX_REDIRECTS: usize = 4;

/// The longest single wait on a `Retry-After`, whatever the server asks.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Everything but unreserved characters is percent-encoded (in a query the server reads `+` as a
/// space, as CCF does; a plus sign must be `%2B`).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(text: &str) -> String {
    utf8_percent_encode(text, QUERY).to_string()
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A PEM bundle holding the client certificate and its private key.
    Certificate(String),
    /// A bearer token (e.g. a Microsoft Entra ID access token).
    Token(String),
    /// No credentials (only `/ledgerIdentity` answers such callers).
    None,
}

/// The HTTP version a client speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/2 when the server offers it in the TLS handshake (ALPN; cledger does), else
    /// HTTP/1.1.
    #[default]
    Negotiated,
    /// HTTP/1.1 only: what the Azure SDKs' default transports speak (Python's `requests` and
    /// `aiohttp`, Node's `https`), so what a load generator imitating them should speak.
    Http1,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://host:port`, without a path.
    pub endpoint: String,
    /// PEM of the ledger's service certificate: the only TLS root, and what receipts must chain to.
    pub service_cert_pem: String,
    pub auth: Auth,
    /// api-version sent with every request, unless an operation needs a specific one.
    pub api_version: String,
    /// How long a request answered `503` with `Retry-After` (nothing was done: no primary
    /// during an election, a full write queue, a transient storage fault) is retried before
    /// the error is returned. Zero: never retried.
    pub retry_unavailable: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Which HTTP version to speak.
    pub http_version: HttpVersion,
}

impl ClientConfig {
    pub fn new(
        endpoint: impl Into<String>,
        service_cert_pem: impl Into<String>,
        auth: Auth,
    ) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            service_cert_pem: service_cert_pem.into(),
            auth,
            api_version: DEFAULT_API_VERSION.to_owned(),
            retry_unavailable: DEFAULT_RETRY_UNAVAILABLE,
            request_timeout: REQUEST_TIMEOUT,
            http_version: HttpVersion::Negotiated,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error (`{"error":{"code","message"}}`).
    #[error("{code} (HTTP {status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// Connection, TLS or timeout failure.
    #[error("transport error: {0}")]
    Transport(String),
    /// A receipt did not verify.
    #[error("receipt verification failed: {0}")]
    Verification(#[from] ledger_core::receipt::ReceiptError),
    /// The server's answer was not what the API promises.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// Bad client configuration (PEM that cannot be loaded, bad endpoint).
    #[error("configuration error: {0}")]
    Config(String),
    /// Local file I/O.
    #[error("{0}")]
    Io(String),
    /// Waited too long for a transaction to commit or a receipt to be ready.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The ledger's signed states are not a consistent extension of the verified state.
    #[error("{0}")]
    Consistency(#[from] ledger_core::consistency::ConsistencyError),
    /// The ledger no longer holds the signed state verified earlier.
    #[error("FORK: {0}")]
    Fork(String),
}

impl Error {
    /// The ACL error code when the server said no.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::transport(&e)
    }
}

impl Error {
    /// A transport error with its whole source chain, which carries the useful part (e.g.
    /// the TLS reason).
    fn transport(e: &dyn std::error::Error) -> Error {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Error::Transport(text)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A ledger entry as the server returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub collection_id: String,
    pub contents: String,
    pub transaction_id: String,
}

/// The result of a committed write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appended {
    pub collection_id: String,
    pub transaction_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxStatus {
    pub state: String,
    pub transaction_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_id: String,
    pub assigned_role: String,
}

/// A receipt that verified against the pinned service certificate.
#[derive(Clone, Debug)]
pub struct VerifiedReceiptResponse {
    pub response: ReceiptResponse,
    pub verified: VerifiedReceipt,
}

/// Filters of [`Client::list`].
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub collection: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tag: Option<String>,
}

/// `sha256` of the DER of a PEM certificate, as `AA:BB:...` (like `openssl x509 -fingerprint -sha256`).
pub fn cert_fingerprint(pem: &str) -> Result<String> {
    use sha2::Digest as _;
    let cert = ledger_core::x509::Cert::from_pem(pem)
        .map_err(|e| Error::Config(format!("not a PEM certificate: {e}")))?;
    let digest = sha2::Sha256::digest(cert.der());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Default per-request timeout of both clients ([`ClientConfig::request_timeout`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The one trusted root (the pinned service certificate) and the client identity, if any.
fn tls_material(config: &ClientConfig) -> Result<(Certificate, Option<Identity>)> {
    let root = Certificate::from_pem(config.service_cert_pem.as_bytes())
        .map_err(|e| Error::Config(format!("the service certificate: {e}")))?;
    cert_fingerprint(&config.service_cert_pem)?;
    let identity = match &config.auth {
        Auth::Certificate(pem) => Some(Identity::from_pem(pem.as_bytes()).map_err(|e| {
            Error::Config(format!(
                "the client certificate bundle (certificate and private key, PEM): {e}"
            ))
        })?),
        _ => None,
    };
    Ok((root, identity))
}

fn base(endpoint: &str) -> Result<String> {
    let e = endpoint.trim().trim_end_matches('/');
    if !e.starts_with("https://") {
        return Err(Error::Config(format!(
            "the endpoint must be an https:// URL, not {endpoint:?}"
        )));
    }
    Ok(e.to_owned())
}

/// Trust on first use: fetches the service certificate from `GET /ledgerIdentity/{ledger_id}`
/// **without verifying the server's TLS certificate**. Compare the fingerprint out of band
/// before pinning what this returns.
pub fn fetch_identity_unverified(endpoint: &str, ledger_id: &str) -> Result<String> {
    let base = base(endpoint)?;
    let http = Http::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!(
        "{base}/ledgerIdentity/{}?api-version={DEFAULT_API_VERSION}",
        enc(ledger_id)
    );
    let body = check(http.get(url).send()?)?.1;
    let pem = body["ledgerTlsCertificate"]
        .as_str()
        .ok_or_else(|| Error::Protocol("no ledgerTlsCertificate in the identity answer".into()))?;
    cert_fingerprint(pem)?;
    Ok(pem.to_owned())
}

fn check(resp: reqwest::blocking::Response) -> Result<(reqwest::header::HeaderMap, Value)> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text()?;
    decode(status, headers, &text)
}

/// An answer as the API defines it: a JSON body on success, the ACL error shape otherwise.
fn decode(
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    text: &str,
) -> Result<(reqwest::header::HeaderMap, Value)> {
    if !status.is_success() {
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        let err = parsed.as_ref().map(|v| &v["error"]);
        let code = err
            .and_then(|e| e["code"].as_str())
            .unwrap_or("HttpError")
            .to_owned();
        let message = err
            .and_then(|e| e["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(500).collect());
        return Err(Error::Api {
            status: status.as_u16(),
            code,
            message,
        });
    }
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text)
            .map_err(|e| Error::Protocol(format!("the body is not JSON: {e}")))?
    };
    Ok((headers, body))
}

/// Where a `307`/`308` answer to a request for `current` sends it: `location` resolved
/// against `current`. Only https targets are followed. The pinned service certificate is the
/// only TLS root the client trusts, so whatever host the target names, it is a node of the same
/// service (or the connection fails): the client certificate and the bearer token go nowhere
/// else.
pub fn redirect_target(current: &str, location: &str) -> Result<String> {
    let base = reqwest::Url::parse(current)
        .map_err(|e| Error::Protocol(format!("bad request URL {current:?}: {e}")))?;
    let next = base
        .join(location.trim())
        .map_err(|e| Error::Protocol(format!("bad redirect Location {location:?}: {e}")))?;
    if next.scheme() != "https" {
        return Err(Error::Protocol(format!(
            "refusing to follow a redirect to {next}: only https is followed"
        )));
    }
    Ok(next.to_string())
}

/// The `Retry-After` delay of an answer, when it gives one in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// What to do with an answer before reading it as the API's.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// `307`/`308`: send the same request (method, body, credentials) to this URL.
    Follow(String),
    /// `503` with `Retry-After` (nothing was done): send it again after this delay.
    Retry(Duration),
    /// Anything else is the answer.
    Answer,
}

/// Decides [`Step`] for an answer to a request for `url`, after `hops` redirects and `waited`
/// time spent retrying (of at most `budget`).
fn next_step(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    url: &str,
    hops: usize,
    waited: Duration,
    budget: Duration,
) -> Result<Step> {
    use reqwest::StatusCode;
    if status == StatusCode::TEMPORARY_REDIRECT || status == StatusCode::PERMANENT_REDIRECT {
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "HTTP {status} from {url} without a Location header"
                ))
            })?;
        if hops >= MAX_REDIRECTS {
            return Err(Error::Protocol(format!(
                "more than {MAX_REDIRECTS} redirects (the last from {url} to {location}): the primary keeps changing"
            )));
        }
        return Ok(Step::Follow(redirect_target(url, location)?));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE
        && let Some(delay) = retry_after(headers)
    {
        let delay = delay.clamp(Duration::from_millis(100), MAX_RETRY_DELAY);
        if waited + delay <= budget {
            return Ok(Step::Retry(delay));
        }
    }
    Ok(Step::Answer)
}

/// `{base}{path}?api-version=..&k=v..`, skipping absent parameters.
fn url(base: &str, path: &str, version: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut url = format!("{base}{path}?api-version={}", enc(version));
    for (k, v) in params {
        if let Some(v) = v {
            url.push('&');
            url.push_str(k);
            url.push('=');
            url.push_str(&enc(v));
        }
    }
    url
}

impl Appended {
    /// What the answer to a write (`POST /app/transactions` to `collection`) names: the
    /// transaction id from its header, the collection from its body (else the one asked for).
    fn from_answer(
        headers: &reqwest::header::HeaderMap,
        body: &Value,
        collection: Option<&str>,
    ) -> Result<Appended> {
        Ok(Appended {
            transaction_id: written_txid(headers)?,
            collection_id: body["collectionId"]
                .as_str()
                .or(collection)
                .unwrap_or(DEFAULT_COLLECTION)
                .to_owned(),
        })
    }
}

/// The transaction id a write's answer names.
fn written_txid(headers: &reqwest::header::HeaderMap) -> Result<String> {
    let txid = headers
        .get(TXID_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Protocol(format!("the write has no {TXID_HEADER} header")))?;
    TxId::parse(txid).map_err(|e| Error::Protocol(format!("bad transaction id: {e}")))?;
    Ok(txid.to_owned())
}

/// Verifies a `Ready` receipt answer against the pinned certificate and checks it proves `txid`.
fn verified(
    response: ReceiptResponse,
    service_cert_pem: &str,
    txid: &str,
) -> Result<VerifiedReceiptResponse> {
    let receipt = response
        .receipt
        .as_ref()
        .ok_or_else(|| Error::Protocol(format!("the receipt of {txid} is not ready")))?;
    let verified = verify_receipt(
        receipt,
        service_cert_pem,
        response.application_claims.as_deref(),
    )?;
    if verified.txid.to_string() != txid {
        return Err(Error::Protocol(format!(
            "asked for the receipt of {txid}, got one for {}",
            verified.txid
        )));
    }
    Ok(VerifiedReceiptResponse { response, verified })
}

fn field<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

/// True when api-version `v` is at least `min` (versions are date-prefixed).
fn version_at_least(v: &str, min: &str) -> bool {
    v.get(..10).unwrap_or(v) >= min.get(..10).unwrap_or(min)
}

pub struct Client {
    http: Http,
    base: String,
    config: ClientConfig,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client> {
        let base = base(&config.endpoint)?;
        let (root, identity) = tls_material(&config)?;
        // Redirects are followed by `exchange`, which keeps the bearer token (reqwest drops
        // it when the port changes) and follows only https.
        let mut builder = Http::builder()
            .tls_certs_only([root])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout);
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        if config.http_version == HttpVersion::Http1 {
            builder = builder.http1_only();
        }
        Ok(Client {
            http: builder.build()?,
            base,
            config,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn url(&self, path: &str, version: &str, params: &[(&str, Option<&str>)]) -> String {
        url(&self.base, path, version, params)
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let mut req = self.http.request(method, url);
        if let Auth::Token(token) = &self.config.auth {
            req = req.bearer_auth(token);
        }
        req
    }

    fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(reqwest::header::HeaderMap, Value)> {
        let body = body.map(|b| ("application/json", b.to_string()));
        check(self.exchange(method, url, body)?)
    }

    /// Sends a request and reads the answer, following `307`/`308` to the primary (same
    /// method, body and credentials; at most [`MAX_REDIRECTS`] hops, https only) and retrying
    /// `503` answers that carry `Retry-After` for up to [`ClientConfig::retry_unavailable`],
    /// each time from the original URL.
    fn exchange(
        &self,
        method: Method,
        url: &str,
        body: Option<(&str, String)>,
    ) -> Result<reqwest::blocking::Response> {
        let start = Instant::now();
        let mut target = url.to_owned();
        let mut hops = 0;
        loop {
            let mut req = self.request(method.clone(), &target);
            if let Some((content_type, body)) = &body {
                req = req.header("content-type", *content_type).body(body.clone());
            }
            let resp = req.send()?;
            let step = next_step(
                resp.status(),
                resp.headers(),
                &target,
                hops,
                start.elapsed(),
                self.config.retry_unavailable,
            )?;
            match step {
                Step::Follow(next) => {
                    hops += 1;
                    target = next;
                }
                Step::Retry(delay) => {
                    std::thread::sleep(delay);
                    hops = 0;
                    target = url.to_owned();
                }
                Step::Answer => return Ok(resp),
            }
        }
    }

    fn get(&self, path: &str, version: &str, params: &[(&str, Option<&str>)]) -> Result<Value> {
        Ok(self
            .call(Method::GET, &self.url(path, version, params), None)?
            .1)
    }

    fn version(&self) -> &str {
        &self.config.api_version
    }

    /// The configured version, raised to one with tags when tags are used.
    fn version_for_tags(&self, tagged: bool) -> &str {
        if tagged && !version_at_least(self.version(), TAGS_API_VERSION) {
            TAGS_API_VERSION
        } else {
            self.version()
        }
    }

    /// Writes an entry and waits until `/status` says `Committed`.
    pub fn append(
        &self,
        contents: &str,
        collection: Option<&str>,
        tags: &[String],
    ) -> Result<Appended> {
        let appended = self.submit(contents, collection, tags)?;
        self.wait_committed(&appended.transaction_id)?;
        Ok(appended)
    }

    /// Writes an entry with a claims-capable api-version, so that it records a
    /// `LedgerEntryV1` application claim, and waits for commit.
    pub fn append_with_claims(&self, contents: &str, collection: Option<&str>) -> Result<Appended> {
        self.append_with_version(contents, collection, &[], CLAIMS_API_VERSION)
    }

    pub fn append_with_version(
        &self,
        contents: &str,
        collection: Option<&str>,
        tags: &[String],
        version: &str,
    ) -> Result<Appended> {
        let appended = self.submit_with_version(contents, collection, tags, version)?;
        self.wait_committed(&appended.transaction_id)?;
        Ok(appended)
    }

    /// Writes an entry and returns its transaction id without waiting for commit: the write
    /// is `Pending` until a signature after it is replicated, and may still be rolled back
    /// (`Invalid`) if the primary that took it loses its office first.
    pub fn submit(
        &self,
        contents: &str,
        collection: Option<&str>,
        tags: &[String],
    ) -> Result<Appended> {
        let version = self.version_for_tags(!tags.is_empty()).to_owned();
        self.submit_with_version(contents, collection, tags, &version)
    }

    fn submit_with_version(
        &self,
        contents: &str,
        collection: Option<&str>,
        tags: &[String],
        version: &str,
    ) -> Result<Appended> {
        let tags = (!tags.is_empty()).then(|| tags.join(","));
        let url = self.url(
            "/app/transactions",
            version,
            &[("collectionId", collection), ("tags", tags.as_deref())],
        );
        let (headers, body) =
            self.call(Method::POST, &url, Some(&json!({"contents": contents})))?;
        Appended::from_answer(&headers, &body, collection)
    }

    /// Polls `/status` until the transaction is `Committed`.
    pub fn wait_committed(&self, txid: &str) -> Result<()> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            match self.status(txid) {
                Ok(s) if s.state == "Committed" => return Ok(()),
                Ok(s) if s.state == "Pending" => {}
                Ok(s) => {
                    return Err(Error::Protocol(format!(
                        "transaction {txid} is in state {}",
                        s.state
                    )));
                }
                Err(Error::Api {
                    status: 404, code, ..
                }) if code == "TransactionPendingOrUnknown" => {}
                Err(e) => return Err(e),
            }
            if start.elapsed() > WAIT_LIMIT {
                return Err(Error::Timeout(format!("transaction {txid} did not commit")));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    pub fn status(&self, txid: &str) -> Result<TxStatus> {
        let body = self.get(
            &format!("/app/transactions/{}/status", enc(txid)),
            self.version(),
            &[],
        )?;
        field(body, "status")
    }

    pub fn get_entry(&self, txid: &str, collection: Option<&str>) -> Result<Entry> {
        let body = self.get(
            &format!("/app/transactions/{}", enc(txid)),
            self.version(),
            &[("collectionId", collection)],
        )?;
        field(body["entry"].clone(), "entry")
    }

    pub fn current(&self, collection: Option<&str>) -> Result<Entry> {
        let body = self.get(
            "/app/transactions/current",
            self.version(),
            &[("collectionId", collection)],
        )?;
        field(body, "current entry")
    }

    /// Entries of one collection in a range, following `nextLink`, page by page.
    pub fn list(&self, query: &ListQuery) -> EntryIter<'_> {
        let version = self.version_for_tags(query.tag.is_some());
        let url = self.url(
            "/app/transactions",
            version,
            &[
                ("collectionId", query.collection.as_deref()),
                ("fromTransactionId", query.from.as_deref()),
                ("toTransactionId", query.to.as_deref()),
                ("tag", query.tag.as_deref()),
            ],
        );
        EntryIter {
            client: self,
            next: Some(url),
            page: Vec::new().into_iter(),
        }
    }

    /// All entries of [`Client::list`] in one vector.
    pub fn list_all(&self, query: &ListQuery) -> Result<Vec<Entry>> {
        self.list(query).collect()
    }

    fn follow(&self, link: &str) -> String {
        if link.starts_with("https://") {
            link.to_owned()
        } else {
            format!("{}/{}", self.base, link.trim_start_matches('/'))
        }
    }

    pub fn collections(&self) -> Result<Vec<String>> {
        let body = self.get("/app/collections", self.version(), &[])?;
        let list = body["collections"]
            .as_array()
            .ok_or_else(|| Error::Protocol("no collections array".into()))?;
        Ok(list
            .iter()
            .filter_map(|c| c["collectionId"].as_str().map(str::to_owned))
            .collect())
    }

    pub fn user_get(&self, id: &str) -> Result<User> {
        field(
            self.get(&format!("/app/users/{}", enc(id)), self.version(), &[])?,
            "user",
        )
    }

    /// Creates the user or changes its role.
    pub fn user_set_role(&self, id: &str, role: &str) -> Result<User> {
        let url = self.url(&format!("/app/users/{}", enc(id)), self.version(), &[]);
        let body = (
            "application/merge-patch+json",
            json!({"assignedRole": role}).to_string(),
        );
        field(
            check(self.exchange(Method::PATCH, &url, Some(body))?)?.1,
            "user",
        )
    }

    pub fn user_remove(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("/app/users/{}", enc(id)), self.version(), &[]);
        self.call(Method::DELETE, &url, None)?;
        Ok(())
    }

    /// Every user (follows paging).
    pub fn users_list(&self) -> Result<Vec<User>> {
        let version = if version_at_least(self.version(), USERS_LIST_API_VERSION) {
            self.version()
        } else {
            USERS_LIST_API_VERSION
        };
        let mut next = Some(self.url("/app/users", version, &[]));
        let mut users = Vec::new();
        while let Some(url) = next.take() {
            let body = self.call(Method::GET, &url, None)?.1;
            let items = body["ledgerUsers"]
                .as_array()
                .or_else(|| body["users"].as_array())
                .ok_or_else(|| Error::Protocol("no users array".into()))?;
            for item in items {
                let role = item["assignedRole"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| {
                        item["assignedRoles"].as_array().map(|r| {
                            r.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                    });
                users.push(User {
                    user_id: item["userId"].as_str().unwrap_or_default().to_owned(),
                    assigned_role: role.unwrap_or_default(),
                });
            }
            next = next_link(&body).map(|l| self.follow(&l));
        }
        Ok(users)
    }

    /// Fetches a receipt with the configured api-version and verifies it.
    pub fn receipt(&self, txid: &str) -> Result<VerifiedReceiptResponse> {
        let version = self.version().to_owned();
        self.receipt_with_version(txid, &version)
    }

    /// Fetches a receipt with `applicationClaims` (claims-capable api-version) and verifies it,
    /// claims included.
    pub fn receipt_with_claims(&self, txid: &str) -> Result<VerifiedReceiptResponse> {
        self.receipt_with_version(txid, CLAIMS_API_VERSION)
    }

    /// Fetches `GET /app/transactions/{txid}/receipt` (waiting while it is `Loading`) and
    /// verifies it against the pinned service certificate and, when present, the application
    /// claims. A receipt that does not verify, or that proves another transaction, is an error.
    pub fn receipt_with_version(
        &self,
        txid: &str,
        version: &str,
    ) -> Result<VerifiedReceiptResponse> {
        let url = self.url(
            &format!("/app/transactions/{}/receipt", enc(txid)),
            version,
            &[],
        );
        let start = Instant::now();
        let response: ReceiptResponse = loop {
            let body = self.call(Method::GET, &url, None)?.1;
            let response: ReceiptResponse = field(body, "receipt")?;
            if response.receipt.is_some() {
                break response;
            }
            if start.elapsed() > WAIT_LIMIT {
                return Err(Error::Timeout(format!(
                    "the receipt of {txid} is not ready"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        verified(response, &self.config.service_cert_pem, txid)
    }
}

impl Client {
    /// Fetches the COSE receipt of `txid` (`GET /app/transactions/{txid}/receipt/cose`) and
    /// verifies it against the pinned service certificate's key: the service's root signature
    /// over a tree in which the path places this transaction's leaf.
    pub fn cose_receipt(&self, txid: &str) -> Result<VerifiedCoseReceiptBytes> {
        let url = self.url(
            &format!("/app/transactions/{}/receipt/cose", enc(txid)),
            self.version(),
            &[],
        );
        let resp = self.exchange(Method::GET, &url, None)?;
        if !resp.status().is_success() {
            return Err(check(resp).expect_err("a failed status is an error"));
        }
        let bytes = resp.bytes()?.to_vec();
        let verified = verify_cose_receipt(&bytes, &self.config.service_cert_pem)?;
        if verified.txid.to_string() != txid {
            return Err(Error::Protocol(format!(
                "asked for the COSE receipt of {txid}, got one for {}",
                verified.txid
            )));
        }
        Ok(VerifiedCoseReceiptBytes { bytes, verified })
    }
}

/// A COSE receipt as served, and what verifying it established.
#[derive(Debug, Clone)]
pub struct VerifiedCoseReceiptBytes {
    pub bytes: Vec<u8>,
    pub verified: ledger_core::cose::VerifiedCoseReceipt,
}

/// Verifies a COSE receipt against the public key of the service certificate `service_cert_pem`.
pub fn verify_cose_receipt(
    receipt: &[u8],
    service_cert_pem: &str,
) -> Result<ledger_core::cose::VerifiedCoseReceipt> {
    let key = service_public_key(service_cert_pem)?;
    ledger_core::cose::verify_receipt(receipt, &key)
        .map_err(|e| Error::Protocol(format!("the COSE receipt does not verify: {e}")))
}

/// The public key of the service certificate `pem`: what COSE root signatures verify with.
pub(crate) fn service_public_key(pem: &str) -> Result<ledger_core::signing::EcPublicKey> {
    ledger_core::x509::Cert::from_pem(pem)
        .and_then(|c| c.public_key())
        .map_err(|e| Error::Config(format!("the service certificate: {e}")))
}

fn next_link(body: &Value) -> Option<String> {
    body["nextLink"]
        .as_str()
        .or_else(|| body["@nextLink"].as_str())
        .map(str::to_owned)
}

/// Iterator over the entries of a range, fetching the next page when needed.
pub struct EntryIter<'a> {
    client: &'a Client,
    next: Option<String>,
    page: std::vec::IntoIter<Entry>,
}

impl Iterator for EntryIter<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.page.next() {
                return Some(Ok(entry));
            }
            let url = self.next.take()?;
            let body = match self.client.call(Method::GET, &url, None) {
                Ok((_, body)) => body,
                Err(e) => return Some(Err(e)),
            };
            if body["state"].as_str() == Some("Loading") {
                std::thread::sleep(Duration::from_millis(100));
                self.next = Some(url);
                continue;
            }
            self.next = next_link(&body).map(|l| self.client.follow(&l));
            let entries: Vec<Entry> = match field(body["entries"].clone(), "entries") {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            self.page = entries.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_fully_encoded() {
        assert_eq!(enc("a+b c/d"), "a%2Bb%20c%2Fd");
        assert_eq!(enc("subledger:0"), "subledger%3A0");
        assert_eq!(enc("1.2-x_~"), "1.2-x_~");
    }

    #[test]
    fn version_comparison() {
        assert!(version_at_least("2024-12-09-preview", TAGS_API_VERSION));
        assert!(version_at_least("2026-02-23", TAGS_API_VERSION));
        assert!(!version_at_least("2022-05-13", TAGS_API_VERSION));
    }

    #[test]
    fn endpoint_must_be_https() {
        assert!(matches!(base("http://x"), Err(Error::Config(_))));
        assert_eq!(base("https://h:1/").unwrap(), "https://h:1");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn redirects_resolve_against_the_request_and_stay_on_https() {
        let from = "https://127.0.0.1:8444/app/transactions?api-version=2022-05-13";
        assert_eq!(
            redirect_target(
                from,
                "https://127.0.0.1:8443/app/transactions?api-version=2022-05-13"
            )
            .unwrap(),
            "https://127.0.0.1:8443/app/transactions?api-version=2022-05-13"
        );
        assert_eq!(
            redirect_target(from, "/node/network").unwrap(),
            "https://127.0.0.1:8444/node/network"
        );
        assert!(matches!(
            redirect_target(from, "http://127.0.0.1:8443/app/transactions"),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            redirect_target(from, "ftp://x/"),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn next_step_follows_307_and_308_a_bounded_number_of_times() {
        use reqwest::StatusCode;
        let url = "https://h:1/app/transactions";
        let to = headers(&[("location", "https://h:2/app/transactions")]);
        let budget = Duration::from_secs(10);
        for status in [
            StatusCode::TEMPORARY_REDIRECT,
            StatusCode::PERMANENT_REDIRECT,
        ] {
            assert_eq!(
                next_step(status, &to, url, 0, Duration::ZERO, budget).unwrap(),
                Step::Follow("https://h:2/app/transactions".into())
            );
            assert!(next_step(status, &to, url, MAX_REDIRECTS, Duration::ZERO, budget).is_err());
            assert!(
                next_step(status, &headers(&[]), url, 0, Duration::ZERO, budget).is_err(),
                "a redirect without Location"
            );
        }
        // Other redirects are not the cluster's: they are answers (errors) as before.
        assert_eq!(
            next_step(StatusCode::FOUND, &to, url, 0, Duration::ZERO, budget).unwrap(),
            Step::Answer
        );
    }

    #[test]
    fn next_step_retries_503_with_retry_after_within_the_budget() {
        use reqwest::StatusCode;
        let url = "https://h:1/app/transactions";
        let budget = Duration::from_secs(10);
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            next_step(
                unavailable,
                &headers(&[("retry-after", "1")]),
                url,
                0,
                Duration::ZERO,
                budget
            )
            .unwrap(),
            Step::Retry(Duration::from_secs(1))
        );
        // Long delays are shortened, zero is not a busy loop.
        assert_eq!(
            next_step(
                unavailable,
                &headers(&[("retry-after", "60")]),
                url,
                0,
                Duration::ZERO,
                budget
            )
            .unwrap(),
            Step::Retry(MAX_RETRY_DELAY)
        );
        assert_eq!(
            next_step(
                unavailable,
                &headers(&[("retry-after", "0")]),
                url,
                0,
                Duration::ZERO,
                budget
            )
            .unwrap(),
            Step::Retry(Duration::from_millis(100))
        );
        // No Retry-After: not transient; budget spent: the error is the answer.
        assert_eq!(
            next_step(unavailable, &headers(&[]), url, 0, Duration::ZERO, budget).unwrap(),
            Step::Answer
        );
        assert_eq!(
            next_step(
                unavailable,
                &headers(&[("retry-after", "1")]),
                url,
                0,
                budget,
                budget
            )
            .unwrap(),
            Step::Answer
        );
        assert_eq!(
            next_step(
                StatusCode::OK,
                &headers(&[("retry-after", "1")]),
                url,
                0,
                Duration::ZERO,
                budget
            )
            .unwrap(),
            Step::Answer
        );
    }

    #[test]
    fn bad_service_cert_is_a_config_error() {
        let config = ClientConfig::new("https://localhost:1", "nope", Auth::None);
        assert!(matches!(Client::new(config), Err(Error::Config(_))));
    }
}
