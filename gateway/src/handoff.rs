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
//! | session end: resume window, takeover, kick, refused resume, logout, drain of an in-memory session | driver (`Undelivered`, `Ended`) | [`Handoff::session_ended`] |
//! | restart recovery: a stored session that cannot come back | `server::restore` | [`Handoff::session_ended`] |
//! | restart recovery: a restored message's push options | `server::restore` | [`Handoff::accepted`] |
//!
//! "Uncovered" messages stay buffered (the device may still take them; push wakes it);
//! "undelivered" ones will never reach the device over a session: they are pushed and the
//! backend is told (`Backend::on_undelivered`, whose notices are never dropped). A durable
//! session that ends leaves the store only after both (see [`Handoff::session_ended`]).

use std::sync::Arc;

use crate::app::App;
use crate::deliver::PushOptions;
use crate::handle::GatewayHandle;
use crate::ids::{DeviceId, MessageId, SessionId, UserId};
use crate::offline::PushTrigger;
use crate::recent::UndeliveredRecord;
use crate::session::{Identity, Undelivered, UndeliveredReason};
use crate::store::{Change, SessionStore};

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
        self.hand_over(user, device, messages, reason, None);
    }

    /// A session ended with `messages` unacknowledged: as [`Handoff::undelivered`], and for
    /// a durable app the session leaves the store only once the backend has taken the
    /// report and the pushes are in the push queue. A crash before that restores the
    /// session and reports its messages again (at least once), instead of forgetting
    /// messages nobody was told about.
    pub(crate) fn session_ended(
        &self,
        session: SessionId,
        user: UserId,
        device: Option<&DeviceId>,
        messages: Vec<Undelivered>,
        reason: UndeliveredReason,
    ) {
        let store = self.handle.shared.store_for(self.app);
        match store {
            Some(store) if !messages.is_empty() => {
                let forget = (Arc::clone(store), session);
                self.hand_over(user, device, messages, reason, Some(forget));
            }
            Some(store) => store.append(Change::Ended { session }),
            None => self.hand_over(user, device, messages, reason, None),
        }
    }

    fn hand_over(
        &self,
        user: UserId,
        device: Option<&DeviceId>,
        messages: Vec<Undelivered>,
        reason: UndeliveredReason,
        forget: Option<(Arc<dyn SessionStore>, SessionId)>,
    ) {
        if messages.is_empty() {
            return;
        }
        let ids: Vec<MessageId> = messages.iter().map(|m| m.message_id).collect();
        let at_ms = crate::handle::wall_ms();
        self.handle
            .shared
            .recent_undelivered
            .record(ids.iter().map(|&message_id| UndeliveredRecord {
                at_ms,
                app: self.app.id.clone(),
                user: user.clone(),
                device: device.cloned(),
                message_id,
                reason,
            }));
        let trigger = match reason {
            UndeliveredReason::NoSession => PushTrigger::NoSession,
            other => PushTrigger::SessionEnded(other),
        };
        self.app
            .push
            .push(&self.app.id, &user, device, &ids, trigger);
        let backend = self.app.backend.clone();
        let push = Arc::clone(&self.app.push);
        let app_id = self.app.id.clone();
        let handle = self.handle.clone();
        self.handle.spawn(async move {
            backend
                .on_undelivered(&handle, &app_id, &user, &messages, reason)
                .await;
            if let Some((store, session)) = forget {
                push.committed().await;
                store.append(Change::Ended { session });
            }
        });
    }

    /// The device acknowledged these messages (badges go down, pending pushes are moot).
    pub(crate) fn acked(&self, identity: &Identity, messages: &[MessageId]) {
        self.app.push.acked(identity, messages);
    }
}
