//! What a request must pass because of the connection it came on, before anything else looks
//! at it, and what its response costs that connection:
//!
//! * the request head: a hard cap on its size (431; hyper enforces its own limit only when a
//!   read leaves the head incomplete, so a large head that arrives in one read got through),
//!   and exactly one `Host` in HTTP/1.1 (RFC 9112 §3.2: 400 otherwise);
//! * requests on a connection not yet authenticated as a user (see `connections`) are limited
//!   per source IP address *before* authentication, so floods of fresh self-signed
//!   certificates or garbage tokens cannot each get a fresh bucket; failed authentication
//!   costs a token on any connection;
//! * response memory: a response body is produced whole (a page of entries), and a client that
//!   does not read (HTTP/2 window 0, or a socket never read) would keep it in memory. Each
//!   connection's unread response bytes are metered ([`ResponseMeter`]); a new request waits
//!   while they exceed the limit (and gets 503 `ResponseBacklog` if they do not drain within
//!   the send timeout), and the listener closes a connection whose responses make no progress
//!   for the send timeout. Bodies are handed to hyper in chunks of [`CHUNK`] bytes so that
//!   progress is measured as the client reads, not when hyper takes the whole body;
//! * a request whose body was left unread (refused before reading it, such as a 413) marks its
//!   connection for a lingering close (`linger`).
//!
//! Layer order: `observe` (outermost: ids, logs, metrics) → this → bearer authentication →
//! per-caller rate limit → routes.

use crate::connections::{Connection, Connections};
use crate::http::{ApiError, Authenticated};
use crate::ratelimit::RateLimiter;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Method, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

/// Largest piece of a response body handed to hyper at once.
pub(crate) const CHUNK: usize = 16 << 10;

/// Reads one connection may have being answered at once (HTTP/2 multiplexes up to 128).
const PRODUCING_PER_CONNECTION: usize = 4;

pub(crate) struct GuardState {
    pub connections: Arc<Connections>,
    pub max_header_bytes: usize,
    /// Requests per second (and burst) from one IP address on unauthenticated connections;
    /// `None`: not limited.
    pub unauthenticated: Option<RateLimiter>,
    pub max_unread_response_bytes: usize,
    pub send_timeout: Duration,
}

/// The connection a request came on (inserted by the listener).
#[derive(Clone)]
pub(crate) struct ConnectionRef(pub Arc<Connection>);

/// Guards one request on its way to `next` (called by `observe::outermost`).
pub(crate) async fn guard(state: &GuardState, request: Request, next: Next) -> Response {
    let Some(ConnectionRef(connection)) = request.extensions().get::<ConnectionRef>().cloned()
    else {
        return next.run(request).await; // not from the listener (in-process router tests)
    };
    // First, so that a request refused below without reading its body marks the connection.
    let request = request.map(|body| {
        Body::new(TrackedBody {
            inner: body,
            finished: false,
            connection: connection.clone(),
        })
    });
    if let Err(e) = check_head(&request, state.max_header_bytes) {
        return e.into_response();
    }
    if !connection.is_authenticated()
        && let Err(refused) = take_unauthenticated_token(state, &connection)
    {
        return refused.into_response();
    }
    // Reads are what produce large bodies; writes are answered with a few bytes.
    let producing = if matches!(*request.method(), Method::GET | Method::HEAD) {
        match wait_for_backlog(state, &connection).await {
            Ok(permit) => Some(permit),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let response = next.run(request).await;
    if response.extensions().get::<Authenticated>().is_some() {
        state.connections.authenticated(&connection);
    } else if connection.is_authenticated()
        && matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        )
    {
        // Failed authentication costs a token even on a connection a user proved before
        // (garbage tokens on a borrowed connection are still a flood). Unauthenticated ones
        // paid on the way in.
        if let Some(limiter) = &state.unauthenticated {
            let _ = limiter.check(&address_key(&connection), Instant::now());
        }
    }
    let response = response.map(|body| Body::new(MeteredBody::new(body, connection.clone())));
    // Only now: the meter counts the body, so the next read to get the permit sees it.
    drop(producing);
    response
}

fn address_key(connection: &Connection) -> String {
    connection.ip().to_string()
}

fn take_unauthenticated_token(state: &GuardState, connection: &Connection) -> Result<(), ApiError> {
    let Some(limiter) = &state.unauthenticated else {
        return Ok(());
    };
    limiter
        .check(&address_key(connection), Instant::now())
        .map_err(|wait| ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        })
}

