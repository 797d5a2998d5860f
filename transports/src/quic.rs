//! QUIC (quinn): one bidirectional stream per connection carries the stream framing.

use std::sync::Arc;

use imgate_codec::CloseCode;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::config::QuicConfig;
use crate::framed::Io;
use crate::limits::ConnLimits;
use crate::listener::Shared;
use crate::quic_tls::ServerHandshakeData;
use crate::stats::HandshakeFailure;
use crate::{ALPN_IMGATE, ConnInfo, ListenerConfig, TransportError, TransportKind};

/// Transport parameters for many small, mostly idle connections. Stream-slot maps dominate
/// quinn's per-connection memory, so only the streams the protocol uses are allowed: one
/// bidirectional stream opened by the client, no unidirectional streams, no datagrams.
pub(crate) fn transport_config(
    config: &QuicConfig,
    server: bool,
) -> Result<TransportConfig, TransportError> {
    let idle = IdleTimeout::try_from(config.idle_timeout)
        .map_err(|e| TransportError::Config(format!("QUIC idle timeout: {e}")))?;
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(u32::from(server)))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(config.keep_alive)
        .stream_receive_window(VarInt::from_u32(config.stream_receive_window))
        .receive_window(VarInt::from_u32(config.receive_window))
        .send_window(config.send_window)
        .datagram_receive_buffer_size(None)
        // quinn keeps each connection's transmit buffer at its high-water mark; with GSO
        // that is several datagrams per connection, for bulk throughput chat never needs.
        .enable_segmentation_offload(false);
    if !config.mtu_discovery {
        // Path-MTU probing state and probe-sized buffers cost ~2.5 KB per connection
        // (measured with idle_conns); chat frames fit the 1200-byte baseline anyway.
        transport.mtu_discovery_config(None);
    }
    Ok(transport)
}

/// The server endpoint: TLS 1.3 with ALPN `imgate/1`, migration on.
pub(crate) fn bind(config: &ListenerConfig) -> Result<quinn::Endpoint, TransportError> {
    let identity = config
        .identity
        .as_ref()
        .ok_or_else(|| TransportError::Config("the quic listener needs a certificate".into()))?;
    let mut tls = identity.server_config(ALPN_IMGATE, true)?;
    // One resumption ticket, not rustls' two: clients use a ticket once and a phone that
    // reconnects gets a fresh one on its new connection; each ticket's CRYPTO data stays
    // with the connection until acknowledged.
    tls.send_tls13_tickets = 1;
    let crypto = crate::quic_tls::ServerCrypto::new(Arc::new(tls))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(&config.quic, true)?));
    // Phones switch networks: let a connection follow its client to a new address.
    server.migration(true);
    Ok(quinn::Endpoint::server(server, config.bind)?)
}

/// The client configuration: TLS 1.3, ALPN `imgate/1`, trusting `roots`.
pub(crate) fn client_config(
    roots: Arc<rustls::RootCertStore>,
    config: &QuicConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    let tls = crate::cert::client_config(roots, ALPN_IMGATE, true)?;
    let crypto = QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Config(format!("QUIC TLS: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(config, false)?));
    Ok(client)
}

pub(crate) async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    limits: ConnLimits,
) {
    let stats = &shared.stats;
    loop {
        let permit = limits.acquire_counted(stats).await;
        let Some(incoming) = endpoint.accept().await else {
            return;
        };
        stats.incr(&stats.accepted);
        let peer = incoming.remote_address();
        match limits.admit(permit, peer.ip()) {
            Ok(guard) => {
                tokio::spawn(handshake(incoming, guard, Arc::clone(&shared)));
            }
            Err(e) => {
                stats.incr(&stats.rejected_per_ip);
                tracing::debug!(client.addr = %peer, error = %e, "connection refused");
                incoming.refuse();
            }
        }
    }
}

async fn handshake(
    incoming: quinn::Incoming,
    guard: crate::limits::ConnGuard,
    shared: Arc<Shared>,
) {
    let peer = incoming.remote_address();
    let deadline = tokio::time::Instant::now() + shared.config.handshake_timeout;
    let conn = match tokio::time::timeout_at(deadline, async { incoming.accept()?.await }).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            let reason = if is_no_alpn(&e) {
                HandshakeFailure::Alpn
            } else {
                HandshakeFailure::Quic
            };
            return shared.failed(peer, reason);
        }
        Err(_) => return shared.failed(peer, HandshakeFailure::Timeout),
    };
    let data = conn
        .handshake_data()
        .and_then(|data| data.downcast::<ServerHandshakeData>().ok());
    let alpn_ok = data
        .as_ref()
        .and_then(|d| d.protocol.as_deref())
        .is_some_and(|p| p == ALPN_IMGATE.as_bytes());
    if !alpn_ok {
        conn.close(
            VarInt::from(CloseCode::PROTOCOL_ERROR.0),
            b"ALPN imgate/1 required",
        );
        return shared.failed(peer, HandshakeFailure::Alpn);
    }
    // The client opens the stream; it becomes visible here with its first bytes (Hello).
    let (send, recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC connection ended before opening its stream");
            return shared.failed(peer, HandshakeFailure::Quic);
        }
        Err(_) => {
            conn.close(
                VarInt::from(CloseCode::HANDSHAKE_TIMEOUT.0),
                b"no stream opened before the handshake deadline",
            );
            return shared.failed(peer, HandshakeFailure::Timeout);
        }
    };
    if data.as_ref().is_some_and(|d| d.resumed) {
        shared.stats.incr(&shared.stats.handshake_resumed);
    }
    let info = ConnInfo {
        kind: TransportKind::Quic,
        peer,
        alpn: Some(ALPN_IMGATE),
        sni: data.and_then(|d| d.server_name.map(String::into_boxed_str)),
    };
    shared
        .deliver(Io::Quic { conn, send, recv }, info, guard)
        .await;
}

fn is_no_alpn(e: &quinn::ConnectionError) -> bool {
    // TLS alert no_application_protocol (120) as a QUIC crypto error.
    matches!(e, quinn::ConnectionError::TransportError(te)
        if te.code == quinn::TransportErrorCode::crypto(120))
        || matches!(e, quinn::ConnectionError::ConnectionClosed(close)
        if close.error_code == quinn::TransportErrorCode::crypto(120))
}
