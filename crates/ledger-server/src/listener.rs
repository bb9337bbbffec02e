//! The accept loop: TCP → TLS → HTTP/1.1 or HTTP/2 (by ALPN) → the axum router.
//!
//! We run our own loop (rather than `axum::serve`, which has no TLS) because each connection's
//! requests must carry who the caller is: the TLS peer certificate is known once per
//! connection, and every request on it gets a [`ledger_http::Caller`] extension with the
//! certificate's fingerprint (or `Anonymous`).
//!
//! Protection against misbehaving clients:
//! * connection slots (`connections`): at most `max_connections` and at most what the
//!   open-file limit leaves beyond the store's reserve of descriptors; a connection accepted
//!   into that reserve (the store opened more files since the start) is closed at once and
//!   counted (`crate::descriptors`). When slots run out the longest-idle connection is
//!   evicted for the newcomer; connections not yet authenticated have a per-address share and
//!   cannot take the slots reserved for authenticated ones;
//! * the TLS handshake must finish within `handshake_timeout` (slowloris), and the first
//!   request must start within the same time after it;
//! * HTTP/1 request headers must arrive within the same timeout once the connection is open
//!   or idle (hyper arms the timer whenever it waits for a request head);
//! * request heads are bounded (`max_header_bytes`: hyper's buffers and HTTP/2's header list
//!   here, a hard cap per request in `guard`), as are HTTP/2 streams per connection;
//! * a connection with no request in progress for `idle_timeout` is closed, and so is one
//!   whose responses make no progress for `send_timeout` (`guard` meters them);
//! * a connection hyper closes while a request body was left unread closes lingering
//!   (`linger`), so the client reads the answer (a 413) instead of a reset.
//!
//! Shutdown: stop accepting, ask every open connection to finish gracefully (HTTP/1: after the
//! current response; HTTP/2: GOAWAY, then in-flight streams complete), and wait at most
//! `grace` for them, including connections still in their handshake.

use crate::connections::{Connection, Connections, Refusal, Slot};
use crate::guard::ConnectionRef;
use crate::http::Caller;
use crate::linger::Lend;
use crate::observe::RemoteAddr;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The DER client certificate of the connection a request came on, when it presented one
/// (a node asking to join proves its key with it).
#[derive(Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

pub(crate) struct Limits {
    /// Who holds the connection slots (shared with the request guard, which marks
    /// connections authenticated).
    pub connections: Arc<Connections>,
    /// Descriptors kept free for the store; 0: no check.
    pub reserved_descriptors: u64,
    pub connections_refused: Counter,
    pub connections_evicted: Counter,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub grace: Duration,
    pub connections_open: Gauge,
}

impl Limits {
    /// A listener's limits: its connection table and open-connections gauge, the timeouts and
    /// bounds of `config`.
    pub fn new(
        config: &crate::ServeConfig,
        metrics: &crate::metrics::Metrics,
        connections: Arc<Connections>,
        connections_open: Gauge,
    ) -> Limits {
        Limits {
            connections,
            reserved_descriptors: config.reserved_descriptors as u64,
            connections_refused: metrics.connections_refused.clone(),
            connections_evicted: metrics.connections_evicted.clone(),
            handshake_timeout: config.handshake_timeout(),
            idle_timeout: config.idle_timeout(),
            send_timeout: config.send_timeout(),
            max_header_bytes: config.max_header_bytes,
            grace: config.shutdown_grace(),
            connections_open,
        }
    }

    /// The limits of the metrics listener: a few connections from monitoring (not counted in
    /// the clients' gauge), the client listener's timeouts.
    pub fn for_operators(config: &crate::ServeConfig, metrics: &crate::metrics::Metrics) -> Limits {
        let connections = Connections::new(crate::connections::SlotPolicy {
            max_connections: 16,
            reserved_for_authenticated: 0,
            max_unauthenticated_per_ip: 16,
        });
        Limits::new(config, metrics, connections, Gauge::default())
    }
}

/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// How long an evicted connection may take to finish what it has in flight (GOAWAY).
const EVICTION_GRACE: Duration = Duration::from_secs(2);

/// Decrements the open-connections gauge when the connection task ends, however it ends.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why the node stopped serving a connection it had not finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cutoff {
    /// No request within the handshake timeout of the handshake.
    NoRequest,
    /// No request in progress for the idle timeout.
    Idle,
    /// Its responses were not read for the send timeout.
    SendStalled,
}

/// The next moment a deadline of `connection` falls, and which one.
fn next_cutoff(connection: &Connection, limits: &ConnectionTimeouts) -> (Instant, Cutoff) {
    let first = if connection.has_had_requests() {
        None
    } else {
        Some((limits.first_request_by, Cutoff::NoRequest))
    };
    let idle = connection
        .idle_deadline(limits.idle)
        .map(|at| (at, Cutoff::Idle));
    let stalled = connection
        .responses
        .stall_deadline(limits.send)
        .map(|at| (at, Cutoff::SendStalled));
    [first, idle, stalled]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at)
        // Busy and nothing unread: look again after a while.
        .unwrap_or((Instant::now() + limits.idle, Cutoff::Idle))
}

struct ConnectionTimeouts {
    first_request_by: Instant,
    idle: Duration,
    send: Duration,
}

/// Warns about refused connections at most every few seconds (a flood of them must not become
/// a flood of log lines).
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, warning: impl FnOnce(u64) -> String) {
        self.since_warning += 1;
        if self.last_warning.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        tracing::warn!("{}", warning(self.since_warning));
        self.since_warning = 0;
        self.last_warning = Some(Instant::now());
    }
}

