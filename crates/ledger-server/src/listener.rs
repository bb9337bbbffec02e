//! The accept loop: TCP → TLS → HTTP/1.1 or HTTP/2 (by ALPN) → the axum router.
//!
//! We run our own loop (rather than `axum::serve`, which has no TLS) because each connection's
//! requests must carry who the caller is: the TLS peer certificate is known once per
//! connection, and every request on it gets a [`ledger_http::Caller`] extension with the
//! certificate's fingerprint (or `Anonymous`).
//!
//! Protection against misbehaving clients, all per connection:
//! * a semaphore bounds open connections (excess clients wait in the kernel's accept queue);
//! * the TLS handshake must finish within `handshake_timeout` (slowloris);
//! * HTTP/1 request headers must arrive within the same timeout once the connection is open.
//!
//! Shutdown: stop accepting, ask every open connection to finish gracefully (HTTP/1: after the
//! current response; HTTP/2: GOAWAY, then in-flight streams complete), and wait at most
//! `grace` for them, including connections still in their handshake.

use crate::http::Caller;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub(crate) struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub grace: Duration,
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
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let tcp = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _remote)) => tcp,
                Err(e) => {
                    // Usually EMFILE/ENFILE or a connection reset before accept; back off
                    // instead of spinning, and keep serving.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.handshake_timeout;
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    _ => return, // handshake failed or timed out: nothing to answer
                },
                _ = closing.wait_for(|closing| *closing) => return,
            };
            let caller = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                Some(cert) => Caller::Certificate {
                    fingerprint: crate::http::certificate_fingerprint(cert.as_ref()),
                },
                None => Caller::Anonymous,
            };
            let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(caller.clone());
                app.clone().oneshot(request)
            });
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout);
            builder.http2().timer(TokioTimer::new());
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(tls),
                TowerToHyperService::new(service),
            );
            // Errors here are the client's (reset, bad framing); there is nobody to tell.
            let _ = watcher.watch(connection.into_owned()).await;
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
