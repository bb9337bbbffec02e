//! The cledger node: everything between the command line and the REST routes.
//!
//! * [`config`]: settings and their precedence (flag > environment > file > default);
//! * [`node`]: the data directory: lock file, identity, first start, administrators;
//! * [`tls`]: the rustls configuration with optional, CA-less client certificates;
//! * [`auth`]: bearer-token (JWT/OIDC) users: trusted issuers, their keys, the middleware;
//! * `listener`: the accept loop that tags each request with its caller;
//! * this module: [`Server`] (start, address, graceful shutdown) and [`run`].
//!
//! The routes themselves are `ledger-http`'s (and the public pages `ledger-web`'s); this crate
//! only hosts them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ledger_server::ServeError> {
//! use ledger_server::{Server, ServeConfig};
//! let config = ServeConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServeConfig::default() };
//! let server = Server::start(config).await?;
//! println!("serving on {}", server.local_addr());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cluster;
pub mod config;
mod connections;
pub mod descriptors;
mod guard;
mod linger;
mod listener;
pub use listener::PeerCertificate;
pub mod metrics;
pub mod node;
pub mod observe;
mod ratelimit;
pub mod tls;
mod witness;

use ledger_http as http;

pub use config::{Overrides, ServeConfig};
pub use node::StartReport;