/// The request head's size as hyper received it (request line, headers with `: ` and CRLF), and
/// the `Host` rule.
fn check_head(request: &Request, max_header_bytes: usize) -> Result<(), ApiError> {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    let size = line
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if size > max_header_bytes {
        return Err(ApiError::HeadersTooLarge {
            size,
            limit: max_header_bytes,
        });
    }
    let hosts = request.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(ApiError::RepeatedHeader("Host"));
    }
    // HTTP/2 carries the authority in `:authority`; HTTP/1.0 may omit Host.
    if hosts == 0 && request.version() == Version::HTTP_11 {
        return Err(ApiError::MissingHeader("Host"));
    }
    Ok(())
}

/// Waits (at most the send timeout) until the connection's unread responses are below the
/// limit and fewer than [`PRODUCING_PER_CONNECTION`] reads are being answered on it; the
/// permit is held while the response is produced. (Without the second bound, many requests
/// arriving together would all pass the first before any response is counted.)
async fn wait_for_backlog<'c>(
    state: &GuardState,
    connection: &'c Connection,
) -> Result<SemaphorePermit<'c>, ApiError> {
    let meter = &connection.responses;
    let deadline = tokio::time::Instant::now() + state.send_timeout;
    let backlog = || ApiError::ResponseBacklog {
        unread: meter.unread(),
        limit: state.max_unread_response_bytes,
    };
    loop {
        let drained = meter.drained.notified();
        if meter.unread() < state.max_unread_response_bytes {
            let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, meter.producing.acquire()).await
            else {
                return Err(backlog());
            };
            // Reads that held the permits meanwhile may have filled the backlog.
            if meter.unread() < state.max_unread_response_bytes {
                return Ok(permit);
            }
            continue;
        }
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            return Err(backlog());
        }
    }
}

/// One connection's response bytes produced but not yet taken by hyper for sending.
pub(crate) struct ResponseMeter {
    epoch: Instant,
    unread: AtomicUsize,
    /// When hyper last took a chunk (or a response started while none was unread), in ms
    /// since `epoch`.
    progress_ms: AtomicU64,
    drained: Notify,
    /// Permits for reads being answered ([`PRODUCING_PER_CONNECTION`]).
    producing: Semaphore,
}

impl Default for ResponseMeter {
    fn default() -> Self {
        ResponseMeter {
            epoch: Instant::now(),
            unread: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            drained: Notify::new(),
            producing: Semaphore::new(PRODUCING_PER_CONNECTION),
        }
    }
}

impl ResponseMeter {
    pub fn unread(&self) -> usize {
        self.unread.load(Ordering::Relaxed)
    }

    fn progress(&self) {
        self.progress_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn produced(&self, bytes: usize) {
        if self.unread.fetch_add(bytes, Ordering::Relaxed) == 0 {
            self.progress(); // the clock starts now, not at the last response
        }
    }

    fn taken(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.unread.fetch_sub(bytes, Ordering::Relaxed);
        self.progress();
        self.drained.notify_waiters();
    }

    /// When unread responses will have made no progress for `send_timeout`; `None` when
    /// nothing is unread.
    pub fn stall_deadline(&self, send_timeout: Duration) -> Option<Instant> {
        (self.unread() > 0).then(|| {
            self.epoch
                + Duration::from_millis(self.progress_ms.load(Ordering::Relaxed))
                + send_timeout
        })
    }
}

/// A response body metered against its connection's [`ResponseMeter`] and cut into chunks.
struct MeteredBody {
    inner: Body,
    /// The rest of a data frame larger than [`CHUNK`].
    pending: Option<Bytes>,
    /// Bytes counted as unread and not yet taken (bodies of known size only).
    counted: usize,
    connection: Arc<Connection>,
}

impl MeteredBody {
    fn new(inner: Body, connection: Arc<Connection>) -> MeteredBody {
        let counted = inner
            .size_hint()
            .exact()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        connection.responses.produced(counted);
        MeteredBody {
            inner,
            pending: None,
            counted,
            connection,
        }
    }

