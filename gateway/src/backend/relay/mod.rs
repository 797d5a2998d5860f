//! The in-process relay: users message each other by user id and talk in rooms. The default
//! backend, so a gateway with no configuration is a working IM relay.
//!
//! With an offline queue (`queue`), a message for a user who has no session at all is kept
//! and handed over at the user's next login (`flush`), besides being pushed.

mod flush;
mod queue;

use std::sync::{Arc, OnceLock};

use imgate_codec::{CloseCode, ReceiptStatus};

use super::{Backend, Origin, UpstreamOutcome, UpstreamRequest, async_trait};
use crate::GatewayHandle;
use crate::deliver::{Delivery, DeliveryOptions, DeviceOutcome, PushAlert, PushOptions, Target};
use crate::session::UpstreamTarget;

pub use queue::{
    Enqueued, NewMessage, OfflineLimits, OfflineQueue, OfflineQueueMetrics, QueueError,
    QueuedMessage, WallClock,
};

/// Relays direct and room messages between the app's users; accepts every room join.
/// `RelayBackend::default()` has no offline queue: a message for a user without a session is
/// only pushed (and its receipt says `Accepted`).
#[derive(Clone, Debug, Default)]
pub struct RelayBackend {
    offline: Option<Arc<flush::AppQueue>>,
}

impl RelayBackend {
    /// A relay that keeps messages for users without a session in `queue` (bounded by
    /// `limits`) and hands them over at the user's next login.
    pub fn with_offline_queue(queue: Arc<OfflineQueue>, limits: OfflineLimits) -> Self {
        Self {
            offline: Some(Arc::new(flush::AppQueue::new(queue, limits))),
        }
    }
}

#[async_trait]
impl Backend for RelayBackend {
    async fn on_connect(&self, gateway: &GatewayHandle, origin: &Origin) {
        if let Some(offline) = &self.offline {
            let identity = &origin.identity;
            offline.start(gateway, &identity.app, &identity.user, origin.session);
        }
    }

    async fn on_upstream(
        &self,
        gateway: &GatewayHandle,
        origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome {
        relay(gateway, self.offline.as_ref(), origin, request).await
    }
}

/// The alert body of every relayed message, allocated once: the alert is built per message
/// but only used when a recipient is offline.
static NEW_MESSAGE: OnceLock<Arc<str>> = OnceLock::new();

async fn relay(
    gateway: &GatewayHandle,
    offline: Option<&Arc<flush::AppQueue>>,
    origin: &Origin,
    request: UpstreamRequest,
) -> UpstreamOutcome {
    let app = &origin.identity.app;
    let user = &origin.identity.user;
    let (target, payload) = match request {
        UpstreamRequest::Message {
            to: UpstreamTarget::User(to),
            payload,
        } => (Target::User(to), payload),
        UpstreamRequest::Message {
            to: UpstreamTarget::Room(room),
            payload,
        } => (Target::Room(room), payload),
        UpstreamRequest::Message {
            to: UpstreamTarget::Backend,
            ..
        } => {
            return UpstreamOutcome::rejected(
                CloseCode::INVALID_TARGET,
                "the relay needs a user or room destination",
            );
        }
        UpstreamRequest::JoinRoom(room) => {
            gateway.join_room(app, &room, user.clone());
            return UpstreamOutcome::ok(ReceiptStatus::Accepted, None);
        }
        UpstreamRequest::LeaveRoom(room) => {
            gateway.leave_room(app, &room, user);
            return UpstreamOutcome::ok(ReceiptStatus::Accepted, None);
        }
    };
    let delivery = Delivery {
        target,
        payload,
        options: DeliveryOptions {
            from: Some(user.clone()),
            exclude_session: Some(origin.session),
            // Offline recipients get a visible alert; the app fetches the message on resume.
            push: Some(PushOptions {
                alert: Some(PushAlert {
                    title: user.to_shared(),
                    body: Arc::clone(NEW_MESSAGE.get_or_init(|| Arc::from("New message"))),
                }),
                ..PushOptions::default()
            }),
            ..DeliveryOptions::default()
        },
    };
    let queued_payload = delivery.payload.clone();
    // Not `deliver`: the sender's receipt is sent only once its de-duplication mark is
    // committed, a later commit than this delivery's, so waiting here would only make each
    // sender's messages queue for one fsync each instead of sharing group commits.
    let queued = if gateway.is_clustered() {
        // Other nodes answer only once the message is durable there: ask them (boxed, so
        // a single node's per-message future does not carry the cluster path's size).
        Box::pin(gateway.deliver(app, delivery)).await
    } else {
        gateway
            .deliver_queued(app, delivery)
            .map(|(report, pending)| {
                if let Some(pending) = pending {
                    pending.release_when_durable(gateway.metrics());
                }
                report
            })
    };
    let report = match queued {
        Ok(report) => report,
        Err(error) => return UpstreamOutcome::rejected(CloseCode::INTERNAL, error.to_string()),
    };
    let message_id = Some(report.message_id);
    // Delivered only when a connected device got it; stored when a detached session buffers
    // it for its resume or the offline queue committed it (§4 `Receipt`); otherwise it was
    // only handed to push: accepted.
    let reached =
        |wanted: fn(&DeviceOutcome) -> bool| report.devices.iter().any(|d| wanted(&d.outcome));
    if reached(|o| matches!(o, DeviceOutcome::Sent { .. })) {
        return UpstreamOutcome::ok(ReceiptStatus::Delivered, message_id);
    }
    let buffered = reached(|o| matches!(o, DeviceOutcome::Buffered { .. }));
    // Only a user with no session at all is queued: a session's own buffer and the push
    // path cover the others.
    let sessionless = report.devices.iter().find(|d| d.session.is_none());
    let (Some(offline), Some(recipient)) = (offline, sessionless) else {
        let status = if buffered {
            ReceiptStatus::StoredOffline
        } else {
            ReceiptStatus::Accepted
        };
        return UpstreamOutcome::ok(status, message_id);
    };
    let message = queue::NewMessage {
        from: Some(user.clone()),
        message_id: report.message_id,
        payload: queued_payload,
    };
    let queued = offline
        .queue
        .enqueue(app, &recipient.user, message, offline.limits)
        .await;
    match queued {
        Ok(queue::Enqueued::Stored) => {
            // The recipient may have logged in while it was being committed, after the
            // login's hand-over read the queue: hand over (again).
            if let Some(session) = gateway.user_sessions(app, &recipient.user).first() {
                offline.start(gateway, app, &recipient.user, session.id);
            }
            UpstreamOutcome::ok(ReceiptStatus::StoredOffline, message_id)
        }
        Ok(queue::Enqueued::Full) => UpstreamOutcome {
            status: ReceiptStatus::Accepted,
            message_id,
            reason_code: Some(CloseCode::OFFLINE_QUEUE_FULL),
            reason: "offline queue full".into(),
        },
        Err(error) => {
            tracing::warn!(%app, user = %recipient.user, %error, "offline queue write failed");
            UpstreamOutcome {
                status: ReceiptStatus::Accepted,
                message_id,
                reason_code: Some(CloseCode::INTERNAL),
                reason: "offline queue unavailable".into(),
            }
        }
    }
}
