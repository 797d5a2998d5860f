//! The task that drives one session: feeds it frames, deliveries and timers, writes what it
//! transmits, and carries out its events. It outlives the connection while the session is
//! detached, and lets go as soon as a resume attaches the session elsewhere.

use std::sync::Arc;

use imgate_codec::{CloseCode, Compression, Receipt};
use imgate_transports::{FrameReader, FrameWriter};
use tokio::time::Instant;

use super::ServerConfig;
use crate::app::App;
use crate::backend::{Origin, UpstreamOutcome};
use crate::handle::GatewayHandle;
use crate::offline::{PushRegistration, PushTrigger};
use crate::registry::SessionCell;
use crate::session::{Event, Upstream};

type Connection = (FrameReader, FrameWriter);

pub(super) struct Driver {
    handle: GatewayHandle,
    app: App,
    cell: Arc<SessionCell>,
    origin: Origin,
    config: ServerConfig,
    generation: u64,
}

/// What one pass over the session's output asks for.
#[derive(Default)]
struct Output {
    events: Vec<Event>,
    deadline: Option<Instant>,
    stale: bool,
    /// The connection could not take more frames.
    slow: bool,
}

impl Driver {
    pub(super) fn new(
        handle: GatewayHandle,
        app: App,
        cell: Arc<SessionCell>,
        origin: Origin,
        config: ServerConfig,
    ) -> Self {
        let generation = cell.lock().generation();
        Self {
            handle,
            app,
            cell,
            origin,
            config,
            generation,
        }
    }

    /// Runs until the session ends or is resumed on another connection.
    pub(super) async fn run(
        self,
        mut connection: Option<Connection>,
        mut compression: Option<Compression>,
    ) {
        loop {
            let output = self.collect(connection.as_mut().map(|(_, w)| w), &mut compression);
            if output.stale {
                // Resumed elsewhere: the new driver owns the session and its events.
                if let Some((_, mut writer)) = connection.take() {
                    self.close(&mut writer, CloseCode::SESSION_TAKEN_OVER).await;
                }
                return;
            }
            if output.slow {
                self.cell.lock().detach(Instant::now());
            }
            let mut close = output.slow.then_some(CloseCode::SLOW_CONSUMER);
            let mut ended = false;
            let mut answered = false;
            for event in output.events {
                match event {
                    Event::Upstream { msg_id, request } => {
                        let outcome = match request {
                            Upstream::RegisterPush {
                                provider,
                                token,
                                topic,
                                sandbox,
                            } => self.register_push(PushRegistration {
                                provider,
                                token,
                                topic,
                                sandbox,
                            }),
                            request => {
                                self.app
                                    .backend
                                    .on_upstream(&self.handle, &self.origin, request)
                                    .await
                            }
                        };
                        self.cell.lock().handle_receipt(receipt(msg_id, outcome));
                        answered = true;
                    }
                    Event::Undelivered { reason, messages } => self.handle.hand_offline(
                        &self.app,
                        self.origin.identity.user.clone(),
                        Some(&self.origin.identity.device),
                        messages,
                        reason,
                    ),
                    Event::CloseConnection { code, .. } => close = Some(code),
                    Event::Ended => ended = true,
                    Event::Acked { message_ids, .. } => {
                        self.app.push.acked(&self.origin.identity, &message_ids);
                    }
                    Event::AckOverdue { message_ids } => {
                        self.push(&message_ids, PushTrigger::AckTimeout);
                    }
                    Event::PushGraceElapsed { message_ids } => {
                        self.push(&message_ids, PushTrigger::DetachedGrace);
                    }
                }
            }
            if ended {
                self.handle.shared.registry.remove(&self.cell);
                self.app
                    .backend
                    .on_disconnect(&self.handle, &self.origin)
                    .await;
            }
            if let Some(code) = close.or(ended.then_some(CloseCode::NORMAL))
                && let Some((_, mut writer)) = connection.take()
            {
                self.close(&mut writer, code).await;
            }
            if ended {
                return;
            }
            if answered {
                continue;
            }
            match connection.as_mut() {
                Some((reader, writer)) => {
                    if !self.wait_attached(reader, writer, output.deadline).await {
                        connection = None;
                        self.cell.lock().detach(Instant::now());
                    }
                }
                None => self.wait_detached(output.deadline).await,
            }
        }
    }

