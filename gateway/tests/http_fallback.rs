//! The HTTP fallback under the real gateway, over loopback sockets: a session moves from
//! WebSocket to HTTP and resumes, messages flow both ways, and hostile clients are closed
//! with their codes (the transport's own request rules: transports/tests/all/http.rs).

mod support;

use std::sync::Arc;
use std::time::Duration;

use imgate::backend::RelayBackend;
use imgate::deliver::{Delivery, DeliveryOptions, Target};
use imgate::metrics::{Metrics, OutcomeLabel};
use imgate::offline::PushTrigger;
use imgate::session::SessionConfig;
use imgate::{Gateway, RunningGateway, ServerConfig};
use imgate_codec::{Ack, CloseCode, Kind};
use imgate_transports::{Connector, ConnectorConfig, FramedConn, ListenerConfig, TransportKind};
use rustls::RootCertStore;
use support::{WatchedPush, app, hello, loopback, receipt, recv, resume_of, text};

/// A relay gateway on WebSocket and HTTP, with `edit` applied to both listeners.
async fn start(
    session: SessionConfig,
    server: ServerConfig,
    push: Arc<WatchedPush>,
    metrics: Metrics,
    edit: impl Fn(&mut ListenerConfig),
) -> RunningGateway {
    let mut builder = Gateway::builder()
        .app(imgate::App {
            push,
            ..app(Arc::new(RelayBackend::default()), session)
        })
        .config(server)
        .metrics(metrics);
    for kind in [TransportKind::Ws, TransportKind::Http] {
        let mut listener = ListenerConfig::new(kind, loopback());
        edit(&mut listener);
        builder = builder.listener(listener);
    }
    builder.start().await.expect("start")
}

async fn connect_with(gw: &RunningGateway, config: ConnectorConfig) -> FramedConn {
    let addr = gw.local_addr(config.kind).expect("listener");
    Connector::new(config)
        .expect("connector")
        .connect(addr)
        .await
        .expect("connect")
}

async fn connect(gw: &RunningGateway, kind: TransportKind) -> FramedConn {
    connect_with(gw, ConnectorConfig::new(kind, RootCertStore::empty())).await
}

fn delivery(from: &str) -> Delivery {
    Delivery {
        target: Target::User("bob".into()),
        payload: bytes::Bytes::from(vec![b'x'; 2048]),
        options: DeliveryOptions {
            from: Some(from.into()),
            ..Default::default()
        },
    }
}

fn closes(metrics: &Metrics, code: CloseCode) -> u64 {
    metrics
        .closes
        .get_or_create(&OutcomeLabel {
            outcome: code.name(),
        })
        .get()
}