    fn emit(&mut self, mut data: Bytes) -> Frame<Bytes> {
        if data.len() > CHUNK {
            self.pending = Some(data.split_off(CHUNK));
        }
        let taken = data.len().min(self.counted);
        self.counted -= taken;
        self.connection.responses.taken(taken);
        Frame::data(data)
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some(rest) = this.pending.take() {
            return Poll::Ready(Some(Ok(this.emit(rest))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(this.emit(data)))),
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let pending = self.pending.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self.inner.size_hint();
        match inner.exact() {
            Some(n) => SizeHint::with_exact(n + pending),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + pending);
                hint
            }
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Not sent (the client went away, or the body was cut short): no longer held.
        let rest = std::mem::take(&mut self.counted);
        self.connection.responses.taken(rest);
    }
}

/// A request body that tells its connection when it is dropped before its end.
struct TrackedBody {
    inner: Body,
    finished: bool,
    connection: Arc<Connection>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if !self.finished && !self.inner.is_end_stream() {
            self.connection.note_unread_body();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Arc<Connection> {
        let table = Connections::new(crate::connections::SlotPolicy {
            max_connections: 4,
            reserved_for_authenticated: 0,
            max_unauthenticated_per_ip: 4,
        });
        let slot = table.admit([127, 0, 0, 1].into()).unwrap();
        slot.connection.clone()
    }

    #[tokio::test]
    async fn a_body_is_metered_until_taken_and_cut_into_chunks() {
        let connection = connection();
        let body = MeteredBody::new(Body::from(vec![7u8; CHUNK * 2 + 10]), connection.clone());
        assert_eq!(connection.responses.unread(), CHUNK * 2 + 10);
        assert_eq!(body.size_hint().exact(), Some((CHUNK * 2 + 10) as u64));
        let mut body = std::pin::pin!(body);
        let mut sizes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
            assert_eq!(
                connection.responses.unread(),
                CHUNK * 2 + 10 - sizes.iter().sum::<usize>()
            );
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
        assert!(
            connection
                .responses
                .stall_deadline(Duration::ZERO)
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_body_dropped_unsent_is_no_longer_counted() {
        let connection = connection();
        let body = MeteredBody::new(Body::from(vec![1u8; 100_000]), connection.clone());
        assert!(
            connection
                .responses
                .stall_deadline(Duration::from_secs(5))
                .is_some()
        );
        drop(body);
        assert_eq!(connection.responses.unread(), 0);
    }

    #[tokio::test]
    async fn reads_wait_while_a_connection_has_unread_responses() {
        let connection = connection();
        let state = GuardState {
            connections: Connections::new(crate::connections::SlotPolicy {
                max_connections: 1,
                reserved_for_authenticated: 0,
                max_unauthenticated_per_ip: 1,
            }),
            max_header_bytes: 8192,
            unauthenticated: None,
            max_unread_response_bytes: 1 << 20,
            send_timeout: Duration::from_millis(200),
        };
        // Below the limit: at most PRODUCING_PER_CONNECTION reads at once.
        let mut permits = Vec::new();
        for _ in 0..PRODUCING_PER_CONNECTION {
            permits.push(wait_for_backlog(&state, &connection).await.unwrap());
        }
        assert!(matches!(
            wait_for_backlog(&state, &connection).await,
            Err(ApiError::ResponseBacklog { unread: 0, .. })
        ));
        permits.clear();
        // Above it: refused after the send timeout...
        let body = MeteredBody::new(Body::from(vec![0u8; 2 << 20]), connection.clone());
        let started = Instant::now();
        assert!(matches!(
            wait_for_backlog(&state, &connection).await,
            Err(ApiError::ResponseBacklog { unread, limit: 1048576 }) if unread == 2 << 20
        ));
        assert!(started.elapsed() >= Duration::from_millis(200));
        // ...and let through as soon as the client has read enough.
        let waiting = wait_for_backlog(&state, &connection);
        let read = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(body);
        };
        let (admitted, ()) = tokio::join!(waiting, read);
        assert!(admitted.is_ok());
    }

    #[test]
    fn request_heads() {
        let request = |version, hosts: &[&str], filler: usize| {
            let mut builder = Request::builder().uri("/healthz").version(version);
            for host in hosts {
                builder = builder.header(header::HOST, *host);
            }
            if filler > 0 {
                builder = builder.header("x-filler", "b".repeat(filler));
            }
            builder.body(Body::empty()).unwrap()
        };
        assert!(check_head(&request(Version::HTTP_11, &["a"], 0), 8192).is_ok());
        assert!(check_head(&request(Version::HTTP_10, &[], 0), 8192).is_ok());
        assert!(check_head(&request(Version::HTTP_2, &[], 0), 8192).is_ok());
        assert!(matches!(
            check_head(&request(Version::HTTP_11, &[], 0), 8192),
            Err(ApiError::MissingHeader("Host"))
        ));
        assert!(matches!(
            check_head(&request(Version::HTTP_11, &["a", "b"], 0), 8192),
            Err(ApiError::RepeatedHeader("Host"))
        ));
        assert!(matches!(
            check_head(&request(Version::HTTP_11, &["a"], 9000), 8192),
            Err(ApiError::HeadersTooLarge { limit: 8192, .. })
        ));
    }
}
