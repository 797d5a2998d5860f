//! The HTTP fallback's own rules, driven by hand-made requests: each hostile request is
//! refused with its status, the connection it names closes with its code (the `Error` frame
//! at the end of the stream), it is counted, and nothing else is disturbed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use imgate_codec::{CloseCode, Frame, FrameDecoder, FrameEncoder, Kind, Ping};
use imgate_transports::{ListenerConfig, TransportKind};
use tokio::net::TcpStream;

use crate::common::*;

type Body = BoxBody<Bytes, Infallible>;

const PATH: &str = "/imgate";

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// One kept-alive client socket.
async fn socket(addr: SocketAddr) -> SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    sender
}

fn post(path: &str, id: Option<&str>, body: Body) -> Request<Body> {
    let mut request = Request::post(path).header(header::HOST, "localhost");
    if let Some(id) = id {
        request = request.header("imgate-connection", id);
    }
    request.body(body).expect("request")
}

async fn send(sender: &mut SendRequest<Body>, request: Request<Body>) -> http::Response<Incoming> {
    tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("no answer")
        .expect("answer")
}

/// Opens a connection with `first` as its first frames: its id and its stream.
async fn open(addr: SocketAddr, first: Bytes) -> (String, Incoming) {
    let mut sender = socket(addr).await;
    let response = send(&mut sender, post(PATH, None, full(first))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["imgate-connection"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(id.len(), 32, "128 bits in hex: {id}");
    // The stream's socket lives as long as its response body (hyper's connection task).
    (id, response.into_body())
}

fn stream_bytes(frames: &[Frame]) -> Bytes {
    let mut bytes = BytesMut::new();
    for frame in frames {
        FrameEncoder::default()
            .encode_stream(frame, &mut bytes)
            .expect("encode");
    }
    bytes.freeze()
}

fn ping() -> Frame {
    Ping::default().into()
}

/// Every frame of a body, read to its end.
async fn frames(body: Incoming) -> Vec<Frame> {
    let bytes = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("the stream did not end")
        .expect("stream")
        .to_bytes();
    let mut bytes = BytesMut::from(&bytes[..]);
    let decoder = FrameDecoder::default();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode_stream(&mut bytes).expect("frame") {
        frames.push(frame);
    }
    assert!(bytes.is_empty(), "the stream ended inside a frame");
    frames
}

/// The next piece of a stream's body.
async fn next_chunk(stream: &mut Incoming) -> Bytes {
    let frame = tokio::time::timeout(WAIT, stream.frame())
        .await
        .expect("the stream sent nothing")
        .expect("the stream ended")
        .expect("stream");
    frame.into_data().expect("data")
}

fn error_code(frame: Option<&Frame>) -> Option<CloseCode> {
    match frame {
        Some(Frame {
            kind: Some(Kind::Error(error)),
        }) => Some(error.close_code()),
        _ => None,
    }
}

/// An echo server (closing bad input with its code) on an HTTP listener.
async fn start(
    edit: impl FnOnce(&mut ListenerConfig),
) -> (
    SocketAddr,
    std::sync::Arc<imgate_transports::TransportStats>,
    Echo,
) {
    let mut config = listener_config(TransportKind::Http);
    config.max_frame = 1024;
    edit(&mut config);
    let listener = server(config).await;
    let (addr, stats) = (listener.local_addr(), listener.stats().clone());
    (addr, stats, echo(listener))
}

#[tokio::test]
async fn frames_in_the_opening_post_and_later_ones_are_echoed_down_the_stream() {
    let (addr, stats, _echo) = start(|_| {}).await;
    let (id, mut stream) = open(addr, stream_bytes(&[deliver(1, 10)])).await;
    let mut sender = socket(addr).await;
    let response = send(
        &mut sender,
        post(
            "/imgate/send",
            Some(&id),
            full(stream_bytes(&[deliver(2, 10), deliver(3, 10)])),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let mut received = BytesMut::new();
    let decoder = FrameDecoder::default();
    let mut echoed = Vec::new();
    while echoed.len() < 3 {
        received.extend_from_slice(&next_chunk(&mut stream).await);
        while let Some(frame) = decoder.decode_stream(&mut received).expect("frame") {
            echoed.push(frame);
        }
    }
    assert_eq!(echoed, [deliver(1, 10), deliver(2, 10), deliver(3, 10)]);
    // The close request ends the client's side; the echo server then ends the stream.
    let response = send(&mut sender, post("/imgate/close", Some(&id), full(""))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(frames(stream).await, []);
    assert_eq!(stats.snapshot().established, 1);
}

#[tokio::test]
async fn an_oversize_post_is_413_and_closes_the_connection_with_frame_too_large() {
    let (addr, stats, _echo) = start(|_| {}).await;
    let (id, stream) = open(addr, Bytes::new()).await;
    let mut sender = socket(addr).await;
    let response = send(
        &mut sender,
        post("/imgate/send", Some(&id), full(vec![0; 2000])),
    )
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_code(frames(stream).await.last()),
        Some(CloseCode::FRAME_TOO_LARGE)
    );
    // One declared frame over the limit in a body within it: the same.
    let (id, stream) = open(addr, Bytes::new()).await;
    let mut over = 1025u32.to_be_bytes().to_vec();
    over.extend_from_slice(&[0; 16]);
    let response = send(&mut sender, post("/imgate/send", Some(&id), full(over))).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_code(frames(stream).await.last()),
        Some(CloseCode::FRAME_TOO_LARGE)
    );
    // An oversize opening body: no connection, the refusal's body says why.
    let response = send(&mut sender, post(PATH, None, full(vec![0; 2000]))).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_code(frames(response.into_body()).await.first()),
        Some(CloseCode::FRAME_TOO_LARGE)
    );
    let counted = stats.snapshot();
    assert_eq!(
        (
            counted.http_post_too_large,
            counted.frame_too_large,
            counted.established
        ),
        (2, 3, 2)
    );
}

#[tokio::test]
async fn a_slow_post_is_408_and_closes_the_connection_with_handshake_timeout() {
    // The deadline is the scenario: a body that stops arriving is cut off when it passes.
    let (addr, stats, _echo) =
        start(|config| config.handshake_timeout = Duration::from_millis(300)).await;
    let (id, stream) = open(addr, Bytes::new()).await;
    let (mut body_tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    body_tx
        .send_data(Bytes::from_static(&[0, 0, 0]))
        .await
        .expect("first bytes");
    let mut sender = socket(addr).await;
    let response = send(&mut sender, post("/imgate/send", Some(&id), body.boxed())).await;
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        error_code(frames(stream).await.last()),
        Some(CloseCode::HANDSHAKE_TIMEOUT)
    );
    assert_eq!(stats.snapshot().http_post_timeout, 1);
    drop(body_tx);
}

#[tokio::test]
async fn a_post_ending_inside_a_frame_is_400_and_a_protocol_error() {
    let (addr, stats, _echo) = start(|_| {}).await;
    let (id, stream) = open(addr, Bytes::new()).await;
    let whole = stream_bytes(&[ping()]);
    let cut = whole.slice(..whole.len() - 1);
    let mut sender = socket(addr).await;
    let response = send(&mut sender, post("/imgate/send", Some(&id), full(cut))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(frames(stream).await.last()),
        Some(CloseCode::PROTOCOL_ERROR)
    );
    assert_eq!(stats.snapshot().http_post_malformed, 1);
}

#[tokio::test]
async fn posts_for_unknown_ids_and_a_second_stream_for_an_id_are_refused_harmlessly() {
    let (addr, stats, _echo) = start(|_| {}).await;
    let (id, mut stream) = open(addr, Bytes::new()).await;
    let mut sender = socket(addr).await;
    let stranger = format!("{:032x}", 7u128);
    let response = send(
        &mut sender,
        post(
            "/imgate/send",
            Some(&stranger),
            full(stream_bytes(&[ping()])),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = send(&mut sender, post("/imgate/send", Some("not hex"), full(""))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = send(&mut sender, post(PATH, Some(&id), full(""))).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        error_code(frames(response.into_body()).await.first()),
        Some(CloseCode::PROTOCOL_ERROR)
    );
    // The connection named is untouched: a frame still makes the round trip.
    let response = send(
        &mut sender,
        post("/imgate/send", Some(&id), full(stream_bytes(&[ping()]))),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(next_chunk(&mut stream).await, stream_bytes(&[ping()]));
    let counted = stats.snapshot();
    assert_eq!(
        (
            counted.http_post_unknown,
            counted.handshake_http_bad_request
        ),
        (1, 2)
    );
    // After the connection ended, its id is unknown.
    let response = send(&mut sender, post("/imgate/close", Some(&id), full(""))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    drop(stream);
    let response = send(
        &mut sender,
        post("/imgate/send", Some(&id), full(stream_bytes(&[ping()]))),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_post_while_another_is_arriving_is_409_and_the_first_still_lands() {
    let (addr, stats, _echo) = start(|_| {}).await;
    let (id, mut stream) = open(addr, Bytes::new()).await;
    let whole = stream_bytes(&[ping()]);
    let (mut body_tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    body_tx
        .send_data(whole.slice(..2))
        .await
        .expect("first bytes");
    let mut first = socket(addr).await;
    let first_answer =
        tokio::spawn(first.send_request(post("/imgate/send", Some(&id), body.boxed())));
    // The server counts the conflict only once the first POST is being received.
    let mut second = socket(addr).await;
    let response = loop {
        let response = send(
            &mut second,
            post("/imgate/send", Some(&id), full(whole.clone())),
        )
        .await;
        if response.status() == StatusCode::CONFLICT {
            break response;
        }
        // The first POST's head had not arrived yet, so this one went first: it was taken.
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(next_chunk(&mut stream).await, whole);
    };
    assert_eq!(response.status(), StatusCode::CONFLICT);
    body_tx.send_data(whole.slice(2..)).await.expect("rest");
    drop(body_tx);
    let answer = tokio::time::timeout(WAIT, first_answer)
        .await
        .expect("answer")
        .expect("task")
        .expect("response");
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert_eq!(next_chunk(&mut stream).await, whole);
    assert_eq!(stats.snapshot().http_post_conflict, 1);
}

#[tokio::test]
async fn a_stream_that_is_never_read_stalls_its_writer_and_its_socket_is_closed() {
    let mut config = listener_config(TransportKind::Http);
    config.max_outbound_bytes = 256 * 1024;
    let mut listener = server(config).await;
    let addr = listener.local_addr();
    // The response head arrives; the body is never read.
    let (_id, stream) = open(addr, Bytes::new()).await;
    let mut conn = listener.accept().await.expect("accept");
    // A stall detector, as the gateway's: a flush that does not finish in 200 ms. Loopback
    // buffers hold a few megabytes; 64 MiB unread is proof enough that nobody reads.
    let frame = deliver(1, 60 * 1024);
    let mut stalled = false;
    for _ in 0..64 * 1024 / 60 {
        conn.writer().queue(&frame).expect("queue");
        if tokio::time::timeout(Duration::from_millis(200), conn.flush())
            .await
            .is_err()
        {
            stalled = true;
            break;
        }
    }
    assert!(stalled, "the writer never stalled");
    let _ = conn.close(CloseCode::SLOW_CONSUMER, "slow consumer").await;
    drop(conn);
    // The scenario: the client still reads nothing, past the second the server gives a
    // stream to drain once its connection is gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The server closed the socket with the response unfinished: reading now finds what was
    // buffered, then a response cut short (a stream that had drained would end cleanly).
    let end = tokio::time::timeout(WAIT, stream.collect())
        .await
        .expect("the socket stayed open");
    assert!(end.is_err(), "the response was allowed to finish");
}

#[tokio::test]
async fn cors_preflight_and_origin_allow_list() {
    let (addr, stats, _echo) = start(|config| {
        config.http.allowed_origins = Some(vec!["https://app.example".into()]);
    })
    .await;
    let mut sender = socket(addr).await;
    let preflight = Request::options("/imgate/send")
        .header(header::HOST, "localhost")
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "imgate-connection")
        .body(full(""))
        .expect("request");
    let response = send(&mut sender, preflight).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers();
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
    assert!(
        headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .expect("ascii")
            .contains("imgate-connection")
    );
    let mut open = post(PATH, None, full(""));
    open.headers_mut().insert(
        header::ORIGIN,
        "https://app.example".parse().expect("origin"),
    );
    let response = send(&mut socket(addr).await, open).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "imgate-connection"
    );
    let mut stranger = post(PATH, None, full(""));
    stranger.headers_mut().insert(
        header::ORIGIN,
        "https://evil.example".parse().expect("origin"),
    );
    let response = send(&mut sender, stranger).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
    assert_eq!(stats.snapshot().handshake_http_origin, 1);
}

#[tokio::test]
async fn wrong_paths_and_methods_are_refused() {
    let (addr, stats, _echo) = start(|_| {}).await;
    let mut sender = socket(addr).await;
    let get = Request::get(PATH)
        .header(header::HOST, "localhost")
        .body(full(""))
        .expect("request");
    assert_eq!(
        send(&mut sender, get).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        send(&mut sender, post("/other", None, full("")))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(stats.snapshot().handshake_http_bad_request, 2);
}

#[tokio::test]
async fn the_per_ip_limit_refuses_an_open_with_connection_limit() {
    let (addr, stats, _echo) = start(|config| config.max_per_ip = Some(1)).await;
    let connector = connector(TransportKind::Http);
    let mut first = connector.connect(addr).await.expect("first");
    first.send(&ping()).await.expect("send");
    assert_eq!(recv(&mut first).await.expect("echo"), Some(ping()));
    // The open goes with the first frame; its refusal is the connection's last frame, as
    // on TCP.
    let mut second = connector.connect(addr).await.expect("socket");
    second.send(&ping()).await.expect("send");
    assert_eq!(
        close_code(&mut second).await,
        Some(CloseCode::CONNECTION_LIMIT)
    );
    assert_eq!(stats.snapshot().rejected_per_ip, 1);
    drop(first);
}

#[tokio::test]
async fn an_aborted_stream_ends_the_connection() {
    let mut listener = server(listener_config(TransportKind::Http)).await;
    let (_id, stream) = open(listener.local_addr(), stream_bytes(&[ping()])).await;
    let mut conn = listener.accept().await.expect("accept");
    assert_eq!(recv(&mut conn).await.expect("ping"), Some(ping()));
    // The client goes away without a close request: its socket closes with the body.
    drop(stream);
    assert!(matches!(recv(&mut conn).await, Ok(None) | Err(_)));
}
