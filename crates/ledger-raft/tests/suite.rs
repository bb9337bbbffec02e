//! openraft's storage test suite (`openraft::testing::log::Suite`) on cledger's log store and
//! state machine, one test per case, each on a fresh replica ledger in a temporary directory.
//!
//! The suite builds its own entries, so it asks of the type configuration what cledger's does
//! not give: node ids made from numbers (`NodeId: From<u64>`; ours are the hex SHA-256 of a
//! node's key) and nodes with a default (`Node: Default`; ours are addresses). It runs on
//! [`SuiteRaft`], cledger's configuration with numeric node ids and empty nodes, through thin
//! adapters that hand every call to the real [`LedgerLogStore`] and [`LedgerStateMachine`]
//! with node `n` named `"n"` and an empty node as a `PeerNode` with empty addresses, and
//! translate back exactly (anything else read back is an error). Log ids, the only thing the
//! two configurations share unchanged, pass through as they are.
//!
//! Cases left out, because they contradict a design decision rather than find a bug. Each
//! fails against this store, and `left_out_cases_fail` checks that it still fails and why:
//!
//! - **Applying entries the log never took** (`last_membership_in_log`,
//!   `get_membership_from_empty_log_and_sm`, `get_membership_from_log_le_sm_last_applied`,
//!   `get_membership_from_log_gt_sm_last_applied_1`,
//!   `get_membership_from_log_gt_sm_last_applied_2`,
//!   `get_initial_state_membership_from_empty_log_and_sm`,
//!   `get_initial_state_membership_from_sm_inlog_is_smaller`,
//!   `get_initial_state_membership_from_log_insm_is_smaller`, `get_initial_state_with_state`,
//!   `get_initial_state_last_log_gt_sm`, `last_applied_state`, `apply_single`,
//!   `apply_multiple`, `snapshot_meta`, `snapshot_meta_optional`, `transfer_snapshot`): the
//!   state machine is the ledger's commit point, so applying is committing what the log
//!   holds; an entry the log does not hold (or holds with another term, or a membership at the
//!   virtual index 0) is refused.
//! - **Index 0 is virtual** (`get_initial_state_without_init`, `initial_logs`,
//!   `get_log_state`, `last_id_in_log`, `get_initial_state_log_ids`): every node holds the
//!   blank entry `(0, 0)` without storing it, so even a fresh log ends at `(0, 0)`; the suite
//!   expects a fresh log to be empty.
//! - **Dense seqnos from 1** (`get_initial_state_last_log_lt_sm`,
//!   `get_initial_state_inverted_log_order`, `get_initial_state_conflict_at_same_index`,
//!   `get_initial_state_re_apply_committed`): their first entry is at index 2, which no
//!   ledger can hold. (`get_initial_state_log_ids` also appends entries of term 0 after
//!   index 0, which no ledger view can be.)
//! - **Cutting the log back to empty** (`delete_logs_after_0`, `delete_logs_after_none`):
//!   the ledger's writer cannot rewind to no transaction, so the store refuses (seqno 1 of a
//!   service's ledger is its committed genesis: Raft never asks); `None` would also have to
//!   remove the virtual entry.
//! - **Purging past the end of the log** (`purge_logs_upto_20`): openraft does so only after
//!   installing a snapshot; cledger nodes exchange none, and the ledger could not take the
//!   seqnos after the gap, so the store refuses.
//!
//! `transfer_snapshot` would fail even with a log that took its entries: it installs a
//! snapshot on an empty node, and a snapshot of this state machine can only say "the ledger
//! through log id X", which is false on a node that does not hold X.

use futures_util::StreamExt;
use ledger_core::signing::EcSigningKey;
use ledger_identity::Curve;
use ledger_identity::files::NodeFiles;
use ledger_raft::log_store::{LedgerLogStore, LogShared};
use ledger_raft::state_machine::{LedgerStateMachine, NoSnapshots};
use ledger_raft::types::{LedgerRaft, PeerNode, Proposal};
use ledger_store::{Ledger, NodeIdentity, Role, StoreConfig};
use openraft::impls::{EmptyNode, leader_id_std};
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, Membership, OptionalSend, RaftLogReader, StorageError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::ops::{RangeBounds, RangeInclusive};
use std::sync::Arc;

