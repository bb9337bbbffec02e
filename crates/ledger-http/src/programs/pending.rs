//! The application tables as JavaScript sees them: the ledger's committed state plus the
//! writes submitted and not yet committed, and the optimistic concurrency that keeps
//! executions serializable without running them one at a time.
//!
//! An execution runs off the writer, against a view of the tables that may move under it
//! (another execution's writes are submitted meanwhile). It starts from a [`Snapshot`] (the
//! version of the tables then) and records what it read: keys, and whole tables for
//! `forEach`/`size`. Every submission of writes takes the next version and marks the keys and
//! tables it wrote with it. An execution is submitted only if nothing it read was written
//! after its snapshot, checked and submitted under one lock, in the order the writer (or, in a
//! cluster, consensus) sequences them; otherwise it runs again, as CCF retries conflicting
//! transactions. Writes stay visible here until the store reports them committed (then the
//! index has them) or failed (then they never happened, and their keys are marked again so
//! that executions that saw them run again). The marks are kept only as long as an execution
//! that started before them is in flight.

use ledger_core::entry::KvWrite;
use ledger_js::{Entry, KvError, KvSource, TableAccess, WriteSet};
use ledger_store::{AppendError, Completion, LedgerHandle};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Most keys one `forEach`/`size` reads from a table (beyond, the execution fails).
pub const MAX_SCAN_KEYS: usize = 100_000;

/// ACL's ledger-entry tables (`public:` for public ledgers, `private:` for private ones), which
/// JavaScript may read: key = a collection id, value = the contents of its newest committed
/// entry (UTF-8). ACL does not publish the table's encoding; this is cledger's, chosen so the
/// documented `ccf.kv["public:confidentialledger.logs"].get(ccf.strToBuf("subledger:0"))`
/// reads the newest entry of the default collection.
pub const ENTRY_TABLES: [&str; 2] = [
    "public:confidentialledger.logs",
    "private:confidentialledger.logs",
];

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

/// A pending value (`None`: removed) and the version of the submission that wrote it.
type PendingValue = (Option<Vec<u8>>, u64);

/// What an execution read from the tables (not counting its own writes).
#[derive(Debug, Default, Clone)]
pub struct ReadSet {
    keys: BTreeSet<TableKey>,
    /// Tables read whole (`forEach`, `size`).
    tables: BTreeSet<String>,
}

#[derive(Default)]
struct Inner {
    /// The version of the last submission of writes (or of a failed one, see `settle`).
    version: u64,
    /// (table, key) → the pending value and the submission that wrote it.
    writes: BTreeMap<TableKey, PendingValue>,
    /// The version that last wrote each key / each table, while an execution that started
    /// before it is in flight (see `prune`).
    key_versions: BTreeMap<TableKey, u64>,
    table_versions: BTreeMap<String, u64>,
    /// Executions in flight, by the version they started from.
    snapshots: BTreeMap<u64, usize>,
}

impl Inner {
    fn mark(&mut self, version: u64, keys: &[TableKey]) {
        for (table, key) in keys {
            self.key_versions
                .insert((table.clone(), key.clone()), version);
            self.table_versions.insert(table.clone(), version);
        }
    }

    /// Forgets marks no execution in flight can conflict with: those at or before the oldest
    /// snapshot (or all of them when none is in flight).
    fn prune(&mut self) {
        let floor = self
            .snapshots
            .keys()
            .next()
            .copied()
            .unwrap_or(self.version);
        self.key_versions.retain(|_, v| *v > floor);
        self.table_versions.retain(|_, v| *v > floor);
    }

    fn conflicts(&self, since: u64, reads: &ReadSet) -> bool {
        reads
            .keys
            .iter()
            .any(|k| self.key_versions.get(k).is_some_and(|v| *v > since))
            || reads
                .tables
                .iter()
                .any(|t| self.table_versions.get(t).is_some_and(|v| *v > since))
    }
}

#[derive(Default)]
pub struct PendingKv {
    inner: Mutex<Inner>,
}

/// Why a submission did not happen.
pub enum SubmitError {
    /// Something the execution read was written since it started; run it again.
    Conflict,
    Refused(AppendError),
}

