//! The webhook backend against a local hyper server: signatures, receipts from the answer,
//! retries with back-off, no retry on 4xx, time-outs, and a full queue.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use imgate::RunningGateway;
use imgate::backend::Backend;
use imgate::backend::webhook::{self, WebhookBackend, WebhookConfig};
use imgate::deliver::{Delivery, DeliveryOptions, Target};
use imgate::ids::{AppId, DeviceId, UserId};
use imgate::session::SessionConfig;
use imgate_codec::{CloseCode, ReceiptStatus};
use serde_json::Value;
use sha2::Sha256;
use support::{app, login, receipt, start_app, text};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

const SECRET: &[u8] = b"test-secret-0123456789";

/// What the hook answers: status, body, and how long it waits first.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: &'static str,
    delay: Duration,
    /// Wait for this before answering (a stuck webhook).
    gate: Option<Arc<Notify>>,
}

fn reply(status: u16, body: &'static str) -> Reply {
    Reply {
        status,
        body,
        delay: Duration::ZERO,
        gate: None,
    }
}

/// One request the hook received.
#[derive(Debug)]
struct Seen {
    timestamp: String,
    signature: String,
    event_id: String,
    attempt: usize,
    body: Bytes,
    json: Value,
}

/// Decides the reply from the event and the attempt number (1-based, per event id).
type Script = Arc<dyn Fn(&Value, usize) -> Reply + std::marker::Send + Sync>;

