//! openraft's log storage over the ledger: the ledger *is* the Raft log.
//!
//! `append` turns each entry into a ledger transaction at its log id ([`ledger_op`]) and hands
//! the batch to the store's writer (`Ledger::replicate`), which encodes the leader's own
//! proposals, checks a leader's bytes on a follower, and makes them durable with one fsync per
//! group of appends; openraft's callback fires after that fsync. Reads come back as Raft
//! entries ([`entry_of`]) of the bytes the ledger wrote (the leader replicates what it
//! stored, byte for byte): from the writer's in-memory tail as soon as the batch is written,
//! before its fsync, so that the followers' fsyncs overlap the leader's (as in CCF; the leader
//! counts towards a majority only once its callback fires); a follower too far behind for the
//! tail is sent entries read from the segments once they are durable.
//! `truncate_after` cuts an uncommitted suffix (`Ledger::truncate_after`).
//!
//! `purge` keeps every byte (receipts of any transaction need the whole ledger): it only moves
//! a watermark, `raft/purged.json`, below which the Raft log reports no entries, as openraft's
//! contract requires. openraft never purges here (no snapshot is ever built, see
//! [`crate::state_machine`]); the watermark keeps the contract if it ever does.
//!
//! The vote is kept in `raft/vote.json` in the data directory. Both files are replaced
//! atomically and fsync'd before openraft is told they are saved.

use crate::types::{
    Entry, LedgerRaft, LogId, Vote, entry_of, ledger_op, log_id_of, txid_of, zero_log_id,
};
use ledger_core::TxId;
use ledger_store::{AppendError, Ledger, TxStatus};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long a read waits for entries that were appended to become durable.
const DURABLE_WAIT: Duration = Duration::from_secs(30);

/// What the log store, its readers and the state machine share.
pub struct LogShared {
    pub ledger: Arc<Ledger>,
    /// The newest durable seqno (0: none), moved by append callbacks and truncations.
    durable: watch::Sender<u64>,
    /// The newest written seqno (0: none): durable, or written and in the ledger's tail.
    written: watch::Sender<u64>,
    /// Why the ledger refused an append, once it has: consensus stops on it (a storage error
    /// is fatal to openraft), so nothing waited for becomes written or durable any more.
    refused: watch::Sender<Option<String>>,
    /// The newest committed seqno (0: none), moved by the state machine; writers wait on it.
    pub(crate) committed: watch::Sender<u64>,
    /// The newest seqno handed to the writer (0: none).
    appended: Mutex<u64>,
    vote_path: PathBuf,
    vote: Mutex<Option<Vote>>,
    purged_path: PathBuf,
    /// The last log id openraft purged: entries through it are no longer part of the Raft
    /// log, though the ledger keeps them.
    purged: Mutex<Option<LogId>>,
}

