//! The task that drives one session: feeds it frames, deliveries and timers, writes what it
//! transmits, and carries out its events. It outlives the connection while the session is
//! detached, and lets go as soon as a resume attaches the session elsewhere.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use imgate_codec::{CloseCode, Compression, Receipt};
use imgate_transports::{FrameReader, FrameWriter};
use tokio::time::{Instant, Sleep};

use super::ServerConfig;
use super::connection::OpenConnection;
use crate::app::App;
use crate::backend::{Origin, UpstreamOutcome, UpstreamRequest};
use crate::handle::GatewayHandle;
use crate::handoff::Handoff;
use crate::metrics::Metrics;
use crate::offline::{PushRegistration, PushTrigger};
use crate::rate_limit::TokenBucket;
use crate::registry::SessionCell;
use crate::session::Event;
use crate::store::Change;

/// The connection's halves, and its place in the `connections` gauge until it is dropped.
pub(super) type Connection = (FrameReader, FrameWriter, OpenConnection);

/// How a wait on an attached connection ended.
enum Woke {
    /// Input, a wake-up or a timer: go round again.
    Again,
    /// The connection is gone (closed by the peer, or failed without a code to send).
    Gone,
    /// Close the connection with this code (its last frames are queued).
    Close(CloseCode),
}

pub(super) struct Driver {
    handle: GatewayHandle,
    app: Arc<App>,
    cell: Arc<SessionCell>,
    origin: Origin,
    generation: u64,
    /// Frames the client may still send in this interval (per connection).
    rate: TokenBucket,
    /// Since when bytes have been waiting for the socket without a flush completing.
    stalled_since: Option<Instant>,
}

/// Frames are pulled from the session only while less than this is queued for the socket:
/// a replay of a large backlog streams instead of ballooning the write queue.
const OUTBOUND_HIGH_WATER: usize = 32 * 1024;

