//! Push fallback for offline devices: the device registry, the push policy and unread badges,
//! over `imgate-push`'s dispatcher.
//!
//! [`PushService`] implements [`PushPolicy`] for one app. The gateway tells it which messages
//! carry push options ([`PushPolicy::on_message`]), which devices missed which messages
//! ([`PushPolicy::push`]: no session, detached past the grace period, ack time-out, session
//! ended) and what the devices acknowledged. It looks the user's tokens up in a
//! [`DeviceStore`], submits exactly one push per (message, device) (one per collapse id), with
//! the user's unread badge (the user's pushed messages no device of theirs acknowledged), and
//! widens a push to the user's devices without an attached session when no device took the
//! message in time (the multi-device rule, over the gateway's [`Presence`]), and handles the dispatcher's outcomes: a dead token is deleted and
//! the app's backend told ([`Backend::on_push_token_invalid`]); a rejected one is kept and
//! counted.
//!
//! # Layout
//!
//! - `store`: [`DeviceStore`], [`MemoryDeviceStore`], [`RedbDeviceStore`].
//! - `state`: the sans-IO memory: message options, duplicate suppression, badges.
//! - `persist`: that memory as records beside the push queue.
//! - `presence`: [`Presence`] over the gateway's registry.
//! - `worker`: the push thread: one task owns the state, the store and the dispatcher.
//! - `validate`: token shape and app-configuration checks for registrations.
//!
//! # Threading
//!
//! The gateway's hooks never block: they validate, enqueue a command (bounded; overflow is
//! counted and dropped) and return. A dedicated thread runs a current-thread tokio runtime
//! hosting the worker, the dispatcher and the provider connections, so redb commits and
//! provider I/O never stall a connection task, and the service can be built before (or
//! without) the gateway's runtime.
//!
//! # What is kept across a restart
//!
//! With a data directory: registrations (redb store), queued pushes (redb queue), and the
//! policy's memory (push options, duplicate-suppression marks, acknowledgements, badges) as
//! records in the queue's file, journaled before the pushes they cover. Without one, nothing.

mod persist;
mod presence;
mod state;
mod store;
mod validate;
mod worker;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use imgate_push::{
    ApnsConfig, DispatcherConfig, FcmConfig, MemoryQueue, PushMetrics, PushQueue, RedbQueue,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

pub use state::PolicyLimits;
pub use store::{
    DeviceRegistration, DeviceStore, MemoryDeviceStore, RedbDeviceStore, RegisteredDevice,
    StoreError,
};

use crate::backend::Backend;
use crate::deliver::PushOptions;
use crate::ids::{AppId, DeviceId, MessageId, UserId};
use crate::offline::{Presence, PushPolicy, PushRegistration, PushTrigger, PushUserState};
use crate::session::Identity;
use worker::Command;

/// Which APNs environment a credential talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsEnvironment {
    /// `api.push.apple.com`: only production tokens are accepted at registration.
    Production,
    /// `api.sandbox.push.apple.com`: only sandbox tokens are accepted.
    Sandbox,
    /// Another URL (a mock, a proxy): tokens of either environment are accepted.
    Custom,
}

/// APNs settings of one app.
#[derive(Clone, Debug)]
pub struct ApnsSettings {
    /// Credential and endpoint.
    pub config: ApnsConfig,
    /// `apns-topic` (the bundle id); registrations must name the same topic.
    pub topic: String,
    /// Which tokens registrations may carry.
    pub environment: ApnsEnvironment,
}

/// Tunables of a [`PushService`], with safe defaults.
#[derive(Clone, Debug)]
pub struct PushLimits {
    /// Memory bounds of the policy.
    pub policy: PolicyLimits,
    /// TTL of a push whose options say 0, seconds.
    pub default_ttl_secs: u64,
    /// Largest TTL accepted, seconds (APNs keeps at most 30 days, FCM 4 weeks).
    pub max_ttl_secs: u64,
    /// Commands (hook calls) waiting for the push thread; beyond it they are dropped and
    /// counted (`event="overloaded"`).
    pub command_buffer: usize,
    /// Dispatcher limits (queue capacity, concurrency, retries).
    pub dispatcher: DispatcherConfig,
}

