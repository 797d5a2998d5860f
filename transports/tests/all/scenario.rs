//! One scenario, run for every transport.

use imgate_codec::CloseCode;
use imgate_transports::{Connector, TransportError, TransportKind};
#[cfg(feature = "tls")]
use imgate_transports::{ConnectorConfig, Identity};

use crate::common::*;

/// 100 frames each way, queued together and received in order.
pub(crate) async fn frames_both_ways_in_order(kind: TransportKind) {
    let mut listener = server(listener_config(kind)).await;
    let mut client = connector(kind)
        .connect(listener.local_addr())
        .await
        .expect("connect");
    for seq in 0..100 {
        client
            .writer()
            .queue(&deliver(seq, seq as usize * 7))
            .expect("queue");
    }
    client.flush().await.expect("flush");
    let mut server_conn = listener.accept().await.expect("accept");
    assert_eq!(server_conn.info().kind, kind);
    assert_eq!(server_conn.info().peer.ip(), std::net::Ipv4Addr::LOCALHOST);
    if kind == TransportKind::Tls || kind == TransportKind::Quic {
        assert_eq!(server_conn.info().alpn, Some("imgate/1"));
        assert_eq!(server_conn.info().sni.as_deref(), Some("localhost"));
    }
    for seq in 0..100 {
        assert_eq!(
            recv(&mut server_conn).await.expect("recv"),
            Some(deliver(seq, seq as usize * 7))
        );
    }
    for seq in 0..100 {
        server_conn.writer().queue(&deliver(seq, 3)).expect("queue");
    }
    server_conn.flush().await.expect("flush");
    for seq in 0..100 {
        assert_eq!(
            recv(&mut client).await.expect("recv"),
            Some(deliver(seq, 3))
        );
    }
}

const MAX: usize = 64 * 1024;

/// A frame of exactly the limit passes both ways; one byte more is refused with
/// FRAME_TOO_LARGE and counted.
pub(crate) async fn max_frame_and_over(kind: TransportKind) {
    let mut config = listener_config(kind);
    config.max_frame = MAX;
    config.peer_max_frame = MAX;
    let mut listener = server(config).await;
    let stats = listener.stats().clone();
    let mut client_config = connector_config(kind);
    client_config.max_frame = MAX;
    // The client lets itself send more than the server takes, to test the server.
    client_config.peer_max_frame = MAX + 1;
    let connector = Connector::new(client_config).expect("connector");
    let mut client = connector
        .connect(listener.local_addr())
        .await
        .expect("connect");
    let at_limit = frame_of_size(MAX);
    client.send(&at_limit).await.expect("send at limit");
    let mut server_conn = listener.accept().await.expect("accept");
    assert_eq!(
        recv(&mut server_conn).await.expect("recv"),
        Some(at_limit.clone())
    );
    server_conn.send(&at_limit).await.expect("send back");
    assert_eq!(recv(&mut client).await.expect("recv"), Some(at_limit));
    // The server's encoder refuses to send over the client's limit.
    let over = frame_of_size(MAX + 1);
    let err = server_conn
        .send(&over)
        .await
        .expect_err("over the peer's limit");
    assert_eq!(err.close_code(), Some(CloseCode::FRAME_TOO_LARGE));

    client.send(&over).await.expect("client may send it");
    let err = recv(&mut server_conn).await.expect_err("over the limit");
    assert_eq!(err.close_code(), Some(CloseCode::FRAME_TOO_LARGE), "{err}");
    assert_eq!(stats.snapshot().frame_too_large, 1);
    server_conn
        .close(CloseCode::FRAME_TOO_LARGE, "frame too large")
        .await
        .expect("close");
    assert_eq!(
        close_code(&mut client).await,
        Some(CloseCode::FRAME_TOO_LARGE)
    );
}

