//! What the node tells its operator: request ids, logs, the access log of refused
//! authentication and authorization, metrics per route, the health endpoints, and the
//! per-caller rate limit that sits between authentication and the routes.
//!
//! Layer order (outermost first): `observe` → the request guard (`guard`: head checks, the
//! per-address limit before authentication, response backlog; the two are one axum layer,
//! [`outermost`]) → a cluster node's redirect of
//! writes → bearer-token authentication → `rate_limit` → the ACL routes (the operator and
//! `/node/*` routes sit beside bearer authentication, inside the guard). `observe` is
//! outermost so that every answer, including a 401 from the token layer and a 429 from a
//! limiter, gets a request id, a log line and a count; `rate_limit` is inside authentication so
//! that token users are limited by user id.

use crate::http::{ApiError, Caller, ErrorInfo};
use crate::metrics::{CodeLabels, Metrics};
use crate::ratelimit::RateLimiter;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ledger_store::LedgerHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

/// The peer address of the connection a request came on (inserted by the listener).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");

/// Request ids: a random per-process prefix and a counter, so ids are unique across restarts
/// without a random draw per request.
pub struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        RequestIds {
            prefix: u32::from_le_bytes(b),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        format!(
            "{:08x}-{:012x}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

pub struct ObserveState {
    pub metrics: Arc<Metrics>,
    pub ids: RequestIds,
    pub max_url_bytes: usize,
    pub request_timeout: Duration,
}

/// A client request id worth echoing and logging: short and printable (it comes from the
/// client, so it must not be able to forge log lines or bloat them).
fn client_request_id(request: &Request) -> Option<HeaderValue> {
    let value = request.headers().get(&CLIENT_REQUEST_ID)?;
    let ok = value.len() <= 128 && value.as_bytes().iter().all(|b| b.is_ascii_graphic());
    ok.then(|| value.clone())
}

/// Who sent a request, as log lines name it (`cert:FINGERPRINT@IP`, `token:USER@IP`,
/// `bearer@IP`, `anonymous@IP`). Kept as its parts and formatted only when a line is written:
/// formatting it for every request cost about as much as a middleware layer.
struct CallerLabel {
    caller: Option<Caller>,
    remote: Option<std::net::IpAddr>,
    bearer: bool,
}

impl CallerLabel {
    fn of(request: &Request) -> CallerLabel {
        CallerLabel {
            caller: request.extensions().get::<Caller>().cloned(),
            remote: request.extensions().get::<RemoteAddr>().map(|r| r.0.ip()),
            bearer: request.headers().contains_key(header::AUTHORIZATION),
        }
    }
}

impl std::fmt::Display for CallerLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.caller {
            Some(Caller::Certificate { fingerprint, .. }) => write!(f, "cert:{fingerprint}@")?,
            Some(Caller::Token { user_id }) => write!(f, "token:{user_id}@")?,
            _ if self.bearer => f.write_str("bearer@")?,
            _ => f.write_str("anonymous@")?,
        }
        match self.remote {
            Some(ip) => write!(f, "{ip}"),
            None => Ok(()),
        }
    }
}

/// The method as a metric label and in logs: a method of HTTP's own, or `other`. Clients choose
/// method names freely (16 KB names were sent), and every distinct label value is a metric
/// series kept for the life of the process.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The outermost layer over every route: `observe` around the request guard. One axum layer,
/// not two: each layer costs every request a boxed future and a clone of the service inside
/// it, and the two always sit together.
pub(crate) struct Outermost {
    pub observe: ObserveState,
    pub guard: crate::guard::GuardState,
}

pub(crate) async fn outermost(
    State(state): State<Arc<Outermost>>,
    request: Request,
    next: Next,
) -> Response {
    observe(&state.observe, request, |request| {
        crate::guard::guard(&state.guard, request, next)
    })
    .await
}

