//! Scripts that try to exhaust or escape the engine; each is followed by a normal run.
mod common;
use std::time::{Duration, Instant};

use common::*;
use ledger_js::*;
use serde_json::json;

fn run_limited(code: &str, limits: Limits) -> Execution<FunctionResult> {
    run_with(code, &[], json!({}), &MemKv::default(), &limits)
}

fn assert_times_out(code: &str) {
    let start = Instant::now();
    let e = run_limited(code, limits_ms(100));
    let took = start.elapsed();
    assert_eq!(
        e.outcome,
        Err(ScriptError::TimedOut {
            limit: Duration::from_millis(100)
        }),
        "{code}"
    );
    assert!(took < Duration::from_millis(600), "{code} took {took:?}");
    assert!(e.writes.is_empty());
    still_fine();
}

#[test]
fn infinite_loop_times_out() {
    assert_times_out("export function main() { while (true) {} }");
}

#[test]
fn caught_infinite_loop_still_times_out() {
    assert_times_out(
        "export function main() { for (;;) { try { while (true) {} } catch (e) {} } }",
    );
    assert_times_out(
        "export function main() { try { while (true) {} } catch (e) { return 'escaped'; } }",
    );
    assert_times_out(
        "export function main() { try { while (true) {} } finally { return 'escaped'; } }",
    );
}

#[test]
fn async_loop_times_out() {
    assert_times_out("export async function main() { await null; while (true) {} }");
    assert_times_out("export async function main() { for (;;) await null; }");
}

#[test]
fn deep_recursion_overflows_stack() {
    let e = run("export function main() { function f() { return f() + 1; } return f(); }");
    assert_eq!(
        e.outcome,
        Err(ScriptError::StackOverflow {
            limit: Limits::default().max_stack_bytes
        })
    );
    still_fine();
}

#[test]
fn allocation_bombs_run_out_of_memory() {
    let limits = Limits {
        max_heap_bytes: 8 << 20,
        ..limits_ms(2000)
    };
    for code in [
        "export function main() { let a = []; while (true) a.push(new Array(1e6).fill(1)); }",
        "export function main() { let s = 'x'; const keep = []; while (true) { s = s.repeat(2); keep.push(s); } }",
        "export function main() { let a = []; while (true) { try { a.push(new Array(1e5).fill(1)); } catch (e) {} } }",
    ] {
        let e = run_limited(code, limits);
        match e.outcome {
            Err(ScriptError::OutOfMemory { limit }) => assert_eq!(limit, 8 << 20),
            // Catching out-of-memory and looping until the deadline is fine too.
            Err(ScriptError::TimedOut { .. }) if code.contains("catch") => {}
            other => panic!("{code}: {other:?}"),
        }
        still_fine();
    }
}

#[test]
fn huge_return_value_is_refused() {
    let limits = Limits {
        max_heap_bytes: 256 << 20,
        ..limits_ms(5000)
    };
    let e = run_limited(
        "export function main() { return 'x'.repeat(50 * 1024 * 1024); }",
        limits,
    );
    assert_eq!(
        e.outcome,
        Err(ScriptError::OutputTooLarge {
            what: "return value",
            limit: MAX_OUTPUT_BYTES
        })
    );
    still_fine();
}

#[test]
fn logs_are_bounded() {
    let e = run_limited(
        "export function main() { for (let i = 0; i < 1e6; i++) console.log('line', i); return 'done'; }",
        limits_ms(5000),
    );
    assert_eq!(e.outcome.unwrap().return_value.as_deref(), Some("done"));
    assert_eq!(e.logs.len(), MAX_LOG_LINES + 1);
    assert!(
        e.logs
            .last()
            .unwrap()
            .message
            .starts_with("999000 further log lines dropped"),
        "{}",
        e.logs.last().unwrap().message
    );
    let e =
        run("export function main() { console.log('y'.repeat(200000)); console.log('after'); }");
    assert_eq!(e.logs.len(), 2);
    assert!(e.logs[0].message.len() <= MAX_LOG_BYTES + 32);
    assert!(e.logs[1].message.starts_with("1 further"));
}

#[test]
fn failed_execution_writes_nothing() {
    let e = run(
        "export function main() { ccf.kv['t'].set(ccf.strToBuf('k'), ccf.strToBuf('v')); throw new Error('no'); }",
    );
    assert!(e.outcome.is_err());
    assert!(e.writes.is_empty());
}