use ledger_store::Ledger;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the server could not start (or stop cleanly). Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config file {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    #[error(
        "{dir} is in use by another cledger server{} (lock file {lock}); stop that server first, \
         or start this one with a different --data-dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning {
        dir: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node identity: {0}")]
    Files(#[from] ledger_identity::files::FilesError),
    #[error("node identity: {0}")]
    Identity(String),
    #[error("admin certificate {path}: {reason} (expected a PEM file holding a CERTIFICATE)")]
    AdminCert { path: PathBuf, reason: String },
    #[error("ledger: {0}")]
    Store(#[from] ledger_store::StoreError),
    #[error("ledger write: {0}")]
    Append(#[from] ledger_store::AppendError),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error(
        "cannot listen on {addr}: {source} (is another server using the port? choose another \
         with --listen, or port 0 for any free port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("token issuer keys: {0}")]
    TokenKeys(#[from] auth::keys::KeyError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A running server. Dropping it without [`Server::shutdown`] stops accepting but does not wait.
pub struct Server {
    local_addr: SocketAddr,
    /// Where `/metrics` is served when it has its own listener (`metrics_listen`).
    metrics_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    report: StartReport,
    ledger: Arc<Ledger>,
    cluster: Option<Arc<cluster::ClusterNode>>,
    /// Set to true to stop the listeners.
    stop: Option<watch::Sender<bool>>,
    /// The listeners' accept loops (clients; metrics when on their own address).
    tasks: Vec<JoinHandle<()>>,
    // Held until shutdown has closed the ledger, so no other server can open it earlier.
    node: Option<node::Node>,
}

impl Server {
    /// Locks the data directory, creates or opens the ledger, binds the listener and starts
    /// serving in the background. Prints nothing.
    pub async fn start(config: ServeConfig) -> Result<Server, ServeError> {
        config.validate()?;
        // Before the ledger opens its segments: the soft limit is often far below the hard one.
        match descriptors::raise_soft_limit() {
            Ok(raised) if raised.from != raised.to => tracing::info!(
                "open-file limit raised from {} to {}",
                show_limit(raised.from),
                show_limit(raised.to)
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
        }
        // The client listener is bound first: a cluster node tells the others its address.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let client_url = format!("https://{local_addr}");
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?,
            ),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        // So is the peer listener: a joining node tells the service where to reach it.
        let peer_listener = match config.peer_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| ServeError::Bind { addr, source })?;
                cluster::join_service(&config, &client_url, &bound.to_string()).await?;
                Some(listener)
            }
            None => None,
        };
        let setup = config.clone();
        let metrics = Arc::new(metrics::Metrics::new());
        let observer: Arc<dyn ledger_store::StoreObserver> = metrics.clone();
        let mut node =
            tokio::task::spawn_blocking(move || node::Node::start_observed(&setup, Some(observer)))
                .await
                .map_err(|e| ServeError::Internal(format!("startup task: {e}")))??;
        let cluster = match peer_listener {
            Some(listener) => {
                Some(cluster::start(&config, &node, client_url, listener, metrics.clone()).await?)
            }
            None => None,
        };
        let handle: Arc<dyn ledger_store::LedgerHandle> = match &cluster {
            Some(c) => c.handle.clone(),
            None => node.ledger.clone(),
        };
        if let Some(c) = &cluster {
            if !cluster::wait_for_genesis(&*c.handle, std::time::Duration::from_secs(60)).await {
                return Err(ServeError::Internal(
                    "this node did not receive the service's ledger within 60 s".into(),
                ));
            }
            // Ready once a primary is known (a founder elects itself within a second); a node
            // whose cluster has lost its majority still starts, answering writes with 503.
            if !cluster::wait_for_primary(&c.cluster, std::time::Duration::from_secs(10)).await {
                tracing::warn!(
                    "no primary is known yet; writes are answered 503 until one is elected"
                );
            }
        }
        if let Some(id) = node.ledger.governance(
            ledger_core::entry::tables::CONFIG,
            ledger_store::LEDGER_ID_KEY,
        )? {
            node.ledger_id = serde_json::from_slice(&id).unwrap_or(node.ledger_id);
        }
        let tls = tls::server_config(&node.files)?;
        // Checkpoints: the board the API serves, and the publisher that fills it.
        let (checkpoints, publisher) = if config.checkpoint_interval_ms > 0 {
            let origin = config.checkpoint_origin.clone().unwrap_or_else(|| {
                witness::default_origin(&node.ledger_id, &node.files.service_cert_pem)
            });
            let (signer, key) = witness::checkpoint_key(&node.files.service_key_pem, &origin)?;
            let board = Arc::new(http::checkpoints::CheckpointBoard::new(key));
            let signs: Box<dyn Fn() -> bool + Send + Sync> = match &cluster {
                Some(c) => {
                    let cluster = c.cluster.clone();
                    Box::new(move || {
                        cluster
                            .primary()
                            .is_some_and(|(id, _)| &id == cluster.node_id())
                    })
                }
                None => Box::new(|| true),
            };
            let publisher = witness::Publisher::new(
                node.ledger.clone(),
                signer,
                origin,
                board.clone(),
                &config.witnesses,
                signs,
            )?;
            (Some(board), Some(publisher))
        } else {
            (None, None)
        };
        let api = http::ApiConfig {
            ledger_id: node.ledger_id.clone(),
            service_cert_pem: node.files.service_cert_pem.clone(),
            node_id: node.node_id.clone(),
            max_entry_bytes: config.max_entry_bytes,
            max_collections: config.max_collections,
            max_body_bytes: config.max_body_bytes(),
            max_pending_write_bytes: config.max_pending_write_bytes,
            idempotency_retention_secs: config.idempotency_retention_secs,
            client_request_id_is_idempotency_key: config.idempotency_client_request_id,
            checkpoints,
        };
        let app = http::try_router(handle.clone(), api)
            .map_err(|e| ServeError::InvalidSetting(e.to_string()))?;
        // See `observe` for why the layers are in this order.
        let app = if config.rate_limit_per_second > 0 {
            let limiter =
                ratelimit::RateLimiter::new(config.rate_limit_per_second, config.rate_limit_burst);
            app.layer(axum::middleware::from_fn_with_state(
                Arc::new(limiter),
                observe::rate_limit,
            ))
        } else {
            app
        };
        // Always installed: with no issuer configured, a bearer token gets a clear 401.
        let validator = auth::TokenValidator::load(&config.jwt_issuers).await?;
        let app = auth::layer::with_bearer_auth(app, std::sync::Arc::new(validator));
        let reserve = config.reserved_descriptors as u64;
        let max_connections = connection_bound(&config, reserve)?;
        let connections = connections::Connections::new(connections::SlotPolicy {
            max_connections,
            // The open-file limit may bound connections below the configured number.
            reserved_for_authenticated: config
                .reserved_connections
                .min(max_connections.saturating_sub(1)),
            max_unauthenticated_per_ip: config.max_unauthenticated_connections_per_ip,
        });
        let app = observe::ops_routes(
            app,
            node.ledger.clone(),
            (config.metrics && metrics_listener.is_none()).then(|| metrics.clone()),
            config.data_dir.join("ledger"),
        );
        // The auditor's pages are public, like `/healthz`: added after (so outside) the bearer
        // layer and the API's own authentication, a visitor with no certificate, or with a
        // token this node does not accept, still gets them. They carry no ledger data.
        let app = ledger_web::routes(app, node.ledger_id.clone());
        let app = match &cluster {
            Some(c) => cluster::routes(app, c.clone()),
            None => app,
        };
        // Outermost, over every route: the request guard, and `observe` around it.
        let app = app.layer(axum::middleware::from_fn_with_state(
            Arc::new(observe::Outermost {
                observe: observe::ObserveState {
                    metrics: metrics.clone(),
                    ids: observe::RequestIds::new(),
                    max_url_bytes: config.max_url_bytes,
                    request_timeout: config.request_timeout(),
                },
                guard: guard::GuardState {
                    connections: connections.clone(),
                    max_header_bytes: config.max_header_bytes,
                    unauthenticated: (config.unauthenticated_rate_per_second > 0).then(|| {
                        ratelimit::RateLimiter::new(
                            config.unauthenticated_rate_per_second,
                            config.unauthenticated_rate_burst,
                        )
                    }),
                    max_unread_response_bytes: config.max_unread_response_bytes,
                    send_timeout: config.send_timeout(),
                },
            }),
            observe::outermost,
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut stop = stop_rx.clone();
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }
        };
        let mut tasks = Vec::new();
        if let Some(publisher) = publisher {
            let interval = std::time::Duration::from_millis(config.checkpoint_interval_ms);
            tasks.push(tokio::spawn(publisher.run(interval, stopped())));
        }
        if let Some(listener) = metrics_listener {
            tasks.push(tokio::spawn(listener::serve(
                listener,
                tokio_rustls::TlsAcceptor::from(tls.clone()),
                observe::metrics_routes(
                    node.ledger.clone(),
                    metrics.clone(),
                    config.data_dir.join("ledger"),
                ),
                listener::Limits::for_operators(&config, &metrics),
                stopped(),
            )));
        }
        let limits = listener::Limits::new(
            &config,
            &metrics,
            connections,
            metrics.connections_open.clone(),
        );
        tasks.push(tokio::spawn(listener::serve(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            app,
            limits,
            stopped(),
        )));
        if let Some(addr) = metrics_addr {
            tracing::info!("serving /metrics on https://{addr}");
        }
        Ok(Server {
            local_addr,
            metrics_addr,
            data_dir: config.data_dir,
            report: node.report.clone(),
            ledger: node.ledger.clone(),
            cluster,
            stop: Some(stop_tx),
            tasks,
            node: Some(node),
        })
    }

    /// The address actually bound (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the metrics listener, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// What this start created or registered.
    pub fn report(&self) -> &StartReport {
        &self.report
    }

    /// The ledger being served (for in-process tests and tools).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Stops accepting, lets in-flight requests finish (bounded by `shutdown_grace_secs`),
    /// then closes the ledger: everything submitted is committed and checkpointed. The data
    /// directory is unlocked when this returns.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for task in std::mem::take(&mut self.tasks) {
            task.await
                .map_err(|e| ServeError::Internal(format!("accept loop: {e}")))?;
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.cluster.shutdown().await;
        }
        let node = self.node.take();
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || {
            ledger.close();
            drop(node); // releases the lock after the ledger is closed
        })
        .await
        .map_err(|e| ServeError::Internal(format!("closing the ledger: {e}")))?;
        if let Some(reason) = self.ledger.failure() {
            return Err(ServeError::Internal(format!(
                "the ledger reported a failure: {reason}"
            )));
        }
        Ok(())
    }

    /// The operator notice after a start that created an admin identity or the ledger, with a
    /// curl line and a Python SDK snippet; `None` when there is nothing new to say.
    pub fn start_notice(&self) -> Option<String> {
        start_notice(&self.data_dir, self.local_addr, &self.report)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

/// How many connections to hold at once: `max_connections`, or fewer when the open-file limit
/// leaves fewer descriptors beyond those open now (the ledger is open, the listener bound) and
/// the store's reserve. Logged when it is fewer; an error when not one connection fits.
fn connection_bound(config: &ServeConfig, reserve: u64) -> Result<usize, ServeError> {
    if reserve == 0 {
        return Ok(config.max_connections);
    }
    let Some(open) = descriptors::open_count() else {
        // Not countable here; the per-connection check still keeps the reserve.
        return Ok(config.max_connections);
    };
    let limit = descriptors::soft_limit();
    let bound = descriptors::connection_bound(config.max_connections, limit, open, reserve)
        .ok_or_else(|| {
            ServeError::InvalidSetting(format!(
                "the open-file limit ({}) leaves no descriptor for client connections: {open} are                  open and reserved_descriptors is {reserve}; raise the limit (ulimit -n, systemd                  LimitNOFILE=) or lower reserved_descriptors",
                show_limit(limit)
            ))
        })?;
    if bound < config.max_connections {
        tracing::warn!(
            "connections bounded at {bound} (max_connections {}): the open-file limit is {},              {open} descriptors are open and {reserve} are reserved for the store; raise the              limit (ulimit -n, systemd LimitNOFILE=) to allow more",
            config.max_connections,
            show_limit(limit)
        );
    }
    Ok(bound)
}

fn show_limit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

/// Starts the server, prints the operator notice (stderr) and then exactly one line
/// `listening on https://IP:PORT` (stdout, flushed), serves until `shutdown` completes, and
/// shuts down gracefully.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let server = Server::start(config).await?;
    if let Some(notice) = server.start_notice() {
        eprintln!("{notice}");
    }
    for note in &server.report().notes {
        eprintln!("note: {note}");
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on https://{}", server.local_addr());
        let _ = out.flush();
    }
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests, then closing the ledger");
    server.shutdown().await
}

