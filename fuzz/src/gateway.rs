//! The gateway's fuzz harness: the sans-IO session driven by arbitrary operations, the
//! `Hello` validation and the JWT authenticator's token parsing.
//!
//! Not part of the fuzz crate's library (which `codec/tests` compiles without the gateway):
//! each gateway target includes this file with `#[path]`, and so does
//! `gateway/tests/fuzz_corpus_replay.rs`, which replays `fuzz/corpus/<target>/` through it
//! under plain `cargo test`.
//!
//! Oracles of `session` (each a promise of ARCHITECTURE.md "Invariants" or docs/protocol.md):
//! every attachment starts with `Welcome`; its `Deliver`s are gap-free and in order from the
//! resume point, each with the message id its `seq` was given, and (durable apps) none beyond
//! what the store confirmed; no frame exceeds the client's `max_frame`; a message leaves the
//! outbox only once, by an ack or an `Undelivered` event, and every message a session took is
//! accounted for when it ends; ack time-outs are reported once per message; an upstream
//! request is forwarded at most once and one at a time, and a re-send gets the same receipt;
//! every close the server initiates has an `Error` or `GoAway` as the connection's last frame;
//! a resume refused for a wrong secret or owner changes nothing; the outbox stays within its
//! count and byte bounds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use imgate::auth::{AuthRequest, JwtAuthenticator, JwtConfig, MAX_USER_ID_LEN};
use imgate::ids::{AppId, DeviceId, MessageId, RoomId, SessionId, UserId};
use imgate::session::{
    DeliverOutcome, Event, Handshake, Identity, MAX_ID_LEN, MAX_TOKEN_LEN, Negotiated, Outgoing,
    ResumeSecret, Session, SessionConfig,
};
use imgate::store::Durability;
use imgate_codec::proto::send::To;
use imgate_codec::{
    Ack, CloseCode, DEFAULT_MAX_FRAME, Frame, FrameDecoder, FrameEncoder, GoAwayReason, JoinRoom,
    Kind, LeaveRoom, MIN_MAX_FRAME, PROTOCOL_VERSION, Ping, Platform, Pong, Receipt, RegisterPush,
    ResumeRefused, Send,
};
use tokio::time::Instant;

/// A sequence number the client names: one it received (minus `back`), or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SeqArg {
    /// 0: no ack.
    None,
    /// The highest seq the client received, minus this.
    Received(u8),
    /// Any value (beyond what was sent: a protocol error).
    Any(u64),
}

/// A client `msg_id`: the next fresh one, a re-send of an earlier one, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum IdArg {
    /// One above the highest used.
    Next,
    /// The highest used, minus this (a re-send).
    Resend(u8),
    /// Any value, 0 included.
    Any(u64),
}

/// One step of the world around a session.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Client `Ping` with a piggy-backed ack.
    Ping(SeqArg),
    /// Client `Ack`.
    Ack(SeqArg),
    /// Client `Send` (to a user, a room or the backend) with a piggy-backed ack.
    Send(IdArg, SeqArg, u8, u8),
    /// Client `JoinRoom`.
    JoinRoom(IdArg),
    /// Client `LeaveRoom`.
    LeaveRoom(IdArg),
    /// Client `RegisterPush`.
    RegisterPush(IdArg),
    /// Client `Error` (4004 `LOGGED_OUT` ends the session).
    ClientError(bool, u16),
    /// A frame a client must not send (`Pong`) or one without a kind.
    Unexpected(bool),
    /// Arbitrary bytes, decoded as a WebSocket message; fed to the session if they decode.
    Raw(Vec<u8>),
    /// A message for the client (payload length, with `from`, with `room`).
    Deliver(u16, bool, bool),
    /// The backend answers the request forwarded last (status, reason length).
    Answer(u8, u8),
    /// An answer for a request that is not in flight.
    StrayAnswer(IdArg),
    /// Time passes (ms), then the timer fires.
    Advance(u16),
    /// Time moves to the session's next deadline, then the timer fires.
    Timer,
    /// The connection drops.
    Detach,
    /// A client resumes: right secret, right owner, `last_seq`, `Hello.max_frame`.
    Resume(bool, bool, SeqArg, u16),
    /// The store confirms messages up to `last_seq - n`.
    MarkDurable(u8),
    /// The server drains (reconnect after, ms); `end_drain` after it.
    Drain(u16),
    /// The drain's grace is over.
    EndDrain,
    /// The backend kicks the session.
    Kick,
    /// A fresh login of the same device takes over.
    TakeOver,
    /// The session is ended now.
    EndNow,
}