/// Queued output that is written before more input is read (below it, waiting input is
/// handled first and its answers are batched into the same write).
const FLUSH_BEFORE_READING: usize = 16 * 1024;

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
        app: Arc<App>,
        cell: Arc<SessionCell>,
        origin: Origin,
    ) -> Self {
        let generation = cell.lock().generation();
        let rate = TokenBucket::new(&handle.shared.config.message_rate, Instant::now());
        Self {
            handle,
            app,
            cell,
            origin,
            generation,
            rate,
            stalled_since: None,
        }
    }

    /// Detaches the session from this driver's connection, unless a resume has already
    /// attached it to a newer one (detaching then would strand the live connection: its
    /// session would stop transmitting while the client stays connected).
    fn detach_if_current(&self) {
        let mut session = self.cell.lock();
        if session.generation() == self.generation {
            session.detach(Instant::now());
        }
    }

    /// The gateway is going away after a drain and this session is durable: stop driving
    /// it without ending it (the next start restores it from the store).
    fn released(&self) -> bool {
        self.handle
            .shared
            .releasing
            .load(std::sync::atomic::Ordering::Relaxed)
            && self.handle.shared.store_for(&self.app).is_some()
    }

    fn config(&self) -> &ServerConfig {
        &self.handle.shared.config
    }

    /// Runs until the session ends or is resumed on another connection.
    ///
    /// Takes its state by reference: the spawned task owns it once, where an `async fn`
    /// taking it by value would hold a second copy for the task's whole life.
    pub(super) async fn run(
        &mut self,
        connection: &mut Option<Connection>,
        compression: &mut Option<Box<Compression>>,
    ) {
        // One timer for the driver's life, re-armed in place: every idle connection holds
        // it, and re-registering a fresh one per wake-up costs timer-wheel work.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
        loop {
            // Destructured at once: only what an await needs stays in the task's future.
            let Output {
                events,
                deadline,
                stale,
                slow,
            } = self.collect(connection.as_mut().map(|(_, w, _)| w), compression);
            if stale {
                // Resumed elsewhere: the new driver owns the session and its events. Pass
                // the wake-up on: `wake` wakes one waiter, and it may have been this one.
                self.cell.wake();
                if let Some((_, mut writer, _open)) = connection.take() {
                    // As a fresh login's take-over tells the old connection (§10).
                    let _ = writer.queue(&takeover_go_away());
                    Box::pin(self.close(&mut writer, CloseCode::SESSION_TAKEN_OVER)).await;
                }
                return;
            }
            if slow {
                self.detach_if_current();
            }
            let mut close = slow.then_some(CloseCode::SLOW_CONSUMER);
            let mut ended = false;
            let mut answered = false;
            let mut end_handed = false;
            for event in events {
                match event {
                    Event::Upstream { msg_id, request } => {
                        answered = true;
                        // The match ends before the await: a scrutinee held across it (the
                        // `Result`) would grow every driver's task.
                        let request = match UpstreamRequest::try_from(request) {
                            Ok(request) => request,
                            Err(registration) => {
                                self.answer(msg_id, self.register_push(registration));
                                continue;
                            }
                        };
                        let started = Instant::now();
                        let outcome = self
                            .app
                            .backend
                            .on_upstream(&self.handle, &self.origin, request)
                            .await;
                        self.handle
                            .metrics()
                            .upstream_latency
                            .observe(started.elapsed().as_secs_f64());
                        self.answer(msg_id, outcome);
                    }
                    Event::Undelivered { reason, messages } => {
                        let identity = &self.origin.identity;
                        let (user, device) = (identity.user.clone(), Some(&identity.device));
                        if self.cell.lock().is_ended() {
                            // The session's end: its rows go once the hand-off is done.
                            end_handed = true;
                            self.handoff().session_ended(
                                self.cell.id(),
                                user,
                                device,
                                messages,
                                reason,
                            );
                        } else {
                            self.handoff().undelivered(user, device, messages, reason);
                        }
                    }
                    Event::CloseConnection { code, .. } => close = Some(code),
                    Event::Ended => ended = true,
                    Event::Acked { seq, message_ids } => {
                        if let Some(store) = self.handle.shared.store_for(&self.app) {
                            store.append(Change::Acked {
                                session: self.cell.id(),
                                seq,
                            });
                        }
                        self.handoff().acked(&self.origin.identity, &message_ids);
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
                if !end_handed && let Some(store) = self.handle.shared.store_for(&self.app) {
                    store.append(Change::Ended {
                        session: self.cell.id(),
                    });
                }
                self.handle.shared.registry.remove(&self.cell);
                // A session that moved to another node goes on there: no disconnect.
                if !self.cell.lock().moved_out() {
                    #[cfg(feature = "cluster")]
                    if let Some(cluster) = &self.handle.shared.cluster {
                        crate::cluster::route::release_ended(
                            &self.handle,
                            cluster,
                            &self.origin.identity,
                            self.cell.id(),
                        );
                    }
                    self.app
                        .backend
                        .on_disconnect(&self.handle, &self.origin)
                        .await;
                }
            }
            let closed = if let Some(code) = close.or(ended.then_some(CloseCode::NORMAL))
                && let Some((_, mut writer, _open)) = connection.take()
            {
                self.queue_last_frames(&mut writer);
                Metrics::count(&self.handle.metrics().closes, code.name());
                Box::pin(self.close(&mut writer, code)).await;
                self.handle.shared.detached.notify_waiters();
                true
            } else {
                false
            };
            if ended {
                return;
            }
            // The backend's answer or the close's flush took time: look at the session again
            // before waiting. A resume meanwhile woke the new connection's driver, not this
            // one, which would wait on its old timer with a session it no longer owns.
            if answered || closed {
                continue;
            }
            match connection.as_mut() {
                Some((reader, writer, _)) => {
                    if writer.queued_bytes() == 0 {
                        self.stalled_since = None;
                    } else if self.stalled_since.is_none() {
                        self.stalled_since = Some(Instant::now());
                    }
                    let woke = self
                        .wait_attached(reader, writer, timer.as_mut(), deadline)
                        .await;
                    if let Woke::Close(code) = woke {
                        Box::pin(self.close(writer, code)).await;
                    }
                    if !matches!(woke, Woke::Again) {
                        *connection = None;
                        self.detach_if_current();
                        self.handle.shared.detached.notify_waiters();
                    }
                }
                None => {
                    if self.released() {
                        return;
                    }
                    self.wait_detached(timer.as_mut(), deadline).await;
                }
            }
        }
    }

    /// Hands the backend's answer to the session and its mark to the store; the receipt goes
    /// out once the mark is durable: a client that
    /// holds a receipt never re-sends, and one that does not finds the mark after a restart
    /// (unless the process died between the backend's answer and this commit: then the
    /// re-send is forwarded again).
    fn answer_durably(&self, receipt: Receipt) {
        let Some(store) = self.handle.shared.store_for(&self.app) else {
            return;
        };
        let mark = {
            let mut session = self.cell.lock();
            let mark = session.answer(&receipt);
            if let Some(mark) = mark {
                store.append(Change::Answered {
                    session: session.id(),
                    mark,
                    receipt: receipt.clone(),
                });
            }
            mark
        };
        if mark.is_none() {
            return;
        }
        // Released by the store's thread rather than awaited here: the driver's future stays
        // small, and the next request may go to the backend meanwhile.
        let cell = Arc::clone(&self.cell);
        store.on_durable(Box::new(move |result| {
            if let Err(error) = result {
                tracing::error!(session.id = %cell.id(), %error, "receipt mark not durable");
            }
            cell.lock().send_receipt(receipt);
            cell.wake();
        }));
    }

    fn handoff(&self) -> Handoff<'_> {
        Handoff::new(&self.handle, &self.app)
    }

    fn push(&self, messages: &[crate::ids::MessageId], trigger: PushTrigger) {
        let identity = &self.origin.identity;
        self.handoff()
            .uncovered(&identity.user, Some(&identity.device), messages, trigger);
    }

    /// Hands the client's receipt for `msg_id` to the session.
    fn answer(&self, msg_id: u64, outcome: UpstreamOutcome) {
        let receipt = receipt(msg_id, outcome);
        if self.handle.shared.store_for(&self.app).is_some() {
            // Boxed: a rarely-live await must not grow every driver's task.
            self.answer_durably(receipt);
        } else {
            self.cell.lock().handle_receipt(receipt);
        }
        // If a resume moved the session to a newer connection meanwhile, its driver is
        // asleep: wake it to transmit the receipt.
        self.cell.wake();
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
        compression: &mut Option<Box<Compression>>,
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
            let mut sent = 0u64;
            while session.wants_transmit() && writer.queued_bytes() < OUTBOUND_HIGH_WATER {
                let Some(frame) = session.poll_transmit(now) else {
                    break;
                };
                if let Err(error) = writer.queue(&frame) {
                    tracing::debug!(session.id = %self.cell.id(), %error, "outbound queue full");
                    output.slow = true;
                    break;
                }
                // Keep the write buffer while frames flow (one allocation and free less per
                // flush); let it go after the flush of a frame that precedes quiet. Set after
                // queueing, so an empty held queue is not freed just to be re-created.
                writer.hold_buffers(!crate::session::precedes_quiet(&frame));
                sent += 1;
                // Compression starts right after Welcome, never before.
                if let Some(compression) = compression.take() {
                    writer.encoder_mut().set_compression(Some(*compression));
                }
            }
            if sent > 0 {
                self.handle.metrics().hot.frames_out.inc_by(sent);
            }
        }
        output.events = std::iter::from_fn(|| session.poll_event()).collect();
        output.deadline = session.poll_timeout();
        output
    }

    /// Queues what the session still holds for a closing connection, past the high-water
    /// mark, up to the `Error` or `GoAway` that says why: with a large frame queued ahead of
    /// it, `collect` leaves that last frame in the session, and the close would go without it.
    fn queue_last_frames(&self, writer: &mut FrameWriter) {
        let mut session = self.cell.lock();
        if session.generation() != self.generation {
            return;
        }
        let now = Instant::now();
        while let Some(frame) = session.poll_transmit(now) {
            let last = matches!(
                frame.kind,
                Some(imgate_codec::Kind::Error(_) | imgate_codec::Kind::GoAway(_))
            );
            if writer.queue(&frame).is_err() || last {
                break;
            }
        }
    }

    /// Waits for input on an attached connection, a wake-up, or the next timer (the session's
    /// or the write-stall limit, whichever is first).
    async fn wait_attached(
        &mut self,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
        mut timer: Pin<&mut Sleep>,
        deadline: Option<Instant>,
    ) -> Woke {
        if writer.queued_bytes() >= FLUSH_BEFORE_READING {
            // Enough is queued to be worth a write before more input is taken: one attempt
            // now (once written, go round to pull what the session still holds back); if
            // the socket is full, the flush branch below waits for it.
            if let Poll::Ready(flushed) = poll_fn(|cx| Poll::Ready(writer.poll_flush(cx))).await {
                return self.flushed(flushed);
            }
        }
        let stall_deadline = self
            .stalled_since
            .map(|since| since + self.config().write_stall_timeout);
        let armed = arm(timer.as_mut(), earliest(deadline, stall_deadline));
        // Biased, in this order: time-outs (never starved by a busy peer), input already
        // waiting, wake-ups, then the flush, so the answers to a burst of frames and the
        // deliveries that arrive meanwhile leave in one write, not one write per frame.
        // Input that would block costs nothing here (readiness is tracked), so a lone frame
        // is still answered at once.
        tokio::select! {
            biased;
            () = timer, if armed => {
                let now = Instant::now();
                if stall_deadline.is_some_and(|stall| now >= stall) {
                    // The client stopped reading: let it go and resume later rather than
                    // hold its backlog in memory.
                    Metrics::count(&self.handle.metrics().closes, CloseCode::SLOW_CONSUMER.name());
                    tracing::debug!(session.id = %self.cell.id(), "slow consumer: write stalled");
                    return Woke::Close(CloseCode::SLOW_CONSUMER);
                }
                self.cell.lock().handle_timeout(now);
                Woke::Again
            }
            received = reader.recv() => match received {
                Ok(Some(frame)) => {
                    let now = Instant::now();
                    self.handle.metrics().hot.frames_in.inc();
                    if !self.rate.try_take(&self.handle.shared.config.message_rate, now) {
                        Metrics::count(&self.handle.metrics().limited, "message_rate");
                        let error = imgate_codec::Error::new(
                            CloseCode::RATE_LIMITED,
                            "too many frames; slow down and resume",
                        );
                        let _ = writer.queue(&error.into());
                        return Woke::Close(CloseCode::RATE_LIMITED);
                    }
                    self.cell.lock().handle_frame(now, frame);
                    Woke::Again
                }
                Ok(None) => Woke::Gone,
                Err(error) => {
                    tracing::debug!(session.id = %self.cell.id(), %error, "connection failed");
                    let code = error.close_code();
                    if let Some(code) = code {
                        // The peer learns why before the close (§13), in our words.
                        let message = error.peer_message();
                        let _ = writer.queue(&imgate_codec::Error::new(code, message).into());
                    }
                    code.map_or(Woke::Gone, Woke::Close)
                }
            },
            () = self.cell.woken() => Woke::Again,
            flushed = writer.flush(), if writer.queued_bytes() > 0 => self.flushed(flushed),
        }
    }

    /// A completed flush: the write stall is over; a failed one means the connection is gone.
    fn flushed(&mut self, result: Result<(), imgate_transports::TransportError>) -> Woke {
        self.stalled_since = None;
        if result.is_ok() {
            Woke::Again
        } else {
            Woke::Gone
        }
    }

    /// Waits while detached: for a wake-up (delivery, resume, kick) or the next timer.
    async fn wait_detached(&self, mut timer: Pin<&mut Sleep>, deadline: Option<Instant>) {
        let armed = arm(timer.as_mut(), deadline);
        tokio::select! {
            () = self.cell.woken() => {}
            () = timer, if armed => self.cell.lock().handle_timeout(Instant::now()),
        }
    }

    /// Flushes the last frames (bounded in time) and closes the connection.
    async fn close(&self, writer: &mut FrameWriter, code: CloseCode) {
        let close = async {
            let _ = writer.flush().await;
            // The last frame (Error or GoAway) is already queued; the transport's own close
            // carries the code too (QUIC application code, WebSocket status).
            let _ = writer.finish(code, code.name()).await;
        };
        let _ = tokio::time::timeout(self.config().close_timeout, close).await;
    }
}

