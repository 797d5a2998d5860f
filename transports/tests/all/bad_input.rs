//! Each kind of bad input is closed with a clear reason, counted, and leaves the server
//! serving other connections.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "ws")]
use futures_util::{SinkExt, StreamExt};
use imgate_codec::{CloseCode, FrameDecoder};
use imgate_transports::{StatsSnapshot, TransportKind, TransportStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
#[cfg(feature = "ws")]
use tokio_tungstenite::tungstenite::Message;
#[cfg(feature = "ws")]
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
#[cfg(feature = "ws")]
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;

use crate::common::*;

/// An echo server with a short handshake deadline; returns its address and counters.
async fn start(kind: TransportKind) -> (std::net::SocketAddr, Arc<TransportStats>, Echo) {
    let mut config = listener_config(kind);
    config.handshake_timeout = Duration::from_millis(200);
    let listener = server(config).await;
    let addr = listener.local_addr();
    let stats = listener.stats().clone();
    (addr, stats, echo(listener))
}

/// Waits until the server closes a raw socket; returns the bytes it sent before that.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("server did not close the connection"),
        }
    }
}

async fn wait_for(stats: &TransportStats, check: impl Fn(&StatsSnapshot) -> bool) {
    if tokio::time::timeout(WAIT, stats.wait_for(check))
        .await
        .is_err()
    {
        panic!("counter never moved: {:?}", stats.snapshot());
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn plain_bytes_on_the_tls_port() {
    let (addr, stats, _echo) = start(TransportKind::Tls).await;
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(b"\x00\x00\x00\x05\x00hello, plain bytes\r\n\r\n")
        .await
        .expect("write");
    read_until_closed(&mut raw).await;
    wait_for(&stats, |s| s.handshake_tls == 1).await;
    assert_echo(&connector(TransportKind::Tls), addr).await;
}

#[cfg(feature = "ws")]
#[tokio::test]
async fn http_garbage_on_the_websocket_port() {
    let (addr, stats, _echo) = start(TransportKind::Ws).await;
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        .await
        .expect("write");
    read_until_closed(&mut raw).await;
    wait_for(&stats, |s| s.handshake_ws_bad_request == 1).await;
    // A well-formed upgrade on the wrong path gets a 404 and its own counter.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(
        b"GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: imgate.v1\r\n\r\n",
    )
    .await
    .expect("write");
    let response = read_until_closed(&mut raw).await;
    assert!(
        response.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    wait_for(&stats, |s| s.handshake_ws_path == 1).await;
    assert_echo(&connector(TransportKind::Ws), addr).await;
}

#[cfg(feature = "ws")]
#[tokio::test]
async fn websocket_without_subprotocol_or_from_a_foreign_origin() {
    let mut config = listener_config(TransportKind::Ws);
    config.ws.allowed_origins = Some(vec!["https://app.example".into()]);
    let listener = server(config).await;
    let addr = listener.local_addr();
    let stats = listener.stats().clone();
    let _echo = echo(listener);
    let request = format!("ws://localhost:{}/ws", addr.port())
        .into_client_request()
        .expect("req");
    let stream = TcpStream::connect(addr).await.expect("connect");
    assert!(
        tokio_tungstenite::client_async(request, stream)
            .await
            .is_err()
    );
    wait_for(&stats, |s| s.handshake_ws_subprotocol == 1).await;

    let mut foreign = connector_config(TransportKind::Ws);
    foreign.ws_origin = Some("https://evil.example".into());
    let foreign = imgate_transports::Connector::new(foreign).expect("connector");
    assert!(foreign.connect(addr).await.is_err());
    wait_for(&stats, |s| s.handshake_ws_origin == 1).await;

    let mut allowed = connector_config(TransportKind::Ws);
    allowed.ws_origin = Some("https://app.example".into());
    assert_echo(
        &imgate_transports::Connector::new(allowed).expect("connector"),
        addr,
    )
    .await;
}

#[cfg(feature = "ws")]
#[tokio::test]
async fn websocket_text_message_closes_with_unsupported_data() {
    let (addr, stats, _echo) = start(TransportKind::Ws).await;
    let mut request = format!("ws://localhost:{}/ws", addr.port())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "imgate.v1".parse().expect("header"),
    );
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade");
    // A ping is answered with a pong, on the way.
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .expect("ping");
    ws.send(Message::Text("hello".into()))
        .await
        .expect("send text");
    let mut saw_pong = false;
    let mut error_frame = None;
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out")
        {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"still there?");
                saw_pong = true;
            }
            Some(Ok(Message::Binary(bytes))) => {
                error_frame = Some(
                    FrameDecoder::default()
                        .decode_message(bytes)
                        .expect("frame"),
                );
            }
            Some(Ok(Message::Close(frame))) => break frame.expect("close frame"),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(saw_pong, "ping not answered");
    assert_eq!(close.code, WsCode::Unsupported);
    assert!(
        close.reason.starts_with("UNSUPPORTED_DATA(1008)"),
        "{}",
        close.reason
    );
    match error_frame.and_then(|f| f.kind) {
        Some(imgate_codec::Kind::Error(e)) => {
            assert_eq!(e.close_code(), CloseCode::UNSUPPORTED_DATA)
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }
    wait_for(&stats, |s| s.unsupported_data == 1).await;
    assert_echo(&connector(TransportKind::Ws), addr).await;
}

#[tokio::test]
async fn declared_length_over_the_limit_is_refused_before_the_body() {
    let (addr, stats, _echo) = start(TransportKind::Tcp).await;
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    // Only the length prefix of a 2 GiB frame: refused without waiting for (or reserving) it.
    raw.write_all(&0x8000_0000u32.to_be_bytes())
        .await
        .expect("write");
    let reply = read_until_closed(&mut raw).await;
    let mut buf = bytes::BytesMut::from(&reply[..]);
    let frame = FrameDecoder::default()
        .decode_stream(&mut buf)
        .expect("frame")
        .expect("whole");
    match frame.kind {
        Some(imgate_codec::Kind::Error(e)) => {
            assert_eq!(e.close_code(), CloseCode::FRAME_TOO_LARGE)
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }
    wait_for(&stats, |s| s.frame_too_large == 1).await;
    assert_echo(&connector(TransportKind::Tcp), addr).await;
}

#[cfg(all(feature = "tls", feature = "ws"))]
#[tokio::test]
async fn silent_peers_are_closed_at_the_handshake_deadline() {
    for kind in [TransportKind::Tls, TransportKind::Wss, TransportKind::Ws] {
        let (addr, stats, _echo) = start(kind).await;
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        let started = tokio::time::Instant::now();
        read_until_closed(&mut raw).await;
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{kind} closed too early"
        );
        wait_for(&stats, |s| s.handshake_timeout == 1).await;
        assert_echo(&connector(kind), addr).await;
    }
}

#[cfg(feature = "quic")]
#[tokio::test]
async fn quic_peer_that_never_opens_its_stream_is_closed() {
    let (addr, stats, _echo) = start(TransportKind::Quic).await;
    let connector = connector(TransportKind::Quic);
    // Connected, stream opened locally, but nothing sent: the server never sees the stream.
    let mut silent = connector.connect(addr).await.expect("connect");
    assert_eq!(
        close_code(&mut silent).await,
        Some(CloseCode::HANDSHAKE_TIMEOUT)
    );
    wait_for(&stats, |s| s.handshake_timeout == 1).await;
    assert_echo(&connector, addr).await;
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn tls_client_with_a_wrong_or_missing_alpn_is_refused() {
    let (addr, stats, _echo) = start(TransportKind::Tls).await;
    for (alpn, expected) in [(vec![b"h2".to_vec()], 1), (vec![], 2)] {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(identity().root_store())
        .with_no_client_auth();
        config.alpn_protocols = alpn;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        // Wrong ALPN: rustls' alert; none at all: ours (protocol §1). Either way the handshake
        // itself fails, so the client is not left with a connection that dies after Hello.
        let refused = tokio::time::timeout(WAIT, connector.connect(name, stream))
            .await
            .expect("timed out");
        assert!(refused.is_err(), "a handshake without imgate/1 completed");
        wait_for(&stats, |s| s.handshake_alpn == expected).await;
    }
    assert_echo(&connector(TransportKind::Tls), addr).await;
}
