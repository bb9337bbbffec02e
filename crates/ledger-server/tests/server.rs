//! In-process tests of the node: first start, restart, lock file, and a TLS round trip.

mod common;

use common::{Client, config};

use ledger_identity::Curve;
use ledger_server::node::{ADMIN_FILE, LOCK_FILE, Node};
use ledger_server::{ServeError, Server};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USERS: &str = "public:cledger.users";

fn fingerprint_of(pem_path: &Path) -> String {
    ledger_identity::certificate_fingerprint(&std::fs::read_to_string(pem_path).unwrap()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn first_start_creates_identity_and_admin_and_restart_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&config(&dir)).unwrap();
    assert!(node.report.created);
    let admin = dir.join(ADMIN_FILE);
    assert_eq!(
        node.report.generated_admin.as_deref(),
        Some(admin.as_path())
    );
    let fp = fingerprint_of(&admin);
    assert_eq!(node.report.registered_admins, std::slice::from_ref(&fp));
    assert!(node.ledger.governance(USERS, &fp).unwrap().is_some());
    assert_eq!(node.ledger_id, "cledger");
    assert_eq!(node.node_id.len(), 64);
    let bundle = std::fs::read_to_string(&admin).unwrap();
    assert!(bundle.contains("BEGIN CERTIFICATE") && bundle.contains("PRIVATE KEY"));
    #[cfg(unix)]
    {
        assert_eq!(mode(&admin), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("identity/node_key.pem")), 0o600);
    }
    assert!(dir.join("service_cert.pem").is_file());
    assert!(dir.join(LOCK_FILE).is_file());
    let service_cert = node.files.service_cert_pem.clone();
    let node_cert = node.files.node_cert_pem.clone();
    node.ledger.close();
    drop(node);

    // Restart: same identity, same admin file, nothing new registered, and a different
    // ledger_id setting does not rename the ledger.
    let mut again = config(&dir);
    again.ledger_id = "renamed".into();
    let node = Node::start(&again).unwrap();
    assert!(!node.report.created);
    assert_eq!(node.report.generated_admin, None);
    assert!(node.report.registered_admins.is_empty());
    assert_eq!(node.files.service_cert_pem, service_cert);
    assert_eq!(node.files.node_cert_pem, node_cert);
    assert_eq!(std::fs::read_to_string(&admin).unwrap(), bundle);
    assert_eq!(node.ledger_id, "cledger");
    assert!(node.report.notes.iter().any(|n| n.contains("renamed")));
    assert!(node.ledger.governance(USERS, &fp).unwrap().is_some());
    node.ledger.close();
    drop(node);

    // Restart with a new --admin-cert: registered once, not again on the next restart.
    let extra = ledger_identity::create_client_identity("second admin", Curve::P384).unwrap();
    let extra_path = tmp.path().join("extra.pem");
    std::fs::write(&extra_path, &extra.cert_pem).unwrap();
    let extra_fp = fingerprint_of(&extra_path);
    let mut with_admin = config(&dir);
    with_admin.admin_certs = vec![extra_path.clone()];
    let node = Node::start(&with_admin).unwrap();
    assert_eq!(
        node.report.registered_admins,
        std::slice::from_ref(&extra_fp)
    );
    assert!(node.ledger.governance(USERS, &extra_fp).unwrap().is_some());
    node.ledger.close();
    drop(node);
    let node = Node::start(&with_admin).unwrap();
    assert!(node.report.registered_admins.is_empty());
}

