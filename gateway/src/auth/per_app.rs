//! One authenticator per app, chosen by `Hello.app_id`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{AuthError, AuthFuture, AuthRequest, Authenticator};
use crate::ids::AppId;

/// Routes each request to the authenticator of the app it names; an app that is not
/// configured is refused with [`AuthError::UnknownApp`].
///
/// Keeping keys per app (rather than one key for all) is what makes multi-app isolation
/// hold even if one app's key leaks.
#[derive(Clone, Debug, Default)]
pub struct PerApp {
    apps: HashMap<AppId, Arc<dyn Authenticator>>,
}

impl PerApp {
    /// No apps: every request is refused with [`AuthError::UnknownApp`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `app`'s authenticator, returning the one it replaces.
    pub fn insert(
        &mut self,
        app: AppId,
        authenticator: Arc<dyn Authenticator>,
    ) -> Option<Arc<dyn Authenticator>> {
        self.apps.insert(app, authenticator)
    }

    /// `app`'s authenticator, if it is configured.
    pub fn get(&self, app: &AppId) -> Option<&Arc<dyn Authenticator>> {
        self.apps.get(app)
    }
}

impl Authenticator for PerApp {
    fn authenticate<'a>(&'a self, request: &'a AuthRequest) -> AuthFuture<'a> {
        match self.apps.get(&request.app) {
            Some(authenticator) => authenticator.authenticate(request),
            None => Box::pin(std::future::ready(Err(AuthError::UnknownApp))),
        }
    }
}
