//! A phone switching networks: the QUIC client rebinds to a new UDP socket mid-stream.

use imgate_transports::TransportKind;

use crate::common::*;

#[tokio::test]
async fn quic_connection_survives_client_rebind() {
    let listener = server(listener_config(TransportKind::Quic)).await;
    let addr = listener.local_addr();
    let _echo = echo(listener);
    let connector = connector(TransportKind::Quic);
    let mut conn = connector.connect(addr).await.expect("connect");
    conn.send(&deliver(1, 100)).await.expect("send");
    assert_eq!(recv(&mut conn).await.expect("recv"), Some(deliver(1, 100)));

    let endpoint = connector.quic_endpoint().expect("quic endpoint");
    let before = endpoint.local_addr().expect("local addr");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("new socket");
    endpoint.rebind(socket).expect("rebind");
    let after = endpoint.local_addr().expect("local addr");
    assert_ne!(
        before.port(),
        after.port(),
        "the client moved to a new address"
    );

    for seq in 2..20 {
        conn.send(&deliver(seq, 1000))
            .await
            .expect("send after rebind");
        assert_eq!(
            recv(&mut conn).await.expect("recv after rebind"),
            Some(deliver(seq, 1000))
        );
    }
}
