//! A node of a cledger cluster: openraft running over the ledger, the peer listener, and the
//! leader's signer. What the client personality asks of a replicated ledger: propose a write
//! and wait until it is committed, who the primary is, and the cluster's state.
//!
//! **Signing.** Only the leader signs. Its signer proposes a signature transaction whenever
//! transactions follow the last signature it proposed — one signature in flight at a time,
//! and at most one per `sign_interval` unless `sign_every` transactions wait — so under load a
//! signature covers many writes, and a new leader signs at once after its blank entry. A
//! write is acknowledged once a signature after it is committed (replicated to a majority):
//! then, and only then, its receipt exists and no view change can undo it.

use crate::log_store::{LedgerLogStore, LogShared};
use crate::network::{PeerNetwork, PeerTls, PeerTlsError, serve_peers};
use crate::state_machine::LedgerStateMachine;
use crate::types::LedgerRaft;
use crate::types::{
    Membership, NodeId, PeerNode, Proposal, ProposedWrite, Raft, membership_write, nodes, txid_of,
};
use ledger_core::TxId;
use ledger_core::entry::TableWrite;
use ledger_store::{AppendError, Ledger, ReplicaOp, TxStatus, WriteRequest};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// How a node takes part in its cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    pub node: PeerNode,
    pub tls: PeerTls,
    /// Raft heartbeat; elections start after 3–6 missed heartbeats.
    pub heartbeat: Duration,
    pub sign_interval: Duration,
    pub sign_every: u64,
    /// How long a write waits to be committed before it is answered as not yet committed.
    pub commit_timeout: Duration,
}

impl ClusterConfig {
    pub fn new(node_id: NodeId, node: PeerNode, tls: PeerTls) -> Self {
        ClusterConfig {
            node_id,
            node,
            tls,
            heartbeat: Duration::from_millis(100),
            sign_interval: ledger_store::SIGN_INTERVAL,
            sign_every: ledger_store::SIGN_EVERY,
            commit_timeout: Duration::from_secs(10),
        }
    }
}

/// How a node starts consensus on its ledger.
#[derive(Debug, Clone)]
pub enum StartMode {
    /// Resume as a member of the cluster this node's ledger belongs to; a ledger that has
    /// never taken part in one (no vote, no membership) founds a cluster of one.
    FoundOrResume,
    /// Joining through another node: wait until the primary reaches it.
    Join,
    /// Found a new cluster of one, in a new view, on a copy of a member's ledger whose
    /// cluster is lost (CCF's recovery). `governance` is recorded in the same transaction
    /// (the personality retires the old nodes). Refused where this node has voted: a member's
    /// own directory, or a recovered one started again with the flag.
    Recover { governance: Vec<TableWrite> },
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Tls(#[from] PeerTlsError),
    #[error("the cluster's Raft state: {0}")]
    Io(#[from] std::io::Error),
    #[error("consensus: {0}")]
    Raft(String),
    #[error("the ledger: {0}")]
    Ledger(#[from] AppendError),
    #[error(
        "cannot recover: this data directory holds a cluster member's consensus state (raft/vote.json). \
         Recovery founds a new service on a copy of a lost cluster's ledger (`cledger backup`); \
         a member's own directory, or one already recovered, starts without --recover"
    )]
    RecoverMember,
}

/// Why a write was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// Refused before it was proposed; nothing was written.
    #[error(transparent)]
    Refused(AppendError),
    /// This node does not lead; the primary, if one is known, takes writes.
    #[error("this node is not the primary")]
    NotPrimary { primary: Option<(NodeId, PeerNode)> },
    /// Proposed, but its fate is not known yet (a view change, or no signature committed in
    /// time): its txid's status tells later.
    #[error("transaction {txid} is not committed yet ({reason}); check its status later")]
    Pending { txid: TxId, reason: String },
    /// Proposed and rolled back by a view change: it is not in the ledger.
    #[error("transaction {0} was rolled back by a view change; write it again")]
    RolledBack(TxId),
    #[error("the node is shutting down")]
    Closed,
}