/// `cledger serve`: builds a multi-threaded runtime and [`run`]s until SIGINT or SIGTERM.
pub fn run_until_signal(config: ServeConfig) -> Result<(), ServeError> {
    observe::init_logging(config.log_format, &config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cledger")
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let signal = shutdown_signal()?;
        run(config, signal).await
    })
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Runtime)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn start_notice(data_dir: &Path, addr: SocketAddr, report: &StartReport) -> Option<String> {
    if !report.created && report.generated_admin.is_none() && report.registered_admins.is_empty() {
        return None;
    }
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let service_cert = dir.join(ledger_identity::files::SERVICE_CERT_FILE);
    let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    let endpoint = format!("https://{host}:{}", addr.port());
    let mut s = String::new();
    if report.created {
        s.push_str(&format!("created a new ledger in {}\n", dir.display()));
        s.push_str(&format!(
            "service certificate (give it to clients): {}\n",
            service_cert.display()
        ));
    }
    for fp in &report.registered_admins {
        s.push_str(&format!("registered Administrator {fp}\n"));
    }
    if let Some(admin) = &report.generated_admin {
        let admin = std::path::absolute(admin).unwrap_or_else(|_| admin.clone());
        s.push_str(&format!(
            "\nAn administrator certificate and key were generated: {admin}\n\
             Keep it secret; anyone holding it can manage this ledger.\n\n\
             Try it with curl:\n  \
             curl --cacert {cert} --cert {admin} -H 'content-type: application/json' \\\n    \
             -d '{{\"contents\":\"hello\"}}' '{endpoint}/app/transactions?api-version=2022-05-13'\n\n\
             or with the Python SDK (pip install azure-confidentialledger):\n  \
             from azure.confidentialledger import ConfidentialLedgerClient, ConfidentialLedgerCertificateCredential\n  \
             client = ConfidentialLedgerClient(\n      \
             endpoint=\"{endpoint}\",\n      \
             credential=ConfidentialLedgerCertificateCredential(\"{admin}\"),\n      \
             ledger_certificate_path=\"{cert}\",\n  )\n  \
             print(client.begin_create_ledger_entry({{\"contents\": \"hello\"}}).result())\n",
            admin = admin.display(),
            cert = service_cert.display(),
        ));
    }
    Some(s)
}
