//! The asking side: deliveries to users on any node, logins that take a device over from
//! another node, resumes of sessions another node holds, and cluster-wide lookups.

use std::collections::BTreeMap;
use std::sync::Arc;

use imgate_codec::ResumeRefused;
use tokio::task::JoinSet;

use super::Cluster;
use super::wire::{
    DeliverReply, DeliverRequest, OUTCOME_BUFFERED, OUTCOME_SENT, ReleaseReply, ReleaseRequest,
    SessionsReply, SessionsRequest, TakeoverReply, TakeoverRequest,
};
use crate::deliver::{Delivery, DeliveryReport, DeviceOutcome, DeviceReport, Target};
use crate::handle::{DeliverError, GatewayHandle, Scope};
use crate::handoff::Handoff;
use crate::ids::{AppId, DeviceId, SessionId, UserId};
use crate::metrics::Metrics;
use crate::session::{Identity, Undelivered, UndeliveredReason};
use crate::store::record::PushRecord;

/// Delivers to a user (or one device of theirs) wherever their sessions are: this node's
/// listed sessions directly, every other node holding one by a request naming its sessions.
/// A user with no session anywhere is handed to the offline path here, once.
pub(crate) async fn deliver(
    handle: &GatewayHandle,
    cluster: &Arc<Cluster>,
    app: &AppId,
    mut delivery: Delivery,
) -> Result<DeliveryReport, DeliverError> {
    let (user, device) = match &delivery.target {
        Target::User(user) => (user.clone(), None),
        Target::Device(user, device) => (user.clone(), Some(device.clone())),
        _ => return handle.deliver_here(app, delivery, Scope::All).await,
    };
    let app_state = handle
        .app(app)
        .ok_or_else(|| DeliverError::UnknownApp(app.clone()))?
        .clone();
    let message_id = *delivery
        .options
        .message_id
        .get_or_insert_with(|| handle.next_message_id());
    let entry = match cluster.directory().read(app, &user).await {
        Ok((entry, _)) => entry,
        Err(error) => {
            // Without the directory nobody knows where the user's other devices are: this
            // node's sessions get the message, the rest is refused in the report.
            tracing::warn!(%app, %user, %error, "cluster directory unreachable; delivering locally only");
            let mut report = handle
                .deliver_here(
                    app,
                    delivery,
                    Scope::Listed(&local_sessions(handle, app, &user)),
                )
                .await?;
            report.devices.push(DeviceReport {
                user,
                session: None,
                device: None,
                outcome: DeviceOutcome::Unreachable,
            });
            return Ok(report);
        }
    };
    // Sessions by node, as the directory lists them.
    let mut by_node: BTreeMap<&str, Vec<(SessionId, &str)>> = BTreeMap::new();
    for listed in &entry.devices {
        if device.as_ref().is_none_or(|d| d.as_str() == listed.device) {
            by_node
                .entry(listed.node.as_str())
                .or_default()
                .push((SessionId(listed.session), listed.device.as_str()));
        }
    }
    let mut asked = JoinSet::new();
    for (node, sessions) in &by_node {
        if *node == cluster.node() {
            continue;
        }
        let request = DeliverRequest {
            app: app.as_str().to_owned(),
            user: user.as_str().to_owned(),
            sessions: sessions.iter().map(|(id, _)| id.0).collect(),
            message_id: message_id.0,
            payload: delivery.payload.clone(),
            from: delivery
                .options
                .from
                .as_ref()
                .map(|f| f.as_str().to_owned()),
            sent_at_ms: delivery
                .options
                .sent_at_ms
                .unwrap_or_else(crate::handle::wall_ms),
            push: delivery.options.push.as_ref().map(PushRecord::from),
        };
        let cluster = Arc::clone(cluster);
        let node = (*node).to_owned();
        let unanswered: Vec<_> = sessions
            .iter()
            .map(|(id, device)| (*id, DeviceId::new(*device)))
            .collect();
        asked.spawn(async move {
            let reply: Result<DeliverReply, _> = cluster.request(&node, "deliver", &request).await;
            (node, unanswered, reply)
        });
    }
    let here: Vec<SessionId> = by_node
        .get(cluster.node())
        .map(|sessions| sessions.iter().map(|(id, _)| *id).collect())
        .unwrap_or_default();
    let mut report = handle
        .deliver_here(app, delivery, Scope::Listed(&here))
        .await?;
    while let Some(joined) = asked.join_next().await {
        let Ok((node, unanswered, reply)) = joined else {
            continue;
        };
        match reply {
            Ok(reply) if reply.error.is_empty() => {
                report
                    .devices
                    .extend(reply.devices.into_iter().map(|d| DeviceReport {
                        user: user.clone(),
                        session: Some(SessionId(d.session)),
                        device: Some(DeviceId::new(d.device)),
                        outcome: match d.outcome {
                            OUTCOME_SENT => DeviceOutcome::Sent { seq: d.seq },
                            OUTCOME_BUFFERED => DeviceOutcome::Buffered { seq: d.seq },
                            _ => DeviceOutcome::Offline,
                        },
                    }));
            }
            failed => {
                if !cluster.is_alive(&node).await {
                    // The node is dead (no heartbeat within the node time-out): its sessions
                    // went with it. The directory stops naming them, and the message is
                    // handled as for a user without them (offline, below).
                    release_dead(cluster, app, &user, &node, &unanswered).await;
                    handle
                        .metrics()
                        .cluster_orphans_released
                        .inc_by(unanswered.len() as u64);
                    continue;
                }
                let why = match failed {
                    Ok(reply) => reply.error,
                    Err(error) => error.to_string(),
                };
                tracing::warn!(%app, %user, node, why, "cluster delivery not answered");
                Metrics::count(&handle.metrics().deliveries, "unreachable");
                report
                    .devices
                    .extend(
                        unanswered
                            .into_iter()
                            .map(|(session, device)| DeviceReport {
                                user: user.clone(),
                                session: Some(session),
                                device: Some(device),
                                outcome: DeviceOutcome::Unreachable,
                            }),
                    );
            }
        }
    }
    if report.devices.is_empty() {
        // No session anywhere (or every listed one ended meanwhile): offline, decided once.
        Metrics::count(&handle.metrics().deliveries, "no_session");
        Handoff::new(handle, &app_state).undelivered(
            user.clone(),
            None,
            vec![Undelivered { message_id, seq: 0 }],
            UndeliveredReason::NoSession,
        );
        report.devices.push(DeviceReport {
            user,
            session: None,
            device: None,
            outcome: DeviceOutcome::Offline,
        });
    }
    Ok(report)
}

