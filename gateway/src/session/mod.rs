//! The sans-IO session: heartbeats, sequenced delivery, acks, upstream de-duplication and
//! resume, driven by frames, deliveries and the current time. No sockets, tasks or clocks.
//!
//! # Driving a session
//! Feed input with [`Session::handle_frame`], [`Session::handle_deliver`],
//! [`Session::handle_receipt`], [`Session::detach`], [`Session::resume`] and
//! [`Session::handle_timeout`]. After any input, drain [`Session::poll_transmit`] (frames for
//! the client, in order), then [`Session::poll_event`] (work for the backend and the offline
//! path), then re-arm one timer at [`Session::poll_timeout`]. Frames must be written in the
//! order `poll_transmit` returns them.

mod config;
mod dedup;
mod event;
mod handshake;
mod outbox;
mod secret;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use imgate_codec::{
    Ack, CloseCode, Deliver, Frame, GoAway, GoAwayReason, Kind, Ping, Platform, Pong, Receipt,
    ResumeRefused, Welcome,
};
use tokio::time::Instant;

use crate::ids::{AppId, DeviceId, MessageId, RoomId, SessionId, UserId};
use crate::store::{Durability, StoredSession};
pub use config::SessionConfig;
pub use dedup::AnswerMark;
use dedup::{Dedup, Seen};
pub use event::{Event, Undelivered, UndeliveredReason, Upstream, UpstreamTarget};
pub use handshake::{Handshake, HandshakeRefused, MAX_ID_LEN, MAX_TOKEN_LEN};
use outbox::Outbox;
pub use secret::ResumeSecret;

/// Who a session belongs to, as established by authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The app.
    pub app: AppId,
    /// The authenticated user.
    pub user: UserId,
    /// The device installation.
    pub device: DeviceId,
    /// The device platform.
    pub platform: Platform,
}

/// Connection-level choices echoed in `Welcome`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// Features enabled for the connection.
    pub features: Vec<String>,
    /// Compression dictionary the server will use (0: none).
    pub dictionary_id: u32,
    /// Largest frame the client accepts (flags byte + uncompressed body), from
    /// `Hello.max_frame`; 0: the protocol default, [`imgate_codec::DEFAULT_MAX_FRAME`].
    pub max_frame: u32,
}

impl Negotiated {
    /// The client's frame limit in bytes, never above the protocol default.
    fn frame_limit(&self) -> u32 {
        let default = u32::try_from(imgate_codec::DEFAULT_MAX_FRAME).unwrap_or(u32::MAX);
        match self.max_frame {
            0 => default,
            limit => limit.min(default),
        }
    }
}

/// A message to deliver to the session's client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// Server-assigned message id.
    pub message_id: MessageId,
    /// Opaque payload (shared, never copied, across fan-out recipients).
    pub payload: bytes::Bytes,
    /// Sender, if a user.
    pub from: Option<UserId>,
    /// Room, if sent to a room.
    pub room: Option<RoomId>,
    /// When the server accepted the message, ms since the Unix epoch.
    pub sent_at_ms: u64,
}

/// What happened to a delivery handed to [`Session::handle_deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverOutcome {
    /// Queued for the attached connection with this sequence number; an ack is expected.
    Sent {
        /// The message's sequence number in this session.
        seq: u64,
    },
    /// Buffered for resume with this sequence number; `push` says the push grace period is
    /// already over, so the offline path should cover it now.
    Buffered {
        /// The message's sequence number in this session.
        seq: u64,
        /// Whether to push it now.
        push: bool,
    },
    /// The unacknowledged buffer is full: the message is the offline path's. If the client
    /// was attached it is disconnected as a slow consumer, and its next resume is refused.
    Overflow,
    /// The message's `Deliver` frame would exceed the frame limit the client announced: it
    /// gets no sequence number and is the offline path's; the session is unaffected.
    TooLarge,
    /// The session has ended; route the message to another session or the offline path.
    Ended,
}