impl Default for PushLimits {
    fn default() -> Self {
        Self {
            policy: PolicyLimits::default(),
            default_ttl_secs: 24 * 3600,
            max_ttl_secs: 28 * 24 * 3600,
            command_buffer: 65_536,
            dispatcher: DispatcherConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    app: String,
    event: &'static str,
}

/// Metrics of every push service: `imgate-push`'s own plus the policy's events. Create one
/// per registry and share it between apps (series carry an `app` label).
#[derive(Clone, Debug)]
pub struct PushServiceMetrics {
    push: PushMetrics,
    events: Family<EventLabels, Counter>,
}

impl PushServiceMetrics {
    /// Registers the metrics into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let push = PushMetrics::new(registry);
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "push_policy_events",
            "Push policy events by app: submitted, duplicate, acked_skip, unknown_message, \
             no_device, submit_error, overloaded, registered, registration_refused, \
             token_pruned, token_rejected, delivered, failed",
            events.clone(),
        );
        Self { push, events }
    }

    pub(crate) fn count(&self, app: &AppId, event: &'static str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&EventLabels {
                    app: app.to_string(),
                    event,
                })
                .inc_by(n);
        }
    }

    /// The count of `event` for `app` so far (tests, diagnostics).
    pub fn event_count(&self, app: &AppId, event: &'static str) -> u64 {
        self.events
            .get_or_create(&EventLabels {
                app: app.to_string(),
                event,
            })
            .get()
    }
}

/// Why a registration or a service call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushServiceError {
    /// The registration is malformed or does not fit the app's push configuration.
    #[error("invalid push registration: {0}")]
    Invalid(String),
    /// The call named another app than the service's.
    #[error("push service of app {expected} called for app {got}")]
    WrongApp {
        /// This service's app.
        expected: AppId,
        /// The app named.
        got: AppId,
    },
    /// The device store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building the providers, the queue or the push thread failed.
    #[error("push setup: {0}")]
    Setup(String),
    /// The push queue failed.
    #[error("push queue: {0}")]
    Queue(imgate_push::PushError),
    /// The service was shut down.
    #[error("push service stopped")]
    Stopped,
}

/// Builds a [`PushService`].
pub struct PushServiceBuilder {
    app: AppId,
    apns: Option<ApnsSettings>,
    fcm: Option<FcmConfig>,
    store: Option<Arc<dyn DeviceStore>>,
    queue: Option<Arc<dyn PushQueue>>,
    backend: Option<Arc<dyn Backend>>,
    limits: PushLimits,
}

