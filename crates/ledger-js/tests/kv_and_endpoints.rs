//! `ccf.kv` semantics and user-defined endpoints.
mod common;
use std::collections::BTreeMap;

use common::*;
use ledger_js::*;
use serde_json::json;

fn kv_run(code: &str, kv: &MemKv) -> Execution<FunctionResult> {
    run_with(code, &[], json!({}), kv, &Limits::default())
}

#[test]
fn read_your_writes_delete_and_foreach() {
    let mut kv = MemKv::with("t", "a", "1");
    kv.put("t", "c", "3");
    let code = r#"export function main() {
        const t = ccf.kv['t'], b = ccf.strToBuf;
        t.set(b('b'), b('2'));
        const seen = [ccf.bufToStr(t.get(b('b'))), t.has(b('a')), t.delete(b('a')), t.get(b('a')) === undefined, t.has(b('a')), t.delete(b('zz'))];
        t.set(b('c'), b('33'));
        const all = [];
        t.forEach((v, k, m) => all.push(ccf.bufToStr(k) + '=' + ccf.bufToStr(v) + (m === t)));
        return {seen, all, size: t.size};
    }"#;
    let e = kv_run(code, &kv);
    assert_eq!(
        e.outcome.unwrap().return_value.as_deref(),
        Some(r#"{"seen":["2",true,true,true,false,false],"all":["b=2true","c=33true"],"size":2}"#)
    );
    let w = |k: &str| {
        e.writes
            .0
            .get(&("t".to_string(), k.as_bytes().to_vec()))
            .cloned()
    };
    assert_eq!(w("a"), Some(None));
    assert_eq!(w("b"), Some(Some(b"2".to_vec())));
    assert_eq!(w("c"), Some(Some(b"33".to_vec())));
    assert!(e.read_tables);
    let e = kv_run(
        "export function main() { ccf.kv['t'].clear(); return ccf.kv['t'].size; }",
        &kv,
    );
    assert_eq!(e.outcome.unwrap().return_value.as_deref(), Some("0"));
    assert_eq!(e.writes.0.len(), 2);
}

#[test]
fn no_read_means_read_tables_false() {
    let e = kv_run(
        "export function main() { ccf.kv['t'].set(ccf.strToBuf('k'), ccf.strToBuf('v')); }",
        &MemKv::default(),
    );
    assert!(!e.read_tables);
    assert_eq!(e.writes.0.len(), 1);
}

#[test]
fn keys_and_values_must_be_buffers() {
    let e = kv_run(
        "export function main() { ccf.kv['t'].set('k', ccf.strToBuf('v')); }",
        &MemKv::default(),
    );
    assert!(
        matches!(e.outcome, Err(ScriptError::Thrown { ref message, .. }) if message.starts_with("TypeError")),
        "{:?}",
        e.outcome
    );
}

#[test]
fn access_policy() {
    let mut kv = MemKv::with("ro", "k", "v");
    kv.access.insert("ro".into(), TableAccess::ReadOnly);
    kv.access.insert("secret".into(), TableAccess::Denied);
    let e = kv_run(
        "export function main() { return ccf.bufToStr(ccf.kv['ro'].get(ccf.strToBuf('k'))); }",
        &kv,
    );
    assert_eq!(e.outcome.unwrap().return_value.as_deref(), Some("v"));
    let e = kv_run(
        "export function main() { ccf.kv['ro'].set(ccf.strToBuf('k'), ccf.strToBuf('w')); }",
        &kv,
    );
    assert_eq!(
        e.outcome,
        Err(ScriptError::KvAccess {
            table: "ro".into(),
            write: true
        })
    );
    let e = kv_run(
        "export function main() { ccf.kv['secret'].get(ccf.strToBuf('k')); }",
        &kv,
    );
    assert_eq!(
        e.outcome,
        Err(ScriptError::KvAccess {
            table: "secret".into(),
            write: false
        })
    );
    let e = kv_run(
        "export function main() { try { ccf.kv['secret'].size; } catch (e) { return String(e); } }",
        &kv,
    );
    assert!(
        e.outcome
            .unwrap()
            .return_value
            .unwrap()
            .contains("access denied")
    );
}

#[test]
fn source_failure_is_sticky() {
    let kv = MemKv {
        fail: true,
        ..MemKv::default()
    };
    let e = kv_run(
        "export function main() { try { ccf.kv['t'].get(ccf.strToBuf('k')); } catch (e) {} return 'fine'; }",
        &kv,
    );
    assert_eq!(
        e.outcome,
        Err(ScriptError::Kv(KvError("disk on fire".into())))
    );
}

#[test]
fn write_set_is_bounded() {
    let e = kv_run(
        "export function main() { const t = ccf.kv['t']; for (let i = 0; i < 20000; i++) t.set(ccf.strToBuf('k' + i), ccf.strToBuf('v')); }",
        &MemKv::default(),
    );
    assert_eq!(
        e.outcome,
        Err(ScriptError::OutputTooLarge {
            what: "write set",
            limit: MAX_WRITE_BYTES
        })
    );
    let e = kv_run(
        "export function main() { const t = ccf.kv['t']; let n = 0; try { for (let i = 0; i < 20000; i++) { t.set(ccf.strToBuf('k' + i), ccf.strToBuf('v')); n++; } } catch (e) {} return n; }",
        &MemKv::default(),
    );
    assert_eq!(e.outcome.unwrap().return_value.as_deref(), Some("10000"));
    assert_eq!(e.writes.0.len(), MAX_WRITE_KEYS);
}