/// The session's limits and timers, small so that every limit is reached.
#[derive(Arbitrary, Debug)]
pub struct Limits {
    heartbeat_ms: u8,
    max_unacked: u8,
    max_unacked_bytes: u16,
    resume_window_ms: u16,
    push_grace_ms: u16,
    ack_timeout_ms: u16,
    receipt_memory: u8,
    disk: bool,
    max_frame: u16,
}

/// `session` input: limits, then operations.
#[derive(Arbitrary, Debug)]
pub struct SessionInput {
    limits: Limits,
    ops: Vec<Op>,
}

const APP: &str = "chat";
const DEVICE: &str = "ios-1";
const USER: &str = "alice";

fn identity(user: &str) -> Identity {
    Identity {
        app: AppId::new(APP),
        user: UserId::new(user),
        device: DeviceId::new(DEVICE),
        platform: Platform::Ios,
    }
}

/// `Hello.max_frame` from a fuzzed value: 0 (the default), or at least the minimum.
fn client_max_frame(raw: u16) -> u32 {
    match raw % 4 {
        0 => 0,
        _ => u32::from(raw).max(MIN_MAX_FRAME as u32),
    }
}

fn frame_limit(max_frame: u32) -> usize {
    match max_frame {
        0 => DEFAULT_MAX_FRAME,
        limit => (limit as usize).min(DEFAULT_MAX_FRAME),
    }
}

impl Limits {
    fn config(&self) -> SessionConfig {
        let ms = |v: u16| Duration::from_millis(u64::from(v));
        SessionConfig {
            heartbeat: Duration::from_millis(10 * (1 + u64::from(self.heartbeat_ms))),
            max_unacked: 1 + usize::from(self.max_unacked % 16),
            max_unacked_bytes: usize::from(self.max_unacked_bytes % 4096),
            resume_window: ms(self.resume_window_ms),
            push_grace: ms(self.push_grace_ms),
            ack_timeout: ms(self.ack_timeout_ms),
            receipt_memory: 1 + usize::from(self.receipt_memory % 8),
            durability: if self.disk {
                Durability::Disk
            } else {
                Durability::Memory
            },
            ..SessionConfig::default()
        }
    }
}

/// The client's connection as the harness sees it: what it must receive next.
#[derive(Debug)]
struct Attachment {
    /// Frames seen so far on this connection.
    frames: usize,
    /// `Welcome.resumed` expected on the first frame.
    resumed: bool,
    /// The `seq` the next `Deliver` must carry.
    next_seq: u64,
    /// The client's frame limit (`Hello.max_frame`, defaulted).
    limit: usize,
    /// A `GoAway{Drain}` reached this connection.
    drained: bool,
    /// The connection is gone: nothing may follow.
    closed: bool,
    /// The last frame it got.
    last_frame: Option<Kind>,
}

/// A connection the session let go of itself, whose `CloseConnection` is due.
#[derive(Debug)]
struct Closing {
    /// Its last frame.
    last_frame: Option<Kind>,
    /// It got `GoAway{Drain}`.
    drained: bool,
    /// The client closed it (its `Error`).
    by_client: bool,
}