/// Observes one request, which `inner` answers.
async fn observe<F: Future<Output = Response>>(
    state: &ObserveState,
    request: Request,
    inner: impl FnOnce(Request) -> F,
) -> Response {
    let start = Instant::now();
    let id = state.ids.next();
    let client_id = client_request_id(&request);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = method_label(request.method());
    let version = request.version();
    let caller = CallerLabel::of(&request);
    let url_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    // A span only when debugging: at the default level the few events we log carry the
    // request id themselves, and a span per request would cost on every request.
    let span = tracing::debug_span!("request", id = %id);
    let mut response = if url_len > state.max_url_bytes {
        ApiError::UriTooLong {
            limit: state.max_url_bytes,
        }
        .into_response()
    } else {
        match tokio::time::timeout(
            state.request_timeout,
            inner(request).instrument(span.clone()),
        )
        .await
        {
            Ok(response) => response,
            Err(_) => ApiError::RequestTimeout {
                limit_secs: state.request_timeout.as_secs(),
            }
            .into_response(),
        }
    };
    let elapsed = start.elapsed();
    let status = response.status();
    state
        .metrics
        .observe_request(&route, method, status.as_u16(), elapsed);
    let info = response.extensions().get::<ErrorInfo>().cloned();
    let code = info.as_ref().map_or("", |i| i.code);
    let client_id_text = client_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let _enter = span.enter();
    let ms = elapsed.as_secs_f64() * 1000.0;
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            state
                .metrics
                .auth_failures
                .get_or_create(&CodeLabels {
                    code: code.to_owned(),
                })
                .inc();
            // The access log of refused callers: who, from where, what they tried, why.
            tracing::warn!(
                target: "cledger::access",
                request_id = %id, %caller, %method, ?version, path = %route,
                status = status.as_u16(), code,
                reason = info.as_ref().map_or("", |i| i.message.as_str()),
                client_request_id = client_id_text,
                "refused"
            );
        }
        s if s.is_server_error()
            && code != "ServiceBusy"
            && !s.eq(&StatusCode::NOT_IMPLEMENTED) =>
        {
            tracing::error!(
                request_id = %id, %caller, %method, ?version, path = %route, status = s.as_u16(),
                code,
                reason = info.as_ref().map_or("", |i| i.message.as_str()),
                client_request_id = client_id_text, ms,
                "request failed"
            );
        }
        s => {
            if s == StatusCode::TOO_MANY_REQUESTS {
                state.metrics.rate_limited.inc();
            }
            if code == "ServiceBusy" {
                state.metrics.writes_shed.inc();
            }
            tracing::debug!(
                request_id = %id, %caller, %method, ?version, path = %route, status = s.as_u16(),
                code, client_request_id = client_id_text, ms,
                "request"
            );
        }
    }
    let headers = response.headers_mut();
    if let Ok(mut v) = HeaderValue::from_str(&id) {
        // Unique per response: keep it out of HTTP/2's header compression table, where it
        // would only evict useful entries.
        v.set_sensitive(true);
        headers.insert(REQUEST_ID, v);
    }
    if let Some(v) = client_id {
        headers.insert(CLIENT_REQUEST_ID, v);
    }
    response
}

/// Refuses a request with 429 when its caller is over its rate.
pub async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let key = match request
        .extensions()
        .get::<Caller>()
        .and_then(Caller::user_id)
    {
        Some(id) => id.to_owned(),
        None => match request.extensions().get::<RemoteAddr>() {
            Some(addr) => format!("ip:{}", addr.0.ip()),
            None => "anonymous".to_owned(),
        },
    };
    match limiter.check(&key, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
        .into_response(),
    }
}

/// The operator routes, answered without authentication: `/healthz` (the process serves),
/// `/readyz` (and the ledger accepts writes) and, when enabled, `/metrics`.
pub fn ops_routes(
    router: axum::Router,
    ledger: Arc<dyn LedgerHandle>,
    metrics: Option<Arc<Metrics>>,
    ledger_dir: std::path::PathBuf,
) -> axum::Router {
    use axum::routing::get;
    let ready_ledger = ledger.clone();
    let router = router.route("/healthz", health_route()).route(
        "/readyz",
        get(move || {
            let ledger = ready_ledger.clone();
            async move { readiness(&*ledger) }
        }),
    );
    match metrics {
        Some(metrics) => router.route("/metrics", metrics_route(ledger, metrics, ledger_dir)),
        None => router,
    }
}

