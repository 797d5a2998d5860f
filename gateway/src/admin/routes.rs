//! Admin request handlers.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::{AdminState, assets, inspect};
use crate::deliver::{Delivery, DeliveryOptions, DeviceOutcome, PushAlert, PushOptions, Target};
use crate::ids::{AppId, DeviceId, RoomId, SessionId, UserId};

/// Largest request body accepted (a message payload plus JSON overhead).
const MAX_BODY: usize = 2 * 1024 * 1024;

pub(super) type Reply = Response<Full<Bytes>>;

pub(super) async fn route(state: &AdminState, request: Request<Incoming>) -> Reply {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let demo = state.demo.as_ref();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => {
            if state.gateway.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !state.gateway.is_ready() {
                text(StatusCode::SERVICE_UNAVAILABLE, "cluster unreachable\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        // The pages load without the token (they hold no data; the console asks for it).
        (&Method::GET, [""]) => redirect(if demo.is_some() {
            "/demo/"
        } else {
            "/console/"
        }),
        (&Method::GET, ["console", file @ ..]) if file.len() <= 1 => {
            assets::console(file.first().copied().unwrap_or(""))
                .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "not found"))
        }
        (&Method::GET, ["demo", "config"]) => demo.map_or_else(demo_off, super::demo::config),
        (&Method::POST, ["demo", "token"]) => match demo {
            Some(demo) => super::demo::token(demo, request).await,
            None => demo_off(),
        },
        (&Method::GET, ["demo", file @ ..]) if file.len() <= 1 => match demo {
            Some(_) => assets::demo(file.first().copied().unwrap_or(""))
                .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "not found")),
            None => demo_off(),
        },
        _ if !authorized(state, &request) => {
            error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
        }
        (&Method::GET, ["metrics"]) => metrics(state),
        (&Method::POST, ["v1", "deliver"]) => deliver(state, request).await,
        (&Method::GET, ["v1", "apps"]) => inspect::apps(state),
        (&Method::GET, ["v1", "users", app, user]) => {
            inspect::user(state, &AppId::new(*app), &UserId::new(*user)).await
        }
        (&Method::GET, ["v1", "users", app, user, "sessions"]) => {
            inspect::sessions_reply(state, &AppId::new(*app), &UserId::new(*user)).await
        }
        (&Method::GET, ["v1", "push", app, "queue"]) => {
            inspect::push_queue(state, &AppId::new(*app), query.as_deref()).await
        }
        (&Method::GET, ["v1", "undelivered"]) => inspect::undelivered(state),
        (&Method::DELETE, ["v1", "sessions", id]) => match u64::from_str_radix(id, 16) {
            Ok(id) if state.gateway.kick(SessionId(id)) => text(StatusCode::NO_CONTENT, ""),
            Ok(_) => error(StatusCode::NOT_FOUND, "no such session"),
            Err(_) => error(StatusCode::BAD_REQUEST, "session ids are 16 hex digits"),
        },
        (method, path) => match allowed(path) {
            // A known path asked with the wrong method: say which one it takes.
            Some(allow) if method != allow => {
                let mut reply = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("this path takes {allow}"),
                );
                if let Ok(value) = header::HeaderValue::from_str(allow.as_str()) {
                    reply.headers_mut().insert(header::ALLOW, value);
                }
                reply
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

/// The method a known path takes.
fn allowed(path: &[&str]) -> Option<Method> {
    Some(match path {
        ["healthz"] | ["readyz"] | ["metrics"] => Method::GET,
        ["v1", "deliver"] | ["demo", "token"] => Method::POST,
        ["v1", "apps"] | ["v1", "undelivered"] | ["v1", "push", _, "queue"] => Method::GET,
        ["v1", "users", _, _] | ["v1", "users", _, _, "sessions"] => Method::GET,
        ["v1", "sessions", _] => Method::DELETE,
        [""] | ["console", ..] | ["demo", ..] => Method::GET,
        _ => return None,
    })
}

fn authorized(state: &AdminState, request: &Request<Incoming>) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn metrics(state: &AdminState) -> Reply {
    let metrics = state.gateway.metrics();
    metrics
        .sessions
        .set(i64::try_from(state.gateway.session_count()).unwrap_or(i64::MAX));
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &state.registry).is_err() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
    }
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    reply
}