/// The harness's model of one session's life.
struct Model {
    session: Session,
    config: SessionConfig,
    now: Instant,
    attachment: Option<Attachment>,
    /// Highest seq the client has received, over every connection.
    client_seq: u64,
    /// Message id and payload length per seq (messages the session took).
    messages: BTreeMap<u64, (u64, usize)>,
    /// Message ids that left the outbox (acked or handed to the offline path).
    settled: HashSet<u64>,
    /// Message ids reported overdue.
    overdue: HashSet<u64>,
    /// The acknowledged point the harness saw.
    acked: u64,
    /// The store confirmed up to here (durable apps).
    durable: u64,
    /// Highest `msg_id` the client used.
    msg_id: u64,
    /// Requests forwarded to the backend.
    forwarded: HashSet<u64>,
    /// The request handed out and not yet answered.
    in_flight: Option<u64>,
    /// Every `msg_id` the client sent.
    sent_ids: HashSet<u64>,
    /// The backend's answers.
    answers: HashMap<u64, Receipt>,
    /// Connections closed by the session whose `CloseConnection` has not come yet (it may
    /// wait behind an unanswered upstream request).
    closes: VecDeque<Closing>,
    next_message_id: u64,
    ended: bool,
}

impl Model {
    fn new(config: SessionConfig, generation: u64, now: Instant, max_frame: u32) -> Self {
        let negotiated = Negotiated {
            max_frame,
            ..Negotiated::default()
        };
        let session = Session::new(
            now,
            1_700_000_000_000,
            SessionId(generation),
            ResumeSecret::from_bytes([generation as u8; 16]),
            identity(USER),
            config.clone(),
            &negotiated,
        );
        let mut model = Self {
            session,
            config,
            now,
            attachment: None,
            client_seq: 0,
            messages: BTreeMap::new(),
            settled: HashSet::new(),
            overdue: HashSet::new(),
            acked: 0,
            durable: 0,
            msg_id: 0,
            forwarded: HashSet::new(),
            in_flight: None,
            sent_ids: HashSet::new(),
            answers: HashMap::new(),
            closes: VecDeque::new(),
            next_message_id: generation << 32,
            ended: false,
        };
        model.attach(false, 1, max_frame);
        model
    }

    fn attach(&mut self, resumed: bool, next_seq: u64, max_frame: u32) {
        self.attachment = Some(Attachment {
            frames: 0,
            resumed,
            next_seq,
            limit: frame_limit(max_frame),
            drained: false,
            closed: false,
            last_frame: None,
        });
    }

    fn seq(&self, arg: SeqArg) -> u64 {
        match arg {
            SeqArg::None => 0,
            SeqArg::Received(back) => self.client_seq.saturating_sub(u64::from(back)),
            SeqArg::Any(seq) => seq,
        }
    }

    fn msg_id(&mut self, arg: IdArg) -> u64 {
        let id = match arg {
            IdArg::Next => self.msg_id.saturating_add(1),
            IdArg::Resend(back) => self.msg_id.saturating_sub(u64::from(back)),
            IdArg::Any(id) => id,
        };
        self.msg_id = self.msg_id.max(id);
        self.sent_ids.insert(id);
        id
    }

    fn frame(&mut self, frame: Frame) {
        self.session.handle_frame(self.now, frame);
    }

