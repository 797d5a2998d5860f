//! Operations over real sockets: admin API and metrics, limits, slow consumers, drain.

mod support;

use std::sync::Arc;
use std::time::Duration;

use imgate::ServerConfig;
use imgate::admin::{AdminConfig, AdminServer};
use imgate::metrics::Metrics;
use imgate::offline::PushTrigger;
use imgate::rate_limit::RateLimit;
use imgate::session::{SessionConfig, UndeliveredReason};
use imgate_codec::{Ack, CloseCode, GoAwayReason, Kind, Ping};
use imgate_transports::{ListenerConfig, TransportKind};
use prometheus_client::registry::Registry;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn admin_delivers_lists_kicks_and_metrics_move() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let gw = start_with_metrics(metrics).await;
    let admin = AdminServer::start(
        AdminConfig {
            bind: loopback(),
            token: Some("s3cret".into()),
            demo: None,
        },
        gw.handle().clone(),
        registry,
    )
    .await
    .expect("admin");
    let addr = admin.local_addr();
    let mut bob = connect(&gw).await;
    let welcome = hello(&mut bob, "tok-bob", None).await;

    assert_eq!(http(addr, "GET", "/healthz", "").await.0, 200);
    assert_eq!(http(addr, "GET", "/readyz", "").await.0, 200);
    assert_eq!(
        http(addr, "GET", "/metrics", "").await.0,
        401,
        "token required"
    );

    // Deliver through the admin API (with the bearer token), the client receives it.
    let body = r#"{"app":"chat","target":{"user":"bob"},"text":"from ops","from":"ops"}"#;
    let (status, reply) = http_auth(addr, "POST", "/v1/deliver", body, "s3cret").await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains(r#""outcome":"sent""#), "{reply}");
    match recv(&mut bob).await {
        Kind::Deliver(d) => {
            assert_eq!((&d.payload[..], d.from.as_str()), (&b"from ops"[..], "ops"))
        }
        other => panic!("expected Deliver, got {other:?}"),
    }
    // A peer announcing an oversize frame is closed, and the transport's counter shows it.
    let tcp = gw.local_addr(TransportKind::Tcp).expect("tcp");
    let mut rogue = tokio::net::TcpStream::connect(tcp).await.expect("connect");
    rogue.write_all(&[0xff; 4]).await.expect("write");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), rogue.read_to_end(&mut rest))
        .await
        .expect("closed by the gateway")
        .ok();
    let (status, metrics) = http_auth(addr, "GET", "/metrics", "", "s3cret").await;
    assert_eq!(status, 200);
    let listener = format!(r#"listener="{tcp}",transport="tcp""#);
    for needle in [
        r#"imgate_deliveries_total{outcome="sent"} 1"#.to_owned(),
        r#"imgate_handshakes_total{outcome="ok"} 1"#.to_owned(),
        r#"imgate_connections{transport="tcp"} 1"#.to_owned(),
        "imgate_sessions 1".to_owned(),
        format!(r#"imgate_transport_events_total{{{listener},event="accepted"}} 2"#),
        format!(r#"imgate_transport_events_total{{{listener},event="frame_too_large"}} 1"#),
        format!(r#"imgate_transport_events_total{{{listener},event="handshake_tls"}} 0"#),
    ] {
        assert!(metrics.contains(&needle), "missing {needle} in\n{metrics}");
    }
    let (_, sessions) = http_auth(addr, "GET", "/v1/users/chat/bob/sessions", "", "s3cret").await;
    let id = format!("{:016x}", welcome.session_id);
    assert!(sessions.contains(&id), "{sessions}");
    let (status, _) = http_auth(addr, "DELETE", &format!("/v1/sessions/{id}"), "", "s3cret").await;
    assert_eq!(status, 204);
    match recv(&mut bob).await {
        Kind::GoAway(g) => assert_eq!(g.reason(), GoAwayReason::Kicked),
        other => panic!("expected GoAway, got {other:?}"),
    }
    let (status, _) = http_auth(addr, "POST", "/v1/deliver", "{not json", "s3cret").await;
    assert_eq!(status, 400);
    gw.shutdown().await;
    // A stopped gateway's listeners leave the metrics with it.
    let (_, metrics) = http_auth(addr, "GET", "/metrics", "", "s3cret").await;
    assert!(
        !metrics.contains("imgate_transport_events_total{"),
        "stale listener series:\n{metrics}"
    );
}

#[tokio::test]
async fn admin_refuses_to_listen_beyond_loopback_without_a_token() {
    let gw = start().await;
    let error = AdminServer::start(
        AdminConfig {
            bind: "0.0.0.0:0".parse().expect("addr"),
            token: None,
            demo: None,
        },
        gw.handle().clone(),
        Registry::default(),
    )
    .await
    .expect_err("must refuse");
    assert!(error.to_string().contains("token"), "{error}");
    gw.shutdown().await;
}

async fn http_auth(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: &str,
) -> (u16, String) {
    http_with_token(addr, method, path, body, Some(token)).await
}

#[tokio::test]
async fn handshake_rate_limit_refuses_with_rate_limited() {
    let server = ServerConfig {
        handshake_rate: RateLimit::new(0.001, 1.0),
        ..ServerConfig::default()
    };
    let gw = start_with(server).await;
    let mut first = connect(&gw).await;
    hello(&mut first, "tok-alice", None).await;
    let mut second = connect(&gw).await;
    second
        .send(&hello_frame("tok-bob", "phone", None))
        .await
        .expect("send");
    match recv(&mut second).await {
        Kind::Error(e) => assert_eq!(e.close_code(), CloseCode::RATE_LIMITED),
        other => panic!("expected Error, got {other:?}"),
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn message_flood_closes_the_connection_with_rate_limited() {
    let server = ServerConfig {
        message_rate: RateLimit::new(1.0, 5.0),
        ..ServerConfig::default()
    };
    let gw = start_with(server).await;
    let mut conn = connect(&gw).await;
    hello(&mut conn, "tok-alice", None).await;
    for _ in 0..20 {
        if conn.send(&Ping::default().into()).await.is_err() {
            break;
        }
    }
    let mut saw_limit = false;
    while let Ok(Ok(Some(frame))) = tokio::time::timeout(Duration::from_secs(5), conn.recv()).await
    {
        if let Some(Kind::Error(e)) = frame.kind {
            assert_eq!(e.close_code(), CloseCode::RATE_LIMITED);
            saw_limit = true;
        }
    }
    assert!(saw_limit, "the flood must end with RATE_LIMITED");
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_consumer_is_disconnected_and_loses_nothing_after_resume() {
    const MESSAGES: u64 = 3000;
    let session = SessionConfig {
        max_unacked: 10_000,
        max_unacked_bytes: 64 * 1024 * 1024,
        ..SessionConfig::default()
    };
    let session = SessionConfig {
        // Reported at once on detach: the report is the test's sign that the server gave up.
        push_grace: Duration::ZERO,
        ..session
    };
    let push = Arc::new(WatchedPush::default());
    let mut listener = ListenerConfig::new(TransportKind::Tcp, loopback());
    listener.max_outbound_bytes = 64 * 1024;
    let gw = imgate::Gateway::builder()
        .app(imgate::App {
            push: push.clone(),
            ..app(Arc::new(imgate::backend::RelayBackend::default()), session)
        })
        .config(ServerConfig {
            write_stall_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        })
        .listener(listener)
        .start()
        .await
        .expect("start");
    let mut bob = connect(&gw).await;
    let welcome = hello(&mut bob, "tok-bob", None).await;
    // Bob stops reading; 6 MB for him fill the kernel buffers and then the bounded queue.
    let payload = bytes::Bytes::from(vec![b'x'; 2048]);
    for i in 0..MESSAGES {
        let delivery = imgate::deliver::Delivery {
            target: imgate::deliver::Target::User("bob".into()),
            payload: payload.clone(),
            options: imgate::deliver::DeliveryOptions {
                from: Some(format!("{i}").as_str().into()),
                ..Default::default()
            },
        };
        gw.handle()
            .deliver(&"chat".into(), delivery)
            .await
            .expect("deliver");
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Bob still does not read; past the stall timeout the server gives up on him: his
    // session detaches, which the push policy hears of (push grace zero). What the kernel
    // already holds can still be read, then the connection ends.
    let detached =
        |(_, _, trigger): &(String, _, PushTrigger)| *trigger == PushTrigger::DetachedGrace;
    let log = push
        .until("the slow consumer's session detaches", |log| {
            log.pushes.iter().any(detached)
        })
        .await;
    let (user, pending, _) = log.pushes.iter().find(|p| detached(p)).expect("found");
    assert_eq!(
        (user.as_str(), pending.len() as u64),
        ("bob", MESSAGES),
        "all still buffered"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = bob.recv().await {}
    })
    .await;
    assert!(closed.is_ok(), "a slow consumer must be disconnected");
    // Bob comes back and resumes from scratch: every message arrives once, in order.
    let mut bob = connect(&gw).await;
    let resumed = hello(&mut bob, "tok-bob", Some(resume_of(&welcome, 0))).await;
    assert!(resumed.resumed, "{:?}", resumed.resume_refused());
    let mut next = 1;
    while next <= MESSAGES {
        match recv(&mut bob).await {
            Kind::Deliver(d) => {
                assert_eq!(d.seq, next);
                assert_eq!(d.from, format!("{}", next - 1));
                next += 1;
                if next % 500 == 0 {
                    bob.send(&Ack { seq: d.seq }.into()).await.expect("ack");
                }
            }
            other => panic!("expected Deliver, got {other:?}"),
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn drain_sends_go_away_and_hands_unacked_messages_to_the_offline_path() {
    let backend = RecordingRelay::default();
    let push = Arc::new(WatchedPush::default());
    let gw = builder(
        imgate::App {
            push: push.clone(),
            ..app(Arc::new(backend.clone()), SessionConfig::default())
        },
        ServerConfig::default(),
    )
    .start()
    .await
    .expect("start");
    let mut alice = connect(&gw).await;
    let mut bob = connect(&gw).await;
    hello(&mut alice, "tok-alice", None).await;
    hello(&mut bob, "tok-bob", None).await;
    alice.send(&text(1, "bob", "one")).await.expect("send");
    alice.send(&text(2, "bob", "two")).await.expect("send");
    // Bob receives both but acks only the first.
    for _ in 0..2 {
        assert!(matches!(recv(&mut bob).await, Kind::Deliver(_)));
    }
    bob.send(&Ack { seq: 1 }.into()).await.expect("ack");
    // The drain must find the ack processed: only message 2 is then unacknowledged.
    push.until("bob's ack reaches the session", |log| {
        log.acked.iter().any(|(user, _)| user == "bob")
    })
    .await;
    let drained = tokio::spawn(gw.drain(Duration::from_secs(5), Duration::from_millis(250)));
    for conn in [&mut alice, &mut bob] {
        loop {
            match recv(conn).await {
                Kind::GoAway(g) => {
                    assert_eq!(g.reason(), GoAwayReason::Drain);
                    assert_eq!(g.reconnect_after_ms, 250);
                    break;
                }
                Kind::Receipt(_) => continue,
                other => panic!("expected GoAway, got {other:?}"),
            }
        }
    }
    drop(alice);
    drop(bob);
    let report = tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("drain ends")
        .expect("join");
    assert_eq!(report.sessions, 2);
    assert!(report.clean, "{report:?}");
    let undelivered = backend.undelivered.lock().expect("lock").clone();
    assert_eq!(undelivered.len(), 1, "{undelivered:?}");
    assert_eq!(undelivered[0].0, "bob");
    assert_eq!(undelivered[0].1.seq, 2);
    assert_eq!(undelivered[0].2, UndeliveredReason::SessionEnded);
}
