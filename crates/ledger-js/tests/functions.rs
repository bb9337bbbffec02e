//! UDFs: ACL's documented samples, return conversion, thrown values, API globals.
mod common;
use common::*;
use ledger_js::*;
use serde_json::json;

#[test]
fn acl_sample_validation() {
    let code = "export function main() { if (isNaN(context.contents)) { throw new Error('Contents is not a number'); } }";
    let kv = MemKv::default();
    let bad = run_with(
        code,
        &[],
        json!({"contents": "This is not a number"}),
        &kv,
        &Limits::default(),
    );
    match bad.outcome {
        Err(ScriptError::Thrown { message, .. }) => assert!(
            message.contains("Error: Contents is not a number"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let ok = run_with(
        code,
        &[],
        json!({"contents": "30"}),
        &kv,
        &Limits::default(),
    );
    assert_eq!(ok.outcome, Ok(FunctionResult { return_value: None }));
}

#[test]
fn acl_sample_write() {
    let code = "export function main() { let value = 'Normal'; if (context.contents > 50) { value = 'Alert' } ccf.kv['public:payment_metadata'].set(ccf.strToBuf(context.collectionId), ccf.strToBuf(value)); }";
    let e = run_with(
        code,
        &[],
        json!({"contents": "70", "collectionId": "Mark"}),
        &MemKv::default(),
        &Limits::default(),
    );
    assert!(e.outcome.is_ok(), "{:?}", e.outcome);
    let key = ("public:payment_metadata".to_string(), b"Mark".to_vec());
    assert_eq!(e.writes.0.get(&key), Some(&Some(b"Alert".to_vec())));
    assert_eq!(e.writes.0.len(), 1);
}

#[test]
fn acl_sample_read() {
    let code = "export function main(user) { const value = ccf.kv['public:payment_metadata'].get(ccf.strToBuf(user)); if (value === undefined) { throw new Error('UnknownUser'); } return ccf.bufToStr(value); }";
    let kv = MemKv::with("public:payment_metadata", "Mark", "Alert");
    let e = run_with(code, &["Mark"], json!({}), &kv, &Limits::default());
    assert_eq!(e.outcome.unwrap().return_value.as_deref(), Some("Alert"));
    assert!(e.read_tables);
    let e = run_with(code, &["Nobody"], json!({}), &kv, &Limits::default());
    match e.outcome {
        Err(ScriptError::Thrown { message, .. }) => {
            assert!(message.contains("Error: UnknownUser"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn return_value_conversion() {
    assert_eq!(
        ret("export function main() { return 'as is'; }").as_deref(),
        Some("as is")
    );
    assert_eq!(ret("export function main() {}"), None);
    assert_eq!(
        ret("export function main() { return {a: [1, true, null]}; }").as_deref(),
        Some(r#"{"a":[1,true,null]}"#)
    );
    assert_eq!(ret("export const main = () => 42;").as_deref(), Some("42"));
    assert_eq!(
        ret("export function main() { return 10n; }").as_deref(),
        Some("10")
    );
    assert_eq!(
        ret("export async function main() { await null; return 'later'; }").as_deref(),
        Some("later")
    );
    let e = run("export function main(a, b) { return a + '|' + b + '|' + typeof b; }");
    assert_eq!(
        e.outcome.unwrap().return_value.as_deref(),
        Some("undefined|undefined|undefined")
    );
    let e = run_with(
        "export function main(a, b) { return a + b; }",
        &["x", "y"],
        json!({}),
        &MemKv::default(),
        &Limits::default(),
    );
    assert_eq!(e.outcome.unwrap().return_value.as_deref(), Some("xy"));
}

#[test]
fn other_export_names() {
    let e = run_function(
        "f",
        "export function other() { return 'o'; }",
        "other",
        &[],
        &json!({}),
        &MemKv::default(),
        &Limits::default(),
    );
    assert_eq!(e.outcome.unwrap().return_value.as_deref(), Some("o"));
    let e = run("export function other() {}");
    assert_eq!(
        e.outcome,
        Err(ScriptError::MissingExport {
            name: "main".into()
        })
    );
    let e = run("export const main = 5;");
    assert_eq!(
        e.outcome,
        Err(ScriptError::MissingExport {
            name: "main".into()
        })
    );
}

#[test]
fn compile_errors() {
    let e = run("export function main( {");
    assert!(
        matches!(e.outcome, Err(ScriptError::Compile { .. })),
        "{:?}",
        e.outcome
    );
    still_fine();
}

#[test]
fn thrown_values_of_every_kind() {
    for (thrown, expect) in [
        ("'str'", "str"),
        ("42", "42"),
        ("null", "null"),
        ("undefined", "undefined"),
        ("{a:1}", r#"{"a":1}"#),
        ("Symbol('s')", "Symbol(s)"),
        ("new TypeError('t')", "TypeError: t"),
        ("Object.create(null)", "{}"),
    ] {
        let e = run(&format!("export function main() {{ throw {thrown}; }}"));
        match e.outcome {
            Err(ScriptError::Thrown { message, .. }) => {
                assert_eq!(message, expect, "throw {thrown}")
            }
            other => panic!("throw {thrown}: {other:?}"),
        }
    }
    let e = run("export async function main() { throw new Error('async'); }");
    assert!(
        matches!(e.outcome, Err(ScriptError::Thrown { ref message, .. }) if message == "Error: async"),
        "{:?}",
        e.outcome
    );
    let e = run("export function main() { return new Promise(() => {}); }");
    assert_eq!(e.outcome, Err(ScriptError::Unsettled));
}

#[test]
fn console_is_captured() {
    let e = run(
        "export function main() { console.log('a', 1, {b: 2}, [3]); console.error(new Error('x')); console.warn(undefined, null); }",
    );
    let lines: Vec<(LogLevel, &str)> = e
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (LogLevel::Log, r#"a 1 {"b":2} [3]"#),
            (LogLevel::Error, "Error: x"),
            (LogLevel::Warn, "undefined null")
        ]
    );
}

#[test]
fn buffers_json_digest() {
    assert_eq!(
        ret("export function main() { return ccf.bufToStr(ccf.strToBuf('héllo ✓')); }").as_deref(),
        Some("héllo ✓")
    );
    assert_eq!(ret("export function main() { return ccf.bufToJsonCompatible(ccf.jsonCompatibleToBuf({x: [1]})); }").as_deref(), Some(r#"{"x":[1]}"#));
    let hex = "export function main() { const d = new Uint8Array(ccf.crypto.digest('SHA-256', ccf.strToBuf('abc'))); return Array.from(d, b => b.toString(16).padStart(2, '0')).join(''); }";
    assert_eq!(
        ret(hex).as_deref(),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    let e = run("export function main() { ccf.crypto.digest('MD5', ccf.strToBuf('abc')); }");
    assert!(
        matches!(e.outcome, Err(ScriptError::Thrown { ref message, .. }) if message.starts_with("TypeError")),
        "{:?}",
        e.outcome
    );
    let e = run("export function main() { ccf.bufToStr('not a buffer'); }");
    assert!(
        matches!(e.outcome, Err(ScriptError::Thrown { ref message, .. }) if message.starts_with("TypeError")),
        "{:?}",
        e.outcome
    );
}

#[test]
fn untrusted_date_time() {
    assert_eq!(ret("export function main() { return [Date.now(), new Date().getTime(), new Date(5).getTime()]; }").as_deref(), Some("[0,0,5]"));
    let r = ret(
        "export function main() { const prev = ccf.enableUntrustedDateTime(true); return [prev, Date.now() > 1e12, new Date() instanceof Date, ccf.enableUntrustedDateTime(false)]; }",
    );
    assert_eq!(r.as_deref(), Some("[false,true,true,true]"));
}

#[test]
fn no_host_access() {
    let r = ret(
        "export function main() { return [typeof require, typeof process, typeof std, typeof os, typeof __cledger_host, typeof scriptArgs, typeof print].join(); }",
    );
    assert_eq!(
        r.as_deref(),
        Some("undefined,undefined,undefined,undefined,undefined,undefined,undefined")
    );
    let e = run("import * as std from 'std'; export function main() { return typeof std; }");
    assert_eq!(
        e.outcome,
        Err(ScriptError::ImportRefused { name: "std".into() })
    );
    let e = run("export async function main() { return await import('os'); }");
    assert_eq!(
        e.outcome,
        Err(ScriptError::ImportRefused { name: "os".into() })
    );
    still_fine();
}

#[test]
fn prototype_pollution_does_not_leak() {
    let e = run(
        "export function main() { Object.prototype.polluted = 1; Array.prototype.push = null; globalThis.leak = 2; }",
    );
    assert!(e.outcome.is_ok());
    assert_eq!(ret("export function main() { return [typeof ({}).polluted, typeof [].push, typeof leak].join(); }").as_deref(), Some("undefined,function,undefined"));
}

#[test]
fn pem_to_id_rejects_garbage() {
    let e = run("export function main() { return ccf.pemToId('nope'); }");
    assert!(
        matches!(e.outcome, Err(ScriptError::Thrown { .. })),
        "{:?}",
        e.outcome
    );
}
