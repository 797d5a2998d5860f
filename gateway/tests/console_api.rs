//! The admin listener's console and demo routes: the static pages load without the admin
//! token and the JSON behind them does not; the user view shows sessions, unacknowledged
//! counts, push devices and the badge; the push queue and the recent undelivered messages;
//! the demo page's token endpoint exists only when it is on, and only on loopback.

mod support;

use std::sync::Arc;
use std::time::Duration;

use imgate::admin::{AdminConfig, AdminError, AdminServer, DemoConfig};
use imgate::backend::RelayBackend;
use imgate::ids::{AppId, DeviceId, UserId};
use imgate::offline::PushRegistration;
use imgate::push_policy::{ApnsEnvironment, ApnsSettings, PushService, PushServiceMetrics};
use imgate::session::SessionConfig;
use imgate_codec::{GoAwayReason, Kind, PushProvider};
use imgate_push::ApnsConfig;
use imgate_push::mock::{ApnsReply, ApnsTestKey, MockApns, MockApnsConfig};
use prometheus_client::registry::Registry;
use serde_json::Value;
use support::{RecordingRelay, app, http, http_with_token, login, loopback, raw, recv, start_app};

const TOKEN: &str = "console-secret";

async fn admin(gw: &imgate::RunningGateway, demo: Option<DemoConfig>) -> AdminServer {
    AdminServer::start(
        AdminConfig {
            bind: loopback(),
            token: Some(TOKEN.into()),
            demo,
        },
        gw.handle().clone(),
        Registry::default(),
    )
    .await
    .expect("admin")
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = http_with_token(addr, "GET", path, "", Some(TOKEN)).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Status, headers (lower-cased) and body of a GET without a token.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let response = raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (head, body) = response.split_once("\r\n\r\n").expect("head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_console_page_loads_without_the_token_and_its_data_needs_it() {
    let gw = start_app(app(
        Arc::new(RelayBackend::default()),
        SessionConfig::default(),
    ))
    .await;
    let admin = admin(&gw, None).await;
    let addr = admin.local_addr();

    let (status, head, body) = fetch(addr, "/console/").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(body.contains("/console/console.js"), "{body}");
    for file in ["/console/console.js", "/console/console.css"] {
        let (status, _, body) = fetch(addr, file).await;
        assert_eq!(status, 200, "{file}");
        assert!(!body.is_empty(), "{file}");
    }
    assert_eq!(fetch(addr, "/console/missing.js").await.0, 404);
    // The root leads to the console when the demo is off.
    let (status, head, _) = fetch(addr, "/").await;
    assert_eq!(status, 303);
    assert!(head.contains("location: /console/"), "{head}");

    for path in [
        "/v1/apps",
        "/v1/users/chat/alice",
        "/v1/push/chat/queue",
        "/v1/undelivered",
        "/metrics",
    ] {
        assert_eq!(http(addr, "GET", path, "").await.0, 401, "{path}");
    }
    assert_eq!(
        get(addr, "/v1/apps").await,
        serde_json::json!([{ "id": "chat" }])
    );
    // The demo is off: no page, no tokens.
    assert_eq!(fetch(addr, "/demo/").await.0, 404);
    let (status, _) = http(addr, "POST", "/demo/token", r#"{"user":"alice"}"#).await;
    assert_eq!(status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_user_view_counts_unacknowledged_messages_and_a_kick_lands_in_recent_undelivered() {
    let relay = RecordingRelay::default();
    let gw = start_app(app(Arc::new(relay.clone()), SessionConfig::default())).await;
    let admin = admin(&gw, None).await;
    let addr = admin.local_addr();

    let view = get(addr, "/v1/users/chat/alice").await;
    assert_eq!(view["sessions"], serde_json::json!([]));
    assert_eq!(view["push"], Value::Null, "the app has no push");
    assert_eq!(
        get(addr, "/v1/push/chat/queue").await,
        serde_json::json!({ "configured": false })
    );
    assert_eq!(get(addr, "/v1/undelivered").await, serde_json::json!([]));
    let (status, _) = http_with_token(addr, "GET", "/v1/push/nope/queue", "", Some(TOKEN)).await;
    assert_eq!(status, 404);

    // Alice logs in and does not acknowledge two messages.
    let mut alice = login(&gw, "tok-alice").await;
    for text in ["one", "two"] {
        let body = format!(r#"{{"app":"chat","target":{{"user":"alice"}},"text":"{text}"}}"#);
        let (status, report) =
            http_with_token(addr, "POST", "/v1/deliver", &body, Some(TOKEN)).await;
        assert_eq!(status, 200, "{report}");
        assert!(matches!(recv(&mut alice).await, Kind::Deliver(_)));
    }
    let view = get(addr, "/v1/users/chat/alice").await;
    let sessions = view["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{view}");
    let session = &sessions[0];
    assert_eq!(session["device"], "phone");
    assert_eq!(session["attached"], true);
    assert_eq!(session["unacked"], 2);
    assert_eq!(session["last_seq"], 2);

    // Kicked with both unacknowledged: they go to the offline path, newest first in the ring.
    let id = session["id"].as_str().expect("id");
    let (status, _) = http_with_token(
        addr,
        "DELETE",
        &format!("/v1/sessions/{id}"),
        "",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 204);
    match recv(&mut alice).await {
        Kind::GoAway(g) => assert_eq!(g.reason(), GoAwayReason::Kicked),
        other => panic!("expected GoAway, got {other:?}"),
    }
    // The backend hears of them after the ring has them.
    let mut reported = relay.reported.subscribe();
    tokio::time::timeout(Duration::from_secs(5), reported.wait_for(|n| *n >= 2))
        .await
        .expect("reported in time")
        .expect("watch");
    let recent = get(addr, "/v1/undelivered").await;
    let recent = recent.as_array().expect("list");
    assert_eq!(recent.len(), 2, "{recent:?}");
    for record in recent {
        assert_eq!(record["app"], "chat");
        assert_eq!(record["user"], "alice");
        assert_eq!(record["device"], "phone");
        assert_eq!(record["reason"], "session_ended");
        assert!(record["at_ms"].as_u64().is_some_and(|t| t > 0));
    }
    assert!(
        recent[0]["message_id"].as_u64() > recent[1]["message_id"].as_u64(),
        "newest first: {recent:?}"
    );

    // A message for nobody is recorded too.
    let (status, _) = http_with_token(
        addr,
        "POST",
        "/v1/deliver",
        r#"{"app":"chat","target":{"user":"carol"},"text":"hi"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    let recent = get(addr, "/v1/undelivered").await;
    assert_eq!(recent[0]["user"], "carol");
    assert_eq!(recent[0]["reason"], "no_session");
    assert_eq!(recent[0]["device"], Value::Null);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_push_queue_and_the_user_view_show_a_push_in_flight_and_the_badge() {
    const TOPIC: &str = "com.example.chat";
    let key = ApnsTestKey::generate().expect("key");
    let mock = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let device_token = format!("{:064x}", 0xabcdef_u64);
    // The provider never answers: the push stays queued, in flight.
    mock.script(&device_token, [ApnsReply::NoAnswer]);
    let mut config =
        ApnsConfig::token(key.key_pem.clone(), key.key_id.clone(), key.team_id.clone());
    config.base_url(mock.url()).trust_pem(mock.ca_pem());
    let push = PushService::builder(AppId::new("chat"))
        .apns(ApnsSettings {
            config,
            topic: TOPIC.into(),
            environment: ApnsEnvironment::Custom,
        })
        .start(&PushServiceMetrics::new(&mut Registry::default()))
        .expect("push service");
    push.register_device(
        &AppId::new("chat"),
        &UserId::new("bob"),
        &DeviceId::new("iphone"),
        PushRegistration {
            provider: PushProvider::Apns,
            token: device_token.clone(),
            topic: TOPIC.into(),
            sandbox: false,
        },
    )
    .await
    .expect("register");
    let mut chat = app(Arc::new(RelayBackend::default()), SessionConfig::default());
    chat.push = Arc::new(push.clone());
    let gw = start_app(chat).await;
    let admin = admin(&gw, None).await;
    let addr = admin.local_addr();

    let body = r#"{"app":"chat","target":{"user":"bob"},"text":"wake up","push":{"title":"Alice","body":"wake up"}}"#;
    let (status, report) = http_with_token(addr, "POST", "/v1/deliver", body, Some(TOKEN)).await;
    assert_eq!(status, 200, "{report}");
    tokio::time::timeout(Duration::from_secs(10), mock.answered(1))
        .await
        .expect("the push reached the provider");

    let queue = get(addr, "/v1/push/chat/queue").await;
    assert_eq!(queue["configured"], true, "{queue}");
    assert_eq!(queue["pending"], 1, "{queue}");
    assert_eq!(queue["in_flight"], 1, "{queue}");
    let next = &queue["next"][0];
    assert_eq!(next["provider"], "apns");
    assert_eq!(next["kind"], "alert");
    assert_eq!(next["badge"], 1);
    assert_eq!(next["attempts"], 1);
    assert_eq!(next["sending"], true);
    // Only a prefix of the token is shown.
    assert_eq!(next["token"], format!("{}…", &device_token[..12]));
    let (_, limited) =
        http_with_token(addr, "GET", "/v1/push/chat/queue?limit=0", "", Some(TOKEN)).await;
    let limited: Value = serde_json::from_str(&limited).expect("json");
    assert_eq!(limited["next"], serde_json::json!([]));
    assert_eq!(limited["pending"], 1);

    let view = get(addr, "/v1/users/chat/bob").await;
    assert_eq!(view["push"]["badge"], 1, "{view}");
    let devices = view["push"]["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{view}");
    assert_eq!(devices[0]["device"], "iphone");
    assert_eq!(devices[0]["provider"], "apns");
    assert_eq!(devices[0]["topic"], TOPIC);
    assert_eq!(devices[0]["token"], format!("{}…", &device_token[..12]));
    // The provider goes away, so the send in flight fails now rather than at its time-out.
    mock.shutdown();
    gw.shutdown().await;
    push.shutdown().await;
}

fn demo() -> DemoConfig {
    DemoConfig {
        app: AppId::new("chat"),
        url: "ws://127.0.0.1:1/ws".into(),
        http_url: None,
        mint: Arc::new(|user: &UserId| Ok(format!("tok-{user}"))),
    }
}

#[tokio::test]
async fn the_demo_page_mints_tokens_for_plain_names_without_the_admin_token() {
    let gw = start_app(app(
        Arc::new(RelayBackend::default()),
        SessionConfig::default(),
    ))
    .await;
    let admin = admin(&gw, Some(demo())).await;
    let addr = admin.local_addr();

    let (status, head, body) = fetch(addr, "/demo/").await;
    assert_eq!(status, 200);
    assert!(head.contains("connect-src 'self' ws: wss:"), "{head}");
    assert!(body.contains("/demo/demo.js"), "{body}");
    let (status, _, bundle) = fetch(addr, "/demo/imgate-client.js").await;
    assert_eq!(status, 200);
    assert!(
        bundle.contains("var ImgateClient = class"),
        "the SDK bundle"
    );
    let (status, head, _) = fetch(addr, "/").await;
    assert_eq!(status, 303);
    assert!(head.contains("location: /demo/"), "{head}");

    let (status, config) = http(addr, "GET", "/demo/config", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&config).expect("json"),
        serde_json::json!({ "app": "chat", "url": "ws://127.0.0.1:1/ws", "http_url": null })
    );
    let (status, token) = http(addr, "POST", "/demo/token", r#"{"user":"alice"}"#).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(
        serde_json::from_str::<Value>(&token).expect("json")["token"],
        "tok-alice"
    );
    for body in [
        r#"{"user":""}"#,
        r#"{"user":"a b"}"#,
        r#"{"user":"x","extra":1}"#,
        "not json",
    ] {
        let (status, reply) = http(addr, "POST", "/demo/token", body).await;
        assert_eq!(status, 400, "{body}: {reply}");
    }
    let long = format!(r#"{{"user":"{}"}}"#, "a".repeat(65));
    assert_eq!(http(addr, "POST", "/demo/token", &long).await.0, 400);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_demo_page_is_refused_beyond_loopback() {
    let gw = start_app(app(
        Arc::new(RelayBackend::default()),
        SessionConfig::default(),
    ))
    .await;
    let error = AdminServer::start(
        AdminConfig {
            bind: "0.0.0.0:0".parse().expect("addr"),
            token: Some(TOKEN.into()),
            demo: Some(demo()),
        },
        gw.handle().clone(),
        Registry::default(),
    )
    .await
    .expect_err("refused");
    assert!(matches!(error, AdminError::DemoNotLoopback(_)), "{error}");
    gw.shutdown().await;
}