/// What `/node/network/nodes` and `cledger cluster status` show of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub node: PeerNode,
    pub voter: bool,
    pub primary: bool,
    /// The newest seqno the leader knows this node holds (leader only).
    pub matched: Option<u64>,
}

/// This node's view of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub state: ServerState,
    pub view: u64,
    pub primary: Option<NodeId>,
    pub last_log_index: u64,
    pub committed: Option<TxId>,
    pub nodes: Vec<NodeStatus>,
}

/// A running cluster node.
pub struct Cluster {
    raft: Raft,
    shared: Arc<LogShared>,
    config: ClusterConfig,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Client writes on their way to consensus, in the order [`Cluster::propose`] was called.
    proposals: tokio::sync::mpsc::UnboundedSender<(Proposal, WriteResponder)>,
}

/// Where openraft answers one client write.
type WriteResponder = openraft::type_config::alias::WriteResponderOf<LedgerRaft>;

/// A client write handed to consensus; [`Cluster::settle`] waits for its outcome.
pub struct Proposed {
    placed: Arc<std::sync::OnceLock<TxId>>,
    answer: openraft::type_config::alias::OneshotReceiverOf<
        LedgerRaft,
        openraft::raft::ClientWriteResult<LedgerRaft>,
    >,
}

/// Hands proposals to openraft one by one, in the order they were queued. `client_write`
/// sends its proposal only when its future is first polled, so writes submitted in one order
/// from tasks spawned for each could enter the log in another; user-defined code relies on
/// the order (an execution that read a pending write must be sequenced after it).
async fn forward_proposals(
    raft: Raft,
    mut queued: tokio::sync::mpsc::UnboundedReceiver<(Proposal, WriteResponder)>,
) {
    while let Some((proposal, responder)) = queued.recv().await {
        // Fatal: the responder is dropped with the proposal, and its writer sees `Closed`.
        if raft
            .client_write_ff(proposal, Some(responder))
            .await
            .is_err()
        {
            break;
        }
    }
}

