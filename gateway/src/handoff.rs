//! The offline hand-off: the one place where a message stops being only the connection's
//! business and the offline path (push, backend notices) takes part. Every trigger goes
//! through [`Handoff`]:
//!
//! | trigger | where it arises | call |
//! |---|---|---|
//! | a message with push options is accepted | `deliver` | [`Handoff::accepted`] |
//! | no session at all | `deliver` | [`Handoff::undelivered`] (`NoSession`) |
//! | outbox overflow | `deliver` | [`Handoff::undelivered`] (`BufferOverflow`) |
//! | larger than the client's `Hello.max_frame` | `deliver` | [`Handoff::undelivered`] (`TooLarge`) |
//! | detached past the push grace | driver (`PushGraceElapsed`), `deliver` (`Buffered{push}`) | [`Handoff::uncovered`] |
//! | no ack within the ack time-out | driver (`AckOverdue`) | [`Handoff::uncovered`] |
//! | the device acknowledged | driver (`Acked`) | [`Handoff::acked`] |
//! | session end: resume window, takeover, kick, refused resume, logout, drain of an in-memory session | driver (`Undelivered`) | [`Handoff::undelivered`] |
//! | restart recovery: a stored session that cannot come back | `server::restore` | [`Handoff::undelivered`] |
//! | restart recovery: a restored message's push options | `server::restore` | [`Handoff::accepted`] |
//!
//! "Uncovered" messages stay buffered (the device may still take them; push wakes it);
//! "undelivered" ones will never reach the device over a session: they are pushed and the
//! backend is told (`Backend::on_undelivered`, whose notices are never dropped).

use crate::app::App;
use crate::deliver::PushOptions;
use crate::handle::GatewayHandle;
use crate::ids::{DeviceId, MessageId, UserId};
use crate::offline::PushTrigger;
use crate::session::{Identity, Undelivered, UndeliveredReason};

/// The offline path of one app.
pub(crate) struct Handoff<'a> {
    handle: &'a GatewayHandle,
    app: &'a App,
}

impl<'a> Handoff<'a> {
    pub(crate) fn new(handle: &'a GatewayHandle, app: &'a App) -> Self {
        Self { handle, app }
    }

    /// A message was accepted with these push options (later triggers name only its id).
    pub(crate) fn accepted(&self, message: MessageId, options: &PushOptions) {
        self.app.push.on_message(&self.app.id, message, options);
    }

    /// Messages the device has not taken yet (ack time-out, detached past the push grace):
    /// push wakes it; they stay buffered for its resume.
    pub(crate) fn uncovered(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        messages: &[MessageId],
        trigger: PushTrigger,
    ) {
        if !messages.is_empty() {
            self.app
                .push
                .push(&self.app.id, user, device, messages, trigger);
        }
    }

    /// Messages that will never reach the device over a session: pushed, and reported to
    /// the backend (in a task of the gateway's, so a drain waits for the report).
    pub(crate) fn undelivered(
        &self,
        user: UserId,
        device: Option<&DeviceId>,
        messages: Vec<Undelivered>,
        reason: UndeliveredReason,
    ) {
        if messages.is_empty() {
            return;
        }
        let ids: Vec<MessageId> = messages.iter().map(|m| m.message_id).collect();
        let trigger = match reason {
            UndeliveredReason::NoSession => PushTrigger::NoSession,
            other => PushTrigger::SessionEnded(other),
        };
        self.app
            .push
            .push(&self.app.id, &user, device, &ids, trigger);
        let backend = self.app.backend.clone();
        let app_id = self.app.id.clone();
        let handle = self.handle.clone();
        self.handle.spawn(async move {
            backend
                .on_undelivered(&handle, &app_id, &user, &messages, reason)
                .await;
        });
    }

    /// The device acknowledged these messages (badges go down, pending pushes are moot).
    pub(crate) fn acked(&self, identity: &Identity, messages: &[MessageId]) {
        self.app.push.acked(identity, messages);
    }
}