    /// Applies `op`; returns whether the client initiated a close (its `Error`).
    fn apply(&mut self, op: Op) -> bool {
        let now = self.now;
        match op {
            Op::Ping(ack) => {
                let ack = self.seq(ack);
                self.frame(
                    Ping {
                        client_time_ms: 7,
                        ack,
                    }
                    .into(),
                );
            }
            Op::Ack(seq) => {
                let seq = self.seq(seq);
                self.frame(Ack { seq }.into());
            }
            Op::Send(id, ack, payload, to) => {
                let send = Send {
                    msg_id: self.msg_id(id),
                    to: match to % 3 {
                        0 => Some(To::User("bob".into())),
                        1 => Some(To::Room("general".into())),
                        _ => None,
                    },
                    payload: Bytes::from(vec![b'x'; usize::from(payload)]),
                    ack: self.seq(ack),
                };
                self.frame(send.into());
            }
            Op::JoinRoom(id) => {
                let msg_id = self.msg_id(id);
                self.frame(
                    JoinRoom {
                        msg_id,
                        room: "general".into(),
                    }
                    .into(),
                );
            }
            Op::LeaveRoom(id) => {
                let msg_id = self.msg_id(id);
                self.frame(
                    LeaveRoom {
                        msg_id,
                        room: "general".into(),
                    }
                    .into(),
                );
            }
            Op::RegisterPush(id) => {
                let msg_id = self.msg_id(id);
                self.frame(
                    RegisterPush {
                        msg_id,
                        provider: 1,
                        token: "t0k3n".into(),
                        topic: "app.chat".into(),
                        sandbox: true,
                    }
                    .into(),
                );
            }
            Op::ClientError(logout, code) => {
                let code = if logout {
                    CloseCode::LOGGED_OUT
                } else {
                    CloseCode(code)
                };
                let attached = self.session.is_attached();
                self.frame(imgate_codec::Error::new(code, "bye").into());
                return attached;
            }
            Op::Unexpected(pong) => {
                let frame = if pong {
                    Pong::default().into()
                } else {
                    Frame::default()
                };
                self.frame(frame);
            }
            Op::Raw(bytes) => {
                let decoded = FrameDecoder::new(64 * 1024).decode_message(Bytes::from(bytes));
                if let Ok(frame) = decoded {
                    let client_error =
                        matches!(frame.kind, Some(Kind::Error(_))) && self.session.is_attached();
                    self.frame(frame);
                    return client_error;
                }
            }
            Op::Deliver(len, from, room) => self.deliver(len, from, room),
            Op::Answer(status, reason) => {
                if let Some(msg_id) = self.in_flight.take() {
                    let receipt = Receipt {
                        msg_id,
                        status: i32::from(status % 4),
                        reason_code: u32::from(reason),
                        reason: "r".repeat(usize::from(reason % 32)),
                        message_id: u64::from(status),
                    };
                    let mark = self.session.handle_receipt(receipt.clone());
                    assert!(mark.is_some(), "a forwarded request's answer is remembered");
                    self.answers.insert(msg_id, receipt);
                }
            }
            Op::StrayAnswer(id) => {
                let msg_id = match id {
                    IdArg::Any(id) => id,
                    _ => self.msg_id.saturating_add(1),
                };
                if !self.sent_ids.contains(&msg_id) {
                    let receipt = Receipt {
                        msg_id,
                        ..Receipt::default()
                    };
                    assert!(
                        self.session.handle_receipt(receipt).is_none(),
                        "an answer to a request never made was taken"
                    );
                }
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.session.handle_timeout(self.now);
            }
            Op::Timer => {
                if let Some(deadline) = self.session.poll_timeout() {
                    self.now = self.now.max(deadline);
                    self.session.handle_timeout(self.now);
                }
            }
            Op::Detach => self.session.detach(now),
            Op::Resume(secret_ok, owner_ok, last_seq, max_frame) => {
                self.resume(secret_ok, owner_ok, last_seq, max_frame);
            }
            Op::MarkDurable(back) => {
                let seq = self.session.last_seq().saturating_sub(u64::from(back));
                self.durable = self.durable.max(seq);
                self.session.mark_durable(seq);
            }
            Op::Drain(ms) => {
                self.session
                    .drain(Duration::from_millis(u64::from(ms)), now);
            }
            Op::EndDrain => {
                // The runtime ends a drain it started: only after `drain`.
                if self.attachment.as_ref().is_some_and(|a| a.drained) {
                    self.session.end_drain(now);
                }
            }
            Op::Kick => self.session.kick(),
            Op::TakeOver => self.session.take_over(),
            Op::EndNow => self.session.end_now(),
        }
        false
    }

