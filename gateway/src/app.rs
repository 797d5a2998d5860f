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

impl App {
    /// An app served with the built-in relay backend, default session settings and no push;
    /// change them with the `with_` methods.
    ///
    /// ```
    /// use imgate::App;
    /// use imgate::auth::StaticTokens;
    /// use imgate::session::SessionConfig;
    /// use imgate::store::Durability;
    ///
    /// let mut tokens = StaticTokens::new();
    /// tokens.insert("tok-alice", "alice".into());
    /// let app = App::new("chat", tokens).with_session(SessionConfig {
    ///     durability: Durability::Memory,
    ///     ..SessionConfig::default()
    /// });
    /// assert_eq!(app.id.as_str(), "chat");
    /// ```
    pub fn new(id: &str, authenticator: impl Authenticator + 'static) -> Self {
        Self {
            id: AppId::new(id),
            authenticator: Arc::new(authenticator),
            backend: Arc::new(crate::backend::RelayBackend::default()),
            session: Arc::new(SessionConfig::default()),
            push: Arc::new(crate::offline::NoPush),
        }
    }

    /// The backend that receives the app's upstream traffic.
    pub fn with_backend(mut self, backend: impl Backend + 'static) -> Self {
        self.backend = Arc::new(backend);
        self
    }

    /// Session limits, timers and durability.
    pub fn with_session(mut self, session: SessionConfig) -> Self {
        self.session = Arc::new(session);
        self
    }

    /// The push policy for the app's offline devices.
    pub fn with_push(mut self, push: impl PushPolicy) -> Self {
        self.push = Arc::new(push);
        self
    }
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