/// An execution in flight: the version of the tables it started from. Dropping it lets the
/// marks it might have conflicted with go.
pub struct Snapshot {
    pending: Arc<PendingKv>,
    version: u64,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut inner = self.pending.lock();
        if let Some(n) = inner.snapshots.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                inner.snapshots.remove(&self.version);
            }
        }
        inner.prune();
    }
}

impl PendingKv {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an execution: take this before it reads anything.
    pub fn begin(self: &Arc<Self>) -> Snapshot {
        let mut inner = self.lock();
        let version = inner.version;
        *inner.snapshots.entry(version).or_insert(0) += 1;
        Snapshot {
            pending: self.clone(),
            version,
        }
    }

    /// Submits `request` (which carries `writes`) through `submit` unless something in
    /// `reads` was written after `snapshot`. On success the writes are visible to later
    /// executions at once; `done` is called when the store decides the write, after the
    /// pending writes were settled.
    pub fn submit(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        reads: &ReadSet,
        writes: &[KvWrite],
        submit: impl FnOnce(Completion) -> Result<(), AppendError>,
        done: Completion,
    ) -> Result<(), SubmitError> {
        let mut inner = self.lock();
        if inner.conflicts(snapshot.version, reads) {
            return Err(SubmitError::Conflict);
        }
        let version = inner.version + u64::from(!writes.is_empty());
        let keys: Vec<TableKey> = writes
            .iter()
            .map(|w| (w.table.clone(), w.key.clone()))
            .collect();
        let pending = self.clone();
        let settle_keys = keys.clone();
        let completion: Completion = Box::new(move |result| {
            pending.settle(version, &settle_keys, result.is_ok());
            done(result);
        });
        // Under the lock: the writer sequences submissions in the order versions are taken.
        submit(completion).map_err(SubmitError::Refused)?;
        inner.version = version;
        inner.mark(version, &keys);
        for (key, w) in keys.into_iter().zip(writes) {
            inner.writes.insert(key, (w.value.clone(), version));
        }
        Ok(())
    }

