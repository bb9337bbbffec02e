//! Many idle connections against the real `cledger serve` under a low open-file limit
//! (`prlimit --nofile=N:N`, util-linux). Three cases:
//!
//! 1. With the default reserve, the server bounds its connections below what the limit leaves
//!    after the store's reserve (idle connections beyond it evict each other): hundreds of idle
//!    connections do not stop writes (every checkpoint still finds descriptors), `/readyz`
//!    stays 200.
//! 2. With the reserve turned off (`reserved_descriptors = 0`), idle connections take every
//!    descriptor and the store's checkpoint fails with EMFILE, as in the report: writes get 503
//!    `StorageUnavailable` with `Retry-After`, `/readyz` 503, and once the connections close,
//!    writes resume and `/readyz` is 200 again, without a restart.
//! 3. The limit is lowered while the node runs (`prlimit --pid`): connections that would use
//!    the store's reserve are closed at once and counted; writes go on.
//!
//! Idle means a TCP connection that never starts its TLS handshake; the handshake and idle
//! timeouts are raised so the server keeps them for the whole test.

mod support;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const CONFIG: &str = "handshake_timeout_secs = 300\nidle_timeout_secs = 300\n";

fn config_file(dir: &Path, extra: &str) -> String {
    let path = dir.join("cledger.toml");
    std::fs::write(&path, format!("{CONFIG}{extra}")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// These tests run the server under a low open-file limit, set with util-linux's `prlimit`.
fn require_prlimit() {
    let available = Command::new("prlimit")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        available,
        "prlimit (util-linux) is needed: these tests run the server under a low open-file limit"
    );
}

/// `count` TCP connections to the server that send nothing.
fn idle_connections(server: &Server, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", server.port))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect()
}

/// A metric's value from `/metrics` (the sum over its label sets), 0 when absent.
async fn metric(api: &Api, name: &str) -> f64 {
    let resp = api.raw(reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(resp.status.as_u16(), 200, "{}", resp.text);
    resp.text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of `/readyz` (it carries no transaction id, so not through `Resp::expect`).
async fn readyz(api: &Api) -> Resp {
    api.raw(reqwest::Method::GET, "/readyz", None, None).await
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's /proc/PID/fd")
        .count()
}

fn audit(data: &Path) {
    let mut command = Command::new(binary());
    command
        .args(["audit", "--data-dir", data.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clear_cledger_env(&mut command);
    let out = command.output().expect("run cledger audit");
    assert!(
        out.status.success(),
        "audit failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes for a while (several checkpoints, one per second), each one must succeed.
async fn writes_keep_succeeding(admin: &Api, label: &str, cert: &str) {
    let until = Instant::now() + Duration::from_millis(2500);
    let mut n = 0;
    while Instant::now() < until {
        let txid = admin.write_ok(None, &format!("{label} {n}")).await;
        n += 1;
        if n % 5 == 0 {
            verify_receipt_of(admin, &txid, cert).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = readyz(admin).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.text);
}

#[tokio::test]
async fn idle_connections_do_not_starve_the_store() {
    require_prlimit();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config_file(tmp.path(), "");
    let limit = 256;
    let server = Server::start_under(
        &["prlimit", &format!("--nofile={limit}:{limit}")],
        &data,
        &["--config", &config],
    );
    let admin = server.admin();
    let cert = server.service_cert_pem();
    admin.write_ok(None, "before").await;
    let log = server.output.stderr();
    let bound: usize = log
        .split("connections bounded at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no connection bound logged:\n{log}"));
    assert!(bound < limit - 64, "bound {bound}");

    // Without the bound the server could hold `bound + 64` (the descriptor reserve) before
    // running out; 100 more than the bound exceed that.
    let idle = idle_connections(&server, bound + 100);
    // Connections that never authenticate share the slots below those reserved for users
    // (`reserved_connections`, 64); each newcomer beyond them evicts the longest idle.
    let unauthenticated_slots = bound - 64.min(bound - 1);
    wait_until(
        "the server to fill the slots of unauthenticated connections",
        Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move {
                metric(&admin, "cledger_connections_open").await >= unauthenticated_slots as f64
                    && metric(&admin, "cledger_connections_evicted_total").await >= 100.0
            }
        },
    )
    .await;
    let open = metric(&admin, "cledger_connections_open").await;
    assert!(
        open <= bound as f64,
        "{open} connections open, bound {bound}"
    );
    let used = open_descriptors(server.pid());
    assert!(
        used + 32 <= limit,
        "{used} descriptors open under a limit of {limit}: the store's reserve is gone"
    );
    writes_keep_succeeding(&admin, "while held", &cert).await;
    assert_eq!(metric(&admin, "cledger_storage_faults_total").await, 0.0);

    drop(idle);
    let fresh = server.admin();
    wait_until(
        "a new connection to be served",
        Duration::from_secs(10),
        || {
            let fresh = fresh.clone();
            async move {
                fresh
                    .try_raw(reqwest::Method::GET, "/readyz", None, None)
                    .await
                    .is_ok_and(|r| r.status.as_u16() == 200)
            }
        },
    )
    .await;
    fresh.write_ok(None, "after").await;
    let status = server.terminate();
    assert!(status.success(), "{status}");
    audit(&data);
}

#[tokio::test]
async fn the_store_recovers_when_descriptors_return() {
    require_prlimit();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config_file(tmp.path(), "reserved_descriptors = 0\n");
    let server = Server::start_under(
        &["prlimit", "--nofile=128:128"],
        &data,
        &["--config", &config],
    );
    let admin = server.admin();
    let cert = server.service_cert_pem();
    let first = admin.write_ok(None, "before").await;
    // Past 16 leaves the first tree level file exists, so what the shortage hits next is the
    // checkpoint (the reported case), not the creation of a level file.
    for i in 0..20 {
        admin.write_ok(None, &format!("before {i}")).await;
    }

    // Nothing keeps the connections from taking every descriptor.
    let idle = idle_connections(&server, 200);
    let output = server.output.clone();
    wait_until(
        "accept to run out of descriptors",
        Duration::from_secs(10),
        || {
            let output = output.clone();
            async move { output.stderr().contains("Too many open files") }
        },
    )
    .await;
    // The next checkpoint (every second) cannot open the tree directory, or the tree needs a
    // new level file: writes stop. A write whose batch reached the segment before a derived
    // file failed is answered 500 `WriteIndeterminate` naming its transaction, which commits
    // once the store recovers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut indeterminate = Vec::new();
    let refused = loop {
        let resp = admin.write(None, "while short").await;
        match resp.status.as_u16() {
            200 => {}
            500 => {
                let body = resp.json();
                assert_eq!(body["error"]["code"], "WriteIndeterminate", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                let txid = message
                    .split("transaction ")
                    .nth(1)
                    .and_then(|rest| rest.split(':').next())
                    .unwrap_or_else(|| panic!("no transaction named: {message}"));
                indeterminate.push(txid.to_owned());
            }
            _ => break resp,
        }
        assert!(Instant::now() < deadline, "writes never stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let retry_after = refused.header("retry-after");
    let body = refused.json();
    assert_eq!(refused.status.as_u16(), 503, "{body}");
    assert_eq!(body["error"]["code"], "StorageUnavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("file descriptors") && message.contains("nothing was written"),
        "{message}"
    );
    assert_eq!(
        retry_after.as_deref(),
        Some("5"),
        "a shortage is expected to clear"
    );
    let ready = readyz(&admin).await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.text);
    assert!(ready.text.contains("file descriptors"), "{}", ready.text);
    // Reads go on.
    let got = admin.get(&format!("/app/transactions/{first}")).await.ok();
    assert_eq!(got["entry"]["contents"], "before", "{got}");

    // The connections go away: the store's probe succeeds, writes resume, same process.
    drop(idle);
    wait_until("/readyz to be 200 again", Duration::from_secs(15), || {
        let admin = admin.clone();
        async move { readyz(&admin).await.status.as_u16() == 200 }
    })
    .await;
    let after = admin.write_ok(None, "after").await;
    for txid in &indeterminate {
        wait_committed(&admin, txid).await;
        let got = admin.get(&format!("/app/transactions/{txid}")).await.ok();
        assert_eq!(got["entry"]["contents"], "while short", "{got}");
    }
    verify_receipt_of(&admin, &after, &cert).await;
    verify_receipt_of(&admin, &first, &cert).await;
    assert!(metric(&admin, "cledger_storage_faults_total{kind=\"Resources\"}").await >= 1.0);
    let status = server.terminate();
    assert!(status.success(), "{status}");
    audit(&data);
}

#[tokio::test]
async fn connections_into_the_reserve_are_refused_at_once() {
    require_prlimit();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config_file(tmp.path(), "");
    let server = Server::start(&data, &["--config", &config]);
    let admin = server.admin();
    let cert = server.service_cert_pem();
    admin.write_ok(None, "before").await;
    // Lowered while running: the bound set at start no longer fits, the per-connection check
    // (which reads the limit at every accept) keeps the reserve.
    let limit = 160;
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &server.pid().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit");
    assert!(status.success());

    let idle = idle_connections(&server, 250);
    wait_until("connections to be refused", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move { metric(&admin, "cledger_connections_refused_total").await >= 100.0 }
    })
    .await;
    let used = open_descriptors(server.pid());
    assert!(
        used + 32 <= limit,
        "{used} descriptors open under a limit of {limit}"
    );
    writes_keep_succeeding(&admin, "while refused", &cert).await;
    assert_eq!(metric(&admin, "cledger_storage_faults_total").await, 0.0);
    let output = server.output.clone();
    wait_until("the refusal to be logged", Duration::from_secs(5), || {
        let output = output.clone();
        async move { output.stderr().contains("reserved for the store") }
    })
    .await;
    drop(idle);
    let status = server.terminate();
    assert!(status.success(), "{status}");
    audit(&data);
}
