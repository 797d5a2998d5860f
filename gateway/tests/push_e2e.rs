//! Push fallback end to end: a real gateway on 127.0.0.1, scripted clients over TCP, the
//! `PushService` sending to loopback mock APNs and FCM servers.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use imgate::auth::StaticTokens;
use imgate::backend::{
    Backend, Origin, RelayBackend, UpstreamOutcome, UpstreamRequest, async_trait,
};
use imgate::deliver::{Delivery, DeliveryOptions, PushAlert, PushOptions, Target};
use imgate::ids::{AppId, DeviceId, UserId};
use imgate::offline::{PushPolicy, PushRegistration};
use imgate::push_policy::{
    ApnsEnvironment, ApnsSettings, PushLimits, PushService, PushServiceMetrics,
};
use imgate::session::SessionConfig;
use imgate::{App, GatewayHandle, RunningGateway};
use imgate_codec::{Ack, Frame, Kind, Ping, PushProvider, ReceiptStatus, RegisterPush};
use imgate_push::mock::{
    ApnsRecord, ApnsReply, ApnsTestKey, MockApns, MockApnsConfig, MockFcm, MockFcmConfig, TestPki,
};
use imgate_push::{ApnsConfig, ConnOptions, DispatcherConfig, FcmConfig, RetryPolicy};
use imgate_transports::FramedConn;
use prometheus_client::registry::Registry;
use serde_json::Value;
use support::{connect, hello_frame, login, recv, rsa_key, start_app};
use tokio::sync::watch;

const APP: &str = "chat";
const TOPIC: &str = "com.example.chat";
const PROJECT: &str = "demo-proj";
const WAIT: Duration = Duration::from_secs(10);

fn apns_token(n: u64) -> String {
    format!("{n:064x}")
}

/// Relays like `RelayBackend` and records dead-token notices.
#[derive(Default)]
struct TestBackend {
    relay: RelayBackend,
    invalid: Mutex<Vec<(String, String, String, String)>>,
    /// Ticks on every notice (a session ended, a token died): what tests wait on.
    noticed: watch::Sender<u64>,
}

impl TestBackend {
    /// Waits until `reached()` holds, checked on every notice (`WAIT` at most).
    async fn until(&self, what: &str, mut reached: impl FnMut() -> bool) {
        let mut noticed = self.noticed.subscribe();
        tokio::time::timeout(WAIT, noticed.wait_for(|_| reached()))
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
            .expect("the backend lives");
    }

