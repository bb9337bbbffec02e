//! cledger's consensus: a cluster of nodes on openraft where **the ledger is the Raft log**
//! (term = view, index = seqno), as in CCF.
//!
//! - [`types`]: the Raft type configuration and the one-to-one mapping between Raft entries
//!   and ledger transactions;
//! - [`log_store`]: openraft's log storage over the ledger's segments (append with one fsync
//!   per group of appends, truncation of an uncommitted suffix, the vote file);
//! - [`state_machine`]: applying is committing — the ledger's commit point moves to the last
//!   signature a majority holds;
//! - [`network`]: the peer protocol over mutual TLS with node certificates the service issued;
//! - [`append_stream`]: AppendEntries pipelined over one long-lived connection per follower;
//! - [`cluster`]: a running node — the leader's signer, writes, membership, status;
//! - [`handle`]: the cluster as a `LedgerHandle`, what the HTTP personality serves.
//!
//! openraft is pinned to `=0.10.0-alpha.37` (docs/ARCHITECTURE.md says why).

pub mod append_stream;
pub mod cluster;
pub mod handle;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

pub use cluster::{
    Cluster, ClusterConfig, ClusterError, ClusterStatus, NodeStatus, StartMode, WriteError,
};
pub use handle::ClusterHandle;
pub use network::{PeerTls, node_id_of_cert};
pub use openraft::ServerState;
pub use types::{NodeId, PeerNode};
