//! A node's part in a cluster, on the client listener: CCF's node endpoints, joining, and
//! sending writes to the primary.
//!
//! * **Writes go to the primary.** A request that changes anything (any method but GET, HEAD
//!   and OPTIONS) reaching a backup is answered `307` to the primary's client address with
//!   the same path and query; while there is no primary, `503 ServiceUnavailable` with
//!   `Retry-After` ([`redirect_writes`]). The Azure SDKs and `cledger` follow the redirect.
//! * **CCF's node endpoints**, with CCF's names and shapes: `/node/network`,
//!   `/node/network/nodes`, `/node/commit`, `/node/primary`, `/node/consensus`.
//! * **Joining** ([`join`] on the primary, [`join_service`] on the new node): the new node
//!   asks with `POST /node/join` over TLS, presenting a self-signed certificate of the key it
//!   will use, which is its node id. With a valid one-time join token (made by an
//!   Administrator, `POST /node/join-tokens`) it is trusted at once; otherwise it is recorded
//!   *Pending* until an Administrator approves it (`POST /node/network/nodes/{id}/approve`).
//!   Once trusted, the same request returns its node certificate (issued by the service key),
//!   the service key and the ledger secret — only ever to the holder of that key — and the
//!   primary adds it to the cluster, as a learner until it has caught up, then as a voter.
//!   Every change of a node's status, the tokens, and the node's certificate are governance
//!   transactions.

use crate::ServeError;
use crate::config::ServeConfig;
use crate::http::auth::unix_now;
use crate::http::{ApiError, Caller};
use crate::listener::PeerCertificate;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ledger_core::entry::TableWrite;
use ledger_core::hash::sha256;
use ledger_core::x509::Cert;
use ledger_identity::ServiceIdentity;
use ledger_identity::files::NodeFiles;
use ledger_raft::types::{MEMBERSHIP_KEY, MEMBERSHIP_TABLE, MembershipRecord};
use ledger_raft::{Cluster, ClusterConfig, NodeId, PeerNode, PeerTls, StartMode, WriteError};
use ledger_store::{KekSource, LedgerHandle, WriteRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Nodes the service knows besides the members of the current configuration: pending and
/// retired ones, and how each trusted node was admitted. Key: node id; value: [`NodeRecord`].
pub const NODES_TABLE: &str = "public:cledger.cluster.nodes";
/// Unused join tokens. Key: hex SHA-256 of the token; value: `{"expires_at": unix seconds}`.
pub const TOKENS_TABLE: &str = "public:cledger.cluster.join_tokens";
/// The longest a join token may live.
const MAX_TOKEN_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Pending,
    Trusted,
    Retired,
}

/// What the service records about a node that asked to join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub status: NodeStatus,
    pub client_url: String,
    pub peer_address: String,
    /// The certificate the node asked with (Pending) or the one the service issued (Trusted).
    pub certificate: String,
}

/// A running cluster node, as the client listener needs it.
pub struct ClusterNode {
    pub cluster: Arc<Cluster>,
    pub handle: Arc<dyn LedgerHandle>,
    service: ServiceIdentity,
    data_dir: PathBuf,
    kek: KekSource,
    /// Nodes being added to the configuration now (so a repeated join does not add twice).
    adding: Mutex<BTreeSet<NodeId>>,
}