openraft::declare_raft_types!(
    /// cledger's Raft as the suite can drive it: numeric node ids, nodes with a default.
    SuiteRaft:
        D = Proposal,
        R = (),
        NodeId = u64,
        Node = EmptyNode,
        LeaderId = leader_id_std::LeaderId<u64, u64>,
);

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

// --- translation between the suite's configuration and cledger's ---

fn node_id_in(id: &str) -> io::Result<u64> {
    id.parse()
        .map_err(|_| invalid(format!("node id {id:?} is not one the suite wrote")))
}

/// The node an `EmptyNode` is stored as.
fn empty_peer() -> PeerNode {
    PeerNode {
        client_url: String::new(),
        peer_address: String::new(),
    }
}

fn membership_out(m: &Membership<u64, EmptyNode>) -> io::Result<Membership<String, PeerNode>> {
    let configs = m
        .get_joint_config()
        .iter()
        .map(|config| config.iter().map(u64::to_string).collect())
        .collect();
    let nodes: BTreeMap<String, PeerNode> = m
        .nodes()
        .map(|(id, _)| (id.to_string(), empty_peer()))
        .collect();
    Membership::new(configs, nodes).map_err(|e| invalid(e.to_string()))
}

fn membership_in(m: &Membership<String, PeerNode>) -> io::Result<Membership<u64, EmptyNode>> {
    let configs = m
        .get_joint_config()
        .iter()
        .map(|config| config.iter().map(|id| node_id_in(id)).collect())
        .collect::<io::Result<Vec<_>>>()?;
    let nodes = m
        .nodes()
        .map(|(id, node)| {
            if *node != empty_peer() {
                return Err(invalid(format!("node {id} came back as {node:?}")));
            }
            Ok((node_id_in(id)?, EmptyNode::new()))
        })
        .collect::<io::Result<BTreeMap<_, _>>>()?;
    Membership::new(configs, nodes).map_err(|e| invalid(e.to_string()))
}

fn stored_membership_in(
    m: &StoredMembershipOf<LedgerRaft>,
) -> io::Result<StoredMembershipOf<SuiteRaft>> {
    Ok(StoredMembershipOf::<SuiteRaft>::new(
        *m.log_id(),
        membership_in(m.membership())?,
    ))
}

fn stored_membership_out(
    m: &StoredMembershipOf<SuiteRaft>,
) -> io::Result<StoredMembershipOf<LedgerRaft>> {
    Ok(StoredMembershipOf::<LedgerRaft>::new(
        *m.log_id(),
        membership_out(m.membership())?,
    ))
}

fn entry_out(entry: EntryOf<SuiteRaft>) -> io::Result<EntryOf<LedgerRaft>> {
    let payload = match entry.payload {
        EntryPayload::Blank => EntryPayload::Blank,
        EntryPayload::Normal(data) => EntryPayload::Normal(data),
        EntryPayload::Membership(m) => EntryPayload::Membership(membership_out(&m)?),
    };
    Ok(EntryOf::<LedgerRaft> {
        log_id: entry.log_id,
        payload,
    })
}

fn entry_in(entry: EntryOf<LedgerRaft>) -> io::Result<EntryOf<SuiteRaft>> {
    let payload = match entry.payload {
        EntryPayload::Blank => EntryPayload::Blank,
        EntryPayload::Normal(data) => EntryPayload::Normal(data),
        EntryPayload::Membership(m) => EntryPayload::Membership(membership_in(&m)?),
    };
    Ok(EntryOf::<SuiteRaft> {
        log_id: entry.log_id,
        payload,
    })
}

fn vote_out(vote: &VoteOf<SuiteRaft>) -> VoteOf<LedgerRaft> {
    VoteOf::<LedgerRaft> {
        leader_id: leader_id_std::LeaderId {
            term: vote.leader_id.term,
            voted_for: vote.leader_id.voted_for.to_string(),
        },
        committed: vote.committed,
    }
}

