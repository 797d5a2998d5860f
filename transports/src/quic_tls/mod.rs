//! The server half of QUIC's TLS: rustls for the handshake, then only what the connection
//! still needs.
//!
//! quinn's own rustls session keeps the whole `rustls::quic::ServerConnection` for the life of
//! the connection (~3.7 KB per connection once established: the connection, its core, the
//! TLS 1.3 state, buffered handshake bytes, and TLS-record AEAD keys QUIC never uses), and
//! derives the next key phase's packet keys (~1.2 KB) at the end of the handshake for a key
//! update that most connections never see. On a gateway holding many idle phones that is a
//! sixth of a QUIC connection. [`ServerCrypto`] is the same handshake with two differences:
//! once the handshake is over and its last flight written, the rustls connection is dropped
//! and only the negotiated facts and the key-update secrets are kept; and the next key
//! phase's packet keys are derived on first use.
//!
//! Behaviour visible to a peer is unchanged. Post-handshake TLS messages from a client are
//! refused with `unexpected_message`, as rustls refuses them after its handshake.
//! [`quinn::Connection::export_keying_material`] always fails on these connections (TLS
//! exporters need the dropped connection; imgate does not use them).

use std::any::Any;
use std::io;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::crypto::{
    self, ExportKeyingMaterialError, HeaderKey, KeyPair, Keys, PacketKey, UnsupportedVersion,
};
use quinn::{ConnectionId, Side, TransportErrorCode};
use quinn_proto::TransportError;
use quinn_proto::transport_parameters::TransportParameters;
use rustls::pki_types::CertificateDer;
use rustls::quic::{KeyChange, ServerConnection, Suite, Version};

use crate::TransportError as Error;

mod lazy_keys;

use lazy_keys::{KeyLimits, LazyPacketKey, PendingPhase};

/// TLS alert `unexpected_message`, as a QUIC crypto error.
const ALERT_UNEXPECTED_MESSAGE: u8 = 10;

/// quinn's server crypto configuration with a session that sheds its TLS state after the
/// handshake. Initial keys and Retry tags are quinn's own.
pub(crate) struct ServerCrypto {
    tls: Arc<rustls::ServerConfig>,
    initial: Suite,
    quinn: QuicServerConfig,
}

impl ServerCrypto {
    /// Wraps a TLS 1.3 server configuration (see [`QuicServerConfig`] for its requirements).
    pub(crate) fn new(tls: Arc<rustls::ServerConfig>) -> Result<Self, Error> {
        let quinn = QuicServerConfig::try_from(Arc::clone(&tls))
            .map_err(|e| Error::Config(format!("QUIC TLS: {e}")))?;
        // QUIC's Initial packets are always protected with TLS_AES_128_GCM_SHA256; quinn has
        // just checked that the provider has it.
        let initial = tls
            .crypto_provider()
            .cipher_suites
            .iter()
            .find_map(|suite| match (suite.suite(), suite.tls13()) {
                (rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, Some(tls13)) => tls13.quic_suite(),
                _ => None,
            })
            .ok_or_else(|| Error::Config("QUIC TLS: no TLS_AES_128_GCM_SHA256".into()))?;
        Ok(Self {
            tls,
            initial,
            quinn,
        })
    }

    /// A server session for QUIC `version`, announcing our transport `params`.
    fn session(&self, version: u32, params: &TransportParameters) -> ServerSession {
        let mut own_params = Vec::new();
        params.write(&mut own_params);
        // quinn calls this only for a version `initial_keys` accepted, and the configuration
        // was checked by `QuicServerConfig`; should either still fail, the session refuses the
        // handshake instead of panicking.
        let (version, stage) = match quic_version(version) {
            Some(known) => {
                let stage = match ServerConnection::new(Arc::clone(&self.tls), known, own_params) {
                    Ok(tls) => Stage::Handshaking(Box::new(tls)),
                    Err(e) => Stage::Failed(format!("TLS session refused: {e}")),
                };
                (known, stage)
            }
            None => (
                Version::V1,
                Stage::Failed(format!("unsupported QUIC version {version:#x}")),
            ),
        };
        ServerSession {
            version,
            initial: self.initial,
            got_handshake_data: false,
            next_phase: None,
            stage,
        }
    }
}

impl crypto::ServerConfig for ServerCrypto {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, UnsupportedVersion> {
        self.quinn.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.quinn.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        Box::new(self.session(version, params))
    }
}

