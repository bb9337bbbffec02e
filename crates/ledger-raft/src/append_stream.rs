//! The peer protocol's append stream: openraft's AppendEntries from a leader to one follower,
//! pipelined over one long-lived mutual-TLS connection, selected on the peer listener by ALPN
//! ([`ALPN`]).
//!
//! Why not one HTTPS request per AppendEntries: a request costs the leader a trip through an
//! HTTP client (headers, pooling, a task per call) and the follower a trip through an HTTP
//! server, about 65 µs on the leader alone at ~10 entries per request; and openraft 0.10
//! produces the next request as soon as new entries are written, which a request-response
//! transport cannot send until the previous answer arrives. Here the leader writes requests
//! as they come, up to [`IN_FLIGHT`] unanswered, while the follower appends them in order
//! (`Raft::stream_append`) and answers each once it is flushed: the follower takes batch N+1
//! while it syncs batch N.
//!
//! **Frames.** Each direction is a sequence of frames: a 4-byte big-endian length, then that
//! many bytes of postcard. The leader sends `AppendEntriesRequest`s; the follower answers each
//! with one [`Reply`], in order. A reply that is not a success (a conflict, a higher vote, or
//! consensus stopped on the follower) is the follower's last on that connection: it closes it,
//! and requests sent after it are not answered. A frame over [`MAX_FRAME`] bytes, or one that
//! does not decode, ends the connection.
//!
//! **Sessions.** openraft opens a stream session per payload (a probe, a long-lived stream of
//! new entries, each heartbeat). A session that ends with every request answered leaves its
//! connection for the next one, so heartbeats do not pay for a TLS handshake each; a session
//! that ends any other way (an error, a timeout, openraft dropping it) closes its connection.

use crate::types::{LedgerRaft, NodeId, Raft};
use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;

/// The ALPN protocol name of the append stream; the peer listener serves HTTP (votes) to
/// connections that negotiate anything else.
pub const ALPN: &[u8] = b"cledger-append/1";

/// Requests a leader sends before the first of them is answered, at most (openraft's own
/// follower-side pipeline holds 64).
pub const IN_FLIGHT: usize = 32;

/// The largest frame either side accepts. A request carries at most `max_payload_entries`
/// (4096) transactions; the client API bounds each.
pub const MAX_FRAME: usize = 256 << 20;

type Request = AppendEntriesRequest<LedgerRaft>;
type Answer = StreamAppendResult<LedgerRaft>;
type Connection = tokio_rustls::client::TlsStream<TcpStream>;
type Error = RPCError<LedgerRaft>;

/// A follower's answer to one request.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// openraft's answer: the last log id the follower flushed, or why it refused (a conflict,
    /// a higher vote), which ends the stream.
    Appended(Answer),
    /// Consensus stopped on the follower; the stream ends.
    Stopped(String),
}

impl Reply {
    /// Whether the follower goes on answering after this reply.
    fn continues(&self) -> bool {
        matches!(self, Reply::Appended(Ok(_)))
    }
}

/// Writes `value` as one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
) -> io::Result<()> {
    let mut frame = postcard::to_extend(value, vec![0u8; 4]).map_err(io::Error::other)?;
    let length = frame.len() - 4;
    if length > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a {length}-byte peer message is larger than the {MAX_FRAME} bytes a peer accepts"
        )));
    }
    frame[..4].copy_from_slice(&(length as u32).to_be_bytes());
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// Reads one frame; `None` when the other side closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
) -> io::Result<Option<T>> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a {length}-byte peer message is larger than the {MAX_FRAME} bytes a peer may send"
            ),
        ));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed peer message: {e}"),
        )
    })
}

/// Serves the append stream on an accepted connection from an admitted peer: every request
/// goes to `raft` in order, every answer back in order, until either side stops.
pub async fn serve<T>(connection: T, raft: Raft) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(connection);
    let (requests, queued) = mpsc::channel::<Request>(IN_FLIGHT);
    let reading = async move {
        while let Some(request) = read_frame(&mut reader).await? {
            if requests.send(request).await.is_err() {
                break;
            }
        }
        Ok(())
    };
    let answering = async move {
        let queued = futures_util::stream::unfold(queued, |mut queued| async move {
            queued.recv().await.map(|request| (request, queued))
        });
        let mut answers = std::pin::pin!(raft.stream_append(queued));
        while let Some(answer) = answers.next().await {
            let reply = match answer {
                Ok(answer) => Reply::Appended(answer),
                Err(fatal) => Reply::Stopped(format!("consensus stopped on this node: {fatal}")),
            };
            write_frame(&mut writer, &reply).await?;
            if !reply.continues() {
                break;
            }
        }
        writer.shutdown().await
    };
    // Either side ending ends the connection: a closed reader has no one to answer, and a
    // follower that stopped answering takes no more requests.
    tokio::select! {
        read = reading => read,
        answered = answering => answered,
    }
}

/// The leader's end of the append stream to one follower.
pub struct AppendChannel {
    connector: tokio_rustls::TlsConnector,
    address: String,
    target: NodeId,
    /// A connection whose last session ended with every request answered.
    idle: Option<Connection>,
}

