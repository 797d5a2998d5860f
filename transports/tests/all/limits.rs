//! Global and per-IP connection limits, over real sockets.

use std::time::Duration;

use imgate_transports::TransportKind;

use crate::common::*;

#[tokio::test]
async fn global_limit_holds_new_connections_until_one_leaves() {
    let mut config = listener_config(TransportKind::Tcp);
    config.max_connections = 2;
    let listener = server(config).await;
    let addr = listener.local_addr();
    let stats = listener.stats().clone();
    let _echo = echo(listener);
    let connector = connector(TransportKind::Tcp);
    let mut first = connector.connect(addr).await.expect("connect");
    first.send(&deliver(1, 1)).await.expect("send");
    assert!(recv(&mut first).await.expect("recv").is_some());
    assert_echo(&connector, addr).await; // second slot; released when it drops
    let mut second = connector.connect(addr).await.expect("connect");
    second.send(&deliver(2, 1)).await.expect("send");
    assert!(recv(&mut second).await.expect("recv").is_some());
    // Third: the kernel completes the TCP handshake, but the server does not take it. The
    // accept loop's second wait (the first was for the round trip's slot) says it is held at
    // the limit: it cannot have taken the third connection.
    let mut third = connector.connect(addr).await.expect("connect");
    third.send(&deliver(3, 1)).await.expect("send");
    tokio::time::timeout(WAIT, stats.wait_for(|s| s.global_limit_waits >= 2))
        .await
        .expect("the accept loop waits at the limit");
    let served = tokio::time::timeout(Duration::ZERO, third.recv()).await;
    assert!(served.is_err(), "third connection served over the limit");
    drop(first);
    assert_eq!(recv(&mut third).await.expect("recv"), Some(deliver(3, 1)));
}

#[tokio::test]
async fn per_ip_limit_refuses_and_counts() {
    for kind in [TransportKind::Tcp, TransportKind::Quic] {
        if !kind.is_available() {
            continue;
        }
        let mut config = listener_config(kind);
        config.max_per_ip = Some(1);
        // Served here rather than by an echo task, so the test knows when the server side
        // of a connection is gone (and its slot with it).
        let mut listener = server(config).await;
        let addr = listener.local_addr();
        let stats = listener.stats().clone();
        let connector = connector(kind);
        let mut first = connector.connect(addr).await.expect("connect");
        // QUIC: the server sees the connection once its stream carries a frame.
        first.send(&deliver(1, 1)).await.expect("send");
        let mut served = accepted(&mut listener).await;
        assert_eq!(recv(&mut served).await.expect("recv"), Some(deliver(1, 1)));
        // Same address again: refused (TCP: closed at once; QUIC: refused in the handshake).
        match connector.connect(addr).await {
            Err(_) => {}
            Ok(mut second) => {
                let _ = second.send(&deliver(2, 1)).await;
                let mut end = recv(&mut second).await;
                if let Ok(Some(frame)) = &end {
                    // TCP says why first (protocol §12): Error{3002}.
                    assert!(
                        matches!(&frame.kind, Some(imgate_codec::Kind::Error(e))
                            if e.close_code() == imgate_codec::CloseCode::CONNECTION_LIMIT),
                        "{kind}: second served: {frame:?}"
                    );
                    end = recv(&mut second).await;
                }
                assert!(
                    matches!(end, Ok(None) | Err(_)),
                    "{kind}: second served: {end:?}"
                );
            }
        }
        assert_eq!(stats.snapshot().rejected_per_ip, 1, "{kind}");
        // The slot is free again as soon as both sides of the first connection are gone.
        drop(first);
        drop(served);
        let mut third = connector.connect(addr).await.expect("connect");
        third.send(&deliver(3, 1)).await.expect("send");
        let mut served = accepted(&mut listener).await;
        assert_eq!(recv(&mut served).await.expect("recv"), Some(deliver(3, 1)));
        assert_eq!(stats.snapshot().rejected_per_ip, 1, "{kind}: third refused");
    }
}

/// The next connection the listener hands over (bounded).
async fn accepted(listener: &mut imgate_transports::Listener) -> imgate_transports::FramedConn {
    tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("a connection in time")
        .expect("the listener is open")
}