    fn deliver(&mut self, len: u16, from: bool, room: bool) {
        self.next_message_id += 1;
        let message_id = self.next_message_id;
        let len = usize::from(len % 3000);
        let outcome = self.session.handle_deliver(
            self.now,
            Outgoing {
                message_id: MessageId(message_id),
                payload: Bytes::from(vec![b'm'; len]),
                from: from.then(|| UserId::new("bob")),
                room: room.then(|| RoomId::new("general")),
                sent_at_ms: 1,
            },
        );
        match outcome {
            DeliverOutcome::Sent { seq } | DeliverOutcome::Buffered { seq, .. } => {
                assert_eq!(
                    matches!(outcome, DeliverOutcome::Sent { .. }),
                    self.session.is_attached(),
                    "Sent exactly when attached"
                );
                let expected = self.messages.keys().next_back().map_or(0, |s| *s) + 1;
                assert_eq!(seq, expected, "seqs are gap-free");
                self.messages.insert(seq, (message_id, len));
            }
            DeliverOutcome::Ended => assert!(self.session.is_ended(), "Ended, yet not ended"),
            DeliverOutcome::Overflow | DeliverOutcome::TooLarge => {}
        }
    }

    fn resume(&mut self, secret_ok: bool, owner_ok: bool, last_seq: SeqArg, max_frame: u16) {
        let secret = if secret_ok {
            self.session.secret().as_bytes().to_vec()
        } else {
            vec![0xEE; 16]
        };
        let user = if owner_ok { USER } else { "mallory" };
        let max_frame = client_max_frame(max_frame);
        let negotiated = Negotiated {
            max_frame,
            ..Negotiated::default()
        };
        let before = (
            self.session.last_seq(),
            self.session.acked_seq(),
            self.session.is_attached(),
            self.session.generation(),
            self.session.wants_transmit(),
        );
        let last_seq = self.seq(last_seq);
        let result = self
            .session
            .resume(self.now, &identity(user), &secret, last_seq, &negotiated);
        match result {
            Ok(()) => {
                assert!(
                    secret_ok && owner_ok,
                    "resume accepted a wrong secret or owner"
                );
                let next = self.session.acked_seq() + 1;
                self.attach(true, next, max_frame);
            }
            Err(ResumeRefused::BadSecret | ResumeRefused::NotOwner) => {
                let after = (
                    self.session.last_seq(),
                    self.session.acked_seq(),
                    self.session.is_attached(),
                    self.session.generation(),
                    self.session.wants_transmit(),
                );
                assert_eq!(before, after, "a refused thief changed the session");
                assert!(
                    self.session.poll_event().is_none(),
                    "a refused thief made events"
                );
            }
            Err(_) => {}
        }
    }

    /// Drains the session's output and checks it. `detached`: the op was the transport
    /// going away; `client_closed`: it was the client's `Error`.
    fn check(&mut self, detached: bool, client_closed: bool) {
        while let Some(frame) = self.session.poll_transmit(self.now) {
            self.check_frame(&frame);
        }
        let attached = self.session.is_attached();
        if let Some(attachment) = self.attachment.as_mut().filter(|a| !a.closed && !attached) {
            attachment.closed = true;
            if !detached {
                self.closes.push_back(Closing {
                    last_frame: attachment.last_frame.take(),
                    drained: attachment.drained,
                    by_client: client_closed,
                });
            }
        }
        while let Some(event) = self.session.poll_event() {
            self.check_event(event);
        }
        self.check_bounds();
    }

