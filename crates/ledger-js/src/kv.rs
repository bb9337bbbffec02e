//! The key-value tables a script sees through `ccf.kv`.
//!
//! Owns the caller-facing contract ([`KvSource`], [`TableAccess`], [`WriteSet`]) and the
//! engine-side view: the caller's snapshot overlaid with the execution's own writes
//! (read-your-writes), the access checks and the bound on the write set.
//!
//! The snapshot is reached through [`KvClient`], which asks the calling thread over a
//! channel: QuickJS host functions must be `'static`, so they cannot borrow the caller's
//! `&dyn KvSource`, and the engine runs on its own thread (see [`crate::engine`]). The
//! source is therefore only ever called on the caller's thread and need not be `Send`.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, Sender};

use crate::error::KvError;
use crate::limits::{MAX_WRITE_BYTES, MAX_WRITE_KEYS};

/// One (key, value) pair of a table.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Application key-value tables as the execution sees them (a consistent snapshot chosen
/// by the caller).
pub trait KvSource {
    /// The value of `key` in `table`, if any.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Every (key, value) of a table, keys in ascending byte order.
    fn scan(&self, table: &str) -> Result<Vec<Entry>, KvError>;
    /// Whether a script may read / write this table (the caller's policy).
    fn access(&self, table: &str) -> TableAccess;
}

/// What a script may do with a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableAccess {
    /// Read and write.
    ReadWrite,
    /// Read only: `set`, `delete` and `clear` throw.
    ReadOnly,
    /// Any use of the table throws.
    Denied,
}

/// What an execution wrote: (table, key) → `Some(value)` or `None` (deleted). Sorted,
/// one entry per key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSet(pub BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>);

impl WriteSet {
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A request from the engine thread to the caller's thread.
pub(crate) enum KvRequest {
    Get(String, Vec<u8>),
    Scan(String),
    Access(String),
}

/// The caller's answer to a [`KvRequest`].
pub(crate) enum KvReply {
    Value(Result<Option<Vec<u8>>, KvError>),
    Entries(Result<Vec<Entry>, KvError>),
    Access(TableAccess),
}

/// Answers one request from the source; runs on the caller's thread.
pub(crate) fn serve(kv: &dyn KvSource, request: KvRequest) -> KvReply {
    match request {
        KvRequest::Get(table, key) => KvReply::Value(kv.get(&table, &key)),
        KvRequest::Scan(table) => KvReply::Entries(kv.scan(&table)),
        KvRequest::Access(table) => KvReply::Access(kv.access(&table)),
    }
}

/// The engine thread's handle on the caller's [`KvSource`].
pub(crate) struct KvClient {
    pub requests: Sender<KvRequest>,
    pub replies: Receiver<KvReply>,
}

impl KvClient {
    fn ask(&self, request: KvRequest) -> Option<KvReply> {
        self.requests.send(request).ok()?;
        self.replies.recv().ok()
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        match self.ask(KvRequest::Get(table.to_owned(), key.to_owned())) {
            Some(KvReply::Value(v)) => v,
            _ => Err(KvError("the key-value source is gone".into())),
        }
    }

    fn scan(&self, table: &str) -> Result<Vec<Entry>, KvError> {
        match self.ask(KvRequest::Scan(table.to_owned())) {
            Some(KvReply::Entries(v)) => v,
            _ => Err(KvError("the key-value source is gone".into())),
        }
    }

    fn access(&self, table: &str) -> TableAccess {
        match self.ask(KvRequest::Access(table.to_owned())) {
            Some(KvReply::Access(a)) => a,
            _ => TableAccess::Denied,
        }
    }
}

/// Why a `ccf.kv` operation failed; becomes a thrown JavaScript error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KvFault {
    /// The source failed.
    Source(KvError),
    /// The table's policy forbids this.
    Access { table: String, write: bool },
    /// The write set would pass its bound.
    TooLarge,
}

impl KvFault {
    pub fn message(&self) -> String {
        match self {
            KvFault::Source(e) => e.to_string(),
            KvFault::Access { table, write } => format!(
                "access denied: this script may not {} table '{table}'",
                if *write { "write" } else { "read" }
            ),
            KvFault::TooLarge => format!(
                "write set too large (at most {MAX_WRITE_KEYS} keys and {MAX_WRITE_BYTES} bytes of keys and values)"
            ),
        }
    }
}