/// Removes a dead node's sessions of `user` from the directory (those it was asked about;
/// a device that logged in elsewhere meanwhile keeps its newer entry).
async fn release_dead(
    cluster: &Cluster,
    app: &AppId,
    user: &UserId,
    node: &str,
    sessions: &[(SessionId, DeviceId)],
) {
    let removed = cluster
        .directory()
        .modify(app, user, |entry| {
            entry
                .devices
                .retain(|d| !(d.node == node && sessions.iter().any(|(id, _)| id.0 == d.session)));
        })
        .await;
    match removed {
        Ok(()) => {
            tracing::info!(%app, %user, node, sessions = sessions.len(), "sessions of a dead node released")
        }
        Err(error) => {
            tracing::warn!(%app, %user, node, %error, "sessions of a dead node not released")
        }
    }
}

fn local_sessions(handle: &GatewayHandle, app: &AppId, user: &UserId) -> Vec<SessionId> {
    handle
        .shared
        .registry
        .user_sessions(app, user)
        .iter()
        .map(|c| c.id())
        .collect()
}

/// A fresh session of the device opened here: make it the device's session in the
/// directory, and end the one another node held. A directory that cannot be written now is
/// retried in the background while the session lives (until then deliveries from other
/// nodes do not find it).
pub(crate) async fn claim(
    handle: &GatewayHandle,
    cluster: &Arc<Cluster>,
    identity: &Identity,
    session: SessionId,
) {
    match claim_once(cluster, identity, session).await {
        Ok(()) => {}
        Err(error) => {
            tracing::warn!(user = %identity.user, %error, "cluster directory claim failed; retrying in the background");
            let (handle2, cluster, identity) =
                (handle.clone(), Arc::clone(cluster), identity.clone());
            handle.spawn(async move {
                let mut delay = std::time::Duration::from_millis(200);
                while handle2.shared.registry.session(session).is_some() {
                    tokio::time::sleep(delay).await;
                    if claim_once(&cluster, &identity, session).await.is_ok() {
                        return;
                    }
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            });
        }
    }
}

async fn claim_once(
    cluster: &Arc<Cluster>,
    identity: &Identity,
    session: SessionId,
) -> Result<(), super::ClusterError> {
    let previous = cluster
        .directory()
        .claim(
            &identity.app,
            &identity.user,
            &identity.device,
            cluster.node(),
            session.0,
        )
        .await?;
    if let Some(previous) = previous
        && previous.node != cluster.node()
        && previous.session != session.0
    {
        // The directory already routes to the new session; the old owner ends its one
        // (`GoAway{TAKEOVER}`). A node that does not answer is fenced anyway: deliveries
        // follow the directory, which no longer names it.
        let request = TakeoverRequest {
            app: identity.app.as_str().to_owned(),
            user: identity.user.as_str().to_owned(),
            device: identity.device.as_str().to_owned(),
            session: previous.session,
        };
        let ended: Result<TakeoverReply, _> =
            cluster.request(&previous.node, "takeover", &request).await;
        if let Err(error) = ended {
            tracing::info!(node = previous.node, %error, "previous owner not told of the take-over; it is fenced by the directory");
        }
    }
    Ok(())
}

/// A session of this node ended: the directory stops naming it (unless the device already
/// has a newer one, or the session moved to another node).
pub(crate) fn release_ended(
    handle: &GatewayHandle,
    cluster: &Arc<Cluster>,
    identity: &Identity,
    session: SessionId,
) {
    let (cluster, identity) = (Arc::clone(cluster), identity.clone());
    handle.spawn(async move {
        let released = cluster
            .directory()
            .release(&identity.app, &identity.user, &identity.device, cluster.node(), session.0)
            .await;
        if let Err(error) = released {
            tracing::warn!(user = %identity.user, %error, "cluster directory entry of an ended session left behind");
        }
    });
}

/// What a resume of a session this node does not hold found in the cluster.
pub(crate) enum Fetched {
    /// The session was moved here from another node (now in the registry, detached).
    Moved,
    /// This device's session was taken over by a newer login: the resume must not evict it.
    TakenOver,
    /// Nowhere to be had (unknown, refused by its owner, or its owner did not answer).
    Refused(ResumeRefused),
}

/// Brings the session a client resumes here from the node that holds it.
pub(crate) async fn fetch_for_resume(
    handle: &GatewayHandle,
    cluster: &Arc<Cluster>,
    identity: &Identity,
    resume: &imgate_codec::Resume,
) -> Fetched {
    let entry = match cluster
        .directory()
        .read(&identity.app, &identity.user)
        .await
    {
        Ok((entry, _)) => entry,
        Err(error) => {
            tracing::warn!(%error, "cluster directory unreachable; a resume of a session held elsewhere is refused");
            return Fetched::Refused(ResumeRefused::UnknownSession);
        }
    };
    let Some(listed) = entry.device(&identity.device) else {
        return Fetched::Refused(ResumeRefused::UnknownSession);
    };
    if listed.session != resume.session_id {
        return if listed.taken_over.contains(&resume.session_id) {
            Fetched::TakenOver
        } else {
            Fetched::Refused(ResumeRefused::UnknownSession)
        };
    }
    if listed.node == cluster.node() {
        // Listed here but gone: it ended meanwhile.
        return Fetched::Refused(ResumeRefused::UnknownSession);
    }
    let request = ReleaseRequest {
        app: identity.app.as_str().to_owned(),
        user: identity.user.as_str().to_owned(),
        device: identity.device.as_str().to_owned(),
        session: resume.session_id,
        secret: resume.resume_secret.to_vec(),
    };
    let reply: ReleaseReply = match cluster.request(&listed.node, "release", &request).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::info!(%error, "the session's node did not release it; the client starts afresh");
            return Fetched::Refused(ResumeRefused::UnknownSession);
        }
    };
    let Some(snapshot) = reply.session else {
        return Fetched::Refused(
            ResumeRefused::try_from(reply.refused).unwrap_or(ResumeRefused::UnknownSession),
        );
    };
    match super::moved::restore(handle, snapshot).await {
        Ok(()) => {
            handle.metrics().cluster_sessions_moved_in.inc();
            // Owner here from now on; the session id stays the same (no take-over).
            if let Err(error) = cluster
                .directory()
                .claim(
                    &identity.app,
                    &identity.user,
                    &identity.device,
                    cluster.node(),
                    resume.session_id,
                )
                .await
            {
                tracing::warn!(%error, "moved session not yet claimed in the cluster directory");
            }
            Fetched::Moved
        }
        Err(error) => {
            tracing::warn!(error, "a moved session could not be restored");
            Fetched::Refused(ResumeRefused::UnknownSession)
        }
    }
}