/// Reads the JSON value `path` holds, if the file exists.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `value` durably (write, fsync, rename, fsync the directory): a crash
/// leaves the old value or the new one, never a torn file.
fn write_json_durably<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl LogShared {
    /// Opens the Raft state of the replica ledger `ledger` in `dir`.
    pub fn open(dir: &Path, ledger: Arc<Ledger>) -> io::Result<Arc<LogShared>> {
        let raft_dir = dir.join("raft");
        std::fs::create_dir_all(&raft_dir)?;
        let vote_path = raft_dir.join("vote.json");
        let vote = read_json(&vote_path)?;
        let purged_path = raft_dir.join("purged.json");
        let purged = read_json(&purged_path)?;
        let durable = ledger.durable().map_or(0, TxId::seqno);
        let committed = ledger.committed().map_or(0, TxId::seqno);
        Ok(Arc::new(LogShared {
            committed: watch::Sender::new(committed),
            ledger,
            durable: watch::Sender::new(durable),
            written: watch::Sender::new(durable),
            refused: watch::Sender::new(None),
            appended: Mutex::new(durable),
            vote_path,
            vote: Mutex::new(vote),
            purged_path,
            purged: Mutex::new(purged),
        }))
    }

    /// Takes the ledger's durable end as the log's, after transactions were appended to the
    /// ledger directly (founding) rather than through [`RaftLogStorage::append`]: reads up to
    /// it must neither come back empty nor wait for an append that never comes.
    pub(crate) fn adopt_ledger_end(&self) {
        let durable = self.ledger.durable().map_or(0, TxId::seqno);
        self.rewind_to(durable);
    }

    /// What was appended, written and durable all end at the durable seqno `durable` (after a
    /// founding, a truncation, or a refused append).
    fn rewind_to(&self, durable: u64) {
        *self.appended.lock().expect("appended lock") = durable;
        self.written.send_replace(durable);
        self.durable.send_replace(durable);
    }

    /// Watches the ledger's committed seqno.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// The newest durable seqno.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Waits until seqno `seqno` is durable here.
    pub async fn wait_durable(&self, seqno: u64) -> io::Result<()> {
        self.wait_until(&self.durable, seqno, "durable").await
    }

    /// Waits until seqno `seqno` is written here (durable, or in the ledger's tail).
    async fn wait_written(&self, seqno: u64) -> io::Result<()> {
        self.wait_until(&self.written, seqno, "written").await
    }

    /// Waits until `end` reaches `seqno`; fails at once if the ledger refused an append (it
    /// never will), or after [`DURABLE_WAIT`].
    async fn wait_until(&self, end: &watch::Sender<u64>, seqno: u64, what: &str) -> io::Result<()> {
        let mut reached = end.subscribe();
        let mut refused = self.refused.subscribe();
        let waited = tokio::time::timeout(DURABLE_WAIT, async {
            // Whether `end` got there is read below; this only says why waiting stopped.
            tokio::select! {
                _ = reached.wait_for(|d| *d >= seqno) => None,
                r = refused.wait_for(Option::is_some) => r.ok().and_then(|r| r.clone()),
            }
        })
        .await;
        let (kind, reason) = match waited {
            Ok(None) if *end.borrow() >= seqno => return Ok(()),
            Ok(Some(refusal)) => (
                io::ErrorKind::Other,
                format!("the ledger refused an append: {refusal}"),
            ),
            _ => (
                io::ErrorKind::TimedOut,
                self.ledger
                    .failure()
                    .unwrap_or_else(|| "the writer is behind".into()),
            ),
        };
        Err(io::Error::new(
            kind,
            format!("seqno {seqno} was not {what}: {reason}"),
        ))
    }

    /// Saves `vote` durably.
    pub fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        write_json_durably(&self.vote_path, vote)?;
        *self.vote.lock().expect("vote lock") = Some(vote.clone());
        Ok(())
    }

    pub fn vote(&self) -> Option<Vote> {
        self.vote.lock().expect("vote lock").clone()
    }

    /// The newest seqno handed to the writer (0: none).
    pub fn appended(&self) -> u64 {
        *self.appended.lock().expect("appended lock")
    }

    /// The last purged log id.
    pub fn purged(&self) -> Option<LogId> {
        *self.purged.lock().expect("purged lock")
    }

    /// A refused append wrote nothing durable, and the ones queued behind it are refused too
    /// (they do not follow what is durable): readers must not wait for any of them, nor for
    /// anything else (consensus stops on the refusal).
    fn refuse_appends(&self, why: &impl std::fmt::Display) {
        self.refused.send_replace(Some(why.to_string()));
        self.rewind_to(self.ledger.durable().map_or(0, TxId::seqno));
    }

    /// Purges the Raft log through `log_id`, an entry it holds. openraft purges past the end of
    /// its log only after installing a snapshot, which would leave a gap of seqnos the ledger
    /// cannot have: cledger nodes exchange no snapshots (the ledger is the log), so that is
    /// refused.
    fn purge(&self, log_id: LogId) -> io::Result<()> {
        let durable = self.ledger.durable().map_or(0, TxId::seqno);
        if log_id.index > durable {
            return Err(io::Error::other(format!(
                "cannot purge the Raft log through {log_id}: it ends at seqno {durable}, and purging past its end needs a snapshot, which cledger nodes never install"
            )));
        }
        if !self.holds(&log_id)? {
            return Err(io::Error::other(format!(
                "cannot purge the Raft log through {log_id}: this log holds another entry at index {}",
                log_id.index
            )));
        }
        self.save_purged(log_id)
    }

    /// Moves the purge watermark to `log_id` durably; an older one leaves it where it is.
    fn save_purged(&self, log_id: LogId) -> io::Result<()> {
        if self.purged().is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        write_json_durably(&self.purged_path, &log_id)?;
        *self.purged.lock().expect("purged lock") = Some(log_id);
        Ok(())
    }

    /// Whether the Raft log holds `log_id`: the virtual entry, or the ledger's durable
    /// transaction at its seqno is of its view.
    pub fn holds(&self, log_id: &LogId) -> io::Result<bool> {
        let Some(txid) = txid_of(log_id) else {
            return Ok(*log_id == zero_log_id());
        };
        let status = self.ledger.try_status(txid).map_err(store_error)?;
        Ok(matches!(status, TxStatus::Pending | TxStatus::Committed))
    }
}

fn store_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Runs blocking ledger work off the async runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("ledger task failed: {e}")))?
}

/// The log storage handed to openraft.
#[derive(Clone)]
pub struct LedgerLogStore {
    shared: Arc<LogShared>,
}