    fn check_frame(&mut self, frame: &Frame) {
        let attachment = self
            .attachment
            .as_mut()
            .expect("a frame with no connection attached");
        assert!(
            !attachment.closed,
            "a frame after the server's close: {frame:?}"
        );
        let encoded = FrameEncoder::new(DEFAULT_MAX_FRAME)
            .encode_message(frame)
            .expect("every server frame encodes");
        assert!(
            encoded.len() <= attachment.limit,
            "a {}-byte frame on a connection with max_frame {}",
            encoded.len(),
            attachment.limit
        );
        attachment.frames += 1;
        attachment.last_frame = frame.kind.clone();
        let first = attachment.frames == 1;
        let kind = frame.kind.as_ref().expect("server frames have a kind");
        assert_eq!(
            first,
            matches!(kind, Kind::Welcome(_)),
            "Welcome comes first and once"
        );
        match kind {
            Kind::Welcome(welcome) => {
                assert_eq!(welcome.resumed, attachment.resumed, "Welcome.resumed");
            }
            Kind::Deliver(deliver) => {
                assert_eq!(deliver.seq, attachment.next_seq, "Deliver out of order");
                attachment.next_seq += 1;
                let (message_id, len) =
                    self.messages.get(&deliver.seq).copied().unwrap_or_else(|| {
                        panic!("Deliver seq {} the session never assigned", deliver.seq)
                    });
                assert_eq!(
                    deliver.message_id, message_id,
                    "seq delivers another message"
                );
                assert_eq!(deliver.payload.len(), len, "payload changed");
                assert!(
                    !self.settled.contains(&message_id),
                    "a message delivered after it was acked or handed to the offline path"
                );
                if self.config.durability == Durability::Disk {
                    assert!(
                        deliver.seq <= self.durable,
                        "transmitted before it was durable"
                    );
                }
                self.client_seq = self.client_seq.max(deliver.seq);
            }
            Kind::Receipt(receipt) => {
                let generic = receipt.reason == "duplicate: already processed";
                match self.answers.get(&receipt.msg_id) {
                    _ if receipt.msg_id == 0 => {
                        assert_eq!(receipt.reason_code, u32::from(CloseCode::PROTOCOL_ERROR));
                    }
                    Some(answer) if !generic => assert_eq!(answer, receipt, "re-send answer"),
                    Some(_) => {}
                    None => assert!(generic, "a receipt the backend never gave: {receipt:?}"),
                }
            }
            Kind::GoAway(go_away) => {
                if go_away.reason() == GoAwayReason::Drain {
                    attachment.drained = true;
                }
            }
            Kind::Pong(_) | Kind::Error(_) => {}
            other => panic!("the server sent a client frame: {other:?}"),
        }
    }

    fn settle(&mut self, message_id: u64, how: &str) {
        assert!(
            self.settled.insert(message_id),
            "message {message_id} settled twice (now {how})"
        );
    }

