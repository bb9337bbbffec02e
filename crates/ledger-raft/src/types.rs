//! The Raft types of a cledger cluster and how a Raft entry and a ledger transaction are one
//! thing: Raft term = view, log index = seqno (CCF's model), so the Raft log id `(term,
//! index)` *is* the transaction id `view.seqno`.
//!
//! Every Raft entry is a ledger transaction, covered by the Merkle tree and by `cledger audit`:
//! - a client's write, a signature or a key rotation proposed by the leader
//!   ([`Proposal`]) is encoded, sealed and signed by the leader when it appends it, and
//!   travels to the others as its encoded bytes ([`Proposal::Encoded`]), kept byte for byte;
//! - openraft's own entries (the blank entry a new leader appends, membership changes) are
//!   public governance transactions that every node encodes itself from the entry
//!   ([`ledger_op`]): the encoding is deterministic, so all nodes hold identical bytes, and
//!   the next signature, whose root every follower checks, proves it.
//!
//! Index 0 is a virtual entry (term 0, blank) that every node has and that is never stored:
//! openraft starts logs at index 0, a ledger at seqno 1.

use ledger_core::TxId;
use ledger_core::entry::{EntryView, TableWrite, TxBody, TxKind};
#[cfg(test)]
use ledger_store::WriteRequest;
use ledger_store::{PreparedWrite, ReplicaOp};
use openraft::impls::leader_id_std;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// The governance table recording the start of each view (openraft's blank entry).
pub const VIEWS_TABLE: &str = "public:cledger.raft.views";
/// The governance table recording the cluster's membership (openraft's membership entries);
/// key [`MEMBERSHIP_KEY`].
pub const MEMBERSHIP_TABLE: &str = "public:cledger.raft.membership";
pub const MEMBERSHIP_KEY: &str = "current";

/// A node's id: the hex SHA-256 of its public key, as CCF names nodes.
pub type NodeId = String;

/// Where a node is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// The client (REST) address, `https://host:port`: where writes are redirected.
    pub client_url: String,
    /// The peer listener, `host:port`.
    pub peer_address: String,
}

openraft::declare_raft_types!(
    /// cledger's Raft: std leader ids (one leader per term, so a log id is `term.index`,
    /// exactly a CCF txid).
    pub LedgerRaft:
        D = Proposal,
        R = (),
        NodeId = NodeId,
        Node = PeerNode,
        LeaderId = leader_id_std::LeaderId<u64, NodeId>,
);

pub type LogId = openraft::type_config::alias::LogIdOf<LedgerRaft>;
type CommittedLeaderId = openraft::type_config::alias::CommittedLeaderIdOf<LedgerRaft>;
pub type Entry = openraft::type_config::alias::EntryOf<LedgerRaft>;
pub type Vote = openraft::type_config::alias::VoteOf<LedgerRaft>;
pub type Membership = openraft::Membership<NodeId, PeerNode>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<LedgerRaft>;
pub type Raft = openraft::Raft<LedgerRaft, crate::state_machine::LedgerStateMachine>;

/// The application data of a Raft entry.
///
/// Only [`Proposal::Encoded`] ever crosses the network: the leader's log hands out what it
/// stored, which is encoded bytes, and serializing any other variant fails.
pub enum Proposal {
    /// A client's write, checked by the leader before it is proposed.
    Write(ProposedWrite),
    /// A signature over the root of every transaction before it.
    Signature,
    /// A new ledger secret (the data key's use budget is nearly spent).
    Rotation,
    /// A transaction as encoded in the ledger.
    Encoded(Vec<u8>),
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proposal::Write(_) => f.write_str("write"),
            Proposal::Signature => f.write_str("signature"),
            Proposal::Rotation => f.write_str("rotation"),
            Proposal::Encoded(bytes) => write!(f, "encoded({} bytes)", bytes.len()),
        }
    }
}

