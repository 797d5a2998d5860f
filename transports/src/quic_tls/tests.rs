//! The server session against a rustls QUIC client, in memory: the handshake, what survives
//! it, and key phases derived lazily but identical to the client's.

#![allow(clippy::unwrap_used)] // reason: tests

use std::sync::Arc;

use bytes::BytesMut;
use quinn::crypto::{PacketKey, Session as _};
use quinn::{Side, TransportErrorCode};
use quinn_proto::transport_parameters::TransportParameters;
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use rustls::quic::{ClientConnection, KeyChange, Secrets, Version};

use super::{ServerCrypto, ServerSession, Stage};
use crate::{ALPN_IMGATE, Identity};

/// The client's transport parameters: `initial_max_data` = 1024 (id 0x04, varint 0x4400).
const CLIENT_PARAMS: &[u8] = &[0x04, 0x02, 0x44, 0x00];

struct Pair {
    client: ClientConnection,
    server: Box<ServerSession>,
    /// The client's secrets for the key phase after the first 1-RTT one.
    client_next: Option<Secrets>,
}

fn identity() -> &'static Identity {
    static ID: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    ID.get_or_init(|| Identity::self_signed(&["localhost"]).unwrap())
}

fn server_crypto() -> ServerCrypto {
    let mut tls = identity().server_config(ALPN_IMGATE, true).unwrap();
    tls.send_tls13_tickets = 1;
    ServerCrypto::new(Arc::new(tls)).unwrap()
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let roots = Arc::new(identity().root_store());
    Arc::new(crate::cert::client_config(roots, ALPN_IMGATE, true).unwrap())
}

fn start(server: &ServerCrypto, client: &Arc<rustls::ClientConfig>) -> Pair {
    let server_params = TransportParameters::read(Side::Client, &mut &[][..]).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let client = ClientConnection::new(
        Arc::clone(client),
        Version::V1,
        name,
        CLIENT_PARAMS.to_vec(),
    )
    .unwrap();
    Pair {
        client,
        server: Box::new(server.session(1, &server_params)),
        client_next: None,
    }
}

/// Moves handshake bytes both ways until neither side has anything to say.
fn handshake(pair: &mut Pair) -> usize {
    let mut server_flights = 0;
    for _ in 0..32 {
        let mut to_server = Vec::new();
        let client_change = pair.client.write_hs(&mut to_server);
        let client_changed = client_change.is_some();
        if let Some(KeyChange::OneRtt { next, .. }) = client_change {
            pair.client_next = Some(next);
        }
        if !to_server.is_empty() {
            pair.server.read_handshake(&to_server).unwrap();
        }
        let mut to_client = Vec::new();
        let server_keys = pair.server.write_handshake(&mut to_client);
        if !to_client.is_empty() {
            server_flights += 1;
            pair.client.read_hs(&to_client).unwrap();
        }
        if !client_changed && server_keys.is_none() && to_server.is_empty() && to_client.is_empty()
        {
            return server_flights;
        }
    }
    panic!("the handshake did not settle");
}

/// Seals a packet with `key` and opens it with `peer`; whether that worked.
fn round_trip(key: &dyn PacketKey, peer: &dyn PacketKey, number: u64) -> bool {
    let header = [0x40, 1, 2, 3];
    let body = b"imgate key phase";
    let mut packet = Vec::new();
    packet.extend_from_slice(&header);
    packet.extend_from_slice(body);
    packet.resize(packet.len() + key.tag_len(), 0);
    key.encrypt(number, &mut packet, header.len());
    let mut payload = BytesMut::from(&packet[header.len()..]);
    peer.decrypt(number, &header, &mut payload).is_ok() && &payload[..] == body
}

