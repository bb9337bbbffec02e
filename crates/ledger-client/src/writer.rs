//! [`Writer`]: posting writes over one HTTP/1.1 keep-alive connection, cheaply, for load
//! generators (`cledger bench`).
//!
//! A [`crate::nonblocking::Client`] goes through reqwest: every request parses its URL, finds
//! a connection in a pool and hands the request to the connection's own task, which answers
//! through a channel. Per write that costs the generator more CPU than the TLS and the
//! socket calls together (issue 18: `cledger bench` used 29 µs of CPU per write where h2load
//! used 18), and on a machine whose cores the generator shares with the server, the
//! generator's CPU is the server's throughput. A `Writer` owns its TLS connection, builds the
//! request directly and drives hyper's HTTP/1.1 connection in the caller's task.
//!
//! Like the `Client`, it follows a `307`/`308` to the primary and retries a `503` with
//! `Retry-After` (nothing was done in either case); unlike it, it then stays with the node it
//! was sent to, so that a writer pointed at a backup opens one connection to the primary, not
//! one per write. It reconnects when it finds its connection closed before sending; a write
//! whose connection failed after it was sent is an error, never sent again (it may have been
//! committed).

use crate::{Appended, Auth, ClientConfig, Error, Result, Step, base, decode, next_step, url};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

type Connection = http1::Connection<TokioIo<TlsStream<TcpStream>>, Full<Bytes>>;

/// An open connection: hyper's sending half and the connection future that does the I/O.
struct Open {
    sender: http1::SendRequest<Full<Bytes>>,
    connection: Connection,
}

/// The node a writer sends to.
struct Target {
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    server_name: ServerName<'static>,
}

impl Target {
    /// The node of an `https://host[:port]` URL (any path is ignored).
    fn of(url: &str) -> Result<Target> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| Error::Config(format!("the URL {url:?}: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| Error::Config(format!("the URL {url:?} has no host")))?;
        let server_name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| Error::Config(format!("the host {host:?}: {e}")))?;
        Ok(Target {
            authority: format!("{host}:{}", uri.port_u16().unwrap_or(443)),
            server_name,
        })
    }
}

/// Where the writer sends, and its connection there if one is open.
struct Session {
    target: Target,
    open: Option<Open>,
}

/// One HTTP/1.1 connection that posts writes. Calls on one `Writer` take turns (HTTP/1.1
/// carries one request at a time); a caller that wants N writes in flight makes N writers.
pub struct Writer {
    tls: tokio_rustls::TlsConnector,
    /// `Bearer …`, when the configuration holds a token.
    authorization: Option<hyper::header::HeaderValue>,
    api_version: String,
    timeout: std::time::Duration,
    retry_unavailable: std::time::Duration,
    session: tokio::sync::Mutex<Session>,
}

/// The body of a write (`POST /app/transactions`).
#[derive(Serialize)]
struct Post<'a> {
    contents: &'a str,
    #[serde(rename = "preHooks", skip_serializing_if = "<[_]>::is_empty")]
    pre_hooks: &'a [Hook<'a>],
}

#[derive(Serialize)]
struct Hook<'a> {
    #[serde(rename = "functionId")]
    function_id: &'a str,
}

