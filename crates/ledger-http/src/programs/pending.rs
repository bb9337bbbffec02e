//! The application tables as JavaScript sees them: the ledger's committed state plus the
//! writes submitted and not yet committed, and the optimistic concurrency that keeps
//! executions serializable without running them one at a time.
//!
//! An execution runs off the writer, against a view of the tables that may move under it
//! (another execution's writes are submitted meanwhile). Every submission of writes bumps a
//! version; an execution that read the tables is submitted only if the version is still the
//! one it started from, checked and submitted under one lock, in the order the writer
//! sequences them. Otherwise it runs again (CCF retries conflicting transactions the same way).
//! An execution that read nothing cannot conflict. Writes stay visible here until the store
//! reports them committed (then the index has them) or failed (then they never happened, and
//! the version moves so that executions that saw them run again).

use ledger_core::entry::KvWrite;
use ledger_js::{Entry, KvError, KvSource, TableAccess, WriteSet};
use ledger_store::{AppendError, Completion, LedgerHandle};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Most keys one `forEach`/`size` reads from a table (beyond, the execution fails).
pub const MAX_SCAN_KEYS: usize = 100_000;

/// Table names JavaScript may not touch: the ledger's own state (users, roles, functions,
/// secrets), and CCF's and ACL's internal tables, which cledger does not emulate.
const INTERNAL_PREFIXES: [&str; 5] = [
    "public:cledger.",
    "public:ccf.",
    "ccf.",
    "public:confidentialledger.",
    "private:confidentialledger.",
];

/// A table and a key in it.
type TableKey = (String, Vec<u8>);

/// A pending value (`None`: removed) and the submission that wrote it.
type PendingValue = (Option<Vec<u8>>, u64);

#[derive(Default)]
struct Inner {
    /// Bumped by every submission of writes and every failed one.
    version: u64,
    next_ticket: u64,
    /// (table, key) → the pending value (`None`: removed) and the submission that wrote it.
    writes: BTreeMap<TableKey, PendingValue>,
}

#[derive(Default)]
pub struct PendingKv {
    inner: Mutex<Inner>,
}

/// Why a submission did not happen.
pub enum SubmitError {
    /// The tables changed since the execution started; run it again.
    Conflict,
    Refused(AppendError),
}

impl PendingKv {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The version an execution starts from.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Submits `request` (which carries `writes`) through `submit` unless the execution read
    /// the tables (`read`) and they changed since `seen`. On success the writes are visible
    /// to later executions at once; `done` is called when the store decides the write, after
    /// the pending writes were settled.
    pub fn submit(
        self: &Arc<Self>,
        seen: u64,
        read: bool,
        writes: &[KvWrite],
        submit: impl FnOnce(Completion) -> Result<(), AppendError>,
        done: Completion,
    ) -> Result<(), SubmitError> {
        let mut inner = self.lock();
        if read && inner.version != seen {
            return Err(SubmitError::Conflict);
        }
        inner.next_ticket += 1;
        let ticket = inner.next_ticket;
        let keys: Vec<TableKey> = writes
            .iter()
            .map(|w| (w.table.clone(), w.key.clone()))
            .collect();
        let pending = self.clone();
        let settle_keys = keys.clone();
        let completion: Completion = Box::new(move |result| {
            pending.settle(ticket, &settle_keys, result.is_ok());
            done(result);
        });
        // Under the lock: the writer sequences submissions in the order versions are taken.
        submit(completion).map_err(SubmitError::Refused)?;
        if !writes.is_empty() {
            inner.version += 1;
        }
        for (key, w) in keys.into_iter().zip(writes) {
            inner.writes.insert(key, (w.value.clone(), ticket));
        }
        Ok(())
    }

    /// Forgets the writes of submission `ticket` that no later submission overwrote: now in
    /// the index (`committed`), or never written.
    fn settle(&self, ticket: u64, keys: &[TableKey], committed: bool) {
        let mut inner = self.lock();
        for key in keys {
            if inner.writes.get(key).is_some_and(|(_, t)| *t == ticket) {
                inner.writes.remove(key);
            }
        }
        if !committed {
            inner.version += 1;
        }
    }

    fn get(&self, table: &str, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.lock()
            .writes
            .get(&(table.to_owned(), key.to_vec()))
            .map(|(v, _)| v.clone())
    }

    fn table(&self, table: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let inner = self.lock();
        inner
            .writes
            .range((table.to_owned(), Vec::new())..)
            .take_while(|((t, _), _)| t == table)
            .map(|((_, k), (v, _))| (k.clone(), v.clone()))
            .collect()
    }
}