    fn check_event(&mut self, event: Event) {
        match event {
            Event::Upstream { msg_id, .. } => {
                assert!(
                    self.in_flight.is_none(),
                    "two upstream requests out at once"
                );
                assert!(msg_id != 0, "msg_id 0 forwarded");
                assert!(
                    self.forwarded.insert(msg_id),
                    "msg_id {msg_id} forwarded twice"
                );
                self.in_flight = Some(msg_id);
            }
            Event::Acked { seq, message_ids } => {
                assert!(seq > self.acked, "an ack that released nothing");
                let expected: Vec<_> = self
                    .messages
                    .range(self.acked + 1..=seq)
                    .map(|(_, (id, _))| MessageId(*id))
                    .collect();
                assert_eq!(
                    message_ids, expected,
                    "Acked releases exactly acked < seq ≤ ack"
                );
                for id in &message_ids {
                    self.settle(id.0, "acked");
                }
                self.acked = seq;
            }
            Event::AckOverdue { message_ids } => {
                for id in message_ids {
                    assert!(self.overdue.insert(id.0), "ack time-out reported twice");
                    assert!(
                        !self.settled.contains(&id.0),
                        "overdue after it was settled"
                    );
                }
            }
            Event::PushGraceElapsed { message_ids } => {
                for id in message_ids {
                    assert!(!self.settled.contains(&id.0), "push for a settled message");
                }
            }
            Event::Undelivered { messages, .. } => {
                for message in messages {
                    let id = message.message_id.0;
                    assert_eq!(
                        self.messages.get(&message.seq).map(|m| m.0),
                        Some(id),
                        "Undelivered with the wrong seq"
                    );
                    self.settle(id, "undelivered");
                    self.acked = self.acked.max(message.seq);
                }
            }
            Event::CloseConnection { code, go_away } => {
                let closing = self
                    .closes
                    .pop_front()
                    .expect("a close for a connection the session did not let go of");
                if closing.by_client {
                    assert_eq!((code, go_away), (CloseCode::NORMAL, None));
                } else if go_away == Some(GoAwayReason::Drain) {
                    assert!(closing.drained, "a drain close without GoAway{{Drain}}");
                } else {
                    let said = closing.last_frame.as_ref();
                    let matches = match (said, go_away) {
                        (Some(Kind::Error(error)), None) => error.close_code() == code,
                        (Some(Kind::GoAway(frame)), Some(reason)) => {
                            frame.reason() == reason && frame.message == code.name()
                        }
                        _ => false,
                    };
                    assert!(
                        matches,
                        "close {code} ({go_away:?}) without Error/GoAway as the last frame: \
                         {said:?}"
                    );
                }
            }
            Event::Ended => {
                assert!(!self.ended, "Ended twice");
                self.ended = true;
                for (seq, (id, _)) in &self.messages {
                    assert!(
                        self.settled.contains(id),
                        "message {id} (seq {seq}) lost: neither acked nor undelivered"
                    );
                }
            }
        }
    }

    fn check_bounds(&self) {
        if self.session.is_ended() {
            return;
        }
        let (acked, last) = (self.session.acked_seq(), self.session.last_seq());
        let held = last - acked;
        assert!(
            held <= self.config.max_unacked as u64,
            "outbox holds {held} > max_unacked {}",
            self.config.max_unacked
        );
        let bytes: usize = self
            .messages
            .range(acked + 1..last + 1)
            .map(|(_, (_, len))| len)
            .sum();
        assert!(
            bytes <= self.config.max_unacked_bytes,
            "outbox bytes {bytes}"
        );
        for seq in acked + 1..=last {
            let (id, _) = self.messages[&seq];
            assert_eq!(
                self.session.unacked(seq).map(|d| d.message_id),
                Some(id),
                "outbox holds acked < seq ≤ last_seq, gap-free"
            );
        }
    }
}

/// `session`: a session driven by arbitrary operations; when one ends, the next starts.
pub fn session(input: SessionInput) {
    let config = input.limits.config();
    let max_frame = client_max_frame(input.limits.max_frame);
    let mut now = Instant::now();
    let mut generation = 1;
    let mut model = Model::new(config.clone(), generation, now, max_frame);
    model.check(false, false);
    for op in input.ops {
        let detached = matches!(op, Op::Detach);
        let client_closed = model.apply(op);
        model.check(detached, client_closed);
        if model.ended {
            now = model.now;
            generation += 1;
            model = Model::new(config.clone(), generation, now, max_frame);
            model.check(false, false);
        }
    }
    model.session.end_now();
    model.check(false, false);
    // Events may wait behind an unanswered request: the backend answers.
    while model.in_flight.is_some() {
        model.apply(Op::Answer(0, 0));
        model.check(false, false);
    }
    assert!(model.ended, "end_now ends the session");
}