impl Writer {
    /// A writer for `config`'s endpoint; it connects on its first write. Only HTTP/1.1:
    /// `config.http_version` is not consulted.
    pub fn new(config: &ClientConfig) -> Result<Writer> {
        let target = Target::of(&base(&config.endpoint)?)?;
        Ok(Writer {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls_config(config)?)),
            authorization: match &config.auth {
                Auth::Token(token) => Some(
                    format!("Bearer {token}")
                        .parse()
                        .map_err(|_| Error::Config("the token is not a header value".into()))?,
                ),
                _ => None,
            },
            api_version: config.api_version.clone(),
            timeout: config.request_timeout,
            retry_unavailable: config.retry_unavailable,
            session: tokio::sync::Mutex::new(Session { target, open: None }),
        })
    }

    /// `POST /app/transactions`, as [`crate::nonblocking::Client::post_entry`].
    pub async fn post_entry(&self, contents: &str, collection: Option<&str>) -> Result<Appended> {
        self.post(&self.api_version, contents, collection, &[])
            .await
    }

    /// `POST /app/transactions` with pre-hooks, as
    /// [`crate::nonblocking::Client::post_entry_with_hooks`].
    pub async fn post_entry_with_hooks(
        &self,
        contents: &str,
        collection: Option<&str>,
        pre_hooks: &[&str],
    ) -> Result<Appended> {
        let hooks: Vec<Hook> = pre_hooks
            .iter()
            .map(|id| Hook { function_id: id })
            .collect();
        self.post(
            crate::nonblocking::FUNCTIONS_API_VERSION,
            contents,
            collection,
            &hooks,
        )
        .await
    }

    async fn post(
        &self,
        api_version: &str,
        contents: &str,
        collection: Option<&str>,
        pre_hooks: &[Hook<'_>],
    ) -> Result<Appended> {
        let path = url(
            "",
            "/app/transactions",
            api_version,
            &[("collectionId", collection)],
        );
        let body = Bytes::from(
            serde_json::to_vec(&Post {
                contents,
                pre_hooks,
            })
            .map_err(|e| Error::Protocol(format!("encoding the write: {e}")))?,
        );
        let mut session = self.session.lock().await;
        let started = std::time::Instant::now();
        let mut hops = 0;
        let (status, headers, text) = loop {
            let mut request = hyper::Request::post(path.as_str())
                .header(hyper::header::HOST, &session.target.authority)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .map_err(|e| Error::Protocol(format!("building the write: {e}")))?;
            if let Some(authorization) = &self.authorization {
                request
                    .headers_mut()
                    .insert(hyper::header::AUTHORIZATION, authorization.clone());
            }
            let answer =
                tokio::time::timeout(self.timeout, self.exchange(&mut session, request)).await;
            let (status, headers, text) = match answer {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    session.open = None;
                    return Err(e);
                }
                Err(_) => {
                    session.open = None;
                    return Err(Error::Timeout(format!(
                        "no answer to a write within {:?}",
                        self.timeout
                    )));
                }
            };
            if status.is_success() {
                break (status, headers, text);
            }
            let sent_to = format!("https://{}{path}", session.target.authority);
            match next_step(
                status,
                &headers,
                &sent_to,
                hops,
                started.elapsed(),
                self.retry_unavailable,
            )? {
                Step::Follow(next) => {
                    // To the primary, the same path: this write and the next go there.
                    hops += 1;
                    session.target = Target::of(&next)?;
                    session.open = None;
                }
                Step::Retry(delay) => tokio::time::sleep(delay).await,
                Step::Answer => break (status, headers, text),
            }
        };
        let (headers, body) = decode(status, headers, &text)?;
        Appended::from_answer(&headers, &body, collection)
    }

    /// Sends `request` on the open connection (opening one first if there is none or the one
    /// there was closed while idle) and reads the whole answer.
    async fn exchange(
        &self,
        session: &mut Session,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(hyper::StatusCode, hyper::HeaderMap, String)> {
        if let Some(o) = session.open.as_mut()
            && (o.sender.is_closed() || connection_ended(&mut o.connection).await)
        {
            // Nothing was sent on it since its last answer: opening another is safe.
            session.open = None;
        }
        let Open { sender, connection } = match &mut session.open {
            Some(open) => open,
            none => none.insert(self.connect(&session.target).await?),
        };
        driving(connection, sender.ready())
            .await?
            .map_err(transport)?;
        let response = driving(connection, sender.send_request(request))
            .await?
            .map_err(transport)?;
        let (parts, body) = response.into_parts();
        let body = driving(connection, body.collect())
            .await?
            .map_err(transport)?
            .to_bytes();
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| Error::Protocol("the answer is not UTF-8".into()))?;
        Ok((parts.status, parts.headers, text))
    }

    async fn connect(&self, target: &Target) -> Result<Open> {
        let authority = &target.authority;
        let tcp = TcpStream::connect(authority)
            .await
            .map_err(|e| Error::Transport(format!("connecting to {authority}: {e}")))?;
        // Requests are small and each waits for its answer: Nagle would only add delay.
        tcp.set_nodelay(true)
            .map_err(|e| Error::Transport(format!("TCP_NODELAY: {e}")))?;
        let tls = self
            .tls
            .connect(target.server_name.clone(), tcp)
            .await
            .map_err(|e| Error::Transport(format!("TLS with {authority}: {e}")))?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(transport)?;
        Ok(Open { sender, connection })
    }
}

/// Polls `future` and, in the same task, the connection that does its I/O. The connection
/// ending first is an error: the answer can no longer come.
async fn driving<F: Future>(connection: &mut Connection, future: F) -> Result<F::Output> {
    let mut future = pin!(future);
    poll_fn(|cx| {
        if let Poll::Ready(ended) = Pin::new(&mut *connection).poll(cx) {
            return Poll::Ready(Err(match ended {
                Ok(()) => Error::Transport("the server closed the connection".into()),
                Err(e) => transport(e),
            }));
        }
        future.as_mut().poll(cx).map(Ok)
    })
    .await
}

/// Whether an idle connection has ended (the server closed it, e.g. after its idle timeout).
async fn connection_ended(connection: &mut Connection) -> bool {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *connection).poll(cx).is_ready())).await
}

fn transport(e: hyper::Error) -> Error {
    Error::transport(&e)
}

/// TLS trusting only the service certificate, presenting the client certificate if the
/// configuration holds one; HTTP/1.1 by ALPN.
fn tls_config(config: &ClientConfig) -> Result<rustls::ClientConfig> {
    let pem = |what: &str, e: rustls_pki_types::pem::Error| Error::Config(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(config.service_cert_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| pem("the service certificate", e))?)
            .map_err(|e| Error::Config(format!("the service certificate: {e}")))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots);
    let mut tls = match &config.auth {
        Auth::Certificate(bundle) => {
            let what = "the client certificate bundle (certificate and private key, PEM)";
            let certs = CertificateDer::pem_slice_iter(bundle.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| pem(what, e))?;
            let key = PrivateKeyDer::from_pem_slice(bundle.as_bytes()).map_err(|e| pem(what, e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::Config(format!("{what}: {e}")))?
        }
        Auth::Token(_) | Auth::None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_the_host_and_port_of_a_url() {
        let t = Target::of("https://h.example:8443/app/transactions?api-version=x").unwrap();
        assert_eq!(t.authority, "h.example:8443");
        assert_eq!(t.server_name, ServerName::try_from("h.example").unwrap());
        assert_eq!(
            Target::of("https://h.example").unwrap().authority,
            "h.example:443"
        );
        // An IPv6 literal keeps its brackets to connect to, and is checked as an address.
        let t = Target::of("https://[::1]:8443").unwrap();
        assert_eq!(t.authority, "[::1]:8443");
        assert!(matches!(t.server_name, ServerName::IpAddress(_)));
        assert!(Target::of("not a url").is_err());
    }
}