/// The outcome of a resume attempt that the caller must act on.
pub type ResumeResult = Result<(), ResumeRefused>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Attached,
    Detached { since: Instant },
    Ended,
}

/// One logical session: survives connection drops for the resume window.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    secret: ResumeSecret,
    identity: Identity,
    /// Shared by every session of the app (one copy per app, not per session).
    config: Arc<SessionConfig>,
    /// The heartbeat interval for this session's platform.
    heartbeat: Duration,
    state: State,
    outbox: Outbox,
    dedup: Dedup,
    transmit: VecDeque<Frame>,
    events: VecDeque<Event>,
    last_rx: Instant,
    /// Bumped on every attach, so a runtime can tell a stale connection from the current one.
    generation: u64,
    /// The buffer overflowed: messages went to the offline path, so a resume would leave a hole.
    overflowed: bool,
    /// Largest frame the client accepts (`Negotiated::max_frame`, defaulted): kept while
    /// detached, so deliveries meanwhile are held to the last client's limit.
    client_max_frame: u32,
    push_grace_reported: bool,
    /// `GoAway{Drain}` was sent on this connection: nothing new is transmitted, and the
    /// connection closes once every transmitted message is acknowledged.
    draining: bool,
    /// Ended by [`Session::move_out`].
    moved: bool,
    /// The upstream request handed to the runtime and not yet answered. Only one is out at a
    /// time, so that a request collected by a connection's driver just before a resume
    /// reaches the backend before anything the client sends on the new connection.
    forwarding: Option<u64>,
    mono_base: Instant,
    wall_base_ms: u64,
}

impl Session {
    /// A fresh session, attached to the connection that authenticated it; queues `Welcome`.
    ///
    /// `wall_ms` is the wall clock at `now` (ms since the Unix epoch); the session derives
    /// later wall times from `now` so that tests stay deterministic.
    pub fn new(
        now: Instant,
        wall_ms: u64,
        id: SessionId,
        secret: ResumeSecret,
        identity: Identity,
        config: impl Into<Arc<SessionConfig>>,
        negotiated: &Negotiated,
    ) -> Self {
        let config = config.into();
        let heartbeat = config.heartbeat_for(identity.platform);
        let mut session = Self {
            id,
            secret,
            outbox: Outbox::new(
                config.max_unacked,
                config.max_unacked_bytes,
                config.durability == Durability::Disk,
            ),
            dedup: Dedup::new(config.receipt_memory),
            identity,
            config,
            heartbeat,
            state: State::Attached,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_rx: now,
            generation: 1,
            overflowed: false,
            client_max_frame: negotiated.frame_limit(),
            push_grace_reported: false,
            draining: false,
            moved: false,
            forwarding: None,
            mono_base: now,
            wall_base_ms: wall_ms,
        };
        session.queue_welcome(now, negotiated, false, ResumeRefused::Unspecified);
        session
    }

    /// A session a store kept across a restart, detached since `now`: its client may resume
    /// within the resume window, push covers it after the push grace. Messages beyond the
    /// session's limits (lowered since they were stored) go to the offline path at once and
    /// make the session unresumable, as an overflow would.
    pub fn restore(
        now: Instant,
        wall_ms: u64,
        stored: StoredSession,
        config: impl Into<Arc<SessionConfig>>,
    ) -> Self {
        let config = config.into();
        let heartbeat = config.heartbeat_for(stored.identity.platform);
        let (outbox, rest) = Outbox::restore(
            config.max_unacked,
            config.max_unacked_bytes,
            config.durability == Durability::Disk,
            stored.acked,
            stored.outbox.into_iter().map(|m| m.deliver),
        );
        let mut events = VecDeque::new();
        if !rest.is_empty() {
            events.push_back(Event::Undelivered {
                reason: UndeliveredReason::BufferOverflow,
                messages: rest
                    .iter()
                    .map(|d| Undelivered {
                        message_id: MessageId(d.message_id),
                        seq: d.seq,
                    })
                    .collect(),
            });
        }
        Self {
            id: stored.id,
            secret: stored.secret,
            outbox,
            dedup: Dedup::restore(config.receipt_memory, stored.receipts),
            identity: stored.identity,
            config,
            heartbeat,
            state: State::Detached { since: now },
            transmit: VecDeque::new(),
            events,
            last_rx: now,
            generation: 1,
            overflowed: stored.overflowed || !rest.is_empty(),
            // Unknown until the client resumes (a resume checks the buffer against its limit).
            client_max_frame: Negotiated::default().frame_limit(),
            push_grace_reported: false,
            draining: false,
            moved: false,
            forwarding: None,
            mono_base: now,
            wall_base_ms: wall_ms,
        }
    }

