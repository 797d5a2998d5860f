//! The dispatcher: durable queue in, provider requests out, outcomes back to the gateway.
//!
//! `submit` validates the push, refuses it visibly when the queue is full (the `shed` counter
//! and [`PushError::Shed`]), and stores it. One worker task takes due pushes from the queue and
//! spawns a send per push, bounded three ways: a global cap, a semaphore per provider client
//! and one per app. Every end state is reported once as a [`PushOutcome`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apns::ApnsNotification;
use crate::apns::{ApnsPayload, Aps};
use crate::classify::{Classification, should_prune};
use crate::fcm::{AndroidConfig, AndroidNotification, AndroidPriority, ApnsOverride, FcmMessage};
use crate::metrics::{RequestLabels, labels};
use crate::{
    ApnsClient, FcmClient, Platform, PushError, PushKind, PushMetrics, PushQueue, PushRequest,
    QueuedPush, RetryPolicy, UnixClock, Verdict,
};

/// Dispatcher limits.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Pushes the queue may hold; beyond it `submit` sheds.
    pub capacity: usize,
    /// Sends in flight across all providers.
    pub max_in_flight: usize,
    /// Sends in flight per provider client (one HTTP/2 connection).
    pub per_provider: usize,
    /// Sends in flight per app.
    pub per_app: usize,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// Pushes taken from the queue per poll.
    pub batch: usize,
    /// Capacity of the outcome channel.
    pub outcome_buffer: usize,
    /// Seed for the back-off jitter (`None`: random).
    pub rng_seed: Option<u64>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_in_flight: 2048,
            // APNs and FCM both advertise on the order of 1,000 concurrent streams.
            per_provider: 1000,
            per_app: 1000,
            retry: RetryPolicy::default(),
            batch: 512,
            outcome_buffer: 4096,
            rng_seed: None,
        }
    }
}

/// Which client serves each app.
#[derive(Debug, Default, Clone)]
pub struct Routes {
    apns: HashMap<String, (Arc<ApnsClient>, String)>,
    fcm: HashMap<String, Arc<FcmClient>>,
}

impl Routes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `app`'s APNs pushes through `client` with `apns-topic` `topic` (the bundle id).
    /// Several apps may share one token-auth client.
    pub fn apns(
        &mut self,
        app: impl Into<String>,
        client: Arc<ApnsClient>,
        topic: impl Into<String>,
    ) -> &mut Self {
        self.apns.insert(app.into(), (client, topic.into()));
        self
    }

    /// Sends `app`'s FCM pushes through `client`.
    pub fn fcm(&mut self, app: impl Into<String>, client: Arc<FcmClient>) -> &mut Self {
        self.fcm.insert(app.into(), client);
        self
    }
}

/// Why a push ended without delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The provider refused it for good (a request bug, payload too large…).
    Permanent,
    /// Credentials or provider configuration refused: alert an operator.
    Auth,
    /// Retries ran out or the TTL passed.
    Expired,
    /// APNs said `Unregistered`, but the token was registered again after that: kept.
    StaleUnregistered,
}

/// The end state of one submitted push. Exactly one per accepted `submit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider accepted it.
    Delivered {
        /// Queue id returned by `submit`.
        id: u64,
        /// App id.
        app: String,
        /// Sends it took.
        attempts: u32,
    },
    /// The token is dead: delete it and tell the backend.
    TokenPruned {
        /// Queue id.
        id: u64,
        /// The request, device included.
        request: Box<PushRequest>,
        /// Provider reason.
        reason: String,
    },
    /// The token looks wrong for this app or environment (`BadDeviceToken`…). Usually a
    /// configuration mix-up, so the token is kept and an alert metric raised.
    TokenRejected {
        /// Queue id.
        id: u64,
        /// The request.
        request: Box<PushRequest>,
        /// Provider reason.
        reason: String,
    },
    /// Not delivered.
    Failed {
        /// Queue id.
        id: u64,
        /// App id.
        app: String,
        /// Why.
        kind: FailureKind,
        /// Provider reason or error.
        reason: String,
    },
}