/// Points `timer` at `deadline`; false when there is none (the timer must not be polled).
fn arm(timer: Pin<&mut Sleep>, deadline: Option<Instant>) -> bool {
    let Some(deadline) = deadline else {
        return false;
    };
    if timer.deadline() != deadline {
        timer.reset(deadline);
    }
    true
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn takeover_go_away() -> imgate_codec::Frame {
    imgate_codec::GoAway {
        reason: imgate_codec::GoAwayReason::Takeover.into(),
        reconnect_after_ms: 0,
        message: CloseCode::SESSION_TAKEN_OVER.name().to_owned(),
    }
    .into()
}

/// Longest `Receipt.reason` sent, in bytes: a backend's reason is cut to it, so that a
/// receipt fits the smallest frame limit a client may announce (§12).
const MAX_REASON_LEN: usize = 256;

fn receipt(msg_id: u64, outcome: UpstreamOutcome) -> Receipt {
    let mut reason = outcome.reason;
    if reason.len() > MAX_REASON_LEN {
        let cut = (0..=MAX_REASON_LEN)
            .rev()
            .find(|&i| reason.is_char_boundary(i))
            .unwrap_or(0);
        reason.truncate(cut);
    }
    Receipt {
        msg_id,
        status: outcome.status.into(),
        reason_code: outcome.reason_code.map_or(0, u32::from),
        reason,
        message_id: outcome.message_id.map_or(0, |m| m.0),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_receipt_with_a_long_backend_reason_fits_the_smallest_frame_limit() {
        // Two-byte characters, so that the cut must fall on a character boundary.
        let outcome = UpstreamOutcome {
            message_id: Some(crate::ids::MessageId(u64::MAX)),
            ..UpstreamOutcome::rejected(CloseCode(u16::MAX), "é".repeat(1000))
        };
        let receipt = receipt(u64::MAX, outcome);
        assert_eq!(receipt.reason, "é".repeat(MAX_REASON_LEN / 2));
        // Flags byte + body.
        let frame_len = 1 + imgate_codec::Frame::from(receipt).encoded_len();
        assert!(frame_len <= imgate_codec::MIN_MAX_FRAME, "{frame_len}");
    }
}