impl fmt::Debug for PushServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushServiceBuilder")
            .field("app", &self.app)
            .field("apns", &self.apns)
            .field("fcm", &self.fcm.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PushServiceBuilder {
    /// Sends APNs pushes with this credential.
    pub fn apns(mut self, settings: ApnsSettings) -> Self {
        self.apns = Some(settings);
        self
    }

    /// Sends FCM pushes with this credential.
    pub fn fcm(mut self, config: FcmConfig) -> Self {
        self.fcm = Some(config);
        self
    }

    /// Keeps registrations in `store` (default: in memory).
    pub fn store(mut self, store: Arc<dyn DeviceStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keeps pending pushes in `queue` (default: in memory).
    pub fn queue(mut self, queue: Arc<dyn PushQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Opens `dir/push-devices.redb` and `dir/push-queue.redb` (creating `dir`): nothing is
    /// lost across a restart.
    pub fn data_dir(self, dir: impl AsRef<Path>) -> Result<Self, PushServiceError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| PushServiceError::Setup(format!("{}: {e}", dir.display())))?;
        let store = RedbDeviceStore::open(dir.join("push-devices.redb"))?;
        let queue = RedbQueue::open(dir.join("push-queue.redb"))
            .map_err(|e| PushServiceError::Setup(format!("push queue: {e}")))?;
        Ok(self.store(Arc::new(store)).queue(Arc::new(queue)))
    }

    /// Tells `backend` about dead tokens.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: PushLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Starts the push thread (dispatcher included: pushes left in a durable queue by a
    /// previous run are sent now).
    pub fn start(self, metrics: &PushServiceMetrics) -> Result<PushService, PushServiceError> {
        let (tx, rx) = mpsc::channel(self.limits.command_buffer.max(1));
        let checks = validate::Checks {
            apns: self.apns.as_ref().map(|a| (a.topic.clone(), a.environment)),
            fcm: self.fcm.is_some(),
        };
        let thread = worker::spawn(worker::Setup {
            app: self.app.clone(),
            apns: self.apns,
            fcm: self.fcm,
            store: self
                .store
                .unwrap_or_else(|| Arc::new(MemoryDeviceStore::new())),
            queue: self.queue.unwrap_or_else(|| Arc::new(MemoryQueue::new())),
            backend: self.backend,
            limits: self.limits,
            metrics: metrics.clone(),
            commands: rx,
        })?;
        Ok(PushService {
            inner: Arc::new(Inner {
                app: self.app,
                checks,
                metrics: metrics.clone(),
                commands: tx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }
}

struct Inner {
    app: AppId,
    checks: validate::Checks,
    metrics: PushServiceMetrics,
    commands: mpsc::Sender<Command>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The push policy of one app. Cheap to clone. See the module docs.
#[derive(Clone)]
pub struct PushService {
    inner: Arc<Inner>,
}

impl fmt::Debug for PushService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushService")
            .field("app", &self.inner.app)
            .finish_non_exhaustive()
    }
}

impl PushService {
    /// A builder for `app`'s push service.
    pub fn builder(app: AppId) -> PushServiceBuilder {
        PushServiceBuilder {
            app,
            apns: None,
            fcm: None,
            store: None,
            queue: None,
            backend: None,
            limits: PushLimits::default(),
        }
    }

    /// The app served.
    pub fn app(&self) -> &AppId {
        &self.inner.app
    }

    /// Registers (or replaces) `device`'s push token on behalf of the app's backend. Returns
    /// once the registration is stored.
    pub async fn register_device(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
        registration: PushRegistration,
    ) -> Result<(), PushServiceError> {
        self.check_app(app)?;
        let registration = self.validate(user, device, registration)?;
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::Register {
                user: user.clone(),
                device: device.clone(),
                registration,
                reply: Some(reply),
            },
            rx,
        )
        .await?
        .map_err(PushServiceError::Store)
    }

    /// Forgets `device`'s push token. Returns whether one was registered.
    pub async fn unregister(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<bool, PushServiceError> {
        self.check_app(app)?;
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::Unregister {
                user: user.clone(),
                device: device.clone(),
                reply,
            },
            rx,
        )
        .await?
        .map_err(PushServiceError::Store)
    }

    /// `user`'s registered devices.
    pub async fn devices(&self, user: &UserId) -> Result<Vec<RegisteredDevice>, PushServiceError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::Devices {
                user: user.clone(),
                reply,
            },
            rx,
        )
        .await?
        .map_err(PushServiceError::Store)
    }

    /// `user`'s unread badge (after every command sent before this call).
    pub async fn badge(&self, user: &UserId) -> Result<u32, PushServiceError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::Badge {
                user: user.clone(),
                reply,
            },
            rx,
        )
        .await
    }

    /// The push queue: how many pushes, how many in flight, the first `limit` by due time.
    pub async fn queue(
        &self,
        limit: usize,
    ) -> Result<imgate_push::QueueSnapshot, PushServiceError> {
        let (reply, rx) = oneshot::channel();
        self.call(Command::Queue { limit, reply }, rx)
            .await?
            .map_err(PushServiceError::Queue)
    }

    /// The metrics this service counts into.
    pub fn metrics(&self) -> &PushServiceMetrics {
        &self.inner.metrics
    }

    /// Stops the dispatcher (pushes still queued stay in a durable queue for the next
    /// start), closes the store and ends the push thread. Later calls are ignored.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            // The reply comes after the runtime is gone; joining is then immediate.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn call<T>(
        &self,
        command: Command,
        rx: oneshot::Receiver<T>,
    ) -> Result<T, PushServiceError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| PushServiceError::Stopped)?;
        rx.await.map_err(|_| PushServiceError::Stopped)
    }

    fn check_app(&self, app: &AppId) -> Result<(), PushServiceError> {
        if *app == self.inner.app {
            Ok(())
        } else {
            Err(PushServiceError::WrongApp {
                expected: self.inner.app.clone(),
                got: app.clone(),
            })
        }
    }

    fn validate(
        &self,
        user: &UserId,
        device: &DeviceId,
        registration: PushRegistration,
    ) -> Result<DeviceRegistration, PushServiceError> {
        let result = self.inner.checks.check(user, device, registration);
        if result.is_err() {
            self.count("registration_refused", 1);
        }
        result.map_err(PushServiceError::Invalid)
    }

    fn count(&self, event: &'static str, n: u64) {
        self.inner.metrics.count(&self.inner.app, event, n);
    }

    fn send(&self, command: Command) {
        if self.inner.commands.try_send(command).is_err() {
            self.count("overloaded", 1);
        }
    }
}