struct Hook {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Hook {
    async fn start(script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, seen) = mpsc::unbounded_channel();
        let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (tx, script, attempts) = (tx.clone(), script.clone(), attempts.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (tx, script, attempts) = (tx.clone(), script.clone(), attempts.clone());
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let (timestamp, signature, event_id) = (
                                header(webhook::TIMESTAMP_HEADER),
                                header(webhook::SIGNATURE_HEADER),
                                header(webhook::EVENT_ID_HEADER),
                            );
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .expect("body")
                                .to_bytes();
                            let json: Value = serde_json::from_slice(&body).expect("json body");
                            let attempt = {
                                let mut attempts = attempts.lock().expect("lock");
                                let n = attempts.entry(event_id.clone()).or_insert(0);
                                *n += 1;
                                *n
                            };
                            let answer = script(&json, attempt);
                            let _ = tx.send(Seen {
                                timestamp,
                                signature,
                                event_id,
                                attempt,
                                body,
                                json,
                            });
                            if let Some(gate) = &answer.gate {
                                gate.notified().await;
                            }
                            // The scenario, not a synchronisation: a slow webhook.
                            tokio::time::sleep(answer.delay).await;
                            let mut response = Response::new(Full::new(Bytes::from_static(
                                answer.body.as_bytes(),
                            )));
                            *response.status_mut() =
                                StatusCode::from_u16(answer.status).expect("status");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next request whose event has `type` = `kind` (others are skipped).
    async fn next(&mut self, kind: &str) -> Seen {
        loop {
            let seen = tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
                .await
                .expect("timely webhook request")
                .expect("hook running");
            if seen.json["type"] == kind {
                return seen;
            }
        }
    }

    /// No further request of type `kind` within `wait`.
    async fn assert_no_more(&mut self, kind: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, self.seen.recv()).await {
            assert_ne!(seen.json["type"], kind, "unexpected retry: {seen:?}");
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(hook: &Hook) -> WebhookConfig {
    let mut config = WebhookConfig::new(hook.url(), SECRET);
    config.timeout = Duration::from_secs(2);
    config.backoff_base = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    config
}

async fn start(backend: WebhookBackend) -> RunningGateway {
    start_app(app(Arc::new(backend), SessionConfig::default())).await
}

fn verify(seen: &Seen) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
    mac.update(seen.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&seen.body);
    let hex = seen.signature.strip_prefix("v1=").expect("v1= signature");
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, expected, "signature of {seen:?}");
    let ts: u64 = seen.timestamp.parse().expect("numeric timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(now.abs_diff(ts) < 60, "fresh timestamp");
}

#[tokio::test]
async fn signed_message_reaches_the_webhook_and_its_answer_decides_the_receipt() {
    let mut hook = Hook::start(Arc::new(|event: &Value, _| {
        match event["payload"].as_str() {
            // base64("deliver me")
            Some("ZGVsaXZlciBtZQ==") => reply(200, r#"{"status":"delivered","message_id":"42"}"#),
            Some(_) => reply(200, r#"{"status":"rejected","reason":"no such chat"}"#),
            None => reply(204, ""),
        }
    }))
    .await;
    let gw = start(WebhookBackend::new(config(&hook)).expect("backend")).await;
    let mut alice = login(&gw, "tok-alice").await;
    let connect = hook.next("connect").await;
    verify(&connect);
    assert_eq!(connect.json["user"], "alice");
    assert_eq!(connect.json["device"], "phone");

    alice
        .send(&text(1, "bob", "deliver me"))
        .await
        .expect("send");
    let seen = hook.next("message").await;
    verify(&seen);
    assert_eq!(seen.json["v"], 1);
    assert_eq!(seen.json["app"], "chat");
    assert_eq!(seen.json["user"], "alice");
    assert_eq!(seen.json["target"]["kind"], "user");
    assert_eq!(seen.json["target"]["id"], "bob");
    assert_eq!(seen.json["id"].as_str(), Some(seen.event_id.as_str()));
    assert!(seen.json["session"].is_string() && seen.json["ts_ms"].is_u64());
    let r = receipt(&mut alice).await;
    assert_eq!(
        (r.msg_id, r.status(), r.message_id),
        (1, ReceiptStatus::Delivered, 42)
    );

    alice.send(&text(2, "bob", "other")).await.expect("send");
    let r = receipt(&mut alice).await;
    assert_eq!(r.status(), ReceiptStatus::Rejected);
    assert_eq!(r.reason_code, u32::from(CloseCode::BACKEND_REJECTED.0));
    assert_eq!(r.reason, "no such chat");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_event_id_until_it_succeeds() {
    let mut hook = Hook::start(Arc::new(|event: &Value, attempt| {
        if event["type"] == "message" && attempt < 3 {
            reply(503, "busy")
        } else {
            reply(200, r#"{"status":"accepted"}"#)
        }
    }))
    .await;
    let gw = start(WebhookBackend::new(config(&hook)).expect("backend")).await;
    let mut alice = login(&gw, "tok-alice").await;
    alice.send(&text(1, "bob", "hi")).await.expect("send");
    let first = hook.next("message").await;
    let second = hook.next("message").await;
    let third = hook.next("message").await;
    assert_eq!((first.attempt, second.attempt, third.attempt), (1, 2, 3));
    assert!(first.event_id == second.event_id && second.event_id == third.event_id);
    verify(&third);
    let r = receipt(&mut alice).await;
    assert_eq!(r.status(), ReceiptStatus::Accepted);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_rejects() {
    let mut hook = Hook::start(Arc::new(|event: &Value, _| {
        if event["type"] == "message" {
            reply(403, r#"{"reason":"muted"}"#)
        } else {
            reply(200, "")
        }
    }))
    .await;
    let gw = start(WebhookBackend::new(config(&hook)).expect("backend")).await;
    let mut alice = login(&gw, "tok-alice").await;
    alice.send(&text(1, "bob", "hi")).await.expect("send");
    let r = receipt(&mut alice).await;
    assert_eq!(r.status(), ReceiptStatus::Rejected);
    assert_eq!(r.reason_code, u32::from(CloseCode::BACKEND_REJECTED.0));
    assert_eq!(r.reason, "muted");
    assert_eq!(hook.next("message").await.attempt, 1);
    hook.assert_no_more("message", Duration::from_millis(200))
        .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn time_outs_are_retried_then_answer_backend_unavailable() {
    let mut hook = Hook::start(Arc::new(|event: &Value, _| {
        if event["type"] == "message" {
            Reply {
                delay: Duration::from_secs(5),
                ..reply(200, "")
            }
        } else {
            reply(200, "")
        }
    }))
    .await;
    let mut config = config(&hook);
    config.timeout = Duration::from_millis(150);
    config.max_retries = 2;
    let gw = start(WebhookBackend::new(config).expect("backend")).await;
    let mut alice = login(&gw, "tok-alice").await;
    let started = tokio::time::Instant::now();
    alice.send(&text(1, "bob", "hi")).await.expect("send");
    let r = receipt(&mut alice).await;
    assert_eq!(r.status(), ReceiptStatus::Rejected);
    assert_eq!(r.reason_code, u32::from(CloseCode::BACKEND_UNAVAILABLE.0));
    assert!(started.elapsed() >= Duration::from_millis(450));
    let attempts: Vec<usize> = [
        hook.next("message").await,
        hook.next("message").await,
        hook.next("message").await,
    ]
    .iter()
    .map(|s| s.attempt)
    .collect();
    assert_eq!(attempts, [1, 2, 3]);
    hook.assert_no_more("message", Duration::from_millis(100))
        .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_rejects_at_once_instead_of_growing() {
    let gate = Arc::new(Notify::new());
    let hook_gate = gate.clone();
    let mut hook = Hook::start(Arc::new(move |event: &Value, _| {
        if event["type"] == "message" {
            Reply {
                gate: Some(hook_gate.clone()),
                ..reply(200, "")
            }
        } else {
            reply(200, "")
        }
    }))
    .await;
    let mut config = config(&hook);
    config.queue_capacity = 1;
    config.session_events = false;
    let gw = start(WebhookBackend::new(config).expect("backend")).await;
    let mut alice = login(&gw, "tok-alice").await;
    let mut bob = login(&gw, "tok-bob").await;
    alice.send(&text(1, "bob", "slow")).await.expect("send");
    hook.next("message").await; // alice's request now holds the only queue slot

    let started = tokio::time::Instant::now();
    bob.send(&text(1, "alice", "hi")).await.expect("send");
    let r = receipt(&mut bob).await;
    assert_eq!(r.status(), ReceiptStatus::Rejected);
    assert_eq!(r.reason_code, u32::from(CloseCode::BACKEND_UNAVAILABLE.0));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "rejected fast"
    );

    gate.notify_one();
    let r = receipt(&mut alice).await;
    assert_eq!(r.status(), ReceiptStatus::Accepted);
    gw.shutdown().await;
}

/// Message `n`'s id as the `undelivered` event carries it.
fn undelivered_ids(seen: &Seen) -> Vec<String> {
    seen.json["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["message_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn every_undelivered_notice_reaches_a_slow_webhook_through_a_full_queue() {
    // Slow (5 ms an answer), and the first attempt of every third notice fails.
    let mut hook = Hook::start(Arc::new(|event: &Value, attempt| {
        let id: u64 = event["messages"][0]["message_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or(0);
        Reply {
            delay: Duration::from_millis(5),
            ..if attempt == 1 && id.is_multiple_of(3) {
                reply(503, "")
            } else {
                reply(200, "")
            }
        }
    }))
    .await;
    let mut config = config(&hook);
    config.session_events = false;
    config.notice_capacity = 8;
    config.notice_concurrency = 2;
    let backend = WebhookBackend::new(config).expect("backend");
    let metrics = backend.metrics().clone();
    let gw = start(backend.clone()).await;
    // 300 users with no session and no push token: the notice is all that is left of each.
    let mut sent = std::collections::HashSet::new();
    for n in 0..300 {
        let report = gw
            .handle()
            .deliver(
                &AppId::new("chat"),
                Delivery {
                    target: Target::User(UserId::new(format!("offline-{n}"))),
                    payload: Bytes::from_static(b"hello"),
                    options: DeliveryOptions::default(),
                },
            )
            .await
            .expect("deliver");
        sent.insert(report.message_id.0.to_string());
    }
    let mut taken = std::collections::HashSet::new();
    while taken.len() < sent.len() {
        let seen = hook.next("undelivered").await;
        let ids = undelivered_ids(&seen);
        let id: u64 = ids[0].parse().expect("id");
        if seen.attempt > 1 || !id.is_multiple_of(3) {
            taken.extend(ids);
        }
    }
    assert_eq!(
        taken, sent,
        "every undelivered message was reported, none twice-counted"
    );
    // The last answers are on their way back.
    backend.flush_notices().await;
    assert_eq!(metrics.notice_count("undelivered", "delivered"), 300);
    assert_eq!(metrics.notice_count("undelivered", "dropped"), 0);
    assert!(metrics.notice_count("undelivered", "retried") >= 100);
    assert_eq!(metrics.pending(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pruned_push_token_is_reported_to_the_webhook() {
    let mut hook = Hook::start(Arc::new(|_: &Value, _| reply(200, ""))).await;
    let backend = WebhookBackend::new(config(&hook)).expect("backend");
    backend
        .on_push_token_invalid(
            &AppId::new("chat"),
            &UserId::new("ann"),
            &DeviceId::new("phone"),
            "abcd",
            "Unregistered",
        )
        .await;
    backend.flush_notices().await;
    let seen = hook.next("push_token_invalid").await;
    verify(&seen);
    assert_eq!(seen.json["app"], "chat");
    assert_eq!(seen.json["user"], "ann");
    assert_eq!(seen.json["device"], "phone");
    assert_eq!(seen.json["token"], "abcd");
    assert_eq!(seen.json["reason"], "Unregistered");
    assert_eq!(
        backend
            .metrics()
            .notice_count("push_token_invalid", "delivered"),
        1
    );
}

#[tokio::test]
async fn an_undelivered_notice_is_done_only_once_the_webhook_took_it() {
    let gate = Arc::new(Notify::new());
    let hook_gate = gate.clone();
    let mut hook = Hook::start(Arc::new(move |_: &Value, attempt| {
        // The first attempt fails, the second waits for the gate: the notice is taken late.
        match attempt {
            1 => reply(503, ""),
            _ => Reply {
                gate: Some(hook_gate.clone()),
                ..reply(200, "")
            },
        }
    }))
    .await;
    let mut config = config(&hook);
    config.session_events = false;
    let backend = WebhookBackend::new(config).expect("backend");
    let gw = start(backend.clone()).await;
    let handle = gw.handle();
    let messages = [imgate::session::Undelivered {
        message_id: imgate::ids::MessageId(7),
        seq: 3,
    }];
    let (app, user) = (AppId::new("chat"), UserId::new("bob"));
    let mut notice = backend.on_undelivered(
        handle,
        &app,
        &user,
        &messages,
        imgate::session::UndeliveredReason::SessionEnded,
    );
    // The hand-off forgets a durable session's messages when this resolves: not while the
    // webhook has refused the notice, nor while it holds it unanswered.
    tokio::select! {
        _ = &mut notice => panic!("resolved before the webhook took the notice"),
        seen = async { hook.next("undelivered").await; hook.next("undelivered").await } => {
            assert_eq!(seen.attempt, 2, "{seen:?}");
        }
    }
    tokio::select! {
        biased;
        _ = &mut notice => panic!("resolved while the webhook holds the notice"),
        () = std::future::ready(()) => {}
    }
    gate.notify_one();
    tokio::time::timeout(Duration::from_secs(5), notice)
        .await
        .expect("resolved once taken");
    assert_eq!(
        backend.metrics().notice_count("undelivered", "delivered"),
        1
    );
    gw.shutdown().await;
}