#[test]
fn the_tls_connection_is_dropped_once_the_handshake_is_over() {
    let crypto = server_crypto();
    let mut pair = start(&crypto, &client_config());
    assert!(matches!(pair.server.stage, Stage::Handshaking(_)));
    // quinn reads the client's transport parameters once, right after its first flight.
    let mut client_hello = Vec::new();
    assert!(pair.client.write_hs(&mut client_hello).is_none());
    assert!(
        pair.server.read_handshake(&client_hello).unwrap(),
        "handshake data ready"
    );
    let params = pair.server.transport_parameters().unwrap().unwrap();
    let expected = TransportParameters::read(Side::Server, &mut &CLIENT_PARAMS[..]).unwrap();
    assert_eq!(params, expected);
    handshake(&mut pair);

    assert!(!pair.client.is_handshaking());
    assert!(!pair.server.is_handshaking());
    assert!(
        matches!(pair.server.stage, Stage::Established(_)),
        "the rustls connection should be gone"
    );
    // What quinn and the listener still ask for survives.
    let data = pair.server.handshake_data().unwrap();
    let data = data.downcast::<super::ServerHandshakeData>().unwrap();
    assert_eq!(data.protocol.as_deref(), Some(ALPN_IMGATE.as_bytes()));
    assert_eq!(data.server_name.as_deref(), Some("localhost"));
    assert!(
        pair.server.peer_identity().is_none(),
        "no client certificates"
    );
    let mut exported = [0u8; 16];
    assert!(
        pair.server
            .export_keying_material(&mut exported, b"label", b"")
            .is_err()
    );
}

#[test]
fn a_tls_message_after_the_handshake_is_refused() {
    let mut pair = start(&server_crypto(), &client_config());
    handshake(&mut pair);
    // A well-formed KeyUpdate (forbidden in QUIC): rustls itself answers unexpected_message.
    let key_update = [24, 0, 0, 1, 0];
    let err = pair.server.read_handshake(&key_update).unwrap_err();
    assert_eq!(err.code, TransportErrorCode::crypto(10)); // unexpected_message
}

#[test]
fn the_session_ticket_reaches_the_client_before_the_connection_is_dropped() {
    let crypto = server_crypto();
    let client = client_config();
    let mut first = start(&crypto, &client);
    handshake(&mut first);
    assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));

    let mut second = start(&crypto, &client);
    handshake(&mut second);
    assert_eq!(
        second.client.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "the second connection resumes with the ticket the first one received"
    );
    let resumed = |pair: &Pair| {
        pair.server
            .handshake_data()
            .unwrap()
            .downcast::<super::ServerHandshakeData>()
            .unwrap()
            .resumed
    };
    assert!(!resumed(&first));
    assert!(
        resumed(&second),
        "reported to the listener, which counts it"
    );
}

#[test]
fn lazy_key_phases_match_the_clients_through_several_updates() {
    let mut pair = start(&server_crypto(), &client_config());
    handshake(&mut pair);
    let mut client_next = pair.client_next.take().unwrap();

    let mut previous: Option<quinn::crypto::KeyPair<Box<dyn PacketKey>>> = None;
    for phase in 1..=3u64 {
        let server = pair.server.next_1rtt_keys().unwrap();
        let next = pair.server.next_phase.as_ref().unwrap();
        assert!(
            !next.phase.is_derived(),
            "phase {phase}: keys are derived on first use, not when handed out"
        );
        let client = client_next.next_packet_keys();
        let (client_local, client_remote): (Box<dyn PacketKey>, Box<dyn PacketKey>) =
            (Box::new(client.local), Box::new(client.remote));

        assert_eq!(server.local.tag_len(), client_local.tag_len());
        assert_eq!(
            server.local.confidentiality_limit(),
            client_local.confidentiality_limit()
        );
        assert_eq!(
            server.local.integrity_limit(),
            client_local.integrity_limit()
        );
        assert!(
            round_trip(client_local.as_ref(), server.remote.as_ref(), phase),
            "phase {phase}: client to server"
        );
        assert!(
            round_trip(server.local.as_ref(), client_remote.as_ref(), phase),
            "phase {phase}: server to client"
        );
        if let Some(previous) = &previous {
            assert!(
                !round_trip(client_local.as_ref(), previous.remote.as_ref(), phase),
                "phase {phase} must not reuse the previous phase's keys"
            );
        }
        previous = Some(server);
    }
}

#[test]
fn an_unknown_version_refuses_the_handshake_without_panicking() {
    let params = TransportParameters::read(Side::Client, &mut &[][..]).unwrap();
    let mut session = server_crypto().session(0x0bad_0bad, &params);
    assert!(session.is_handshaking());
    let err = session.read_handshake(&[1, 0, 0, 0]).unwrap_err();
    assert_eq!(err.code, TransportErrorCode::INTERNAL_ERROR);
    assert!(session.write_handshake(&mut Vec::new()).is_none());
    assert!(session.handshake_data().is_none());
}
