//! The peer protocol: Raft's messages between nodes, over mutual TLS on the peer listener
//! (`--peer-listen`), kept apart from the client listener.
//!
//! Both ends present their node certificate and accept only a certificate issued by the
//! service identity (the service certificate is the only trust root), and a node answers
//! only peers that its current membership lists (a node with no membership yet — one that
//! is joining — answers any node the service endorsed: that is how the leader reaches it).
//! Messages are openraft's request and response types in postcard. AppendEntries (replication
//! and heartbeats) travel on the append stream ([`crate::append_stream`], ALPN
//! `cledger-append/1`); votes, rare, as one HTTPS POST each to `/raft/vote`.

use crate::append_stream::{self, AppendChannel};
use crate::types::{LedgerRaft, NodeId, PeerNode, Raft};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError,
    StreamAppendResult, VoteRequest, VoteResponse,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The TLS identity a node uses on the peer protocol, and the one root it trusts.
#[derive(Clone)]
pub struct PeerTls {
    pub service_cert_pem: String,
    pub node_cert_pem: String,
    pub node_key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    #[error("peer TLS: {0}")]
    Pem(String),
    #[error("peer TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("peer TLS client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("peer TLS: the client certificate verifier: {0}")]
    Verifier(String),
}

impl PeerTls {
    fn roots(&self) -> Result<rustls::RootCertStore, PeerTlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.service_cert_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| PeerTlsError::Pem(e.to_string()))?)
                .map_err(PeerTlsError::Rustls)?;
        }
        Ok(roots)
    }

    fn identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PeerTlsError> {
        let certs = CertificateDer::pem_slice_iter(self.node_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PeerTlsError::Pem(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.node_key_pem.as_bytes())
            .map_err(|e| PeerTlsError::Pem(e.to_string()))?;
        Ok((certs, key))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// The peer listener's TLS: client certificates required, issued by the service.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PeerTlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            Self::provider(),
        )
        .build()
        .map_err(|e| PeerTlsError::Verifier(e.to_string()))?;
        let (certs, key) = self.identity()?;
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![
            append_stream::ALPN.to_vec(),
            b"h2".to_vec(),
            b"http/1.1".to_vec(),
        ];
        Ok(Arc::new(config))
    }

    /// TLS to other nodes' peer listeners: presents this node's certificate, trusts only the
    /// service.
    fn client_config(&self) -> Result<rustls::ClientConfig, PeerTlsError> {
        let (certs, key) = self.identity()?;
        Ok(
            rustls::ClientConfig::builder_with_provider(Self::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(self.roots()?)
                .with_client_auth_cert(certs, key)?,
        )
    }

    /// An HTTPS client for other nodes' peer listeners (votes).
    pub fn client(&self) -> Result<reqwest::Client, PeerTlsError> {
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config()?)
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()?)
    }

    /// TLS for append streams to other nodes' peer listeners.
    pub fn append_stream_config(&self) -> Result<Arc<rustls::ClientConfig>, PeerTlsError> {
        let mut config = self.client_config()?;
        config.alpn_protocols = vec![append_stream::ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Turns TCP keepalive on for a peer connection, so that a peer that vanished without closing
/// it (power loss, a cut cable) is noticed within about 30 s of silence, instead of its
/// connection task (a follower's end of an append stream waits for requests) living until
/// the node restarts.
pub fn keep_alive(tcp: &tokio::net::TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(15))
        .with_interval(std::time::Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&probes) {
        tracing::debug!(error = %e, "TCP keepalive could not be set on a peer connection");
    }
}

/// The hex node id of a DER certificate: SHA-256 of its public key, as CCF names nodes.
pub fn node_id_of_cert(der: &[u8]) -> Option<NodeId> {
    let cert = ledger_core::x509::Cert::from_der(der).ok()?;
    Some(ledger_core::hash::sha256(&cert.spki_der()).to_string())
}

/// Creates clients to other nodes.
#[derive(Clone)]
pub struct PeerNetwork {
    client: reqwest::Client,
    append_streams: Arc<rustls::ClientConfig>,
}

impl PeerNetwork {
    pub fn new(tls: &PeerTls) -> Result<Self, PeerTlsError> {
        Ok(PeerNetwork {
            client: tls.client()?,
            append_streams: tls.append_stream_config()?,
        })
    }
}

impl RaftNetworkFactory<LedgerRaft> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerClient {
        PeerClient {
            client: self.client.clone(),
            base: format!("https://{}", node.peer_address),
            appends: AppendChannel::new(
                self.append_streams.clone(),
                target.clone(),
                node.peer_address.clone(),
            ),
            target,
        }
    }
}

/// One peer, for openraft's replication and elections.
pub struct PeerClient {
    client: reqwest::Client,
    base: String,
    appends: AppendChannel,
    target: NodeId,
}

impl PeerClient {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<LedgerRaft>> {
        let body = postcard::to_stdvec(request).map_err(NetworkError::from_string)?;
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .timeout(option.hard_ttl())
            .body(body)
            .send()
            .await
            .map_err(|e| Unreachable::from_string(format!("node {}: {e}", self.target)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| NetworkError::from_string(format!("node {}: {e}", self.target)))?;
        if !status.is_success() {
            return Err(NetworkError::from_string(format!(
                "node {} answered {status}: {}",
                self.target,
                String::from_utf8_lossy(&bytes)
            ))
            .into());
        }
        postcard::from_bytes(&bytes)
            .map_err(|e| NetworkError::from_string(format!("node {}: {e}", self.target)).into())
    }
}

impl RaftNetworkV2<LedgerRaft> for PeerClient {
    type SnapshotData = ();