/// Starts consensus for `node` (its ledger opened as a replica), serving peers on `listener`
/// (bound to `config.peer_listen`); `client_url` is where clients reach this node.
pub async fn start(
    config: &ServeConfig,
    node: &crate::node::Node,
    client_url: String,
    listener: tokio::net::TcpListener,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Arc<ClusterNode>, ServeError> {
    let peer_address = listener
        .local_addr()
        .map_err(|e| ServeError::Internal(format!("the peer listener: {e}")))?
        .to_string();
    let files = &node.files;
    let mode = if config.join.is_some() {
        StartMode::Join
    } else if config.recover {
        StartMode::Recover {
            governance: recovered_node_records(node, &client_url, &peer_address)?,
        }
    } else {
        StartMode::FoundOrResume
    };
    let mut cluster_config = ClusterConfig::new(
        node.node_id.clone(),
        PeerNode {
            client_url,
            peer_address,
        },
        PeerTls {
            service_cert_pem: files.service_cert_pem.clone(),
            node_cert_pem: files.node_cert_pem.clone(),
            node_key_pem: files.node_key_pem.clone(),
        },
    );
    cluster_config.sign_interval = config.signature_interval();
    cluster_config.sign_every = config.signature_tx_count;
    let cluster = Cluster::start(
        &config.data_dir,
        node.ledger.clone(),
        cluster_config,
        listener,
        mode,
    )
    .await
    .map_err(|e| ServeError::Internal(format!("consensus: {e}")))?;
    let cluster = Arc::new(cluster);
    tokio::spawn(report(cluster.clone(), metrics));
    let handle: Arc<dyn LedgerHandle> = Arc::new(ledger_raft::ClusterHandle::new(
        cluster.clone(),
        tokio::runtime::Handle::current(),
    ));
    Ok(Arc::new(ClusterNode {
        cluster,
        handle,
        service: ServiceIdentity {
            cert_pem: files.service_cert_pem.clone(),
            key_pem: files.service_key_pem.clone(),
        },
        data_dir: config.data_dir.clone(),
        kek: match &config.kek_file {
            Some(f) => KekSource::File(f.clone()),
            None => KekSource::DataDir,
        },
        adding: Mutex::new(BTreeSet::new()),
    }))
}

/// The node records a recovered service starts with: every node of the lost cluster (those
/// with a record, and members without one, such as its founder) is retired — a node that
/// survived joins the new service afresh, with a new key — and this one is trusted at its new
/// addresses.
fn recovered_node_records(
    node: &crate::node::Node,
    client_url: &str,
    peer_address: &str,
) -> Result<Vec<TableWrite>, ServeError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ServeError::Internal(format!("the lost cluster's node records: {e}"))
    };
    let mut records: BTreeMap<String, NodeRecord> = BTreeMap::new();
    for (id, bytes) in node
        .ledger
        .governance_table(NODES_TABLE)
        .map_err(|e| unreadable(&e))?
    {
        let record = serde_json::from_slice(&bytes).map_err(|e| unreadable(&e))?;
        records.insert(id, record);
    }
    let membership = node
        .ledger
        .governance(MEMBERSHIP_TABLE, MEMBERSHIP_KEY)
        .map_err(|e| unreadable(&e))?;
    if let Some(bytes) = membership {
        let record: MembershipRecord =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(&e))?;
        for (id, peer) in record.membership.nodes() {
            records.entry(id.clone()).or_insert_with(|| NodeRecord {
                status: NodeStatus::Trusted,
                client_url: peer.client_url.clone(),
                peer_address: peer.peer_address.clone(),
                certificate: String::new(),
            });
        }
    }
    let mut writes = Vec::new();
    for (id, mut record) in records {
        if id == node.node_id {
            record.status = NodeStatus::Trusted;
            record.client_url = client_url.to_owned();
            record.peer_address = peer_address.to_owned();
        } else if record.status == NodeStatus::Retired {
            continue;
        } else {
            record.status = NodeStatus::Retired;
        }
        writes.push(TableWrite {
            table: NODES_TABLE.into(),
            key: id,
            value: Some(serde_json::to_vec(&record).expect("a record serializes")),
        });
    }
    Ok(writes)
}

