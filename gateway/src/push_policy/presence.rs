//! The gateway's registry as the push policy's [`Presence`]: which devices are attached.

use crate::handle::GatewayHandle;
use crate::ids::{AppId, DeviceId, UserId};
use crate::offline::Presence;

impl Presence for GatewayHandle {
    fn attached(&self, app: &AppId, user: &UserId) -> Vec<DeviceId> {
        self.user_sessions(app, user)
            .into_iter()
            .filter(|s| s.attached)
            .map(|s| s.device)
            .collect()
    }
}