/// The QUIC versions rustls has key schedules for (as quinn maps them).
fn quic_version(version: u32) -> Option<Version> {
    match version {
        0xff00_001d..=0xff00_0020 => Some(Version::V1Draft),
        0x0000_0001 | 0xff00_0021..=0xff00_0022 => Some(Version::V1),
        _ => None,
    }
}

/// One server connection's TLS.
struct ServerSession {
    version: Version,
    initial: Suite,
    got_handshake_data: bool,
    /// Secrets for the key phase after the one most recently handed to quinn.
    next_phase: Option<NextPhase>,
    stage: Stage,
}

enum Stage {
    Handshaking(Box<ServerConnection>),
    /// The handshake is over and its last flight written: what quinn may still ask for.
    Established(Box<Established>),
    /// The session could not be created; the handshake is refused.
    Failed(String),
}

/// What outlives the rustls connection. Not the peer's transport parameters: quinn reads
/// them once, when the client's first flight moves the server out of the Initial space.
struct Established {
    handshake: ServerHandshakeData,
    peer_certificates: Option<Vec<CertificateDer<'static>>>,
}

/// What [`quinn::Connection::handshake_data`] returns for our server sessions: quinn's fields
/// plus whether the handshake resumed an earlier session (counted once the connection is
/// established, like TLS over TCP).
#[derive(Clone)]
pub(crate) struct ServerHandshakeData {
    /// The negotiated ALPN protocol.
    pub(crate) protocol: Option<Vec<u8>>,
    /// The SNI the client sent.
    pub(crate) server_name: Option<String>,
    /// Whether a session ticket resumed an earlier session.
    pub(crate) resumed: bool,
}

/// Key-update state: the key phase after the one quinn uses, and whether quinn already holds
/// its (lazy) keys; then the next request must advance one phase first.
struct NextPhase {
    phase: Arc<PendingPhase>,
    handed_out: bool,
}

impl ServerSession {
    fn tls(&self) -> Option<&ServerConnection> {
        match &self.stage {
            Stage::Handshaking(tls) => Some(tls),
            _ => None,
        }
    }

    /// Drops the rustls connection once the handshake is over and a `write_hs` found nothing
    /// left to write. quinn calls `write_handshake` until a call writes nothing, so the
    /// session ticket rustls queues when the client's Finished arrives is out by then. (rustls'
    /// `wants_write` cannot tell: QUIC handshake bytes wait in a queue it does not look at.)
    fn release_if_done(&mut self, wrote_nothing: bool) {
        let Stage::Handshaking(tls) = &self.stage else {
            return;
        };
        if tls.is_handshaking() || !wrote_nothing {
            return;
        }
        let established = Established {
            handshake: ServerHandshakeData::of(tls),
            peer_certificates: tls
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect()),
        };
        self.stage = Stage::Established(Box::new(established));
    }
}