/// Keeps the cluster metrics current and logs every change of view and primary. Ends with
/// consensus.
async fn report(cluster: Arc<Cluster>, metrics: Arc<crate::metrics::Metrics>) {
    let mut seen: Option<(u64, Option<NodeId>)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if cluster.is_shut_down() {
            return;
        }
        let status = cluster.status();
        let primary = status.primary.as_ref() == Some(&status.node_id);
        metrics.cluster_primary.set(i64::from(primary));
        metrics.cluster_view.set(status.view as i64);
        metrics
            .cluster_commit_seqno
            .set(status.committed.map_or(0, |t| t.seqno()) as i64);
        metrics.cluster_peer_lag.clear();
        if primary {
            for n in status.nodes.iter().filter(|n| n.node_id != status.node_id) {
                let lag = status.last_log_index.saturating_sub(n.matched.unwrap_or(0));
                metrics
                    .cluster_peer_lag
                    .get_or_create(&crate::metrics::PeerLabels {
                        node_id: n.node_id.clone(),
                    })
                    .set(lag as i64);
            }
        }
        let now = (status.view, status.primary.clone());
        if seen.as_ref() != Some(&now) {
            if seen.as_ref().is_some_and(|(view, _)| *view != now.0) {
                metrics.cluster_view_changes.inc();
            }
            tracing::info!(
                view = now.0,
                primary = now.1.as_deref().unwrap_or("none"),
                this_node_leads = primary,
                "cluster view"
            );
            seen = Some(now);
        }
    }
}

/// The node endpoints, added to the client router.
pub fn routes(app: axum::Router, node: Arc<ClusterNode>) -> axum::Router {
    use axum::routing::{get, post};
    let routes = axum::Router::new()
        .route("/node/network", get(network))
        .route("/node/network/nodes", get(nodes))
        .route("/node/commit", get(commit))
        .route("/node/primary", get(primary).head(primary))
        .route("/node/consensus", get(consensus))
        .route("/node/join", post(join))
        .route("/node/join-tokens", post(create_token))
        .route("/node/network/nodes/{node_id}/approve", post(approve))
        .route("/node/network/nodes/{node_id}/retire", post(retire))
        .with_state(node.clone());
    app.merge(routes)
        .layer(axum::middleware::from_fn_with_state(node, redirect_writes))
}

