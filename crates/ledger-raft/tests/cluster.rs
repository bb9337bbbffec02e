//! Three nodes in one process, each with its own data directory, ledger and peer listener on
//! loopback (real mutual TLS): founding, joining, replication, losing the primary, a primary
//! whose fsync fails after its followers took the batch, and the invariants a ledger must
//! keep — identical committed bytes everywhere, receipts from every view verifying with the
//! one service certificate. Connections between nodes are cut mid-stream by a proxy in one test.

use ledger_core::TxId;
use ledger_core::entry::ApplicationEntry;
use ledger_core::signing::EcSigningKey;
use ledger_identity::files::NodeFiles;
use ledger_identity::{Curve, ServiceIdentity, generate_private_key, issue_node_certificate};
use ledger_raft::{Cluster, ClusterConfig, PeerNode, PeerTls, StartMode, WriteError};
use ledger_store::faults::Injected;
use ledger_store::{
    FaultInjector, Genesis, KekSource, Ledger, NodeIdentity, Role, StorageOp, StoreConfig,
    TxStatus, WriteRequest,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

struct NodeSetup {
    dir: PathBuf,
    node_key_pem: String,
    node_cert_pem: String,
    /// Every node of a service holds the service key (a joiner receives it).
    service_key_pem: String,
    node_id: String,
}

fn replica_config() -> StoreConfig {
    StoreConfig {
        role: Role::Replica,
        ..StoreConfig::default()
    }
}

fn identity(setup: &NodeSetup) -> NodeIdentity {
    NodeIdentity {
        signing_key: EcSigningKey::from_pkcs8_pem(&setup.node_key_pem).expect("node key"),
        cert_pem: setup.node_cert_pem.clone(),
        service_key: EcSigningKey::from_pkcs8_pem(&setup.service_key_pem).expect("service key"),
    }
}

fn entry(label: &str, i: u64) -> WriteRequest {
    WriteRequest::Entry(ApplicationEntry {
        collection_id: "c".into(),
        contents: format!("{label} #{i}"),
        tags: vec![],
        claims_key: None,
        idempotency: None,
        kv_writes: Vec::new(),
    })
}

async fn start_at(
    setup: &NodeSetup,
    service: &ServiceIdentity,
    ledger: Ledger,
    joining: bool,
    address: &str,
) -> (Cluster, String) {
    start_behind(setup, service, ledger, joining, address, None).await
}

/// Starts a node whose peer listener is on `address`; with `chaos`, the other nodes reach it
/// through a proxy that cuts their connections (the address returned is the proxy's).
async fn start_behind(
    setup: &NodeSetup,
    service: &ServiceIdentity,
    ledger: Ledger,
    joining: bool,
    address: &str,
    chaos: Option<&Arc<Chaos>>,
) -> (Cluster, String) {
    let listener = TcpListener::bind(address).await.expect("bind");
    let mut address = listener.local_addr().expect("address").to_string();
    if let Some(chaos) = chaos {
        address = chaos.front(address).await;
    }
    let mut config = ClusterConfig::new(
        setup.node_id.clone(),
        PeerNode {
            client_url: format!("https://{address}"),
            peer_address: address.clone(),
        },
        PeerTls {
            service_cert_pem: service.cert_pem.clone(),
            node_cert_pem: setup.node_cert_pem.clone(),
            node_key_pem: setup.node_key_pem.clone(),
        },
    );
    config.heartbeat = Duration::from_millis(50);
    let mode = if joining {
        StartMode::Join
    } else {
        StartMode::FoundOrResume
    };
    let cluster = Cluster::start(&setup.dir, Arc::new(ledger), config, listener, mode)
        .await
        .expect("cluster starts");
    (cluster, address)
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes through whichever node leads, following the primary on NotPrimary.
async fn write(nodes: &[&Cluster], request: WriteRequest) -> TxId {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for node in nodes {
            match node.write(request.clone()).await {
                Ok(txid) => return txid,
                Err(WriteError::NotPrimary { .. }) => continue,
                Err(e) => panic!("write failed: {e}"),
            }
        }
        assert!(Instant::now() < deadline, "no primary took the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn committed_bytes(ledger: &Ledger) -> Vec<(TxId, Vec<u8>)> {
    let committed = ledger.committed().expect("something committed").seqno();
    ledger
        .durable_transactions(1, committed)
        .expect("transactions read")
}

/// Three nodes formed as a service is: a founder with some history (its ledger opened with
/// `founder_config`), then two nodes that join it.
struct Three {
    _tmp: tempfile::TempDir,
    service: ServiceIdentity,
    founder: NodeSetup,
    a: Cluster,
    a_address: String,
    joiners: Vec<(NodeSetup, Cluster)>,
}

async fn three_nodes(founder_config: StoreConfig) -> Three {
    three_nodes_with(founder_config, None).await
}

/// As [`three_nodes`], each node reached through `chaos` if given.
async fn three_nodes_with(founder_config: StoreConfig, chaos: Option<Arc<Chaos>>) -> Three {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The founder: an ordinary ledger with some history, then a cluster of one.
    let founder_dir = tmp.path().join("a");
    let files = NodeFiles::create(&founder_dir, Curve::P384, &[]).expect("identity");
    let service = ServiceIdentity {
        cert_pem: files.service_cert_pem.clone(),
        key_pem: files.service_key_pem.clone(),
    };
    let founder = NodeSetup {
        dir: founder_dir.clone(),
        node_id: EcSigningKey::from_pkcs8_pem(&files.node_key_pem)
            .expect("key")
            .node_id()
            .to_hex(),
        node_key_pem: files.node_key_pem.clone(),
        node_cert_pem: files.node_cert_pem.clone(),
        service_key_pem: files.service_key_pem.clone(),
    };
    {
        let ledger = Ledger::create(
            &founder_dir,
            StoreConfig::default(),
            identity(&founder),
            Genesis {
                ledger_id: "cluster-test".into(),
                service_cert_pem: service.cert_pem.clone(),
                writes: vec![],
            },
        )
        .expect("ledger");
        for i in 0..5 {
            ledger.append(entry("standalone", i)).expect("append");
        }
        ledger.close();
    }
    let (ledger, _) =
        Ledger::open(&founder_dir, founder_config, identity(&founder)).expect("reopen");
    let (a, a_address) = start_behind(
        &founder,
        &service,
        ledger,
        false,
        "127.0.0.1:0",
        chaos.as_ref(),
    )
    .await;
    wait_for("the founder to lead", Duration::from_secs(10), || {
        a.primary().is_some_and(|(id, _)| &id == a.node_id())
    })
    .await;
    for i in 0..10 {
        write(&[&a], entry("one node", i)).await;
    }

    // Two more nodes: keys of their own, certificates from the service, the ledger secret.
    let secret =
        ledger_store::export_ledger_secret(&founder_dir, &KekSource::DataDir).expect("secret");
    let mut joiners = Vec::new();
    for name in ["b", "c"] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let node_key_pem = generate_private_key(Curve::P384).expect("key");
        let node_cert_pem = issue_node_certificate(&service, &node_key_pem, &[]).expect("cert");
        let setup = NodeSetup {
            dir: dir.clone(),
            node_id: EcSigningKey::from_pkcs8_pem(&node_key_pem)
                .expect("key")
                .node_id()
                .to_hex(),
            node_key_pem,
            node_cert_pem,
            service_key_pem: files.service_key_pem.clone(),
        };
        // The primary registers the node's certificate, so receipts it signs verify.
        write(
            &[&a],
            WriteRequest::Governance(vec![ledger_store::node_registration(&identity(&setup))]),
        )
        .await;
        let ledger = Ledger::create_replica(&dir, replica_config(), identity(&setup), &secret)
            .expect("replica ledger");
        let (cluster, address) = start_behind(
            &setup,
            &service,
            ledger,
            true,
            "127.0.0.1:0",
            chaos.as_ref(),
        )
        .await;
        a.add_node(
            setup.node_id.clone(),
            PeerNode {
                client_url: format!("https://{address}"),
                peer_address: address,
            },
        )
        .await
        .expect("node added");
        joiners.push((setup, cluster));
    }
    Three {
        _tmp: tmp,
        service,
        founder,
        a,
        a_address,
        joiners,
    }
}

/// Waits until one of `nodes` leads.
async fn new_primary(nodes: &[&Cluster]) {
    wait_for("a new primary", Duration::from_secs(20), || {
        nodes
            .iter()
            .any(|n| n.primary().is_some_and(|(id, _)| &id == n.node_id()))
    })
    .await;
}

/// Waits until every one of `nodes` has committed `txid`.
async fn committed_on(nodes: &[&Cluster], txid: TxId) {
    for node in nodes {
        wait_for("every node to commit", Duration::from_secs(10), || {
            node.ledger().status(txid) == TxStatus::Committed
        })
        .await;
    }
}

/// Asserts that `reference` and every one of `others` committed the same bytes as far as both
/// go; returns the shortest common length.
fn assert_same_committed(reference: &Cluster, others: &[&Cluster]) -> usize {
    let reference = committed_bytes(reference.ledger());
    let mut shortest = reference.len();
    for node in others {
        let theirs = committed_bytes(node.ledger());
        let common = reference.len().min(theirs.len());
        assert_eq!(
            reference[..common],
            theirs[..common],
            "committed prefixes differ"
        );
        shortest = shortest.min(common);
    }
    shortest
}

/// Asserts that `node` has a receipt for `txid` that verifies with the service certificate.
fn assert_receipt_verifies(node: &Cluster, txid: TxId, service_cert_pem: &str) {
    let bundle = node
        .ledger()
        .receipt(txid)
        .expect("receipt read")
        .expect("receipt exists");
    ledger_core::receipt::verify_receipt(&bundle.receipt, service_cert_pem, None)
        .unwrap_or_else(|e| panic!("receipt of {txid} does not verify: {e}"));
}

/// Stops a node's consensus and closes its ledger.
async fn stop(node: &Cluster) {
    let ledger = node.ledger().clone();
    node.shutdown().await;
    ledger.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_and_survive_the_loss_of_the_primary() {
    let Three {
        _tmp,
        service,
        founder,
        a,
        a_address,
        joiners,
    } = three_nodes(replica_config()).await;
    let founder_dir = founder.dir.clone();
    let b = &joiners[0].1;
    let c = &joiners[1].1;
    let status = a.status();
    assert_eq!(
        status.nodes.iter().filter(|n| n.voter).count(),
        3,
        "{status:?}"
    );

    let mut acknowledged = Vec::new();
    for i in 0..30 {
        acknowledged.push(write(&[&a, b, c], entry("three nodes", i)).await);
    }
    let newest = *acknowledged.last().expect("writes");
    committed_on(&[&a, b, c], newest).await;
    assert_same_committed(&a, &[b, c]);

    // The primary is lost.
    let old_view = a.status().view;
    stop(&a).await;
    let survivors = [b, c];
    new_primary(&survivors).await;
    for i in 0..20 {
        acknowledged.push(write(&survivors, entry("after failover", i)).await);
    }
    let newest = *acknowledged.last().expect("writes");
    assert!(newest.view() > old_view, "{newest} is in a new view");
    committed_on(&survivors, newest).await;
    // Nothing acknowledged is lost; every receipt, from every view, verifies.
    for node in survivors {
        for txid in &acknowledged {
            assert_eq!(node.ledger().status(*txid), TxStatus::Committed, "{txid}");
        }
        for txid in [acknowledged[0], acknowledged[35], newest] {
            assert_receipt_verifies(node, txid, &service.cert_pem);
        }
    }
    // The old primary comes back (it missed every write since the failover) and catches up:
    // it reopens its ledger, finds its membership there, and is sent what it lacks.
    let (ledger, _) =
        Ledger::open(&founder_dir, replica_config(), identity(&founder)).expect("reopen");
    let (a, _) = start_at(&founder, &service, ledger, false, &a_address).await;
    wait_for(
        "the old primary to catch up",
        Duration::from_secs(20),
        || a.ledger().status(newest) == TxStatus::Committed,
    )
    .await;
    let after_restart = write(&[&a, b, c], entry("after restart", 0)).await;
    committed_on(&[&a, b, c], after_restart).await;
    let common = assert_same_committed(&a, &[b, c]);
    assert!(common > acknowledged.len(), "{common}");
    stop(&a).await;
    for (_, cluster) in &joiners {
        stop(cluster).await;
    }
}

/// Fails one segment fsync of the node it is given to, slowly: by the time the fsync fails,
/// the followers have the batch, as a leader replicates what it has written while it makes it
/// durable.
#[derive(Debug)]
struct SlowFailingSync {
    armed: AtomicBool,
    errno: i32,
}

impl FaultInjector for SlowFailingSync {
    fn inject(&self, op: StorageOp, _len: usize) -> Option<Injected> {
        if op != StorageOp::SegmentSync || !self.armed.swap(false, Ordering::SeqCst) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(300));
        Some(Injected::Error(std::io::Error::from_raw_os_error(
            self.errno,
        )))
    }
}

/// The primary's fsync fails after its followers took the batch: the primary stops (a
/// storage error is fatal to consensus), the others elect a primary that has the batch and
/// commits it, and when the old primary comes back (whatever its disk kept: everything after
/// EIO, which poisons it, or nothing of the batch after ENOSPC, which cuts it off) every node
/// holds the same committed bytes, nothing acknowledged is lost and every receipt verifies.
async fn primary_fsync_fails_after_replicating(errno: i32) {
    let injector = Arc::new(SlowFailingSync {
        armed: AtomicBool::new(false),
        errno,
    });
    let Three {
        _tmp,
        service,
        founder,
        a,
        a_address,
        joiners,
    } = three_nodes(StoreConfig {
        faults: Some(injector.clone()),
        ..replica_config()
    })
    .await;
    let (b, c) = (&joiners[0].1, &joiners[1].1);
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        acknowledged.push(write(&[&a, b, c], entry("before the fault", i)).await);
    }
    let old_view = a.status().view;
    injector.armed.store(true, Ordering::SeqCst);
    let failed = a.write(entry("during the fault", 0)).await;
    let pending = match failed {
        Err(WriteError::Pending { txid, .. }) => Some(txid),
        Err(WriteError::Closed) => None,
        other => panic!("errno {errno}: {other:?}"),
    };
    let a_durable = a.ledger().durable().expect("durable").seqno();
    // Consensus stopped on the old primary, and it says so (and no longer claims to lead).
    wait_for("the old primary to stop", Duration::from_secs(10), || {
        a.stopped().is_some()
    })
    .await;
    assert!(!a.is_primary());

    let survivors = [b, c];
    new_primary(&survivors).await;
    for i in 0..5 {
        acknowledged.push(write(&survivors, entry("after the fault", i)).await);
    }
    let newest = *acknowledged.last().expect("writes");
    committed_on(&survivors, newest).await;
    // What the old primary wrote and never made durable reached the others before its fsync
    // failed: they committed transactions of its view past its durable end.
    let replicated_early = committed_bytes(b.ledger())
        .iter()
        .filter(|(t, _)| t.view() == old_view && t.seqno() > a_durable)
        .count();
    assert!(
        replicated_early > 0,
        "errno {errno}: nothing of the failed batch reached the followers"
    );
    // The writer was not told "nothing was written" of a write that was: if the new primary
    // committed it, the answer named its txid (pending, for its status to tell).
    let committed_during: Vec<TxId> = b
        .ledger()
        .entries("c", None, 1, u64::MAX, 1000)
        .expect("lists")
        .into_iter()
        .filter(|r| r.entry.contents == "during the fault #0")
        .map(|r| r.txid)
        .collect();
    assert!(
        committed_during.is_empty() || committed_during == pending.into_iter().collect::<Vec<_>>(),
        "errno {errno}: committed as {committed_during:?}, answered {pending:?}"
    );

    // The old primary comes back with whatever its disk kept, and catches up.
    stop(&a).await;
    let (ledger, _) =
        Ledger::open(&founder.dir, replica_config(), identity(&founder)).expect("reopen");
    let (a, _) = start_at(&founder, &service, ledger, false, &a_address).await;
    wait_for(
        "the old primary to catch up",
        Duration::from_secs(20),
        || a.ledger().status(newest) == TxStatus::Committed,
    )
    .await;
    let common = assert_same_committed(b, &[&a, c]);
    assert!(common as u64 >= newest.seqno(), "errno {errno}: {common}");
    for node in [&a, b, c] {
        for txid in &acknowledged {
            assert_eq!(node.ledger().status(*txid), TxStatus::Committed, "{txid}");
        }
        for txid in [acknowledged[0], newest] {
            assert_receipt_verifies(node, txid, &service.cert_pem);
        }
    }
    stop(&a).await;
    for (_, cluster) in &joiners {
        stop(cluster).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_fsync_fails_with_eio_after_replicating() {
    primary_fsync_fails_after_replicating(ledger_store::faults::errno::EIO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_fsync_fails_with_enospc_after_replicating() {
    primary_fsync_fails_after_replicating(ledger_store::faults::errno::ENOSPC).await;
}

/// Cuts the connections between nodes: a TCP proxy in front of each node's peer listener
/// that, while `cutting` is set, closes every connection it carries 10 to 150 ms after it
/// opened, whatever is in flight (half a TLS record, a batch of appends not yet answered).
#[derive(Default)]
struct Chaos {
    cutting: AtomicBool,
    /// Connections cut so far.
    cuts: std::sync::atomic::AtomicUsize,
    /// Connections carried so far (also the seed of each one's lifetime).
    carried: std::sync::atomic::AtomicU64,
}

impl Chaos {
    /// Starts a proxy to `target`; returns its address.
    async fn front(self: &Arc<Self>, target: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let chaos = self.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let n = chaos.carried.fetch_add(1, Ordering::SeqCst);
                // A xorshift of the connection's number: lifetimes spread over the range.
                let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let lifetime = Duration::from_millis(10 + x % 141);
                let chaos = chaos.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let cut = async {
                        loop {
                            tokio::time::sleep(lifetime).await;
                            if chaos.cutting.load(Ordering::SeqCst) {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut => {
                            chaos.cuts.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        address
    }
}

/// Writes `request`, through whichever node leads, once; `None` when no node acknowledged it
/// (no primary yet, or its fate is not known: it may or may not be committed).
async fn write_once(nodes: &[&Cluster], request: WriteRequest) -> Option<TxId> {
    for node in nodes {
        match node.write(request.clone()).await {
            Ok(txid) => return Some(txid),
            Err(WriteError::NotPrimary { .. }) => continue,
            Err(WriteError::Pending { .. } | WriteError::RolledBack(_)) => return None,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    None
}

/// The connections between the nodes are cut again and again while eight writers write: the
/// leader's append streams lose requests in flight, answers and half-sent frames, reconnect
/// and resume (a view may change too). Once the cutting stops, every write that was
/// acknowledged is committed on every node, the nodes hold the same committed bytes, and
/// receipts verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_survives_connections_cut_mid_stream() {
    let chaos = Arc::new(Chaos::default());
    let Three {
        _tmp,
        service,
        a,
        joiners,
        ..
    } = three_nodes_with(replica_config(), Some(chaos.clone())).await;
    let (b, c) = (&joiners[0].1, &joiners[1].1);
    let nodes = [&a, b, c];
    chaos.cutting.store(true, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(3);
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let attempts = &attempts;
    let writers = (0..8).map(|writer| async move {
        let mut acknowledged = Vec::new();
        for i in 0.. {
            if Instant::now() >= until {
                break;
            }
            attempts.fetch_add(1, Ordering::SeqCst);
            let request = entry(&format!("writer {writer} under cuts"), i);
            if let Some(txid) = write_once(&nodes, request).await {
                acknowledged.push(txid);
            }
        }
        acknowledged
    });
    let acknowledged: Vec<TxId> = futures_util::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let attempts = attempts.load(Ordering::SeqCst);
    let cuts = chaos.cuts.load(Ordering::SeqCst);
    chaos.cutting.store(false, Ordering::SeqCst);
    assert!(cuts >= 20, "only {cuts} connections were cut");
    assert!(
        acknowledged.len() >= 50,
        "only {} of {attempts} writes were acknowledged",
        acknowledged.len()
    );

    // The connections heal (the proxies stop cutting new and open ones alike).
    let last = write(&nodes, entry("after the cuts", 0)).await;
    committed_on(&nodes, last).await;
    for node in nodes {
        for txid in &acknowledged {
            assert_eq!(node.ledger().status(*txid), TxStatus::Committed, "{txid}");
        }
    }
    let common = assert_same_committed(&a, &[b, c]);
    assert!(common as u64 >= last.seqno(), "{common}");
    for txid in [acknowledged[0], last] {
        assert_receipt_verifies(b, txid, &service.cert_pem);
    }
    eprintln!(
        "{cuts} connections cut, {} of {attempts} writes acknowledged",
        acknowledged.len()
    );
    for node in nodes {
        stop(node).await;
    }
}
