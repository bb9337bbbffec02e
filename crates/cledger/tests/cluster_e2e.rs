//! A cledger cluster of real `cledger serve` processes on loopback, operated with the
//! `cledger` command line and written to with the `cledger` client library.
//!
//! - `membership_writes_and_removal`: a node founds the service; a second joins with a token
//!   made by `cledger cluster join-token`, a third by `cledger cluster approve`; a reused and
//!   an expired token are refused; a certificate the service did not issue cannot reach the
//!   peer port; writes through every node succeed (a backup answers `307` to the primary, and
//!   the client keeps its certificate or bearer token), reads on every node; `cledger cluster
//!   remove` retires a node and the other two keep taking writes; `cledger audit` passes on
//!   every node's directory.
//! - `primary_killed_under_load`: several client threads write through all nodes while the
//!   primary is SIGKILLed and restarted, `CLEDGER_FAILOVER_ROUNDS` times (default 20): each
//!   time a new primary takes writes within `FAILOVER_LIMIT`; at the end every acknowledged
//!   write reads back with the same contents and txid on every node, the nodes list the same
//!   entries, and `cledger audit` passes on every directory.
//! - `five_nodes_primary_paused_and_a_backup_killed`: five nodes under load; the primary is
//!   paused (SIGSTOP) and a new one elected, a backup is killed (three of five remain), the
//!   paused node continues (SIGCONT) and catches up without taking over, the killed one
//!   restarts and catches up; the same end checks.
//! - `primary_partitioned_from_the_majority`: three nodes in network namespaces; the primary's
//!   peer link is cut while its clients still reach it: the writes it takes are rolled back
//!   (their writers are told, with the txid, which then answers `Invalid`), the majority goes
//!   on, and after the heal the old primary catches up; the same end checks.
//! - `nodes_catch_up_a_large_ledger`: two nodes join a ledger of `CLEDGER_LARGE_LEDGER`
//!   transactions (default 100,000) and serve reads and receipts of the old ones; a node
//!   restarted after missing `CLEDGER_MISSED` (default 10,000) catches up; the same end checks.
//! - `primary_killed_right_after_forming`: restarted before any checkpoint, the old primary
//!   rejoins its cluster (it once founded a second one); the same end checks.
//! - `a_lost_cluster_is_recovered_from_a_backup`: every node is lost; a backup of one founds a
//!   new service with `--recover` (old writes and receipts intact, old nodes retired, a new
//!   node joins); `--recover` is refused on a member's own directory.
//! - `the_signature_interval_paces_the_primarys_signatures`: a cluster of one started with
//!   `--signature-interval-ms 400` takes at least three intervals to acknowledge four writes
//!   made one after another (each waits for a signature of its own).
//!
//! The tests run one after the other (they would share 2 cores otherwise).

mod support;

use ledger_client::{Auth, Client, ClientConfig, Entry, ListQuery};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::cluster::{Node, Operator, cledger, describe_all, try_wait_for, wait_for};
use support::netns::{Host, Network};

/// One test at a time: each runs three servers on a machine with few cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long a node may take to join (fetch its identity, catch up, become a voter).
const JOIN_LIMIT: Duration = Duration::from_secs(30);
/// How long after the primary's SIGKILL a write must succeed again.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Administrator of the test service: `admin_cert.pem` (certificate, given to the first
/// node with `--admin-cert`) and `admin.pem` (certificate and key, for the client).
struct Admin {
    cert_path: PathBuf,
    bundle_path: PathBuf,
    bundle: String,
}