fn sample_bundle() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("test.js".into(), "import { foo } from \"./baz/baz.js\";\n\nexport function content(request) {\n  return {\n    statusCode: 200,\n    body: { payload: foo() },\n  };\n}".into());
    m.insert(
        "baz/baz.js".into(),
        "export function foo() {\n  return \"Test content\";\n}".into(),
    );
    m
}

fn request() -> EndpointRequest {
    EndpointRequest {
        method: "POST".into(),
        url: "/app/x?a=1".into(),
        path: "/app/x".into(),
        query: "a=1".into(),
        headers: vec![
            ("X-Thing".into(), "1".into()),
            ("x-thing".into(), "2".into()),
        ],
        body: b"{\"n\": 5}".to_vec(),
        caller: json!({"policy": "jwt"}),
        ..EndpointRequest::default()
    }
}

#[test]
fn published_sample_bundle() {
    let e = run_endpoint(
        &sample_bundle(),
        "test.js",
        "content",
        &request(),
        &MemKv::default(),
        &Limits::default(),
    );
    let r = e.outcome.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.body, br#"{"payload":"Test content"}"#);
    let e = run_endpoint(
        &sample_bundle(),
        "/test.js",
        "content",
        &request(),
        &MemKv::default(),
        &Limits::default(),
    );
    assert!(e.outcome.is_ok());
}

#[test]
fn endpoint_request_and_response_shapes() {
    let mut m = BTreeMap::new();
    m.insert("/a/main.js".into(), "import { two } from '../lib/two.js'; export function go(r) { return { statusCode: 201, headers: {'X-Out': 'y'}, body: [r.method, r.query, r.headers['x-thing'], r.body.json().n + two(), r.caller.policy, r.body.text().length] }; } export function text() { return {body: 'hi'}; } export function bin() { return {body: new Uint8Array([1,2]), headers: {'Content-Type': 'image/png'}}; } export function none() { return {}; } export function bad() { return 'nope'; } export function badStatus() { return {statusCode: 1000}; } export async function later() { return {body: 'async'}; }".into());
    m.insert("lib/two.js".into(), "export const two = () => 2;".into());
    let run = |export: &str| {
        run_endpoint(
            &m,
            "a/main.js",
            export,
            &request(),
            &MemKv::default(),
            &Limits::default(),
        )
        .outcome
    };
    let r = run("go").unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.headers, vec![("X-Out".to_string(), "y".to_string())]);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"["POST","a=1","1, 2",7,"jwt",8]"#
    );
    let r = run("text").unwrap();
    assert_eq!(
        (r.status, r.content_type.as_deref(), r.body.as_slice()),
        (200, Some("text/plain"), &b"hi"[..])
    );
    let r = run("bin").unwrap();
    assert_eq!(
        (r.content_type.as_deref(), r.body.as_slice()),
        (Some("image/png"), &[1u8, 2][..])
    );
    let r = run("none").unwrap();
    assert_eq!((r.status, r.content_type, r.body.len()), (200, None, 0));
    assert!(matches!(
        run("bad"),
        Err(ScriptError::InvalidResponse { .. })
    ));
    assert!(matches!(
        run("badStatus"),
        Err(ScriptError::InvalidResponse { .. })
    ));
    assert_eq!(run("later").unwrap().body, b"async");
    assert_eq!(
        run("missing"),
        Err(ScriptError::MissingExport {
            name: "missing".into()
        })
    );
}

#[test]
fn endpoint_module_errors() {
    let mut m = BTreeMap::new();
    m.insert(
        "m.js".into(),
        "import { x } from './nope.js'; export function go() {}".into(),
    );
    let e = run_endpoint(
        &m,
        "m.js",
        "go",
        &request(),
        &MemKv::default(),
        &Limits::default(),
    );
    assert_eq!(
        e.outcome,
        Err(ScriptError::ModuleNotFound {
            name: "nope.js".into()
        })
    );
    let e = run_endpoint(
        &m,
        "other.js",
        "go",
        &request(),
        &MemKv::default(),
        &Limits::default(),
    );
    assert_eq!(
        e.outcome,
        Err(ScriptError::ModuleNotFound {
            name: "other.js".into()
        })
    );
    let mut m = BTreeMap::new();
    m.insert(
        "m.js".into(),
        "import * as os from 'os'; export function go() { return {body: typeof os}; }".into(),
    );
    let e = run_endpoint(
        &m,
        "m.js",
        "go",
        &request(),
        &MemKv::default(),
        &Limits::default(),
    );
    assert_eq!(
        e.outcome,
        Err(ScriptError::ModuleNotFound { name: "os".into() })
    );
}