fn vote_in(vote: &VoteOf<LedgerRaft>) -> io::Result<VoteOf<SuiteRaft>> {
    Ok(VoteOf::<SuiteRaft> {
        leader_id: leader_id_std::LeaderId {
            term: vote.leader_id.term,
            voted_for: node_id_in(&vote.leader_id.voted_for)?,
        },
        committed: vote.committed,
    })
}

fn meta_out(meta: &SnapshotMetaOf<SuiteRaft>) -> io::Result<SnapshotMetaOf<LedgerRaft>> {
    Ok(SnapshotMetaOf::<LedgerRaft> {
        last_log_id: meta.last_log_id,
        last_membership: stored_membership_out(&meta.last_membership)?,
    })
}

fn snapshot_in(snapshot: SnapshotOf<LedgerRaft, ()>) -> io::Result<SnapshotOf<SuiteRaft, ()>> {
    Ok(SnapshotOf::<SuiteRaft, ()> {
        meta: SnapshotMetaOf::<SuiteRaft> {
            last_log_id: snapshot.meta.last_log_id,
            last_membership: stored_membership_in(&snapshot.meta.last_membership)?,
        },
        snapshot: snapshot.snapshot,
    })
}

// --- adapters: every call goes to cledger's store ---

/// [`LedgerLogStore`] as a log store of [`SuiteRaft`].
#[derive(Clone)]
struct SuiteLog(LedgerLogStore);

impl RaftLogReader<SuiteRaft> for SuiteLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<EntryOf<SuiteRaft>>> {
        let entries = self.0.try_get_log_entries(range).await?;
        entries.into_iter().map(entry_in).collect()
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<SuiteRaft>>> {
        self.0.read_vote().await?.as_ref().map(vote_in).transpose()
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> io::Result<Vec<EntryOf<SuiteRaft>>> {
        let entries = self.0.limited_get_log_entries(start, end).await?;
        entries.into_iter().map(entry_in).collect()
    }

    async fn get_key_log_ids(
        &mut self,
        range: RangeInclusive<LogIdOf<SuiteRaft>>,
    ) -> io::Result<Vec<LogIdOf<SuiteRaft>>> {
        self.0.get_key_log_ids(range).await
    }
}

impl RaftLogStorage<SuiteRaft> for SuiteLog {
    type LogReader = SuiteLog;