fn admin(root: &Path) -> Admin {
    let identity =
        ledger_identity::create_client_identity("cluster admin", ledger_identity::Curve::P384)
            .unwrap();
    let cert_path = root.join("admin_cert.pem");
    let bundle_path = root.join("admin.pem");
    std::fs::write(&cert_path, &identity.cert_pem).unwrap();
    std::fs::write(&bundle_path, identity.bundle_pem()).unwrap();
    Admin {
        cert_path,
        bundle_path,
        bundle: identity.bundle_pem(),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Starts the founding node and waits until it serves.
/// A node on loopback, or in `host`'s network namespace.
fn place(name: &str, root: &Path, extra: &[String], host: Option<&Host>) -> Node {
    match host {
        None => Node::new(name, root, extra),
        Some(host) => Node::in_namespace(name, root, extra, host),
    }
}

fn found(
    root: &Path,
    admin: &Admin,
    extra: &[String],
    host: Option<&Host>,
) -> (Node, PathBuf, String) {
    let mut args = strings(&["--admin-cert", admin.cert_path.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let mut node = place("n1", root, &args, host);
    node.start();
    let service_cert = node.data_dir.join("service_cert.pem");
    wait_for("the first node's service certificate", JOIN_LIMIT, || {
        if let Some(status) = node.exited() {
            panic!("n1 exited ({status})\n{}", node.output.describe());
        }
        std::fs::read_to_string(&service_cert)
            .ok()
            .filter(|pem| pem.contains("END CERTIFICATE"))
            .ok_or_else(|| "not written yet".to_owned())
    });
    let pem = std::fs::read_to_string(&service_cert).unwrap();
    node.wait_serving(&pem, JOIN_LIMIT);
    (node, service_cert, pem)
}

/// The arguments of a node joining through `via`.
fn join_args(
    via: &Node,
    service_cert: &Path,
    token: Option<&Path>,
    extra: &[String],
) -> Vec<String> {
    let mut args = strings(&[
        "--join",
        &via.address(),
        "--service-cert",
        service_cert.to_str().unwrap(),
    ]);
    if let Some(token) = token {
        args.extend(strings(&["--join-token", token.to_str().unwrap()]));
    }
    args.extend_from_slice(extra);
    args
}

/// The node id of a data directory's node key: hex SHA-256 of its public key (as CCF names
/// nodes). The key is certified by a throwaway service only to read its public key.
fn node_id_of_dir(dir: &Path) -> String {
    let key = std::fs::read_to_string(dir.join("identity/node_key.pem"))
        .unwrap_or_else(|e| panic!("{}: no node key: {e}", dir.display()));
    let throwaway = ledger_identity::create_service_identity(ledger_identity::Curve::P256).unwrap();
    let cert = ledger_identity::issue_node_certificate(&throwaway, &key, &[]).unwrap();
    let cert = ledger_core::x509::Cert::from_pem(&cert).unwrap();
    ledger_core::hash::sha256(&cert.spki_der()).to_string()
}

/// The node key appears when a joining node first asks.
fn wait_node_key(node: &mut Node) -> String {
    let path = node.data_dir.join("identity/node_key.pem");
    wait_for(&format!("{}'s node key", node.name), JOIN_LIMIT, || {
        if let Some(status) = node.exited() {
            panic!(
                "{} exited ({status})\n{}",
                node.name,
                node.output.describe()
            );
        }
        if path.exists() {
            Ok(())
        } else {
            Err("no key yet".into())
        }
    });
    node_id_of_dir(&node.data_dir)
}

/// `cledger cluster status --output json` until `check` accepts it.
fn wait_status(
    op: &Operator,
    endpoint: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(what, limit, || {
        let run = op.run(endpoint, &["cluster", "status", "--output", "json"]);
        if !run.status.success() {
            return Err(format!("status failed: {}", run.stderr));
        }
        let v: serde_json::Value =
            serde_json::from_str(run.stdout.trim()).map_err(|e| e.to_string())?;
        if check(&v) { Ok(v) } else { Err(v.to_string()) }
    })
}

fn node_row<'a>(status: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node_id"].as_str() == Some(id))
}

fn trusted_count(status: &serde_json::Value) -> usize {
    status["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["status"] == "Trusted").count())
}

fn primary_count(status: &serde_json::Value) -> usize {
    status["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["role"] == "primary").count())
}

/// A joining node whose token is refused must not get in: it stops with an error that says
/// so (or keeps waiting without ever becoming Trusted), and the service never lists it
/// Trusted.
fn assert_join_refused(mut node: Node, op: &Operator, via: &Node, what: &str) {
    node.start();
    let start = Instant::now();
    let exit = loop {
        if let Some(status) = node.exited() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(15) {
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    // The key is made before the node first asks.
    let id = node_id_of_dir(&node.data_dir);
    let status = op.status(&via.address());
    let row = node_row(&status, &id);
    assert!(
        row.is_none_or(|r| r["status"] != "Trusted"),
        "{what}: the node was admitted: {status}\n{}",
        node.output.describe()
    );
    let text = format!("{}{}", node.output.stdout(), node.output.stderr());
    let said = ["403", "refused", "NotAllowed", "invalid", "expired"]
        .iter()
        .any(|w| text.contains(w));
    match exit {
        Some(status) => assert!(
            !status.success() && said,
            "{what}: the joining node should stop with an error naming the refusal, exited {status}\n{text}"
        ),
        None => {
            assert!(
                said,
                "{what}: the joining node still waits and never said why\n{text}"
            );
            node.kill();
        }
    }
}

/// `cledger audit --json` on a stopped node's directory.
fn audit(node: &Node) -> serde_json::Value {
    let run = cledger(&[
        "audit",
        "--json",
        "--data-dir",
        node.data_dir.to_str().unwrap(),
    ]);
    let report = run.json(&format!("cledger audit of {}", node.name));
    assert_eq!(report["ok"], true, "audit of {}: {report}", node.name);
    report
}

fn client(node: &Node, service_pem: &str, bundle: &str) -> Client {
    node.client(service_pem, Auth::Certificate(bundle.to_owned()))
}

/// Reads `txid` on `node` until it is there (a backup may not have committed it yet).
fn read_back(client: &Client, txid: &str, limit: Duration) -> Entry {
    wait_for(
        &format!("{txid} on {}", client.config().endpoint),
        limit,
        || client.get_entry(txid, None).map_err(|e| e.to_string()),
    )
}

/// A client that does not follow redirects, to see the server's own answers.
fn raw_client(service_pem: &str, bundle: Option<&str>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(service_pem.as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if let Some(bundle) = bundle {
        builder = builder.identity(reqwest::Identity::from_pem(bundle.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[test]
fn membership_writes_and_removal() {
    let _serial = serial();
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let admin = admin(root);

    // Every node trusts the same token issuer: the bearer-token write below goes through a
    // backup and is redirected.
    let keys = root.join("issuer");
    std::fs::create_dir_all(&keys).unwrap();
    let key = support::jwt::new_key(&keys, "ec-1", jsonwebtoken::Algorithm::ES256);
    let jwks_path = root.join("jwks.json");
    std::fs::write(&jwks_path, support::jwt::jwks(&[&key])).unwrap();
    let jwt = strings(&[
        "--jwt-issuer",
        support::jwt::ISSUER,
        "--jwt-audience",
        support::jwt::AUDIENCE,
        "--jwt-jwks-file",
        jwks_path.to_str().unwrap(),
    ]);
    let mut first = jwt.clone();
    first.extend(strings(&["--admin-oid", support::jwt::ADMIN_OID]));

    let (mut n1, service_cert, service_pem) = found(root, &admin, &first, None);
    let op = Operator {
        service_cert: service_cert.clone(),
        cert: admin.bundle_path.clone(),
    };
    let status = op.status(&n1.address());
    assert_eq!(trusted_count(&status), 1, "{status}");
    assert_eq!(primary_count(&status), 1, "{status}");

    // Only an Administrator makes tokens.
    let (stranger, _) = support::new_user("not an administrator");
    let stranger_path = root.join("stranger.pem");
    std::fs::write(&stranger_path, stranger).unwrap();
    let nope = root.join("nope.token");
    let refused = Operator {
        service_cert: service_cert.clone(),
        cert: stranger_path,
    }
    .run(
        &n1.address(),
        &["cluster", "join-token", "--out", nope.to_str().unwrap()],
    );
    assert!(
        !refused.status.success() && refused.stderr.contains("(HTTP 403)"),
        "a join token for a non-administrator: {refused:?}"
    );
    assert!(!nope.exists());

    // Node 2 joins with a token made by the command line.
    let token2 = root.join("n2.token");
    let out = op
        .run(
            &n1.address(),
            &[
                "cluster",
                "join-token",
                "--expires",
                "10m",
                "--out",
                token2.to_str().unwrap(),
            ],
        )
        .ok("cledger cluster join-token")
        .to_owned();
    assert!(out.contains("join token written to"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token2).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }
    let mut n2 = Node::new(
        "n2",
        root,
        &join_args(&n1, &service_cert, Some(&token2), &jwt),
    );
    n2.start();
    n2.wait_serving(&service_pem, JOIN_LIMIT);
    let n2_id = node_id_of_dir(&n2.data_dir);
    wait_status(&op, &n1.address(), "n2 Trusted", JOIN_LIMIT, |s| {
        node_row(s, &n2_id).is_some_and(|r| r["status"] == "Trusted")
    });

    // The same token again, and a token that expired, are refused.
    let reuse = Node::new(
        "reused",
        root,
        &join_args(&n1, &service_cert, Some(&token2), &[]),
    );
    assert_join_refused(reuse, &op, &n1, "a reused token");
    let expired = root.join("expired.token");
    op.run(
        &n1.address(),
        &[
            "cluster",
            "join-token",
            "--expires",
            "1s",
            "--out",
            expired.to_str().unwrap(),
        ],
    )
    .ok("join-token --expires 1s");
    thread::sleep(Duration::from_millis(2100));
    let late = Node::new(
        "late",
        root,
        &join_args(&n1, &service_cert, Some(&expired), &[]),
    );
    assert_join_refused(late, &op, &n1, "an expired token");

    // Node 3 asks without a token (through node 2) and waits until approved.
    let mut n3 = Node::new("n3", root, &join_args(&n2, &service_cert, None, &jwt));
    n3.start();
    let n3_id = wait_node_key(&mut n3);
    wait_status(&op, &n1.address(), "n3 Pending", JOIN_LIMIT, |s| {
        node_row(s, &n3_id).is_some_and(|r| r["status"] == "Pending")
    });
    let approved = op
        .run(&n2.address(), &["cluster", "approve", &n3_id[..12]])
        .ok("cledger cluster approve")
        .to_owned();
    assert!(approved.contains(&n3_id), "{approved}");
    n3.wait_serving(&service_pem, JOIN_LIMIT);
    let status = wait_status(
        &op,
        &n3.address(),
        "3 Trusted nodes, one primary",
        JOIN_LIMIT,
        |s| {
            trusted_count(s) == 3
                && primary_count(s) == 1
                && s["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|n| n["lag"].is_u64())
        },
    );
    eprintln!("cluster formed in {:.1?}: {status}", started.elapsed());
    let table = op
        .run(&n3.address(), &["cluster", "status"])
        .ok("cledger cluster status")
        .to_owned();
    eprintln!("{table}");
    assert_eq!(table.lines().count(), 4, "header and three nodes:\n{table}");
    assert_eq!(table.matches("Trusted").count(), 3, "{table}");
    assert_eq!(table.matches("primary").count(), 1, "{table}");

    eprintln!("[{:.1?}] endpoints done", started.elapsed());
    // The node endpoints agree with each other.
    let nodes = [&n1, &n2, &n3];
    let clients: Vec<Client> = nodes
        .iter()
        .map(|n| client(n, &service_pem, &admin.bundle))
        .collect();
    let primaries: Vec<bool> = clients.iter().map(|c| c.is_primary().unwrap()).collect();
    assert_eq!(primaries.iter().filter(|p| **p).count(), 1, "{primaries:?}");
    let p = primaries.iter().position(|p| *p).unwrap();
    let network = clients[(p + 1) % 3].network().unwrap();
    let primary_id = node_id_of_dir(&nodes[p].data_dir);
    assert_eq!(network.primary_id.as_deref(), Some(primary_id.as_str()));
    assert_eq!(network.service_status, "Open");
    assert_eq!(network.service_certificate.trim(), service_pem.trim());
    assert_eq!(clients[p].consensus().unwrap().leadership_state, "Leader");
    assert_eq!(
        clients[(p + 1) % 3].consensus().unwrap().leadership_state,
        "Follower"
    );

    // A certificate the service did not issue cannot reach the peer port; this node's own
    // certificate can (the control: the port is reachable at all).
    let peer_url = format!("https://127.0.0.1:{}/raft/vote", n1.peer_port);
    let own = format!(
        "{}{}",
        std::fs::read_to_string(n1.data_dir.join("identity/node_cert.pem")).unwrap(),
        std::fs::read_to_string(n1.data_dir.join("identity/node_key.pem")).unwrap()
    );
    let answered = raw_client(&service_pem, Some(&own))
        .post(&peer_url)
        .body(Vec::<u8>::new())
        .send();
    assert!(
        answered.is_ok(),
        "the peer port with a service-issued node certificate: {answered:?}"
    );
    let other_service =
        ledger_identity::create_service_identity(ledger_identity::Curve::P384).unwrap();
    let other_key = ledger_identity::generate_private_key(ledger_identity::Curve::P384).unwrap();
    let other_cert =
        ledger_identity::issue_node_certificate(&other_service, &other_key, &[]).unwrap();
    let (self_signed, _) = support::new_user("not a node");
    for (what, bundle) in [
        (
            "a node certificate of another service",
            format!("{other_cert}{other_key}"),
        ),
        ("a self-signed certificate", self_signed),
    ] {
        let refused = raw_client(&service_pem, Some(&bundle))
            .post(&peer_url)
            .body(Vec::<u8>::new())
            .send();
        assert!(
            refused.is_err(),
            "{what} reached the peer port: {:?}",
            refused.map(|r| r.status())
        );
    }
    let anonymous = raw_client(&service_pem, None).post(&peer_url).send();
    assert!(
        anonymous.is_err(),
        "no client certificate reached the peer port"
    );

    eprintln!("[{:.1?}] peer port done", started.elapsed());
    // A backup answers a write with 307 to the primary's client address, same path and query.
    let backup = (p + 1) % 3;
    let path = "/app/transactions?api-version=2022-05-13&collectionId=redirected";
    let resp = raw_client(&service_pem, Some(&admin.bundle))
        .post(format!("{}{path}", nodes[backup].address()))
        .header("content-type", "application/json")
        .body(r#"{"contents":"not followed"}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 307, "a write to a backup");
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("{}{path}", nodes[p].address())
    );

    eprintln!("[{:.1?}] 307 done", started.elapsed());
    // Writes through every node with `cledger append`; each reads back on every node.
    let mut written = Vec::new();
    for node in nodes {
        let contents = format!("written through {}", node.name);
        let run = op.run(&node.address(), &["append", &contents]);
        let txid = run
            .ok(&format!("cledger append through {}", node.name))
            .trim()
            .to_owned();
        ledger_core::TxId::parse(&txid).unwrap_or_else(|e| panic!("{txid:?}: {e}"));
        written.push((txid, contents));
    }
    // A bearer token survives the redirect (reqwest alone drops it when the port changes).
    let token = support::jwt::sign(&key, &support::jwt::claims(support::jwt::ADMIN_OID));
    let by_token = nodes[backup]
        .client(&service_pem, Auth::Token(token))
        .append("written with a token through a backup", None, &[])
        .expect("a bearer-token write through a backup");
    written.push((
        by_token.transaction_id,
        "written with a token through a backup".to_owned(),
    ));
    eprintln!("[{:.1?}] appends done", started.elapsed());
    // The async client follows the redirect too.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let async_client = ledger_client::nonblocking::Client::new(ClientConfig::new(
        nodes[backup].address(),
        service_pem.as_str(),
        Auth::Certificate(admin.bundle.clone()),
    ))
    .unwrap();
    let by_async = runtime
        .block_on(async_client.post_entry("written by the async client through a backup", None))
        .expect("an async write through a backup");
    written.push((
        by_async.transaction_id,
        "written by the async client through a backup".to_owned(),
    ));
    // So does the load generator's Writer, which then stays with the primary.
    let writer = ledger_client::writer::Writer::new(&ClientConfig::new(
        nodes[backup].address(),
        service_pem.as_str(),
        Auth::Certificate(admin.bundle.clone()),
    ))
    .unwrap();
    for n in 0..2 {
        let contents = format!("written by a Writer through a backup, {n}");
        let by_writer = runtime
            .block_on(writer.post_entry(&contents, None))
            .expect("a Writer's write through a backup");
        written.push((by_writer.transaction_id, contents));
    }
    // Its connections live on this runtime, which nothing polls from now on: close them, or
    // the servers' graceful stop would wait for them.
    drop(writer);
    drop(async_client);
    drop(runtime);
    eprintln!("[{:.1?}] async done", started.elapsed());
    for (txid, contents) in &written {
        for c in &clients {
            let entry = read_back(c, txid, Duration::from_secs(10));
            assert_eq!(
                &entry.contents,
                contents,
                "{txid} on {}",
                c.config().endpoint
            );
            assert_eq!(&entry.transaction_id, txid);
        }
        for node in nodes {
            let run = op.run(&node.address(), &["get", txid]);
            assert_eq!(
                run.ok("cledger get").trim_end(),
                contents,
                "on {}",
                node.name
            );
        }
    }

    eprintln!("[{:.1?}] reads done", started.elapsed());
    // Remove a backup: it is shown Retired, and the other two keep taking writes.
    let removed = if p == 2 { 1 } else { 2 };
    let removed_id = node_id_of_dir(&nodes[removed].data_dir);
    let out = op
        .run(
            &nodes[backup].address(),
            &["cluster", "remove", &removed_id[..12]],
        )
        .ok("cledger cluster remove")
        .to_owned();
    assert!(out.contains(&removed_id), "{out}");
    let remaining: Vec<usize> = (0..3).filter(|i| *i != removed).collect();
    wait_status(
        &op,
        &nodes[remaining[0]].address(),
        "the removed node Retired",
        Duration::from_secs(15),
        |s| {
            node_row(s, &removed_id).is_some_and(|r| r["status"] == "Retired")
                && trusted_count(s) == 2
                && primary_count(s) == 1
        },
    );
    for i in &remaining {
        for n in 0..3 {
            let contents = format!("after removal {n} through {}", nodes[*i].name);
            let a = clients[*i]
                .append(&contents, None, &[])
                .unwrap_or_else(|e| panic!("write through {} after removal: {e}", nodes[*i].name));
            for j in &remaining {
                assert_eq!(
                    read_back(&clients[*j], &a.transaction_id, Duration::from_secs(10)).contents,
                    contents
                );
            }
        }
    }

    eprintln!("[{:.1?}] removal done", started.elapsed());
    // Stop everything; every directory passes the audit.
    drop(clients);
    for node in [&mut n1, &mut n2, &mut n3] {
        if node.is_running() {
            let t = Instant::now();
            let status = node.terminate();
            eprintln!("{} stopped ({status}) in {:.1?}", node.name, t.elapsed());
        }
    }
    for node in [&n1, &n2, &n3] {
        let report = audit(node);
        assert!(report["transactions"].as_u64().unwrap() > 10, "{report}");
    }
    eprintln!("[{:.1?}] audit done", started.elapsed());
    // A standalone node has no cluster to show, and the command says so.
    let standalone = support::Server::start(&root.join("standalone"), &[]);
    let run = cledger(&[
        "--endpoint",
        &standalone.base,
        "--service-cert",
        standalone
            .data_dir
            .join("service_cert.pem")
            .to_str()
            .unwrap(),
        "--cert",
        standalone.data_dir.join("admin.pem").to_str().unwrap(),
        "cluster",
        "status",
    ]);
    assert!(
        !run.status.success() && run.stderr.contains("not a cluster node"),
        "cluster status on a standalone node: {run:?}"
    );
    eprintln!("membership_writes_and_removal: {:.1?}", started.elapsed());
}

/// A write the service acknowledged.
#[derive(Clone, Debug)]
struct Acked {
    txid: String,
    contents: String,
}

fn load_client(address: &str, service_pem: &str, bundle: &str) -> Client {
    let mut config = ClientConfig::new(address, service_pem, Auth::Certificate(bundle.to_owned()));
    config.request_timeout = Duration::from_secs(5);
    config.retry_unavailable = Duration::from_secs(2);
    Client::new(config).unwrap()
}

/// What kind of failure a write met: the ACL code, or the kind of client error with the
/// gist of its message.
fn error_kind(e: &ledger_client::Error) -> String {
    use ledger_client::Error::*;
    match e {
        Api { status, code, .. } => format!("HTTP {status} {code}"),
        Transport(m) if m.contains("Connection refused") => "connection refused".into(),
        Transport(m) if m.contains("timed out") => "transport: timed out".into(),
        Transport(m) => format!("transport: {}", m.rsplit(": ").next().unwrap_or(m)),
        Protocol(m) => format!("protocol: {}", m.split(':').next().unwrap_or(m)),
        Timeout(_) => "timeout".into(),
        other => other.to_string(),
    }
}

/// Client threads writing through every node in turn, recording what was acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<Mutex<BTreeMap<String, u64>>>,
    writers: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(nodes: &[Node], threads: usize, service_pem: &str, bundle: &str) -> Load {
        let addresses: Vec<String> = nodes.iter().map(Node::address).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(BTreeMap::new()));
        let writers = (0..threads)
            .map(|id| {
                let (addresses, pem, bundle) =
                    (addresses.clone(), service_pem.to_owned(), bundle.to_owned());
                let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
                thread::spawn(move || writer(id, addresses, pem, bundle, stop, acked, failed))
            })
            .collect();
        let load = Load {
            stop,
            acked,
            failed,
            writers,
        };
        load.wait_for_more(20, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the load does not get going: {e}"));
        load
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn push(&self, acked: Acked) {
        self.acked.lock().unwrap().push(acked);
    }

    /// Waits until `more` writes were acknowledged after now.
    fn wait_for_more(&self, more: usize, limit: Duration) -> Result<(), String> {
        let before = self.acked_count();
        try_wait_for("more acknowledged writes", limit, || {
            if self.acked_count() >= before + more {
                Ok(())
            } else {
                Err(format!("{} writes", self.acked_count() - before))
            }
        })
    }

    /// Stops the writers; what was acknowledged, and the failures counted by kind.
    fn finish(self) -> (Vec<Acked>, BTreeMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers {
            w.join().expect("writer thread");
        }
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (acked, failed)
    }
}

/// Writes through the nodes in turn until `stop`; records what was acknowledged.
fn writer(
    id: usize,
    addresses: Vec<String>,
    service_pem: String,
    bundle: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<Mutex<BTreeMap<String, u64>>>,
) {
    let clients: Vec<Client> = addresses
        .iter()
        .map(|a| load_client(a, &service_pem, &bundle))
        .collect();
    // A node that refused a connection or did not answer is left alone for a while (it is
    // down, or paused).
    let mut down_until = vec![Instant::now(); clients.len()];
    let mut next = id;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let i = next % clients.len();
        next += 1;
        if down_until[i] > Instant::now() {
            if down_until.iter().all(|d| *d > Instant::now()) {
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        }
        let contents = format!("load {id}-{n}");
        n += 1;
        match clients[i].append(&contents, None, &[]) {
            Ok(a) => acked.lock().unwrap().push(Acked {
                txid: a.transaction_id,
                contents,
            }),
            Err(e) => {
                let kind = error_kind(&e);
                if kind == "connection refused" || kind.contains("timed out") || kind == "timeout" {
                    down_until[i] = Instant::now() + Duration::from_millis(500);
                }
                *failed.lock().unwrap().entry(kind).or_default() += 1;
            }
        }
    }
}

/// The value, or a panic naming the step with every node's output (saved to files).
fn or_dump<T>(result: Result<T, String>, step: &str, test: &str, nodes: &[Node], load: &Load) -> T {
    result.unwrap_or_else(|e| {
        load.stop.store(true, Ordering::Relaxed);
        panic!("{step}: {e}\n{}", describe_all(test, nodes))
    })
}

/// The one node that says it is the primary (paused and stopped nodes are not asked).
fn primary_of(nodes: &[Node], service_pem: &str) -> Result<usize, String> {
    primary_among(nodes, service_pem, &[])
}

/// [`primary_of`], not asking the nodes in `except` (cut off from the others).
fn primary_among(nodes: &[Node], service_pem: &str, except: &[usize]) -> Result<usize, String> {
    let says: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| n.is_running() && !n.is_paused() && !except.contains(i))
        .filter(|(_, n)| {
            n.client(service_pem, Auth::None)
                .is_primary()
                .unwrap_or(false)
        })
        .map(|(i, _)| i)
        .collect();
    match says.as_slice() {
        [one] => Ok(*one),
        other => Err(format!("nodes saying they are primary: {other:?}")),
    }
}

fn commit_seqno(node: &Node, service_pem: &str) -> Result<u64, String> {
    let txid = node
        .client(service_pem, Auth::None)
        .commit()
        .map_err(|e| e.to_string())?;
    Ok(ledger_core::TxId::parse(&txid).unwrap().seqno())
}

/// A cluster of `size` nodes formed with join tokens, with one primary.
struct Formed {
    nodes: Vec<Node>,
    service_pem: String,
    admin: Admin,
    took: Duration,
    /// The namespaces the nodes run in, if any (dropped after the nodes).
    network: Option<Network>,
    _root: tempfile::TempDir,
}

fn form(size: usize) -> Formed {
    form_with(size, None, &[], |_| {})
}

/// [`form`], with node k in `network`'s host k (if given), `founder_args` added to the first
/// node's command line, and `prepare` given the founder's data directory before it first
/// starts.
fn form_with(
    size: usize,
    network: Option<Network>,
    founder_args: &[&str],
    prepare: impl FnOnce(&Path),
) -> Formed {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let admin = admin(root.path());
    prepare(&root.path().join("n1"));
    let host = |k: usize| network.as_ref().map(|n| &n.hosts[k - 1]);
    let (n1, service_cert, service_pem) =
        found(root.path(), &admin, &strings(founder_args), host(1));
    let op = Operator {
        service_cert: service_cert.clone(),
        cert: admin.bundle_path.clone(),
    };
    let mut nodes = vec![n1];
    for k in 2..=size {
        let name = format!("n{k}");
        let token = root.path().join(format!("{name}.token"));
        op.run(
            &nodes[0].address(),
            &["cluster", "join-token", "--out", token.to_str().unwrap()],
        )
        .ok("cledger cluster join-token");
        let mut node = place(
            &name,
            root.path(),
            &join_args(&nodes[0], &service_cert, Some(&token), &[]),
            host(k),
        );
        node.start();
        node.wait_serving(&service_pem, JOIN_LIMIT);
        nodes.push(node);
    }
    wait_status(
        &op,
        &nodes[0].address(),
        &format!("{size} Trusted nodes"),
        JOIN_LIMIT,
        |s| trusted_count(s) == size && primary_count(s) == 1,
    );
    Formed {
        nodes,
        service_pem,
        admin,
        took: started.elapsed(),
        network,
        _root: root,
    }
}

/// Time from now until a write through the nodes not in `down` is acknowledged (a new
/// primary took it). No waiting on Retry-After, and a short timeout (a backup may redirect
/// to a paused primary until it learns of the new one): the time is the server's, to 50 ms.
fn time_to_write(
    formed: &Formed,
    down: &[usize],
    what: &str,
    load: &Load,
) -> Result<Duration, String> {
    let since = Instant::now();
    let live: Vec<Client> = (0..formed.nodes.len())
        .filter(|i| !down.contains(i))
        .map(|i| {
            let mut config = ClientConfig::new(
                formed.nodes[i].address(),
                formed.service_pem.as_str(),
                Auth::Certificate(formed.admin.bundle.clone()),
            );
            config.retry_unavailable = Duration::ZERO;
            config.request_timeout = Duration::from_secs(1);
            Client::new(config).unwrap()
        })
        .collect();
    let mut k = 0;
    let acked = try_wait_for(&format!("a write after {what}"), FAILOVER_LIMIT, || {
        k += 1;
        let contents = format!("probe after {what} #{k}");
        live[k % live.len()]
            .append(&contents, None, &[])
            .map(|a| Acked {
                txid: a.transaction_id,
                contents,
            })
            .map_err(|e| e.to_string())
    })?;
    load.push(acked);
    Ok(since.elapsed())
}

/// Waits until node `i` has committed as far as the primary had when asked.
fn caught_up(formed: &Formed, i: usize) -> Result<Duration, String> {
    let since = Instant::now();
    let (nodes, pem) = (&formed.nodes, formed.service_pem.as_str());
    let q = try_wait_for("a primary", Duration::from_secs(15), || {
        primary_of(nodes, pem)
    })?;
    let target = commit_seqno(&nodes[q], pem).unwrap_or(0);
    let name = &nodes[i].name;
    try_wait_for(&format!("{name} catching up"), JOIN_LIMIT, || {
        let own = commit_seqno(&nodes[i], pem)?;
        if own >= target {
            Ok(())
        } else {
            Err(format!("{own} < {target}"))
        }
    })
    // When it does not catch up, say how the node's own commit fares on the primary.
    .map_err(|e| {
        let status = |n: usize, txid: &str| {
            client(&nodes[n], pem, &formed.admin.bundle)
                .status(txid)
                .map_or_else(|e| e.to_string(), |s| s.state)
        };
        match nodes[i].client(pem, Auth::None).commit() {
            Ok(txid) => format!(
                "{e}; {name}'s commit {txid} is {} on {name} and {} on the primary {}",
                status(i, &txid),
                status(q, &txid),
                nodes[q].name
            ),
            Err(_) => e,
        }
    })?;
    Ok(since.elapsed())
}

/// The end of a fault test: every node reaches the same commit and lists the same entries;
/// every acknowledged write reads back with its contents and txid on every node; after a
/// clean stop `cledger audit` passes on every directory.
fn check_converged(mut formed: Formed, acked: &[Acked], test: &str) {
    let (nodes, pem) = (&formed.nodes, formed.service_pem.as_str());
    let converged = try_wait_for(
        "the same commit on every node",
        Duration::from_secs(15),
        || {
            let commits: Vec<u64> = nodes
                .iter()
                .map(|n| commit_seqno(n, pem))
                .collect::<Result<_, _>>()?;
            if commits.windows(2).all(|w| w[0] == w[1]) {
                Ok(())
            } else {
                Err(format!("{commits:?}"))
            }
        },
    );
    if let Err(e) = converged {
        panic!("{e}\n{}", describe_all(test, nodes));
    }
    let clients: Vec<Client> = nodes
        .iter()
        .map(|n| client(n, pem, &formed.admin.bundle))
        .collect();
    let lists: Vec<Vec<Entry>> = clients
        .iter()
        .map(|c| c.list_all(&ListQuery::default()).expect("list"))
        .collect();
    for (i, list) in lists.iter().enumerate().skip(1) {
        assert!(
            *list == lists[0],
            "{} lists {} entries, {} lists {}",
            nodes[i].name,
            list.len(),
            nodes[0].name,
            lists[0].len()
        );
    }
    let listed: BTreeMap<&str, &str> = lists[0]
        .iter()
        .map(|e| (e.transaction_id.as_str(), e.contents.as_str()))
        .collect();
    assert_eq!(listed.len(), lists[0].len(), "a txid listed twice");
    for a in acked {
        assert_eq!(
            listed.get(a.txid.as_str()),
            Some(&a.contents.as_str()),
            "acknowledged write {} ({:?}) is not listed with its contents",
            a.txid,
            a.contents
        );
        for c in &clients {
            let entry = c
                .get_entry(&a.txid, None)
                .unwrap_or_else(|e| panic!("{} on {}: {e}", a.txid, c.config().endpoint));
            assert_eq!(entry.contents, a.contents);
            assert_eq!(entry.transaction_id, a.txid);
        }
    }
    drop(clients);
    for node in formed.nodes.iter_mut() {
        node.terminate();
    }
    for node in &formed.nodes {
        let report = audit(node);
        assert!(
            report["transactions"].as_u64().unwrap() >= acked.len() as u64,
            "{report}"
        );
    }
}

fn median_and_max(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    (
        sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
        sorted.last().copied().unwrap_or_default(),
    )
}

#[test]
fn primary_killed_under_load() {
    const TEST: &str = "primary_killed_under_load";
    let _serial = serial();
    let started = Instant::now();
    let rounds: usize = std::env::var("CLEDGER_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut formed = form(3);
    let load = Load::start(&formed.nodes, 4, &formed.service_pem, &formed.admin.bundle);

    let mut failovers = Vec::new();
    for round in 0..rounds {
        let step = format!("round {round}");
        let p = try_wait_for("one primary", Duration::from_secs(15), || {
            primary_of(&formed.nodes, &formed.service_pem)
        });
        let p = or_dump(p, &step, TEST, &formed.nodes, &load);
        thread::sleep(Duration::from_millis(300));
        formed.nodes[p].kill();
        let failover = time_to_write(&formed, &[p], "the primary's SIGKILL", &load);
        let failover = or_dump(failover, &step, TEST, &formed.nodes, &load);
        failovers.push(failover);
        // The load goes on too.
        let going_on = load.wait_for_more(5, Duration::from_secs(10));
        or_dump(going_on, &step, TEST, &formed.nodes, &load);
        // The killed node comes back with the same command line and catches up.
        let restarted = Instant::now();
        formed.nodes[p].start();
        formed.nodes[p].wait_serving(&formed.service_pem, JOIN_LIMIT);
        let serving = restarted.elapsed();
        or_dump(caught_up(&formed, p), &step, TEST, &formed.nodes, &load);
        eprintln!(
            "round {round}: killed {}; a new primary took a write after {failover:.2?}; \
             restarted, it served after {serving:.2?} and caught up after {:.2?}; {} writes acknowledged",
            formed.nodes[p].name,
            restarted.elapsed(),
            load.acked_count()
        );
    }

    let (acked, failed) = load.finish();
    let formed_in = formed.took;
    check_converged(formed, &acked, TEST);
    let (median, max) = median_and_max(&failovers);
    eprintln!(
        "{TEST}: {rounds} rounds, {} writes acknowledged, failed or unacknowledged: \
         {failed:?}; failover median {median:.2?} max {max:.2?}; formed in {formed_in:.1?}, total {:.1?}",
        acked.len(),
        started.elapsed()
    );
}

/// Five nodes: the primary is paused (SIGSTOP: it keeps its sockets and its state, but
/// answers nothing) under load, and the others elect a new one; then a backup is killed too,
/// leaving three of five, still a majority, which keep taking writes. The paused primary
/// then continues (SIGCONT) with its old view: it must not take over again or commit
/// anything of its own, and it catches up; the killed backup restarts and catches up. No
/// acknowledged write is lost, and every directory passes `cledger audit`.
#[test]
fn five_nodes_primary_paused_and_a_backup_killed() {
    const TEST: &str = "five_nodes_primary_paused_and_a_backup_killed";
    let _serial = serial();
    let started = Instant::now();
    let mut formed = form(5);
    let load = Load::start(&formed.nodes, 4, &formed.service_pem, &formed.admin.bundle);
    let nodes_named = |formed: &Formed, i: usize| formed.nodes[i].name.clone();

    let p = try_wait_for("one primary", Duration::from_secs(15), || {
        primary_of(&formed.nodes, &formed.service_pem)
    });
    let p = or_dump(p, "before", TEST, &formed.nodes, &load);
    thread::sleep(Duration::from_millis(300));
    formed.nodes[p].pause();
    let failover = time_to_write(&formed, &[p], "the primary's SIGSTOP", &load);
    let failover = or_dump(failover, "paused", TEST, &formed.nodes, &load);
    let q = try_wait_for("a new primary", Duration::from_secs(15), || {
        primary_of(&formed.nodes, &formed.service_pem)
    });
    let q = or_dump(q, "paused", TEST, &formed.nodes, &load);
    assert_ne!(p, q, "the paused node cannot still be the primary");

    // A backup dies as well: three of five remain, a majority.
    let b = (0..formed.nodes.len())
        .find(|i| *i != p && *i != q)
        .expect("a backup");
    formed.nodes[b].kill();
    let with_three = time_to_write(&formed, &[p, b], "a backup's SIGKILL", &load);
    let with_three = or_dump(with_three, "three of five", TEST, &formed.nodes, &load);
    let going_on = load.wait_for_more(20, Duration::from_secs(15));
    or_dump(going_on, "three of five", TEST, &formed.nodes, &load);

    // The old primary continues with its old view: it learns of the new one and catches up.
    let resumed = Instant::now();
    formed.nodes[p].resume();
    let back = caught_up(&formed, p);
    or_dump(back, "resumed", TEST, &formed.nodes, &load);
    let resumed_after = resumed.elapsed();
    let one = primary_of(&formed.nodes, &formed.service_pem);
    or_dump(one, "resumed", TEST, &formed.nodes, &load);

    let restarted = Instant::now();
    formed.nodes[b].start();
    formed.nodes[b].wait_serving(&formed.service_pem, JOIN_LIMIT);
    or_dump(
        caught_up(&formed, b),
        "restarted",
        TEST,
        &formed.nodes,
        &load,
    );
    let restarted_after = restarted.elapsed();
    let going_on = load.wait_for_more(20, Duration::from_secs(15));
    or_dump(going_on, "all five", TEST, &formed.nodes, &load);

    let (acked, failed) = load.finish();
    let (paused_name, killed_name) = (nodes_named(&formed, p), nodes_named(&formed, b));
    let formed_in = formed.took;
    check_converged(formed, &acked, TEST);
    eprintln!(
        "{TEST}: paused {paused_name}: a new primary took a write after {failover:.2?}; killed \
         {killed_name}: a write after {with_three:.2?}; {paused_name} caught up {resumed_after:.2?} \
         after SIGCONT, {killed_name} {restarted_after:.2?} after its restart; {} writes \
         acknowledged, failed or unacknowledged: {failed:?}; formed in {formed_in:.1?}, total {:.1?}",
        acked.len(),
        started.elapsed()
    );
}

/// `cledger bench` writing `count` entries through `node` with 64 in flight; it must report
/// no errors (its `errors` counts them by kind).
fn bulk_write(formed: &Formed, node: usize, count: u64) {
    let dir = formed.nodes[node].data_dir.parent().unwrap();
    let pem = dir.join("bulk_service_cert.pem");
    std::fs::write(&pem, &formed.service_pem).unwrap();
    let out = dir.join("bulk.json");
    cledger(&[
        "bench",
        "--endpoint",
        &formed.nodes[node].address(),
        "--cert",
        formed.admin.bundle_path.to_str().unwrap(),
        "--service-cert",
        pem.to_str().unwrap(),
        "--phases",
        "append",
        "--connections",
        "64",
        "--count",
        &count.to_string(),
        "--warmup",
        "0",
        "--output",
        out.to_str().unwrap(),
    ])
    .ok("cledger bench");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let errors = &report["phases"][0]["errors"];
    assert!(
        errors.as_object().is_some_and(|kinds| kinds.is_empty()),
        "{report}"
    );
}

/// A ledger of `CLEDGER_LARGE_LEDGER` transactions (default 100,000, made with `cledger local
/// fill` before it founds the cluster) is copied whole to two joining nodes; then one node
/// misses `CLEDGER_MISSED` writes (default 10,000) while it is down, and catches up when it
/// restarts. The joined nodes serve reads and receipts of the old entries; every node ends
/// with the same ledger, and every directory passes the audit.
#[test]
fn nodes_catch_up_a_large_ledger() {
    const TEST: &str = "nodes_catch_up_a_large_ledger";
    let _serial = serial();
    let count = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (large, missed) = (
        count("CLEDGER_LARGE_LEDGER", 100_000),
        count("CLEDGER_MISSED", 10_000),
    );
    let started = Instant::now();
    let mut filled = Duration::ZERO;
    let mut formed = form_with(3, None, &[], |dir| {
        let dir = dir.to_str().unwrap();
        cledger(&["local", "init", "--data-dir", dir]).ok("cledger local init");
        let t = Instant::now();
        cledger(&[
            "local",
            "fill",
            "--data-dir",
            dir,
            "--count",
            &large.to_string(),
        ])
        .ok("cledger local fill");
        filled = t.elapsed();
    });
    let pem = formed.service_pem.clone();
    let commits = |formed: &Formed| -> Vec<u64> {
        formed
            .nodes
            .iter()
            .map(|n| commit_seqno(n, &pem).unwrap_or(0))
            .collect()
    };
    let joined = try_wait_for(
        "the joined nodes holding the whole ledger",
        JOIN_LIMIT,
        || {
            let c = commits(&formed);
            if c.iter().all(|c| *c > large) {
                Ok(())
            } else {
                Err(format!("commits {c:?}"))
            }
        },
    );
    if let Err(e) = joined {
        panic!("{e}\n{}", describe_all(TEST, &formed.nodes));
    }
    let formed_in = started.elapsed() - filled;

    // The joined nodes serve the old entries and their receipts (verified by the client
    // against the service certificate): the first two of the fill and its last.
    for node in &formed.nodes[1..] {
        let c = client(node, &pem, &formed.admin.bundle);
        let mut old: Vec<Entry> = c
            .list(&ListQuery::default())
            .take(2)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("list on {}: {e}", node.name));
        let view = old[0].transaction_id.split('.').next().unwrap();
        let near_the_end = ListQuery {
            from: Some(format!("{view}.{}", large - 10)),
            ..ListQuery::default()
        };
        let last = c.list_all(&near_the_end).unwrap().pop();
        old.push(last.expect("entries near the end of the fill"));
        assert!(old[0].contents.len() >= 256, "{:?}", old[0]);
        for e in &old {
            let read = c.get_entry(&e.transaction_id, None).unwrap();
            assert_eq!(read.contents, e.contents, "on {}", node.name);
            let receipt = c.receipt(&e.transaction_id);
            receipt.unwrap_or_else(|e| panic!("a receipt on {}: {e}", node.name));
            // The COSE receipt: the primary's COSE root signature, which this node checked
            // before keeping it, verified with the service key.
            let cose = c.cose_receipt(&e.transaction_id);
            cose.unwrap_or_else(|e| panic!("a COSE receipt on {}: {e}", node.name));
        }
    }

    // A backup is down while the others commit `missed` writes.
    let p = primary_of(&formed.nodes, &pem).unwrap_or_else(|e| panic!("{e}"));
    let down = (0..3).find(|i| *i != p).unwrap();
    formed.nodes[down].kill();
    let t = Instant::now();
    bulk_write(&formed, p, missed);
    let written = t.elapsed();
    let restarted = Instant::now();
    formed.nodes[down].start();
    formed.nodes[down].wait_serving(&pem, JOIN_LIMIT);
    let target = commit_seqno(&formed.nodes[p], &pem).unwrap();
    let behind = target.saturating_sub(commits(&formed)[down]);
    let caught = try_wait_for("the restarted node catching up", JOIN_LIMIT, || {
        let own = commit_seqno(&formed.nodes[down], &pem)?;
        if own >= target {
            Ok(())
        } else {
            Err(format!("{own} < {target}"))
        }
    });
    if let Err(e) = caught {
        panic!("{e}\n{}", describe_all(TEST, &formed.nodes));
    }
    let caught_up = restarted.elapsed();
    check_converged(formed, &[], TEST);
    eprintln!(
        "{TEST}: filled {large} entries in {filled:.1?}; two nodes joined that ledger in \
         {formed_in:.1?} (formed, from the founder's start); {missed} writes in {written:.1?} \
         while a node was down; restarted {behind} seqnos behind, it caught up in \
         {caught_up:.2?}; total {:.1?}",
        started.elapsed()
    );
}

/// The first transaction id (`VIEW.SEQNO`) a message names.
fn txid_named(message: &str) -> Option<String> {
    message
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|w| w.trim_matches('.'))
        .find(|w| ledger_core::TxId::parse(w).is_ok())
        .map(str::to_owned)
}

/// Three nodes, each in its own network namespace, under load. The primary's peer link is cut
/// (its clients still reach it): the other two elect a new primary and keep committing, while
/// the old one goes on taking writes that can never commit. When the link heals, the old
/// primary learns of the new view, its uncommitted suffix is rolled back (those txids answer
/// `Invalid` on every node, in ACL's shape: 404 `InvalidTransactionId` from `/status`; their
/// writers get an error naming the txid, never a success) and it catches up. No acknowledged write
/// is lost, and every directory passes `cledger audit`.
#[test]
fn primary_partitioned_from_the_majority() {
    const TEST: &str = "primary_partitioned_from_the_majority";
    let _serial = serial();
    let started = Instant::now();
    let network = Network::new(3)
        .unwrap_or_else(|e| panic!("{TEST} needs network namespaces (root and iproute2): {e}"));
    let formed = form_with(3, Some(network), &[], |_| {});
    let load = Load::start(&formed.nodes, 4, &formed.service_pem, &formed.admin.bundle);
    let (pem, bundle) = (formed.service_pem.clone(), formed.admin.bundle.clone());
    let network = formed.network.as_ref().unwrap();

    let p = try_wait_for("one primary", Duration::from_secs(15), || {
        primary_of(&formed.nodes, &pem)
    });
    let p = or_dump(p, "before", TEST, &formed.nodes, &load);
    thread::sleep(Duration::from_millis(300));
    // Clients of the primary, connected before the cut, each send one write the moment its
    // peer link goes down. Until its leader lease runs out the isolated primary takes writes
    // into its log, where they can never commit: each must end in an error (at the heal, a
    // rollback naming the txid), never in a success.
    let cut_now = Arc::new(std::sync::Barrier::new(9));
    let stranded_writers: Vec<_> = (0..8)
        .map(|k| {
            let mut config = ClientConfig::new(
                formed.nodes[p].address(),
                pem.as_str(),
                Auth::Certificate(bundle.clone()),
            );
            config.retry_unavailable = Duration::ZERO;
            config.request_timeout = Duration::from_secs(30);
            let old_primary = Client::new(config).unwrap();
            old_primary.commit().expect("a connection to the primary");
            let cut_now = cut_now.clone();
            thread::spawn(move || {
                cut_now.wait();
                old_primary.submit(&format!("stranded {k}"), None, &[])
            })
        })
        .collect();
    network.isolate(p).unwrap();
    let cut = Instant::now();
    cut_now.wait();

    let failover = time_to_write(&formed, &[p], "the primary's partition", &load);
    let failover = or_dump(failover, "partitioned", TEST, &formed.nodes, &load);
    let q = try_wait_for(
        "a new primary among the majority",
        Duration::from_secs(15),
        || primary_among(&formed.nodes, &pem, &[p]),
    );
    or_dump(q, "partitioned", TEST, &formed.nodes, &load);
    let going_on = load.wait_for_more(20, Duration::from_secs(15));
    or_dump(going_on, "partitioned", TEST, &formed.nodes, &load);
    let partitioned_for = cut.elapsed();

    network.heal(p).unwrap();
    let healed = Instant::now();
    or_dump(caught_up(&formed, p), "healed", TEST, &formed.nodes, &load);
    let caught_up_after = healed.elapsed();
    let one = primary_of(&formed.nodes, &pem);
    let one = or_dump(one, "healed", TEST, &formed.nodes, &load);
    assert_ne!(one, p, "the partitioned node must not take over again");
    // The stranded suffix is rolled back everywhere: its txids are Invalid on every node.
    let mut stranded = Vec::new();
    let mut refused = BTreeMap::<String, u64>::new();
    for writer in stranded_writers {
        match writer.join().expect("a stranded writer") {
            Ok(a) => panic!(
                "{} was acknowledged by a primary cut off from the majority\n{}",
                a.transaction_id,
                describe_all(TEST, &formed.nodes)
            ),
            Err(e) => match txid_named(&e.to_string()) {
                Some(txid) => stranded.push(txid),
                None => *refused.entry(error_kind(&e)).or_default() += 1,
            },
        }
    }
    assert!(
        !stranded.is_empty(),
        "the isolated primary took none of the writes sent as it was cut off (refused: \
         {refused:?}): the test did not exercise a rollback"
    );
    for txid in &stranded {
        for node in &formed.nodes {
            let state = try_wait_for(
                &format!("{txid} Invalid on {}", node.name),
                Duration::from_secs(10),
                || match client(node, &pem, &bundle).status(txid) {
                    // ACL's shape of CCF's `Invalid`: 404 InvalidTransactionId.
                    Err(ledger_client::Error::Api {
                        status: 404, code, ..
                    }) if code == "InvalidTransactionId" => Ok(()),
                    Ok(s) => Err(s.state),
                    Err(e) => Err(e.to_string()),
                },
            );
            or_dump(state, "rolled back", TEST, &formed.nodes, &load);
        }
    }
    let going_on = load.wait_for_more(20, Duration::from_secs(15));
    or_dump(going_on, "healed", TEST, &formed.nodes, &load);

    let (acked, failed) = load.finish();
    let formed_in = formed.took;
    let partitioned_name = formed.nodes[p].name.clone();
    check_converged(formed, &acked, TEST);
    eprintln!(
        "{TEST}: cut {partitioned_name}'s peer link: a new primary took a write after \
         {failover:.2?}; the isolated primary gave {} txids that never committed (refused: \
         {refused:?}); healed after {partitioned_for:.1?}, it caught up in \
         {caught_up_after:.2?} and those txids answered Invalid everywhere; {} writes \
         acknowledged, failed or unacknowledged: {failed:?}; formed in {formed_in:.1?}, total {:.1?}",
        stranded.len(),
        acked.len(),
        started.elapsed()
    );
}

/// The primary is killed right after the cluster formed, before any checkpoint recorded the
/// membership as committed on its disk. Restarted, it must rejoin its cluster as a replica:
/// not found a new cluster of one on its ledger (committing, alone, transactions the cluster
/// never committed, in a view another primary also leads). The cluster is on P-256
/// (`--curve p256` on the founder): nodes that join take the service's curve for their keys,
/// and the receipts the new primary's signatures make verify.
#[test]
fn primary_killed_right_after_forming() {
    const TEST: &str = "primary_killed_right_after_forming";
    let _serial = serial();
    let mut formed = form_with(3, None, &["--curve", "p256"], |_| {});
    let pem = formed.service_pem.clone();
    for node in &formed.nodes {
        for file in ["service_cert.pem", "identity/node_cert.pem"] {
            let cert = std::fs::read_to_string(node.data_dir.join(file)).unwrap();
            let curve = support::curve_of(&cert);
            let name = &node.name;
            assert_eq!(curve, ledger_core::signing::Curve::P256, "{file} of {name}");
        }
    }
    let p = primary_of(&formed.nodes, &pem).unwrap_or_else(|e| panic!("{e}"));
    formed.nodes[p].kill();
    let failover = try_wait_for("a new primary", Duration::from_secs(15), || {
        primary_of(&formed.nodes, &pem)
    });
    let q = failover.unwrap_or_else(|e| panic!("{e}\n{}", describe_all(TEST, &formed.nodes)));
    formed.nodes[p].start();
    formed.nodes[p].wait_serving(&pem, JOIN_LIMIT);
    if let Err(e) = caught_up(&formed, p) {
        panic!("{e}\n{}", describe_all(TEST, &formed.nodes));
    }
    // Long enough for a node that founded a cluster of its own to have elected itself.
    thread::sleep(Duration::from_secs(2));
    let one = primary_of(&formed.nodes, &pem);
    let one = one.unwrap_or_else(|e| panic!("{e}\n{}", describe_all(TEST, &formed.nodes)));
    assert_eq!(one, q, "the primary changed although nothing failed");
    let acked = vec![{
        let contents = "after the restart".to_owned();
        let restarted = client(&formed.nodes[p], &pem, &formed.admin.bundle);
        let a = restarted
            .append(&contents, None, &[])
            .unwrap_or_else(|e| panic!("a write through the restarted node: {e}"));
        // Signed by the new primary's P-256 node key; the client verifies the receipt.
        restarted
            .receipt(&a.transaction_id)
            .unwrap_or_else(|e| panic!("the receipt of {}: {e}", a.transaction_id));
        Acked {
            txid: a.transaction_id,
            contents,
        }
    }];
    check_converged(formed, &acked, TEST);
}

/// `cledger serve ARGS...` expected to stop at once with an error; returns what it printed.
fn serve_refused(args: &[&str]) -> String {
    let mut all = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let run = cledger(&all);
    assert!(
        !run.status.success(),
        "cledger serve {args:?} started: {run:?}"
    );
    run.stderr
}

/// The whole cluster is lost; a backup taken from one of its nodes while it ran founds a new
/// service with `cledger serve --recover`: every acknowledged write reads back with a receipt
/// that verifies against the same service certificate, the old nodes are retired, a new node
/// joins with a token, and the Administrator is still the Administrator. `--recover` is
/// refused on a member's own directory, and on the recovered one once it has started.
#[test]
fn a_lost_cluster_is_recovered_from_a_backup() {
    const TEST: &str = "a_lost_cluster_is_recovered_from_a_backup";
    let _serial = serial();
    let formed = form(3);
    let (pem, bundle) = (formed.service_pem.clone(), formed.admin.bundle.clone());
    let p = primary_of(&formed.nodes, &pem).unwrap_or_else(|e| panic!("{e}"));
    let writer = client(&formed.nodes[p], &pem, &bundle);
    let mut acked: Vec<Acked> = (0..20)
        .map(|k| {
            let contents = format!("before the loss {k}");
            let a = writer.append(&contents, None, &[]).unwrap();
            Acked {
                txid: a.transaction_id,
                contents,
            }
        })
        .collect();
    // A backup of a backup node, taken while it runs, once it has the last write.
    let b = (0..3).find(|i| *i != p).unwrap();
    let last = &acked.last().unwrap().txid;
    read_back(&client(&formed.nodes[b], &pem, &bundle), last, JOIN_LIMIT);
    let Formed {
        nodes: mut lost,
        admin,
        _root: root,
        ..
    } = formed;
    let copy = root.path().join("recovered");
    cledger(&[
        "backup",
        "--data-dir",
        lost[b].data_dir.to_str().unwrap(),
        "--to",
        copy.to_str().unwrap(),
    ])
    .ok("cledger backup of a cluster node");
    for node in lost.iter_mut() {
        node.kill();
    }

    // A member's own directory cannot be recovered: it would lead beside its cluster.
    let own = lost[0].data_dir.to_str().unwrap().to_owned();
    let said = serve_refused(&["--data-dir", &own, "--recover"]);
    assert!(said.contains("raft/vote.json"), "{said}");

    let mut recovered = Node::new("recovered", root.path(), &strings(&["--recover"]));
    recovered.start();
    recovered.wait_serving(&pem, JOIN_LIMIT);
    let nodes = std::slice::from_ref(&recovered);
    wait_for("the recovered node leading", JOIN_LIMIT, || {
        primary_of(nodes, &pem)
    });
    let c = client(&recovered, &pem, &bundle);
    for a in &acked {
        assert_eq!(c.get_entry(&a.txid, None).unwrap().contents, a.contents);
        c.receipt(&a.txid)
            .unwrap_or_else(|e| panic!("the receipt of {} after recovery: {e}", a.txid));
    }
    let first_new = c.append("after the recovery", None, &[]).unwrap();
    let (old_view, new_view) = (
        ledger_core::TxId::parse(last).unwrap().view(),
        ledger_core::TxId::parse(&first_new.transaction_id)
            .unwrap()
            .view(),
    );
    assert!(
        new_view > old_view,
        "{last} then {}",
        first_new.transaction_id
    );
    acked.push(Acked {
        txid: first_new.transaction_id,
        contents: "after the recovery".into(),
    });

    // The old nodes are retired; a new one joins with a token; the Administrator is the same.
    let service_cert = root.path().join("service_cert.pem");
    std::fs::write(&service_cert, &pem).unwrap();
    let op = Operator {
        service_cert: service_cert.clone(),
        cert: admin.bundle_path.clone(),
    };
    let token = root.path().join("n4.token");
    op.run(
        &recovered.address(),
        &["cluster", "join-token", "--out", token.to_str().unwrap()],
    )
    .ok("cledger cluster join-token after recovery");
    let mut joined = Node::new(
        "n4",
        root.path(),
        &join_args(&recovered, &service_cert, Some(&token), &[]),
    );
    joined.start();
    joined.wait_serving(&pem, JOIN_LIMIT);
    let lost_ids: Vec<String> = lost
        .iter()
        .map(|n| node_id_of_dir(&n.data_dir))
        .filter(|id| *id != node_id_of_dir(&recovered.data_dir))
        .collect();
    wait_status(
        &op,
        &recovered.address(),
        "two Trusted nodes, the lost ones Retired",
        JOIN_LIMIT,
        |s| {
            trusted_count(s) == 2
                && primary_count(s) == 1
                && lost_ids
                    .iter()
                    .all(|id| node_row(s, id).is_some_and(|r| r["status"] == "Retired"))
        },
    );

    // Started again with --recover, the recovered node refuses (it has voted); without, it
    // resumes its place.
    recovered.terminate();
    let dir = recovered.data_dir.to_str().unwrap().to_owned();
    let said = serve_refused(&["--data-dir", &dir, "--recover"]);
    assert!(said.contains("raft/vote.json"), "{said}");
    recovered.extra.clear();
    recovered.start();
    recovered.wait_serving(&pem, JOIN_LIMIT);
    let recovered_formed = Formed {
        nodes: vec![recovered, joined],
        service_pem: pem,
        admin,
        took: Duration::ZERO,
        network: None,
        _root: root,
    };
    check_converged(recovered_formed, &acked, TEST);
}

/// User-defined code in a cluster: a function created on the primary, run concurrently as a
/// read-modify-write of a table through the primary (the executions' writes enter the log in
/// the order they were checked, so none is lost), then, after the primary is killed, run on
/// the new primary: the function and the table it wrote were replicated.
#[test]
fn user_defined_functions_replicate_and_stay_serializable() {
    const TEST: &str = "user_defined_functions_replicate_and_stay_serializable";
    let _serial = serial();
    let mut formed = form(3);
    let v = "api-version=2024-12-09-preview";
    let p = wait_for("one primary", Duration::from_secs(15), || {
        primary_of(&formed.nodes, &formed.service_pem)
    });
    let http = raw_client(&formed.service_pem, Some(&formed.admin.bundle));
    let increment = "export function main() { const t = ccf.kv['public:counter']; \
        const k = ccf.strToBuf('n'); const v = t.get(k); \
        const n = (v === undefined ? 0 : Number(ccf.bufToStr(v))) + 1; \
        t.set(k, ccf.strToBuf(String(n))); return String(n); }";
    let base = formed.nodes[p].address();
    let r = http
        .put(format!("{base}/app/userDefinedFunctions/increment?{v}"))
        .json(&serde_json::json!({"code": increment}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());

    let execute = |base: &str| -> (u16, serde_json::Value) {
        let r = http
            .post(format!(
                "{base}/app/userDefinedFunctions/increment:execute?{v}"
            ))
            .json(&serde_json::json!({}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    let returned: Vec<(u16, serde_json::Value)> = thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..8).map(|_| execute(&base)).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut seen = std::collections::BTreeSet::new();
    for (status, body) in &returned {
        match status {
            200 => {
                let n: u64 = body["result"]["returnValue"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(seen.insert(n), "{n} returned twice: a lost update ({TEST})");
            }
            503 => assert_eq!(body["error"]["code"], "ServiceBusy", "{body}"),
            other => panic!("{TEST}: status {other}: {body}"),
        }
    }
    let successes = seen.len() as u64;
    assert!(successes > 0, "{TEST}: no execution succeeded");
    assert_eq!(
        seen,
        (1..=successes).collect(),
        "{TEST}: increments lost or doubled"
    );

    formed.nodes[p].kill();
    let q = wait_for("a new primary", FAILOVER_LIMIT * 3, || {
        primary_among(&formed.nodes, &formed.service_pem, &[p])
    });
    let (status, body) =
        wait_for(
            "an execution on the new primary",
            FAILOVER_LIMIT,
            || match execute(&formed.nodes[q].address()) {
                (200, body) => Ok((200, body)),
                (status, body) => Err(format!("{status}: {body}")),
            },
        );
    assert_eq!(status, 200);
    assert_eq!(
        body["result"]["returnValue"],
        (successes + 1).to_string(),
        "{TEST}: the new primary has the function and every committed increment"
    );
    // Every copy of the ledger, the killed primary's too, passes the audit.
    for (i, node) in formed.nodes.iter_mut().enumerate() {
        if i != p {
            node.terminate();
        }
        audit(node);
    }
}

/// `--signature-interval-ms` reaches the primary's signer. A write is acknowledged once a
/// signature after it is committed, and the signer proposes one no sooner than the interval
/// after the last one committed: writes made one after another, each needing a signature of
/// its own, are acknowledged at least an interval apart. (A lower bound: it cannot fail on a
/// slow machine, only if the setting is ignored — at the default 1 ms they take milliseconds.)
#[test]
fn the_signature_interval_paces_the_primarys_signatures() {
    const INTERVAL: Duration = Duration::from_millis(400);
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let admin = admin(root);
    let interval = INTERVAL.as_millis().to_string();
    let (mut node, _, pem) = found(
        root,
        &admin,
        &strings(&["--signature-interval-ms", &interval]),
        None,
    );
    let client = client(&node, &pem, &admin.bundle);
    let started = Instant::now();
    let mut txids = Vec::new();
    for i in 0..4 {
        let appended = client
            .append(&format!("paced {i}"), None, &[])
            .unwrap_or_else(|e| panic!("write {i}: {e}\n{}", node.output.describe()));
        txids.push(appended.transaction_id);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= 3 * INTERVAL,
        "four writes one after another were acknowledged within {elapsed:?}: the signer did not \
         wait {INTERVAL:?} between signatures ({txids:?})"
    );
    node.terminate();
}
