//! Shared by the in-process server tests: a config on a loopback port and a raw TLS client.

#![allow(dead_code)] // each test file uses a different part

use ledger_server::ServeConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn config(dir: &Path) -> ServeConfig {
    ServeConfig {
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServeConfig::default()
    }
}

/// Starts a server on a fresh directory with `tweak`ed settings; returns it with an
/// administrator client and an anonymous one (HTTP/1.1).
pub async fn start(
    tweak: impl FnOnce(&mut ServeConfig),
) -> (tempfile::TempDir, ledger_server::Server, Client, Client) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    tweak(&mut cfg);
    let server = ledger_server::Server::start(cfg).await.unwrap();
    let service = std::fs::read_to_string(tmp.path().join("service_cert.pem")).unwrap();
    let admin_pem =
        std::fs::read_to_string(tmp.path().join(ledger_server::node::ADMIN_FILE)).unwrap();
    let admin = Client::new(&service, Some(&admin_pem), &[b"http/1.1"]);
    let anonymous = Client::new(&service, None, &[b"http/1.1"]);
    (tmp, server, admin, anonymous)
}

/// Reads until the peer closes; returns how long that took, or `None` if it stayed open
/// for `limit`.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends one HTTP/1.1 request on an open connection (kept alive) and reads its answer, whose
/// body must carry a Content-Length; `None` if the connection closed instead.
pub async fn request_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
) -> Option<Answer> {
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = Answer::parse(&raw[..end + 4]);
            let length: usize = head
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return Some(Answer::parse(&raw[..end + 4 + length]));
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

pub struct Client {
    pub config: Arc<rustls::ClientConfig>,
}

impl Client {
    pub fn new(service_cert_pem: &str, identity_pem: Option<&str>, alpn: &[&[u8]]) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(service_cert_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(ledger_server::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity_pem {
            Some(pem) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Client {
            config: Arc::new(config),
        }
    }

    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// One HTTP/1.1 GET; returns (status, body).
    pub async fn get(&self, addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut tls = self.connect(addr).await;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

/// A parsed HTTP/1.1 answer.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn parse(raw: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The ACL error code of an error body.
    pub fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.body));
        v["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

impl Client {
    /// Sends `request` (a whole HTTP/1.1 request, which should say `Connection: close`) on a
    /// new connection and reads the answer to the end.
    pub async fn exchange(&self, addr: std::net::SocketAddr, request: &[u8]) -> Answer {
        let mut tls = self.connect(addr).await;
        tls.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        Answer::parse(&response)
    }

    /// `METHOD path` with extra header lines and a body.
    pub async fn send(
        &self,
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> Answer {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.exchange(addr, request.as_bytes()).await
    }
}

/// `POST /app/transactions` of `contents` (JSON-escaped by the caller if needed).
pub fn write_request(contents: &str) -> String {
    let body = format!("{{\"contents\":\"{contents}\"}}");
    format!(
        "POST /app/transactions?api-version=2022-05-13 HTTP/1.1\r\nHost: localhost\r\n\
         Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