    fn notice(&self) {
        self.noticed.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl Backend for TestBackend {
    async fn on_upstream(
        &self,
        gateway: &GatewayHandle,
        origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome {
        self.relay.on_upstream(gateway, origin, request).await
    }

    async fn on_disconnect(&self, _gateway: &GatewayHandle, _origin: &Origin) {
        self.notice();
    }

    async fn on_push_token_invalid(
        &self,
        _app: &AppId,
        user: &UserId,
        device: &DeviceId,
        token: &str,
        reason: &str,
    ) {
        self.invalid.lock().expect("lock").push((
            user.to_string(),
            device.to_string(),
            token.to_owned(),
            reason.to_owned(),
        ));
        self.notice();
    }
}

fn short_timers() -> SessionConfig {
    SessionConfig {
        heartbeat: Duration::from_secs(1),
        resume_window: Duration::from_millis(200),
        push_grace: Duration::from_millis(100),
        ack_timeout: Duration::from_millis(300),
        ..SessionConfig::default()
    }
}

fn limits() -> PushLimits {
    PushLimits {
        dispatcher: DispatcherConfig {
            retry: RetryPolicy {
                base: Duration::from_millis(20),
                max_delay: Duration::from_millis(100),
                max_attempts: 1000,
            },
            rng_seed: Some(1),
            ..DispatcherConfig::default()
        },
        ..PushLimits::default()
    }
}

fn apns_settings(url: &str, ca_pem: &str, key: &ApnsTestKey) -> ApnsSettings {
    let mut config =
        ApnsConfig::token(key.key_pem.clone(), key.key_id.clone(), key.team_id.clone());
    config.base_url(url).trust_pem(ca_pem.to_owned());
    config.conn = ConnOptions {
        connect_timeout: Some(Duration::from_millis(500)),
        ..ConnOptions::default()
    };
    ApnsSettings {
        config,
        topic: TOPIC.into(),
        environment: ApnsEnvironment::Custom,
    }
}

async fn gateway(push: &PushService, backend: Arc<TestBackend>) -> RunningGateway {
    let mut tokens = StaticTokens::new();
    tokens.insert("tok-ann", UserId::new("ann"));
    tokens.insert("tok-bob", UserId::new("bob"));
    // `support::app` is the app `chat` (APP) with the relay's users; these tests log in as ann.
    start_app(App {
        authenticator: Arc::new(tokens),
        push: Arc::new(push.clone()),
        ..support::app(backend, short_timers())
    })
    .await
}

async fn register(conn: &mut FramedConn, provider: PushProvider, token: &str) {
    let frame: Frame = RegisterPush {
        msg_id: 1,
        provider: provider as i32,
        token: token.into(),
        topic: if provider == PushProvider::Apns {
            TOPIC.into()
        } else {
            String::new()
        },
        sandbox: false,
    }
    .into();
    conn.send(&frame).await.expect("register");
    loop {
        match recv(conn).await {
            Kind::Receipt(r) => {
                assert_eq!(r.status(), ReceiptStatus::Accepted, "{r:?}");
                return;
            }
            Kind::Ping(_) | Kind::Pong(_) => {}
            other => panic!("expected Receipt, got {other:?}"),
        }
    }
}

async fn deliver(gw: &RunningGateway, to: &str, body: &str, collapse: Option<&str>) -> u64 {
    let report = gw
        .handle()
        .deliver(
            &AppId::new(APP),
            Delivery {
                target: Target::User(UserId::new(to)),
                payload: Bytes::from(body.to_owned()),
                options: DeliveryOptions {
                    push: Some(PushOptions {
                        alert: Some(PushAlert {
                            title: "Bob".into(),
                            body: body.into(),
                        }),
                        collapse_id: collapse.map(Into::into),
                        ttl_secs: 600,
                        data: vec![("conv".into(), "c1".into())],
                    }),
                    ..DeliveryOptions::default()
                },
            },
        )
        .await
        .expect("deliver");
    report.message_id.0
}

/// Waits for `what` to happen (`WAIT` at most).
async fn reached(what: &str, happens: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(WAIT, happens)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"));
}

/// How many pushes `push` submitted, once it has taken in every push the gateway asked for
/// so far (its flush): what the gateway asked before this call can no longer add to it.
async fn submitted(push: &PushService) -> u64 {
    push.flush().await;
    push.metrics().event_count(&AppId::new(APP), "submitted")
}

/// Waits until every session has ended (the backend hears of each end).
async fn until_ended(backend: &TestBackend, gw: &RunningGateway) {
    backend
        .until("sessions ended", || gw.handle().session_count() == 0)
        .await;
}

fn body(record: &ApnsRecord) -> Value {
    serde_json::from_slice(&record.body).expect("json body")
}

fn header<'a>(record: &'a ApnsRecord, name: &str) -> &'a str {
    record
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

struct Fixture {
    apns: MockApns,
    push: PushService,
    backend: Arc<TestBackend>,
    gw: RunningGateway,
}

async fn fixture() -> Fixture {
    let key = ApnsTestKey::generate().expect("key");
    let apns = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let backend = Arc::new(TestBackend::default());
    let metrics = PushServiceMetrics::new(&mut Registry::default());
    let push = PushService::builder(AppId::new(APP))
        .apns(apns_settings(&apns.url(), &apns.ca_pem(), &key))
        .backend(backend.clone())
        .limits(limits())
        .start(&metrics)
        .expect("push service");
    let gw = gateway(&push, Arc::clone(&backend)).await;
    Fixture {
        apns,
        push,
        backend,
        gw,
    }
}

impl Fixture {
    async fn stop(self) {
        self.gw.shutdown().await;
        self.push.shutdown().await;
    }
}

#[tokio::test]
async fn offline_user_gets_one_push_per_message_with_rising_badges() {
    let f = fixture().await;
    let mut phone = login(&f.gw, "tok-ann").await;
    register(&mut phone, PushProvider::Apns, &apns_token(1)).await;
    drop(phone);
    until_ended(&f.backend, &f.gw).await;

    let mut ids = Vec::new();
    for b in ["one", "two", "three"] {
        ids.push(deliver(&f.gw, "ann", b, None).await);
    }
    reached("pushes", f.apns.answered(3)).await;
    // The user has no session, so nothing but these deliveries asks for a push; the mock
    // answers each 200, so each submitted push is one request.
    assert_eq!(submitted(&f.push).await, 3, "exactly one push per message");
    let requests = f.apns.requests();
    assert_eq!(requests.len(), 3, "exactly one push per message");
    assert!(f.apns.violations().is_empty(), "{:?}", f.apns.violations());
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.device_token, apns_token(1));
        assert_eq!(header(r, "apns-topic"), TOPIC);
        assert_eq!(header(r, "apns-push-type"), "alert");
        assert_eq!(header(r, "apns-priority"), "10");
        assert!(!header(r, "apns-expiration").is_empty(), "TTL sent");
        assert_eq!(r.status, 200);
        let b = body(r);
        assert_eq!(b["aps"]["badge"], i as u64 + 1, "badge 1, 2, 3");
        assert_eq!(b["aps"]["alert"]["title"], "Bob");
        assert_eq!(b["conv"], "c1");
    }
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| body(r)["aps"]["alert"]["body"].clone())
        .collect();
    assert_eq!(bodies, ["one", "two", "three"]);
    let message_ids: Vec<String> = requests
        .iter()
        .map(|r| body(r)["message_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        message_ids,
        ids.iter().map(u64::to_string).collect::<Vec<_>>()
    );
    f.stop().await;
}

