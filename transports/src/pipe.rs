//! An in-memory connection (feature `pipe`): the codec, limits and halves of a real
//! connection over a `tokio::io::duplex` pipe instead of a socket, so that a server's
//! connection handling can run on tokio's paused clock, without the network.

use std::net::SocketAddr;
use std::sync::Arc;

use imgate_codec::{FrameDecoder, FrameEncoder};
use tokio::io::DuplexStream;

use crate::framed::{Io, Setup};
use crate::{ConnInfo, ConnectorConfig, FramedConn, ListenerConfig, TransportKind};

/// The address a pipe's server side reports as its peer's.
pub const PIPE_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl FramedConn {
    /// The server side of an in-memory connection, configured as a connection accepted by
    /// a listener with `config` (frame limits, no compression before the protocol handshake,
    /// outbound bound), and the client's end of the pipe as raw bytes: write any bytes to
    /// it, or wrap it with [`FramedConn::pipe_client`].
    ///
    /// Frames travel with the byte-stream framing of TCP, TLS and QUIC, and the connection
    /// reports itself as [`TransportKind::Tcp`] from [`PIPE_PEER`]. `capacity` bytes fit in
    /// each direction before a write waits (what a socket's buffers are to TCP). Not counted
    /// by any listener's statistics or limits.
    pub fn pipe(config: &ListenerConfig, capacity: usize) -> (Self, DuplexStream) {
        let (server, client) = tokio::io::duplex(capacity);
        let setup = Setup {
            decoder: Arc::new(FrameDecoder::new(config.max_frame).with_compression(false)),
            encoder: Arc::new(FrameEncoder::new(config.peer_max_frame)),
            max_queued: config.max_outbound_bytes,
            stats: None,
            guard: None,
        };
        (Self::new(Io::Pipe(server), info(), setup), client)
    }

    /// The client side over the other end of [`FramedConn::pipe`], configured as a
    /// connector with `config` would configure it (its `kind` is ignored).
    pub fn pipe_client(stream: DuplexStream, config: &ConnectorConfig) -> Self {
        let setup = Setup {
            decoder: Arc::new(FrameDecoder::new(config.max_frame)),
            encoder: Arc::new(FrameEncoder::new(config.peer_max_frame)),
            max_queued: config.max_outbound_bytes,
            stats: None,
            guard: None,
        };
        Self::new(Io::Pipe(stream), info(), setup)
    }
}

fn info() -> ConnInfo {
    ConnInfo {
        kind: TransportKind::Tcp,
        peer: PIPE_PEER,
        alpn: None,
        sni: None,
    }
}

#[cfg(test)]
mod tests {
    use imgate_codec::{CloseCode, CodecError, Frame, Ping};
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::TransportError;

    fn config() -> ListenerConfig {
        ListenerConfig::new(TransportKind::Tcp, PIPE_PEER)
    }

    #[tokio::test]
    async fn frames_cross_the_pipe_both_ways_and_close_ends_the_stream() {
        let (mut server, client) = FramedConn::pipe(&config(), 4096);
        let mut client =
            FramedConn::pipe_client(client, &ConnectorConfig::plain(TransportKind::Tcp));
        let ping: Frame = Ping::default().into();
        client.send(&ping).await.expect("send");
        assert_eq!(server.recv().await.expect("recv"), Some(ping.clone()));
        server
            .close(CloseCode::HEARTBEAT_TIMEOUT, "quiet")
            .await
            .expect("close");
        let error = client.recv().await.expect("recv").expect("a frame");
        assert!(
            matches!(error.kind, Some(imgate_codec::Kind::Error(ref e)) if e.close_code() == CloseCode::HEARTBEAT_TIMEOUT),
            "{error:?}"
        );
        assert_eq!(client.recv().await.expect("end of stream"), None);
    }

    #[tokio::test]
    async fn the_listener_frame_limit_holds_on_the_pipe() {
        let mut config = config();
        config.max_frame = 64;
        let (mut server, mut raw) = FramedConn::pipe(&config, 4096);
        // Length prefix 65: over the limit before a byte of the body arrives.
        raw.write_all(&65u32.to_be_bytes()).await.expect("write");
        let error = server.recv().await.expect_err("over the limit");
        assert!(
            matches!(
                error,
                TransportError::Codec(CodecError::FrameTooLarge { .. })
            ),
            "{error:?}"
        );
    }
}
