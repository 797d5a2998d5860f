//! The in-process relay: users message each other by user id and talk in rooms. The default
//! backend, so a gateway with no configuration is a working IM relay.

use std::sync::{Arc, OnceLock};

use imgate_codec::{CloseCode, ReceiptStatus};

use super::{Backend, BoxFuture, Origin, UpstreamOutcome};
use crate::GatewayHandle;
use crate::deliver::{Delivery, DeliveryOptions, DeviceOutcome, PushAlert, PushOptions, Target};
use crate::session::{Upstream, UpstreamTarget};

/// Relays direct and room messages between the app's users; accepts every room join.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayBackend;

impl Backend for RelayBackend {
    fn on_upstream<'a>(
        &'a self,
        gateway: &'a GatewayHandle,
        origin: &'a Origin,
        request: Upstream,
    ) -> BoxFuture<'a, UpstreamOutcome> {
        Box::pin(relay(gateway, origin, request))
    }
}

/// The alert body of every relayed message, allocated once: the alert is built per message
/// but only used when a recipient is offline.
static NEW_MESSAGE: OnceLock<Arc<str>> = OnceLock::new();

async fn relay(gateway: &GatewayHandle, origin: &Origin, request: Upstream) -> UpstreamOutcome {
    let app = &origin.identity.app;
    let user = &origin.identity.user;
    let (target, payload) = match request {
        Upstream::Message {
            to: UpstreamTarget::User(to),
            payload,
        } => (Target::User(to), payload),
        Upstream::Message {
            to: UpstreamTarget::Room(room),
            payload,
        } => (Target::Room(room), payload),
        Upstream::Message {
            to: UpstreamTarget::Backend,
            ..
        } => {
            return UpstreamOutcome::rejected(
                CloseCode::INVALID_TARGET,
                "the relay needs a user or room destination",
            );
        }
        Upstream::JoinRoom(room) => {
            gateway.join_room(app, &room, user.clone());
            return UpstreamOutcome::ok(ReceiptStatus::Accepted, None);
        }
        Upstream::LeaveRoom(room) => {
            gateway.leave_room(app, &room, user);
            return UpstreamOutcome::ok(ReceiptStatus::Accepted, None);
        }
        Upstream::RegisterPush { .. } => {
            // The gateway's push policy handles registrations before they reach a backend.
            return UpstreamOutcome::rejected(
                CloseCode::BACKEND_REJECTED,
                "push registration is handled by the gateway",
            );
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
        },
    };
    // Not `deliver`: the sender's receipt is sent only once its de-duplication mark is
    // committed, a later commit than this delivery's, so waiting here would only make each
    // sender's messages queue for one fsync each instead of sharing group commits.
    match gateway.deliver_queued(app, delivery) {
        Ok((report, pending)) => {
            if let Some(pending) = pending {
                pending.release_when_durable(gateway.metrics());
            }
            // Delivered only when a connected device got it: one buffered for a detached
            // session's resume is stored, as for push (§4 `Receipt`).
            let reached = report
                .devices
                .iter()
                .any(|d| matches!(d.outcome, DeviceOutcome::Sent { .. }));
            let status = if reached {
                ReceiptStatus::Delivered
            } else {
                ReceiptStatus::StoredOffline
            };
            UpstreamOutcome::ok(status, Some(report.message_id))
        }
        Err(error) => UpstreamOutcome::rejected(CloseCode::INTERNAL, error.to_string()),
    }
}