/// One session somewhere in the cluster, as [`GatewayHandle::locate`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterSession {
    /// The node holding it.
    pub node: String,
    /// The session.
    pub id: SessionId,
    /// Its device.
    pub device: DeviceId,
    /// Whether a connection is attached (None: the node did not answer).
    pub attached: Option<bool>,
    /// Messages it holds unacknowledged (None: the node did not answer).
    pub unacked: Option<u64>,
}

impl ClusterSession {
    /// A session of a node that is in no cluster.
    pub(crate) fn local(info: crate::handle::SessionInfo) -> Self {
        Self {
            node: String::new(),
            id: info.id,
            device: info.device,
            attached: Some(info.attached),
            unacked: Some(info.unacked),
        }
    }
}

/// Every session of the user in the cluster: the directory says where, each node what.
pub(crate) async fn locate(
    handle: &GatewayHandle,
    cluster: &Arc<Cluster>,
    app: &AppId,
    user: &UserId,
) -> Result<Vec<ClusterSession>, super::ClusterError> {
    let (entry, _) = cluster.directory().read(app, user).await?;
    let mut found = Vec::with_capacity(entry.devices.len());
    let mut nodes: Vec<&str> = entry.devices.iter().map(|d| d.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    for node in nodes {
        let request = SessionsRequest {
            app: app.as_str().to_owned(),
            user: user.as_str().to_owned(),
        };
        // This node answers itself the way it answers the others.
        let live: Option<SessionsReply> = if node == cluster.node() {
            Some(super::serve::sessions(handle, &request))
        } else {
            cluster.request(node, "sessions", &request).await.ok()
        };
        for listed in entry.devices.iter().filter(|d| d.node == node) {
            let info = live
                .as_ref()
                .and_then(|l| l.sessions.iter().find(|s| s.id == listed.session));
            found.push(ClusterSession {
                node: node.to_owned(),
                id: SessionId(listed.session),
                device: DeviceId::new(listed.device.as_str()),
                attached: info.map(|i| i.attached),
                unacked: info.map(|i| i.unacked),
            });
        }
    }
    Ok(found)
}
