//! What a node answers on its request subjects (`ig.v1.node.<node>.<verb>`): deliveries to
//! its sessions, take-overs, releases of sessions resuming elsewhere, session lookups.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use imgate_codec::ResumeRefused;
use prost::Message as _;

use super::Cluster;
use super::names::node_wildcard;
use super::wire::{
    DeliverReply, DeliverRequest, DeviceRecord, OUTCOME_BUFFERED, OUTCOME_OFFLINE, OUTCOME_SENT,
    ReleaseReply, ReleaseRequest, SessionRecordInfo, SessionSnapshot, SessionsReply,
    SessionsRequest, TakeoverReply, TakeoverRequest,
};
use crate::deliver::{Delivery, DeliveryOptions, DeviceOutcome, Target};
use crate::handle::{GatewayHandle, Scope};
use crate::ids::{AppId, MessageId, SessionId, UserId};
use crate::registry::SessionCell;
use crate::store::record::{ReceiptRecord, SessionRecord};

/// Answers this node's requests until the subscription ends (the gateway stops it by
/// aborting the task once a drain no longer needs it: clients moving away still ask this
/// node to release their sessions while it drains).
pub(crate) async fn serve_node(handle: GatewayHandle, cluster: Arc<Cluster>) {
    let mut requests = match cluster
        .client
        .subscribe(node_wildcard(cluster.node()))
        .await
    {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::error!(%error, "cannot subscribe to this node's cluster requests");
            return;
        }
    };
    while let Some(message) = requests.next().await {
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let verb = message.subject.rsplit('.').next().unwrap_or_default();
        let answer = match verb {
            // The synchronous part (sequence numbers) runs here, in arrival order, so two
            // messages from one origin keep their order; the durability wait runs apart.
            "deliver" => match DeliverRequest::decode(message.payload) {
                Ok(request) => {
                    let client = cluster.client.clone();
                    let pending = deliver(&handle, request);
                    handle.spawn(async move {
                        let reply = pending.await;
                        let _ = client.publish(reply_to, reply.encode_to_vec().into()).await;
                    });
                    continue;
                }
                Err(_) => malformed(verb),
            },
            "takeover" => decode_then(message.payload, |r| takeover(&handle, &r)),
            "release" => decode_then(message.payload, |r| release(&handle, &r)),
            "sessions" => decode_then(message.payload, |r| sessions(&handle, &r)),
            _ => malformed(verb),
        };
        if let Some(answer) = answer {
            let _ = cluster.client.publish(reply_to, answer).await;
        }
    }
}

fn decode_then<Q: prost::Message + Default, A: prost::Message>(
    payload: Bytes,
    answer: impl FnOnce(Q) -> A,
) -> Option<Bytes> {
    match Q::decode(payload) {
        Ok(request) => Some(answer(request).encode_to_vec().into()),
        Err(_) => malformed("request"),
    }
}

/// A request this version cannot read goes unanswered: the sender times out and reports
/// the devices unreachable, rather than acting on a guess.
fn malformed(verb: &str) -> Option<Bytes> {
    tracing::warn!(verb, "malformed cluster request ignored");
    None
}

/// Delivers to the listed sessions now; the returned future waits for durability and
/// yields the answer.
fn deliver(
    handle: &GatewayHandle,
    request: DeliverRequest,
) -> impl Future<Output = DeliverReply> + Send + 'static {
    let app = AppId::new(request.app);
    let listed: Vec<SessionId> = request.sessions.iter().copied().map(SessionId).collect();
    let delivery = Delivery {
        target: Target::User(UserId::new(request.user)),
        payload: request.payload,
        options: DeliveryOptions {
            from: request.from.map(UserId::new),
            push: request.push.map(Into::into),
            message_id: Some(MessageId(request.message_id)),
            sent_at_ms: Some(request.sent_at_ms),
            ..DeliveryOptions::default()
        },
    };
    let queued = handle.deliver_queued_in(&app, delivery, Scope::Listed(&listed));
    let metrics = handle.metrics().clone();
    async move {
        let (report, pending) = match queued {
            Ok(queued) => queued,
            Err(error) => {
                return DeliverReply {
                    devices: Vec::new(),
                    error: error.to_string(),
                };
            }
        };
        let error = match pending {
            Some(pending) => pending
                .wait(&metrics)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            None => String::new(),
        };
        let devices = report
            .devices
            .into_iter()
            .filter_map(|device| {
                let (outcome, seq) = match device.outcome {
                    DeviceOutcome::Sent { seq } => (OUTCOME_SENT, seq),
                    DeviceOutcome::Buffered { seq } => (OUTCOME_BUFFERED, seq),
                    _ => (OUTCOME_OFFLINE, 0),
                };
                Some(DeviceRecord {
                    session: device.session?.0,
                    device: device.device?.as_str().to_owned(),
                    outcome,
                    seq,
                })
            })
            .collect();
        DeliverReply { devices, error }
    }
}