struct Inner {
    config: DispatcherConfig,
    routes: Routes,
    queue: Arc<dyn PushQueue>,
    metrics: PushMetrics,
    clock: UnixClock,
    outcomes: mpsc::Sender<PushOutcome>,
    wake: Notify,
    stop: watch::Sender<bool>,
    in_flight: Mutex<HashSet<u64>>,
    global: Arc<Semaphore>,
    providers: HashMap<usize, Arc<Semaphore>>,
    apps: Mutex<HashMap<String, Arc<Semaphore>>>,
    rng: Mutex<fastrand::Rng>,
    // Makes the capacity check and the insert one step, so concurrent submits can't overshoot.
    admit: Mutex<()>,
}

/// The queue as [`Dispatcher::snapshot`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Pushes stored and not finished.
    pub pending: usize,
    /// Sends in flight.
    pub in_flight: usize,
    /// The first pushes by due time (those being sent included).
    pub next: Vec<QueuedPush>,
}

/// The push dispatcher. See the module docs.
pub struct Dispatcher {
    inner: Arc<Inner>,
    worker: JoinHandle<()>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Starts the worker. Pushes already in `queue` (from before a restart) are sent too.
    /// Outcomes arrive on the returned receiver; if it is dropped they are discarded.
    pub fn start(
        config: DispatcherConfig,
        routes: Routes,
        queue: Arc<dyn PushQueue>,
        metrics: PushMetrics,
    ) -> (Self, mpsc::Receiver<PushOutcome>) {
        Self::start_with_clock(config, routes, queue, metrics, UnixClock::system())
    }

    /// [`Dispatcher::start`] with an explicit wall clock.
    pub fn start_with_clock(
        config: DispatcherConfig,
        routes: Routes,
        queue: Arc<dyn PushQueue>,
        metrics: PushMetrics,
        clock: UnixClock,
    ) -> (Self, mpsc::Receiver<PushOutcome>) {
        let (tx, rx) = mpsc::channel(config.outcome_buffer.max(1));
        let mut providers = HashMap::new();
        let keys = routes
            .apns
            .values()
            .map(|(c, _)| Arc::as_ptr(c) as usize)
            .chain(routes.fcm.values().map(|c| Arc::as_ptr(c) as usize));
        for key in keys {
            providers
                .entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(config.per_provider.max(1))));
        }
        let rng = config
            .rng_seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        if let Ok(depth) = queue.len() {
            metrics
                .queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        let inner = Arc::new(Inner {
            global: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            routes,
            queue,
            metrics,
            clock,
            outcomes: tx,
            wake: Notify::new(),
            stop: watch::channel(false).0,
            in_flight: Mutex::new(HashSet::new()),
            providers,
            apps: Mutex::new(HashMap::new()),
            rng: Mutex::new(rng),
            admit: Mutex::new(()),
        });
        let worker = tokio::spawn(Arc::clone(&inner).run());
        (Self { inner, worker }, rx)
    }

    /// Validates and durably queues a push, returning its id.
    ///
    /// Fails without queueing on an unknown route, an invalid payload (too large, collapse id
    /// too long…), or a full queue ([`PushError::Shed`], counted in `push_shed`).
    pub fn submit(&self, request: PushRequest) -> Result<u64, PushError> {
        let inner = &self.inner;
        // Encode once now so a push that can never be sent is refused to the caller, not
        // discovered later by the worker.
        inner.validate(&request)?;
        let now = inner.clock.now_ms();
        let expires = now.saturating_add(request.ttl_secs.saturating_mul(1000));
        let _admit = inner.admit.lock().unwrap_or_else(|p| p.into_inner());
        let depth = inner.queue.len()?;
        if depth >= inner.config.capacity {
            inner.metrics.shed.inc();
            return Err(PushError::Shed {
                capacity: inner.config.capacity,
            });
        }
        let id = inner.queue.insert(request, now, expires)?;
        inner
            .metrics
            .queue_depth
            .set(i64::try_from(depth + 1).unwrap_or(i64::MAX));
        inner.wake.notify_one();
        Ok(id)
    }

    /// Pushes stored and not yet finished.
    pub fn pending(&self) -> Result<usize, PushError> {
        Ok(self.inner.queue.len()?)
    }

    /// What the queue holds now: how many pushes, how many are being sent, and the first
    /// `limit` by due time (for an operator's console; the queue is not changed).
    pub fn snapshot(&self, limit: usize) -> Result<QueueSnapshot, PushError> {
        let inner = &self.inner;
        let pending = inner.queue.len()?;
        let in_flight = inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let (next, _) = inner.queue.due(u64::MAX, limit, &|_| false)?;
        Ok(QueueSnapshot {
            pending,
            in_flight,
            next,
        })
    }

    /// Resolves once every push submitted (and every outcome recorded) before the call is
    /// durable in the queue.
    pub async fn flush(&self) -> Result<(), PushError> {
        Ok(self.inner.queue.flush().await?)
    }

    /// Stops taking pushes from the queue and waits for the sends in flight to finish.
    /// Pushes still queued stay in the queue for the next start.
    pub async fn shutdown(self) {
        self.inner.stop.send_replace(true);
        let _ = self.worker.await;
        let all = u32::try_from(self.inner.config.max_in_flight.max(1)).unwrap_or(u32::MAX);
        let _ = self.inner.global.acquire_many(all).await;
    }
}

