//! `GatewayHandle`: what backends and the admin API use to reach users.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::time::Instant;

use crate::app::App;
use crate::deliver::{Delivery, DeliveryReport, DeviceOutcome, DeviceReport, Target};
use crate::handoff::Handoff;
use crate::ids::{AppId, DeviceId, MessageId, RoomId, SessionId, UserId};
use crate::metrics::Metrics;
use crate::offline::PushTrigger;
use crate::rate_limit::SharedBucket;
use crate::registry::Registry;
use crate::server::ServerConfig;
use crate::session::{DeliverOutcome, Outgoing, Undelivered, UndeliveredReason};
use crate::store::{Change, Durability, SessionStore};

/// Errors of the delivery API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliverError {
    /// The app is not configured.
    #[error("unknown app {0}")]
    UnknownApp(AppId),
    /// The session store could not make the message durable. It is still delivered from
    /// memory, but a restart before the device acknowledges it would lose it: a backend
    /// that needs the guarantee retries (the device may then see it twice).
    #[error("message {0:?} is not durable: {1}")]
    NotDurable(MessageId, crate::store::StoreError),
}

/// Shared state of a running gateway.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    /// foldhash, not SipHash: looked up on every message, keyed by configured app ids.
    pub(crate) apps: hashbrown::HashMap<AppId, Arc<App>>,
    next_message_id: AtomicU64,
    pub(crate) metrics: Metrics,
    pub(crate) config: ServerConfig,
    /// Every connection, session driver and offline hand-off task, so a drain can wait.
    pub(crate) tasks: TaskTracker,
    /// Cancels every task at once (a hard shutdown).
    pub(crate) cancel: CancellationToken,
    /// Set when a drain starts: `/readyz` fails and new handshakes are refused.
    pub(crate) draining: AtomicBool,
    /// Cancelled when a drain starts: a connection still waiting for its `Hello` is refused
    /// with `GOING_AWAY` at once, not cut off silently when the drain ends.
    pub(crate) drain_started: CancellationToken,
    /// Set when a drain has disconnected every client: the drivers of durable sessions let
    /// go (their sessions stay in the store for the next start).
    pub(crate) releasing: AtomicBool,
    /// Notified whenever a connection detaches from its session.
    pub(crate) detached: Notify,
    pub(crate) handshake_limit: SharedBucket,
    /// Samples the `info` lines of connections and refusals: useful at a glance, never a
    /// flood (the metrics count every one).
    pub(crate) log_sample: SharedBucket,
    /// Where the sessions of apps with `Durability::Disk` live.
    pub(crate) store: Option<Arc<dyn SessionStore>>,
    /// The last messages handed to the offline path as undelivered (the admin console).
    pub(crate) recent_undelivered: crate::recent::RecentUndelivered,
    /// The cluster this node is part of, if any.
    #[cfg(feature = "cluster")]
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Shared {
    /// The store `app`'s sessions live in, if they are durable.
    pub(crate) fn store_for(&self, app: &App) -> Option<&Arc<dyn SessionStore>> {
        match app.session.durability {
            Durability::Disk => self.store.as_ref(),
            Durability::Memory => None,
        }
    }
}

/// `info` lines per second for connections and refusals (bursts of twice that).
const LOG_LINES_PER_SEC: f64 = 10.0;

/// A cheap, cloneable handle to a running gateway.
#[derive(Clone, Debug)]
pub struct GatewayHandle {
    pub(crate) shared: Arc<Shared>,
}