impl crypto::Session for ServerSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        let side = match side {
            Side::Client => rustls::Side::Client,
            Side::Server => rustls::Side::Server,
        };
        quinn_keys(self.initial.keys(dst_cid, side, self.version))
    }

    /// A [`ServerHandshakeData`].
    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        if !self.got_handshake_data {
            return None;
        }
        let data = match &self.stage {
            Stage::Handshaking(tls) => ServerHandshakeData::of(tls),
            Stage::Established(done) => done.handshake.clone(),
            Stage::Failed(_) => return None,
        };
        Some(Box::new(data))
    }

    /// As quinn's: the `Any` is a `Vec<CertificateDer<'static>>`.
    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        let certs: Vec<CertificateDer<'static>> = match &self.stage {
            Stage::Handshaking(tls) => tls
                .peer_certificates()?
                .iter()
                .map(|c| c.clone().into_owned())
                .collect(),
            Stage::Established(done) => done.peer_certificates.clone()?,
            Stage::Failed(_) => return None,
        };
        Some(Box::new(certs))
    }

    fn early_crypto(&self) -> Option<(Box<dyn HeaderKey>, Box<dyn PacketKey>)> {
        let keys = self.tls()?.zero_rtt_keys()?;
        Some((Box::new(keys.header), Box::new(keys.packet)))
    }

    fn early_data_accepted(&self) -> Option<bool> {
        None // a client-side question
    }

    fn is_handshaking(&self) -> bool {
        match &self.stage {
            Stage::Handshaking(tls) => tls.is_handshaking(),
            Stage::Established(_) => false,
            Stage::Failed(_) => true,
        }
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        let tls = match &mut self.stage {
            Stage::Handshaking(tls) => tls,
            Stage::Established(_) => {
                return Err(TransportError {
                    code: TransportErrorCode::crypto(ALERT_UNEXPECTED_MESSAGE),
                    frame: None,
                    reason: "TLS message after the handshake".into(),
                });
            }
            Stage::Failed(why) => {
                return Err(TransportError {
                    code: TransportErrorCode::INTERNAL_ERROR,
                    frame: None,
                    reason: why.clone(),
                });
            }
        };
        tls.read_hs(buf).map_err(|e| match tls.alert() {
            Some(alert) => TransportError {
                code: TransportErrorCode::crypto(alert.into()),
                frame: None,
                reason: e.to_string(),
            },
            None => TransportError {
                code: TransportErrorCode::PROTOCOL_VIOLATION,
                frame: None,
                reason: format!("TLS error: {e}"),
            },
        })?;
        // rustls has no explicit "ClientHello parsed" signal; as quinn does, take a negotiated
        // ALPN, a server name or a finished handshake as one.
        if !self.got_handshake_data
            && (tls.alpn_protocol().is_some()
                || tls.server_name().is_some()
                || !tls.is_handshaking())
        {
            self.got_handshake_data = true;
            return Ok(true);
        }
        Ok(false)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        let Some(raw) = self.tls().and_then(|tls| tls.quic_transport_parameters()) else {
            return Ok(None);
        };
        TransportParameters::read(Side::Server, &mut io::Cursor::new(raw))
            .map(Some)
            .map_err(Into::into)
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        let Stage::Handshaking(tls) = &mut self.stage else {
            return None;
        };
        let written_before = buf.len();
        let change = tls.write_hs(buf);
        let wrote_nothing = change.is_none() && buf.len() == written_before;
        let keys = match change {
            Some(KeyChange::Handshake { keys }) => Some(keys),
            Some(KeyChange::OneRtt { keys, next }) => {
                let packet = &keys.local.packet;
                let limits = KeyLimits {
                    tag_len: packet.tag_len(),
                    confidentiality_limit: packet.confidentiality_limit(),
                    integrity_limit: packet.integrity_limit(),
                };
                self.next_phase = Some(NextPhase {
                    phase: Arc::new(PendingPhase::new(next, limits)),
                    handed_out: false,
                });
                Some(keys)
            }
            None => None,
        };
        self.release_if_done(wrote_nothing);
        keys.map(quinn_keys)
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        let next = self.next_phase.as_mut()?;
        if next.handed_out {
            // quinn has started using the phase it held as "next": move one phase on.
            next.phase = Arc::new(next.phase.following());
        }
        next.handed_out = true;
        Some(KeyPair {
            local: Box::new(LazyPacketKey {
                phase: Arc::clone(&next.phase),
                local: true,
            }),
            remote: Box::new(LazyPacketKey {
                phase: Arc::clone(&next.phase),
                local: false,
            }),
        })
    }

    fn is_valid_retry(
        &self,
        _orig_dst_cid: &ConnectionId,
        _header: &[u8],
        _payload: &[u8],
    ) -> bool {
        false // servers send Retry packets, they never validate one
    }

    /// Always fails: TLS exporters need the TLS connection after the handshake, and this
    /// session has dropped it by then (before the handshake, rustls refuses too).
    fn export_keying_material(
        &self,
        _output: &mut [u8],
        _label: &[u8],
        _context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        Err(ExportKeyingMaterialError)
    }
}

impl ServerHandshakeData {
    fn of(tls: &ServerConnection) -> Self {
        Self {
            protocol: tls.alpn_protocol().map(<[u8]>::to_vec),
            server_name: tls.server_name().map(str::to_owned),
            resumed: tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }
}

/// rustls keys as quinn's trait objects (quinn implements its key traits for rustls' boxes).
fn quinn_keys(keys: rustls::quic::Keys) -> Keys {
    Keys {
        header: KeyPair {
            local: Box::new(keys.local.header),
            remote: Box::new(keys.remote.header),
        },
        packet: KeyPair {
            local: Box::new(keys.local.packet),
            remote: Box::new(keys.remote.packet),
        },
    }
}

#[cfg(test)]
mod tests;