impl Inner {
    fn validate(&self, request: &PushRequest) -> Result<(), PushError> {
        match request.device.platform {
            Platform::Apns => {
                let (_, topic) = self.apns_route(request)?;
                apns_notification(request, topic, u64::MAX).encode()?;
            }
            Platform::Fcm => {
                self.fcm_route(request)?;
                fcm_message(request, request.ttl_secs, None).encode()?;
            }
        }
        Ok(())
    }

    fn apns_route(&self, request: &PushRequest) -> Result<&(Arc<ApnsClient>, String), PushError> {
        self.routes
            .apns
            .get(&request.app)
            .ok_or_else(|| PushError::NoRoute {
                app: request.app.clone(),
                platform: "apns",
            })
    }

    fn fcm_route(&self, request: &PushRequest) -> Result<&Arc<FcmClient>, PushError> {
        self.routes
            .fcm
            .get(&request.app)
            .ok_or_else(|| PushError::NoRoute {
                app: request.app.clone(),
                platform: "fcm",
            })
    }

    async fn run(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        while !*stop.borrow() {
            let now = self.clock.now_ms();
            let due = {
                let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                self.queue
                    .due(now, self.config.batch, &|id| in_flight.contains(&id))
            };
            let (items, next) = match due {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "push queue read failed");
                    (Vec::new(), Some(now + 1000))
                }
            };
            if items.is_empty() {
                let sleep = next.map(|at| self.clock.instant_at(at));
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = sleep_until(sleep) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let mut batch = Vec::with_capacity(items.len());
            for item in items {
                let permit = tokio::select! {
                    p = Arc::clone(&self.global).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stop.changed() => return,
                };
                let resent = item.sending;
                match self.queue.start_send(item.id) {
                    Ok(Some(item)) => {
                        self.in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(item.id);
                        batch.push((item, resent, permit));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, id = item.id, "push send mark failed"),
                }
            }
            // Recorded before made: no send leaves until its mark is durable, so a restart
            // can tell a send whose answer was lost from one never made.
            if let Err(e) = self.queue.flush().await {
                tracing::error!(error = %e, "push queue flush failed; sends held");
                for (item, _, _) in &batch {
                    self.in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&item.id);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            for (item, resent, permit) in batch {
                if resent {
                    self.metrics.resent_after_restart.inc();
                }
                tokio::spawn(Arc::clone(&self).process(item, permit));
            }
        }
    }