    fn push(&self, messages: &[crate::ids::MessageId], trigger: PushTrigger) {
        if messages.is_empty() {
            return;
        }
        let identity = &self.origin.identity;
        self.app.push.push(
            &identity.app,
            &identity.user,
            Some(&identity.device),
            messages,
            trigger,
        );
    }

    fn register_push(&self, registration: PushRegistration) -> UpstreamOutcome {
        match self.app.push.register(&self.origin.identity, registration) {
            Ok(()) => UpstreamOutcome::ok(imgate_codec::ReceiptStatus::Accepted, None),
            Err(reason) => UpstreamOutcome::rejected(CloseCode::BACKEND_REJECTED, reason),
        }
    }

    /// Drains the session's frames into the writer and its events into `Output`.
    fn collect(
        &self,
        writer: Option<&mut FrameWriter>,
        compression: &mut Option<Compression>,
    ) -> Output {
        let mut session = self.cell.lock();
        if session.generation() != self.generation {
            return Output {
                stale: true,
                ..Output::default()
            };
        }
        let mut output = Output::default();
        let now = Instant::now();
        if let Some(writer) = writer {
            while session.wants_transmit() {
                let Some(frame) = session.poll_transmit(now) else {
                    break;
                };
                if let Err(error) = writer.queue(&frame) {
                    tracing::debug!(session.id = %self.cell.id(), %error, "outbound queue full");
                    output.slow = true;
                    break;
                }
                // Compression starts right after Welcome, never before.
                if let Some(compression) = compression.take() {
                    writer.encoder_mut().set_compression(Some(compression));
                }
            }
        }
        output.events = std::iter::from_fn(|| session.poll_event()).collect();
        output.deadline = session.poll_timeout();
        output
    }

    /// Waits for input on an attached connection; false when the connection is gone.
    async fn wait_attached(
        &self,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
        deadline: Option<Instant>,
    ) -> bool {
        let sleep = sleep_until(deadline);
        tokio::select! {
            flushed = writer.flush(), if writer.queued_bytes() > 0 => {
                flushed.is_ok()
            }
            received = reader.recv() => match received {
                Ok(Some(frame)) => {
                    self.cell.lock().handle_frame(Instant::now(), frame);
                    true
                }
                Ok(None) => false,
                Err(error) => {
                    tracing::debug!(session.id = %self.cell.id(), %error, "connection failed");
                    if let Some(code) = error.close_code() {
                        self.close(writer, code).await;
                    }
                    false
                }
            },
            () = self.cell.woken() => true,
            () = sleep => {
                self.cell.lock().handle_timeout(Instant::now());
                true
            }
        }
    }

    /// Waits while detached: for a wake-up (delivery, resume, kick) or the next timer.
    async fn wait_detached(&self, deadline: Option<Instant>) {
        tokio::select! {
            () = self.cell.woken() => {}
            () = sleep_until(deadline) => self.cell.lock().handle_timeout(Instant::now()),
        }
    }

    /// Flushes the last frames (bounded in time) and closes the connection.
    async fn close(&self, writer: &mut FrameWriter, code: CloseCode) {
        let close = async {
            let _ = writer.flush().await;
            // The session already queued its Error or GoAway frame.
            let _ = writer.close(CloseCode::NORMAL, code.name()).await;
        };
        let _ = tokio::time::timeout(self.config.close_timeout, close).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn receipt(msg_id: u64, outcome: UpstreamOutcome) -> Receipt {
    Receipt {
        msg_id,
        status: outcome.status.into(),
        reason_code: outcome.reason_code.map_or(0, u32::from),
        reason: outcome.reason,
        message_id: outcome.message_id.map_or(0, |m| m.0),
    }
}
