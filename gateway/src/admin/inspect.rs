//! The console's read-only views: apps, one user (sessions, push devices, badge), an app's
//! push queue, the recent undelivered messages. JSON, behind the admin token like the rest
//! of the API.

use hyper::StatusCode;

use super::AdminState;
use super::routes::{Reply, error, json};
use crate::ids::{AppId, UserId};
use crate::session::UndeliveredReason;

/// Pushes listed by `GET /v1/push/{app}/queue` unless `?limit=` says otherwise (at most
/// [`MAX_QUEUE_LIMIT`]).
const QUEUE_LIMIT: usize = 50;
const MAX_QUEUE_LIMIT: usize = 500;

/// Characters of a push token shown: enough to tell tokens apart, not enough to use one.
const TOKEN_PREFIX: usize = 12;

/// `GET /v1/apps`: `[{"id"}]`.
pub(super) fn apps(state: &AdminState) -> Reply {
    let apps: Vec<_> = state
        .gateway
        .apps()
        .iter()
        .map(|id| serde_json::json!({ "id": id.as_str() }))
        .collect();
    json(StatusCode::OK, &apps)
}

/// The sessions as `GET /v1/users/{app}/{user}/sessions` and the user view list them.
pub(super) fn sessions(state: &AdminState, app: &AppId, user: &UserId) -> Vec<serde_json::Value> {
    state
        .gateway
        .user_sessions(app, user)
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id.to_string(),
                "device": s.device.as_str(),
                "platform": platform(s.platform),
                "attached": s.attached,
                "unacked": s.unacked,
                "last_seq": s.last_seq,
            })
        })
        .collect()
}

/// `GET /v1/users/{app}/{user}/sessions`: this node's sessions of the user, or on a cluster
/// node every node's (each with its `node`; what a node that did not answer could not say is
/// `null`).
pub(super) async fn sessions_reply(state: &AdminState, app: &AppId, user: &UserId) -> Reply {
    #[cfg(feature = "cluster")]
    if state.gateway.is_clustered() {
        let here = sessions(state, app, user);
        return match state.gateway.locate(app, user).await {
            Ok(found) => {
                let body: Vec<_> = found
                    .iter()
                    .map(|s| {
                        let id = s.id.to_string();
                        let local = here.iter().find(|l| l["id"] == id.as_str());
                        serde_json::json!({
                            "id": id,
                            "device": s.device.as_str(),
                            "platform": local.map_or(serde_json::Value::Null, |l| l["platform"].clone()),
                            "attached": s.attached,
                            "unacked": s.unacked,
                            "last_seq": local.map_or(serde_json::Value::Null, |l| l["last_seq"].clone()),
                            "node": s.node,
                        })
                    })
                    .collect();
                json(StatusCode::OK, &body)
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    }
    let mut body = sessions(state, app, user);
    for session in &mut body {
        session["node"] = serde_json::Value::from("");
    }
    json(StatusCode::OK, &body)
}

/// `GET /v1/users/{app}/{user}`: sessions, and the push policy's devices and badge (`push`
/// is `null` for an app without push).
pub(super) async fn user(state: &AdminState, app: &AppId, user: &UserId) -> Reply {
    let Some(policy) = state.gateway.push_policy(app) else {
        return error(StatusCode::NOT_FOUND, &format!("unknown app {app}"));
    };
    let push = match policy.user_state(user).await {
        None => serde_json::Value::Null,
        Some(Err(message)) => serde_json::json!({ "error": message }),
        Some(Ok(push)) => {
            let devices: Vec<_> = push
                .devices
                .iter()
                .map(|d| {
                    let r = &d.registration;
                    serde_json::json!({
                        "device": d.device.as_str(),
                        "provider": r.platform.as_str(),
                        "token": token_prefix(&r.token),
                        "topic": r.topic,
                        "sandbox": r.sandbox,
                        "registered_at_ms": r.registered_at_ms,
                    })
                })
                .collect();
            serde_json::json!({ "badge": push.badge, "devices": devices })
        }
    };
    json(
        StatusCode::OK,
        &serde_json::json!({
            "app": app.as_str(),
            "user": user.as_str(),
            "sessions": sessions(state, app, user),
            "push": push,
        }),
    )
}

/// `GET /v1/push/{app}/queue[?limit=N]`: `{"pending", "in_flight", "next": […]}`, or
/// `{"configured": false}` for an app without push.
pub(super) async fn push_queue(state: &AdminState, app: &AppId, query: Option<&str>) -> Reply {
    let Some(policy) = state.gateway.push_policy(app) else {
        return error(StatusCode::NOT_FOUND, &format!("unknown app {app}"));
    };
    let limit = match query.and_then(|q| q.strip_prefix("limit=")) {
        None => QUEUE_LIMIT,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => n.min(MAX_QUEUE_LIMIT),
            Err(_) => return error(StatusCode::BAD_REQUEST, "limit is a number"),
        },
    };
    match policy.queue_state(limit).await {
        None => json(StatusCode::OK, &serde_json::json!({ "configured": false })),
        Some(Err(message)) => error(StatusCode::SERVICE_UNAVAILABLE, &message),
        Some(Ok(queue)) => {
            let next: Vec<_> = queue
                .next
                .iter()
                .map(|p| {
                    let r = &p.request;
                    serde_json::json!({
                        "id": p.id,
                        "provider": r.device.platform.as_str(),
                        "token": token_prefix(&r.device.token),
                        "kind": match r.kind {
                            imgate_push::PushKind::Alert { .. } => "alert",
                            imgate_push::PushKind::WakeUp => "wake_up",
                        },
                        "badge": r.badge,
                        "collapse_id": r.collapse_id,
                        "attempts": p.attempts,
                        "not_before_ms": p.not_before_ms,
                        "expires_at_ms": p.expires_at_ms,
                        "sending": p.sending,
                    })
                })
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "configured": true,
                    "pending": queue.pending,
                    "in_flight": queue.in_flight,
                    "next": next,
                }),
            )
        }
    }
}

