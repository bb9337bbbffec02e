//! The append stream's leader end against a scripted follower on loopback, with the peer
//! protocol's real mutual TLS: requests are pipelined, answers come back in order, a clean
//! session leaves its connection for the next, a refusal or a silent follower ends the
//! session and its connection, frames that are too large or malformed are refused, and a
//! single AppendEntries (the non-streaming call) is a session of its own.

use futures_util::StreamExt;
use ledger_core::TxId;
use ledger_identity::{
    Curve, create_service_identity, generate_private_key, issue_node_certificate,
};
use ledger_raft::PeerTls;
use ledger_raft::append_stream::{AppendChannel, MAX_FRAME, Reply, read_frame, write_frame};
use ledger_raft::types::{Entry, LedgerRaft, Proposal, log_id_of};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, StreamAppendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

type Request = AppendEntriesRequest<LedgerRaft>;

/// What the scripted follower does with the requests of one connection.
#[derive(Clone, Copy)]
enum Script {
    /// Reads `n` requests before answering any, then answers each with its last log id.
    AnswerAfter(usize),
    /// Answers each request with its last log id as it comes.
    Answer,
    /// Answers the first request with a conflict.
    Conflict,
    /// Reads requests and never answers.
    Silent,
}

fn tls() -> PeerTls {
    let service = create_service_identity(Curve::P256).expect("service identity");
    let node_key_pem = generate_private_key(Curve::P256).expect("key");
    let node_cert_pem = issue_node_certificate(&service, &node_key_pem, &[]).expect("cert");
    PeerTls {
        service_cert_pem: service.cert_pem.clone(),
        node_cert_pem,
        node_key_pem,
    }
}

fn last_of(request: &Request) -> Option<openraft::type_config::alias::LogIdOf<LedgerRaft>> {
    request
        .entries
        .last()
        .map(|entry| entry.log_id)
        .or(request.prev_log_id)
}

/// A request carrying the transactions `first..=last` of view 1.
fn request(first: u64, last: u64) -> Request {
    let at = |seqno| log_id_of(TxId::new(1, seqno).expect("txid"));
    AppendEntriesRequest {
        vote: openraft::impls::Vote::new_committed(1, "leader".to_string()),
        prev_log_id: (first > 1).then(|| at(first - 1)),
        leader_commit: None,
        entries: (first..=last)
            .map(|seqno| Entry {
                log_id: at(seqno),
                payload: openraft::EntryPayload::Normal(Proposal::Encoded(vec![seqno as u8; 300])),
            })
            .collect(),
    }
}

/// A scripted follower on the peer listener's TLS; counts the connections it accepted.
async fn follower(tls: &PeerTls, script: Script) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config().expect("server TLS"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            counted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut connection = acceptor.accept(tcp).await.expect("TLS");
                assert_eq!(
                    connection.get_ref().1.alpn_protocol(),
                    Some(ledger_raft::append_stream::ALPN)
                );
                let mut held = Vec::new();
                while let Ok(Some(request)) = read_frame::<_, Request>(&mut connection).await {
                    let reply = match script {
                        Script::Silent => continue,
                        Script::Conflict => Reply::Appended(Err(StreamAppendError::Conflict(
                            request.prev_log_id.expect("a prev log id"),
                        ))),
                        Script::Answer => Reply::Appended(Ok(last_of(&request))),
                        Script::AnswerAfter(n) => {
                            held.push(request);
                            if held.len() < n {
                                continue;
                            }
                            for request in held.drain(..) {
                                let reply = Reply::Appended(Ok(last_of(&request)));
                                write_frame(&mut connection, &reply).await.expect("answer");
                            }
                            continue;
                        }
                    };
                    write_frame(&mut connection, &reply).await.expect("answer");
                }
            });
        }
    });
    (address, accepted)
}

fn channel(tls: &PeerTls, address: &str) -> AppendChannel {
    AppendChannel::new(
        tls.append_stream_config().expect("client TLS"),
        "follower".into(),
        address.into(),
    )
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(5))
}

#[tokio::test]
async fn requests_are_pipelined_and_answered_in_order() {
    let tls = tls();
    // The follower answers nothing until it holds ten requests: a transport that waits for
    // each answer before sending the next would never get there.
    let (address, _) = follower(&tls, Script::AnswerAfter(10)).await;
    let mut appends = channel(&tls, &address);
    let requests: Vec<Request> = (0..10).map(|i| request(i * 5 + 1, i * 5 + 5)).collect();
    let expected: Vec<_> = requests.iter().map(last_of).collect();
    let answers = tokio::time::timeout(Duration::from_secs(20), async {
        let session = appends
            .session(futures_util::stream::iter(requests), option())
            .await
            .expect("session");
        session.collect::<Vec<_>>().await
    })
    .await
    .expect("ten pipelined requests answered");
    let answers: Vec<_> = answers
        .into_iter()
        .map(|a| a.expect("no transport error").expect("appended"))
        .collect();
    assert_eq!(answers, expected);
}