impl AppendChannel {
    /// `config` must offer [`ALPN`].
    pub fn new(config: Arc<rustls::ClientConfig>, target: NodeId, address: String) -> Self {
        AppendChannel {
            connector: tokio_rustls::TlsConnector::from(config),
            address,
            target,
            idle: None,
        }
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> Error {
        Unreachable::from_string(format!("node {} at {}: {why}", self.target, self.address)).into()
    }

    async fn connect(&self, within: Duration) -> Result<Connection, Error> {
        // The node certificate names its host (an IP address or a DNS name).
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _port)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| self.unreachable(format!("not a host name: {e}")))?;
        let connecting = async {
            let tcp = TcpStream::connect(&self.address).await?;
            tcp.set_nodelay(true)?;
            crate::network::keep_alive(&tcp);
            self.connector.connect(name, tcp).await
        };
        let connection = tokio::time::timeout(within, connecting)
            .await
            .map_err(|_| self.unreachable(format!("no connection within {within:?}")))?
            .map_err(|e| self.unreachable(e))?;
        if connection.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(self.unreachable(
                "its peer listener does not speak cledger's append stream (another version?)",
            ));
        }
        Ok(connection)
    }

    /// One openraft stream session: sends `input`'s requests as they come and yields the
    /// follower's answers in order.
    pub fn session<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<Answer, Error>>, Error>>
    where
        S: Stream<Item = Request> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let connection = match self.idle.take() {
                Some(connection) => connection,
                None => self.connect(option.soft_ttl()).await?,
            };
            let (reader, writer) = tokio::io::split(connection);
            let window = Arc::new(Semaphore::new(IN_FLIGHT));
            let (sent, sent_rx) = mpsc::unbounded_channel();
            let sender = Sender(tokio::spawn(send_requests(
                writer,
                input,
                sent,
                window.clone(),
            )));
            let session = Session {
                reader,
                sent: sent_rx,
                sender,
                window,
                patience: option.hard_ttl(),
                target: self.target.clone(),
                idle: &mut self.idle,
            };
            let answers = futures_util::stream::unfold(Some(session), Session::next_answer);
            Ok(Box::pin(answers) as BoxStream<'s, _>)
        })
    }
}

/// Writes a session's requests as openraft produces them, at most [`IN_FLIGHT`] unanswered,
/// telling the session of each; gives the connection's writing half back once the input ends.
async fn send_requests<S>(
    mut writer: WriteHalf<Connection>,
    mut input: S,
    sent: mpsc::UnboundedSender<()>,
    window: Arc<Semaphore>,
) -> io::Result<WriteHalf<Connection>>
where
    S: Stream<Item = Request> + Send + Unpin + 'static,
{
    loop {
        window
            .acquire()
            .await
            .map_err(|_| io::Error::other("the session ended"))?
            .forget();
        let Some(request) = input.next().await else {
            return Ok(writer);
        };
        write_frame(&mut writer, &request).await?;
        if sent.send(()).is_err() {
            return Err(io::Error::other("the session ended"));
        }
    }
}

/// The sending task of a session, stopped when the session is dropped (openraft drops a
/// session it replaces; its requests must not go on being sent).
struct Sender(tokio::task::JoinHandle<io::Result<WriteHalf<Connection>>>);

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Session<'s> {
    reader: ReadHalf<Connection>,
    /// One message per request sent: an answer is owed for each.
    sent: mpsc::UnboundedReceiver<()>,
    sender: Sender,
    window: Arc<Semaphore>,
    /// How long an owed answer may take.
    patience: Duration,
    target: NodeId,
    idle: &'s mut Option<Connection>,
}

impl Session<'_> {
    fn failed(&self, why: impl std::fmt::Display) -> Error {
        NetworkError::from_string(format!("node {}: append stream: {why}", self.target)).into()
    }

    async fn next_answer(session: Option<Self>) -> Option<(Result<Answer, Error>, Option<Self>)> {
        let mut session = session?;
        if session.sent.recv().await.is_none() {
            // The sender finished: the input ended with every request answered, or a write
            // failed.
            return match (&mut session.sender.0).await {
                Ok(Ok(writer)) => {
                    *session.idle = Some(session.reader.unsplit(writer));
                    None
                }
                Ok(Err(e)) => Some((Err(session.failed(e)), None)),
                Err(e) => Some((Err(session.failed(e)), None)),
            };
        }
        let reply = tokio::time::timeout(
            session.patience,
            read_frame::<_, Reply>(&mut session.reader),
        )
        .await;
        let reply = match reply {
            Ok(Ok(Some(reply))) => reply,
            Ok(Ok(None)) => {
                return Some((
                    Err(session.failed("the follower closed the connection")),
                    None,
                ));
            }
            Ok(Err(e)) => return Some((Err(session.failed(e)), None)),
            Err(_) => {
                let waited = session.patience;
                return Some((
                    Err(session.failed(format!("no answer within {waited:?}"))),
                    None,
                ));
            }
        };
        session.window.add_permits(1);
        match reply {
            Reply::Appended(answer) => {
                let next = answer.is_ok().then_some(session);
                Some((Ok(answer), next))
            }
            Reply::Stopped(why) => Some((Err(session.failed(why)), None)),
        }
    }
}
