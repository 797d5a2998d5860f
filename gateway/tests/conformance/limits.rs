//! §12: the frame limit announced in `Welcome` holds for the client's frames; the per-IP
//! connection limit says `3002` so that a client applies the retry rule.

use bytes::Bytes;
use imgate::session::SessionConfig;
use imgate_codec::{CloseCode, Kind, Send};
use imgate_transports::TransportKind;

use crate::{ALL, Server, assert_error_close};

#[tokio::test]
async fn a_frame_above_the_announced_max_frame_is_refused_frame_too_large() {
    let session = SessionConfig {
        max_frame: 4096,
        ..SessionConfig::default()
    };
    let server = Server::start_with(session, |_| {}).await;
    for kind in ALL {
        let (mut wire, welcome) = server.login(kind, "phone").await;
        assert_eq!(welcome.max_frame, 4096);
        // At the limit: accepted (a Receipt comes back, the connection stays).
        let at_limit = |len| Send {
            msg_id: 1,
            payload: Bytes::from(vec![b'x'; len]),
            ..Default::default()
        };
        let frame_len =
            |len| 1 + prost::Message::encoded_len(&imgate_codec::Frame::from(at_limit(len)));
        let len = (0..4096)
            .rev()
            .find(|&len| frame_len(len) == 4096)
            .expect("a fitting payload");
        let frame = imgate_codec::Frame::from(at_limit(len));
        wire.send(&frame).await;
        assert!(matches!(wire.frame().await, Kind::Receipt(_)), "{kind:?}");
        let mut over = at_limit(6000);
        over.msg_id = 2;
        wire.send(&over.into()).await;
        assert_error_close(&mut wire, CloseCode::FRAME_TOO_LARGE, "6000-byte Send").await;
    }
}

#[tokio::test]
async fn the_per_ip_connection_limit_closes_tcp_with_connection_limit() {
    let server = Server::start_with(SessionConfig::default(), |listener| {
        listener.max_per_ip = Some(1);
    })
    .await;
    let _first = server.connect(TransportKind::Tcp).await;
    let mut second = server.connect(TransportKind::Tcp).await;
    assert_error_close(
        &mut second,
        CloseCode::CONNECTION_LIMIT,
        "second connection",
    )
    .await;
    // The other transports are closed before their handshake; QUIC refuses the connection.
    let quic = crate::wire::Wire::connect_with(
        TransportKind::Quic,
        server.addr(TransportKind::Quic),
        &server.roots,
        crate::wire::Alpn::Proper,
    );
    let _held = server.connect(TransportKind::Quic).await;
    let refused = quic.await;
    assert!(
        refused.is_err(),
        "a second QUIC connection from 127.0.0.1 was admitted"
    );
}