/// `GET /v1/undelivered`: the recent undelivered messages, newest first.
pub(super) fn undelivered(state: &AdminState) -> Reply {
    let records: Vec<_> = state
        .gateway
        .recent_undelivered()
        .iter()
        .rev()
        .map(|r| {
            serde_json::json!({
                "at_ms": r.at_ms,
                "app": r.app.as_str(),
                "user": r.user.as_str(),
                "device": r.device.as_ref().map(|d| d.as_str()),
                "message_id": r.message_id.0,
                "reason": reason(r.reason),
            })
        })
        .collect();
    json(StatusCode::OK, &records)
}

fn reason(reason: UndeliveredReason) -> &'static str {
    match reason {
        UndeliveredReason::BufferOverflow => "buffer_overflow",
        UndeliveredReason::SessionEnded => "session_ended",
        UndeliveredReason::NoSession => "no_session",
        UndeliveredReason::TooLarge => "too_large",
    }
}

fn platform(platform: imgate_codec::Platform) -> &'static str {
    match platform {
        imgate_codec::Platform::Ios => "ios",
        imgate_codec::Platform::Android => "android",
        imgate_codec::Platform::Web => "web",
        imgate_codec::Platform::Desktop => "desktop",
        imgate_codec::Platform::Unspecified => "unspecified",
    }
}

/// The first [`TOKEN_PREFIX`] characters, and `…` if there were more.
fn token_prefix(token: &str) -> String {
    match token.char_indices().nth(TOKEN_PREFIX) {
        Some((end, _)) => format!("{}…", &token[..end]),
        None => token.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::token_prefix;

    #[test]
    fn tokens_are_cut_to_a_prefix() {
        assert_eq!(token_prefix("short"), "short");
        assert_eq!(token_prefix("abcdefghijkl"), "abcdefghijkl");
        assert_eq!(token_prefix("abcdefghijklmnop"), "abcdefghijkl…");
    }
}