    /// The resume secret (for the session store).
    pub fn secret(&self) -> &ResumeSecret {
        &self.secret
    }

    /// Messages up to `seq` are durable: they may now be transmitted (a session of an app
    /// with [`Durability::Disk`] transmits nothing its store has not confirmed).
    pub fn mark_durable(&mut self, seq: u64) {
        self.outbox.mark_durable(seq);
    }

    /// The unacknowledged message with sequence number `seq`, as the client will get it.
    pub fn unacked(&self, seq: u64) -> Option<&Deliver> {
        self.outbox.get(seq)
    }

    /// Whether the outbox overflowed (the session can no longer be resumed).
    pub fn has_overflowed(&self) -> bool {
        self.overflowed
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Who the session belongs to.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Increases on every (re-)attach.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a connection is attached.
    pub fn is_attached(&self) -> bool {
        self.state == State::Attached
    }

    /// Whether the session is over.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Highest sequence number assigned so far.
    pub fn last_seq(&self) -> u64 {
        self.outbox.last_seq()
    }

    /// Highest sequence number the client acknowledged.
    pub fn acked_seq(&self) -> u64 {
        self.outbox.acked()
    }

    /// Upstream requests forwarded and not yet answered by the backend.
    pub fn upstream_in_flight(&self) -> usize {
        self.dedup.in_flight()
    }

    /// A frame from the attached client.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if self.state != State::Attached {
            return;
        }
        self.last_rx = now;
        let Some(kind) = frame.kind else {
            return self.close_with_error(now, CloseCode::PROTOCOL_ERROR, "frame without kind");
        };
        match kind {
            Kind::Ping(Ping {
                client_time_ms,
                ack,
            }) => {
                self.handle_ack(now, ack);
                if self.state != State::Attached {
                    // The ack closed the connection: its `Error` is the last frame (§13).
                    return;
                }
                let server_time_ms = self.wall_ms(now);
                self.transmit.push_back(
                    Pong {
                        client_time_ms,
                        server_time_ms,
                    }
                    .into(),
                );
            }
            Kind::Ack(Ack { seq }) => self.handle_ack(now, seq),
            Kind::Send(send) => {
                self.handle_ack(now, send.ack);
                if self.state != State::Attached {
                    // A frame that closed the connection is not forwarded: the client never
                    // gets its receipt there, and its `Error` is the last frame (§13).
                    return;
                }
                let to = match send.to {
                    Some(imgate_codec::proto::send::To::User(user)) => {
                        UpstreamTarget::User(UserId::new(user))
                    }
                    Some(imgate_codec::proto::send::To::Room(room)) => {
                        UpstreamTarget::Room(RoomId::new(room))
                    }
                    None => UpstreamTarget::Backend,
                };
                self.handle_upstream(
                    send.msg_id,
                    Upstream::Message {
                        to,
                        payload: send.payload,
                    },
                );
            }
            Kind::JoinRoom(join) => {
                self.handle_upstream(join.msg_id, Upstream::JoinRoom(RoomId::new(join.room)));
            }
            Kind::LeaveRoom(leave) => {
                self.handle_upstream(leave.msg_id, Upstream::LeaveRoom(RoomId::new(leave.room)));
            }
            Kind::RegisterPush(register) => self.handle_upstream(
                register.msg_id,
                Upstream::RegisterPush {
                    provider: register.provider(),
                    token: register.token,
                    topic: register.topic,
                    sandbox: register.sandbox,
                },
            ),
            Kind::Error(error) if error.close_code() == CloseCode::LOGGED_OUT => {
                // Logout ends the session for good (protocol §4 `Error`).
                self.end(UndeliveredReason::SessionEnded);
            }
            Kind::Error(_) => {
                // The client is closing: nothing after it is read (§13), the session is kept
                // for a resume.
                self.events.push_back(Event::CloseConnection {
                    code: CloseCode::NORMAL,
                    go_away: None,
                });
                self.detach(now);
            }
            Kind::Hello(_)
            | Kind::Welcome(_)
            | Kind::Pong(_)
            | Kind::Deliver(_)
            | Kind::Receipt(_)
            | Kind::GoAway(_) => {
                self.close_with_error(now, CloseCode::UNEXPECTED_FRAME, "unexpected frame kind");
            }
        }
    }

    /// A message for the client: sequenced and buffered until acknowledged.
    pub fn handle_deliver(&mut self, now: Instant, message: Outgoing) -> DeliverOutcome {
        if self.state == State::Ended {
            return DeliverOutcome::Ended;
        }
        let deliver = Deliver {
            // The seq it will get, so that its size below is exact.
            seq: self.outbox.last_seq() + 1,
            payload: message.payload,
            from: message
                .from
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
            room: message
                .room
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            message_id: message.message_id.0,
            sent_at_ms: message.sent_at_ms,
        };
        if imgate_codec::deliver_frame_len(&deliver) > self.client_max_frame as usize {
            return DeliverOutcome::TooLarge;
        }
        match self.outbox.push(now, deliver) {
            Ok(seq) => match self.state {
                State::Attached => DeliverOutcome::Sent { seq },
                _ => DeliverOutcome::Buffered {
                    seq,
                    push: self.push_grace_reported,
                },
            },
            Err(outbox::Full) => {
                self.overflowed = true;
                if self.state == State::Attached {
                    self.go_away(GoAwayReason::SlowConsumer, CloseCode::SLOW_CONSUMER, 0);
                    self.detach_keeping_transmit(now);
                }
                DeliverOutcome::Overflow
            }
        }
    }

    /// The backend's answer to an [`Event::Upstream`]; sent to the client if attached, and
    /// remembered for re-sends. Returns where it is remembered (for the session store), or
    /// None if the request was not in flight.
    pub fn handle_receipt(&mut self, receipt: Receipt) -> Option<AnswerMark> {
        let mark = self.answer(&receipt)?;
        self.send_receipt(receipt);
        Some(mark)
    }

    /// The first half of [`Session::handle_receipt`]: remembers the backend's answer (the
    /// next upstream request may go out) without sending it yet, so that a runtime can
    /// make the mark durable before the client sees the receipt. Send it with
    /// [`Session::send_receipt`].
    pub fn answer(&mut self, receipt: &Receipt) -> Option<AnswerMark> {
        if self.forwarding == Some(receipt.msg_id) {
            self.forwarding = None;
        }
        self.dedup.answer(receipt)
    }

    /// Sends a receipt [`Session::answer`] remembered, if a client is attached.
    pub fn send_receipt(&mut self, receipt: Receipt) {
        if self.state == State::Attached {
            self.transmit.push_back(receipt.into());
        }
    }

    /// Timers: heartbeat liveness, ack time-outs, push grace and the resume window.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Attached => {
                if now >= self.last_rx + self.liveness_timeout() {
                    let limit = self.liveness_timeout();
                    return self.close_with_error(
                        now,
                        CloseCode::HEARTBEAT_TIMEOUT,
                        &format!("nothing received for {limit:?}"),
                    );
                }
                let overdue = self.outbox.take_overdue(now, self.config.ack_timeout);
                if !overdue.is_empty() {
                    self.events.push_back(Event::AckOverdue {
                        message_ids: overdue,
                    });
                }
            }
            State::Detached { since } => {
                if now >= since + self.config.resume_window {
                    return self.end(UndeliveredReason::SessionEnded);
                }
                if !self.push_grace_reported && now >= since + self.config.push_grace {
                    self.push_grace_reported = true;
                    self.events.push_back(Event::PushGraceElapsed {
                        message_ids: self.outbox.message_ids(),
                    });
                }
            }
            State::Ended => {}
        }
    }

    /// The connection is gone (closed, reset, timed out): keep the session for a resume.
    pub fn detach(&mut self, now: Instant) {
        if self.state == State::Attached {
            self.state = State::Detached { since: now };
            self.draining = false;
            self.push_grace_reported = false;
            // Frames not yet written died with the connection; receipts are re-sent from the
            // de-duplication memory when the client re-sends, deliveries are replayed on resume.
            self.transmit.clear();
            // A detached session sends nothing until it resumes (up to the resume window):
            // it keeps no queue buffer meanwhile.
            release_if_empty(&mut self.transmit);
            release_if_empty(&mut self.events);
        }
    }

    /// A client asks to resume this session on a new connection (any transport).
    ///
    /// On success the session is attached to the new connection (any previous connection
    /// is stale: see [`Session::generation`]), `Welcome{resumed: true}` is queued, then every
    /// message after `last_seq`, in order. A buffered message larger than the new
    /// connection's frame limit (`negotiated.max_frame`) refuses the resume as an overflow.
    /// On refusal the caller creates a fresh session; a
    /// refusal for a buffer overflow or a bad sequence number also ends this session and
    /// hands its messages to the offline path, while a bad secret or owner leaves it alone
    /// (a thief must not be able to end a victim's session).
    pub fn resume(
        &mut self,
        now: Instant,
        identity: &Identity,
        secret: &[u8],
        last_seq: u64,
        negotiated: &Negotiated,
    ) -> ResumeResult {
        if self.state == State::Ended {
            return Err(ResumeRefused::UnknownSession);
        }
        if identity.app != self.identity.app
            || identity.user != self.identity.user
            || identity.device != self.identity.device
        {
            return Err(ResumeRefused::NotOwner);
        }
        if !self.secret.matches(secret) {
            return Err(ResumeRefused::BadSecret);
        }
        if self.overflowed {
            self.end_for_resume(UndeliveredReason::BufferOverflow);
            return Err(ResumeRefused::BufferOverflow);
        }
        // A `last_seq` below what the client already acknowledged is a lower ack, ignored
        // as any other (§8): the replay starts after the acknowledged point.
        let released = match self.outbox.ack(last_seq) {
            Ok(released) => released,
            Err(outbox::AckBeyondSent) => {
                self.end_for_resume(UndeliveredReason::SessionEnded);
                return Err(ResumeRefused::BadSeq);
            }
        };
        if !released.is_empty() {
            self.events.push_back(Event::Acked {
                seq: last_seq,
                message_ids: released,
            });
        }
        let limit = negotiated.frame_limit();
        if self.outbox.largest_frame() > limit as usize {
            // The replay would hold a frame the new connection cannot take: the buffer
            // cannot be delivered whole, as after an overflow.
            self.end_for_resume(UndeliveredReason::BufferOverflow);
            return Err(ResumeRefused::BufferOverflow);
        }
        self.client_max_frame = limit;
        self.detach(now);
        self.state = State::Attached;
        self.generation += 1;
        self.last_rx = now;
        self.outbox.rewind(now);
        self.queue_welcome(now, negotiated, true, ResumeRefused::Unspecified);
        Ok(())
    }

    /// Another connection of the same device logged in: the attached client (if any) gets
    /// `GoAway{Takeover}`, and the session ends.
    pub fn take_over(&mut self) {
        self.terminate(
            GoAwayReason::Takeover,
            CloseCode::SESSION_TAKEN_OVER,
            UndeliveredReason::SessionEnded,
        );
    }

    /// The session moves to another node (its client resumes there): the attached client,
    /// if any, gets `GoAway{Takeover}`, and the session ends here without handing anything
    /// to the offline path, since the new owner holds its messages. Returns what the new
    /// owner restores it from ([`Session::restore`]).
    pub fn move_out(&mut self) -> StoredSession {
        if self.state == State::Attached {
            self.go_away(GoAwayReason::Takeover, CloseCode::SESSION_TAKEN_OVER, 0);
        }
        let (acked, outbox) = self.outbox.take_all();
        let stored = StoredSession {
            id: self.id,
            secret: self.secret.clone(),
            identity: self.identity.clone(),
            opened_at_ms: self.wall_base_ms,
            overflowed: self.overflowed,
            acked,
            outbox: outbox
                .into_iter()
                .map(|deliver| crate::store::StoredMessage {
                    deliver,
                    push: None,
                })
                .collect(),
            receipts: self.dedup.snapshot(),
        };
        if self.state != State::Ended {
            self.state = State::Ended;
            self.moved = true;
            self.events.push_back(Event::Ended);
        }
        stored
    }

    /// Whether the session ended by moving to another node ([`Session::move_out`]): its
    /// end is no disconnect for the backend and hands nothing to the offline path.
    pub fn moved_out(&self) -> bool {
        self.moved
    }

    /// An operator or the backend ends the session.
    pub fn kick(&mut self) {
        self.terminate(
            GoAwayReason::Kicked,
            CloseCode::KICKED,
            UndeliveredReason::SessionEnded,
        );
    }

    /// The server is draining: the client gets `GoAway{Drain}` and should resume elsewhere
    /// after `reconnect_after`. Nothing new is transmitted after it (protocol §11); the
    /// connection stays open while the client still holds unacknowledged messages, so it can
    /// acknowledge them, and closes as soon as it holds none (now, if it holds none already),
    /// when the client closes it, or when the drain ends it with [`Session::end_drain`]. The
    /// session stays resumable until it expires.
    pub fn drain(&mut self, reconnect_after: Duration, now: Instant) {
        if self.state == State::Attached && !self.draining {
            let ms = u32::try_from(reconnect_after.as_millis()).unwrap_or(u32::MAX);
            self.transmit.push_back(go_away_frame(
                GoAwayReason::Drain,
                CloseCode::GOING_AWAY,
                ms,
            ));
            self.draining = true;
            self.close_drained_if_settled(now);
        }
    }

    fn close_drained_if_settled(&mut self, now: Instant) {
        if self.draining && self.outbox.in_flight() == 0 {
            self.end_drain(now);
        }
    }

    /// The drain's grace is over: a client still connected after its `GoAway{Drain}` is
    /// disconnected; the session detaches and stays resumable.
    pub fn end_drain(&mut self, now: Instant) {
        if self.state == State::Attached {
            self.events.push_back(Event::CloseConnection {
                code: CloseCode::GOING_AWAY,
                go_away: Some(GoAwayReason::Drain),
            });
            self.detach_keeping_transmit(now);
        }
    }

    /// Ends the session now, handing every unacknowledged message to the offline path.
    pub fn end_now(&mut self) {
        self.end(UndeliveredReason::SessionEnded);
    }

    /// The next frame to write to the client. Takes the time like every input of the
    /// state machine, though nothing depends on it now: a message's ack time-out counts
    /// from when it was buffered, not from when it is written.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<Frame> {
        if let Some(frame) = self.transmit.pop_front() {
            if precedes_quiet(&frame) {
                // Give the queues' buffers back now. While messages flow they keep a small
                // capacity, so a busy session does not allocate and free a queue per message.
                release_if_empty(&mut self.transmit);
                release_if_empty(&mut self.events);
            } else {
                release_if_large(&mut self.transmit);
            }
            return Some(frame);
        }
        if self.state == State::Attached && !self.draining {
            return self.outbox.next_transmit().map(Frame::from);
        }
        None
    }

    /// Whether `poll_transmit` has something.
    pub fn wants_transmit(&self) -> bool {
        !self.transmit.is_empty()
            || (self.state == State::Attached && !self.draining && self.outbox.has_untransmitted())
    }

    /// The next event for the runtime.
    ///
    /// Events come out in the order they arose. An [`Event::Upstream`] is handed out only
    /// once the previous one has been answered ([`Session::handle_receipt`]); until then it
    /// and everything behind it wait. This keeps a client's requests in order at the backend
    /// even when a resume moves the session to a new driver while the old one is still
    /// forwarding.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.forwarding.is_some() && matches!(self.events.front(), Some(Event::Upstream { .. }))
        {
            return None;
        }
        let event = self.events.pop_front()?;
        if self.transmit.capacity() == 0 {
            // The frame queue already gave its buffer back (the session answered a heartbeat
            // or is detached, or it only receives): the event queue follows when it drains,
            // e.g. after the `Acked` a heartbeat's piggy-backed ack produced.
            release_if_empty(&mut self.events);
        } else {
            release_if_large(&mut self.events);
        }
        if let Event::Upstream { msg_id, .. } = &event {
            self.forwarding = Some(*msg_id);
        }
        Some(event)
    }

    /// How long the connection may stay silent before it is closed.
    fn liveness_timeout(&self) -> Duration {
        self.config.liveness_timeout(self.heartbeat)
    }

    /// When [`Session::handle_timeout`] must be called next (None: no timer needed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Attached => {
                let liveness = self.last_rx + self.liveness_timeout();
                let overdue = self.outbox.overdue_deadline(self.config.ack_timeout);
                Some(overdue.map_or(liveness, |o| o.min(liveness)))
            }
            State::Detached { since } => {
                let expiry = since + self.config.resume_window;
                if self.push_grace_reported || self.outbox.is_empty() {
                    Some(expiry)
                } else {
                    Some((since + self.config.push_grace).min(expiry))
                }
            }
            State::Ended => None,
        }
    }

    /// Wall clock at `now`, ms since the Unix epoch.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.mono_base).as_millis();
        self.wall_base_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    fn handle_ack(&mut self, now: Instant, seq: u64) {
        if seq == 0 {
            return;
        }
        match self.outbox.ack(seq) {
            Ok(released) if released.is_empty() => {}
            Ok(message_ids) => {
                self.events.push_back(Event::Acked { seq, message_ids });
                self.close_drained_if_settled(now);
            }
            Err(outbox::AckBeyondSent) => self.close_with_error(
                now,
                CloseCode::PROTOCOL_ERROR,
                &format!("ack {seq} beyond the last sent seq"),
            ),
        }
    }

    fn handle_upstream(&mut self, msg_id: u64, request: Upstream) {
        if msg_id == 0 {
            // 0 is "unset" in proto3: a client that forgot the id gets told, not a receipt
            // for some other request (§9).
            let rejected = Receipt {
                msg_id,
                status: imgate_codec::ReceiptStatus::Rejected.into(),
                reason_code: CloseCode::PROTOCOL_ERROR.into(),
                reason: "msg_id 0 is reserved: requests need a non-zero, increasing id".into(),
                message_id: 0,
            };
            return self.transmit.push_back(rejected.into());
        }
        match self.dedup.check(msg_id) {
            Seen::New => self.events.push_back(Event::Upstream { msg_id, request }),
            Seen::InFlight => {}
            Seen::Answered(receipt) => self.transmit.push_back(receipt.into()),
        }
    }

    fn queue_welcome(
        &mut self,
        now: Instant,
        negotiated: &Negotiated,
        resumed: bool,
        refused: ResumeRefused,
    ) {
        let welcome = Welcome {
            session_id: self.id.0,
            resume_secret: self.secret.to_bytes(),
            heartbeat_ms: u32::try_from(self.heartbeat.as_millis()).unwrap_or(u32::MAX),
            max_frame: self.config.max_frame,
            features: negotiated.features.clone(),
            server_time_ms: self.wall_ms(now),
            resumed,
            resume_refused: refused.into(),
            dictionary_id: negotiated.dictionary_id,
            user_id: self.identity.user.as_str().to_owned(),
            last_receipted_msg_id: self.dedup.highest_answered(),
        };
        self.transmit.push_back(welcome.into());
    }

    /// Records why a fresh session was created instead of the resume the client asked for;
    /// call right after [`Session::new`].
    pub fn set_resume_refused(&mut self, refused: ResumeRefused) {
        for frame in &mut self.transmit {
            if let Some(Kind::Welcome(welcome)) = &mut frame.kind {
                welcome.resume_refused = refused.into();
            }
        }
    }

    fn close_with_error(&mut self, now: Instant, code: CloseCode, message: &str) {
        self.transmit
            .push_back(imgate_codec::Error::new(code, message).into());
        self.events.push_back(Event::CloseConnection {
            code,
            go_away: None,
        });
        self.detach_keeping_transmit(now);
    }

    fn go_away(&mut self, reason: GoAwayReason, code: CloseCode, reconnect_after_ms: u32) {
        self.transmit
            .push_back(go_away_frame(reason, code, reconnect_after_ms));
        self.events.push_back(Event::CloseConnection {
            code,
            go_away: Some(reason),
        });
    }

    /// Detaches but keeps the final frames (Error, GoAway) for the runtime to flush.
    fn detach_keeping_transmit(&mut self, now: Instant) {
        let last_words = std::mem::take(&mut self.transmit);
        self.detach(now);
        self.transmit = last_words;
    }

    /// Ends the session; a connection still attached is told why first (§13).
    fn terminate(&mut self, reason: GoAwayReason, code: CloseCode, undelivered: UndeliveredReason) {
        if self.state == State::Attached {
            self.go_away(reason, code, 0);
        }
        self.end(undelivered);
    }

    /// A refused resume that ends the session: the fresh session the caller creates takes
    /// its place, so a connection still attached is taken over.
    fn end_for_resume(&mut self, undelivered: UndeliveredReason) {
        self.terminate(
            GoAwayReason::Takeover,
            CloseCode::SESSION_TAKEN_OVER,
            undelivered,
        );
    }

    fn end(&mut self, reason: UndeliveredReason) {
        if self.state == State::Ended {
            return;
        }
        self.state = State::Ended;
        let messages = self.outbox.drain();
        if !messages.is_empty() {
            self.events
                .push_back(Event::Undelivered { reason, messages });
        }
        self.events.push_back(Event::Ended);
    }
}