#[test]
fn given_admin_certs_replace_the_generated_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let a = ledger_identity::create_client_identity("a", Curve::P384).unwrap();
    let b = ledger_identity::create_client_identity("b", Curve::P256).unwrap();
    let (pa, pb) = (tmp.path().join("a.pem"), tmp.path().join("b.pem"));
    std::fs::write(&pa, a.bundle_pem()).unwrap(); // a bundle with the key is fine too
    std::fs::write(&pb, &b.cert_pem).unwrap();
    let mut c = config(&dir);
    c.admin_certs = vec![pa.clone(), pb.clone(), pa.clone()];
    let node = Node::start(&c).unwrap();
    assert!(node.report.created);
    assert_eq!(node.report.generated_admin, None);
    assert!(!dir.join(ADMIN_FILE).exists());
    assert_eq!(
        node.report.registered_admins,
        [fingerprint_of(&pa), fingerprint_of(&pb)]
    );
    for p in [&pa, &pb] {
        assert!(
            node.ledger
                .governance(USERS, &fingerprint_of(p))
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn bad_admin_cert_fails_before_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let not_pem = tmp.path().join("junk.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for path in [not_pem, tmp.path().join("missing.pem")] {
        let mut c = config(&dir);
        c.admin_certs = vec![path.clone()];
        let err = Node::start(&c).err().expect("must fail");
        assert!(matches!(err, ServeError::AdminCert { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(path.file_name().unwrap().to_str().unwrap())
        );
    }
    assert!(!dir.join("service_cert.pem").exists());
    assert!(!dir.join("ledger").exists());
}

#[test]
fn second_start_on_the_same_directory_fails_and_names_the_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Node::start(&config(tmp.path())).unwrap();
    let err = Node::start(&config(tmp.path()))
        .err()
        .expect("second start must fail");
    match &err {
        ServeError::AlreadyRunning { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
        other => panic!("unexpected error {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    assert!(message.contains("cledger.lock"), "{message}");
    first.ledger.close();
    drop(first);
    // The lock goes with the node.
    Node::start(&config(tmp.path())).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_with_admin_and_anonymous_callers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(config(&dir)).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let notice = server.start_notice().expect("first start has a notice");
    assert!(
        notice.contains("curl --cacert") && notice.contains("admin.pem"),
        "{notice}"
    );
    assert!(
        notice.contains(&format!("https://localhost:{}", addr.port())),
        "{notice}"
    );
    assert!(
        notice.contains("ConfidentialLedgerCertificateCredential"),
        "{notice}"
    );

    let service_cert = std::fs::read_to_string(dir.join("service_cert.pem")).unwrap();
    let admin = std::fs::read_to_string(dir.join(ADMIN_FILE)).unwrap();
    let path = "/app/governance/constitution?api-version=2022-05-13";

    let admin_client = Client::new(&service_cert, Some(&admin), &[b"http/1.1"]);
    let (status, body) = admin_client.get(addr, path).await;
    assert_eq!(status, 200, "{body}");

    // No certificate: the handshake succeeds (client auth is optional), the route refuses.
    let anonymous = Client::new(&service_cert, None, &[b"http/1.1"]);
    let (status, body) = anonymous.get(addr, path).await;
    assert!(status == 401 || status == 403, "{status} {body}");

    // A self-signed certificate nobody registered: accepted by TLS, refused by the route.
    let stranger = ledger_identity::create_client_identity("stranger", Curve::P384).unwrap();
    let stranger = Client::new(&service_cert, Some(&stranger.bundle_pem()), &[b"http/1.1"]);
    let (status, body) = stranger.get(addr, path).await;
    assert!(status == 401 || status == 403, "{status} {body}");

    // The chain is [node cert, service cert]; ALPN offers h2.
    let h2 = Client::new(&service_cert, None, &[b"h2", b"http/1.1"]);
    let tls = h2.connect(addr).await;
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    let chain = session.peer_certificates().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        chain[1].as_ref(),
        ledger_identity::certificate_der(&service_cert)
            .unwrap()
            .as_slice()
    );
    drop(tls);

    server.shutdown().await.unwrap();
    // Shut down: the port is closed and the directory unlocked.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let node = Node::start(&config(&dir)).unwrap();
    assert!(!node.report.created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_fails_fast_and_a_taken_port_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(config(&tmp.path().join("a"))).await.unwrap();
    let err = Server::start(config(&tmp.path().join("a")))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ServeError::AlreadyRunning { .. }), "{err}");

    let mut taken = config(&tmp.path().join("b"));
    taken.listen = server.local_addr();
    let err = Server::start(taken).await.err().unwrap();
    assert!(matches!(err, ServeError::Bind { .. }), "{err}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_idle_or_handshaking_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(config(&dir)).await.unwrap();
    let addr = server.local_addr();
    let service_cert = std::fs::read_to_string(dir.join("service_cert.pem")).unwrap();
    let admin = std::fs::read_to_string(dir.join(ADMIN_FILE)).unwrap();
    // An idle keep-alive HTTP/1.1 connection after one request...
    let client = Client::new(&service_cert, Some(&admin), &[b"http/1.1"]);
    let mut idle = client.connect(addr).await;
    idle.write_all(
        b"GET /app/governance/constitution?api-version=2022-05-13 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert!(first.starts_with(b"HTTP/1.1 "));
    // ...an idle HTTP/2 connection, and a TCP connection that never starts its handshake.
    let h2 = Client::new(&service_cert, Some(&admin), &[b"h2"]);
    let _h2 = h2.connect(addr).await;
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let started = std::time::Instant::now();
    server.shutdown().await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The idle connection was closed by the server.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        idle.read_to_end(&mut rest),
    )
    .await
    .expect("connection closed");
}

/// A self-signed client certificate valid from `not_before` to `not_after` (year, month,
/// day), as a PEM bundle with its key.
fn client_identity(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.self_signed(&key).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

/// As CCF does for user certificates: a registered user's certificate outside its validity
/// period is refused with 401 and the reason, however the user was registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_client_certificates_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let expired = client_identity((2020, 1, 1), (2021, 3, 4));
    let future = client_identity((2099, 5, 6), (2100, 1, 1));
    let current = client_identity((2020, 1, 1), (2099, 1, 1));
    let mut c = config(&dir);
    for (name, pem) in [
        ("expired", &expired),
        ("future", &future),
        ("current", &current),
    ] {
        let path = tmp.path().join(format!("{name}.pem"));
        std::fs::write(&path, pem).unwrap();
        c.admin_certs.push(path);
    }
    let server = Server::start(c).await.unwrap();
    let addr = server.local_addr();
    let service_cert = std::fs::read_to_string(dir.join("service_cert.pem")).unwrap();
    let path = "/app/transactions/current?api-version=2022-05-13";
    let get = |identity: &str| {
        let client = Client::new(&service_cert, Some(identity), &[b"http/1.1"]);
        async move { client.get(addr, path).await }
    };

    let (status, body) = get(&current).await;
    assert_eq!(
        status, 404,
        "a valid administrator reads (no entries yet): {body}"
    );
    for (identity, reason) in [
        (&expired, "expired on 2021-03-04T00:00:00Z"),
        (&future, "not valid before 2099-05-06T00:00:00Z"),
    ] {
        let (status, body) = get(identity).await;
        assert_eq!(status, 401, "{body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            error["error"]["code"], "InvalidAuthenticationInfo",
            "{body}"
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "expected {reason:?} in {message}");
    }
    // The public route stays public.
    let client = Client::new(&service_cert, Some(&expired), &[b"http/1.1"]);
    let (status, body) = client
        .get(addr, "/ledgerIdentity/cledger?api-version=2022-05-13")
        .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await.unwrap();
}

type SetAddress = fn(&mut ledger_server::ServeConfig, std::net::SocketAddr);

/// `cledger serve` on a busy port created the ledger and `admin.pem` before failing to bind,
/// and the notice about the generated administrator certificate was then never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_fails_before_anything_is_created() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let settings: [(&str, SetAddress); 3] = [
        ("listen", |c, a| c.listen = a),
        ("metrics_listen", |c, a| c.metrics_listen = Some(a)),
        ("peer_listen", |c, a| c.peer_listen = Some(a)),
    ];
    for (name, set) in settings {
        let mut c = config(&dir);
        set(&mut c, busy_addr);
        let err = Server::start(c).await.err().expect("must fail");
        assert!(
            matches!(&err, ServeError::Bind { addr, .. } if *addr == busy_addr),
            "{name}: {err}"
        );
        assert!(!dir.exists(), "{name}: {} was created", dir.display());
    }
}

/// `/metrics` and `/readyz` answered anyone and revealed the committed seqno.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_their_own_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Server::start(c).await.unwrap();
    let service = std::fs::read_to_string(tmp.path().join("service_cert.pem")).unwrap();
    let anonymous = Client::new(&service, None, &[b"http/1.1"]);
    let addr = server.local_addr();
    let (status, _) = anonymous.get(addr, "/metrics").await;
    assert_eq!(status, 404, "/metrics is still served to clients");
    let (status, body) = anonymous.get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, body) = anonymous.get(addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let metrics_addr = server.metrics_addr().expect("a metrics listener");
    let (status, body) = anonymous.get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cledger_ledger_committed_seqno"), "{body}");
    let (status, _) = anonymous
        .get(metrics_addr, "/app/transactions?api-version=2022-05-13")
        .await;
    assert_eq!(status, 404, "the metrics listener serves the ledger");
    server.shutdown().await.unwrap();
}