/// Whether JavaScript may use `table`, and how.
pub fn table_access(table: &str, writable: bool) -> TableAccess {
    if table.is_empty() || INTERNAL_PREFIXES.iter().any(|p| table.starts_with(p)) {
        TableAccess::Denied
    } else if writable {
        TableAccess::ReadWrite
    } else {
        TableAccess::ReadOnly
    }
}

/// What one execution reads: committed state under the pending writes.
pub struct View<'a> {
    pub ledger: &'a dyn LedgerHandle,
    pub pending: &'a PendingKv,
    /// Writes of earlier hooks of the same request, on top of everything else.
    pub earlier: &'a WriteSet,
    pub writable: bool,
}

impl KvSource for View<'_> {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(v) = self.earlier.0.get(&(table.to_owned(), key.to_vec())) {
            return Ok(v.clone());
        }
        if let Some(v) = self.pending.get(table, key) {
            return Ok(v);
        }
        self.ledger
            .kv_get(table, key)
            .map_err(|e| KvError(e.to_string()))
    }

    fn scan(&self, table: &str) -> Result<Vec<Entry>, KvError> {
        let committed = self
            .ledger
            .kv_scan(table, None, MAX_SCAN_KEYS + 1)
            .map_err(|e| KvError(e.to_string()))?;
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            committed.into_iter().map(|(k, v)| (k, Some(v))).collect();
        merged.extend(self.pending.table(table));
        merged.extend(
            self.earlier
                .0
                .range((table.to_owned(), Vec::new())..)
                .take_while(|((t, _), _)| t == table)
                .map(|((_, k), v)| (k.clone(), v.clone())),
        );
        let all: Vec<Entry> = merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        if all.len() > MAX_SCAN_KEYS {
            return Err(KvError(format!(
                "table {table} has more than {MAX_SCAN_KEYS} keys, too many to iterate in one execution"
            )));
        }
        Ok(all)
    }

    fn access(&self, table: &str) -> TableAccess {
        table_access(table, self.writable)
    }
}

/// A write set as the store's write list: sorted by (table, key), as both are.
pub fn kv_writes(writes: &WriteSet) -> Vec<KvWrite> {
    writes
        .0
        .iter()
        .map(|((table, key), value)| KvWrite {
            table: table.clone(),
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &[u8], value: &[u8]) -> KvWrite {
        KvWrite {
            table: "public:t".into(),
            key: key.to_vec(),
            value: Some(value.to_vec()),
        }
    }

    #[test]
    fn a_reader_conflicts_with_a_submission_after_it_started_and_a_blind_writer_does_not() {
        let pending = Arc::new(PendingKv::default());
        let seen = pending.version();
        let held: Arc<Mutex<Vec<Completion>>> = Default::default();
        let hold = |held: &Arc<Mutex<Vec<Completion>>>| {
            let held = held.clone();
            move |c: Completion| {
                held.lock().unwrap().push(c);
                Ok(())
            }
        };
        assert!(
            pending
                .submit(
                    seen,
                    true,
                    &[write(b"a", b"1")],
                    hold(&held),
                    Box::new(|_| {})
                )
                .is_ok()
        );
        assert_eq!(pending.get("public:t", b"a"), Some(Some(b"1".to_vec())));
        assert!(matches!(
            pending.submit(
                seen,
                true,
                &[write(b"b", b"2")],
                hold(&held),
                Box::new(|_| {})
            ),
            Err(SubmitError::Conflict)
        ));
        assert!(
            pending
                .submit(
                    seen,
                    false,
                    &[write(b"a", b"3")],
                    hold(&held),
                    Box::new(|_| {})
                )
                .is_ok()
        );
        // The first write commits: the second one's pending value of "a" stays.
        let first = held.lock().unwrap().remove(0);
        first(Ok(ledger_core::TxId::new(1, 5).unwrap()));
        assert_eq!(pending.get("public:t", b"a"), Some(Some(b"3".to_vec())));
        // The second fails: gone, and the version moves on for those who saw it.
        let version = pending.version();
        let second = held.lock().unwrap().remove(0);
        second(Err(AppendError::Busy));
        assert_eq!(pending.get("public:t", b"a"), None);
        assert!(pending.version() > version);
    }

    #[test]
    fn internal_tables_are_out_of_reach() {
        for t in [
            "public:cledger.users",
            "public:ccf.gov.nodes.info",
            "public:confidentialledger.logs",
            "",
        ] {
            assert_eq!(table_access(t, true), TableAccess::Denied, "{t}");
        }
        assert_eq!(table_access("public:mytable", true), TableAccess::ReadWrite);
        assert_eq!(table_access("user_accounts", false), TableAccess::ReadOnly);
    }
}