/// `GET /healthz`: the process serves.
fn health_route() -> axum::routing::MethodRouter {
    axum::routing::get(|| async { json(StatusCode::OK, serde_json::json!({"status": "ok"})) })
}

/// `GET /metrics`: a scrape.
fn metrics_route(
    ledger: Arc<dyn LedgerHandle>,
    metrics: Arc<Metrics>,
    ledger_dir: std::path::PathBuf,
) -> axum::routing::MethodRouter {
    axum::routing::get(move || {
        let metrics = metrics.clone();
        let ledger = ledger.clone();
        let dir = ledger_dir.clone();
        async move { scrape(&metrics, &*ledger, &dir) }
    })
}

/// The router of the metrics listener (`metrics_listen`): `/metrics` and `/healthz` only.
pub fn metrics_routes(
    ledger: Arc<dyn LedgerHandle>,
    metrics: Arc<Metrics>,
    ledger_dir: std::path::PathBuf,
) -> axum::Router {
    axum::Router::new()
        .route("/healthz", health_route())
        .route("/metrics", metrics_route(ledger, metrics, ledger_dir))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn readiness(ledger: &dyn LedgerHandle) -> Response {
    // A derived file that reads found damaged: some reads fail until a restart rebuilds it.
    if let Some(damage) = ledger.derived_damage().first() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "status": "degraded",
                "reason": format!(
                    "derived file {} is damaged ({}); reads that need it fail until a restart rebuilds it from the ledger",
                    crate::http::error::derived_file_name(&damage.file),
                    damage.reason
                ),
            }),
        );
    }
    match ledger.write_health().err() {
        None => json(
            StatusCode::OK,
            // No transaction id or counter: this answers anyone (load balancers), and what the
            // ledger holds is for its users.
            serde_json::json!({"status": "ready"}),
        ),
        Some(refusal) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unavailable", "reason": refusal.to_string()}),
        ),
    }
}

fn scrape(metrics: &Metrics, ledger: &dyn LedgerHandle, ledger_dir: &std::path::Path) -> Response {
    metrics
        .ledger_seqno
        .set(ledger.committed().map_or(0, |t| t.seqno()) as i64);
    metrics
        .writable
        .set(i64::from(ledger.write_health().is_ok()));
    metrics.queue_depth.set(ledger.queue_depth() as i64);
    metrics.ledger_bytes.set(dir_bytes(ledger_dir));
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// Total size of the files directly in `dir` (the segment files: a few, 64 MiB each).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Installs the process-wide log subscriber (stderr, text or JSON). Called once by the
/// binary; in-process servers in tests log nowhere unless the test installs one.
pub fn init_logging(format: crate::config::LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => builder.try_init(),
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_label_names_the_caller_and_its_address() {
        let request = |caller: Option<Caller>, bearer: bool| {
            let mut builder = Request::builder().uri("/app/transactions");
            if bearer {
                builder = builder.header(header::AUTHORIZATION, "Bearer x");
            }
            let mut request = builder.body(axum::body::Body::empty()).unwrap();
            request
                .extensions_mut()
                .insert(RemoteAddr("192.0.2.7:4433".parse().unwrap()));
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            CallerLabel::of(&request).to_string()
        };
        let certificate = Caller::Certificate {
            fingerprint: "ab12".into(),
            validity: None,
            pem: None,
        };
        let token = Caller::Token {
            user_id: "oid-1".into(),
        };
        assert_eq!(request(Some(certificate), false), "cert:ab12@192.0.2.7");
        assert_eq!(request(Some(token), true), "token:oid-1@192.0.2.7");
        assert_eq!(request(None, true), "bearer@192.0.2.7");
        assert_eq!(
            request(Some(Caller::Anonymous), false),
            "anonymous@192.0.2.7"
        );
        let bare = Request::new(axum::body::Body::empty());
        assert_eq!(CallerLabel::of(&bare).to_string(), "anonymous@");
    }
}