impl Cluster {
    /// Starts consensus on the replica ledger `ledger` of `dir`, serving peers on
    /// `peer_listener`, as `mode` says. Founding appends and commits here, in one
    /// transaction and a signature after it, the membership of a cluster of one.
    pub async fn start(
        dir: &Path,
        ledger: Arc<Ledger>,
        config: ClusterConfig,
        peer_listener: TcpListener,
        mode: StartMode,
    ) -> Result<Cluster, ClusterError> {
        let shared = LogShared::open(dir, ledger)?;
        // A node founds a cluster once, on a ledger that has never taken part in one: no
        // vote, and no committed membership. The committed membership alone would not do:
        // after a crash a replica's commit point may lag the membership entries it holds
        // (recovery commits only what it recorded as committed), and founding again would
        // commit them, and everything after, as a cluster of one beside the real one.
        let voted = shared.vote().is_some();
        match mode {
            StartMode::Join => {}
            StartMode::FoundOrResume => {
                let membership = crate::state_machine::committed_membership(&shared)?;
                if !voted && membership.membership().nodes().next().is_none() {
                    found(&shared, &config, Founding::New).await?;
                }
            }
            StartMode::Recover { governance } if !voted => {
                found(&shared, &config, Founding::Recovery { governance }).await?;
            }
            StartMode::Recover { .. } => return Err(ClusterError::RecoverMember),
        }
        let raft_config = openraft::Config {
            cluster_name: "cledger".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: 3 * config.heartbeat.as_millis() as u64,
            election_timeout_max: 6 * config.heartbeat.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_payload_entries: 4096,
            // A restarted primary stands for election like any node (as in Raft and CCF)
            // rather than resuming its old view from the stored vote: its last entries may
            // not have been committed, and a new primary may already lead.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let network = PeerNetwork::new(&config.tls)?;
        let raft = Raft::new(
            config.node_id.clone(),
            Arc::new(raft_config),
            network,
            LedgerLogStore::new(shared.clone()),
            LedgerStateMachine::new(shared.clone()),
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let peers = serve_peers(peer_listener, config.tls.server_config()?, raft.clone());
        let signer = tokio::spawn(sign(raft.clone(), shared.clone(), config.clone()));
        let (proposals, queued) = tokio::sync::mpsc::unbounded_channel();
        let forwarder = tokio::spawn(forward_proposals(raft.clone(), queued));
        Ok(Cluster {
            raft,
            shared,
            config,
            tasks: vec![peers, signer, forwarder],
            proposals,
        })
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.shared.ledger
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn node_id(&self) -> &NodeId {
        &self.config.node_id
    }

    /// The primary, if this node knows one.
    pub fn primary(&self) -> Option<(NodeId, PeerNode)> {
        self.with_metrics(|metrics| {
            // A node whose consensus stopped no longer follows anyone.
            metrics.running_state.as_ref().ok()?;
            let leader = metrics.current_leader.as_ref()?;
            let node = metrics.membership_config.membership().get_node(leader)?;
            Some((leader.clone(), node.clone()))
        })
    }

    /// Reads openraft's metrics in place. Every write asks who leads, and a copy of the
    /// metrics allocates (node ids, the replication and heartbeat maps).
    fn with_metrics<T>(&self, read: impl FnOnce(&openraft::RaftMetrics<LedgerRaft>) -> T) -> T {
        let metrics = self.raft.metrics();
        let current = metrics.borrow_watched();
        read(&current)
    }

    /// Whether [`Cluster::shutdown`] has run.
    pub fn is_shut_down(&self) -> bool {
        self.tasks.iter().all(|t| t.is_finished())
    }

    /// Whether this node leads now.
    pub fn is_primary(&self) -> bool {
        self.with_metrics(|metrics| {
            metrics.state == ServerState::Leader && metrics.running_state.is_ok()
        })
    }

    /// Why consensus stopped on this node (a storage error is fatal to openraft), if it did:
    /// the node serves reads but takes no part in the cluster until it is restarted.
    pub fn stopped(&self) -> Option<String> {
        self.with_metrics(|metrics| {
            metrics.running_state.as_ref().err().map(|fatal| {
                format!(
                    "consensus stopped on this node ({fatal}); restart it to rejoin the cluster"
                )
            })
        })
    }

    /// Proposes `request` and waits until it is committed (a signature after it replicated
    /// to a majority). Only the primary takes writes.
    pub async fn write(&self, request: WriteRequest) -> Result<TxId, WriteError> {
        let proposed = self.propose(request)?;
        self.settle(proposed).await
    }

    /// Checks `request` and queues it for consensus at once: writes proposed one after another
    /// enter the log in that order. [`Cluster::settle`] waits for the outcome.
    pub fn propose(&self, request: WriteRequest) -> Result<Proposed, WriteError> {
        let prepared = Ledger::prepare(request).map_err(WriteError::Refused)?;
        let proposed = ProposedWrite::new(prepared);
        let placed = proposed.placed.clone();
        let (responder, answer) = openraft::impls::ProgressResponder::complete_only();
        self.proposals
            .send((Proposal::Write(proposed), responder))
            .map_err(|_| WriteError::Closed)?;
        Ok(Proposed { placed, answer })
    }

    /// Waits until a proposed write is committed, or says why it is not.
    pub async fn settle(&self, proposed: Proposed) -> Result<TxId, WriteError> {
        let Proposed { placed, answer } = proposed;
        use openraft::errors::ClientWriteError;
        let Ok(answer) = answer.await else {
            // No answer: consensus stopped on this node (shut down, or a storage error) before
            // answering. A write that entered the log may have reached the others first (a
            // primary replicates before its own fsync) and be committed by the next primary:
            // only its txid's status can say.
            return Err(match placed.get() {
                Some(txid) => WriteError::Pending {
                    txid: *txid,
                    reason: "consensus stopped on this node after the write entered its log".into(),
                },
                None => WriteError::Closed,
            });
        };
        let response = match answer {
            Ok(response) => response,
            Err(ClientWriteError::ForwardToLeader(_)) => {
                return Err(WriteError::NotPrimary {
                    primary: self.primary(),
                });
            }
            // This node lost its office after the write entered its log. Whether the write
            // survived depends on whether the new primary had it: the ledger says, once this
            // node has caught up past its seqno (a rolled-back seqno names another view).
            Err(ClientWriteError::LogEntryDiscarded(_)) => {
                return match placed.get() {
                    Some(txid) => self.wait_committed(*txid).await,
                    None => Err(WriteError::NotPrimary {
                        primary: self.primary(),
                    }),
                };
            }
            Err(e) => return Err(WriteError::Refused(AppendError::Failed(e.to_string()))),
        };
        let txid = txid_of(&response.log_id).expect("a write has a seqno");
        // openraft answers once the entry is applied, so Raft committed it at `txid`: no later
        // view can replace it, and the ledger's commit reaching its seqno (a signature after
        // it) is all that is left to wait for. Reading the transaction back to check its view
        // cost a frame read per write on the primary (docs/PERFORMANCE.md, issue 18 step 8).
        if self.signature_after(txid.seqno()).await {
            debug_assert_eq!(self.shared.ledger.status(txid), TxStatus::Committed);
            Ok(txid)
        } else {
            Err(WriteError::Pending {
                txid,
                reason: self.no_signature_in_time(),
            })
        }
    }

    /// Waits until the ledger's commit reaches `seqno`; false if the commit timeout passes
    /// first.
    async fn signature_after(&self, seqno: u64) -> bool {
        let mut committed = self.shared.committed();
        // A closed watch (`Ok(Err(_))`) cannot happen while `self` holds the sender (in
        // `LogShared`); were it closed, the commit would not move here either.
        matches!(
            tokio::time::timeout(
                self.config.commit_timeout,
                committed.wait_for(|c| *c >= seqno)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Why a write is not answered as committed when no signature covered it in time.
    fn no_signature_in_time(&self) -> String {
        format!(
            "no signature after it was committed within {:?}",
            self.config.commit_timeout
        )
    }

    /// Waits until `txid` is committed, or says why it is not: for a write whose entry this
    /// node may have lost (it lost its office first), its seqno's transaction is read back.
    pub async fn wait_committed(&self, txid: TxId) -> Result<TxId, WriteError> {
        let reached = self.signature_after(txid.seqno()).await;
        match self.shared.ledger.status(txid) {
            TxStatus::Committed => Ok(txid),
            TxStatus::Invalid => Err(WriteError::RolledBack(txid)),
            _ => Err(WriteError::Pending {
                txid,
                reason: if reached {
                    "its seqno was taken over by another view".into()
                } else {
                    self.no_signature_in_time()
                },
            }),
        }
    }

    /// Adds a node the service trusts: first as a learner, which the leader brings up to date,
    /// then as a voter. Leader only.
    pub async fn add_node(&self, node_id: NodeId, node: PeerNode) -> Result<(), ClusterError> {
        self.raft
            .add_learner(node_id.clone(), node, true)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        self.raft
            .change_membership(
                openraft::ChangeMembers::AddVoterIds(BTreeSet::from([node_id])),
                false,
            )
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(())
    }

    /// Retires a node: it leaves the membership (voter and node). Leader only.
    pub async fn remove_node(&self, node_id: NodeId) -> Result<(), ClusterError> {
        let ids = BTreeSet::from([node_id]);
        self.raft
            .change_membership(openraft::ChangeMembers::RemoveVoters(ids.clone()), false)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        self.raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(ids), false)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(())
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched: BTreeMap<NodeId, u64> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter_map(|(id, l)| l.as_ref().map(|l| (id.clone(), l.index)))
                    .collect()
            })
            .unwrap_or_default();
        ClusterStatus {
            node_id: self.config.node_id.clone(),
            state: m.state,
            view: m.current_term,
            primary: m.current_leader.clone(),
            last_log_index: m.last_log_index.unwrap_or(0),
            committed: self.shared.ledger.committed(),
            nodes: nodes(membership)
                .into_iter()
                .map(|(id, node)| NodeStatus {
                    voter: voters.contains(&id),
                    primary: m.current_leader.as_ref() == Some(&id),
                    matched: matched.get(&id).copied(),
                    node_id: id,
                    node,
                })
                .collect(),
        }
    }

    /// Stops consensus and the peer listener; the ledger stays open (the caller closes it).
    pub async fn shutdown(&self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.raft.shutdown().await;
    }
}

/// Founds a cluster of one on a ledger that records no membership: appends, as this node in
/// the view of its last transaction, the first membership transaction and a signature, and
/// commits them. The vote is set to that view, so the first election opens the next one.
/// What a founding transaction starts.
enum Founding {
    /// A cluster on a ledger that never took part in one (a new or a standalone ledger): in
    /// the ledger's view.
    New,
    /// A new service on the ledger of a lost cluster: in the next view, so that its
    /// transactions never share a view with the old cluster's last ones.
    Recovery { governance: Vec<TableWrite> },
}

async fn found(
    shared: &Arc<LogShared>,
    config: &ClusterConfig,
    founding: Founding,
) -> Result<(), ClusterError> {
    let ledger = shared.ledger.clone();
    let last = ledger.durable();
    let (view, mut writes) = match founding {
        Founding::New => (last.map_or(1, TxId::view), Vec::new()),
        Founding::Recovery { governance } => (last.map_or(1, |t| t.view() + 1), governance),
    };
    let next = last.map_or(1, |t| t.seqno() + 1);
    let membership = Membership::new(
        vec![BTreeSet::from([config.node_id.clone()])],
        BTreeMap::from([(config.node_id.clone(), config.node.clone())]),
    )
    .map_err(|e| ClusterError::Raft(e.to_string()))?;
    let at = |seqno| TxId::new(view, seqno).expect("view and seqno are >= 1");
    writes.insert(0, membership_write(at(next), membership));
    let ops = vec![
        (at(next), ReplicaOp::Governance(writes)),
        (at(next + 1), ReplicaOp::Signature),
    ];
    let (tx, rx) = tokio::sync::oneshot::channel();
    ledger.replicate(
        ops,
        None,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    rx.await.map_err(|_| AppendError::Closed)??;
    let committed = tokio::task::spawn_blocking(move || ledger.commit_through(next + 1))
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))??;
    shared
        .committed
        .send_replace(committed.map_or(0, TxId::seqno));
    shared.adopt_ledger_end();
    shared.save_vote(&openraft::impls::Vote::new(view, config.node_id.clone()))?;
    tracing::info!(node = %config.node_id, view, seqno = next, "founded a cluster of one");
    Ok(())
}

/// The leader's signer (see the module docs). Also proposes a ledger secret rotation when the
/// data key's budget nearly runs out.
async fn sign(raft: Raft, shared: Arc<LogShared>, config: ClusterConfig) {
    let mut metrics = raft.metrics();
    let mut signed_through = 0u64;
    let mut term = 0u64;
    let mut last_signature = Instant::now();
    loop {
        if metrics.changed().await.is_err() {
            return;
        }
        // Read in place: the metrics change with every append, and a copy allocates (node
        // ids, the replication and heartbeat maps).
        let (leads, current_term, last) = {
            let m = metrics.borrow_and_update();
            (
                m.state == ServerState::Leader,
                m.current_term,
                m.last_log_index.unwrap_or(0),
            )
        };
        if !leads {
            continue;
        }
        if current_term != term {
            term = current_term;
            signed_through = 0;
            tracing::info!(view = term, node = %config.node_id, "this node is the primary");
        }
        if last <= signed_through {
            continue;
        }
        if shared.ledger.rotation_due_within(1 << 16) {
            if let Err(e) = raft.client_write(Proposal::Rotation).await {
                tracing::warn!(error = %e, "proposing a ledger secret rotation failed");
            }
            continue;
        }
        if last - signed_through < config.sign_every {
            let due = last_signature + config.sign_interval;
            tokio::time::sleep_until(due.into()).await;
        }
        match raft.client_write(Proposal::Signature).await {
            Ok(response) => {
                signed_through = response.log_id.index;
                last_signature = Instant::now();
            }
            Err(e) => {
                tracing::debug!(error = %e, "proposing a signature failed");
            }
        }
    }
}