impl PushPolicy for PushService {
    fn on_message(&self, app: &AppId, message: MessageId, options: &PushOptions) {
        if *app == self.inner.app {
            self.send(Command::Message(message, Arc::new(options.clone())));
        }
    }

    fn push(
        &self,
        app: &AppId,
        user: &UserId,
        device: Option<&DeviceId>,
        messages: &[MessageId],
        trigger: PushTrigger,
    ) {
        if *app != self.inner.app || messages.is_empty() {
            return;
        }
        self.send(Command::Push {
            user: user.clone(),
            device: device.cloned(),
            messages: messages.to_vec(),
            trigger,
        });
    }

    fn attach_presence(&self, presence: Arc<dyn Presence>) {
        self.send(Command::Presence(presence));
    }

    fn flush(&self) -> crate::backend::BoxFuture<'_, ()> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            // A stopped service has nothing left to commit.
            let _ = self.call(Command::Flush { reply }, rx).await;
        })
    }

    fn committed(&self) -> crate::backend::BoxFuture<'_, ()> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            // A stopped service has nothing left to commit.
            let _ = self.call(Command::Committed { reply }, rx).await;
        })
    }

    fn stop(&self) -> crate::backend::BoxFuture<'_, ()> {
        Box::pin(async move {
            PushPolicy::flush(self).await;
            // Waits for the sends in flight; their outcomes are committed as the queue closes.
            self.shutdown().await;
        })
    }

    fn user_state<'a>(
        &'a self,
        user: &'a UserId,
    ) -> crate::backend::BoxFuture<'a, Option<Result<PushUserState, String>>> {
        Box::pin(async move {
            let state = async {
                let devices = self.devices(user).await?;
                let badge = self.badge(user).await?;
                Ok::<_, PushServiceError>(PushUserState { devices, badge })
            };
            Some(state.await.map_err(|e| e.to_string()))
        })
    }

    fn queue_state(
        &self,
        limit: usize,
    ) -> crate::backend::BoxFuture<'_, Option<Result<imgate_push::QueueSnapshot, String>>> {
        Box::pin(async move { Some(self.queue(limit).await.map_err(|e| e.to_string())) })
    }

    fn acked(&self, identity: &Identity, messages: &[MessageId]) {
        if identity.app == self.inner.app {
            self.send(Command::Acked {
                user: identity.user.clone(),
                messages: messages.to_vec(),
            });
        }
    }

    fn register(&self, identity: &Identity, registration: PushRegistration) -> Result<(), String> {
        self.check_app(&identity.app).map_err(|e| e.to_string())?;
        let registration = self
            .validate(&identity.user, &identity.device, registration)
            .map_err(|e| e.to_string())?;
        // The write happens on the push thread, in order with later pushes.
        self.inner
            .commands
            .try_send(Command::Register {
                user: identity.user.clone(),
                device: identity.device.clone(),
                registration,
                reply: None,
            })
            .map_err(|_| {
                self.count("overloaded", 1);
                "push registration is busy, retry later".to_owned()
            })
    }
}