fn go_away_frame(reason: GoAwayReason, code: CloseCode, reconnect_after_ms: u32) -> Frame {
    GoAway {
        reason: reason.into(),
        reconnect_after_ms,
        message: code.name().to_owned(),
    }
    .into()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod restore_tests;

#[cfg(test)]
mod max_frame_tests;

/// Whether `frame` is what a connection usually sends last before it goes quiet: its
/// `Welcome`, or the `Pong` answering a heartbeat. The session frees its queue buffers after
/// one, and the driver lets the connection's write buffer go.
pub(crate) fn precedes_quiet(frame: &Frame) -> bool {
    matches!(frame.kind, Some(Kind::Welcome(_) | Kind::Pong(_)))
}

/// Frees an emptied queue's buffer. Most sessions sit idle with empty queues for hours; a
/// queue keeps its capacity (four `Frame`s after the `Welcome`: 736 B) unless given back.
/// Called where a session turns idle (its `Welcome`, a heartbeat's `Pong`, the outbox fully
/// acknowledged), not on every drain: a busy session would allocate and free per message.
pub(crate) fn release_if_empty<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

/// Most entries a busy session's emptied queue keeps between bursts; a burst that grew it
/// further gives the buffer back as soon as the queue is empty again (a queue kept busy
/// keeps its buffer, as it needs it).
const KEEP_WHILE_BUSY: usize = 8;

/// Frees an emptied queue's buffer if a burst made it larger than [`KEEP_WHILE_BUSY`].
fn release_if_large<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > KEEP_WHILE_BUSY {
        release_if_empty(queue);
    }
}
