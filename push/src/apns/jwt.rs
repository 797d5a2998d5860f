//! The ES256 provider token, cached and re-minted on Apple's schedule.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::time::Instant;

use crate::{AuthError, UnixClock};

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

struct Minted {
    token: Arc<str>,
    at: Instant,
}

/// One cached JWT per (team, key).
///
/// Apple rejects tokens older than an hour (`ExpiredProviderToken`) and throttles re-minting
/// more often than every 20 minutes (`TooManyProviderTokenUpdates`), so the token is shared by
/// every request and replaced only when it ages past `refresh_after` or Apple rejects it.
pub(crate) struct JwtCache {
    key: EncodingKey,
    header: Header,
    team_id: String,
    clock: UnixClock,
    refresh_after: Duration,
    state: Mutex<Option<Minted>>,
    pub(crate) mints: Counter,
}

impl JwtCache {
    pub(crate) fn new(
        key_pem: &[u8],
        key_id: &str,
        team_id: &str,
        refresh_after: Duration,
        clock: UnixClock,
    ) -> Result<Self, AuthError> {
        let key = EncodingKey::from_ec_pem(key_pem)
            .map_err(|e| AuthError::Key(format!("APNs .p8 key: {e}")))?;
        // Apple's documented header is exactly {"alg","kid"}; leave `typ` out.
        let mut header = Header::new(Algorithm::ES256);
        header.typ = None;
        header.kid = Some(key_id.to_owned());
        Ok(Self {
            key,
            header,
            team_id: team_id.to_owned(),
            clock,
            refresh_after,
            state: Mutex::new(None),
            mints: Counter::default(),
        })
    }

    /// The current token, minting one if there is none or it is due.
    pub(crate) fn current(&self) -> Result<Arc<str>, AuthError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &*state {
            Some(m) if m.at.elapsed() < self.refresh_after => Ok(Arc::clone(&m.token)),
            _ => self.mint(&mut state),
        }
    }

    /// Replaces `rejected` after Apple answered `ExpiredProviderToken`. Concurrent requests
    /// rejected with the same token share one new token instead of each minting (and tripping
    /// `TooManyProviderTokenUpdates`).
    pub(crate) fn replace(&self, rejected: &Arc<str>) -> Result<Arc<str>, AuthError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &*state {
            Some(m) if !Arc::ptr_eq(&m.token, rejected) => Ok(Arc::clone(&m.token)),
            _ => self.mint(&mut state),
        }
    }

    fn mint(&self, state: &mut Option<Minted>) -> Result<Arc<str>, AuthError> {
        let claims = Claims {
            iss: &self.team_id,
            iat: self.clock.now_secs(),
        };
        let token: Arc<str> = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| AuthError::Key(format!("sign APNs JWT: {e}")))?
            .into();
        *state = Some(Minted {
            token: Arc::clone(&token),
            at: Instant::now(),
        });
        self.mints.inc();
        Ok(token)
    }
}
