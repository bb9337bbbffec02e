//! A map-backed `KvSource` and shorthands shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use ledger_js::*;

#[derive(Default)]
pub struct MemKv {
    pub tables: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    pub access: BTreeMap<String, TableAccess>,
    pub fail: bool,
}

impl MemKv {
    pub fn with(table: &str, key: &str, value: &str) -> Self {
        let mut kv = MemKv::default();
        kv.put(table, key, value);
        kv
    }
    pub fn put(&mut self, table: &str, key: &str, value: &str) {
        self.tables
            .entry(table.into())
            .or_default()
            .insert(key.as_bytes().to_vec(), value.as_bytes().to_vec());
    }
}

impl KvSource for MemKv {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if self.fail {
            return Err(KvError("disk on fire".into()));
        }
        Ok(self.tables.get(table).and_then(|t| t.get(key).cloned()))
    }
    fn scan(&self, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        if self.fail {
            return Err(KvError("disk on fire".into()));
        }
        Ok(self
            .tables
            .get(table)
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }
    fn access(&self, table: &str) -> TableAccess {
        self.access
            .get(table)
            .copied()
            .unwrap_or(TableAccess::ReadWrite)
    }
}

pub fn limits_ms(ms: u64) -> Limits {
    Limits {
        max_execution_time: Duration::from_millis(ms),
        ..Limits::default()
    }
}

pub fn run_with(
    code: &str,
    args: &[&str],
    context: serde_json::Value,
    kv: &MemKv,
    limits: &Limits,
) -> Execution<FunctionResult> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_function("f", code, "main", &args, &context, kv, limits)
}

pub fn run(code: &str) -> Execution<FunctionResult> {
    run_with(
        code,
        &[],
        serde_json::json!({}),
        &MemKv::default(),
        &Limits::default(),
    )
}

pub fn ret(code: &str) -> Option<String> {
    let e = run(code);
    e.outcome.expect("execution failed").return_value
}

/// The engine still works after something hostile ran.
pub fn still_fine() {
    assert_eq!(
        ret("export function main() { return 1 + 1; }").as_deref(),
        Some("2")
    );
}