#[tokio::test]
async fn a_user_who_never_connected_gets_fcm_and_apns_pushes() {
    let key = ApnsTestKey::generate().expect("key");
    let apns = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let fcm = MockFcm::start(MockFcmConfig::new(PROJECT, rsa_key()))
        .await
        .expect("fcm mock");
    let mut fcm_config = FcmConfig::new(rsa_key().service_account(PROJECT, &fcm.token_uri()));
    fcm_config.base_url(fcm.url());
    let metrics = PushServiceMetrics::new(&mut Registry::default());
    let backend = Arc::new(TestBackend::default());
    let push = PushService::builder(AppId::new(APP))
        .apns(apns_settings(&apns.url(), &apns.ca_pem(), &key))
        .fcm(fcm_config)
        .backend(backend.clone())
        .limits(limits())
        .start(&metrics)
        .expect("push service");
    let gw = gateway(&push, backend).await;
    let (app, ann) = (AppId::new(APP), UserId::new("ann"));
    // The backend registers ann's devices; she never opens a session.
    push.register_device(
        &app,
        &ann,
        &DeviceId::new("iphone"),
        PushRegistration {
            provider: PushProvider::Apns,
            token: apns_token(7),
            topic: TOPIC.into(),
            sandbox: false,
        },
    )
    .await
    .expect("register apns");
    push.register_device(
        &app,
        &ann,
        &DeviceId::new("pixel"),
        PushRegistration {
            provider: PushProvider::Fcm,
            token: "fcm-token-ann".into(),
            topic: String::new(),
            sandbox: false,
        },
    )
    .await
    .expect("register fcm");
    let refused = push
        .register_device(
            &app,
            &ann,
            &DeviceId::new("bad"),
            PushRegistration {
                provider: PushProvider::Apns,
                token: "not-hex".into(),
                topic: TOPIC.into(),
                sandbox: false,
            },
        )
        .await;
    assert!(refused.is_err(), "malformed APNs token refused");

    deliver(&gw, "ann", "hello", Some("conv-1")).await;
    deliver(&gw, "ann", "again", Some("conv-1")).await;
    reached("apns", apns.answered(2)).await;
    reached("fcm", fcm.answered(2)).await;
    assert_eq!(submitted(&push).await, 4, "one push per message and device");
    assert_eq!((apns.requests().len(), fcm.requests().len()), (2, 2));
    for (i, r) in fcm.requests().iter().enumerate() {
        let m = &r.message;
        assert_eq!(m["token"], "fcm-token-ann");
        assert_eq!(m["notification"]["title"], "Bob");
        assert_eq!(m["data"]["badge"], (i + 1).to_string(), "{m}");
        assert_eq!(m["android"]["collapse_key"], "conv-1");
        let ttl: u64 = m["android"]["ttl"]
            .as_str()
            .and_then(|t| t.strip_suffix('s'))
            .and_then(|t| t.parse().ok())
            .expect("ttl");
        assert!((590..=600).contains(&ttl), "remaining TTL of 600 s: {ttl}");
    }
    for r in apns.requests() {
        assert_eq!(header(&r, "apns-collapse-id"), "conv-1");
    }
    gw.shutdown().await;
    push.shutdown().await;
}

