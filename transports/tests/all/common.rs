//! Shared helpers: a test identity, servers, connectors, frames and an echo loop.

#[cfg(feature = "tls")]
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use imgate_codec::{CloseCode, Deliver, Frame, FrameEncoder, Kind};
#[cfg(feature = "tls")]
use imgate_transports::Identity;
use imgate_transports::{
    Connector, ConnectorConfig, FramedConn, Listener, ListenerConfig, TransportError, TransportKind,
};
use tokio::task::JoinHandle;

/// Generous bound on any single wait, so a bug fails the test instead of hanging it.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

#[cfg(feature = "tls")]
pub(crate) fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::self_signed(&["localhost"]).expect("dev certificate"))
}

pub(crate) fn listener_config(kind: TransportKind) -> ListenerConfig {
    let config = ListenerConfig::new(kind, "127.0.0.1:0".parse().expect("addr"));
    #[cfg(feature = "tls")]
    let config = config.with_identity(identity().clone());
    let mut config = config;
    config.handshake_timeout = Duration::from_secs(3);
    config
}

pub(crate) async fn server(config: ListenerConfig) -> Listener {
    Listener::bind(config).await.expect("bind")
}

pub(crate) fn connector_config(kind: TransportKind) -> ConnectorConfig {
    #[cfg(feature = "tls")]
    let mut config = ConnectorConfig::new(kind, identity().root_store());
    #[cfg(not(feature = "tls"))]
    let mut config = ConnectorConfig::plain(kind);
    config.quic_bind = "127.0.0.1:0".parse().expect("addr");
    config.handshake_timeout = WAIT;
    config
}

pub(crate) fn connector(kind: TransportKind) -> Connector {
    Connector::new(connector_config(kind)).expect("connector")
}

pub(crate) fn deliver(seq: u64, payload_len: usize) -> Frame {
    Deliver {
        seq,
        payload: Bytes::from(vec![(seq % 251) as u8; payload_len]),
        ..Default::default()
    }
    .into()
}

/// A `Deliver` whose flags byte + body is exactly `size` bytes.
pub(crate) fn frame_of_size(size: usize) -> Frame {
    let encoder = FrameEncoder::new(usize::MAX);
    let mut payload = size;
    loop {
        let frame = deliver(1, payload);
        let len = encoder.encode_message(&frame).expect("encode").len();
        if len == size {
            return frame;
        }
        payload -= len.saturating_sub(size).max(1);
    }
}

pub(crate) async fn recv(conn: &mut FramedConn) -> Result<Option<Frame>, TransportError> {
    tokio::time::timeout(WAIT, conn.recv())
        .await
        .expect("recv timed out")
}

/// Reads until the peer says why it closed: an `Error` frame or a close carrying a code.
pub(crate) async fn close_code(conn: &mut FramedConn) -> Option<CloseCode> {
    loop {
        match recv(conn).await {
            Ok(Some(Frame {
                kind: Some(Kind::Error(error)),
            })) => return Some(error.close_code()),
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(TransportError::ClosedByPeer { code, .. }) => return Some(code),
            Err(_) => return None,
        }
    }
}

/// A running echo server; dropping it stops the server (the listener goes with it).
pub(crate) struct Echo(JoinHandle<()>);

impl Drop for Echo {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Echoes every frame on every connection; closes with the error's code on bad input.
pub(crate) fn echo(mut listener: Listener) -> Echo {
    Echo(tokio::spawn(async move {
        while let Some(mut conn) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    match conn.recv().await {
                        Ok(Some(frame)) => {
                            if conn.send(&frame).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let code = e.close_code().unwrap_or(CloseCode::INTERNAL);
                            let _ = conn.close(code, &e.to_string()).await;
                            return;
                        }
                    }
                }
            });
        }
    }))
}

/// One round trip through an echo server.
pub(crate) async fn assert_echo(connector: &Connector, addr: std::net::SocketAddr) {
    let mut conn = connector.connect(addr).await.expect("connect");
    conn.send(&deliver(42, 10)).await.expect("send");
    assert_eq!(recv(&mut conn).await.expect("recv"), Some(deliver(42, 10)));
}