    /// One request as a session of its own (openraft sends AppendEntries as streams).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<LedgerRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<LedgerRaft>, RPCError<LedgerRaft>> {
        let last = rpc
            .entries
            .last()
            .map(|entry| entry.log_id)
            .or(rpc.prev_log_id);
        let target = self.target.clone();
        let mut answers = self
            .appends
            .session(futures_util::stream::iter([rpc]), option)
            .await?;
        let answer = answers.next().await;
        // Let the session end cleanly, so that its connection is kept for the next.
        while answers.next().await.is_some() {}
        match answer {
            Some(Ok(Ok(flushed))) if flushed == last => Ok(AppendEntriesResponse::Success),
            Some(Ok(Ok(flushed))) => Ok(AppendEntriesResponse::PartialSuccess(flushed)),
            Some(Ok(Err(StreamAppendError::Conflict(_)))) => Ok(AppendEntriesResponse::Conflict),
            Some(Ok(Err(StreamAppendError::HigherVote(vote)))) => {
                Ok(AppendEntriesResponse::HigherVote(vote))
            }
            Some(Err(e)) => Err(e),
            None => Err(NetworkError::from_string(format!("node {target}: no answer")).into()),
        }
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<LedgerRaft>, RPCError<LedgerRaft>>>,
            RPCError<LedgerRaft>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<LedgerRaft>> + Send + Unpin + 'static,
    {
        self.appends.session(input, option)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<LedgerRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<LedgerRaft>, RPCError<LedgerRaft>> {
        self.call("/raft/vote", &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        _vote: openraft::type_config::alias::VoteOf<LedgerRaft>,
        _snapshot: openraft::type_config::alias::SnapshotOf<LedgerRaft, ()>,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<LedgerRaft>, StreamingError<LedgerRaft>> {
        Err(NetworkError::from_string(
            "cledger nodes keep the whole ledger and never exchange snapshots",
        )
        .into())
    }
}

/// The peer protocol's server side.
#[derive(Clone)]
struct PeerState {
    raft: Raft,
}

fn postcard_response<T: Serialize>(value: &T) -> Response {
    match postcard::to_stdvec(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, (StatusCode, String)> {
    postcard::from_bytes(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("malformed peer message: {e}"),
        )
    })
}

/// Whether `peer` may take part: a member of this node's membership, or anyone the service
/// endorsed while this node has no membership yet (it is joining).
fn admitted(raft: &Raft, peer: &NodeId) -> bool {
    let metrics = raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let mut nodes = membership.nodes().peekable();
    if nodes.peek().is_none() {
        return true;
    }
    membership.nodes().any(|(id, _)| id == peer)
}

async fn vote(State(state): State<PeerState>, body: Bytes) -> Response {
    let rpc: VoteRequest<LedgerRaft> = match decode(&body) {
        Ok(rpc) => rpc,
        Err(refused) => return refused.into_response(),
    };
    match state.raft.vote(rpc).await {
        Ok(resp) => postcard_response(&resp),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Serves the peer protocol on `listener` until the returned task is aborted, which also ends
/// every connection it accepted: peers keep their connections open, and one served on by a
/// stopped node's consensus would answer them with errors for as long as they kept it (a node
/// restarted in the same process would never be reached).
pub fn serve_peers(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    raft: Raft,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        // Dropped with this task: every connection task is aborted with it.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                Some(_) = connections.join_next() => continue,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "peer listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let raft = raft.clone();
            connections.spawn(async move {
                if let Err(e) = serve_connection(acceptor, tcp, remote, raft).await {
                    tracing::debug!(%remote, error = %e, "peer connection ended");
                }
            });
        }
    })
}

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    raft: Raft,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    keep_alive(&tcp);
    let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| node_id_of_cert(c))
        .ok_or("no usable peer certificate")?;
    if !admitted(&raft, &peer) {
        tracing::warn!(%remote, node = %peer, "refused a peer that is not a member of this cluster");
        return Err(format!("node {peer} is not a member"));
    }
    if tls.get_ref().1.alpn_protocol() == Some(append_stream::ALPN) {
        return append_stream::serve(tls, raft)
            .await
            .map_err(|e| e.to_string());
    }
    let router = axum::Router::new()
        .route("/raft/vote", axum::routing::post(vote))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(PeerState { raft });
    let service = hyper_util::service::TowerToHyperService::new(router);
    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn peer_connections_probe_a_silent_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let socket = socket2::SockRef::from(&tcp);
        assert!(!socket.keepalive().expect("read"), "off by default");
        keep_alive(&tcp);
        assert!(socket.keepalive().expect("read"));
        assert_eq!(
            socket.tcp_keepalive_time().expect("read"),
            std::time::Duration::from_secs(15)
        );
        assert_eq!(socket.tcp_keepalive_retries().expect("read"), 3);
    }
}
