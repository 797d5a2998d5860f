//! §2, §3, §13: every malformed input after `Welcome` (and before `Hello`) gets `Error` with
//! its code, then a close that carries the code on the transport too.

use imgate_codec::{CloseCode, FEATURE_LZ4};
use imgate_transports::TransportKind;
use tokio_tungstenite::tungstenite::Message;

use crate::wire::Wire;
use crate::{ALL, STREAMS, Server, assert_error_close, hello, hello_as};

/// One bad input: what is sent, and the code §13 names for it.
struct Bad {
    name: &'static str,
    input: Input,
    code: CloseCode,
    /// Sent with LZ4 negotiated (so that it reaches the decompressor).
    lz4: bool,
}

enum Input {
    /// Raw bytes on a byte stream (a bad length prefix).
    Raw(&'static [u8]),
    /// One frame (flags + body), framed as the transport frames.
    Frame(&'static [u8]),
    /// A WebSocket message.
    Ws(fn() -> Message),
}

fn cases() -> Vec<Bad> {
    use Input::{Frame, Raw, Ws};
    let bad = |name, input, code, lz4| Bad {
        name,
        input,
        code,
        lz4,
    };
    vec![
        bad(
            "length 0",
            Raw(&[0, 0, 0, 0]),
            CloseCode::PROTOCOL_ERROR,
            false,
        ),
        // 16 MiB declared, above the 1 MiB limit: refused on the prefix alone.
        bad(
            "oversize declared length",
            Raw(&[1, 0, 0, 0]),
            CloseCode::FRAME_TOO_LARGE,
            false,
        ),
        bad(
            "invalid protobuf",
            Frame(&[0, 0xff, 0xff, 0xff]),
            CloseCode::PROTOCOL_ERROR,
            false,
        ),
        bad(
            "no kind (empty body)",
            Frame(&[0]),
            CloseCode::PROTOCOL_ERROR,
            false,
        ),
        // Field 99 (varint 1): a kind this version does not know (§15).
        bad(
            "unknown kind",
            Frame(&[0, 0x98, 0x06, 0x01]),
            CloseCode::PROTOCOL_ERROR,
            false,
        ),
        bad(
            "reserved flag bit",
            Frame(&[0x04, 0x22, 0x00]),
            CloseCode::PROTOCOL_ERROR,
            false,
        ),
        bad(
            "dictionary bit without LZ4",
            Frame(&[0x02, 0x22, 0x00]),
            CloseCode::PROTOCOL_ERROR,
            false,
        ),
        bad(
            "truncated LZ4 header",
            Frame(&[0x01, 0x05]),
            CloseCode::PROTOCOL_ERROR,
            true,
        ),
        // Declares 16 bytes; the block's match offset points before the output's start.
        bad(
            "corrupt LZ4 block",
            Frame(&[0x01, 16, 0, 0, 0, 0x1f, 0x41, 0x05, 0x00]),
            CloseCode::COMPRESSION_ERROR,
            true,
        ),
        bad(
            "decompression bomb",
            Frame(&[0x01, 0xff, 0xff, 0xff, 0x7f, 0x10, 0x41]),
            CloseCode::COMPRESSION_ERROR,
            true,
        ),
        bad(
            "LZ4 without negotiation",
            Frame(&[0x01, 2, 0, 0, 0, 0x20, 0x22, 0x00]),
            CloseCode::COMPRESSION_ERROR,
            false,
        ),
        bad(
            "WebSocket text",
            Ws(|| Message::text("hello")),
            CloseCode::UNSUPPORTED_DATA,
            false,
        ),
        bad(
            "empty WebSocket message",
            Ws(|| Message::binary(Vec::new())),
            CloseCode::PROTOCOL_ERROR,
            false,
        ),
        bad(
            "oversize WebSocket message",
            Ws(|| Message::binary(vec![0u8; (1 << 20) + 1])),
            CloseCode::FRAME_TOO_LARGE,
            false,
        ),
    ]
}

fn applies(input: &Input, kind: TransportKind) -> bool {
    let ws = matches!(kind, TransportKind::Ws | TransportKind::Wss);
    match input {
        Input::Raw(_) => !ws,
        Input::Frame(_) => true,
        Input::Ws(_) => ws,
    }
}

async fn send(wire: &mut Wire, input: &Input) {
    match input {
        Input::Raw(bytes) => wire.send_raw(bytes).await,
        Input::Frame(frame) => wire.send_frame_bytes(frame).await,
        Input::Ws(message) => wire.send_ws(message()).await,
    }
}

#[tokio::test]
async fn malformed_input_after_welcome_gets_error_then_coded_close() {
    let server = Server::start().await;
    for kind in ALL {
        for case in cases().iter().filter(|c| applies(&c.input, kind)) {
            let mut wire = server.connect(kind).await;
            let mut hi = hello_as("alice", "phone", None);
            if case.lz4 {
                hi.features = vec![FEATURE_LZ4.into()];
            }
            let welcome = hello(&mut wire, hi).await;
            assert_eq!(
                welcome.features.iter().any(|f| f == FEATURE_LZ4),
                case.lz4,
                "{kind:?} {}",
                case.name
            );
            send(&mut wire, &case.input).await;
            assert_error_close(&mut wire, case.code, case.name).await;
        }
    }
}

#[tokio::test]
async fn malformed_input_before_hello_gets_error_then_coded_close() {
    let server = Server::start().await;
    for kind in ALL {
        // Before `Welcome` nothing is negotiated: LZ4 frames are refused as compressed.
        for case in cases().iter().filter(|c| applies(&c.input, kind) && !c.lz4) {
            let mut wire = server.connect(kind).await;
            send(&mut wire, &case.input).await;
            assert_error_close(&mut wire, case.code, case.name).await;
        }
    }
}

#[tokio::test]
async fn error_codes_after_welcome_reach_quic_and_websocket_closes() {
    // A server-only frame kind from the client (§4): the session's own close, not the
    // decoder's, also carries its code on every transport.
    let server = Server::start().await;
    for kind in ALL {
        let (mut wire, _) = server.login(kind, "phone").await;
        wire.send(&imgate_codec::Pong::default().into()).await;
        assert_error_close(&mut wire, CloseCode::UNEXPECTED_FRAME, "server-only kind").await;
    }
    let _ = STREAMS;
}

#[tokio::test]
async fn a_client_error_ends_the_connection_and_keeps_the_session() {
    // §13: the server reads nothing after a client's `Error`, closes without answering, and
    // the session resumes.
    let server = Server::start().await;
    for kind in ALL {
        let (mut wire, welcome) = server.login(kind, "phone").await;
        wire.send(&imgate_codec::Error::new(CloseCode::NORMAL, "bye").into())
            .await;
        // Ignored if read: it would be answered with a Pong.
        wire.send(&imgate_codec::Ping::default().into()).await;
        let (frames, end) = wire.until_end().await;
        assert!(
            frames.is_empty(),
            "{kind:?}: answered after Error: {frames:?}"
        );
        match (kind, end) {
            (TransportKind::Quic, crate::wire::End::Quic { code }) => assert_eq!(code, 1000),
            (TransportKind::Ws | TransportKind::Wss, crate::wire::End::Ws { status, .. }) => {
                assert_eq!(status, 1000, "{kind:?}");
            }
            (TransportKind::Tcp | TransportKind::Tls, crate::wire::End::Eof) => {}
            (kind, end) => panic!("{kind:?}: ended with {end:?}"),
        }
        let mut again = server.connect(kind).await;
        let resumed = hello(
            &mut again,
            hello_as(
                "alice",
                "phone",
                Some(crate::support::resume_of(&welcome, 0)),
            ),
        )
        .await;
        assert!(resumed.resumed, "{kind:?}: the session was kept");
    }
}