/// `handshake`: arbitrary bytes decoded as a WebSocket message, then validated as the first
/// frame. An accepted `Hello` meets every documented rule; a refusal carries a code of
/// the handshake's and a short message of the server's own.
pub fn handshake(data: &[u8]) {
    let Ok(frame) = FrameDecoder::new(64 * 1024).decode_message(Bytes::copy_from_slice(data))
    else {
        return;
    };
    let now = Instant::now();
    let handshake = Handshake::new(now, Duration::from_secs(5));
    assert!(handshake.handle_timeout(now).is_none());
    match handshake.handle_frame(frame) {
        Ok(hello) => {
            assert_eq!(hello.version, PROTOCOL_VERSION);
            assert!((1..=MAX_ID_LEN).contains(&hello.app_id.len()));
            assert!((1..=MAX_ID_LEN).contains(&hello.device_id.len()));
            assert!(hello.max_frame == 0 || hello.max_frame as usize >= MIN_MAX_FRAME);
            assert!(hello.token.len() <= MAX_TOKEN_LEN);
        }
        Err(refused) => {
            assert!(
                [
                    CloseCode::UNEXPECTED_FRAME,
                    CloseCode::UNSUPPORTED_VERSION,
                    CloseCode::PROTOCOL_ERROR,
                    CloseCode::UNAUTHENTICATED,
                ]
                .contains(&refused.code),
                "unexpected refusal code {}",
                refused.code
            );
            // It must fit the smallest frame a client may announce.
            assert!(!refused.message.is_empty() && refused.message.len() <= 256);
        }
    }
}

/// The HS256 secret of the `jwt` target.
pub const JWT_SECRET: &[u8] = b"fuzzing-secret-at-least-32-bytes!!";
/// The time the `jwt` target verifies at (unix seconds).
pub const JWT_NOW: u64 = 1_700_000_000;

fn authenticator() -> &'static JwtAuthenticator {
    static AUTH: OnceLock<JwtAuthenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let mut config = JwtConfig::hs256(JWT_SECRET);
        config.audience = Some("imgate".into());
        config.issuer = Some("https://id.example".into());
        JwtAuthenticator::new(config).expect("a valid HS256 config")
    })
}

/// `jwt`: token parsing must never panic. The first byte picks the token:
///
/// - `0`: the rest, as a token (lossy UTF-8)
/// - `1`: the rest is the claims part (any bytes), under an HS256 header, signed with the key
/// - `2`: the rest is `header \n claims`, both any bytes, signed with the key
/// - otherwise: the rest as `header.claims` text, signed with the key
///
/// An accepted token was signed with the key and names the app, device, issuer and audience
/// the request and configuration require.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let signed = |header: &[u8], claims: &[u8]| {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        sign(&input)
    };
    let token = match mode % 4 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => signed(br#"{"alg":"HS256","typ":"JWT"}"#, rest),
        2 => {
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            signed(&rest[..split], rest.get(split + 1..).unwrap_or_default())
        }
        _ => sign(&String::from_utf8_lossy(rest)),
    };
    let request = AuthRequest {
        app: AppId::new(APP),
        device: DeviceId::new(DEVICE),
        token: token.clone(),
        peer: None,
    };
    let Ok(authenticated) = authenticator().verify(&request, JWT_NOW) else {
        return;
    };
    let user = authenticated.user.as_str();
    assert!(!user.is_empty() && user.len() <= MAX_USER_ID_LEN);
    let expires = authenticated.expires_at.expect("an accepted token has exp");
    assert!(
        expires.saturating_add(60) > JWT_NOW,
        "expired token accepted"
    );
    let claims = token.split('.').nth(1).unwrap_or_default();
    let claims = URL_SAFE_NO_PAD
        .decode(claims)
        .expect("an accepted token's claims are base64url");
    // The authenticator skips claims it does not know without checking their escapes (a
    // lone surrogate is fine there, not in a `Value`): such claims are not cross-checked.
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&claims) else {
        return;
    };
    assert_eq!(claims["app_id"], APP, "token for another app accepted");
    assert_eq!(
        claims["iss"], "https://id.example",
        "untrusted issuer accepted"
    );
    assert_eq!(claims["sub"], user);
    if let Some(device) = claims.get("device_id") {
        assert_eq!(device, DEVICE, "token for another device accepted");
    }
}

/// `signing_input.signature` with the target's key.
fn sign(signing_input: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET);
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("HS256 signs any input");
    format!("{signing_input}.{signature}")
}