/// Sends requests that change anything to the primary (see the module docs).
pub async fn redirect_writes(
    State(node): State<Arc<ClusterNode>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || node.cluster.is_primary()
        // A node whose consensus stopped knows no primary: it answers writes itself, with why.
        || node.cluster.stopped().is_some()
    {
        return next.run(request).await;
    }
    match node.cluster.primary() {
        Some((_, primary)) => {
            let target = format!(
                "{}{}",
                primary.client_url.trim_end_matches('/'),
                request.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            match HeaderValue::from_str(&target) {
                Ok(location) => {
                    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
                    response.headers_mut().insert(header::LOCATION, location);
                    response
                }
                Err(_) => {
                    ApiError::Internal(format!("bad primary address {target:?}")).into_response()
                }
            }
        }
        None => ApiError::NoPrimary.into_response(),
    }
}

fn txid_text(txid: Option<ledger_core::TxId>) -> Value {
    txid.map_or(Value::Null, |t| Value::String(t.to_string()))
}

async fn network(State(node): State<Arc<ClusterNode>>) -> Response {
    let status = node.cluster.status();
    Json(json!({
        "service_certificate": node.service.cert_pem,
        "service_status": "Open",
        "current_view": status.view,
        "primary_id": status.primary,
        "recovery_count": 0,
        "service_data": null,
        "current_service_create_txid": "1.1",
    }))
    .into_response()
}

/// Every node the service knows: the members of the configuration (Trusted) and the pending
/// and retired ones from [`NODES_TABLE`].
fn node_list(node: &ClusterNode) -> Result<Vec<Value>, ApiError> {
    let status = node.cluster.status();
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for n in &status.nodes {
        out.insert(
            n.node_id.clone(),
            node_json(
                &n.node_id,
                NodeStatus::Trusted,
                n.primary,
                &n.node.client_url,
                n.matched.unwrap_or(0),
            ),
        );
    }
    for (id, bytes) in node.handle.governance_table(NODES_TABLE)? {
        let Ok(record) = serde_json::from_slice::<NodeRecord>(&bytes) else {
            continue;
        };
        if record.status != NodeStatus::Trusted || !out.contains_key(&id) {
            out.insert(
                id.clone(),
                node_json(&id, record.status, false, &record.client_url, 0),
            );
        }
    }
    Ok(out.into_values().collect())
}

fn node_json(
    id: &str,
    status: NodeStatus,
    primary: bool,
    client_url: &str,
    last_written: u64,
) -> Value {
    let address = client_url.trim_start_matches("https://");
    json!({
        "node_id": id,
        "status": status,
        "primary": primary,
        "rpc_interfaces": {"primary_rpc_interface": {"published_address": address}},
        "node_data": null,
        "last_written": last_written,
    })
}

async fn nodes(State(node): State<Arc<ClusterNode>>) -> Response {
    match node_list(&node) {
        Ok(list) => Json(json!({ "nodes": list })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn commit(State(node): State<Arc<ClusterNode>>) -> Response {
    Json(json!({ "transaction_id": txid_text(node.handle.committed()) })).into_response()
}

async fn primary(State(node): State<Arc<ClusterNode>>) -> Response {
    if node.cluster.is_primary() {
        StatusCode::OK.into_response()
    } else {
        ApiError::NotFound("This node is not the primary.".into()).into_response()
    }
}

async fn consensus(State(node): State<Arc<ClusterNode>>) -> Response {
    let status = node.cluster.status();
    let state = match status.state {
        ledger_raft::ServerState::Leader => "Leader",
        ledger_raft::ServerState::Candidate => "Candidate",
        ledger_raft::ServerState::Learner => "Learner",
        _ => "Follower",
    };
    let acks: BTreeMap<&str, Value> = status
        .nodes
        .iter()
        .filter_map(|n| {
            n.matched
                .map(|m| (n.node_id.as_str(), json!({ "seqno": m })))
        })
        .collect();
    let config: BTreeMap<&str, Value> = status
        .nodes
        .iter()
        .map(|n| {
            (
                n.node_id.as_str(),
                json!({ "address": n.node.peer_address, "voter": n.voter }),
            )
        })
        .collect();
    Json(json!({
        "details": {
            "primary_id": status.primary,
            "current_view": status.view,
            "leadership_state": state,
            "last_log_index": status.last_log_index,
            "committed": txid_text(status.committed),
            "configs": [{ "nodes": config }],
            "acks": acks,
        }
    }))
    .into_response()
}

/// The caller, who must be an Administrator.
fn administrator(node: &ClusterNode, caller: Option<&Caller>) -> Result<(), ApiError> {
    let caller = caller.ok_or(ApiError::Unauthenticated)?;
    let user = caller.authenticated_id(unix_now())?;
    match crate::http::auth::role_of(&*node.handle, user)? {
        Some(crate::http::users::Role::Administrator) => Ok(()),
        _ => Err(ApiError::NotAllowed(format!(
            "Only an Administrator manages the cluster's nodes; {user} is not one."
        ))),
    }
}

/// Writes `writes` through consensus.
async fn govern(node: &ClusterNode, writes: Vec<TableWrite>) -> Result<(), ApiError> {
    node.cluster
        .write(WriteRequest::Governance(writes))
        .await
        .map(|_| ())
        .map_err(|e| match e {
            WriteError::NotPrimary { .. } => ApiError::NoPrimary,
            other => ApiError::StorageUnavailable(other.to_string()),
        })
}

fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    expires_in_seconds: Option<u64>,
}

async fn create_token(
    State(node): State<Arc<ClusterNode>>,
    caller: Option<axum::Extension<Caller>>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = administrator(&node, caller.as_deref()) {
        return e.into_response();
    }
    let request: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return ApiError::InvalidInput(format!(
                    "The request body is not a token request: {e}"
                ))
                .into_response();
            }
        }
    };
    let lifetime = request.expires_in_seconds.unwrap_or(3600);
    if lifetime == 0 || lifetime > MAX_TOKEN_SECS {
        return ApiError::InvalidInput(format!(
            "expires_in_seconds must be between 1 and {MAX_TOKEN_SECS} (7 days), not {lifetime}."
        ))
        .into_response();
    }
    let mut secret = [0u8; 32];
    if getrandom::fill(&mut secret).is_err() {
        return ApiError::Internal("the OS random number generator failed".into()).into_response();
    }
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let expires_at = unix_now() + lifetime;
    let write = TableWrite {
        table: TOKENS_TABLE.into(),
        key: sha256(token.as_bytes()).to_hex(),
        value: Some(json!({ "expires_at": expires_at }).to_string().into_bytes()),
    };
    if let Err(e) = govern(&node, vec![write]).await {
        return e.into_response();
    }
    tracing::info!(expires_at = %rfc3339(expires_at), "join token created");
    Json(json!({ "token": token, "expires_at": rfc3339(expires_at) })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub client_url: String,
    pub peer_address: String,
    #[serde(default)]
    pub join_token: Option<String>,
}

/// What a trusted node receives.
#[derive(Serialize, Deserialize)]
pub struct JoinAnswer {
    pub status: NodeStatus,
    pub node_id: String,
    #[serde(default)]
    pub node_certificate: Option<String>,
    #[serde(default)]
    pub service_certificate: Option<String>,
    #[serde(default)]
    pub service_key: Option<String>,
    /// Base64 of the 32-byte ledger secret.
    #[serde(default)]
    pub ledger_secret: Option<String>,
}

fn record_of(node: &ClusterNode, id: &str) -> Result<Option<NodeRecord>, ApiError> {
    Ok(node
        .handle
        .governance(NODES_TABLE, id)?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Hostnames for a node's certificate: the hosts of its addresses.
fn hosts(record: &NodeRecord) -> Vec<String> {
    let mut hosts = Vec::new();
    for address in [
        record.client_url.trim_start_matches("https://"),
        record.peer_address.as_str(),
    ] {
        let host = address
            .rsplit_once(':')
            .map_or(address, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        if !host.is_empty() && !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_owned());
        }
    }
    hosts
}

/// Trusts the node `id` (whose asking certificate is in `record`): issues its certificate,
/// records it (and spends `token`, if any), then adds it to the configuration.
async fn trust(
    node: &Arc<ClusterNode>,
    id: &str,
    mut record: NodeRecord,
    token_digest: Option<String>,
) -> Result<NodeRecord, ApiError> {
    let asked = Cert::from_pem(&record.certificate)
        .map_err(|e| ApiError::InvalidInput(format!("The node's certificate: {e}")))?;
    let certificate = ledger_identity::issue_node_certificate_for_public_key(
        &node.service,
        &asked.spki_der(),
        &hosts(&record),
    )
    .map_err(|e| ApiError::Internal(format!("issuing the node certificate: {e}")))?;
    record.status = NodeStatus::Trusted;
    record.certificate = certificate.clone();
    let mut writes = vec![
        TableWrite {
            table: NODES_TABLE.into(),
            key: id.to_owned(),
            value: Some(serde_json::to_vec(&record).expect("a record serializes")),
        },
        TableWrite {
            table: ledger_core::entry::tables::NODES.into(),
            key: id.to_owned(),
            value: Some(certificate.into_bytes()),
        },
    ];
    if let Some(digest) = token_digest {
        writes.push(TableWrite {
            table: TOKENS_TABLE.into(),
            key: digest,
            value: None,
        });
    }
    govern(node, writes).await?;
    tracing::info!(node = id, "node trusted");
    add_to_configuration(node, id.to_owned(), &record);
    Ok(record)
}

/// Adds a trusted node to the configuration in the background: as a learner until it has
/// caught up, then as a voter.
fn add_to_configuration(node: &Arc<ClusterNode>, id: NodeId, record: &NodeRecord) {
    if !node.adding.lock().expect("adding lock").insert(id.clone()) {
        return;
    }
    let peer = PeerNode {
        client_url: record.client_url.clone(),
        peer_address: record.peer_address.clone(),
    };
    let node = node.clone();
    tokio::spawn(async move {
        match node.cluster.add_node(id.clone(), peer).await {
            Ok(()) => tracing::info!(node = %id, "node added to the configuration as a voter"),
            Err(e) => {
                tracing::warn!(node = %id, error = %e, "adding the node failed; it is added when it asks again")
            }
        }
        node.adding.lock().expect("adding lock").remove(&id);
    });
}

fn answer(node: &ClusterNode, id: &str, record: &NodeRecord) -> Response {
    if record.status != NodeStatus::Trusted {
        return (
            StatusCode::ACCEPTED,
            Json(JoinAnswer {
                status: record.status,
                node_id: id.to_owned(),
                node_certificate: None,
                service_certificate: None,
                service_key: None,
                ledger_secret: None,
            }),
        )
            .into_response();
    }
    let secret = match ledger_store::export_ledger_secret(&node.data_dir, &node.kek) {
        Ok(s) => s,
        Err(e) => {
            return ApiError::Internal(format!("reading the ledger secret: {e}")).into_response();
        }
    };
    Json(JoinAnswer {
        status: NodeStatus::Trusted,
        node_id: id.to_owned(),
        node_certificate: Some(record.certificate.clone()),
        service_certificate: Some(node.service.cert_pem.clone()),
        service_key: Some(node.service.key_pem.clone()),
        ledger_secret: Some(base64::engine::general_purpose::STANDARD.encode(secret)),
    })
    .into_response()
}

/// `POST /node/join` on the primary (see the module docs).
async fn join(
    State(node): State<Arc<ClusterNode>>,
    cert: Option<axum::Extension<PeerCertificate>>,
    body: axum::body::Bytes,
) -> Response {
    match join_inner(&node, cert.map(|c| c.0), &body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn join_inner(
    node: &Arc<ClusterNode>,
    cert: Option<PeerCertificate>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let cert = cert.ok_or_else(|| {
        ApiError::InvalidInput(
            "A node asks to join with a TLS client certificate of its node key.".into(),
        )
    })?;
    let cert = Cert::from_der(&cert.0)
        .map_err(|e| ApiError::InvalidInput(format!("The client certificate: {e}")))?;
    if !cert.is_ec() {
        return Err(ApiError::InvalidInput(
            "A node key must be an ECDSA P-256 or P-384 key.".into(),
        ));
    }
    let id = sha256(&cert.spki_der()).to_hex();
    let request: JoinRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::InvalidInput(format!("The request body is not a join request: {e}"))
    })?;
    if !request.client_url.starts_with("https://") || request.peer_address.is_empty() {
        return Err(ApiError::InvalidInput(
            "client_url must be https://host:port and peer_address host:port.".into(),
        ));
    }
    let existing = record_of(node, &id)?;
    if let Some(record) = &existing {
        match record.status {
            NodeStatus::Retired => {
                return Err(ApiError::NotAllowed(format!(
                    "Node {id} was retired; it cannot join again."
                )));
            }
            NodeStatus::Trusted => {
                add_to_configuration(node, id.clone(), record);
                return Ok(answer(node, &id, record));
            }
            NodeStatus::Pending => {}
        }
    }
    let record = NodeRecord {
        status: NodeStatus::Pending,
        client_url: request.client_url,
        peer_address: request.peer_address,
        certificate: cert.to_pem(),
    };
    if let Some(token) = &request.join_token {
        let digest = sha256(token.trim().as_bytes()).to_hex();
        let expires_at = node
            .handle
            .governance(TOKENS_TABLE, &digest)?
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["expires_at"].as_u64());
        match expires_at {
            Some(at) if at > unix_now() => {
                let record = trust(node, &id, record, Some(digest)).await?;
                return Ok(answer(node, &id, &record));
            }
            Some(_) => {
                return Err(ApiError::NotAllowed(
                    "The join token has expired; ask an Administrator for a new one.".into(),
                ));
            }
            None => {
                return Err(ApiError::NotAllowed(
                    "The join token is not valid (unknown, or already used).".into(),
                ));
            }
        }
    }
    if existing.is_none() {
        govern(
            node,
            vec![TableWrite {
                table: NODES_TABLE.into(),
                key: id.clone(),
                value: Some(serde_json::to_vec(&record).expect("a record serializes")),
            }],
        )
        .await?;
        tracing::info!(node = %id, "a node asks to join; approve it with `cledger cluster approve {id}`");
    }
    Ok(answer(node, &id, &record))
}

async fn approve(
    State(node): State<Arc<ClusterNode>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        administrator(&node, caller.as_deref())?;
        let record = record_of(&node, &id)?
            .ok_or_else(|| ApiError::NotFound(format!("No node {id} has asked to join.")))?;
        let record = match record.status {
            NodeStatus::Pending => trust(&node, &id, record, None).await?,
            NodeStatus::Trusted => record,
            NodeStatus::Retired => {
                return Err(ApiError::NotAllowed(format!("Node {id} was retired.")));
            }
        };
        Ok(node_json(&id, record.status, false, &record.client_url, 0))
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn retire(
    State(node): State<Arc<ClusterNode>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        administrator(&node, caller.as_deref())?;
        let status = node.cluster.status();
        let member = status.nodes.iter().find(|n| n.node_id == id).cloned();
        let mut record = match (record_of(&node, &id)?, &member) {
            (Some(r), _) => r,
            (None, Some(m)) => NodeRecord {
                status: NodeStatus::Trusted,
                client_url: m.node.client_url.clone(),
                peer_address: m.node.peer_address.clone(),
                certificate: String::new(),
            },
            (None, None) => return Err(ApiError::NotFound(format!("No node {id} is known."))),
        };
        if member.is_some() {
            if status.nodes.iter().filter(|n| n.voter).count() <= 1 {
                return Err(ApiError::InvalidInput(
                    "The last voting node cannot be retired.".into(),
                ));
            }
            node.cluster
                .remove_node(id.clone())
                .await
                .map_err(|e| ApiError::StorageUnavailable(format!("removing node {id}: {e}")))?;
        }
        record.status = NodeStatus::Retired;
        govern(
            &node,
            vec![TableWrite {
                table: NODES_TABLE.into(),
                key: id.clone(),
                value: Some(serde_json::to_vec(&record).expect("a record serializes")),
            }],
        )
        .await?;
        tracing::info!(node = %id, "node retired");
        Ok(node_json(
            &id,
            NodeStatus::Retired,
            false,
            &record.client_url,
            0,
        ))
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// On a node started with `--join` whose data directory holds no ledger yet: asks the service
/// to join until it is trusted, then installs the identity and the ledger secret it receives
/// and creates the (empty) replica ledger, which consensus then fills.
pub async fn join_service(
    config: &ServeConfig,
    client_url: &str,
    peer_address: &str,
) -> Result<(), ServeError> {
    let (Some(url), Some(service_cert_path)) = (&config.join, &config.service_cert) else {
        return Ok(());
    };
    let dir = &config.data_dir;
    if dir.join("ledger").exists() {
        return Ok(());
    }
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| ServeError::Io {
            path: path.clone(),
            source,
        })
    };
    let service_cert_pem = read(service_cert_path)?;
    let token = match &config.join_token_file {
        Some(path) => Some(read(path)?.trim().to_owned()),
        None => None,
    };
    std::fs::create_dir_all(dir).map_err(|source| ServeError::Io {
        path: dir.clone(),
        source,
    })?;
    // The node key is on the service's curve: the node signs the cluster's roots with it.
    let curve = ledger_core::x509::Cert::from_pem(&service_cert_pem)
        .and_then(|cert| cert.public_key())
        .map(|key| crate::node::curve_of(key.curve()))
        .map_err(|e| {
            ServeError::InvalidSetting(format!(
                "--service-cert {}: {e}",
                service_cert_path.display()
            ))
        })?;
    let node_key_pem = NodeFiles::joining_node_key(dir, curve)?;
    let asking_cert =
        ledger_identity::self_signed_certificate(&node_key_pem, "cledger joining node")
            .map_err(|e| ServeError::Identity(e.to_string()))?;
    let root = reqwest::Certificate::from_pem(service_cert_pem.as_bytes())
        .map_err(|e| ServeError::Tls(format!("--service-cert: {e}")))?;
    let identity = reqwest::Identity::from_pem(format!("{asking_cert}\n{node_key_pem}").as_bytes())
        .map_err(|e| ServeError::Tls(format!("the joining identity: {e}")))?;
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .identity(identity)
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let body = json!({
        "client_url": client_url,
        "peer_address": peer_address,
        "join_token": token,
    });
    let endpoint = format!("{}/node/join", url.trim_end_matches('/'));
    let mut told = false;
    let answer: JoinAnswer = loop {
        let response = client.post(&endpoint).json(&body).send().await;
        match response {
            Ok(r) if r.status() == StatusCode::OK => {
                break r.json().await.map_err(|e| {
                    ServeError::Internal(format!("the service's join answer: {e}"))
                })?;
            }
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                let pending: JoinAnswer = r
                    .json()
                    .await
                    .map_err(|e| ServeError::Internal(format!("the service's join answer: {e}")))?;
                if !told {
                    eprintln!(
                        "waiting for an Administrator to approve this node: cledger cluster approve {}",
                        pending.node_id
                    );
                    told = true;
                }
            }
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Err(ServeError::InvalidSetting(format!(
                    "the service refused to let this node join ({status}): {text}"
                )));
            }
            Err(e) => tracing::warn!(error = %e, "asking to join failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (Some(node_cert_pem), Some(service_key_pem), Some(secret)) = (
        answer.node_certificate,
        answer.service_key,
        answer.ledger_secret,
    ) else {
        return Err(ServeError::Internal(
            "the service trusted this node but sent no identity".into(),
        ));
    };
    let secret: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| ServeError::Internal("the service sent a malformed ledger secret".into()))?;
    let files = NodeFiles {
        service_cert_pem: answer.service_certificate.unwrap_or(service_cert_pem),
        service_key_pem,
        node_key_pem,
        node_cert_pem,
    };
    NodeFiles::install(dir, &files)?;
    let identity = crate::node::node_identity(&files)?;
    let store = ledger_store::StoreConfig {
        role: ledger_store::Role::Replica,
        kek: match &config.kek_file {
            Some(f) => KekSource::File(f.clone()),
            None => KekSource::DataDir,
        },
        ..Default::default()
    };
    let dir = dir.clone();
    tokio::task::spawn_blocking(move || {
        let ledger = ledger_store::Ledger::create_replica(&dir, store, identity, &secret)?;
        ledger.close();
        Ok::<_, ServeError>(())
    })
    .await
    .map_err(|e| ServeError::Internal(e.to_string()))??;
    eprintln!("joined the service as node {}; catching up", answer.node_id);
    Ok(())
}

/// Waits until this node holds at least the service's genesis (a node that just joined).
pub async fn wait_for_genesis(handle: &dyn LedgerHandle, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if handle.committed().is_some() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until this node knows a primary.
pub async fn wait_for_primary(cluster: &Cluster, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while cluster.primary().is_none() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
