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
//! What it does not do, unlike the `Client`: follow redirects (a `307` to the primary is an
//! error naming where it pointed: point the writer at the primary) and retry `503`s. It
//! reconnects when it finds its connection closed before sending; a write whose connection
//! failed after it was sent is an error, never sent again (it may have been committed).

use crate::{Appended, Auth, ClientConfig, DEFAULT_COLLECTION, Error, Result, base, decode, url};
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

/// One HTTP/1.1 connection that posts writes. Calls on one `Writer` take turns (HTTP/1.1
/// carries one request at a time); a caller that wants N writes in flight makes N writers.
pub struct Writer {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    /// `Bearer …`, when the configuration holds a token.
    authorization: Option<hyper::header::HeaderValue>,
    api_version: String,
    timeout: std::time::Duration,
    open: tokio::sync::Mutex<Option<Open>>,
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
        let endpoint: hyper::Uri = base(&config.endpoint)?
            .parse()
            .map_err(|e| Error::Config(format!("the endpoint {:?}: {e}", config.endpoint)))?;
        let host = endpoint
            .host()
            .ok_or_else(|| Error::Config(format!("the endpoint {:?} has no host", endpoint)))?;
        let server_name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| Error::Config(format!("the endpoint's host {host:?}: {e}")))?;
        let authority = format!("{host}:{}", endpoint.port_u16().unwrap_or(443));
        Ok(Writer {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls_config(config)?)),
            server_name,
            authority,
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
            open: tokio::sync::Mutex::new(None),
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
        let target = url(
            "",
            "/app/transactions",
            api_version,
            &[("collectionId", collection)],
        );
        let body = serde_json::to_vec(&Post {
            contents,
            pre_hooks,
        })
        .map_err(|e| Error::Protocol(format!("encoding the write: {e}")))?;
        let mut request = hyper::Request::post(target)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Protocol(format!("building the write: {e}")))?;
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(hyper::header::AUTHORIZATION, authorization.clone());
        }
        let mut open = self.open.lock().await;
        let answer = tokio::time::timeout(self.timeout, self.exchange(&mut open, request)).await;
        let (status, headers, text) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                *open = None;
                return Err(e);
            }
            Err(_) => {
                *open = None;
                return Err(Error::Timeout(format!(
                    "no answer to a write within {:?}",
                    self.timeout
                )));
            }
        };
        if status.is_redirection() {
            let to = headers
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere");
            return Err(Error::Protocol(format!(
                "the write was redirected (HTTP {status}) to {to}: a Writer does not follow \
                 redirects; give it the primary's endpoint"
            )));
        }
        let (headers, body) = decode(status, headers, &text)?;
        Ok(Appended {
            transaction_id: crate::written_txid(&headers)?,
            collection_id: body["collectionId"]
                .as_str()
                .or(collection)
                .unwrap_or(DEFAULT_COLLECTION)
                .to_owned(),
        })
    }

    /// Sends `request` on the open connection (opening one first if there is none or the one
    /// there was closed while idle) and reads the whole answer.
    async fn exchange(
        &self,
        open: &mut Option<Open>,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(hyper::StatusCode, hyper::HeaderMap, String)> {
        if let Some(o) = open.as_mut()
            && (o.sender.is_closed() || connection_ended(&mut o.connection).await)
        {
            // Nothing was sent on it since its last answer: opening another is safe.
            *open = None;
        }
        if open.is_none() {
            *open = Some(self.connect().await?);
        }
        let Open { sender, connection } = open.as_mut().expect("opened above");
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

    async fn connect(&self) -> Result<Open> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| Error::Transport(format!("connecting to {}: {e}", self.authority)))?;
        // Requests are small and each waits for its answer: Nagle would only add delay.
        tcp.set_nodelay(true)
            .map_err(|e| Error::Transport(format!("TCP_NODELAY: {e}")))?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| Error::Transport(format!("TLS with {}: {e}", self.authority)))?;
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
