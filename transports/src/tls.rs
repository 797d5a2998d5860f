//! TLS over TCP (tokio-rustls): the server handshake with ALPN checks, and the client one.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::stats::HandshakeFailure;
use crate::{ALPN_HTTP1, ALPN_IMGATE, TransportError};

/// Runs the server handshake. With `require_alpn` the client must negotiate `alpn` (the
/// imgate TLS port: ALPN is how the protocol is versioned); otherwise ALPN is optional (WSS:
/// HTTP clients may not send it). Returns the stream, the negotiated protocol, the SNI and
/// whether the handshake resumed an earlier session.
pub(crate) async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    alpn: &'static str,
    require_alpn: bool,
) -> Result<Accepted, HandshakeFailure> {
    let tls = acceptor.accept(stream).await.map_err(|e| {
        let no_alpn = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|inner| {
                // With `require_alpn`, a `General` error is `RequireAlpn` having found no
                // ALPN offered (the certificate is always there otherwise).
                *inner == rustls::Error::NoApplicationProtocol
                    || (require_alpn && matches!(inner, rustls::Error::General(_)))
            });
        tracing::debug!(error = %e, "TLS handshake failed");
        if no_alpn {
            HandshakeFailure::Alpn
        } else {
            HandshakeFailure::Tls
        }
    })?;
    let (_, conn) = tls.get_ref();
    let negotiated = match conn.alpn_protocol() {
        Some(p) if p == alpn.as_bytes() => Some(alpn),
        None if !require_alpn => None,
        _ => return Err(HandshakeFailure::Alpn),
    };
    let sni = conn.server_name().map(Box::from);
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    Ok((tls, negotiated, sni, resumed))
}

/// A finished server handshake: the stream, the negotiated ALPN, the SNI, whether resumed.
pub(crate) type Accepted = (
    TlsStream<TcpStream>,
    Option<&'static str>,
    Option<Box<str>>,
    bool,
);

/// Runs the client handshake against `server_name`, checking the negotiated ALPN.
pub(crate) async fn connect(
    connector: &tokio_rustls::TlsConnector,
    stream: TcpStream,
    server_name: &str,
    alpn: &'static str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| TransportError::Config(format!("server name {server_name:?}: {e}")))?;
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(TransportError::from_io)?;
    let negotiated = tls.get_ref().1.alpn_protocol();
    // WSS servers may skip ALPN; the imgate TLS port must speak imgate/1.
    let ok = match negotiated {
        Some(p) => p == alpn.as_bytes(),
        None => alpn == ALPN_HTTP1,
    };
    if !ok {
        return Err(TransportError::Alpn {
            expected: alpn,
            negotiated: negotiated.map(|p| String::from_utf8_lossy(p).into_owned()),
        });
    }
    debug_assert!(alpn == ALPN_IMGATE || alpn == ALPN_HTTP1);
    Ok(tls)
}

/// Refuses, inside the TLS handshake, a client that offers no ALPN at all (protocol §1):
/// rustls only refuses one that offers others, and carries on without ALPN otherwise, so
/// such a client would see a finished handshake and then a silent close. Without a
/// certificate rustls fails the handshake with the alert `access_denied`.
#[derive(Debug)]
pub(crate) struct RequireAlpn(pub(crate) Arc<dyn ResolvesServerCert>);

impl ResolvesServerCert for RequireAlpn {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Only whether the list is there matters; rustls picks the protocol itself.
        let _offered = client_hello.alpn()?;
        self.0.resolve(client_hello)
    }
}