impl LedgerLogStore {
    pub fn new(shared: Arc<LogShared>) -> Self {
        LedgerLogStore { shared }
    }
}

impl RaftLogReader<LedgerRaft> for LedgerLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        // Purged entries are no longer part of the Raft log, though the ledger keeps them.
        let start = start.max(self.shared.purged().map_or(0, |p| p.index + 1));
        let appended = self.shared.appended();
        let last = match range.end_bound() {
            Bound::Included(e) => *e,
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(e) => e - 1,
            Bound::Unbounded => appended,
        }
        .min(appended);
        let mut entries = Vec::new();
        if start == 0 {
            entries.push(Entry {
                log_id: zero_log_id(),
                payload: openraft::EntryPayload::Blank,
            });
        }
        let first = start.max(1);
        if first > last {
            return Ok(entries);
        }
        self.shared.wait_written(last).await?;
        let txs = match self.shared.ledger.written_transactions(first, last) {
            Some(txs) => txs,
            None => {
                self.shared.wait_durable(last).await?;
                let ledger = self.shared.ledger.clone();
                blocking(move || {
                    ledger
                        .durable_transactions(first, last)
                        .map_err(store_error)
                })
                .await?
            }
        };
        for (txid, bytes) in txs {
            entries.push(entry_of(txid, bytes).map_err(store_error)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.vote())
    }
}

impl RaftLogStorage<LedgerRaft> for LedgerLogStore {
    type LogReader = LedgerLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<LedgerRaft>, io::Error> {
        let purged = self.shared.purged();
        let last = self.shared.ledger.durable().map(log_id_of);
        Ok(LogState {
            last_purged_log_id: purged,
            // Purging never passes the end of the log (see `purge`), so the watermark is the
            // last log id only when it is the virtual entry's.
            last_log_id: last.or(purged).or(Some(zero_log_id())),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let shared = self.shared.clone();
        let vote = vote.clone();
        blocking(move || shared.save_vote(&vote)).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<LedgerRaft>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id.index);
            if entry.log_id.index == 0 {
                // The virtual entry: every node has it, nobody stores it.
                continue;
            }
            ops.push(ledger_op(entry).map_err(store_error)?);
        }
        let Some(last) = last else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        if ops.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        *self.shared.appended.lock().expect("appended lock") = last;
        let shared = self.shared.clone();
        let on_written = self.shared.clone();
        let submitted = self
            .shared
            .ledger
            .replicate(
                ops,
                Some(Box::new(move |written: TxId| {
                    on_written.written.send_replace(written.seqno());
                })),
                Box::new(
                    move |result: Result<Option<TxId>, AppendError>| match result {
                        Ok(durable) => {
                            let durable = durable.map_or(0, TxId::seqno);
                            shared.written.send_if_modified(|w| {
                                let behind = *w < durable;
                                *w = (*w).max(durable);
                                behind
                            });
                            shared.durable.send_replace(durable);
                            callback.io_completed(Ok(()));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the ledger refused a Raft append");
                            shared.refuse_appends(&e);
                            callback.io_completed(Err(store_error(e)));
                        }
                    },
                ),
            )
            .map_err(store_error);
        if let Err(e) = &submitted {
            self.shared.refuse_appends(e);
        }
        submitted
    }

    /// Cuts the entries after `last_log_id`, never the virtual entry: every node has it, so no
    /// leader disagrees with it (`None` is taken as the virtual entry).
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let seqno = last_log_id.map_or(0, |l| l.index);
        if seqno == 0 && self.shared.appended() > 0 {
            // The ledger's writer cannot rewind to no transaction at all (it would poison
            // itself trying). Raft never asks: seqno 1 of a service's ledger is its genesis,
            // committed before any other node joins.
            return Err(io::Error::other(
                "cannot cut the ledger back to empty: seqno 1 is the service's genesis",
            ));
        }
        if let Some(purged) = self.shared.purged().filter(|p| p.index > seqno) {
            return Err(io::Error::other(format!(
                "cannot cut the Raft log after seqno {seqno}: it is purged through {purged}, and purged entries are committed"
            )));
        }
        let ledger = self.shared.ledger.clone();
        let durable = blocking(move || ledger.truncate_after(seqno).map_err(store_error)).await?;
        self.shared.rewind_to(durable.map_or(0, TxId::seqno));
        tracing::warn!(
            after = seqno,
            "truncated an uncommitted suffix of the ledger"
        );
        Ok(())
    }

    /// Moves the purge watermark; the ledger keeps every byte (receipts of any transaction
    /// need it).
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let shared = self.shared.clone();
        blocking(move || shared.purge(log_id)).await
    }
}
