//! The cost of one execution: a fresh QuickJS runtime and context, the prelude (CCF's globals),
//! compiling the function and calling it. `cargo bench -p ledger-js`.

use criterion::{Criterion, criterion_group, criterion_main};
use ledger_js::{Entry, KvError, KvSource, Limits, TableAccess, run_function};

/// Tables with nothing in them.
struct Empty;

impl KvSource for Empty {
    fn get(&self, _: &str, _: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(None)
    }
    fn scan(&self, _: &str) -> Result<Vec<Entry>, KvError> {
        Ok(Vec::new())
    }
    fn access(&self, _: &str) -> TableAccess {
        TableAccess::ReadWrite
    }
}

fn executions(c: &mut Criterion) {
    let limits = Limits::default();
    let context =
        serde_json::json!({"request": {}, "userId": "u", "collectionId": "c", "contents": "30"});
    let mut group = c.benchmark_group("execution");
    for (name, code) in [
        ("trivial", "export function main(a) { return a; }"),
        (
            "acl_validate_sample",
            "export function main() { if (isNaN(context.contents)) { throw new Error('Contents is not a number'); } }",
        ),
        (
            "kv_read_and_write",
            "export function main() { const t = ccf.kv['public:t']; const k = ccf.strToBuf('n'); \
             const v = t.get(k); t.set(k, ccf.strToBuf(v === undefined ? '1' : ccf.bufToStr(v) + '1')); }",
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let e = run_function(
                    "f",
                    code,
                    "main",
                    &["x".to_owned()],
                    &context,
                    &Empty,
                    &limits,
                );
                assert!(e.outcome.is_ok(), "{:?}", e.outcome);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, executions);
criterion_main!(benches);
