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

/// Two gateway nodes behind one name; the phone's second connection lands on the other node.
async fn resumed_on_the_other_node(keys: Option<&imgate_transports::TicketKeys>) -> u64 {
    let node = |keys: Option<&imgate_transports::TicketKeys>| {
        let mut config = listener_config(TransportKind::Tls);
        if let Some(keys) = keys {
            config.identity = Some(identity().clone().with_ticket_keys(keys.clone()));
        }
        config
    };
    let (a, b) = (server(node(keys)).await, server(node(keys)).await);
    let (addr_a, addr_b) = (a.local_addr(), b.local_addr());
    let stats_b = b.stats().clone();
    let (_echo_a, _echo_b) = (echo(a), echo(b));
    let phone = connector(TransportKind::Tls);
    round_trip(&phone, addr_a).await;
    round_trip(&phone, addr_b).await;
    stats_b.snapshot().handshake_resumed
}

#[tokio::test]
async fn with_shared_ticket_keys_a_phone_resumes_on_another_node() {
    let key: Vec<u8> = (0..imgate_transports::TICKET_KEY_LEN as u8).collect();
    let keys = imgate_transports::TicketKeys::from_bytes(&[&key]).expect("keys");
    assert_eq!(resumed_on_the_other_node(Some(&keys)).await, 1);
    // Without them each node's tickets are its own.
    assert_eq!(resumed_on_the_other_node(None).await, 0);
}