/// The snapshot overlaid with this execution's writes.
pub(crate) struct KvView {
    client: KvClient,
    access: HashMap<String, TableAccess>,
    writes: WriteSet,
    write_bytes: usize,
    /// Whether any read reached the source.
    pub read_tables: bool,
    /// The first source failure; it fails the execution even if the script caught it.
    pub source_failure: Option<KvError>,
    /// The last fault raised, to name an uncaught one precisely.
    pub last_fault: Option<KvFault>,
}

impl KvView {
    pub fn new(client: KvClient) -> Self {
        KvView {
            client,
            access: HashMap::new(),
            writes: WriteSet::default(),
            write_bytes: 0,
            read_tables: false,
            source_failure: None,
            last_fault: None,
        }
    }

    pub fn into_writes(self) -> WriteSet {
        self.writes
    }

    fn fault<T>(&mut self, fault: KvFault) -> Result<T, KvFault> {
        if let KvFault::Source(e) = &fault {
            self.source_failure.get_or_insert_with(|| e.clone());
        }
        self.last_fault = Some(fault.clone());
        Err(fault)
    }

    fn check(&mut self, table: &str, write: bool) -> Result<(), KvFault> {
        let access = match self.access.get(table) {
            Some(a) => *a,
            None => {
                let a = self.client.access(table);
                self.access.insert(table.to_owned(), a);
                a
            }
        };
        let allowed = match access {
            TableAccess::ReadWrite => true,
            TableAccess::ReadOnly => !write,
            TableAccess::Denied => false,
        };
        if allowed {
            Ok(())
        } else {
            self.fault(KvFault::Access {
                table: table.to_owned(),
                write,
            })
        }
    }

    pub fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvFault> {
        self.check(table, false)?;
        if let Some(v) = self.writes.0.get(&(table.to_owned(), key.to_vec())) {
            return Ok(v.clone());
        }
        self.read_tables = true;
        match self.client.get(table, key) {
            Ok(v) => Ok(v),
            Err(e) => self.fault(KvFault::Source(e)),
        }
    }

    /// The merged contents of a table, keys ascending.
    pub fn entries(&mut self, table: &str) -> Result<Vec<Entry>, KvFault> {
        self.check(table, false)?;
        self.read_tables = true;
        let base = match self.client.scan(table) {
            Ok(v) => v,
            Err(e) => return self.fault(KvFault::Source(e)),
        };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
        for ((t, k), v) in &self.writes.0 {
            if t == table {
                match v {
                    Some(v) => merged.insert(k.clone(), v.clone()),
                    None => merged.remove(k),
                };
            }
        }
        Ok(merged.into_iter().collect())
    }

    fn record(&mut self, table: &str, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), KvFault> {
        let entry = (table.to_owned(), key);
        let new_bytes = entry.0.len() + entry.1.len() + value.as_ref().map_or(0, Vec::len);
        let old_bytes = self
            .writes
            .0
            .get(&entry)
            .map(|old| entry.0.len() + entry.1.len() + old.as_ref().map_or(0, Vec::len));
        let keys = self.writes.0.len() + usize::from(old_bytes.is_none());
        let bytes = self.write_bytes - old_bytes.unwrap_or(0) + new_bytes;
        if keys > MAX_WRITE_KEYS || bytes > MAX_WRITE_BYTES {
            return self.fault(KvFault::TooLarge);
        }
        self.write_bytes = bytes;
        self.writes.0.insert(entry, value);
        Ok(())
    }

    pub fn set(&mut self, table: &str, key: Vec<u8>, value: Vec<u8>) -> Result<(), KvFault> {
        self.check(table, true)?;
        self.record(table, key, Some(value))
    }

    /// Deletes a key; whether it existed (in the snapshot or this execution's writes).
    pub fn delete(&mut self, table: &str, key: Vec<u8>) -> Result<bool, KvFault> {
        self.check(table, true)?;
        let existed = self.get(table, &key)?.is_some();
        self.record(table, key, None)?;
        Ok(existed)
    }

    pub fn clear(&mut self, table: &str) -> Result<(), KvFault> {
        self.check(table, true)?;
        for (key, _) in self.entries(table)? {
            self.record(table, key, None)?;
        }
        Ok(())
    }
}
