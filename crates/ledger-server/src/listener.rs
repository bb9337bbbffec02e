//! The accept loop: TCP → TLS → HTTP/1.1 or HTTP/2 (by ALPN) → the axum router.
//!
//! We run our own loop (rather than `axum::serve`, which has no TLS) because each connection's
//! requests must carry who the caller is: the TLS peer certificate is known once per
//! connection, and every request on it gets a [`ledger_http::Caller`] extension with the
//! certificate's fingerprint (or `Anonymous`).
//!
//! Protection against misbehaving clients, all per connection:
//! * a semaphore bounds open connections (excess clients wait in the kernel's accept queue),
//!   at most `max_connections` and at most what the open-file limit leaves beyond the store's
//!   reserve of descriptors; a connection accepted anyway into that reserve (the store opened
//!   more files since the start) is closed at once and counted (`crate::descriptors`);
//! * the TLS handshake must finish within `handshake_timeout` (slowloris);
//! * HTTP/1 request headers must arrive within the same timeout once the connection is open
//!   or idle (hyper arms the timer whenever it waits for a request head);
//! * request heads are bounded (`max_header_bytes`, HTTP/1 and HTTP/2), as are HTTP/2
//!   streams per connection;
//! * a connection with no request in progress for `idle_timeout` is closed (the watchdog
//!   below; it matters most for HTTP/2, which hyper never times out by itself).
//!
//! Shutdown: stop accepting, ask every open connection to finish gracefully (HTTP/1: after the
//! current response; HTTP/2: GOAWAY, then in-flight streams complete), and wait at most
//! `grace` for them, including connections still in their handshake.

use crate::http::Caller;
use crate::observe::RemoteAddr;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The DER client certificate of the connection a request came on, when it presented one
/// (a node asking to join proves its key with it).
#[derive(Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

pub(crate) struct Limits {
    pub max_connections: usize,
    /// Descriptors kept free for the store; 0: no check.
    pub reserved_descriptors: u64,
    pub connections_refused: Counter,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub grace: Duration,
    pub connections_open: Gauge,
}

/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Requests in progress on one connection, and when the last one started or ended.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When the connection becomes idle for too long, if nothing happens before.
    fn idle_deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        (self.in_flight.load(Ordering::Relaxed) == 0).then(|| {
            self.born + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle_timeout
        })
    }
}

/// Counts a request as in progress while alive.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the open-connections gauge when the connection task ends, however it ends.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Warns about connections refused for want of descriptors, at most every few seconds (a flood
/// of them must not become a flood of log lines).
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, fd: i32, reserve: u64) {
        self.since_warning += 1;
        if self.last_warning.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        tracing::warn!(
            "refused {} connection(s): the newest got descriptor {fd}, within the {reserve}              descriptors reserved for the store below the open-file limit ({}); raise the limit              (ulimit -n, systemd LimitNOFILE=)",
            self.since_warning,
            crate::descriptors::soft_limit().map_or_else(|| "unlimited".into(), |n| n.to_string()),
        );
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
    let permits_total = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(permits_total as usize));
    let graceful = GracefulShutdown::new();
    // Tells connections still in their TLS handshake to give up when shutdown starts.
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    let mut refusals = Refusals::default();
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
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
            refusals.note(tcp.as_raw_fd(), limits.reserved_descriptors);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.handshake_timeout;
        let idle_timeout = limits.idle_timeout;
        let max_header_bytes = limits.max_header_bytes;
        let mut closing = closing_rx.clone();
        limits.connections_open.inc();
        let open = Open(limits.connections_open.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    _ => return, // handshake failed or timed out: nothing to answer
                },
                _ = closing.wait_for(|closing| *closing) => return,
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
            let activity = Arc::new(Activity {
                born: Instant::now(),
                in_flight: AtomicUsize::new(0),
                last_ms: AtomicU64::new(0),
            });
            let requests = activity.clone();
            let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(caller.clone());
                if let Some(cert) = &peer_cert {
                    request.extensions_mut().insert(cert.clone());
                }
                request.extensions_mut().insert(RemoteAddr(remote));
                let in_flight = InFlight::new(&requests);
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
                .header_read_timeout(handshake_timeout)
                .max_buf_size(max_header_bytes);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(tls),
                TowerToHyperService::new(service),
            );
            // Errors here are the client's (reset, bad framing); there is nobody to tell.
            let served = watcher.watch(connection.into_owned());
            let mut served = std::pin::pin!(served);
            loop {
                let deadline = activity
                    .idle_deadline(idle_timeout)
                    .unwrap_or_else(|| Instant::now() + idle_timeout);
                tokio::select! {
                    _ = &mut served => break,
                    () = tokio::time::sleep_until(deadline.into()) => {
                        if activity
                            .idle_deadline(idle_timeout)
                            .is_some_and(|d| d <= Instant::now())
                        {
                            break; // idle too long: dropping the connection closes it
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = async {
        graceful.shutdown().await;
        // Also wait for connections that were still in their TLS handshake.
        let _ = permits.acquire_many(permits_total).await;
    };
    let _ = tokio::time::timeout(limits.grace, drained).await;
}
