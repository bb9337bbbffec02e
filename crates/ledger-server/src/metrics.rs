//! The node's Prometheus metrics: one registry per server (no global state, so several
//! servers in one test process each count their own), rendered as OpenMetrics text at
//! `/metrics`.
//!
//! Request metrics are recorded by the `observe` middleware, store metrics by the store's
//! writer thread through [`ledger_store::StoreObserver`], and the gauges that describe state
//! (queue depth, ledger size, writability) are read from the ledger at scrape time, so they
//! cost nothing between scrapes.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/app/transactions/{transactionId}`), never the raw path, so the
    /// label set stays small whatever clients send.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub node_id: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: HistogramFamily<RouteLabels>,
    pub auth_failures: Family<CodeLabels, Counter>,
    pub rate_limited: Counter,
    pub writes_shed: Counter,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub connections_evicted: Counter,
    pub commit_seconds: Histogram,
    pub batch_transactions: Histogram,
    pub batch_bytes: Histogram,
    pub write_sync_seconds: Histogram,
    pub signatures: Counter,
    pub committed: Counter,
    pub storage_faults: Family<KindLabels, Counter>,
    pub queue_depth: Gauge,
    pub ledger_seqno: Gauge,
    pub ledger_bytes: Gauge<u64, AtomicU64>,
    pub writable: Gauge,
    pub cluster_primary: Gauge,
    pub cluster_view: Gauge,
    pub cluster_commit_seqno: Gauge,
    pub cluster_peer_lag: Family<PeerLabels, Gauge>,
    pub cluster_view_changes: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cledger");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response, by route template and method",
            request_seconds.clone(),
        );
        let auth_failures = Family::<CodeLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by authentication (401) or authorization (403), by error code",
            auth_failures.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 because their caller exceeded its rate limit",
            rate_limited.clone(),
        );
        let writes_shed = Counter::default();
        registry.register(
            "writes_shed",
            "Writes refused with 503 ServiceBusy because the write budget or queue was full",
            writes_shed.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open (including those in their TLS handshake)",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once: every slot they could use was busy, their address held its share of unauthenticated connections, or they would have used the descriptors reserved for the store",
            connections_refused.clone(),
        );
        let connections_evicted = Counter::default();
        registry.register(
            "connections_evicted",
            "Idle connections closed to give their slot to a new connection",
            connections_evicted.clone(),
        );
        let commit_seconds = latency_histogram();
        registry.register(
            "commit_latency_seconds",
            "Time from a write's submission to the store until it is committed (durable and signed)",
            commit_seconds.clone(),
        );
        let batch_transactions = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "batch_transactions",
            "Transactions per group commit (one write + fdatasync)",
            batch_transactions.clone(),
        );
        let batch_bytes = Histogram::new(exponential_buckets(256.0, 4.0, 12));
        registry.register(
            "batch_bytes",
            "Bytes appended per group commit",
            batch_bytes.clone(),
        );
        let write_sync_seconds = latency_histogram();
        registry.register(
            "batch_write_sync_seconds",
            "Time spent in write + fdatasync per group commit",
            write_sync_seconds.clone(),
        );
        let signatures = Counter::default();
        registry.register(
            "signatures",
            "Signature transactions written",
            signatures.clone(),
        );
        let committed = Counter::default();
        registry.register(
            "committed_transactions",
            "Client and governance transactions committed by this process",
            committed.clone(),
        );
        let storage_faults = Family::<KindLabels, Counter>::default();
        registry.register(
            "storage_faults",
            "Storage errors on the write path, by kind",
            storage_faults.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "write_queue_depth",
            "Writes submitted to the store and not yet picked up by the writer",
            queue_depth.clone(),
        );
        let ledger_seqno = Gauge::default();
        registry.register(
            "ledger_committed_seqno",
            "Sequence number of the last committed transaction",
            ledger_seqno.clone(),
        );
        let ledger_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "ledger_segment_bytes",
            "Bytes of ledger segment files on disk",
            ledger_bytes.clone(),
        );
        let writable = Gauge::default();
        registry.register(
            "writable",
            "1 when the ledger accepts writes, 0 when storage faults stopped them",
            writable.clone(),
        );
        let cluster_primary = Gauge::default();
        registry.register(
            "cluster_primary",
            "Cluster nodes: 1 while this node is the primary, 0 otherwise",
            cluster_primary.clone(),
        );
        let cluster_view = Gauge::default();
        registry.register(
            "cluster_view",
            "Cluster nodes: the current view (Raft term)",
            cluster_view.clone(),
        );
        let cluster_commit_seqno = Gauge::default();
        registry.register(
            "cluster_commit_seqno",
            "Cluster nodes: the newest seqno committed here (covered by a signature a majority holds)",
            cluster_commit_seqno.clone(),
        );
        let cluster_peer_lag = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "cluster_peer_lag",
            "On the primary: how many seqnos each other node's log is behind the primary's",
            cluster_peer_lag.clone(),
        );
        let cluster_view_changes = Counter::default();
        registry.register(
            "cluster_view_changes",
            "Cluster nodes: views this node has seen begin since it started (elections)",
            cluster_view_changes.clone(),
        );
        Metrics {
            registry,
            cluster_primary,
            cluster_view,
            cluster_commit_seqno,
            cluster_peer_lag,
            cluster_view_changes,
            requests,
            request_seconds,
            auth_failures,
            rate_limited,
            writes_shed,
            connections_open,
            connections_refused,
            connections_evicted,
            commit_seconds,
            batch_transactions,
            batch_bytes,
            write_sync_seconds,
            signatures,
            committed,
            storage_faults,
            queue_depth,
            ledger_seqno,
            ledger_bytes,
            writable,
        }
    }

    /// The registry as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// The store's writer thread reports here; every call is a few atomic operations.
impl ledger_store::StoreObserver for Metrics {
    fn batch_durable(
        &self,
        transactions: usize,
        signatures: usize,
        bytes: usize,
        write_sync: Duration,
    ) {
        self.batch_transactions.observe(transactions as f64);
        self.batch_bytes.observe(bytes as f64);
        self.write_sync_seconds.observe(write_sync.as_secs_f64());
        self.signatures.inc_by(signatures as u64);
    }

    fn committed(&self, latencies: &[Duration]) {
        self.committed.inc_by(latencies.len() as u64);
        for l in latencies {
            self.commit_seconds.observe(l.as_secs_f64());
        }
    }

    fn derived_damaged(&self, damage: &ledger_store::DerivedDamage) {
        tracing::error!(
            file = %damage.file.display(),
            reason = %damage.reason,
            "a derived file is damaged: nothing is served from it, and it is rebuilt from the ledger at the next start"
        );
    }

    fn storage_fault(&self, fault: &ledger_store::faults::StorageFault) {
        self.storage_faults
            .get_or_create(&KindLabels {
                kind: format!("{:?}", fault.kind),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
