//! The offline path's hook: what the gateway tells the push policy, and when.
//!
//! The gateway calls these from delivery and session drivers; implementations must not block
//! (queue work and return). `imgate::push_policy` implements it over `imgate-push`.

use std::fmt;
use std::sync::Arc;

use crate::deliver::PushOptions;
use crate::ids::{AppId, DeviceId, MessageId, UserId};
use crate::session::{Identity, UndeliveredReason};

/// Why the gateway asks for a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushTrigger {
    /// The user had no session (or its buffer was full, or it ended) when the message came.
    NoSession,
    /// A detached session outlived the push grace period with these messages pending, or a
    /// message arrived for a session already past it.
    DetachedGrace,
    /// Not acknowledged within the ack time-out by an attached client, transmitted or still
    /// waiting behind its socket (a half-dead socket).
    AckTimeout,
    /// The session ended with these messages unacknowledged, or could not take them (its
    /// buffer was full, or a message is larger than its client's frame limit).
    SessionEnded(UndeliveredReason),
}

/// A device-registration request from a client (`RegisterPush`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRegistration {
    /// Provider.
    pub provider: imgate_codec::PushProvider,
    /// Token.
    pub token: String,
    /// APNs topic.
    pub topic: String,
    /// APNs sandbox.
    pub sandbox: bool,
}

/// Which of a user's devices have a session with a connection attached right now: the
/// multi-device rule pushes the others. [`crate::GatewayHandle`] implements it.
pub trait Presence: Send + Sync + fmt::Debug + 'static {
    /// The devices of `user` whose session has a connection attached.
    fn attached(&self, app: &AppId, user: &UserId) -> Vec<DeviceId>;
}

/// The push policy's view of the gateway. Every method has a no-op default.
pub trait PushPolicy: Send + Sync + fmt::Debug + 'static {
    /// A message was accepted for delivery with these push options (remember them: later
    /// triggers only name the message id).
    fn on_message(&self, _app: &AppId, _message: MessageId, _options: &PushOptions) {}

    /// Push `messages` to `user`'s devices (or only to `device`, when known).
    fn push(
        &self,
        _app: &AppId,
        _user: &UserId,
        _device: Option<&DeviceId>,
        _messages: &[MessageId],
        _trigger: PushTrigger,
    ) {
    }

    /// The device acknowledged these messages: they need no push, and the user's badge drops
    /// by the unread ones among them.
    fn acked(&self, _identity: &Identity, _messages: &[MessageId]) {}

    /// The gateway tells the policy who is attached (once, at start), so a message that no
    /// device acknowledged in time also reaches the user's devices without a session.
    fn attach_presence(&self, _presence: Arc<dyn Presence>) {}

    /// Resolves once every push asked for so far is durable in the push queue (and the
    /// policy's own notices are handed over).
    fn flush(&self) -> crate::backend::BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Resolves once every push asked for so far is committed to the push queue, without
    /// waiting for anything else and without holding up later calls: a durable session's
    /// hand-off awaits it before the session leaves the store.
    fn committed(&self) -> crate::backend::BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The gateway is going away (the end of a drain): everything asked for so far is made
    /// durable as by [`PushPolicy::flush`], the sends in flight are finished so that no
    /// provider's answer is lost to the exit (a lost answer means a second push after the
    /// restart), and nothing more is sent. Defaults to [`PushPolicy::flush`].
    fn stop(&self) -> crate::backend::BoxFuture<'_, ()> {
        self.flush()
    }

    /// What the admin console shows of `user`: registered devices and the badge. `None`:
    /// this policy keeps neither (no push for the app).
    fn user_state<'a>(
        &'a self,
        _user: &'a UserId,
    ) -> crate::backend::BoxFuture<'a, Option<Result<PushUserState, String>>> {
        Box::pin(async { None })
    }

    /// The push queue as the admin console shows it, with its first `limit` pushes. `None`:
    /// this policy has no queue.
    fn queue_state(
        &self,
        _limit: usize,
    ) -> crate::backend::BoxFuture<'_, Option<Result<imgate_push::QueueSnapshot, String>>> {
        Box::pin(async { None })
    }

    /// A client registers its push token. Return an error message to reject it.
    fn register(
        &self,
        _identity: &Identity,
        _registration: PushRegistration,
    ) -> Result<(), String> {
        Err("push is not configured for this app".into())
    }
}

/// A user's push state ([`PushPolicy::user_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushUserState {
    /// Registered devices.
    pub devices: Vec<crate::push_policy::RegisteredDevice>,
    /// The unread badge: pushed messages none of the user's devices acknowledged.
    pub badge: u32,
}

/// The policy of apps without push: nothing is pushed; registrations are refused.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPush;

impl PushPolicy for NoPush {}
