//! The push thread: one task owns the policy state, the device store and the dispatcher, and
//! takes commands and dispatcher outcomes in turn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imgate_push::{
    ApnsClient, Device, Dispatcher, FcmClient, Platform, PushKind, PushOutcome, PushQueue,
    PushRequest, Routes,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::persist;
use super::state::{Planned, PolicyState};
use super::store::{DeviceRegistration, DeviceStore, RegisteredDevice, StoreError};
use super::{ApnsSettings, PushLimits, PushServiceError, PushServiceMetrics};
use crate::backend::Backend;
use crate::deliver::PushOptions;
use crate::ids::{AppId, DeviceId, MessageId, UserId};
use crate::offline::{Presence, PushTrigger};

/// How long a stopping push thread waits for its backend notices.
const NOTICE_GRACE: Duration = Duration::from_secs(5);

/// Wall-clock ms since the epoch (registration times, compared with APNs 410 timestamps).
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Work for the push thread.
pub(crate) enum Command {
    Message(MessageId, Arc<PushOptions>),
    Push {
        user: UserId,
        device: Option<DeviceId>,
        messages: Vec<MessageId>,
        trigger: PushTrigger,
    },
    Acked {
        user: UserId,
        messages: Vec<MessageId>,
    },
    Presence(Arc<dyn Presence>),
    Register {
        user: UserId,
        device: DeviceId,
        registration: DeviceRegistration,
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    Unregister {
        user: UserId,
        device: DeviceId,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Devices {
        user: UserId,
        reply: oneshot::Sender<Result<Vec<RegisteredDevice>, StoreError>>,
    },
    Badge {
        user: UserId,
        reply: oneshot::Sender<u32>,
    },
    /// The dispatcher's queue, with its first `limit` pushes (the admin console).
    Queue {
        limit: usize,
        reply: oneshot::Sender<Result<imgate_push::QueueSnapshot, imgate_push::PushError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Answered once every earlier command's pushes are committed to the push queue and the
    /// backend's notices (pruned tokens) are handed over: a drain waits for it.
    Flush {
        reply: oneshot::Sender<()>,
    },
    /// Answered once every earlier command's pushes and records are committed to the push
    /// queue; the wait runs beside the loop, which goes on taking commands.
    Committed {
        reply: oneshot::Sender<()>,
    },
}

pub(crate) struct Setup {
    pub(crate) app: AppId,
    pub(crate) apns: Option<ApnsSettings>,
    pub(crate) fcm: Option<imgate_push::FcmConfig>,
    pub(crate) store: Arc<dyn DeviceStore>,
    pub(crate) queue: Arc<dyn PushQueue>,
    pub(crate) backend: Option<Arc<dyn Backend>>,
    pub(crate) limits: PushLimits,
    pub(crate) metrics: PushServiceMetrics,
    pub(crate) commands: mpsc::Receiver<Command>,
}

/// Starts the push thread; returns once its dispatcher runs (or setup failed).
pub(crate) fn spawn(setup: Setup) -> Result<std::thread::JoinHandle<()>, PushServiceError> {
    let mut routes = Routes::new();
    let app = setup.app.to_string();
    if let Some(apns) = &setup.apns {
        let client = ApnsClient::new(&apns.config)
            .map_err(|e| PushServiceError::Setup(format!("APNs: {e}")))?
            .with_refresh_counter(
                setup
                    .metrics
                    .push
                    .token_refresh_counter(Platform::Apns, &app),
            );
        routes.apns(app.clone(), Arc::new(client), apns.topic.clone());
    }
    if let Some(fcm) = &setup.fcm {
        let client = FcmClient::new(fcm)
            .map_err(|e| PushServiceError::Setup(format!("FCM: {e}")))?
            .with_refresh_counter(
                setup
                    .metrics
                    .push
                    .token_refresh_counter(Platform::Fcm, &app),
            );
        routes.fcm(app.clone(), Arc::new(client));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PushServiceError::Setup(format!("push runtime: {e}")))?;
    std::thread::Builder::new()
        .name(format!("imgate-push-{app}"))
        .spawn(move || {
            let reply = runtime.block_on(async move {
                let mut state = PolicyState::new(setup.limits.policy.clone());
                match persist::restore(&*setup.queue, &mut state, Instant::now(), wall_ms()) {
                    Ok((0, 0)) => {}
                    Ok((messages, users)) => {
                        tracing::info!(app = %setup.app, messages, users, "push policy state restored");
                    }
                    Err(error) => {
                        tracing::error!(app = %setup.app, %error, "push policy state not restored");
                    }
                }
                let (dispatcher, outcomes) = Dispatcher::start(
                    setup.limits.dispatcher.clone(),
                    routes,
                    Arc::clone(&setup.queue),
                    setup.metrics.push.clone(),
                );
                let worker = Worker {
                    app: setup.app,
                    state,
                    presence: None,
                    queue: setup.queue,
                    store: setup.store,
                    backend: setup.backend,
                    limits: setup.limits,
                    metrics: setup.metrics,
                    dispatcher,
                    notices: tokio::task::JoinSet::new(),
                };
                worker.run(setup.commands, outcomes).await
            });
            // Every task (and with them the queue and the store) is gone before the caller
            // hears that the service stopped, so the files can be opened again at once.
            drop(runtime);
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
        })
        .map_err(|e| PushServiceError::Setup(format!("push thread: {e}")))
}

struct Worker {
    app: AppId,
    state: PolicyState,
    presence: Option<Arc<dyn Presence>>,
    queue: Arc<dyn PushQueue>,
    store: Arc<dyn DeviceStore>,
    backend: Option<Arc<dyn Backend>>,
    limits: PushLimits,
    metrics: PushServiceMetrics,
    dispatcher: Dispatcher,
    // Calls into the backend (pruned tokens) and `Committed` waits, finished before the
    // push thread ends.
    notices: tokio::task::JoinSet<()>,
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut outcomes: mpsc::Receiver<PushOutcome>,
    ) -> Option<oneshot::Sender<()>> {
        let mut sweep = tokio::time::interval(
            Duration::from_secs(1).min(
                self.limits
                    .policy
                    .message_ttl
                    .max(Duration::from_millis(10)),
            ),
        );
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut outcomes_open = true;
        let reply = loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => break None,
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(Command::Flush { reply }) => {
                        self.persist();
                        if let Err(error) = self.dispatcher.flush().await {
                            tracing::warn!(app = %self.app, %error, "push queue flush failed");
                        }
                        if let Some(backend) = &self.backend {
                            backend.flush_notices().await;
                        }
                        let _ = reply.send(());
                    }
                    Some(command) => {
                        self.command(command);
                        self.persist();
                    }
                },
                outcome = outcomes.recv(), if outcomes_open => match outcome {
                    Some(outcome) => self.outcome(outcome),
                    None => outcomes_open = false,
                },
                _ = sweep.tick() => {
                    self.state.evict(Instant::now());
                    self.persist();
                }
            }
        };
        self.dispatcher.shutdown().await;
        // A backend's notice tasks run on this thread's runtime: let them finish (bounded)
        // before it is dropped, so no pruned-token report is lost on a clean stop.
        let notices = async {
            while self.notices.join_next().await.is_some() {}
            if let Some(backend) = &self.backend {
                backend.flush_notices().await;
            }
        };
        if tokio::time::timeout(NOTICE_GRACE, notices).await.is_err() {
            tracing::warn!(app = %self.app, "push stopped with backend notices still unsent");
        }
        reply
    }

    fn count(&self, event: &'static str, n: u64) {
        self.metrics.count(&self.app, event, n);
    }

    /// Journals the policy records changed since the last call, beside the push queue.
    fn persist(&mut self) {
        let dirty = self.state.take_dirty();
        if dirty.is_empty() {
            return;
        }
        if let Err(error) = persist::write(&*self.queue, dirty, Instant::now(), wall_ms()) {
            tracing::warn!(app = %self.app, %error, "push policy state not written");
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Message(id, options) => self.state.on_message(Instant::now(), id, options),
            Command::Push {
                user,
                device,
                messages,
                trigger,
            } => self.push(&user, device.as_ref(), &messages, trigger),
            Command::Acked { user, messages } => self.state.acked(&user, &messages),
            Command::Presence(presence) => self.presence = Some(presence),
            Command::Register {
                user,
                device,
                registration,
                reply,
            } => {
                let result = self.store.put(&self.app, &user, &device, &registration);
                match &result {
                    Ok(()) => self.count("registered", 1),
                    Err(error) => {
                        tracing::warn!(app = %self.app, %user, %device, %error, "push registration not stored");
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Command::Unregister {
                user,
                device,
                reply,
            } => {
                let result = self
                    .store
                    .remove(&self.app, &user, &device)
                    .map(|old| old.is_some());
                let _ = reply.send(result);
            }
            Command::Devices { user, reply } => {
                let _ = reply.send(self.store.devices(&self.app, &user));
            }
            Command::Badge { user, reply } => {
                let _ = reply.send(self.state.badge(&user));
            }
            Command::Queue { limit, reply } => {
                let _ = reply.send(self.dispatcher.snapshot(limit));
            }
            Command::Committed { reply } => {
                // The journal holds every earlier write already; the commit is awaited on a
                // task of this thread's runtime, so a session end's hand-off never holds up
                // the pushes behind it.
                let queue = Arc::clone(&self.queue);
                self.notices.spawn(async move {
                    if let Err(error) = queue.flush().await {
                        tracing::warn!(%error, "push queue commit failed");
                    }
                    let _ = reply.send(());
                });
            }
            Command::Shutdown { .. } | Command::Flush { .. } => {
                unreachable!("handled by the loop")
            }
        }
    }

    fn push(
        &mut self,
        user: &UserId,
        device: Option<&DeviceId>,
        messages: &[MessageId],
        trigger: PushTrigger,
    ) {
        let mut devices = match self.store.devices(&self.app, user) {
            Ok(devices) => devices,
            Err(error) => {
                tracing::warn!(app = %self.app, %user, %error, "device lookup failed; no push");
                self.count("submit_error", 1);
                return;
            }
        };
        if let Some(device) = device {
            let attached = self.attached_if_widened(user, trigger);
            devices.retain(|d| {
                d.device == *device
                    || attached
                        .as_ref()
                        .is_some_and(|attached| !attached.contains(&d.device))
            });
        }
        if devices.is_empty() {
            self.count("no_device", 1);
            return;
        }
        let (planned, skipped) = self.state.plan(user, &devices, messages);
        self.count("unknown_message", skipped.unknown.into());
        self.count("acked_skip", skipped.acked.into());
        self.count("duplicate", skipped.duplicates.into());
        // The marks go into the journal before the pushes they cover: no crash can leave a
        // queued push whose de-duplication mark is lost.
        self.persist();
        for push in planned {
            let request = self.request(push);
            match self.dispatcher.submit(request) {
                Ok(_) => self.count("submitted", 1),
                Err(error) => {
                    tracing::warn!(app = %self.app, %user, ?trigger, %error, "push not submitted");
                    self.count("submit_error", 1);
                }
            }
        }
    }

    /// The multi-device rule: besides the device the trigger names, the user's devices
    /// without an attached session get the push when this returns the attached ones. A
    /// message that an attached device failed to acknowledge in time (`AckTimeout`) widens
    /// the push; a missed message of a detached or ended session does too when no device is
    /// attached at all. While another device is attached it is given its chance: its own
    /// ack time-out widens the push, its ack cancels it. Without presence (the gateway did
    /// not attach it), the push is never widened.
    fn attached_if_widened(&self, user: &UserId, trigger: PushTrigger) -> Option<Vec<DeviceId>> {
        let attached = self.presence.as_ref()?.attached(&self.app, user);
        let widen = match trigger {
            PushTrigger::AckTimeout => true,
            PushTrigger::DetachedGrace | PushTrigger::SessionEnded(_) => attached.is_empty(),
            PushTrigger::NoSession => false,
        };
        widen.then_some(attached)
    }

    fn request(&self, push: Planned) -> PushRequest {
        let Planned {
            device,
            options,
            messages,
            badge,
        } = push;
        let mut data: BTreeMap<String, String> = options.data.iter().cloned().collect();
        if let Some(newest) = messages.iter().max() {
            data.entry("message_id".into())
                .or_insert_with(|| newest.0.to_string());
        }
        let ttl_secs = match u64::from(options.ttl_secs) {
            0 => self.limits.default_ttl_secs,
            ttl => ttl.min(self.limits.max_ttl_secs),
        };
        PushRequest {
            app: self.app.to_string(),
            device: Device {
                platform: device.registration.platform,
                token: device.registration.token,
                registered_at_ms: device.registration.registered_at_ms,
            },
            kind: match &options.alert {
                Some(alert) => PushKind::Alert {
                    title: alert.title.to_string(),
                    body: alert.body.to_string(),
                },
                None => PushKind::WakeUp,
            },
            badge: Some(badge),
            collapse_id: options.collapse_id.clone(),
            ttl_secs,
            data,
        }
    }

    fn outcome(&mut self, outcome: PushOutcome) {
        match outcome {
            PushOutcome::Delivered { .. } => self.count("delivered", 1),
            PushOutcome::TokenPruned {
                request, reason, ..
            } => {
                self.count("token_pruned", 1);
                let token = request.device.token;
                match self.store.remove_token(&self.app, &token) {
                    Ok(Some((user, device))) => {
                        tracing::info!(app = %self.app, %user, %device, %reason, "push token pruned");
                        if let Some(backend) = self.backend.clone() {
                            let app = self.app.clone();
                            while self.notices.try_join_next().is_some() {}
                            self.notices.spawn(async move {
                                backend
                                    .on_push_token_invalid(&app, &user, &device, &token, &reason)
                                    .await;
                            });
                        }
                    }
                    // Re-registered with another token since, or already gone.
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(app = %self.app, %error, "pruning a push token failed");
                    }
                }
            }
            PushOutcome::TokenRejected { reason, .. } => {
                // Usually a sandbox/production or topic mix-up: keep the token, raise an alert.
                self.count("token_rejected", 1);
                tracing::warn!(app = %self.app, %reason, "push token rejected (kept)");
            }
            PushOutcome::Failed { kind, reason, .. } => {
                self.count("failed", 1);
                tracing::debug!(app = %self.app, ?kind, %reason, "push failed");
            }
        }
    }
}
