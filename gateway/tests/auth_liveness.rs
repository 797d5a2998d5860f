//! Over real sockets: JWT refusals by code, and a silent client closed by the heartbeat rule.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imgate::ServerConfig;
use imgate::auth::{JwtAuthenticator, JwtConfig, mint_dev_token};
use imgate::backend::RelayBackend;
use imgate::ids::{AppId, UserId};
use imgate::session::SessionConfig;
use imgate_codec::{CloseCode, Kind};
use support::*;

const SECRET: &[u8] = b"a-test-secret-that-is-at-least-32-bytes-long";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn refused_with(gw: &imgate::RunningGateway, token: &str) -> CloseCode {
    let mut conn = connect(gw).await;
    conn.send(&hello_frame(token, "phone", None))
        .await
        .expect("send");
    match recv(&mut conn).await {
        Kind::Error(e) => e.close_code(),
        other => panic!("expected Error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_expired_and_wrong_app_tokens_get_their_codes() {
    let mut app = app(Arc::new(RelayBackend::default()), SessionConfig::default());
    app.authenticator =
        Arc::new(JwtAuthenticator::new(JwtConfig::hs256(SECRET)).expect("jwt config"));
    let gw = builder(app, ServerConfig::default())
        .start()
        .await
        .expect("start");
    let chat = AppId::new("chat");
    let alice = UserId::new("alice");
    let valid = mint_dev_token(SECRET, &chat, &alice, Duration::from_secs(60), now_unix());
    let mut conn = connect(&gw).await;
    let welcome = hello(&mut conn, &valid, None).await;
    assert_eq!(welcome.user_id, "alice");

    let expired = mint_dev_token(
        SECRET,
        &chat,
        &alice,
        Duration::from_secs(60),
        now_unix() - 3600,
    );
    assert_eq!(refused_with(&gw, &expired).await, CloseCode::TOKEN_EXPIRED);
    let other_app = mint_dev_token(
        SECRET,
        &AppId::new("other"),
        &alice,
        Duration::from_secs(60),
        now_unix(),
    );
    assert_eq!(refused_with(&gw, &other_app).await, CloseCode::FORBIDDEN);
    let forged = mint_dev_token(
        b"another-secret-that-is-at-least-32-bytes!",
        &chat,
        &alice,
        Duration::from_secs(60),
        now_unix(),
    );
    assert_eq!(refused_with(&gw, &forged).await, CloseCode::UNAUTHENTICATED);
    assert_eq!(
        refused_with(&gw, "garbage").await,
        CloseCode::UNAUTHENTICATED
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn silent_client_is_closed_with_heartbeat_timeout() {
    let session = SessionConfig {
        heartbeat: Duration::from_millis(200),
        ..SessionConfig::default()
    };
    let gw = builder(
        app(Arc::new(RelayBackend::default()), session),
        ServerConfig::default(),
    )
    .start()
    .await
    .expect("start");
    let mut conn = connect(&gw).await;
    let welcome = hello(&mut conn, "tok-alice", None).await;
    assert_eq!(welcome.heartbeat_ms, 200);
    // Say nothing: after ~2.5 intervals (500 ms) the server closes with HEARTBEAT_TIMEOUT.
    let started = tokio::time::Instant::now();
    match recv(&mut conn).await {
        Kind::Error(e) => assert_eq!(e.close_code(), CloseCode::HEARTBEAT_TIMEOUT),
        other => panic!("expected Error, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "closed too early: {waited:?}"
    );
    // The session outlives the connection: the client can resume.
    let mut again = connect(&gw).await;
    let resumed = hello(&mut again, "tok-alice", Some(resume_of(&welcome, 0))).await;
    assert!(resumed.resumed);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_second_login_of_the_same_device_takes_over_the_first() {
    let gw = start().await;
    let mut first = connect(&gw).await;
    let old = hello(&mut first, "tok-alice", None).await;
    let mut second = connect(&gw).await;
    let new = hello(&mut second, "tok-alice", None).await;
    assert_ne!(old.session_id, new.session_id);
    match recv(&mut first).await {
        Kind::GoAway(g) => assert_eq!(g.reason(), imgate_codec::GoAwayReason::Takeover),
        other => panic!("expected GoAway, got {other:?}"),
    }
    // The kicked device auto-reconnecting with its old session must not evict the new login.
    let mut third = connect(&gw).await;
    third
        .send(&hello_frame("tok-alice", "phone", Some(resume_of(&old, 0))))
        .await
        .expect("send");
    match recv(&mut third).await {
        Kind::Error(e) => assert_eq!(e.close_code(), CloseCode::SESSION_TAKEN_OVER),
        other => panic!("expected Error, got {other:?}"),
    }
    let sessions = gw
        .handle()
        .user_sessions(&AppId::new("chat"), &UserId::new("alice"));
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id.0, new.session_id, "the newer login survives");
    assert!(sessions[0].attached);
    gw.shutdown().await;
}