/// The session `id` if it belongs to the named app, user and device.
fn owned_session(
    handle: &GatewayHandle,
    id: u64,
    app: &str,
    user: &str,
    device: &str,
) -> Option<Arc<SessionCell>> {
    handle
        .shared
        .registry
        .session(SessionId(id))
        .filter(|cell| {
            let identity = cell.identity();
            identity.app.as_str() == app
                && identity.user.as_str() == user
                && identity.device.as_str() == device
        })
}

/// The device logged in on another node: end its session here, as a local login would.
fn takeover(handle: &GatewayHandle, request: &TakeoverRequest) -> TakeoverReply {
    let Some(cell) = owned_session(
        handle,
        request.session,
        &request.app,
        &request.user,
        &request.device,
    ) else {
        return TakeoverReply { ended: false };
    };
    cell.lock().take_over();
    cell.wake();
    let registry = &handle.shared.registry;
    registry.remove(&cell);
    registry.remember_taken_over(cell.id());
    handle.metrics().cluster_takeovers.inc();
    TakeoverReply { ended: true }
}

/// The session's client resumes on the asking node: hand the session over (to its owner
/// only) and end it here without pushing or reporting anything.
fn release(handle: &GatewayHandle, request: &ReleaseRequest) -> ReleaseReply {
    let refused = |reason: ResumeRefused| ReleaseReply {
        session: None,
        refused: reason.into(),
    };
    let Some(cell) = handle.shared.registry.session(SessionId(request.session)) else {
        return refused(ResumeRefused::UnknownSession);
    };
    let identity = cell.identity();
    if identity.app.as_str() != request.app
        || identity.user.as_str() != request.user
        || identity.device.as_str() != request.device
    {
        return refused(ResumeRefused::NotOwner);
    }
    let stored = {
        let mut session = cell.lock();
        if session.is_ended() {
            return refused(ResumeRefused::UnknownSession);
        }
        if !session.secret().matches(&request.secret) {
            return refused(ResumeRefused::BadSecret);
        }
        if session.has_overflowed() {
            return refused(ResumeRefused::BufferOverflow);
        }
        session.move_out()
    };
    cell.wake();
    handle.shared.registry.remove(&cell);
    let mut record = SessionRecord::opened(&stored.secret, &stored.identity, stored.opened_at_ms);
    record.overflowed = stored.overflowed;
    ReleaseReply {
        session: Some(SessionSnapshot {
            id: stored.id.0,
            record: Some(record),
            acked: stored.acked,
            outbox: stored.outbox.into_iter().map(|m| m.deliver).collect(),
            receipts: stored
                .receipts
                .into_iter()
                .map(|r| ReceiptRecord {
                    ordinal: r.ordinal,
                    forgotten_up_to: r.forgotten_up_to,
                    receipt: Some(r.receipt),
                })
                .collect(),
        }),
        refused: 0,
    }
}

/// The user's sessions on this node.
pub(super) fn sessions(handle: &GatewayHandle, request: &SessionsRequest) -> SessionsReply {
    let (app, user) = (
        AppId::new(request.app.as_str()),
        UserId::new(request.user.as_str()),
    );
    let sessions = handle
        .shared
        .registry
        .user_sessions(&app, &user)
        .iter()
        .map(|cell| {
            let session = cell.lock();
            SessionRecordInfo {
                id: cell.id().0,
                device: cell.identity().device.as_str().to_owned(),
                attached: session.is_attached(),
                unacked: session.last_seq() - session.acked_seq(),
            }
        })
        .collect();
    SessionsReply { sessions }
}