#[tokio::test]
async fn silent_socket_is_pushed_after_the_ack_timeout_and_acks_reset_the_badge() {
    let f = fixture().await;
    let ann = UserId::new("ann");
    let mut phone = login(&f.gw, "tok-ann").await;
    register(&mut phone, PushProvider::Apns, &apns_token(2)).await;

    // The socket stays open but the client neither reads nor acks: three messages of one
    // conversation make one collapsed push after the ack time-out.
    for b in ["a", "b", "c"] {
        deliver(&f.gw, "ann", b, Some("conv-9")).await;
    }
    reached("ack-timeout push", f.apns.answered(1)).await;
    // No duplicate of it can come later unnoticed: the push for "d" below must be the next
    // request.
    let requests = f.apns.requests();
    assert_eq!(requests.len(), 1, "one collapsed push");
    assert_eq!(header(&requests[0], "apns-collapse-id"), "conv-9");
    let b = body(&requests[0]);
    assert_eq!(b["aps"]["badge"], 3);
    assert_eq!(b["aps"]["alert"]["body"], "c", "the newest message shows");
    assert_eq!(f.push.badge(&ann).await.expect("badge"), 3);

    // The client comes back to life and acks everything: the badge resets.
    let mut last = 0;
    while last < 3 {
        if let Kind::Deliver(d) = recv(&mut phone).await {
            last = d.seq;
        }
    }
    phone.send(&Ack { seq: last }.into()).await.expect("ack");
    // The Pong comes after the session handled the ack and told the push service, whose
    // commands run in order: the badge query sees the ack.
    phone.send(&Ping::default().into()).await.expect("ping");
    while !matches!(recv(&mut phone).await, Kind::Pong(_)) {}
    assert_eq!(
        f.push.badge(&ann).await.expect("badge"),
        0,
        "acks reset the badge"
    );

    // Silent again: the next push carries badge 1.
    deliver(&f.gw, "ann", "d", None).await;
    reached("second push", f.apns.answered(2)).await;
    let requests = f.apns.requests();
    let second = body(&requests[1]);
    assert_eq!(
        second["aps"]["alert"]["body"], "d",
        "no duplicate of the first push"
    );
    assert_eq!(second["aps"]["badge"], 1);
    drop(phone);
    f.stop().await;
}

#[tokio::test]
async fn a_silent_tablet_lets_the_sessionless_phone_be_pushed_an_acking_one_keeps_it_quiet() {
    let f = fixture().await;
    // The phone registers its token and goes away: it has no session.
    let mut phone = login(&f.gw, "tok-ann").await;
    register(&mut phone, PushProvider::Apns, &apns_token(7)).await;
    drop(phone);
    until_ended(&f.backend, &f.gw).await;
    // The tablet (no push token) is attached and takes the first message.
    let mut pad = connect(&f.gw).await;
    pad.send(&hello_frame("tok-ann", "pad", None))
        .await
        .expect("hello");
    assert!(matches!(recv(&mut pad).await, Kind::Welcome(_)));
    deliver(&f.gw, "ann", "one", None).await;
    let seq = loop {
        if let Kind::Deliver(d) = recv(&mut pad).await {
            break d.seq;
        }
    };
    pad.send(&Ack { seq }.into()).await.expect("ack");
    // The second message the tablet neither reads nor acknowledges: after its ack time-out
    // the phone, which has no session, is pushed. Pushes arrive in order, so a push of the
    // acknowledged first message would have come first.
    deliver(&f.gw, "ann", "two", None).await;
    reached("phone pushed", f.apns.answered(1)).await;
    let r = &f.apns.requests()[0];
    assert_eq!(r.device_token, apns_token(7));
    assert_eq!(
        body(r)["aps"]["alert"]["body"],
        "two",
        "the acknowledged one stays quiet"
    );
    assert_eq!(body(r)["aps"]["badge"], 1);
    drop(pad);
    f.stop().await;
}

#[tokio::test]
async fn unregistered_token_push_prunes_it_and_tells_the_backend() {
    let f = fixture().await;
    let ann = UserId::new("ann");
    let mut phone = login(&f.gw, "tok-ann").await;
    register(&mut phone, PushProvider::Apns, &apns_token(3)).await;
    drop(phone);
    until_ended(&f.backend, &f.gw).await;
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        + 60_000;
    f.apns.script(
        &apns_token(3),
        [ApnsReply::Unregistered {
            timestamp_ms: later,
        }],
    );
    deliver(&f.gw, "ann", "anyone?", None).await;
    f.backend
        .until("backend told", || {
            !f.backend.invalid.lock().expect("lock").is_empty()
        })
        .await;
    let notice = f.backend.invalid.lock().expect("lock")[0].clone();
    assert_eq!(
        notice,
        (
            "ann".to_owned(),
            "phone".to_owned(),
            apns_token(3),
            "Unregistered".to_owned()
        )
    );
    assert!(
        f.push.devices(&ann).await.expect("devices").is_empty(),
        "pruned"
    );
    // Nothing more goes to the dead token.
    deliver(&f.gw, "ann", "still?", None).await;
    assert_eq!(
        submitted(&f.push).await,
        1,
        "the second message is not pushed"
    );
    let app = AppId::new(APP);
    assert_eq!(f.push.metrics().event_count(&app, "no_device"), 1);
    assert_eq!(f.apns.requests().len(), 1);
    f.stop().await;
}