/// Dropping one side is noticed by the other, both ways, without hanging.
pub(crate) async fn abrupt_close_detected(kind: TransportKind) {
    let mut listener = server(listener_config(kind)).await;
    let connector = connector(kind);
    // Client vanishes.
    let mut client = connector
        .connect(listener.local_addr())
        .await
        .expect("connect");
    client.send(&deliver(1, 1)).await.expect("send");
    let mut server_conn = listener.accept().await.expect("accept");
    assert!(recv(&mut server_conn).await.expect("recv").is_some());
    drop(client);
    let end = recv(&mut server_conn).await;
    assert!(matches!(end, Ok(None) | Err(_)), "server saw {end:?}");
    // Server vanishes.
    let mut client = connector
        .connect(listener.local_addr())
        .await
        .expect("connect");
    client.send(&deliver(2, 1)).await.expect("send");
    let mut server_conn = listener.accept().await.expect("accept");
    assert!(recv(&mut server_conn).await.expect("recv").is_some());
    drop(server_conn);
    let end = recv(&mut client).await;
    assert!(matches!(end, Ok(None) | Err(_)), "client saw {end:?}");
}

/// A client that does not trust the server's certificate refuses it.
#[cfg(feature = "tls")]
pub(crate) async fn untrusted_certificate_refused(kind: TransportKind) {
    let listener = server(listener_config(kind)).await;
    let stranger = Identity::self_signed(&["localhost"]).expect("identity");
    let mut config = ConnectorConfig::new(kind, stranger.root_store());
    config.quic_bind = "127.0.0.1:0".parse().expect("addr");
    let connector = Connector::new(config).expect("connector");
    let result = connector.connect(listener.local_addr()).await;
    match result {
        Err(TransportError::Tls(_)) => {}
        #[cfg(feature = "quic")]
        Err(TransportError::Quic(_)) => {}
        #[cfg(feature = "ws")]
        Err(TransportError::WebSocket(_)) => {}
        other => panic!("untrusted certificate accepted or wrong error: {other:?}"),
    }
}

macro_rules! per_transport {
    ($($(#[$cfg:meta])* $name:ident => $kind:expr),* $(,)?) => {$(
        $(#[$cfg])*
        mod $name {
            use super::*;

            #[tokio::test]
            async fn frames_both_ways_in_order() {
                super::frames_both_ways_in_order($kind).await;
            }

            #[tokio::test]
            async fn max_frame_and_over() {
                super::max_frame_and_over($kind).await;
            }

            #[tokio::test]
            async fn abrupt_close_detected() {
                super::abrupt_close_detected($kind).await;
            }

            #[cfg(feature = "tls")]
            #[tokio::test]
            async fn untrusted_certificate_refused() {
                if $kind.uses_tls() {
                    super::untrusted_certificate_refused($kind).await;
                }
            }
        }
    )*};
}

per_transport! {
    tcp => TransportKind::Tcp,
    #[cfg(feature = "tls")]
    tls => TransportKind::Tls,
    #[cfg(feature = "ws")]
    ws => TransportKind::Ws,
    #[cfg(all(feature = "ws", feature = "tls"))]
    wss => TransportKind::Wss,
    #[cfg(feature = "quic")]
    quic => TransportKind::Quic,
    #[cfg(feature = "http")]
    http => TransportKind::Http,
    #[cfg(all(feature = "http", feature = "tls"))]
    https => TransportKind::Https,
}

/// A transport compiled out is refused by name, with the feature that would bring it in.
#[tokio::test]
async fn compiled_out_transports_are_refused_with_a_clear_error() {
    for kind in TransportKind::ALL {
        let bound = imgate_transports::Listener::bind(listener_config(kind)).await;
        let connector = Connector::new(connector_config(kind));
        if kind.is_available() {
            assert!(bound.is_ok(), "{kind}: {bound:?}");
            assert!(connector.is_ok(), "{kind}: {connector:?}");
            continue;
        }
        for err in [
            bound.map(drop).unwrap_err(),
            connector.map(drop).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(
                matches!(err, TransportError::Config(_))
                    && text.contains(kind.as_str())
                    && text.contains(kind.feature().unwrap_or("?")),
                "{kind}: {text}"
            );
        }
    }
}
