//! TLS session resumption: a reconnecting client resumes with the ticket its last connection
//! received, however many other clients connected in between (stateless tickets), and the
//! listener counts resumed handshakes.

use imgate_transports::{Connector, TransportKind};

use crate::common::*;

async fn round_trip(connector: &Connector, addr: std::net::SocketAddr) {
    let mut conn = connector.connect(addr).await.expect("connect");
    conn.send(&deliver(1, 10)).await.expect("send");
    assert_eq!(recv(&mut conn).await.expect("recv"), Some(deliver(1, 10)));
}

async fn reconnect_resumes(kind: TransportKind, others: usize) {
    let listener = server(listener_config(kind)).await;
    let addr = listener.local_addr();
    let stats = listener.stats().clone();
    let _echo = echo(listener);
    let phone = connector(kind);
    round_trip(&phone, addr).await;
    // Other clients, each with its own session store, all doing full handshakes. A server
    // that remembered sessions in a bounded cache (rustls' default keeps 256) would forget
    // the phone's session once enough of them connected.
    for _ in 0..others {
        round_trip(&connector(kind), addr).await;
    }
    assert_eq!(stats.snapshot().handshake_resumed, 0);
    round_trip(&phone, addr).await;
    assert_eq!(
        stats.snapshot().handshake_resumed,
        1,
        "the phone's second connection resumes"
    );
}

#[tokio::test]
async fn tls_resumes_after_many_other_clients() {
    // 2 tickets per full handshake: 140 clients overflow a 256-session cache.
    reconnect_resumes(TransportKind::Tls, 140).await;
}

#[cfg(feature = "wss")]
#[tokio::test]
async fn wss_resumes() {
    reconnect_resumes(TransportKind::Wss, 3).await;
}

#[cfg(feature = "quic")]
#[tokio::test]
async fn quic_resumes() {
    reconnect_resumes(TransportKind::Quic, 3).await;
}

/// A listener of `kind`, sealing tickets with `keys` if given.
fn node(
    kind: TransportKind,
    keys: Option<&imgate_transports::TicketKeys>,
) -> imgate_transports::ListenerConfig {
    let mut config = listener_config(kind);
    if let Some(keys) = keys {
        config.identity = Some(identity().clone().with_ticket_keys(keys.clone()));
    }
    config
}

fn fleet_keys() -> imgate_transports::TicketKeys {
    let key: Vec<u8> = (0..imgate_transports::TICKET_KEY_LEN as u8).collect();
    imgate_transports::TicketKeys::from_bytes(&[&key]).expect("keys")
}

/// Two gateway nodes behind one name; the phone's second connection lands on the other node.
async fn resumed_on_the_other_node(
    kind: TransportKind,
    keys: Option<&imgate_transports::TicketKeys>,
) -> u64 {
    let (a, b) = (
        server(node(kind, keys)).await,
        server(node(kind, keys)).await,
    );
    let (addr_a, addr_b) = (a.local_addr(), b.local_addr());
    let stats_b = b.stats().clone();
    let (_echo_a, _echo_b) = (echo(a), echo(b));
    let phone = connector(kind);
    round_trip(&phone, addr_a).await;
    round_trip(&phone, addr_b).await;
    stats_b.snapshot().handshake_resumed
}

#[tokio::test]
async fn with_shared_ticket_keys_a_phone_resumes_on_another_node() {
    let keys = fleet_keys();
    assert_eq!(
        resumed_on_the_other_node(TransportKind::Tls, Some(&keys)).await,
        1
    );
    // Without them each node's tickets are its own.
    assert_eq!(resumed_on_the_other_node(TransportKind::Tls, None).await, 0);
}

/// TLS 1.2 clients resume too (RFC 5077 tickets sealed with the same keys).
#[tokio::test]
async fn a_tls12_client_resumes_on_another_node_with_shared_keys() {
    let keys = fleet_keys();
    let (a, b) = (
        server(node(TransportKind::Tls, Some(&keys))).await,
        server(node(TransportKind::Tls, Some(&keys))).await,
    );
    let (addr_a, addr_b) = (a.local_addr(), b.local_addr());
    let stats_b = b.stats().clone();
    let (_echo_a, _echo_b) = (echo(a), echo(b));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(identity().root_store())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"imgate/1".to_vec()];
    let client = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut kinds = Vec::new();
    for addr in [addr_a, addr_b] {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = client.connect(name, tcp).await.expect("TLS 1.2 handshake");
        let (_, session) = tls.get_ref();
        assert_eq!(
            session.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        kinds.push(session.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
    // The server counts it once the connection is handed over.
    tokio::time::timeout(WAIT, stats_b.wait_for(|s| s.handshake_resumed > 0))
        .await
        .expect("counted as resumed");
}

/// A phone on QUIC that moves to another node resumes there too.
#[cfg(feature = "quic")]
#[tokio::test]
async fn with_shared_ticket_keys_quic_resumes_on_another_node() {
    let keys = fleet_keys();
    assert_eq!(
        resumed_on_the_other_node(TransportKind::Quic, Some(&keys)).await,
        1
    );
    assert_eq!(
        resumed_on_the_other_node(TransportKind::Quic, None).await,
        0
    );
}