    async fn process(self: Arc<Self>, item: QueuedPush, _global: OwnedSemaphorePermit) {
        let request = &item.request;
        let platform = request.device.platform;
        let provider_key = match platform {
            Platform::Apns => self
                .routes
                .apns
                .get(&request.app)
                .map(|(c, _)| Arc::as_ptr(c) as usize),
            Platform::Fcm => self
                .routes
                .fcm
                .get(&request.app)
                .map(|c| Arc::as_ptr(c) as usize),
        };
        let provider_sem = provider_key.and_then(|k| self.providers.get(&k)).cloned();
        let app_sem = {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            let per_app = self.config.per_app.max(1);
            Arc::clone(
                apps.entry(request.app.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(per_app))),
            )
        };
        let _provider = match provider_sem {
            Some(s) => s.acquire_owned().await.ok(),
            None => None,
        };
        let _app = app_sem.acquire_owned().await.ok();

        let label = labels(platform, &request.app);
        let gauge = self.metrics.in_flight.get_or_create(&label).clone();
        gauge.inc();
        let started = Instant::now();
        let result = self.send(&item).await;
        gauge.dec();
        self.metrics
            .latency
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        // `start_send` counted this attempt already.
        let attempts = item.attempts;
        let (status, reason) = match &result {
            Ok(c) => (c.status.to_string(), c.reason.clone()),
            Err(e) => ("transport".to_owned(), transport_reason(e).to_owned()),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                provider: label.provider.clone(),
                app: label.app.clone(),
                status,
                reason: reason.clone(),
            })
            .inc();

        let verdict = match result {
            Ok(c) => c.verdict,
            Err(e) if e.is_transport() => Verdict::Retryable {
                retry_after: None,
                min_delay: None,
            },
            Err(PushError::Auth(_) | PushError::Config(_)) => Verdict::AuthConfig,
            Err(_) => Verdict::Permanent { bad_token: false },
        };
        let id = item.id;
        let app = request.app.clone();
        let outcome = match verdict {
            Verdict::Delivered => Some(PushOutcome::Delivered { id, app, attempts }),
            Verdict::Unregistered { since_ms }
                if should_prune(since_ms, request.device.registered_at_ms) =>
            {
                self.metrics.pruned.get_or_create(&label).inc();
                Some(PushOutcome::TokenPruned {
                    id,
                    request: Box::new(item.request.clone()),
                    reason,
                })
            }
            Verdict::Unregistered { .. } => Some(PushOutcome::Failed {
                id,
                app,
                kind: FailureKind::StaleUnregistered,
                reason,
            }),
            Verdict::Permanent { bad_token: true } => {
                self.metrics.bad_device_token.get_or_create(&label).inc();
                Some(PushOutcome::TokenRejected {
                    id,
                    request: Box::new(item.request.clone()),
                    reason,
                })
            }
            Verdict::Permanent { bad_token: false } => Some(PushOutcome::Failed {
                id,
                app,
                kind: FailureKind::Permanent,
                reason,
            }),
            // RefreshAuth here means the client's one re-mint was refused too.
            Verdict::AuthConfig | Verdict::RefreshAuth => Some(PushOutcome::Failed {
                id,
                app,
                kind: FailureKind::Auth,
                reason,
            }),
            retryable @ Verdict::Retryable { .. } => {
                let now = self.clock.now_ms();
                let remaining = Duration::from_millis(item.expires_at_ms.saturating_sub(now));
                let delay = {
                    let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                    self.config
                        .retry
                        .next_delay(attempts, &retryable, Some(remaining), &mut rng)
                };
                match delay {
                    Some(delay) => {
                        let at = now + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2);
                        match self.queue.reschedule(id, attempts, at) {
                            Ok(()) => {
                                self.metrics.retries.get_or_create(&label).inc();
                                None
                            }
                            Err(e) => {
                                tracing::error!(error = %e, id, "push reschedule failed");
                                Some(PushOutcome::Failed {
                                    id,
                                    app,
                                    kind: FailureKind::Expired,
                                    reason: e.to_string(),
                                })
                            }
                        }
                    }
                    None => Some(PushOutcome::Failed {
                        id,
                        app,
                        kind: FailureKind::Expired,
                        reason,
                    }),
                }
            }
        };
        if let Some(outcome) = outcome {
            if let Err(e) = self.queue.remove(id) {
                tracing::error!(error = %e, id, "push remove failed: it will be sent again after a restart");
            }
            if let Ok(depth) = self.queue.len() {
                self.metrics
                    .queue_depth
                    .set(i64::try_from(depth).unwrap_or(i64::MAX));
            }
            let _ = self.outcomes.send(outcome).await;
        }
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.wake.notify_one();
    }

    async fn send(&self, item: &QueuedPush) -> Result<Classification, PushError> {
        let request = &item.request;
        match request.device.platform {
            Platform::Apns => {
                let (client, topic) = self.apns_route(request)?;
                let n = apns_notification(request, topic, item.expires_at_ms / 1000);
                Ok(client.send(&n).await?.classification)
            }
            Platform::Fcm => {
                let client = self.fcm_route(request)?;
                let left = item.expires_at_ms.saturating_sub(self.clock.now_ms()) / 1000;
                Ok(client
                    .send(&fcm_message(request, left, Some(item.expires_at_ms / 1000)))
                    .await?
                    .classification)
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn transport_reason(e: &PushError) -> &'static str {
    match e {
        PushError::Connect { .. } => "connect",
        PushError::Http(_) => "http2",
        PushError::Timeout(_) => "timeout",
        _ => "local",
    }
}

fn apns_notification(request: &PushRequest, topic: &str, expiration: u64) -> ApnsNotification {
    let token = request.device.token.clone();
    let mut n = match &request.kind {
        PushKind::Alert { title, body } => {
            let mut n = ApnsNotification::alert(token, topic, title, body);
            n.payload.aps.badge = request.badge;
            n
        }
        PushKind::WakeUp => ApnsNotification::wake_up(token, topic),
    };
    n.expiration = (expiration != u64::MAX).then_some(expiration);
    n.collapse_id = request.collapse_id.clone();
    for (k, v) in &request.data {
        n.payload
            .custom
            .insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    n
}

/// The FCM message of a push: the badge where Android shows it (`notification_count`, on an
/// alert only) and in `data`, and an `apns` block for iOS apps reached through FCM (their
/// push type, priority, expiry, collapse id and badge, as a direct APNs push would carry).
fn fcm_message(request: &PushRequest, ttl_secs: u64, expiration_secs: Option<u64>) -> FcmMessage {
    let token = request.device.token.clone();
    let alert = matches!(request.kind, PushKind::Alert { .. });
    let mut m = match &request.kind {
        PushKind::Alert { title, body } => FcmMessage::notification(token, title, body),
        PushKind::WakeUp => FcmMessage::wake_up(token, Default::default()),
    };
    m.data
        .extend(request.data.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(badge) = request.badge {
        m.data.insert("badge".into(), badge.to_string());
    }
    m.android = Some(AndroidConfig {
        priority: Some(AndroidPriority::High),
        collapse_key: request.collapse_id.clone(),
        ttl: Some(Duration::from_secs(ttl_secs)),
        notification: alert.then_some(AndroidNotification {
            notification_count: request.badge,
        }),
        ..AndroidConfig::default()
    });
    // Apple: a background push is priority 5 and carries only `content-available`.
    let (push_type, priority) = if alert {
        ("alert", "10")
    } else {
        ("background", "5")
    };
    let mut headers = std::collections::BTreeMap::from([
        ("apns-push-type".to_owned(), push_type.to_owned()),
        ("apns-priority".to_owned(), priority.to_owned()),
    ]);
    if let Some(at) = expiration_secs {
        headers.insert("apns-expiration".into(), at.to_string());
    }
    // Android takes longer collapse keys than APNs: a longer one is left to Android alone.
    if let Some(collapse) = request
        .collapse_id
        .as_ref()
        .filter(|c| c.len() <= crate::apns::COLLAPSE_ID_MAX)
    {
        headers.insert("apns-collapse-id".into(), collapse.clone());
    }
    m.apns = Some(ApnsOverride {
        headers,
        payload: Some(ApnsPayload {
            aps: Aps {
                badge: request.badge.filter(|_| alert),
                content_available: (!alert).then_some(1),
                ..Aps::default()
            },
            custom: Default::default(),
        }),
    });
    m
}