#[tokio::test]
async fn a_session_moves_from_websocket_to_http_and_resumes_there() {
    let gw = start(
        SessionConfig::default(),
        ServerConfig::default(),
        Arc::default(),
        Metrics::default(),
        |_| {},
    )
    .await;
    let mut bob = connect(&gw, TransportKind::Ws).await;
    let welcome = hello(&mut bob, "tok-bob", None).await;
    for from in ["1", "2", "3"] {
        gw.handle()
            .deliver(&"chat".into(), delivery(from))
            .await
            .expect("deliver");
    }
    for seq in 1..=3 {
        assert!(matches!(recv(&mut bob).await, Kind::Deliver(d) if d.seq == seq));
    }
    // Bob's WebSocket is blocked; he comes back over HTTP having processed only the first.
    drop(bob);
    let mut bob = connect(&gw, TransportKind::Http).await;
    assert_eq!(bob.info().kind, TransportKind::Http);
    let resumed = hello(&mut bob, "tok-bob", Some(resume_of(&welcome, 1))).await;
    assert!(resumed.resumed, "{:?}", resumed.resume_refused());
    assert_eq!(resumed.session_id, welcome.session_id);
    for (seq, from) in [(2, "2"), (3, "3")] {
        match recv(&mut bob).await {
            Kind::Deliver(d) => assert_eq!((d.seq, d.from.as_str()), (seq, from)),
            other => panic!("expected the replay, got {other:?}"),
        }
    }
    bob.send(&Ack { seq: 3 }.into()).await.expect("ack");
    // Alice, on HTTP too, writes to him: a receipt for her, the message for him.
    let mut alice = connect(&gw, TransportKind::Http).await;
    hello(&mut alice, "tok-alice", None).await;
    alice
        .send(&text(7, "bob", "over http"))
        .await
        .expect("send");
    assert_eq!(receipt(&mut alice).await.msg_id, 7);
    match recv(&mut bob).await {
        Kind::Deliver(d) => {
            assert_eq!((d.seq, d.from.as_str()), (4, "alice"));
            assert_eq!(&d.payload[..], b"over http");
        }
        other => panic!("expected alice's message, got {other:?}"),
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_is_never_read_is_closed_as_a_slow_consumer() {
    const MESSAGES: u64 = 3000;
    let session = SessionConfig {
        max_unacked: 10_000,
        max_unacked_bytes: 64 * 1024 * 1024,
        // Reported at once on detach: the report is the test's sign that the server gave up.
        push_grace: Duration::ZERO,
        ..SessionConfig::default()
    };
    let push = Arc::new(WatchedPush::default());
    let metrics = Metrics::default();
    let server = ServerConfig {
        write_stall_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let gw = start(session, server, push.clone(), metrics.clone(), |listener| {
        listener.max_outbound_bytes = 64 * 1024;
    })
    .await;
    let mut bob = connect(&gw, TransportKind::Http).await;
    let welcome = hello(&mut bob, "tok-bob", None).await;
    // Bob stops reading his stream; 6 MB for him fill the buffers on the way.
    for i in 0..MESSAGES {
        gw.handle()
            .deliver(&"chat".into(), delivery(&i.to_string()))
            .await
            .expect("deliver");
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let detached =
        |(_, _, trigger): &(String, _, PushTrigger)| *trigger == PushTrigger::DetachedGrace;
    push.until("the unread stream's session detaches", |log| {
        log.pushes.iter().any(detached)
    })
    .await;
    assert_eq!(closes(&metrics, CloseCode::SLOW_CONSUMER), 1);
    // What was buffered can still be read; then the stream ends, cut short.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = bob.recv().await {}
    })
    .await;
    assert!(ended.is_ok(), "the unread stream must be closed");
    // Bob resumes (over HTTP again) and gets every message.
    let mut bob = connect(&gw, TransportKind::Http).await;
    let resumed = hello(&mut bob, "tok-bob", Some(resume_of(&welcome, 0))).await;
    assert!(resumed.resumed, "{:?}", resumed.resume_refused());
    for seq in 1..=MESSAGES {
        match recv(&mut bob).await {
            Kind::Deliver(d) => {
                assert_eq!(d.seq, seq);
                if seq % 500 == 0 {
                    bob.send(&Ack { seq }.into()).await.expect("ack");
                }
            }
            other => panic!("expected message {seq}, got {other:?}"),
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_oversize_post_closes_the_session_connection_with_frame_too_large() {
    let gw = start(
        SessionConfig::default(),
        ServerConfig::default(),
        Arc::default(),
        Metrics::default(),
        |listener| listener.max_frame = 4096,
    )
    .await;
    let mut config = ConnectorConfig::new(TransportKind::Http, RootCertStore::empty());
    // The client lets itself send more than the server takes.
    config.peer_max_frame = 1 << 20;
    let mut alice = connect_with(&gw, config).await;
    let welcome = hello(&mut alice, "tok-alice", None).await;
    let big = imgate_codec::Send {
        msg_id: 1,
        to: Some(imgate_codec::proto::send::To::User("bob".into())),
        payload: bytes::Bytes::from(vec![0; 8192]),
        ack: 0,
    };
    alice.send(&big.into()).await.expect("send");
    match recv(&mut alice).await {
        Kind::Error(e) => assert_eq!(e.close_code(), CloseCode::FRAME_TOO_LARGE),
        other => panic!("expected the Error, got {other:?}"),
    }
    // ... and it was the stream's last frame.
    let end = tokio::time::timeout(Duration::from_secs(5), alice.recv()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
    // The session stays for a resume.
    let mut alice = connect(&gw, TransportKind::Http).await;
    let resumed = hello(&mut alice, "tok-alice", Some(resume_of(&welcome, 0))).await;
    assert!(resumed.resumed, "{:?}", resumed.resume_refused());
    gw.shutdown().await;
}