#[tokio::test]
async fn a_clean_session_leaves_its_connection_for_the_next() {
    let tls = tls();
    let (address, accepted) = follower(&tls, Script::Answer).await;
    let mut appends = channel(&tls, &address);
    for i in 1..=5u64 {
        // A heartbeat-like session: one request, and the answers read to the end.
        let mut session = appends
            .session(futures_util::stream::iter([request(i, i)]), option())
            .await
            .expect("session");
        let answer = session.next().await.expect("an answer");
        assert_eq!(
            answer.expect("transport").expect("appended"),
            last_of(&request(i, i))
        );
        assert!(session.next().await.is_none(), "one answer per request");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for five sessions"
    );
}

#[tokio::test]
async fn a_refusal_ends_the_session_and_its_connection() {
    let tls = tls();
    let (address, accepted) = follower(&tls, Script::Conflict).await;
    let mut appends = channel(&tls, &address);
    for round in 1..=2 {
        let requests = vec![request(3, 4), request(5, 6), request(7, 8)];
        let session = appends
            .session(futures_util::stream::iter(requests), option())
            .await
            .expect("session");
        let answers: Vec<_> = session.collect().await;
        assert_eq!(
            answers.len(),
            1,
            "the stream ends at the refusal: {answers:?}"
        );
        assert!(
            matches!(&answers[0], Ok(Err(StreamAppendError::Conflict(at))) if at.index == 2),
            "{answers:?}"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            round,
            "a new connection each time"
        );
    }
}

#[tokio::test]
async fn a_silent_follower_ends_the_session_with_an_error() {
    let tls = tls();
    let (address, accepted) = follower(&tls, Script::Silent).await;
    let mut appends = channel(&tls, &address);
    for round in 1..=2 {
        let mut session = appends
            .session(
                futures_util::stream::iter([request(1, 2)]),
                RPCOption::new(Duration::from_millis(300)),
            )
            .await
            .expect("session");
        let answer = tokio::time::timeout(Duration::from_secs(20), session.next())
            .await
            .expect("the session gives up by itself");
        let error = answer.expect("an item").expect_err("no answer is an error");
        assert!(error.to_string().contains("no answer within"), "{error}");
        assert!(session.next().await.is_none());
        drop(session);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            round,
            "the silent connection is not kept"
        );
    }
}

#[tokio::test]
async fn an_unreachable_follower_is_an_error() {
    let tls = tls();
    let unused = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = unused.local_addr().expect("address").to_string();
    drop(unused);
    let mut appends = channel(&tls, &address);
    let refused = appends
        .session(futures_util::stream::iter([request(1, 1)]), option())
        .await;
    let Err(error) = refused else {
        panic!("a session to a closed port opened");
    };
    assert!(error.to_string().contains(&address), "{error}");
}

#[tokio::test]
async fn frames_round_trip_and_bad_frames_are_refused() {
    let (mut near, mut far) = tokio::io::duplex(1 << 20);
    let sent = request(1, 3);
    write_frame(&mut near, &sent).await.expect("write");
    let got: Request = read_frame(&mut far).await.expect("read").expect("a frame");
    assert_eq!(last_of(&got), last_of(&sent));
    assert_eq!(got.entries.len(), 3);

    // A length over the limit is refused before anything is allocated or read.
    near.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
        .await
        .unwrap();
    let error = read_frame::<_, Request>(&mut far)
        .await
        .expect_err("too large");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert!(error.to_string().contains("larger than"), "{error}");

    // Bytes that are not a request.
    let (mut near, mut far) = tokio::io::duplex(1 << 20);
    near.write_all(&4u32.to_be_bytes()).await.unwrap();
    near.write_all(&[0xff; 4]).await.unwrap();
    let error = read_frame::<_, Request>(&mut far)
        .await
        .expect_err("garbage");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        error.to_string().contains("malformed peer message"),
        "{error}"
    );

    // A frame cut short by the connection closing, and a close between frames.
    let (mut near, mut far) = tokio::io::duplex(1 << 20);
    near.write_all(&100u32.to_be_bytes()).await.unwrap();
    near.write_all(&[1; 10]).await.unwrap();
    drop(near);
    let error = read_frame::<_, Request>(&mut far)
        .await
        .expect_err("cut short");
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    let (near, mut far) = tokio::io::duplex(64);
    drop(near);
    assert!(
        read_frame::<_, Request>(&mut far)
            .await
            .expect("clean")
            .is_none()
    );
}

#[tokio::test]
async fn a_single_append_is_a_session_of_its_own() {
    use ledger_raft::PeerNode;
    use ledger_raft::network::PeerNetwork;
    use openraft::network::{RaftNetworkFactory, RaftNetworkV2};
    use openraft::raft::AppendEntriesResponse;
    let tls = tls();
    for (script, expected) in [
        (Script::Answer, AppendEntriesResponse::Success),
        (Script::Conflict, AppendEntriesResponse::Conflict),
    ] {
        let (address, accepted) = follower(&tls, script).await;
        let node = PeerNode {
            client_url: format!("https://{address}"),
            peer_address: address,
        };
        let mut peer = PeerNetwork::new(&tls)
            .expect("network")
            .new_client("follower".into(), &node)
            .await;
        for i in 2..=3 {
            let answer = peer
                .append_entries(request(i * 2, i * 2 + 1), option())
                .await
                .expect("answered");
            assert_eq!(answer, expected);
        }
        // A success leaves the connection for the next request; a conflict closes it.
        let connections = if expected == AppendEntriesResponse::Success {
            1
        } else {
            2
        };
        assert_eq!(accepted.load(Ordering::SeqCst), connections);
    }
}