#[tokio::test]
async fn pushes_queued_while_apns_is_down_are_sent_after_a_restart() {
    let dir = std::env::temp_dir().join(format!(
        "imgate-push-e2e-{}-{}",
        std::process::id(),
        rand_u64()
    ));
    let key = ApnsTestKey::generate().expect("key");
    let pki = Arc::new(TestPki::generate().expect("pki"));
    let (app, ann) = (AppId::new(APP), UserId::new("ann"));

    // Run 1: APNs is down. Registrations and pushes are accepted and wait on disk.
    let down = MockApns::start_with_pki(MockApnsConfig::token(&key), Arc::clone(&pki))
        .await
        .expect("mock");
    let (url, ca, port) = (down.url(), down.ca_pem(), port_of(&down.url()));
    down.shutdown();
    {
        let metrics = PushServiceMetrics::new(&mut Registry::default());
        let backend = Arc::new(TestBackend::default());
        let push = PushService::builder(app.clone())
            .apns(apns_settings(&url, &ca, &key))
            .data_dir(&dir)
            .expect("data dir")
            .backend(backend.clone())
            .limits(limits())
            .start(&metrics)
            .expect("push service");
        let gw = gateway(&push, backend.clone()).await;
        let mut phone = login(&gw, "tok-ann").await;
        register(&mut phone, PushProvider::Apns, &apns_token(5)).await;
        drop(phone);
        until_ended(&backend, &gw).await;
        for b in ["1", "2", "3"] {
            deliver(&gw, "ann", b, None).await;
        }
        // Queued and durable before the stop, as a drain would make them.
        assert_eq!(submitted(&push).await, 3, "queued");
        gw.shutdown().await;
        push.shutdown().await;
    }

    // Run 2: same files, APNs back on the same address.
    let up = MockApns::start_on(MockApnsConfig::token(&key), pki, port)
        .await
        .expect("mock again");
    let metrics = PushServiceMetrics::new(&mut Registry::default());
    let backend = Arc::new(TestBackend::default());
    let push = PushService::builder(app.clone())
        .apns(apns_settings(&up.url(), &up.ca_pem(), &key))
        .data_dir(&dir)
        .expect("data dir")
        .backend(backend)
        .limits(limits())
        .start(&metrics)
        .expect("push service");
    reached("sent after restart", up.answered(3)).await;
    let devices = push.devices(&ann).await.expect("devices");
    assert_eq!(devices.len(), 1, "the registration survived the restart");
    assert_eq!(devices[0].registration.token, apns_token(5));
    // Stopped, the service sends nothing more; an empty queue means nothing was left to send.
    push.shutdown().await;
    let queue = imgate_push::RedbQueue::open(dir.join("push-queue.redb")).expect("queue");
    assert_eq!(
        imgate_push::PushQueue::len(&queue).expect("len"),
        0,
        "all sent"
    );
    let mut badges: Vec<u64> = up
        .requests()
        .iter()
        .map(|r| body(r)["aps"]["badge"].as_u64().expect("badge"))
        .collect();
    badges.sort_unstable();
    assert_eq!(badges, [1, 2, 3], "each queued push sent once");
    drop(queue);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_thousand_message_burst_to_a_half_dead_device_is_pushed_within_ack_timeout_plus_1s() {
    const N: usize = 1000;
    let ack_timeout = Duration::from_secs(2);
    // On disk (the target dir), not tmpfs: the queue's fsyncs are part of the figure.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "imgate-burst-{}-{}",
        std::process::id(),
        rand_u64()
    ));
    // FCM's mock checks a bearer token; the APNs one verifies an ES256 signature per
    // request, which in a debug build would be most of the figure.
    let fcm = MockFcm::start(MockFcmConfig::new(PROJECT, rsa_key()))
        .await
        .expect("fcm mock");
    let mut fcm_config = FcmConfig::new(rsa_key().service_account(PROJECT, &fcm.token_uri()));
    fcm_config.base_url(fcm.url());
    let metrics = PushServiceMetrics::new(&mut Registry::default());
    let backend = Arc::new(TestBackend::default());
    let push = PushService::builder(AppId::new(APP))
        .fcm(fcm_config)
        .data_dir(&dir)
        .expect("data dir")
        .backend(backend.clone())
        .limits(limits())
        .start(&metrics)
        .expect("push service");
    let mut tokens = StaticTokens::new();
    tokens.insert("tok-ann", UserId::new("ann"));
    let gw = start_app(App {
        authenticator: Arc::new(tokens),
        push: Arc::new(push.clone()),
        ..support::app(
            backend,
            SessionConfig {
                ack_timeout,
                ..SessionConfig::default()
            },
        )
    })
    .await;
    let mut phone = login(&gw, "tok-ann").await;
    register(&mut phone, PushProvider::Fcm, "burst-token").await;
    // Half-dead from here on: the connection stays open, nothing is read or acknowledged.
    for n in 0..N {
        deliver(&gw, "ann", &format!("m{n}"), None).await;
    }
    let delivered = tokio::time::Instant::now();
    let budget = ack_timeout + Duration::from_secs(1);
    let mut first = None;
    let all = tokio::time::timeout(budget + Duration::from_secs(10), async {
        fcm.answered(1).await;
        first = Some(delivered.elapsed());
        fcm.answered(N as u64).await;
    })
    .await;
    let took = delivered.elapsed();
    assert!(all.is_ok(), "{} of {N} pushed", fcm.requests().len());
    eprintln!(
        "{N} pushes, the first {first:?} and the last {took:?} after delivery (ack time-out {ack_timeout:?})"
    );
    assert!(took <= budget, "the last push came {took:?} after delivery");
    let mut bodies: Vec<String> = fcm
        .requests()
        .iter()
        .map(|r| {
            r.message["notification"]["body"]
                .as_str()
                .expect("body")
                .to_owned()
        })
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), N, "every message pushed once");
    drop(phone);
    gw.shutdown().await;
    push.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

