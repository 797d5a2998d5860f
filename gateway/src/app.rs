//! One application served by the gateway: its authenticator, backend and session settings.

use std::fmt;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::backend::Backend;
use crate::ids::AppId;
use crate::offline::PushPolicy;
use crate::session::SessionConfig;

/// An app: users, backend and credentials never cross from one app to another.
#[derive(Clone)]
pub struct App {
    /// The app's id, as clients name it in `Hello.app_id`.
    pub id: AppId,
    /// Verifies the app's client tokens.
    pub authenticator: Arc<dyn Authenticator>,
    /// Receives the app's upstream traffic.
    pub backend: Arc<dyn Backend>,
    /// Session limits and timers, shared by the app's sessions.
    pub session: Arc<SessionConfig>,
    /// Push policy for the app's offline devices (`NoPush` when push is not configured).
    pub push: Arc<dyn PushPolicy>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("session", &self.session)
            .field("push", &self.push)
            .finish_non_exhaustive()
    }
}
