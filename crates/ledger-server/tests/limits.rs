//! The node against misbehaving and excessive clients, and what it tells its operator:
//! timeouts (handshake, headers, body, idle), size limits, TLS versions, the per-caller rate
//! limit, write shedding while reads go on, health endpoints, metrics and request ids.

mod common;

use common::{Answer, Client, closed_within, start, write_request};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_request_ids() {
    let (_tmp, server, admin, anonymous) = start(|_| {}).await;
    let addr = server.local_addr();

    let health = anonymous.send(addr, "GET", "/healthz", "", "").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    let ready = anonymous.send(addr, "GET", "/readyz", "", "").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains(r#""status":"ready""#), "{}", ready.body);

    // Request ids: one per answer, unique; the client's own id comes back unchanged.
    let first = admin
        .exchange(addr, write_request("hello").as_bytes())
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = admin
        .send(
            addr,
            "GET",
            "/app/transactions/current?api-version=2022-05-13",
            "x-ms-client-request-id: my-id-42\r\n",
            "",
        )
        .await;
    assert_eq!(second.status, 200);
    let (a, b) = (
        first.header("x-ms-request-id").unwrap(),
        second.header("x-ms-request-id").unwrap(),
    );
    assert_ne!(a, b);
    assert_eq!(
        second.header("x-ms-client-request-id").as_deref(),
        Some("my-id-42")
    );
    // A client id that could forge log lines is not echoed.
    let odd = admin
        .send(
            addr,
            "GET",
            "/healthz",
            "x-ms-client-request-id: a b\r\n",
            "",
        )
        .await;
    assert_eq!(odd.header("x-ms-client-request-id"), None);

    // Refused callers are counted by code.
    let refused = anonymous
        .send(
            addr,
            "GET",
            "/app/transactions/current?api-version=2022-05-13",
            "",
            "",
        )
        .await;
    assert_eq!(refused.status, 401);

    let metrics = anonymous.send(addr, "GET", "/metrics", "", "").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.body;
    for line in [
        r#"cledger_http_requests_total{route="/app/transactions",method="POST",status="200"} 1"#,
        r#"cledger_http_requests_total{route="/app/transactions/current",method="GET",status="200"} 1"#,
        r#"cledger_auth_failures_total{code="InvalidAuthenticationInfo"} 1"#,
        "# TYPE cledger_http_request_duration_seconds histogram",
        "# TYPE cledger_connections_open gauge",
        "cledger_writable 1",
        "cledger_write_queue_depth 0",
        "# TYPE cledger_commit_latency_seconds histogram",
        "# TYPE cledger_batch_write_sync_seconds histogram",
        "# TYPE cledger_batch_transactions histogram",
    ] {
        assert!(text.contains(line), "/metrics lacks {line:?}:\n{text}");
    }
    let seqno: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cledger_ledger_committed_seqno "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(seqno >= 2, "{seqno}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    // The write above, and the genesis-time writes of this process, were committed and signed.
    assert!(value("cledger_committed_transactions_total") >= 1.0);
    assert!(value("cledger_commit_latency_seconds_count") >= 1.0);
    assert!(value("cledger_signatures_total") >= 1.0);
    assert!(value("cledger_batch_write_sync_seconds_count") >= 2.0);
    assert!(!text.contains("cledger_ledger_segment_bytes 0\n"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let (_tmp, server, _admin, anonymous) = start(|c| c.metrics = false).await;
    let answer = anonymous
        .send(server.local_addr(), "GET", "/metrics", "", "")
        .await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (404, "ResourceNotFound")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_requests_are_cut_off() {
    let (_tmp, server, admin, _anonymous) = start(|c| {
        c.handshake_timeout_secs = 1;
        c.request_timeout_secs = 1;
        c.idle_timeout_secs = 1;
        c.max_url_bytes = 1024;
        c.max_header_bytes = 8192;
    })
    .await;
    let addr = server.local_addr();
    let slack = Duration::from_secs(4);

    // A TCP connection that never starts TLS is dropped after the handshake timeout.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut tcp, slack).await.is_some(),
        "silent TCP client kept"
    );

    // Headers that trickle in (slowloris) are cut off.
    let mut tls = admin.connect(addr).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    assert!(
        closed_within(&mut tls, slack).await.is_some(),
        "slow headers kept"
    );

    // A body that stalls gets 408 and nothing is written.
    let mut tls = admin.connect(addr).await;
    tls.write_all(
        b"POST /app/transactions?api-version=2022-05-13 HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"contents\":",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(slack, tls.read_to_end(&mut raw)).await;
    let answer = Answer::parse(&raw);
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (408, "RequestTimeout")
    );

    // An idle keep-alive connection is closed.
    let mut tls = admin.connect(addr).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut tls, slack).await.is_some(),
        "idle connection kept"
    );

    // Too long a URL: 414 with the ACL error shape.
    let long = format!(
        "/app/transactions?api-version=2022-05-13&collectionId={}",
        "a".repeat(2000)
    );
    let answer = admin.send(addr, "GET", &long, "", "").await;
    assert_eq!((answer.status, answer.code().as_str()), (414, "UriTooLong"));

    // Too large a request head: refused without a 2xx.
    let big = format!("x-filler: {}\r\n", "b".repeat(20_000));
    let mut tls = admin.connect(addr).await;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{big}\r\n");
    let _ = tls.write_all(request.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(slack, tls.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );

    // The node still serves.
    let answer = admin
        .exchange(addr, write_request("still here").as_bytes())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    server.shutdown().await.unwrap();
}

/// A TLS 1.1 ClientHello (no supported_versions extension).
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend([7u8; 32]); // random
    hello.push(0); // session id
    hello.extend([0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two TLS 1.1-era suites
    hello.extend([0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((hello.len() as u16).to_be_bytes());
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_later() {
    let (tmp, server, _admin, _anonymous) = start(|_| {}).await;
    let addr: SocketAddr = server.local_addr();

    // TLS 1.1: refused with a protocol_version alert.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
    assert!(reply.len() >= 7, "no alert: {reply:?}");
    assert_eq!(reply[0], 0x15, "not an alert record: {reply:?}");
    assert_eq!(reply[5], 2, "not a fatal alert: {reply:?}");
    // handshake_failure or protocol_version: either way, no TLS 1.1 session.
    assert!([40, 70].contains(&reply[6]), "unexpected alert: {reply:?}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
    assert!(!reply.starts_with(b"HTTP/"), "plaintext answered");

    // TLS 1.2 alone still works (old clients), as does 1.3 (every other test).
    let service = std::fs::read_to_string(tmp.path().join("service_cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ledger_core::x509::Cert::from_pem(&service)
                .unwrap()
                .der()
                .to_vec(),
        ))
        .unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(ledger_server::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls12 = Client {
        config: std::sync::Arc::new(tls12),
    };
    let answer = tls12.send(addr, "GET", "/healthz", "", "").await;
    assert_eq!(answer.status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_over_their_rate_get_429_and_others_do_not() {
    let (_tmp, server, admin, anonymous) = start(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 3;
    })
    .await;
    let addr = server.local_addr();
    let path = "/app/collections?api-version=2022-05-13";
    for _ in 0..3 {
        assert_eq!(admin.send(addr, "GET", path, "", "").await.status, 200);
    }
    let limited = admin.send(addr, "GET", path, "", "").await;
    assert_eq!(
        (limited.status, limited.code().as_str()),
        (429, "TooManyRequests")
    );
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let write = admin
        .exchange(addr, write_request("over the limit").as_bytes())
        .await;
    assert_eq!(write.status, 429, "writes are limited too");
    // Another caller has its own budget; health checks are never limited.
    let identity = anonymous
        .send(
            addr,
            "GET",
            "/ledgerIdentity/cledger?api-version=2022-05-13",
            "",
            "",
        )
        .await;
    assert_eq!(identity.status, 200);
    for _ in 0..5 {
        assert_eq!(
            admin.send(addr, "GET", "/healthz", "", "").await.status,
            200
        );
    }
    // After the Retry-After delay the caller is served again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(admin.send(addr, "GET", path, "", "").await.status, 200);
    let metrics = anonymous.send(addr, "GET", "/metrics", "", "").await.body;
    assert!(
        metrics.contains("cledger_rate_limited_total 2"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_budget_are_shed_while_reads_go_on() {
    let (_tmp, server, admin, anonymous) = start(|c| {
        c.request_timeout_secs = 20;
        // The smallest budget allowed: one largest-possible body.
        c.max_pending_write_bytes = c.max_entry_bytes * 6 + (64 << 10);
    })
    .await;
    let addr = server.local_addr();
    // A write that declares a body of all but 8 bytes of the budget and sends it slowly...
    let mut hog = admin.connect(addr).await;
    hog.write_all(
        b"POST /app/transactions?api-version=2022-05-13 HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 114680\r\n\r\n{\"contents\":\"",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so the next write is shed at once with 503 ServiceBusy and Retry-After...
    let shed = admin.exchange(addr, write_request("shed").as_bytes()).await;
    assert_eq!(
        (shed.status, shed.code().as_str()),
        (503, "ServiceBusy"),
        "{}",
        shed.body
    );
    assert_eq!(shed.header("retry-after").as_deref(), Some("1"));
    // ...while reads are served.
    let read = admin
        .send(
            addr,
            "GET",
            "/app/collections?api-version=2022-05-13",
            "",
            "",
        )
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
    let identity = anonymous
        .send(
            addr,
            "GET",
            "/ledgerIdentity/cledger?api-version=2022-05-13",
            "",
            "",
        )
        .await;
    assert_eq!(identity.status, 200);
    // When the slow write goes away, writes are admitted again.
    drop(hog);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = admin
        .exchange(addr, write_request("admitted").as_bytes())
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let metrics = anonymous.send(addr, "GET", "/metrics", "", "").await.body;
    assert!(metrics.contains("cledger_writes_shed_total 1"), "{metrics}");
    server.shutdown().await.unwrap();
}
