//! §1 and §3.3: what the server refuses before `Welcome`: a TLS or QUIC handshake without
//! ALPN `imgate/1`, a compressed `Hello`.

use imgate_codec::{CloseCode, Frame, Kind};
use imgate_transports::TransportKind;
use prost::Message as _;

use crate::wire::{Alpn, Wire};
use crate::{ALL, Server, assert_error_close, hello, hello_as};

/// `body` as one LZ4 block of literals only (valid LZ4: the last sequence of a block is
/// literals), with the compressed-body header of §3.1 and flags `0x01`.
fn lz4_frame(body: &[u8]) -> Vec<u8> {
    let len = body.len();
    let mut frame = vec![0x01];
    frame.extend_from_slice(&u32::try_from(len).expect("len").to_le_bytes());
    if len < 15 {
        frame.push(u8::try_from(len << 4).expect("token"));
    } else {
        frame.push(0xf0);
        let mut rest = len - 15;
        while rest >= 255 {
            frame.push(255);
            rest -= 255;
        }
        frame.push(u8::try_from(rest).expect("byte"));
    }
    frame.extend_from_slice(body);
    frame
}

#[tokio::test]
async fn a_compressed_hello_is_refused_with_compression_error() {
    let server = Server::start().await;
    for kind in ALL {
        let mut wire = server.connect(kind).await;
        let mut hi = hello_as("alice", "phone", None);
        hi.features = vec!["lz4".into()];
        wire.send_frame_bytes(&lz4_frame(&Frame::from(hi).encode_to_vec()))
            .await;
        assert_error_close(&mut wire, CloseCode::COMPRESSION_ERROR, "compressed Hello").await;
    }
}

#[tokio::test]
async fn the_same_hello_uncompressed_is_welcome() {
    // Control for the test above: the refusal is for the compression, not the Hello.
    let server = Server::start().await;
    let mut wire = server.connect(TransportKind::Tcp).await;
    let mut hi = hello_as("alice", "phone", None);
    hi.features = vec!["lz4".into()];
    assert!(
        hello(&mut wire, hi)
            .await
            .features
            .contains(&"lz4".to_owned())
    );
}

#[tokio::test]
async fn tls_and_quic_without_alpn_are_refused_in_the_handshake() {
    let server = Server::start().await;
    for kind in [TransportKind::Tls, TransportKind::Quic] {
        let refused =
            Wire::connect_with(kind, server.addr(kind), &server.roots, Alpn::Omitted).await;
        let error = refused
            .err()
            .unwrap_or_else(|| panic!("{kind:?}: handshake without ALPN completed"));
        assert!(
            error.to_lowercase().contains("alert") || error.contains("120"),
            "{kind:?}: {error}"
        );
    }
    // WSS takes clients without ALPN (browsers' HTTP stacks): the handshake and Hello work.
    let mut wss = Wire::connect_with(
        TransportKind::Wss,
        server.addr(TransportKind::Wss),
        &server.roots,
        Alpn::Omitted,
    )
    .await
    .expect("WSS without ALPN");
    hello(&mut wss, hello_as("alice", "phone", None)).await;
    // And with ALPN the TLS port serves as usual.
    let (mut tls, _) = server.login(TransportKind::Tls, "tablet").await;
    tls.send(&imgate_codec::Ping::default().into()).await;
    assert!(matches!(tls.frame().await, Kind::Pong(_)));
}