/// A relay whose notices are never handed over (`flush_notices` never resolves).
#[derive(Debug, Default)]
struct StuckNotices(RelayBackend);

#[async_trait]
impl Backend for StuckNotices {
    async fn on_upstream(
        &self,
        gateway: &GatewayHandle,
        origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome {
        self.0.on_upstream(gateway, origin, request).await
    }

    async fn flush_notices(&self) {
        std::future::pending::<()>().await
    }
}

#[tokio::test]
async fn committed_waits_for_the_push_queue_only_and_holds_up_no_later_push() {
    let key = ApnsTestKey::generate().expect("key");
    let apns = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let dir = std::env::temp_dir().join(format!("imgate-committed-{}", rand_u64()));
    let metrics = PushServiceMetrics::new(&mut Registry::default());
    let push = PushService::builder(AppId::new(APP))
        .apns(apns_settings(&apns.url(), &apns.ca_pem(), &key))
        .data_dir(&dir)
        .expect("data dir")
        .backend(Arc::new(StuckNotices::default()))
        .limits(limits())
        .start(&metrics)
        .expect("push service");
    let (app, ann) = (AppId::new(APP), UserId::new("ann"));
    push.register_device(
        &app,
        &ann,
        &DeviceId::new("phone"),
        PushRegistration {
            provider: PushProvider::Apns,
            token: apns_token(4),
            topic: TOPIC.into(),
            sandbox: false,
        },
    )
    .await
    .expect("register");
    let options = PushOptions {
        alert: Some(PushAlert {
            title: "Bob".into(),
            body: "hi".into(),
        }),
        ..PushOptions::default()
    };
    let trigger = imgate::offline::PushTrigger::NoSession;
    for id in [1, 2] {
        let id = imgate::ids::MessageId(id);
        push.on_message(&app, id, &options);
        push.push(&app, &ann, None, &[id], trigger);
        // A session end's hand-off waits for this before the session leaves the store: it
        // must not wait for the backend's notices (which `flush` does), nor stop the push
        // after it.
        reached("committed", push.committed()).await;
    }
    reached("both pushed", apns.answered(2)).await;
    // Read from the metrics: `submitted` (the helper) flushes, which would wait forever.
    assert_eq!(push.metrics().event_count(&app, "submitted"), 2);
    push.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