    /// Forgets the writes of submission `version` that no later submission overwrote: now in
    /// the index (`committed`), or never written — then their keys are marked anew, so that
    /// executions that read them run again.
    fn settle(&self, version: u64, keys: &[TableKey], committed: bool) {
        let mut inner = self.lock();
        for key in keys {
            if inner.writes.get(key).is_some_and(|(_, v)| *v == version) {
                inner.writes.remove(key);
            }
        }
        if !committed && !keys.is_empty() {
            inner.version += 1;
            let failed = inner.version;
            inner.mark(failed, keys);
        }
        inner.prune();
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
    if ENTRY_TABLES.contains(&table) {
        TableAccess::ReadOnly
    } else if table.is_empty() || INTERNAL_PREFIXES.iter().any(|p| table.starts_with(p)) {
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
    /// Where the reads are recorded (the entry tables are not: no script writes them).
    pub reads: &'a RefCell<ReadSet>,
}

impl View<'_> {
    /// The newest committed entry's contents of each collection (the entry tables).
    fn newest_entries(&self) -> Result<Vec<Entry>, KvError> {
        let kv = |e: ledger_store::StoreError| KvError(e.to_string());
        let mut all = Vec::new();
        for (collection, _) in self.ledger.collections().map_err(kv)? {
            if let Some(record) = self.ledger.latest_entry(&collection).map_err(kv)? {
                all.push((collection.into_bytes(), record.entry.contents.into_bytes()));
            }
        }
        all.sort();
        Ok(all)
    }
}

impl KvSource for View<'_> {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if ENTRY_TABLES.contains(&table) {
            let Ok(collection) = std::str::from_utf8(key) else {
                return Ok(None);
            };
            return self
                .ledger
                .latest_entry(collection)
                .map(|r| r.map(|r| r.entry.contents.into_bytes()))
                .map_err(|e| KvError(e.to_string()));
        }
        if let Some(v) = self.earlier.0.get(&(table.to_owned(), key.to_vec())) {
            return Ok(v.clone());
        }
        self.reads
            .borrow_mut()
            .keys
            .insert((table.to_owned(), key.to_vec()));
        if let Some(v) = self.pending.get(table, key) {
            return Ok(v);
        }
        self.ledger
            .kv_get(table, key)
            .map_err(|e| KvError(e.to_string()))
    }

    fn scan(&self, table: &str) -> Result<Vec<Entry>, KvError> {
        if ENTRY_TABLES.contains(&table) {
            return self.newest_entries();
        }
        self.reads.borrow_mut().tables.insert(table.to_owned());
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

    fn read(keys: &[&[u8]], tables: &[&str]) -> ReadSet {
        ReadSet {
            keys: keys
                .iter()
                .map(|k| ("public:t".to_owned(), k.to_vec()))
                .collect(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
        }
    }

    type Held = Arc<Mutex<Vec<Completion>>>;

    fn hold(held: &Held) -> impl FnOnce(Completion) -> Result<(), AppendError> {
        let held = held.clone();
        move |c: Completion| {
            held.lock().unwrap().push(c);
            Ok(())
        }
    }

    #[test]
    fn only_reads_of_what_was_written_since_the_snapshot_conflict() {
        let pending = Arc::new(PendingKv::default());
        let held: Held = Default::default();
        let first = pending.begin();
        let second = pending.begin();
        let third = pending.begin();
        let none = || -> Completion { Box::new(|_| {}) };
        assert!(
            pending
                .submit(
                    &first,
                    &read(&[b"a"], &[]),
                    &[write(b"a", b"1")],
                    hold(&held),
                    none()
                )
                .is_ok()
        );
        assert_eq!(pending.get("public:t", b"a"), Some(Some(b"1".to_vec())));
        // Read "a" before it was written: conflict. Read only "b": no conflict.
        assert!(matches!(
            pending.submit(
                &second,
                &read(&[b"a"], &[]),
                &[write(b"b", b"2")],
                hold(&held),
                none()
            ),
            Err(SubmitError::Conflict)
        ));
        assert!(
            pending
                .submit(
                    &second,
                    &read(&[b"b"], &[]),
                    &[write(b"b", b"2")],
                    hold(&held),
                    none()
                )
                .is_ok()
        );
        // A whole-table read conflicts with any write to the table; a blind write never does.
        assert!(matches!(
            pending.submit(&third, &read(&[], &["public:t"]), &[], hold(&held), none()),
            Err(SubmitError::Conflict)
        ));
        assert!(
            pending
                .submit(
                    &third,
                    &ReadSet::default(),
                    &[write(b"a", b"3")],
                    hold(&held),
                    none()
                )
                .is_ok()
        );
        // Started after those writes: nothing to conflict with.
        let later = pending.begin();
        assert!(
            pending
                .submit(
                    &later,
                    &read(&[b"a", b"b"], &["public:t"]),
                    &[],
                    hold(&held),
                    none()
                )
                .is_ok()
        );
        drop(later);

        // The first write commits: the third's pending value of "a" stays.
        let completions: Vec<Completion> = std::mem::take(&mut *held.lock().unwrap());
        let mut completions = completions.into_iter();
        completions.next().unwrap()(Ok(ledger_core::TxId::new(1, 5).unwrap()));
        assert_eq!(pending.get("public:t", b"a"), Some(Some(b"3".to_vec())));
        // The second ("b") fails: gone, and whoever read "b" before now runs again.
        let reader = pending.begin();
        completions.next().unwrap()(Err(AppendError::Busy));
        assert_eq!(pending.get("public:t", b"b"), None);
        assert!(matches!(
            pending.submit(&reader, &read(&[b"b"], &[]), &[], hold(&held), none()),
            Err(SubmitError::Conflict)
        ));
        // With no execution in flight, no marks are kept.
        drop((first, second, third, reader));
        let inner = pending.lock();
        assert!(inner.key_versions.is_empty() && inner.table_versions.is_empty());
        assert!(inner.snapshots.is_empty());
    }

    #[test]
    fn internal_tables_are_out_of_reach() {
        for t in [
            "public:cledger.users",
            "public:ccf.gov.nodes.info",
            "public:confidentialledger.roles.user_roles_mapping",
            "",
        ] {
            assert_eq!(table_access(t, true), TableAccess::Denied, "{t}");
        }
        for t in ENTRY_TABLES {
            assert_eq!(table_access(t, true), TableAccess::ReadOnly, "{t}");
        }
        assert_eq!(table_access("public:mytable", true), TableAccess::ReadWrite);
        assert_eq!(table_access("user_accounts", false), TableAccess::ReadOnly);
    }
}
