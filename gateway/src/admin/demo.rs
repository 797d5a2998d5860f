//! The demo chat page's server side (development only): where its clients connect, and a
//! login token for the user name typed into it. On for `imgate serve` without a config
//! (`[admin] demo` otherwise), on loopback only, since it lets anyone who reaches it log in
//! as anyone.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::routes::{Reply, error, json};
use crate::ids::{AppId, UserId};

/// Mints a login token for a user of the demo's app.
pub type MintToken = Arc<dyn Fn(&UserId) -> Result<String, String> + Send + Sync>;

/// What the demo page needs.
#[derive(Clone)]
pub struct DemoConfig {
    /// The app its users log in to.
    pub app: AppId,
    /// The WebSocket URL its clients connect to, e.g. `ws://127.0.0.1:7102/ws`.
    pub url: String,
    /// The HTTP fallback's URL they fall back to when WebSocket fails, e.g.
    /// `http://127.0.0.1:7105/imgate`.
    pub http_url: Option<String>,
    /// Login tokens for the names typed into the page.
    pub mint: MintToken,
}

impl std::fmt::Debug for DemoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The minter holds a secret: never printed.
        f.debug_struct("DemoConfig")
            .field("app", &self.app)
            .field("url", &self.url)
            .field("http_url", &self.http_url)
            .finish_non_exhaustive()
    }
}

/// Longest user name the page may ask a token for.
const MAX_USER: usize = 64;

/// `GET /demo/config`: `{"app", "url", "http_url"}` (`http_url` null without a fallback
/// listener).
pub(super) fn config(demo: &DemoConfig) -> Reply {
    json(
        StatusCode::OK,
        &serde_json::json!({ "app": demo.app.as_str(), "url": demo.url, "http_url": demo.http_url }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
}

/// `POST /demo/token` `{"user"}`: `{"token"}`.
pub(super) async fn token(demo: &DemoConfig, request: Request<Incoming>) -> Reply {
    let Ok(body) = Limited::new(request.into_body(), 1024).collect().await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large or unreadable",
        );
    };
    let parsed: TokenRequest = match serde_json::from_slice(&body.to_bytes()) {
        Ok(parsed) => parsed,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid request: {e}")),
    };
    let user = parsed.user;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if user.is_empty() || user.len() > MAX_USER || !user.chars().all(plain) {
        return error(
            StatusCode::BAD_REQUEST,
            "a demo user name is 1 to 64 letters, digits, '-', '_' or '.'",
        );
    }
    match (demo.mint)(&UserId::new(user)) {
        Ok(token) => json(StatusCode::OK, &serde_json::json!({ "token": token })),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}