/// Serves until `stop` completes, then shuts down gracefully (bounded by `limits.grace`).
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let limits = Arc::new(limits);
    // Tells every connection to finish gracefully when shutdown starts.
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    let mut no_descriptor = Refusals::default();
    let mut no_slot = Refusals::default();
    loop {
        while tasks.try_join_next().is_some() {} // reap finished connections
        let (tcp, remote) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE/ENFILE or a connection reset before accept; back off
                    // instead of spinning, and keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if limits.reserved_descriptors > 0
            && !crate::descriptors::leaves_reserve(
                tcp.as_raw_fd(),
                crate::descriptors::soft_limit(),
                limits.reserved_descriptors,
            )
        {
            // Closing it now (drop) gives the descriptor back before the store needs it.
            limits.connections_refused.inc();
            let (fd, reserve) = (tcp.as_raw_fd(), limits.reserved_descriptors);
            no_descriptor.note(|n| {
                format!(
                    "refused {n} connection(s): the newest got descriptor {fd}, within the \
                     {reserve} descriptors reserved for the store below the open-file limit \
                     ({}); raise the limit (ulimit -n, systemd LimitNOFILE=)",
                    crate::descriptors::soft_limit()
                        .map_or_else(|| "unlimited".into(), |n| n.to_string()),
                )
            });
            continue;
        }
        let slot = match limits.connections.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                limits.connections_refused.inc();
                no_slot.note(|n| {
                    let why = match refusal {
                        Refusal::PerAddressLimit => format!(
                            "{} already holds its share of connections not yet authenticated, \
                             all busy",
                            remote.ip()
                        ),
                        Refusal::AllBusy => "every connection slot is busy".to_owned(),
                    };
                    format!("refused {n} connection(s); the newest because {why}")
                });
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        limits.connections_open.inc();
        let open = Open(limits.connections_open.clone());
        tasks.spawn(serve_connection(
            tcp,
            remote,
            slot,
            open,
            acceptor.clone(),
            app.clone(),
            limits.clone(),
            closing_rx.clone(),
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, drained).await.is_err() {
        tasks.abort_all(); // past the grace period: close what is left
    }
}

/// One connection, from the TLS handshake to its close.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    slot: Slot,
    _open: Open,
    acceptor: TlsAcceptor,
    app: axum::Router,
    limits: Arc<Limits>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let connection = slot.connection.clone();
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            _ => return, // handshake failed or timed out: nothing to answer
        },
        _ = closing.wait_for(|closing| *closing) => return,
        () = connection.evicted() => {
            limits.connections_evicted.inc();
            return;
        }
    };
    let peer_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| PeerCertificate(Arc::new(c.as_ref().to_vec())));
    let caller = match &peer_cert {
        Some(cert) => Caller::from_certificate(&cert.0),
        None => Caller::Anonymous,
    };
    let timeouts = ConnectionTimeouts {
        first_request_by: Instant::now() + limits.handshake_timeout,
        idle: limits.idle_timeout,
        send: limits.send_timeout,
    };
    let (stream, returned) = Lend::new(tls);
    let requests = connection.clone();
    let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(caller.clone());
        if let Some(cert) = &peer_cert {
            request.extensions_mut().insert(cert.clone());
        }
        request.extensions_mut().insert(RemoteAddr(remote));
        request
            .extensions_mut()
            .insert(ConnectionRef(requests.clone()));
        let in_flight = requests.request_started();
        let answer = app.clone().oneshot(request);
        async move {
            let response = answer.await;
            drop(in_flight);
            response
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let served = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    // Boxed, not pinned on the stack: dropping it must drop the connection (and hand the
    // stream back) before the lingering close below.
    let mut served = Box::pin(served);
    // Set once the connection was asked to finish (GOAWAY, or close after the current
    // response): it may take until then.
    let mut finishing_until: Option<Instant> = None;
    let finished = loop {
        let deadline = finishing_until.unwrap_or_else(|| next_cutoff(&connection, &timeouts).0);
        tokio::select! {
            // Errors here are the client's (reset, bad framing); there is nobody to tell.
            _ = served.as_mut() => break true,
            () = tokio::time::sleep_until(deadline.into()) => {
                if finishing_until.is_some() {
                    break false;
                }
                // Requests may have started or ended meanwhile: only a deadline still due counts.
                let (due, cutoff) = next_cutoff(&connection, &timeouts);
                if due <= Instant::now() {
                    tracing::debug!(%remote, ?cutoff, "closing connection");
                    break false; // dropping the connection closes it
                }
            }
            () = connection.evicted(), if finishing_until.is_none() => {
                limits.connections_evicted.inc();
                served.as_mut().graceful_shutdown();
                finishing_until = Some(Instant::now() + EVICTION_GRACE);
            }
            _ = closing.wait_for(|closing| *closing), if finishing_until.is_none() => {
                served.as_mut().graceful_shutdown();
                finishing_until = Some(Instant::now() + limits.grace);
            }
        }
    };
    let unread_body = connection.has_unread_body();
    drop(served); // hands the stream back through `returned`
    if finished
        && unread_body
        && !connection.is_evicted()
        && !*closing.borrow()
        && let Ok(mut stream) = returned.await
    {
        let discarded = tokio::select! {
            n = crate::linger::drain(&mut stream) => n,
            () = connection.evicted() => 0,
            _ = closing.wait_for(|closing| *closing) => 0,
        };
        tracing::debug!(%remote, discarded, "lingering close");
    }
    drop(slot);
}
