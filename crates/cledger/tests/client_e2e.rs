//! End-to-end tests of the client subcommands of `cledger` (issue 5): the real binary, run as a
//! child process, against a real `cledger serve` on loopback TLS (see `support`).
//!
//! Every run of the client gets a clean environment: no `CLEDGER_*` variable from the
//! developer's shell, and `HOME` / `XDG_CONFIG_HOME` pointing into the test's temporary
//! directory, so no profile file outside the test is read or written.

mod support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Running the client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Run {
    args: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "cledger {:?} → exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts exit 0; returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {}", self.describe());
        &self.stdout
    }

    /// Asserts exit 0 and JSON on stdout.
    fn json(&self) -> Value {
        self.ok();
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }

    fn code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, expected, "exit code: {}", self.describe());
        self
    }

    /// stdout and stderr together (where a message appears is the implementation's choice).
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A temporary "home": the client's working directory and config location.
struct Env {
    dir: TempDir,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home/.config")).unwrap();
        Env {
            dir,
            vars: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn with(mut self, key: &str, value: impl AsRef<str>) -> Env {
        self.vars.push((key.to_owned(), value.as_ref().to_owned()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clear_cledger_env(&mut command);
        command
            .env("HOME", self.path().join("home"))
            .env("XDG_CONFIG_HOME", self.path().join("home/.config"))
            .env("NO_COLOR", "1");
        for (key, value) in &self.vars {
            command.env(key, value);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        let output = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A server and the connection flags for its administrator.
struct Ledger {
    _dir: TempDir,
    server: Server,
}

impl Ledger {
    fn start() -> Ledger {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Server::start(dir.path(), &[]);
        Ledger { _dir: dir, server }
    }

    fn admin_pem(&self) -> String {
        self.server.data_dir.join("admin.pem").display().to_string()
    }

    fn service_cert(&self) -> String {
        self.server
            .data_dir
            .join("service_cert.pem")
            .display()
            .to_string()
    }

    /// `--endpoint URL --cert admin.pem --service-cert service_cert.pem`.
    fn conn(&self) -> Vec<String> {
        vec![
            "--endpoint".into(),
            self.server.base.clone(),
            "--cert".into(),
            self.admin_pem(),
            "--service-cert".into(),
            self.service_cert(),
        ]
    }

    /// Runs `cledger ARGS... <admin connection flags>`.
    fn run(&self, env: &Env, args: &[&str]) -> Run {
        let conn = self.conn();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(conn.iter().map(String::as_str));
        env.run(&all)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fingerprint as lowercase hex without separators.
fn norm_fp(s: &str) -> String {
    s.to_lowercase().replace(':', "")
}

/// Every transaction id (`<view>.<seqno>`) in a text, in order.
fn txids_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| {
            let mut parts = w.split('.');
            matches!(
                (parts.next(), parts.next(), parts.next()),
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty()
            ) && ledger_core::TxId::parse(w).is_ok()
        })
        .map(str::to_owned)
        .collect()
}

/// The one transaction id a human-readable output names.
fn single_txid(run: &Run) -> String {
    let ids = txids_in(&run.stdout);
    assert!(
        !ids.is_empty(),
        "no transaction id in output: {}",
        run.describe()
    );
    ids[0].clone()
}

/// The first string value under `key` anywhere in a JSON value.
fn find_str<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(s)) = map.get(key) {
                return Some(s);
            }
            map.values().find_map(|v| find_str(v, key))
        }
        Value::Array(items) => items.iter().find_map(|v| find_str(v, key)),
        _ => None,
    }
}

fn json_txid(value: &Value) -> String {
    find_str(value, "transactionId")
        .or_else(|| find_str(value, "txid"))
        .unwrap_or_else(|| panic!("no transactionId in {value}"))
        .to_owned()
}

/// The entries of `list` / `export` output in --json form: an array, an object with an
/// `entries` array, or JSON lines.
fn json_entries(text: &str) -> Vec<Value> {
    if let Ok(value) = serde_json::from_str::<Value>(text.trim()) {
        match value {
            Value::Array(items) => return items,
            Value::Object(ref map) if map.get("entries").is_some_and(Value::is_array) => {
                return map["entries"].as_array().unwrap().clone();
            }
            other => return vec![other],
        }
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

fn contents_of(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            e["contents"]
                .as_str()
                .unwrap_or_else(|| panic!("entry without contents: {e}"))
                .to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Every subcommand, human and --json
// ---------------------------------------------------------------------------------------------

#[test]
fn every_subcommand_human_and_json() {
    let ledger = Ledger::start();
    let env = Env::new();

    // identity: the fingerprint is the SHA-256 of the service certificate's DER.
    let pem = ledger.server.service_cert_pem();
    let fingerprint =
        norm_fp(&ledger_identity::certificate_fingerprint(&pem).expect("fingerprint"));
    let out = ledger.run(&env, &["identity"]);
    assert!(
        out.ok()
            .to_lowercase()
            .replace(':', "")
            .contains(&fingerprint),
        "identity prints the fingerprint {fingerprint}: {}",
        out.describe()
    );
    let out = ledger.run(&env, &["identity", "--json"]).json();
    assert!(
        out.to_string()
            .to_lowercase()
            .replace(':', "")
            .contains(&fingerprint),
        "identity --json holds the fingerprint {fingerprint}: {out}"
    );

    // append (human, then --json with collection and tag).
    let out = ledger.run(&env, &["append", "hello"]);
    let tx1 = single_txid(&out);
    let out = ledger
        .run(
            &env,
            &[
                "append",
                "--collection",
                "c1",
                "--tag",
                "t1",
                "tagged",
                "--json",
            ],
        )
        .json();
    let tx2 = json_txid(&out);
    assert!(txid_of(&tx2) > txid_of(&tx1), "{tx1} then {tx2}");

    // get.
    let out = ledger.run(&env, &["get", &tx1]);
    assert!(
        out.ok().contains("hello"),
        "get shows contents: {}",
        out.describe()
    );
    let out = ledger
        .run(&env, &["get", &tx2, "--collection", "c1", "--json"])
        .json();
    assert_eq!(
        find_str(&out, "contents"),
        Some("tagged"),
        "get --json: {out}"
    );
    assert_eq!(
        find_str(&out, "collectionId"),
        Some("c1"),
        "get --json: {out}"
    );

    // current.
    let out = ledger.run(&env, &["current"]);
    assert!(out.ok().contains("hello"), "current: {}", out.describe());
    let out = ledger.run(&env, &["current", "--json"]).json();
    assert_eq!(
        find_str(&out, "contents"),
        Some("hello"),
        "current --json: {out}"
    );

    // list across more than one page (100 per page): 150 more entries via the REST API.
    rt().block_on(async {
        let admin = ledger.server.admin();
        for i in 0..150 {
            admin.write_ok(None, &format!("bulk-{i:03}")).await;
        }
    });
    let out = ledger.run(&env, &["list", "--json"]);
    let entries = json_entries(out.ok());
    let contents = contents_of(&entries);
    assert_eq!(
        contents.len(),
        151,
        "list --json follows paging: {contents:?}"
    );
    assert_eq!(contents[0], "hello");
    assert_eq!(contents[150], "bulk-149");
    let out = ledger.run(&env, &["list"]);
    let text = out.ok();
    assert!(
        text.contains("bulk-000") && text.contains("bulk-149"),
        "human list shows all pages: {}",
        out.describe()
    );
    let out = ledger.run(
        &env,
        &["list", "--collection", "c1", "--tag", "t1", "--json"],
    );
    assert_eq!(contents_of(&json_entries(out.ok())), vec!["tagged"]);
    let out = ledger.run(
        &env,
        &["list", "--collection", "c1", "--tag", "nope", "--json"],
    );
    assert!(contents_of(&json_entries(out.ok())).is_empty());
    // --from/--to: a range of the default collection.
    let ids: Vec<String> = entries.iter().map(json_txid).collect();
    let out = ledger.run(
        &env,
        &["list", "--from", &ids[10], "--to", &ids[19], "--json"],
    );
    let ranged = contents_of(&json_entries(out.ok()));
    assert_eq!(ranged, contents[10..20].to_vec(), "list --from --to");

    // status.
    let out = ledger.run(&env, &["status", &tx1]);
    assert!(out.ok().contains("Committed"), "status: {}", out.describe());
    let out = ledger.run(&env, &["status", &tx1, "--json"]).json();
    assert_eq!(
        find_str(&out, "state"),
        Some("Committed"),
        "status --json: {out}"
    );

    // collections.
    let out = ledger.run(&env, &["collections"]);
    assert!(
        out.ok().contains("c1") && out.stdout.contains(DEFAULT_COLLECTION),
        "collections: {}",
        out.describe()
    );
    let out = ledger.run(&env, &["collections", "--json"]).json();
    assert!(
        out.to_string().contains("\"c1\""),
        "collections --json: {out}"
    );

    // users: add, set-role, list, get, remove.
    let (_bundle, uid) = new_user("alice");
    let out = ledger.run(&env, &["users", "add", &uid, "--role", "Reader"]);
    out.ok();
    let out = ledger.run(&env, &["users", "get", &uid, "--json"]).json();
    assert!(
        out.to_string().contains("Reader"),
        "users get --json: {out}"
    );
    let out = ledger.run(
        &env,
        &["users", "set-role", &uid, "--role", "Contributor", "--json"],
    );
    out.json();
    let out = ledger.run(&env, &["users", "get", &uid]);
    assert!(
        out.ok().contains("Contributor"),
        "users get: {}",
        out.describe()
    );
    let out = ledger.run(&env, &["users", "list"]);
    assert!(out.ok().contains(&uid), "users list: {}", out.describe());
    let out = ledger.run(&env, &["users", "list", "--json"]).json();
    assert!(out.to_string().contains(&uid), "users list --json: {out}");
    ledger.run(&env, &["users", "remove", &uid]).ok();
    let out = ledger.run(&env, &["users", "list", "--json"]).json();
    assert!(
        !out.to_string().contains(&uid),
        "removed user still listed: {out}"
    );

    // receipt: verified, saved; the saved receipt verifies with ledger-core.
    let out = ledger.run(&env, &["receipt", &tx1]);
    out.ok();
    let saved = env.path().join("r1.json");
    let out = ledger.run(
        &env,
        &["receipt", &tx1, "--out", saved.to_str().unwrap(), "--json"],
    );
    out.json();
    let body: Value = serde_json::from_str(&read_text(&saved)).expect("saved receipt is JSON");
    let receipt_value = if body.get("receipt").is_some() {
        body["receipt"].clone()
    } else {
        body.clone()
    };
    let receipt = ledger_core::receipt::Receipt::from_value(&receipt_value)
        .unwrap_or_else(|e| panic!("saved receipt does not parse: {e}: {body}"));
    let verified = ledger_core::receipt::verify_receipt(&receipt, &pem, None)
        .unwrap_or_else(|e| panic!("saved receipt does not verify: {e}"));
    assert_eq!(verified.txid.to_string(), tx1);

    // completions.
    let out = env.run(&["completions", "bash"]);
    assert!(
        out.ok().contains("complete") && out.stdout.contains("cledger"),
        "completions bash: {}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Profiles and environment variables
// ---------------------------------------------------------------------------------------------

#[test]
fn profiles_and_environment() {
    let ledger = Ledger::start();
    let env = Env::new();
    let profiles = env.path().join("profiles.toml");
    let profiles = profiles.to_str().unwrap();
    let fingerprint = norm_fp(
        &ledger_identity::certificate_fingerprint(&ledger.server.service_cert_pem()).unwrap(),
    );

    // Trust on first use: identity without --service-cert, pinned with --save.
    let out = env.run(&[
        "identity",
        "--profile",
        "p",
        "--profiles",
        profiles,
        "--endpoint",
        &ledger.server.base,
        "--cert",
        &ledger.admin_pem(),
        "--save",
    ]);
    assert!(
        out.ok()
            .to_lowercase()
            .replace(':', "")
            .contains(&fingerprint),
        "identity --save prints the fingerprint: {}",
        out.describe()
    );
    let text = read_text(Path::new(profiles));
    assert!(
        text.contains("[p]") || text.contains("p"),
        "profile p saved: {text}"
    );

    // The profile alone now connects (endpoint, pinned service cert, certificate).
    // The profile pins endpoint and service certificate; the client certificate is given.
    let admin = ledger.admin_pem();
    let out = env.run(&[
        "append",
        "via-profile",
        "--profile",
        "p",
        "--profiles",
        profiles,
        "--cert",
        &admin,
    ]);
    let tx = single_txid(&out);
    let out = env.run(&[
        "get",
        &tx,
        "--profile",
        "p",
        "--profiles",
        profiles,
        "--cert",
        &admin,
        "--json",
    ]);
    assert_eq!(find_str(&out.json(), "contents"), Some("via-profile"));

    // CLEDGER_PROFILES instead of --profiles.
    let via_env = Env::new().with("CLEDGER_PROFILES", profiles);
    let out = via_env.run(&["current", "--profile", "p", "--cert", &admin, "--json"]);
    assert_eq!(find_str(&out.json(), "contents"), Some("via-profile"));

    // Environment variables alone.
    let env_only = Env::new()
        .with("CLEDGER_ENDPOINT", &ledger.server.base)
        .with("CLEDGER_CERT", ledger.admin_pem())
        .with("CLEDGER_SERVICE_CERT", ledger.service_cert());
    let out = env_only.run(&["current", "--json"]);
    assert_eq!(find_str(&out.json(), "contents"), Some("via-profile"));
    let out = env_only.run(&["append", "via-env"]);
    let tx = single_txid(&out);
    let out = env_only.run(&["get", &tx]);
    assert!(out.ok().contains("via-env"), "{}", out.describe());

    // A pinned certificate that is not the server's: the connection is refused.
    let other = tempfile::tempdir().unwrap();
    env.run(&[
        "local",
        "init",
        "--data-dir",
        other.path().to_str().unwrap(),
    ])
    .ok();
    let wrong = Env::new()
        .with("CLEDGER_ENDPOINT", &ledger.server.base)
        .with("CLEDGER_CERT", ledger.admin_pem())
        .with(
            "CLEDGER_SERVICE_CERT",
            other.path().join("service_cert.pem").to_str().unwrap(),
        );
    let out = wrong.run(&["current"]);
    assert_ne!(
        out.code,
        0,
        "a wrongly pinned service cert must fail: {}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Errors from the server: code and hint
// ---------------------------------------------------------------------------------------------

#[test]
fn server_errors_show_code_and_hint() {
    let ledger = Ledger::start();
    let env = Env::new();
    let (bundle, _uid) = new_user("stranger");
    let stranger = env.path().join("stranger.pem");
    std::fs::write(&stranger, bundle).unwrap();
    let stranger = stranger.to_str().unwrap();
    let service_cert = ledger.service_cert();

    for args in [&["current"][..], &["append", "x"][..]] {
        let mut all = args.to_vec();
        all.extend([
            "--endpoint",
            &ledger.server.base,
            "--service-cert",
            &service_cert,
            "--cert",
            stranger,
        ]);
        let out = env.run(&all);
        out.code(1);
        let text = out.all();
        assert!(
            text.contains("NotAllowed"),
            "error code shown: {}",
            out.describe()
        );
        assert!(text.contains("users add"), "hint shown: {}", out.describe());
    }

    // A transaction id that names no transaction.
    let out = ledger.run(&env, &["get", "1.999999"]);
    out.code(1);
    assert!(
        out.stderr.contains("TransactionPendingOrUnknown") && out.stderr.contains("hint:"),
        "error code shown: {}",
        out.describe()
    );
    let out = ledger.run(&env, &["status", "1.999999", "--json"]);
    out.code(1);
    assert!(
        out.all().contains("TransactionPendingOrUnknown"),
        "{}",
        out.describe()
    );
    // Malformed: refused with the ledger's error code (the id goes to the server as typed).
    let out = ledger.run(&env, &["get", "not-a-txid"]);
    assert_eq!(out.code, 1, "{}", out.describe());
    assert!(
        out.all().contains("InvalidTransactionId"),
        "{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Evidence packages, verified offline
// ---------------------------------------------------------------------------------------------

/// Replaces the first occurrence of `key`'s string value (anywhere in `value`) using `f`.
fn mutate_str(value: &mut Value, key: &str, f: &dyn Fn(&str) -> String) -> bool {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(s)) = map.get_mut(key) {
                *s = f(s);
                return true;
            }
            map.values_mut().any(|v| mutate_str(v, key, f))
        }
        Value::Array(items) => items.iter_mut().any(|v| mutate_str(v, key, f)),
        _ => false,
    }
}

/// Changes one hex digit (the one at `at`) to another hex digit.
fn flip_hex(s: &str, at: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

/// Changes one base64 character of the DER signature's body (not padding).
fn flip_b64(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let at = b.len() / 2;
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[test]
fn evidence_packages_verify_offline_and_detect_tampering() {
    let ledger = Ledger::start();
    let env = Env::new();
    let doc = env.path().join("contract.pdf");
    std::fs::write(&doc, b"%PDF-1.7 the signed contract\n".repeat(100)).unwrap();
    // Some history first, so the receipt's Merkle proof is not empty.
    for i in 0..5 {
        single_txid(&ledger.run(&env, &["append", &format!("before-{i}")]));
    }
    let out = ledger.run(
        &env,
        &[
            "notarize",
            doc.to_str().unwrap(),
            "--note",
            "signed by both parties",
        ],
    );
    out.ok();
    let package_path = env.path().join("contract.pdf.evidence.json");
    let package_text = read_text(&package_path);
    let package: Value = serde_json::from_str(&package_text).expect("package is JSON");
    assert!(
        package_text.contains("doc-integrity-proof/v1"),
        "entry type: {package_text}"
    );
    assert!(
        package_text.contains(&hex::encode(Sha256::digest(std::fs::read(&doc).unwrap()))),
        "package holds the file's sha256: {package_text}"
    );
    assert!(
        package_text.contains("signed by both parties"),
        "note: {package_text}"
    );

    // Another ledger's service certificate (never seen by this one).
    let other = tempfile::tempdir().unwrap();
    env.run(&[
        "local",
        "init",
        "--data-dir",
        other.path().to_str().unwrap(),
    ])
    .ok();
    let other_cert = read_text(&other.path().join("service_cert.pem"));
    let own_cert = ledger.server.service_cert_pem();
    let other_cert_path = other.path().join("service_cert.pem");

    // Offline from here on.
    ledger.server.terminate();

    // A fresh directory, no connection settings at all.
    let auditor = Env::new();
    let pkg = auditor.path().join("contract.pdf.evidence.json");
    let file = auditor.path().join("contract.pdf");
    std::fs::copy(&package_path, &pkg).unwrap();
    std::fs::copy(&doc, &file).unwrap();
    let (pkg_s, file_s) = (pkg.to_str().unwrap(), file.to_str().unwrap());
    let out = auditor.run(&["verify", pkg_s, file_s]);
    out.ok();
    let out = auditor.run(&["verify", pkg_s, file_s, "--json"]);
    out.json();
    let out = auditor.run(&["verify", pkg_s]);
    out.ok();
    let own_cert_path = auditor.path().join("own.pem");
    std::fs::write(&own_cert_path, &own_cert).unwrap();
    auditor
        .run(&[
            "verify",
            pkg_s,
            file_s,
            "--service-cert",
            own_cert_path.to_str().unwrap(),
        ])
        .ok();

    let mut messages = Vec::new();
    let mut expect_fail = |what: &str, out: Run, words: &[&str]| {
        out.code(1);
        let text = out.all().to_lowercase();
        assert!(
            words.iter().any(|w| text.contains(w)),
            "{what}: message should mention one of {words:?}: {}",
            out.describe()
        );
        messages.push((what.to_owned(), out.stderr.clone() + &out.stdout));
    };

    // One byte of the file.
    let mut bytes = std::fs::read(&doc).unwrap();
    bytes[7] ^= 0x01;
    let changed = auditor.path().join("changed.pdf");
    std::fs::write(&changed, &bytes).unwrap();
    expect_fail(
        "file byte",
        auditor.run(&["verify", pkg_s, changed.to_str().unwrap()]),
        &["filehashmismatch"],
    );

    let write_pkg = |name: &str, value: &Value| -> String {
        let p = auditor.path().join(name);
        std::fs::write(&p, serde_json::to_string_pretty(value).unwrap()).unwrap();
        p.to_str().unwrap().to_owned()
    };

    // One character of the entry contents.
    let mut v = package.clone();
    assert!(
        mutate_str(&mut v, "contents", &|s| s.replacen(
            "signed by both",
            "signed by bath",
            1
        )),
        "package has entry contents: {package}"
    );
    assert_ne!(v, package);
    let p = write_pkg("entry.json", &v);
    expect_fail(
        "entry contents",
        auditor.run(&["verify", &p, file_s]),
        &["entrymismatch"],
    );

    // One hex digit of writeSetDigest.
    let mut v = package.clone();
    assert!(mutate_str(&mut v, "writeSetDigest", &|s| flip_hex(s, 10)));
    let p = write_pkg("wsd.json", &v);
    expect_fail(
        "writeSetDigest",
        auditor.run(&["verify", &p, file_s]),
        &["receiptsignature"],
    );

    // One hex digit of a proof element (when the proof is not empty).
    let mut v = package.clone();
    let flipped = mutate_str(&mut v, "left", &|s| flip_hex(s, 5))
        || mutate_str(&mut v, "right", &|s| flip_hex(s, 5));
    assert!(flipped, "the receipt has a non-empty proof: {package}");
    let p = write_pkg("proof.json", &v);
    expect_fail(
        "proof element",
        auditor.run(&["verify", &p, file_s]),
        &["receiptsignature"],
    );

    // One character of the signature.
    let mut v = package.clone();
    assert!(mutate_str(&mut v, "signature", &|s| flip_b64(s)));
    let p = write_pkg("sig.json", &v);
    expect_fail(
        "signature",
        auditor.run(&["verify", &p, file_s]),
        &["receiptsignature"],
    );

    // The service certificate in the package replaced by another ledger's.
    let mut v = package.clone();
    let own_trimmed = own_cert.trim().to_owned();
    let other_trimmed = other_cert.trim().to_owned();
    let text = serde_json::to_string(&v).unwrap();
    assert!(
        text.contains(&serde_json::to_string(&own_trimmed).unwrap()[1..20]),
        "package holds the service certificate: {text}"
    );
    replace_service_cert(&mut v, &own_trimmed, &other_trimmed);
    assert_ne!(v, package, "service certificate not found in package");
    let p = write_pkg("cert.json", &v);
    expect_fail(
        "service certificate replaced",
        auditor.run(&["verify", &p, file_s]),
        &["certchain"],
    );

    // --service-cert pinning another ledger's certificate.
    expect_fail(
        "--service-cert of another ledger",
        auditor.run(&[
            "verify",
            pkg_s,
            file_s,
            "--service-cert",
            other_cert_path.to_str().unwrap(),
        ]),
        &["servicecertmismatch"],
    );

    for (what, message) in &messages {
        eprintln!("{what}: {}", message.trim());
    }
    // The failure messages are specific: no two kinds of tampering say the same thing.
    let distinct: std::collections::BTreeSet<&str> =
        messages.iter().map(|(_, m)| m.as_str()).collect();
    assert!(
        distinct.len() >= 5,
        "failure messages should name what failed: {messages:#?}"
    );

    // Malformed packages, missing files: usage/IO errors (exit 2), and said why.
    let p = auditor.path().join("broken.json");
    std::fs::write(&p, &package_text[..package_text.len() / 2]).unwrap();
    let out = auditor.run(&["verify", p.to_str().unwrap(), file_s]);
    assert_eq!(out.code, 2, "{}", out.describe());
    assert!(out.all().contains("PackageMalformed"), "{}", out.describe());
    let p = write_pkg("empty-object.json", &json!({}));
    let out = auditor.run(&["verify", &p, file_s]);
    assert_eq!(out.code, 2, "{}", out.describe());
    assert!(out.all().contains("PackageMalformed"), "{}", out.describe());
    auditor.run(&["verify", "no-such-package.json"]).code(2);
    auditor.run(&["verify", pkg_s, "no-such-file"]).code(2);
}

/// Replaces every string equal (after trimming) to the service certificate PEM — except the
/// receipt's node certificate — by `other`.
fn replace_service_cert(value: &mut Value, own: &str, other: &str) {
    match value {
        Value::Object(map) => {
            for (_, v) in map.iter_mut() {
                if let Value::String(s) = v
                    && s.trim() == own
                {
                    *s = other.to_owned() + "\n";
                    continue;
                }
                replace_service_cert(v, own, other);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| replace_service_cert(v, own, other)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Notarizing a large sparse file with bounded memory
// ---------------------------------------------------------------------------------------------

const BIG: u64 = 1 << 30;
const MAX_RSS_KB: u64 = 200 * 1024;

#[test]
fn notarize_large_file_with_bounded_memory() {
    let ledger = Ledger::start();
    let env = Env::new();
    let big = env.path().join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(BIG).unwrap();
    drop(f);
    let big_s = big.to_str().unwrap();

    let mut args: Vec<String> = vec!["notarize".into(), big_s.into()];
    args.extend(ledger.conn());
    let started = Instant::now();
    let time_v = Path::new("/usr/bin/time");
    let peak_kb = if time_v.exists() {
        let mut command = Command::new(time_v);
        command
            .arg("-v")
            .arg(binary())
            .args(&args)
            .current_dir(env.path())
            .env("HOME", env.path().join("home"))
            .env("XDG_CONFIG_HOME", env.path().join("home/.config"))
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CLEDGER_") {
                command.env_remove(key);
            }
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "notarize failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr
        );
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
            .unwrap_or_else(|| panic!("no max RSS in /usr/bin/time -v output: {stderr}"))
            .trim()
            .parse::<u64>()
            .unwrap()
    } else {
        poll_vm_hwm(env.command(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let elapsed = started.elapsed();
    eprintln!("notarize of a {BIG}-byte sparse file: {elapsed:?}, peak RSS {peak_kb} kB");
    assert!(
        peak_kb < MAX_RSS_KB,
        "peak RSS {peak_kb} kB ≥ {MAX_RSS_KB} kB while notarizing {BIG} bytes"
    );

    // The package names the file's size and the SHA-256 of 1 GiB of zeros, and verifies.
    let package = read_text(&env.path().join("big.bin.evidence.json"));
    let mut hasher = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(BIG >> 20) {
        hasher.update(&zeros);
    }
    let digest = hex::encode(hasher.finalize());
    assert!(package.contains(&digest), "package names sha256 {digest}");
    assert!(
        package.contains(&BIG.to_string()),
        "package names size {BIG}"
    );
    env.run(&["verify", "big.bin.evidence.json", big_s]).ok();
}

/// Runs the command, polling `VmHWM` in /proc/<pid>/status; returns the last value seen (kB).
fn poll_vm_hwm(mut command: Command) -> u64 {
    let mut child = command.spawn().unwrap();
    let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "notarize failed");
            return peak;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. import / export
// ---------------------------------------------------------------------------------------------

#[test]
fn import_then_export_and_resume() {
    let ledger = Ledger::start();
    let env = Env::new();
    let lines: Vec<String> = (0..500)
        .map(|i| {
            let collection = if i % 5 == 0 {
                "imported"
            } else {
                DEFAULT_COLLECTION
            };
            json!({ "contents": format!("line-{i:03}"), "collectionId": collection }).to_string()
        })
        .collect();
    let input = env.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = ledger.run(&env, &["import", input.to_str().unwrap()]);
    out.ok();
    let out = ledger.run(&env, &["import", input.to_str().unwrap(), "--json"]);
    out.json();

    // export, one collection at a time: both imports, in order.
    let mut ids: Vec<String> = Vec::new();
    for (collection, keep) in [(DEFAULT_COLLECTION, 1usize), ("imported", 0usize)] {
        let exported = env.path().join(format!("out-{keep}.jsonl"));
        let out = ledger.run(
            &env,
            &[
                "export",
                "--collection",
                collection,
                "--out",
                exported.to_str().unwrap(),
            ],
        );
        out.ok();
        let entries = json_entries(&read_text(&exported));
        let expected: Vec<String> = (0..2)
            .flat_map(|_| (0..500).filter(|i| (i % 5 != 0) as usize == keep))
            .map(|i| format!("line-{i:03}"))
            .collect();
        assert_eq!(contents_of(&entries), expected, "export of {collection}");
        for e in &entries {
            assert_eq!(e["collectionId"], collection, "{e}");
        }
        let these: Vec<String> = entries.iter().map(json_txid).collect();
        assert!(
            these.windows(2).all(|w| txid_of(&w[0]) < txid_of(&w[1])),
            "export is in transaction order"
        );
        if collection == DEFAULT_COLLECTION {
            ids = these;
        }
    }
    assert_eq!(ids.len(), 800);

    // Resumable: --from a txid gives the suffix.
    let from = &ids[700];
    let out = ledger.run(&env, &["export", "--from", from]);
    let suffix = json_entries(out.ok());
    let suffix_ids: Vec<String> = suffix.iter().map(json_txid).collect();
    assert_eq!(
        suffix_ids.first(),
        Some(from),
        "export --from starts at the txid"
    );
    assert_eq!(
        suffix_ids,
        ids[700..].to_vec(),
        "export --from gives the rest"
    );

    // --resume continues an interrupted export file (here: one cut with --to).
    let partial = env.path().join("partial.jsonl");
    let partial_s = partial.to_str().unwrap();
    ledger
        .run(&env, &["export", "--to", &ids[299], "--out", partial_s])
        .ok();
    assert_eq!(json_entries(&read_text(&partial)).len(), 300);
    ledger
        .run(&env, &["export", "--out", partial_s, "--resume", "--json"])
        .ok();
    let resumed: Vec<String> = json_entries(&read_text(&partial))
        .iter()
        .map(json_txid)
        .collect();
    assert_eq!(
        resumed, ids,
        "export --resume completes the file without duplicates"
    );
}

// ---------------------------------------------------------------------------------------------

/// Our own client with a bearer token (`--token` / `CLEDGER_TOKEN`): a token principal writes,
/// reads and gets a verified receipt; an expired token is refused with the ledger's code; a
/// valid token of a principal with no role is told it is not a user.
#[test]
fn bearer_token_users_through_the_client() {
    use support::jwt::*;
    let keys = tempfile::tempdir().expect("temp dir");
    let key = new_key(keys.path(), "client-k1", jsonwebtoken::Algorithm::RS256);
    let jwks_path = keys.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&key])).unwrap();
    let dir = tempfile::tempdir().expect("temp dir");
    let jwks_file = jwks_path.display().to_string();
    let server = Server::start(
        dir.path(),
        &[
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--jwt-jwks-file",
            &jwks_file,
            "--jwt-tenant-id",
            TENANT,
            "--admin-oid",
            ADMIN_OID,
        ],
    );
    let service_cert = dir.path().join("service_cert.pem").display().to_string();
    let env = Env::new()
        .with("CLEDGER_ENDPOINT", &server.base)
        .with("CLEDGER_SERVICE_CERT", &service_cert);
    let as_token = |token: &str, args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--token", token]);
        env.run(&all)
    };

    let admin = sign(&key, &claims(ADMIN_OID));
    let written = as_token(&admin, &["--json", "append", "written with a token"]).json();
    let txid = written["transactionId"].as_str().expect("txid").to_owned();
    let entry = as_token(&admin, &["--json", "get", &txid]).json();
    assert_eq!(entry["contents"], "written with a token");
    // Exit 0 means the client verified it; check it independently as well.
    let response = as_token(&admin, &["--json", "receipt", &txid]).json();
    assert_eq!(response["transactionId"], txid.as_str());
    let receipt = ledger_core::receipt::Receipt::from_value(&response["receipt"]).expect("receipt");
    let cert = std::fs::read_to_string(&service_cert).unwrap();
    ledger_core::receipt::verify_receipt(&receipt, &cert, None).expect("receipt verifies");
    // The environment variable works as well as the flag.
    let via_env = Env::new()
        .with("CLEDGER_ENDPOINT", &server.base)
        .with("CLEDGER_SERVICE_CERT", &service_cert)
        .with("CLEDGER_TOKEN", &admin);
    assert_eq!(via_env.run(&["status", &txid]).ok().trim(), "Committed");

    let mut expired = claims(ADMIN_OID);
    expired["exp"] = json!(now() - 3600);
    expired["nbf"] = json!(now() - 7200);
    let out = as_token(&sign(&key, &expired), &["current"]);
    out.code(1);
    assert!(
        out.all().contains("InvalidAuthenticationInfo"),
        "{}",
        out.describe()
    );
    assert!(out.all().contains("expired"), "{}", out.describe());

    let stranger = sign(&key, &claims(OTHER_OID));
    let out = as_token(&stranger, &["current"]);
    out.code(1);
    assert!(out.all().contains("NotAllowed"), "{}", out.describe());

    // The load generator's Writer sends the token too: the administrator writes, the
    // stranger is refused with the server's status and code.
    let cert = std::fs::read_to_string(&service_cert).unwrap();
    let writer = |token: &str| {
        let config = ledger_client::ClientConfig::new(
            server.base.clone(),
            cert.clone(),
            ledger_client::Auth::Token(token.to_owned()),
        );
        ledger_client::writer::Writer::new(&config).expect("writer")
    };
    rt().block_on(async {
        let appended = writer(&admin)
            .post_entry("written by a Writer with a token", None)
            .await
            .expect("the administrator writes");
        let entry = as_token(&admin, &["--json", "get", &appended.transaction_id]).json();
        assert_eq!(entry["contents"], "written by a Writer with a token");
        match writer(&stranger).post_entry("refused", None).await {
            Err(ledger_client::Error::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (403, "NotAllowed"))
            }
            other => panic!("a token of no user: {other:?}"),
        }
    });
}

/// The load generator's [`ledger_client::writer::Writer`] against a real server: writes
/// posted over its one connection are stored as sent, in order; an error answer comes back
/// with its status and ACL code and leaves the connection usable; a connection the server
/// closed while idle is replaced before the next write is sent.
#[test]
fn the_writer_posts_over_one_connection_and_reopens_it() {
    use ledger_client::writer::Writer;
    use ledger_client::{Auth, ClientConfig, Error, nonblocking::Client};
    let dir = tempfile::tempdir().expect("temp dir");
    let config_file = dir.path().join("cledger.toml");
    std::fs::write(&config_file, "idle_timeout_secs = 1\n").unwrap();
    let ledger = Ledger {
        server: Server::start(
            &dir.path().join("data"),
            &[
                "--config",
                config_file.to_str().unwrap(),
                "--log-level",
                "info,ledger_server::listener=debug",
            ],
        ),
        _dir: dir,
    };
    let config = ClientConfig::new(
        ledger.server.base.clone(),
        std::fs::read_to_string(ledger.service_cert()).unwrap(),
        Auth::Certificate(std::fs::read_to_string(ledger.admin_pem()).unwrap()),
    );
    let writer = Writer::new(&config).expect("writer");
    let reader = Client::new(config).expect("client");
    rt().block_on(async {
        let mut seqnos = Vec::new();
        for (n, collection) in [None, Some("writer-1"), None, Some("writer-1")]
            .into_iter()
            .enumerate()
        {
            let contents = format!("written by a Writer, {n}");
            let appended = writer
                .post_entry(&contents, collection)
                .await
                .expect("write");
            assert_eq!(
                appended.collection_id,
                collection.unwrap_or("subledger:0"),
                "{appended:?}"
            );
            let entry = reader
                .get_entry(&appended.transaction_id, collection)
                .await
                .expect("read back");
            assert_eq!(entry.contents, contents);
            seqnos.push(
                ledger_core::TxId::parse(&appended.transaction_id)
                    .unwrap()
                    .seqno(),
            );
        }
        assert!(seqnos.windows(2).all(|w| w[0] < w[1]), "{seqnos:?}");

        let too_long = "c".repeat(300);
        match writer.post_entry("refused", Some(&too_long)).await {
            Err(Error::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (400, "CollectionIdTooLong"))
            }
            other => panic!("a 300-byte collection id: {other:?}"),
        }
        writer
            .post_entry("after an error", None)
            .await
            .expect("same connection");

        // The server closes a connection idle for a second; the next write opens another.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let appended = writer
            .post_entry("after the idle close", None)
            .await
            .expect("reopened");
        let entry = reader
            .get_entry(&appended.transaction_id, None)
            .await
            .unwrap();
        assert_eq!(entry.contents, "after the idle close");
    });
    // The server did close them (the listener logs each close at debug level).
    let log = ledger.server.output.stderr();
    assert!(
        log.contains("closing connection"),
        "the server's log: {log}"
    );
}

/// `cledger bench` runs every phase against a real server and reports consistent figures
/// (a smoke run: the numbers themselves are measured by hand, see docs/PERFORMANCE.md), over
/// HTTP/1.1 unless told `--protocol h2` (the server's request log names the version).
#[test]
fn bench_smoke_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger {
        server: Server::start(
            dir.path(),
            &["--log-level", "info,ledger_server::observe=debug"],
        ),
        _dir: dir,
    };
    let versions = |server: &Server| {
        let log = server.output.stderr();
        let count = |v: &str| log.matches(&format!("version={v}")).count();
        (count("HTTP/1.1"), count("HTTP/2.0"))
    };
    let env = Env::new();
    let out = env.path().join("bench.json");
    let out_arg = out.display().to_string();
    let run = ledger.run(
        &env,
        &[
            "bench",
            "--connections",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--collections",
            "2",
            "--verify-every",
            "2",
            "--output",
            &out_arg,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    for phase in ["append", "read", "receipt", "list", "p99.9 ms"] {
        assert!(run.stdout.contains(phase), "{}", run.describe());
    }
    let (h1, h2) = versions(&ledger.server);
    assert!(h1 > 100 && h2 == 0, "HTTP/1.1 requests {h1}, HTTP/2 {h2}");
    let figures: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(figures["protocol"], "h1");
    assert_eq!(figures["connections"], 4);
    assert_eq!(figures["size"], 256);
    let phases = figures["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 4, "{figures}");
    for phase in phases {
        assert!(phase["ops"].as_u64().unwrap() > 0, "{phase}");
        assert_eq!(phase["errors"], json!({}), "{phase}");
        let l = &phase["latency_ms"];
        let p = |k: &str| l[k].as_f64().unwrap();
        assert!(
            0.0 < p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99"),
            "{phase}"
        );
        assert!(p("p99") <= p("p99_9") && p("p99_9") <= p("max"), "{phase}");
    }
    let receipts = &phases[2];
    let verified = receipts["items"].as_u64().unwrap();
    let fetched = receipts["ops"].as_u64().unwrap();
    assert!(
        verified > 0 && verified < fetched,
        "every 2nd receipt verified: {receipts}"
    );
    assert!(phases[3]["items"].as_u64().unwrap() >= phases[3]["ops"].as_u64().unwrap());
    // The entries it wrote are really there.
    let list = ledger.run(&env, &["--json", "list", "--collection", "bench-1"]);
    assert_eq!(list.code, 0, "{}", list.describe());
    assert!(list.stdout.lines().count() > 0);
    // --json prints the same figures on stdout instead of the table.
    let run = ledger.run(
        &env,
        &[
            "--json",
            "bench",
            "--connections",
            "1",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--phases",
            "append",
            "--protocol",
            "h2",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let figures: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(figures["phases"][0]["phase"], "append");
    assert_eq!(figures["protocol"], "h2");
    let (_, h2) = versions(&ledger.server);
    assert!(h2 > 0, "no HTTP/2 request after --protocol h2");
}
