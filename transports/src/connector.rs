//! `Connector`: the client side of every transport (client SDK, tests, load generator).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use imgate_codec::{FrameDecoder, FrameEncoder};
use tokio::net::TcpStream;

use crate::cert::{ALPN_HTTP1, ALPN_IMGATE};
use crate::read::{FrameReader, ReadInner};
use crate::write::{FrameWriter, WriteInner};
use crate::{ConnInfo, ConnectorConfig, FramedConn, TransportError, TransportKind, quic, tls, ws};

/// Opens client connections of one transport.
pub struct Connector {
    config: ConnectorConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    quic: Option<(quinn::Endpoint, quinn::ClientConfig)>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("kind", &self.config.kind)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `config.kind`. For QUIC this binds the client endpoint, so it must be
    /// called inside a tokio runtime.
    pub fn new(config: ConnectorConfig) -> Result<Self, TransportError> {
        let tls = match config.kind {
            TransportKind::Tls | TransportKind::Wss => {
                let alpn = if config.kind == TransportKind::Tls {
                    ALPN_IMGATE
                } else {
                    ALPN_HTTP1
                };
                let client = crate::cert::client_config(Arc::clone(&config.roots), alpn, false)?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(client)))
            }
            _ => None,
        };
        let quic = if config.kind == TransportKind::Quic {
            let client = quic::client_config(Arc::clone(&config.roots), &config.quic)?;
            let endpoint = quinn::Endpoint::client(config.quic_bind)?;
            Some((endpoint, client))
        } else {
            None
        };
        Ok(Self { config, tls, quic })
    }

    /// The QUIC client endpoint, e.g. to [`quinn::Endpoint::rebind`] it when the device
    /// changes networks (connections migrate with it).
    pub fn quic_endpoint(&self) -> Option<&quinn::Endpoint> {
        self.quic.as_ref().map(|(endpoint, _)| endpoint)
    }

    /// Connects to `addr` and runs the transport handshake, within the configured deadline.
    ///
    /// For QUIC the stream is opened locally; the server sees the connection once the first
    /// frame (the protocol's `Hello`) is sent.
    pub async fn connect(&self, addr: SocketAddr) -> Result<FramedConn, TransportError> {
        let deadline = self.config.handshake_timeout;
        tokio::time::timeout(deadline, self.connect_inner(addr))
            .await
            .map_err(|_| TransportError::HandshakeTimeout(deadline))?
    }

    async fn connect_inner(&self, addr: SocketAddr) -> Result<FramedConn, TransportError> {
        let config = &self.config;
        let kind = config.kind;
        let mut info = ConnInfo {
            kind,
            peer: addr,
            alpn: None,
            sni: None,
        };
        if let Some((endpoint, client)) = &self.quic {
            let conn = endpoint
                .connect_with(client.clone(), addr, &config.server_name)?
                .await
                .map_err(TransportError::from_quic_connection)?;
            let (send, recv) = conn
                .open_bi()
                .await
                .map_err(TransportError::from_quic_connection)?;
            info.alpn = Some(ALPN_IMGATE);
            return Ok(self.framed(
                FrameReader::stream(Box::pin(recv)),
                WriteInner::Quic { send, conn },
                info,
            ));
        }
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (io, scheme) = match (kind, &self.tls) {
            (TransportKind::Tcp, _) => {
                let (read, write) = stream.into_split();
                return Ok(self.framed(
                    FrameReader::stream(Box::pin(read)),
                    WriteInner::Stream(Box::pin(write)),
                    info,
                ));
            }
            (TransportKind::Tls, Some(connector)) => {
                let tls = tls::connect(connector, stream, &config.server_name, ALPN_IMGATE).await?;
                info.alpn = Some(ALPN_IMGATE);
                let (read, write) = tokio::io::split(tls);
                return Ok(self.framed(
                    FrameReader::stream(Box::pin(read)),
                    WriteInner::Stream(Box::pin(write)),
                    info,
                ));
            }
            (TransportKind::Wss, Some(connector)) => {
                let tls = tls::connect(connector, stream, &config.server_name, ALPN_HTTP1).await?;
                (
                    ws::WsIo::Right(Box::new(tokio_rustls::TlsStream::Client(tls))),
                    "wss",
                )
            }
            _ => (ws::WsIo::Left(stream), "ws"),
        };
        let url = format!(
            "{scheme}://{}:{}{}",
            config.server_name,
            addr.port(),
            config.ws_path
        );
        let ws = ws::connect(
            io,
            &url,
            config.ws_origin.as_deref(),
            &config.ws,
            config.max_frame,
        )
        .await?;
        let (sink, stream) = futures_util::StreamExt::split(ws);
        Ok(self.framed(ReadInner::Ws(stream), WriteInner::Ws(sink), info))
    }

    fn framed(&self, reader: ReadInner, writer: WriteInner, info: ConnInfo) -> FramedConn {
        FramedConn::new(
            FrameReader::new(
                reader,
                Arc::new(FrameDecoder::new(self.config.max_frame)),
                info,
                None,
                None,
            ),
            FrameWriter::new(
                writer,
                Arc::new(FrameEncoder::new(self.config.peer_max_frame)),
                self.config.max_outbound_bytes,
            ),
        )
    }
}