impl Serialize for Proposal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Proposal::Encoded(bytes) => serializer.serialize_bytes(bytes),
            other => Err(serde::ser::Error::custom(format!(
                "a {other} proposal is encoded by the leader before it leaves the node"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Proposal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an encoded ledger transaction")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Proposal, E> {
                Ok(Proposal::Encoded(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Proposal, E> {
                Ok(Proposal::Encoded(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Proposal, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    bytes.push(b);
                }
                Ok(Proposal::Encoded(bytes))
            }
        }
        deserializer.deserialize_byte_buf(Bytes)
    }
}

/// The txid a Raft log id names. Index 0 (the virtual entry) has none.
pub fn txid_of(log_id: &LogId) -> Option<TxId> {
    TxId::new(*log_id.leader_id, log_id.index)
}

pub fn log_id_of(txid: TxId) -> LogId {
    LogId::new(CommittedLeaderId::from(txid.view()), txid.seqno())
}

/// The virtual entry at index 0.
pub fn zero_log_id() -> LogId {
    LogId::new(CommittedLeaderId::from(0u64), 0)
}

/// What the membership table records: the membership and the entry that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub view: u64,
    pub seqno: u64,
    pub membership: Membership,
}

impl MembershipRecord {
    pub fn stored(&self) -> StoredMembership {
        let log_id = TxId::new(self.view, self.seqno).map(log_id_of);
        StoredMembership::new(log_id, self.membership.clone())
    }
}

/// A client's write as the primary proposes it, with the txid its log gives it once appended.
///
/// openraft answers a proposal whose entry was discarded by a change of primary with "commit
/// status unknown" and no log id; the slot lets the writer learn which txid the write had, so
/// that it can tell the client whether it was rolled back (`Invalid`) or committed after all.
pub struct ProposedWrite {
    pub write: PreparedWrite,
    pub placed: Arc<OnceLock<TxId>>,
}

impl ProposedWrite {
    pub fn new(write: PreparedWrite) -> Self {
        ProposedWrite {
            write,
            placed: Arc::default(),
        }
    }
}

/// The ledger transaction a Raft entry is, for the replica's append.
pub fn ledger_op(entry: Entry) -> Result<(TxId, ReplicaOp), String> {
    let txid = txid_of(&entry.log_id)
        .ok_or_else(|| format!("entry {} names no transaction", entry.log_id))?;
    let op = match entry.payload {
        openraft::EntryPayload::Blank => ReplicaOp::Governance(vec![TableWrite {
            table: VIEWS_TABLE.into(),
            key: txid.view().to_string(),
            value: Some(Vec::new()),
        }]),
        openraft::EntryPayload::Membership(membership) => {
            ReplicaOp::Governance(vec![membership_write(txid, membership)])
        }
        openraft::EntryPayload::Normal(Proposal::Write(proposed)) => {
            // Set once: an entry is appended at one log id (a retry of the append is the same).
            let _ = proposed.placed.set(txid);
            ReplicaOp::Write(proposed.write)
        }
        openraft::EntryPayload::Normal(Proposal::Signature) => ReplicaOp::Signature,
        openraft::EntryPayload::Normal(Proposal::Rotation) => ReplicaOp::Rotation,
        openraft::EntryPayload::Normal(Proposal::Encoded(bytes)) => ReplicaOp::Encoded(bytes),
    };
    Ok((txid, op))
}

/// The governance write recording `membership`, set by the transaction `txid`.
pub fn membership_write(txid: TxId, membership: Membership) -> TableWrite {
    let record = MembershipRecord {
        view: txid.view(),
        seqno: txid.seqno(),
        membership,
    };
    TableWrite {
        table: MEMBERSHIP_TABLE.into(),
        key: MEMBERSHIP_KEY.into(),
        // Deterministic: BTree maps and sets serialize in order.
        value: Some(serde_json::to_vec(&record).expect("a membership serializes")),
    }
}

/// The Raft entry a ledger transaction is.
pub fn entry_of(txid: TxId, bytes: Vec<u8>) -> Result<Entry, String> {
    let log_id = log_id_of(txid);
    let view = EntryView::parse(&bytes, txid.seqno()).map_err(|e| e.to_string())?;
    if view.kind == TxKind::Governance
        && let TxBody::Governance(writes) = view.body(None).map_err(|e| e.to_string())?
        && let [write] = writes.as_slice()
    {
        if write.table == VIEWS_TABLE {
            return Ok(Entry {
                log_id,
                payload: openraft::EntryPayload::Blank,
            });
        }
        if write.table == MEMBERSHIP_TABLE {
            let record: MembershipRecord =
                serde_json::from_slice(write.value.as_deref().unwrap_or_default())
                    .map_err(|e| format!("transaction {txid}: membership record: {e}"))?;
            return Ok(Entry {
                log_id,
                payload: openraft::EntryPayload::Membership(record.membership),
            });
        }
    }
    Ok(Entry {
        log_id,
        payload: openraft::EntryPayload::Normal(Proposal::Encoded(bytes)),
    })
}

/// The nodes of a membership, by id.
pub fn nodes(membership: &Membership) -> BTreeMap<NodeId, PeerNode> {
    membership
        .nodes()
        .map(|(id, node)| (id.clone(), node.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consensus_tables_are_reserved_from_clients() {
        for table in [VIEWS_TABLE, MEMBERSHIP_TABLE] {
            assert!(table.starts_with(ledger_store::CONSENSUS_TABLES), "{table}");
            let write = WriteRequest::Governance(vec![TableWrite {
                table: table.into(),
                key: "x".into(),
                value: Some(Vec::new()),
            }]);
            assert!(matches!(
                ledger_store::Ledger::prepare(write),
                Err(ledger_store::AppendError::ReservedTable(t)) if t == table
            ));
        }
    }
}