    async fn get_log_state(&mut self) -> io::Result<LogState<SuiteRaft>> {
        let state = self.0.get_log_state().await?;
        Ok(LogState {
            last_purged_log_id: state.last_purged_log_id,
            last_log_id: state.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> SuiteLog {
        SuiteLog(self.0.get_log_reader().await)
    }

    async fn save_vote(&mut self, vote: &VoteOf<SuiteRaft>) -> io::Result<()> {
        self.0.save_vote(&vote_out(vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<SuiteRaft>>) -> io::Result<()> {
        self.0.save_committed(committed).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogIdOf<SuiteRaft>>> {
        self.0.read_committed().await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<SuiteRaft>) -> io::Result<()>
    where
        I: IntoIterator<Item = EntryOf<SuiteRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries
            .into_iter()
            .map(entry_out)
            .collect::<io::Result<Vec<_>>>()?;
        // The store's flush is reported to the suite's callback when it happens.
        let (flushed, done) = LedgerRaft::oneshot();
        self.0.append(entries, IOFlushed::signal(flushed)).await?;
        tokio::spawn(async move {
            let result = done
                .await
                .unwrap_or_else(|_| Err(io::Error::other("the store dropped its callback")));
            callback.io_completed(result);
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<SuiteRaft>>) -> io::Result<()> {
        self.0.truncate_after(last_log_id).await
    }

    async fn purge(&mut self, log_id: LogIdOf<SuiteRaft>) -> io::Result<()> {
        self.0.purge(log_id).await
    }
}

/// [`LedgerStateMachine`] as a state machine of [`SuiteRaft`].
struct SuiteStateMachine(LedgerStateMachine);

/// [`NoSnapshots`] as a snapshot builder of [`SuiteRaft`].
struct SuiteSnapshots(NoSnapshots);

impl RaftSnapshotBuilder<SuiteRaft> for SuiteSnapshots {
    type SnapshotData = ();

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<SuiteRaft, ()>> {
        snapshot_in(self.0.build_snapshot().await?)
    }
}

impl RaftStateMachine<SuiteRaft> for SuiteStateMachine {
    type SnapshotData = ();
    type SnapshotBuilder = SuiteSnapshots;

    async fn applied_state(
        &mut self,
    ) -> io::Result<(Option<LogIdOf<SuiteRaft>>, StoredMembershipOf<SuiteRaft>)> {
        let (applied, membership) = self.0.applied_state().await?;
        Ok((applied, stored_membership_in(&membership)?))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> io::Result<()>
    where
        Strm: futures_util::Stream<Item = io::Result<EntryResponder<SuiteRaft>>>
            + Unpin
            + OptionalSend,
    {
        // Responders cannot be made outside openraft: the store gets none, and the suite's
        // are answered (with `()`, what the store answers) once the store has applied.
        let mut entries = entries;
        let mut translated = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            translated.push(Ok((entry_out(entry)?, None)));
            responders.push(responder);
        }
        self.0.apply(futures_util::stream::iter(translated)).await?;
        for responder in responders.into_iter().flatten() {
            responder.send(());
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<SuiteSnapshots> {
        self.0
            .try_create_snapshot_builder(force)
            .await
            .map(SuiteSnapshots)
    }

    async fn get_snapshot_builder(&mut self) -> SuiteSnapshots {
        SuiteSnapshots(self.0.get_snapshot_builder().await)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<SuiteRaft>,
        snapshot: (),
    ) -> io::Result<()> {
        self.0.install_snapshot(&meta_out(meta)?, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf<SuiteRaft, ()>>> {
        self.0
            .get_current_snapshot()
            .await?
            .map(snapshot_in)
            .transpose()
    }
}

// --- a fresh store per case ---

/// A replica ledger in a temporary directory, closed before the directory goes.
struct Scratch {
    ledger: Arc<Ledger>,
    dir: tempfile::TempDir,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.ledger.close();
    }
}

/// Builds each case's store: an empty replica ledger (as a node that joins a service starts
/// with) and the Raft state beside it, as `Cluster::start` opens them.
struct LedgerStores {
    node_key_pem: String,
    node_cert_pem: String,
    service_key_pem: String,
}

impl LedgerStores {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = NodeFiles::create(dir.path(), Curve::P256, &[]).expect("identity");
        LedgerStores {
            node_key_pem: files.node_key_pem,
            node_cert_pem: files.node_cert_pem,
            service_key_pem: files.service_key_pem,
        }
    }

    fn identity(&self) -> io::Result<NodeIdentity> {
        Ok(NodeIdentity {
            signing_key: EcSigningKey::from_pkcs8_pem(&self.node_key_pem)
                .map_err(|e| io::Error::other(e.to_string()))?,
            cert_pem: self.node_cert_pem.clone(),
            service_key: EcSigningKey::from_pkcs8_pem(&self.service_key_pem)
                .map_err(|e| io::Error::other(e.to_string()))?,
        })
    }

    fn config() -> StoreConfig {
        StoreConfig {
            role: Role::Replica,
            ..StoreConfig::default()
        }
    }

    fn open(&self) -> io::Result<(Scratch, Arc<LogShared>)> {
        let dir = tempfile::tempdir()?;
        let ledger = Ledger::create_replica(dir.path(), Self::config(), self.identity()?, &[7; 32])
            .map_err(|e| io::Error::other(e.to_string()))?;
        let ledger = Arc::new(ledger);
        let shared = LogShared::open(dir.path(), ledger.clone())?;
        Ok((Scratch { ledger, dir }, shared))
    }

    /// Opens `scratch` again, as a restarted node does.
    fn reopen(&self, scratch: &mut Scratch) -> io::Result<Arc<LogShared>> {
        scratch.ledger.close();
        let (ledger, _) = Ledger::open(scratch.dir.path(), Self::config(), self.identity()?)
            .map_err(|e| io::Error::other(e.to_string()))?;
        scratch.ledger = Arc::new(ledger);
        LogShared::open(scratch.dir.path(), scratch.ledger.clone())
    }
}

impl StoreBuilder<SuiteRaft, SuiteLog, SuiteStateMachine, Scratch> for LedgerStores {
    async fn build(
        &self,
    ) -> Result<(Scratch, SuiteLog, SuiteStateMachine), StorageError<SuiteRaft>> {
        let (scratch, shared) = self
            .open()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let log = SuiteLog(LedgerLogStore::new(shared.clone()));
        let sm = SuiteStateMachine(LedgerStateMachine::new(shared));
        Ok((scratch, log, sm))
    }
}

type Cases = Suite<SuiteRaft, SuiteLog, SuiteStateMachine, LedgerStores, Scratch>;

/// Runs one case on a fresh store.
async fn run<F, Fut>(case: F) -> io::Result<()>
where
    F: FnOnce(SuiteLog, SuiteStateMachine) -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let builder = LedgerStores::new();
    let (_scratch, log, sm) = builder
        .build()
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    case(log, sm).await
}

macro_rules! suite_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Err(e) = run(Cases::$case).await {
                    panic!("suite case {} failed: {e}", stringify!($case));
                }
            }
        )*
    };
}

suite_cases!(
    last_membership_in_log_initial,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    leader_bounded_stream,
    entries_stream,
    try_get_log_entry,
    log_reader_reads_new_entries,
    get_log_id,
    purge_logs_upto_0,
    purge_logs_upto_5,
    delete_logs_after_11,
    delete_logs_after_5,
    append_to_log,
);

/// How a case ends: "passed", its error, or its panic message.
async fn outcome<F, Fut>(case: F) -> String
where
    F: FnOnce(SuiteLog, SuiteStateMachine) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    match tokio::spawn(run(case)).await {
        Ok(Ok(())) => "passed".into(),
        Ok(Err(e)) => e.to_string(),
        Err(join) => {
            let panic = join.into_panic();
            match (panic.downcast_ref::<String>(), panic.downcast_ref::<&str>()) {
                (Some(message), _) => message.clone(),
                (None, Some(message)) => (*message).into(),
                (None, None) => "a panic without a message".into(),
            }
        }
    }
}

/// What the failure of a left-out case says, for each reason in the module docs.
const NOT_IN_LOG: &str = "this node's log does not hold it";
const VIRTUAL_ENTRY: &str = "CommittedLeaderId { term: 0 }, index: 0 }";
const NOT_DENSE: &str = "is out of sequence: the next seqno here is 1";
const CUT_TO_EMPTY: &str = "cannot cut the ledger back to empty";
const PAST_THE_END: &str = "purging past its end needs a snapshot";

macro_rules! left_out_cases {
    ($($case:ident => $says:expr),* $(,)?) => {
        #[tokio::test]
        async fn left_out_cases_fail() {
            $(
                let got = outcome(Cases::$case).await;
                assert!(
                    got.contains($says),
                    "left-out suite case {} should fail with {:?}, got: {got}",
                    stringify!($case),
                    $says
                );
            )*
        }
    };
}

left_out_cases!(
    last_membership_in_log => NOT_IN_LOG,
    get_membership_from_empty_log_and_sm => NOT_IN_LOG,
    get_membership_from_log_le_sm_last_applied => NOT_IN_LOG,
    get_membership_from_log_gt_sm_last_applied_1 => NOT_IN_LOG,
    get_membership_from_log_gt_sm_last_applied_2 => NOT_IN_LOG,
    get_initial_state_membership_from_empty_log_and_sm => NOT_IN_LOG,
    get_initial_state_membership_from_sm_inlog_is_smaller => NOT_IN_LOG,
    get_initial_state_membership_from_log_insm_is_smaller => NOT_IN_LOG,
    get_initial_state_with_state => NOT_IN_LOG,
    get_initial_state_last_log_gt_sm => NOT_IN_LOG,
    last_applied_state => NOT_IN_LOG,
    apply_single => NOT_IN_LOG,
    apply_multiple => NOT_IN_LOG,
    snapshot_meta => NOT_IN_LOG,
    snapshot_meta_optional => NOT_IN_LOG,
    get_initial_state_without_init => VIRTUAL_ENTRY,
    initial_logs => "store initialized",
    get_log_state => VIRTUAL_ENTRY,
    last_id_in_log => VIRTUAL_ENTRY,
    get_initial_state_log_ids => VIRTUAL_ENTRY,
    get_initial_state_last_log_lt_sm => NOT_DENSE,
    get_initial_state_inverted_log_order => NOT_DENSE,
    get_initial_state_conflict_at_same_index => NOT_DENSE,
    get_initial_state_re_apply_committed => NOT_DENSE,
    delete_logs_after_0 => CUT_TO_EMPTY,
    delete_logs_after_none => CUT_TO_EMPTY,
    purge_logs_upto_20 => PAST_THE_END,
);

/// `transfer_snapshot` takes the builder, not a store: it applies entries its store never
/// took before it gets to snapshots.
#[tokio::test]
async fn transfer_snapshot_is_left_out() {
    let got = match Cases::transfer_snapshot(&LedgerStores::new()).await {
        Ok(()) => "passed".into(),
        Err(e) => e.to_string(),
    };
    assert!(got.contains(NOT_IN_LOG), "transfer_snapshot: {got}");
}

// --- what left-out cases would check, in a form this store takes ---

fn ledger_log_id(term: u64, index: u64) -> LogIdOf<LedgerRaft> {
    LogIdOf::<LedgerRaft>::new(term.into(), index)
}

fn blank(term: u64, index: u64) -> EntryOf<LedgerRaft> {
    EntryOf::<LedgerRaft> {
        log_id: ledger_log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

/// Appends `entries` and waits until they are durable.
async fn append_durably(log: &mut LedgerLogStore, entries: Vec<EntryOf<LedgerRaft>>) {
    let (flushed, done) = LedgerRaft::oneshot();
    log.append(entries, IOFlushed::signal(flushed))
        .await
        .expect("append");
    done.await.expect("callback").expect("durable");
}

/// Entries the log holds are applied, and the applied membership is the last applied
/// membership entry's, though no signature has committed it in the ledger yet.
#[tokio::test]
async fn applied_membership_is_the_last_applied_entrys() {
    let stores = LedgerStores::new();
    let (_scratch, shared) = stores.open().expect("store");
    let mut log = LedgerLogStore::new(shared.clone());
    let mut sm = LedgerStateMachine::new(shared);
    let membership = Membership::new(
        vec![BTreeSet::from(["a".to_string()])],
        BTreeMap::from([("a".to_string(), empty_peer())]),
    )
    .expect("membership");
    // Entries are not `Clone` (a proposal may hold a client's write): make them twice.
    let entries = || {
        vec![
            blank(1, 1),
            EntryOf::<LedgerRaft> {
                log_id: ledger_log_id(1, 2),
                payload: EntryPayload::Membership(membership.clone()),
            },
            blank(1, 3),
        ]
    };
    append_durably(&mut log, entries()).await;
    let responders = entries().into_iter().map(|entry| Ok((entry, None)));
    sm.apply(futures_util::stream::iter(responders))
        .await
        .expect("apply");
    let (applied, applied_membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(ledger_log_id(1, 3)));
    assert_eq!(
        applied_membership,
        StoredMembershipOf::<LedgerRaft>::new(Some(ledger_log_id(1, 2)), membership)
    );
}

/// The purge watermark is durable: a restarted node reports the same purged log, while its
/// ledger still holds every entry.
#[tokio::test]
async fn purged_log_stays_purged_after_a_restart() {
    let stores = LedgerStores::new();
    let (mut scratch, shared) = stores.open().expect("store");
    let mut log = LedgerLogStore::new(shared);
    append_durably(&mut log, vec![blank(1, 1), blank(1, 2), blank(1, 3)]).await;
    log.purge(ledger_log_id(1, 2)).await.expect("purge");
    drop(log);

    let shared = stores.reopen(&mut scratch).expect("reopen");
    let mut log = LedgerLogStore::new(shared);
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(ledger_log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(ledger_log_id(1, 3)));
    let entries = log.try_get_log_entries(0..).await.expect("entries");
    let ids: Vec<_> = entries.iter().map(|e| e.log_id).collect();
    assert_eq!(ids, vec![ledger_log_id(1, 3)]);
    let kept = scratch.ledger.durable_transactions(1, 3).expect("ledger");
    assert_eq!(kept.len(), 3, "the ledger keeps purged entries");
}
