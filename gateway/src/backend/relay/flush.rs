//! Hands a user's offline queue to the user's sessions when one of them starts.
//!
//! Paced by the triggering session's outbox: a window of at most half its bound goes out at
//! once (one group commit of the session store for the whole window), and the next only once
//! the device has acknowledged enough, so the hand-over never overflows the outbox (which
//! would end the session as a slow consumer). A message leaves the queue only after
//! `deliver` reported it sent or buffered (durable, for a durable app): a crash in between
//! delivers it again on the next login, with the same message id.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use super::queue::{OfflineLimits, OfflineQueue, QueuedMessage};
use crate::GatewayHandle;
use crate::deliver::{Delivery, DeliveryOptions, DeliveryReport, DeviceOutcome, Target};
use crate::handle::DeliverError;
use crate::ids::{AppId, SessionId, UserId};

/// How often a paced hand-over looks at the session's acknowledged point.
const PACE: Duration = Duration::from_millis(20);

/// The relay's queue for one app, with the users whose hand-over is running.
#[derive(Debug)]
pub(super) struct AppQueue {
    pub(super) queue: Arc<OfflineQueue>,
    pub(super) limits: OfflineLimits,
    /// Users being handed their queue; `true`: run once more when done (a message was queued
    /// or a session started meanwhile).
    running: Mutex<HashMap<(AppId, UserId), bool>>,
}

impl AppQueue {
    pub(super) fn new(queue: Arc<OfflineQueue>, limits: OfflineLimits) -> Self {
        Self {
            queue,
            limits,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts handing `user`'s queue to their sessions (paced by `session`), unless a
    /// hand-over is running: that one then goes round once more.
    pub(super) fn start(
        self: &Arc<Self>,
        gateway: &GatewayHandle,
        app: &AppId,
        user: &UserId,
        session: SessionId,
    ) {
        let key = (app.clone(), user.clone());
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(again) = running.get_mut(&key) {
                *again = true;
                return;
            }
            running.insert(key.clone(), false);
        }
        let this = Arc::clone(self);
        let handle = gateway.clone();
        gateway.spawn(async move {
            loop {
                this.hand_over(&handle, &key.0, &key.1, session).await;
                let mut running = this.running.lock().unwrap_or_else(|e| e.into_inner());
                match running.get_mut(&key) {
                    Some(again) if *again => *again = false,
                    _ => {
                        running.remove(&key);
                        return;
                    }
                }
            }
        });
    }

    async fn hand_over(
        &self,
        gateway: &GatewayHandle,
        app: &AppId,
        user: &UserId,
        session: SessionId,
    ) {
        let Some(settings) = gateway.app(app).map(|a| Arc::clone(&a.session)) else {
            return;
        };
        let window = u64::try_from((settings.max_unacked / 2).max(1)).unwrap_or(u64::MAX);
        let window_bytes = (settings.max_unacked_bytes / 2).max(1);
        loop {
            let room = loop {
                match gateway.session_backlog(session) {
                    // Detached or gone: what is left waits for the next login.
                    None => return,
                    Some(backlog) if backlog < window => break window - backlog,
                    Some(_) => tokio::time::sleep(PACE).await,
                }
            };
            let limit = usize::try_from(room).unwrap_or(usize::MAX);
            let messages = match self.queue.oldest(app, user, limit).await {
                Ok(messages) if messages.is_empty() => return,
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%app, %user, %error, "offline queue unreadable");
                    return;
                }
            };
            let now = self.queue.now_ms();
            let (expired, live): (Vec<_>, Vec<_>) =
                messages.into_iter().partition(|m| m.expires_at_ms <= now);
            let mut done: Vec<u64> = expired.iter().map(|m| m.order).collect();
            let mut bytes = 0;
            let live: Vec<QueuedMessage> = live
                .into_iter()
                .take_while(|m| {
                    bytes += m.payload.len();
                    // The first always goes: a lone large message must not block the queue.
                    bytes == m.payload.len() || bytes <= window_bytes
                })
                .collect();
            let orders: Vec<u64> = live.iter().map(|m| m.order).collect();
            let reports = deliver_in_order(gateway, app, user, live).await;
            let mut stopped = false;
            for (order, report) in orders.into_iter().zip(reports) {
                if reached(&report) {
                    done.push(order);
                } else {
                    // Not taken (the session ended or the store failed): it and the rest stay.
                    stopped = true;
                    break;
                }
            }
            let delivered = done.len() - expired.len();
            if let Err(error) = self.queue.remove(app, user, done).await {
                tracing::warn!(%app, %user, %error, "offline queue: delivered messages not removed");
                return;
            }
            let metrics = self.queue.metrics();
            metrics.add("expired", expired.len());
            metrics.add("delivered", delivered);
            if stopped {
                return;
            }
        }
    }
}

/// Whether a session of the user took the message (sent, or buffered for its resume).
fn reached(report: &Result<DeliveryReport, DeliverError>) -> bool {
    report.as_ref().is_ok_and(|report| {
        report.devices.iter().any(|d| {
            matches!(
                d.outcome,
                DeviceOutcome::Sent { .. } | DeviceOutcome::Buffered { .. }
            )
        })
    })
}

/// Delivers `messages` to `user`, concurrently but in order: every `deliver` future is polled
/// once, in order, before any is polled again, and `deliver` assigns the sessions' sequence
/// numbers before its first await, so the window keeps its order and shares one store commit.
async fn deliver_in_order(
    gateway: &GatewayHandle,
    app: &AppId,
    user: &UserId,
    messages: Vec<QueuedMessage>,
) -> Vec<Result<DeliveryReport, DeliverError>> {
    let mut pending: Vec<_> = messages
        .into_iter()
        .map(|m| {
            Box::pin(gateway.deliver(
                app,
                Delivery {
                    target: Target::User(user.clone()),
                    payload: m.payload,
                    options: DeliveryOptions {
                        from: m.from,
                        // Pushed when it was queued.
                        push: None,
                        message_id: Some(m.message_id),
                        sent_at_ms: Some(m.sent_at_ms),
                        exclude_session: None,
                    },
                },
            ))
        })
        .collect();
    let mut results: Vec<Option<Result<DeliveryReport, DeliverError>>> =
        pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, result) in pending.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(report) => *result = Some(report),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
