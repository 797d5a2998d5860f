//! `Connector`: the client side of every transport (client SDK, tests, load generator).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use imgate_codec::{FrameDecoder, FrameEncoder};
use tokio::net::TcpStream;

use crate::framed::{Io, Setup};
use crate::{ConnInfo, ConnectorConfig, FramedConn, TransportError};

/// Opens client connections of one transport.
pub struct Connector {
    config: ConnectorConfig,
    mode: Mode,
}

/// What connecting takes, per transport; only transports compiled in have a variant.
enum Mode {
    Tcp,
    #[cfg(feature = "tls")]
    Tls(tokio_rustls::TlsConnector),
    #[cfg(feature = "ws")]
    Ws,
    #[cfg(all(feature = "ws", feature = "tls"))]
    Wss(tokio_rustls::TlsConnector),
    #[cfg(feature = "quic")]
    Quic(quinn::Endpoint, quinn::ClientConfig),
    /// The HTTP fallback (TLS connector for HTTPS).
    #[cfg(feature = "http")]
    Http(HttpTls),
}

/// The HTTP fallback's TLS connector (HTTPS), if TLS is compiled in.
#[cfg(all(feature = "http", feature = "tls"))]
type HttpTls = Option<tokio_rustls::TlsConnector>;
#[cfg(all(feature = "http", not(feature = "tls")))]
type HttpTls = ();

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("kind", &self.config.kind)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `config.kind`. For QUIC this binds the client endpoint, so it must be
    /// called inside a tokio runtime. Fails with [`TransportError::Config`] for a transport
    /// this build does not include.
    pub fn new(config: ConnectorConfig) -> Result<Self, TransportError> {
        config.kind.check_available()?;
        let mode = match config.kind {
            #[cfg(feature = "tls")]
            crate::TransportKind::Tls => Mode::Tls(tls_connector(&config, crate::ALPN_IMGATE)?),
            #[cfg(feature = "ws")]
            crate::TransportKind::Ws => Mode::Ws,
            #[cfg(all(feature = "ws", feature = "tls"))]
            crate::TransportKind::Wss => Mode::Wss(tls_connector(&config, crate::ALPN_HTTP1)?),
            #[cfg(feature = "quic")]
            crate::TransportKind::Quic => {
                let client = crate::quic::client_config(Arc::clone(&config.roots), &config.quic)?;
                let endpoint = quinn::Endpoint::client(config.quic_bind)?;
                Mode::Quic(endpoint, client)
            }
            #[cfg(feature = "http")]
            crate::TransportKind::Http => Mode::Http(Default::default()),
            #[cfg(all(feature = "http", feature = "tls"))]
            crate::TransportKind::Https => {
                Mode::Http(Some(tls_connector(&config, crate::ALPN_HTTP1)?))
            }
            // TCP; the rest were refused by `check_available`.
            _ => Mode::Tcp,
        };
        Ok(Self { config, mode })
    }

    /// The QUIC client endpoint, e.g. to [`quinn::Endpoint::rebind`] it when the device
    /// changes networks (connections migrate with it).
    #[cfg(feature = "quic")]
    pub fn quic_endpoint(&self) -> Option<&quinn::Endpoint> {
        match &self.mode {
            Mode::Quic(endpoint, _) => Some(endpoint),
            _ => None,
        }
    }

    /// Connects to `addr` and runs the transport handshake, within the configured deadline.
    ///
    /// For QUIC the stream is opened locally, and on the HTTP fallback the open request goes
    /// with the first frames: the server sees the connection once the first frame (the
    /// protocol's `Hello`) is sent, and a refusal (a limit) arrives as an `Error` frame.
    pub async fn connect(&self, addr: SocketAddr) -> Result<FramedConn, TransportError> {
        let deadline = self.config.handshake_timeout;
        let (io, info) = tokio::time::timeout(deadline, self.connect_inner(addr))
            .await
            .map_err(|_| TransportError::HandshakeTimeout(deadline))??;
        let config = &self.config;
        Ok(FramedConn::new(
            io,
            info,
            Setup {
                decoder: Arc::new(FrameDecoder::new(config.max_frame)),
                encoder: Arc::new(FrameEncoder::new(config.peer_max_frame)),
                max_queued: config.max_outbound_bytes,
                stats: None,
                guard: None,
            },
        ))
    }

    async fn connect_inner(&self, addr: SocketAddr) -> Result<(Io, ConnInfo), TransportError> {
        let config = &self.config;
        // TLS and QUIC record the negotiated ALPN.
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut info = ConnInfo {
            kind: config.kind,
            peer: addr,
            alpn: None,
            sni: None,
        };
        #[cfg(feature = "quic")]
        if let Mode::Quic(endpoint, client) = &self.mode {
            let conn = endpoint
                .connect_with(client.clone(), addr, &config.server_name)?
                .await
                .map_err(TransportError::from_quic_connection)?;
            let (send, recv) = conn
                .open_bi()
                .await
                .map_err(TransportError::from_quic_connection)?;
            info.alpn = Some(crate::ALPN_IMGATE);
            return Ok((Io::Quic { conn, send, recv }, info));
        }
        #[cfg(feature = "http")]
        #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
        if let Mode::Http(tls) = &self.mode {
            #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
            let mut dial = crate::http::Dial::new(config, addr)?;
            #[cfg(feature = "tls")]
            {
                dial.tls = tls.clone();
            }
            let io = crate::http::connect(dial, config.max_frame).await?;
            return Ok((io, info));
        }
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        match &self.mode {
            #[cfg(feature = "tls")]
            Mode::Tls(connector) => {
                let tls =
                    crate::tls::connect(connector, stream, &config.server_name, crate::ALPN_IMGATE)
                        .await?;
                info.alpn = Some(crate::ALPN_IMGATE);
                Ok((
                    Io::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))),
                    info,
                ))
            }
            #[cfg(feature = "ws")]
            Mode::Ws => {
                let io = crate::ws::WsIo::Plain(stream);
                Ok((Io::Ws(Box::new(self.upgrade(io, addr, "ws").await?)), info))
            }
            #[cfg(all(feature = "ws", feature = "tls"))]
            Mode::Wss(connector) => {
                let tls =
                    crate::tls::connect(connector, stream, &config.server_name, crate::ALPN_HTTP1)
                        .await?;
                let io = crate::ws::WsIo::Tls(Box::new(tokio_rustls::TlsStream::Client(tls)));
                Ok((Io::Ws(Box::new(self.upgrade(io, addr, "wss").await?)), info))
            }
            // Plain TCP (QUIC returned above).
            _ => Ok((Io::Tcp(stream), info)),
        }
    }

    /// The client side of the WebSocket upgrade.
    #[cfg(feature = "ws")]
    async fn upgrade(
        &self,
        io: crate::ws::WsIo,
        addr: SocketAddr,
        scheme: &str,
    ) -> Result<crate::ws::WsStream, TransportError> {
        let config = &self.config;
        let url = format!(
            "{scheme}://{}:{}{}",
            config.server_name,
            addr.port(),
            config.ws_path
        );
        crate::ws::connect(
            io,
            &url,
            config.ws_origin.as_deref(),
            &config.ws,
            config.max_frame,
        )
        .await
    }
}

#[cfg(feature = "tls")]
fn tls_connector(
    config: &ConnectorConfig,
    alpn: &str,
) -> Result<tokio_rustls::TlsConnector, TransportError> {
    let client = crate::cert::client_config(Arc::clone(&config.roots), alpn, false)?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client)))
}