/// `POST /v1/deliver` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverRequest {
    app: String,
    target: TargetJson,
    /// UTF-8 payload (use `payload_base64` for binary).
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    push: Option<PushJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum TargetJson {
    User(String),
    Device { user: String, device: String },
    Session(String),
    Room(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushJson {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    collapse_id: Option<String>,
    #[serde(default)]
    ttl_secs: u32,
}

#[derive(Debug, Serialize)]
struct DeviceJson {
    user: String,
    session: Option<String>,
    device: Option<String>,
    outcome: &'static str,
    seq: Option<u64>,
}

async fn deliver(state: &AdminState, request: Request<Incoming>) -> Reply {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or unreadable",
            );
        }
    };
    let parsed: DeliverRequest = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("invalid request: {e}"));
        }
    };
    let payload = match (parsed.text, parsed.payload_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(bytes) => Bytes::from(bytes),
            Err(_) => return error(StatusCode::BAD_REQUEST, "payload_base64 is not base64"),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of text, payload_base64",
            );
        }
    };
    let target = match parsed.target {
        TargetJson::User(user) => Target::User(UserId::new(user)),
        TargetJson::Device { user, device } => {
            Target::Device(UserId::new(user), DeviceId::new(device))
        }
        TargetJson::Room(room) => Target::Room(RoomId::new(room)),
        TargetJson::Session(id) => match u64::from_str_radix(&id, 16) {
            Ok(id) => Target::Session(SessionId(id)),
            Err(_) => return error(StatusCode::BAD_REQUEST, "session ids are 16 hex digits"),
        },
    };
    let push = parsed.push.map(|p| PushOptions {
        alert: match (p.title, p.body) {
            (None, None) => None,
            (title, body) => Some(PushAlert {
                title: title.unwrap_or_default().into(),
                body: body.unwrap_or_default().into(),
            }),
        },
        collapse_id: p.collapse_id,
        ttl_secs: p.ttl_secs,
        data: Vec::new(),
    });
    let delivery = Delivery {
        target,
        payload,
        options: DeliveryOptions {
            from: parsed.from.map(UserId::new),
            exclude_session: None,
            push,
            ..DeliveryOptions::default()
        },
    };
    match state
        .gateway
        .deliver(&AppId::new(parsed.app), delivery)
        .await
    {
        Ok(report) => {
            let devices: Vec<DeviceJson> = report
                .devices
                .iter()
                .map(|d| {
                    let (outcome, seq) = match d.outcome {
                        DeviceOutcome::Sent { seq } => ("sent", Some(seq)),
                        DeviceOutcome::Buffered { seq } => ("buffered", Some(seq)),
                        DeviceOutcome::Offline => ("offline", None),
                        _ => ("unreachable", None),
                    };
                    DeviceJson {
                        user: d.user.to_string(),
                        session: d.session.map(|s| s.to_string()),
                        device: d.device.as_ref().map(ToString::to_string),
                        outcome,
                        seq,
                    }
                })
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({ "message_id": report.message_id.0, "devices": devices }),
            )
        }
        Err(e @ crate::DeliverError::UnknownApp(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        // Delivered from memory but not durable: the caller should retry if it needs the
        // guarantee (the device may then see the message twice).
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn demo_off() -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "the demo page is off (on for `imgate serve` without --config, or [admin] demo = true)",
    )
}

/// `303 See Other` to `location`.
fn redirect(location: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SEE_OTHER;
    reply
        .headers_mut()
        .insert(header::LOCATION, header::HeaderValue::from_static(location));
    reply
}

fn text(status: StatusCode, body: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_owned())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

/// An error of the JSON API: `{"error": message}` (clients parse one format, not two).
pub(super) fn error(status: StatusCode, message: &str) -> Reply {
    json(status, &serde_json::json!({ "error": message }))
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut reply = Response::new(Full::new(Bytes::from(body)));
            *reply.status_mut() = status;
            reply.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            reply
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
    }
}