/// Wall clock in ms since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl GatewayHandle {
    pub(crate) fn new(
        apps: HashMap<AppId, Arc<App>>,
        config: ServerConfig,
        metrics: Metrics,
        store: Option<Arc<dyn SessionStore>>,
        #[cfg(feature = "cluster")] cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                registry: Registry::new(config.shards),
                apps: apps.into_iter().collect(),
                // Seeded from the wall clock (µs) so ids stay unique across restarts.
                next_message_id: AtomicU64::new(wall_ms().saturating_mul(1000)),
                metrics,
                handshake_limit: SharedBucket::new(config.handshake_rate),
                log_sample: SharedBucket::new(crate::rate_limit::RateLimit::new(
                    LOG_LINES_PER_SEC,
                    2.0 * LOG_LINES_PER_SEC,
                )),
                config,
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
                draining: AtomicBool::new(false),
                drain_started: CancellationToken::new(),
                releasing: AtomicBool::new(false),
                detached: Notify::new(),
                store,
                recent_undelivered: crate::recent::RecentUndelivered::default(),
                #[cfg(feature = "cluster")]
                cluster,
            }),
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Whether the gateway is draining (not ready for new clients).
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// Runs `task` as part of the gateway: a drain waits for it, a shutdown cancels it.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.shared.cancel.clone();
        self.shared
            .tasks
            .spawn(crate::until_cancelled::UntilCancelled::new(task, cancel));
    }

    pub(crate) fn app(&self, app: &AppId) -> Option<&Arc<App>> {
        self.shared.apps.get(app)
    }

    /// Delivers a message to `delivery.target` within `app`; returns one report per device.
    ///
    /// Connected devices get the message queued on their connection (their driver writes
    /// it), detached ones buffer it for resume, and everything else is handed to the offline
    /// path before this returns. For an app with `Durability::Disk` it returns once the
    /// message is durable in every session it joined (one group commit of the session
    /// store, shared with every delivery made meanwhile), and no device receives it before
    /// that; with `Durability::Memory` it never waits.
    ///
    /// On a cluster node, a user or device target reaches the user's devices on every node
    /// (one report per device, merged from each node's answer); a node that does not answer
    /// in time has its devices reported [`DeviceOutcome::Unreachable`].
    pub async fn deliver(
        &self,
        app: &AppId,
        delivery: Delivery,
    ) -> Result<DeliveryReport, DeliverError> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.shared.cluster
            && matches!(delivery.target, Target::User(_) | Target::Device(..))
        {
            // Boxed: the cluster path's state (its requests in flight) would otherwise grow
            // every caller's future, the relay's per-message one included.
            return Box::pin(crate::cluster::route::deliver(self, cluster, app, delivery)).await;
        }
        self.deliver_here(app, delivery, Scope::All).await
    }

    /// Whether deliveries may reach other nodes (a cluster node): such a delivery must go
    /// through [`GatewayHandle::deliver`], which asks them.
    pub(crate) fn is_clustered(&self) -> bool {
        #[cfg(feature = "cluster")]
        return self.shared.cluster.is_some();
        #[cfg(not(feature = "cluster"))]
        false
    }

    /// A new message id, unique across restarts (and across nodes, with high probability:
    /// the counter starts at the wall clock in µs).
    pub(crate) fn next_message_id(&self) -> MessageId {
        MessageId(self.shared.next_message_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Delivers to this node's sessions within `scope` and waits for their durability.
    pub(crate) async fn deliver_here(
        &self,
        app: &AppId,
        delivery: Delivery,
        scope: Scope<'_>,
    ) -> Result<DeliveryReport, DeliverError> {
        let (report, pending) = self.deliver_queued_in(app, delivery, scope)?;
        if let Some(pending) = pending {
            let message_id = report.message_id;
            pending
                .wait(&self.shared.metrics)
                .await
                .map_err(|error| DeliverError::NotDurable(message_id, error))?;
        }
        Ok(report)
    }

    /// [`GatewayHandle::deliver`] without waiting for the store: returns the report at once
    /// and what is still pending (`None` when nothing is). No device receives the message
    /// before [`PendingDurability::wait`] (or [`PendingDurability::spawn`]) has seen the
    /// commit. The relay uses it so that one sender's messages pipeline through the group
    /// commit instead of waiting for one fsync each: its receipt still goes out only after a
    /// later commit (the receipt's de-duplication mark), which covers this one.
    pub(crate) fn deliver_queued(
        &self,
        app: &AppId,
        delivery: Delivery,
    ) -> Result<(DeliveryReport, Option<PendingDurability>), DeliverError> {
        self.deliver_queued_in(app, delivery, Scope::All)
    }

    /// [`GatewayHandle::deliver_queued`] to this node's sessions within `scope`.
    pub(crate) fn deliver_queued_in(
        &self,
        app: &AppId,
        delivery: Delivery,
        scope: Scope<'_>,
    ) -> Result<(DeliveryReport, Option<PendingDurability>), DeliverError> {
        let app_state = self
            .app(app)
            .ok_or_else(|| DeliverError::UnknownApp(app.clone()))?;
        let now = Instant::now();
        let message_id = delivery
            .options
            .message_id
            .unwrap_or_else(|| self.next_message_id());
        let handoff = Handoff::new(self, app_state);
        if let Some(push) = &delivery.options.push {
            handoff.accepted(message_id, push);
        }
        let outgoing = Outgoing {
            message_id,
            payload: delivery.payload,
            from: delivery.options.from.clone(),
            room: match &delivery.target {
                Target::Room(room) => Some(room.clone()),
                _ => None,
            },
            sent_at_ms: delivery.options.sent_at_ms.unwrap_or_else(wall_ms),
        };
        let registry = &self.shared.registry;
        let mut cells = Vec::new();
        match &delivery.target {
            Target::User(user) => registry.push_user_sessions(app, user, &mut cells),
            Target::Device(user, device) => {
                cells.extend(registry.device_session(app, user, device));
            }
            Target::Session(id) => {
                cells.extend(registry.session(*id).filter(|c| &c.identity().app == app));
            }
            // Members without a session get nothing here: the backend owns room history.
            Target::Room(room) => registry.push_room_sessions(app, room, &mut cells),
        }
        if let Some(excluded) = delivery.options.exclude_session {
            cells.retain(|c| c.id() != excluded);
        }
        if let Scope::Listed(listed) = scope {
            cells.retain(|c| listed.contains(&c.id()));
        }
        let metrics = &self.shared.metrics;
        let store = self.shared.store_for(app_state);
        let push_options = store.and(delivery.options.push.clone().map(Arc::new));
        let mut awaiting_store = Vec::new();
        let mut overflowed = Vec::new();
        let mut too_large = Vec::new();
        let mut devices = Vec::with_capacity(cells.len().max(1));
        // A user or device target with no session left is reported (and handed offline)
        // as the user.
        if cells.is_empty()
            && scope == Scope::All
            && let Target::User(user) | Target::Device(user, _) = &delivery.target
        {
            Metrics::count(&metrics.deliveries, "no_session");
            devices.push(DeviceReport {
                user: user.clone(),
                session: None,
                device: None,
                outcome: DeviceOutcome::Offline,
            });
        }
        for cell in cells {
            let outcome = {
                let mut session = cell.lock();
                let outcome = session.handle_deliver(now, outgoing.clone());
                if let Some(store) = store {
                    // Appended under the session's lock: one session's changes reach the
                    // store in sequence order.
                    record_delivery(&**store, &session, outcome, push_options.as_ref());
                }
                outcome
            };
            match outcome {
                DeliverOutcome::Sent { seq } | DeliverOutcome::Buffered { seq, .. }
                    if store.is_some() =>
                {
                    awaiting_store.push((Arc::clone(&cell), seq));
                }
                _ => cell.wake(),
            }
            let identity = cell.identity();
            let outcome = match outcome {
                DeliverOutcome::Sent { seq } => {
                    metrics.hot.delivered_sent.inc();
                    DeviceOutcome::Sent { seq }
                }
                DeliverOutcome::Buffered { seq, push } => {
                    metrics.hot.delivered_buffered.inc();
                    if push {
                        handoff.uncovered(
                            &identity.user,
                            Some(&identity.device),
                            &[message_id],
                            PushTrigger::DetachedGrace,
                        );
                    }
                    DeviceOutcome::Buffered { seq }
                }
                DeliverOutcome::Overflow => {
                    Metrics::count(&metrics.deliveries, "overflow");
                    overflowed.push(identity.user.clone());
                    DeviceOutcome::Offline
                }
                DeliverOutcome::TooLarge => {
                    Metrics::count(&metrics.deliveries, "too_large");
                    too_large.push(identity.user.clone());
                    DeviceOutcome::Offline
                }
                DeliverOutcome::Ended => {
                    Metrics::count(&metrics.deliveries, "ended");
                    DeviceOutcome::Offline
                }
            };
            devices.push(DeviceReport {
                user: identity.user.clone(),
                session: Some(cell.id()),
                device: Some(identity.device.clone()),
                outcome,
            });
        }
        // One hand-off per user: an overflow or a message too large for a device's frame limit
        // is reported as such, anything else that found no session to take it (none at all,
        // or one that ended meanwhile) as no session.
        let mut offline: HashMap<UserId, UndeliveredReason> = HashMap::new();
        for report in &devices {
            if report.outcome == DeviceOutcome::Offline {
                offline
                    .entry(report.user.clone())
                    .or_insert(UndeliveredReason::NoSession);
            }
        }
        for user in too_large {
            offline.insert(user, UndeliveredReason::TooLarge);
        }
        for user in overflowed {
            offline.insert(user, UndeliveredReason::BufferOverflow);
        }
        for (user, reason) in offline {
            let messages = vec![Undelivered { message_id, seq: 0 }];
            handoff.undelivered(user, None, messages, reason);
        }
        let pending = match store {
            Some(store) if !awaiting_store.is_empty() => Some(PendingDurability {
                store: Arc::clone(store),
                sessions: awaiting_store,
            }),
            _ => None,
        };
        self.shared
            .metrics
            .deliver_latency
            .observe(now.elapsed().as_secs_f64());
        Ok((
            DeliveryReport {
                message_id,
                devices,
            },
            pending,
        ))
    }

    /// How many messages session `id` holds unacknowledged, if it is attached (the relay's
    /// offline queue paces its hand-over by it, so it never overflows the outbox).
    pub(crate) fn session_backlog(&self, id: SessionId) -> Option<u64> {
        let cell = self.shared.registry.session(id)?;
        let session = cell.lock();
        session
            .is_attached()
            .then(|| session.last_seq().saturating_sub(session.acked_seq()))
    }

    /// Adds `user` to `room` (rooms are per app).
    pub fn join_room(&self, app: &AppId, room: &RoomId, user: UserId) -> bool {
        self.shared.registry.join(app, room, user)
    }

    /// Removes `user` from `room`.
    pub fn leave_room(&self, app: &AppId, room: &RoomId, user: &UserId) -> bool {
        self.shared.registry.leave(app, room, user)
    }

    /// Sessions of a user: id, device, platform, whether a connection is attached and how
    /// many messages it holds unacknowledged.
    pub fn user_sessions(&self, app: &AppId, user: &UserId) -> Vec<SessionInfo> {
        self.shared
            .registry
            .user_sessions(app, user)
            .iter()
            .map(|cell| {
                let identity = cell.identity();
                let session = cell.lock();
                SessionInfo {
                    id: cell.id(),
                    device: identity.device.clone(),
                    platform: identity.platform,
                    attached: session.is_attached(),
                    unacked: session.last_seq().saturating_sub(session.acked_seq()),
                    last_seq: session.last_seq(),
                }
            })
            .collect()
    }

    /// The most recent messages handed to the offline path as undelivered (at most
    /// [`crate::recent::RECENT_UNDELIVERED`]), oldest first.
    pub fn recent_undelivered(&self) -> Vec<crate::recent::UndeliveredRecord> {
        self.shared.recent_undelivered.snapshot()
    }

    /// The app's push policy (for what it can report: devices, badges, its queue).
    pub fn push_policy(&self, app: &AppId) -> Option<Arc<dyn crate::offline::PushPolicy>> {
        self.app(app).map(|app| Arc::clone(&app.push))
    }

    /// Every session of a user in the cluster: the node holding it, its device, and (if the
    /// node answered in time) whether it is attached and what it holds unacknowledged. On a
    /// single node, this node's sessions.
    #[cfg(feature = "cluster")]
    pub async fn locate(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> Result<Vec<crate::cluster::ClusterSession>, crate::cluster::ClusterError> {
        match &self.shared.cluster {
            Some(cluster) => crate::cluster::route::locate(self, cluster, app, user).await,
            None => Ok(self
                .user_sessions(app, user)
                .into_iter()
                .map(crate::cluster::ClusterSession::local)
                .collect()),
        }
    }

    /// Whether the node can serve: not draining and, on a cluster node, NATS not lost for
    /// longer than its `unready_after`.
    pub fn is_ready(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.shared.cluster
            && !cluster.is_ready()
        {
            return false;
        }
        !self.is_draining()
    }

    /// Ends a session: its client gets `GoAway{Kicked}`; pending messages go offline.
    pub fn kick(&self, session: SessionId) -> bool {
        let Some(cell) = self.shared.registry.session(session) else {
            return false;
        };
        cell.lock().kick();
        cell.wake();
        true
    }

    /// The configured apps' ids, sorted.
    pub fn apps(&self) -> Vec<AppId> {
        let mut apps: Vec<AppId> = self.shared.apps.keys().cloned().collect();
        apps.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        apps
    }

    /// Number of live sessions (attached or detached).
    pub fn session_count(&self) -> usize {
        self.shared.registry.session_count()
    }
}

/// Which of this node's sessions a delivery may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope<'a> {
    /// Every session of the target; a user or device with none is reported and handed to
    /// the offline path.
    All,
    /// Only these sessions (those the cluster directory lists on this node: a session it
    /// does not list belongs to a stale owner); finding none is no one's business here, the
    /// node that asked decides.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))] // reason: only a cluster lists
    Listed(&'a [SessionId]),
}

/// A delivery's messages waiting for the session store's commit: the sessions transmit them
/// only once it is seen.
#[must_use = "the message is not transmitted until the commit is awaited"]
pub(crate) struct PendingDurability {
    store: Arc<dyn SessionStore>,
    sessions: Vec<(Arc<crate::registry::SessionCell>, u64)>,
}

impl PendingDurability {
    /// Waits for the commit, then lets every session transmit. Transmitted from memory even
    /// if the store failed: the message is not lost while the process lives, and the caller
    /// hears that it is not durable.
    pub(crate) async fn wait(self, metrics: &Metrics) -> Result<(), crate::store::StoreError> {
        let synced = self.store.sync().await;
        release(&self.sessions);
        if synced.is_err() {
            Metrics::count(&metrics.deliveries, "not_durable");
        }
        synced
    }

    /// Lets the sessions transmit as soon as the commit is done, without waiting here: the
    /// store's thread releases them (every delivery of a commit at once).
    pub(crate) fn release_when_durable(self, metrics: &Metrics) {
        let not_durable = metrics.deliveries.clone();
        let sessions = self.sessions;
        self.store.on_durable(Box::new(move |result| {
            release(&sessions);
            if let Err(error) = result {
                not_durable
                    .get_or_create(&crate::metrics::OutcomeLabel {
                        outcome: "not_durable",
                    })
                    .inc();
                tracing::error!(%error, "delivery not durable");
            }
        }));
    }
}

/// Marks each session's message durable and wakes its driver to transmit it.
fn release(sessions: &[(Arc<crate::registry::SessionCell>, u64)]) {
    for (cell, seq) in sessions {
        cell.lock().mark_durable(*seq);
        cell.wake();
    }
}

/// Appends what a delivery changed in `session` to its store.
fn record_delivery(
    store: &dyn SessionStore,
    session: &crate::session::Session,
    outcome: DeliverOutcome,
    push: Option<&Arc<crate::deliver::PushOptions>>,
) {
    match outcome {
        DeliverOutcome::Sent { seq } | DeliverOutcome::Buffered { seq, .. } => {
            if let Some(deliver) = session.unacked(seq) {
                store.append(Change::Delivered {
                    session: session.id(),
                    deliver: deliver.clone(),
                    push: push.cloned(),
                });
            }
        }
        DeliverOutcome::Overflow => store.append(Change::Overflowed {
            session: session.id(),
        }),
        // No sequence number: nothing the session holds changed.
        DeliverOutcome::TooLarge | DeliverOutcome::Ended => {}
    }
}

/// A session as listed by [`GatewayHandle::user_sessions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: SessionId,
    /// Device.
    pub device: DeviceId,
    /// The device's platform (from its `Hello`).
    pub platform: imgate_codec::Platform,
    /// Whether a connection is attached right now.
    pub attached: bool,
    /// Messages buffered and not acknowledged yet.
    pub unacked: u64,
    /// The last sequence number the session assigned.
    pub last_seq: u64,
}
