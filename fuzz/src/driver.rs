//! The `driver` fuzz target's harness: a whole gateway (handshake task, session driver,
//! timers, drain) on a current-thread runtime with tokio's paused clock, its clients on
//! in-memory pipes (`FramedConn::pipe`), driven by arbitrary client frames and bytes,
//! deliveries, kicks, disconnects and time steps; it ends with a drain.
//!
//! Like `gateway.rs`, it is included with `#[path]` by its target and by
//! `gateway/tests/fuzz_corpus_replay.rs`.
//!
//! Oracles, checked from outside as a client and the offline path see the gateway:
//! - every connection's first frame is `Welcome` (or the handshake's `Error`); its `Deliver`s
//!   are gap-free and in order from the resume point, each with the message id the delivery
//!   report gave its `seq` (no loss, no duplicate, no phantom), and none exceeds the
//!   client's frame limit or fails to decode;
//! - every message the gateway accepted for the user is settled exactly once by the end: acked
//!   by the device or handed to the offline path (`NoSession`, `SessionEnded`); an ack
//!   time-out or push-grace push never names a settled message;
//! - memory stays bounded: at most one session for the one device, holding at most
//!   `max_unacked` unsettled messages; a session that left the registry (a take-over ends it
//!   there, while its driver may still be closing its connection) has handed every message
//!   it held to the offline path within the close time-out;
//! - every close the server initiates ends with an `Error` or a `GoAway` as the last frame,
//!   unless the client sent an `Error` itself or did not read in time (the stream was cut
//!   mid-frame, or the pipe was full when last read: a stalled write or a close whose flush
//!   timed out);
//! - the drain finishes within its grace plus the close time-out, cleanly.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use imgate::auth::StaticTokens;
use imgate::backend::RelayBackend;
use imgate::deliver::{DeliveryOptions, DeviceOutcome};
use imgate::ids::{AppId, DeviceId, MessageId, SessionId, UserId};
use imgate::offline::{PushPolicy, PushTrigger};
use imgate::session::SessionConfig;
use imgate::{App, Gateway, RunningGateway, ServerConfig};
use imgate_codec::proto::send::To;
use imgate_codec::{
    Ack, CloseCode, Dictionary, FEATURE_LZ4, Frame, FrameDecoder, FrameEncoder, Hello, JoinRoom,
    Kind, Ping, Resume, Send,
};
use imgate_transports::{FramedConn, ListenerConfig, PIPE_PEER, TransportKind};
use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::time::{Instant, sleep, timeout};

const USER: &str = "alice";
const DEVICE: &str = "phone";
const TOKEN: &str = "tok-alice";

/// A sequence number the client names.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SeqArg {
    /// The highest seq received in order, minus this.
    Received(u8),
    /// Any value (beyond what was sent: a protocol error).
    Any(u64),
}

/// The client's `Hello` on a new connection.
#[derive(Arbitrary, Debug)]
pub struct HelloArg {
    /// Resume the newest session (with the highest seq received in order).
    pub resume: bool,
    /// A wrong resume secret.
    pub wrong_secret: bool,
    /// 1: a wrong version, 2: a wrong token, 3: an unknown app (modulo 16; others: none).
    pub bad: u8,
    /// LZ4 (bit 0), the built-in dictionary (bit 1).
    pub features: u8,
    /// The client's frame limit: none if this is a multiple of 4, else 512 + this.
    pub max_frame: u16,
}

/// One step of the world around the gateway.
#[derive(Arbitrary, Debug)]
pub enum DriverOp {
    /// A new connection saying `Hello` (older ones stay open until the server closes them).
    Connect(HelloArg),
    /// A new connection that sends nothing (the handshake deadline).
    Silent,
    /// Client `Ping` with a piggy-backed ack, on the newest connection.
    Ping(SeqArg),
    /// Client `Ack`.
    Ack(SeqArg),
    /// Client `Send` to another user (`msg_id`, payload length).
    Send(u64, u8),
    /// Client `JoinRoom`.
    Join(u64),
    /// Client `Error` with this code.
    Error(u16),
    /// Raw bytes on the newest connection (a length prefix and body of the fuzzer's choice).
    Raw(Vec<u8>),
    /// The backend delivers a message of this many bytes to the user.
    Deliver(u16),
    /// The client reads what is waiting on every connection.
    Read,
    /// Time passes (ms).
    Step(u16),
    /// The client drops its newest connection.
    Close,
    /// The operator kicks the user's session.
    Kick,
}

/// Session limits and timers, small so that every one is reached.
#[derive(Arbitrary, Debug)]
pub struct DriverLimits {
    /// Heartbeat interval: 1 + this % 60 s (liveness: 2.5 of them).
    pub heartbeat_s: u8,
    /// Ack time-out: 1 + this % 60 s.
    pub ack_timeout_s: u8,
    /// Push grace: 1 + this % 60 s.
    pub push_grace_s: u8,
    /// Resume window: 1 + this % 120 s.
    pub resume_window_s: u8,
    /// Unacknowledged messages a session holds: 1 + this % 32.
    pub max_unacked: u8,
    /// Their bytes: (1 + this % 64) KiB.
    pub max_unacked_kb: u8,
    /// What the pipe holds each way: (1 + this % 64) KiB.
    pub pipe_kb: u8,
}

/// What a run went through, so a scripted input can show that the oracles were reached.
#[derive(Debug, Default)]
pub struct Summary {
    /// `Welcome`s received (fresh, resumed).
    pub welcomes: (usize, usize),
    /// `Deliver`s received.
    pub delivers: usize,
    /// The last frame of each connection the server closed, in order of the closes.
    pub closes: Vec<&'static str>,
    /// Messages settled by an ack, and by the offline path.
    pub settled: (usize, usize),
}

/// `driver` input: limits, then operations.
#[derive(Arbitrary, Debug)]
pub struct DriverInput {
    /// Session limits and the pipe's size.
    pub limits: DriverLimits,
    /// The operations (the first 96).
    pub ops: Vec<DriverOp>,
}

/// Operations per input: enough for several sessions' lives, few enough to stay fast.
const MAX_OPS: usize = 96;

/// How the offline path settled a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    Acked,
    Offline,
}

/// What the push policy was told about the user's messages.
#[derive(Debug, Default)]
struct Ledger {
    settled: HashMap<MessageId, Settled>,
    violations: Vec<String>,
}

/// The push policy: records settlements and checks that none happens twice.
#[derive(Debug, Default)]
struct Recorder(Mutex<Ledger>);

impl Recorder {
    fn settle(&self, messages: &[MessageId], how: Settled) {
        let mut ledger = self.0.lock().expect("ledger lock");
        for id in messages {
            if let Some(before) = ledger.settled.insert(*id, how) {
                ledger
                    .violations
                    .push(format!("{id:?} settled twice: {before:?} then {how:?}"));
            }
        }
    }
}

impl PushPolicy for Recorder {
    fn push(
        &self,
        _app: &AppId,
        user: &UserId,
        _device: Option<&DeviceId>,
        messages: &[MessageId],
        trigger: PushTrigger,
    ) {
        if user.as_str() != USER {
            return;
        }
        match trigger {
            PushTrigger::NoSession | PushTrigger::SessionEnded(_) => {
                self.settle(messages, Settled::Offline);
            }
            PushTrigger::AckTimeout | PushTrigger::DetachedGrace => {
                let mut ledger = self.0.lock().expect("ledger lock");
                for id in messages {
                    if let Some(how) = ledger.settled.get(id).copied() {
                        ledger
                            .violations
                            .push(format!("{id:?} pushed ({trigger:?}) after {how:?}"));
                    }
                }
            }
        }
    }

    fn acked(&self, identity: &imgate::session::Identity, messages: &[MessageId]) {
        if identity.user.as_str() == USER {
            self.settle(messages, Settled::Acked);
        }
    }
}

/// One client connection, read and written as raw bytes.
struct Conn {
    stream: DuplexStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// The session its `Welcome` named.
    session: Option<SessionId>,
    /// The seq its next `Deliver` must carry (`None` after a resume until the first one).
    expected: Option<u64>,
    /// The session and `last_seq` its `Hello` asked to resume.
    resume_from: Option<(SessionId, u64)>,
    /// The client's bytes, decoded as the server would (to know whether it sent an `Error`).
    mirror: BytesMut,
    /// The kind of the last frame received.
    last: Option<&'static str>,
    frames: usize,
    /// The client sent an `Error`: the close that follows is its doing.
    excused: bool,
    /// What the pipe holds each way.
    capacity: usize,
    /// The last read found the pipe full: the server may have been waiting to write.
    full: bool,
    ended: bool,
}

/// What the client and the delivery reports know.
struct Model {
    conns: Vec<Conn>,
    /// (session, seq) → the message the delivery report gave it.
    seqs: BTreeMap<(SessionId, u64), MessageId>,
    /// Highest seq received in order, per session.
    received: HashMap<SessionId, u64>,
    /// Highest seq the client acknowledged (of those it was given), per session: a resume
    /// naming less replays from after it (a lower ack is ignored, §8).
    acked: HashMap<SessionId, u64>,
    /// The newest `Welcome`'s session and secret.
    newest: Option<(SessionId, Bytes)>,
    /// Every message the gateway took for the user.
    accepted: Vec<MessageId>,
    /// When each session that was given messages was first seen gone from the registry.
    gone: HashMap<SessionId, Instant>,
    max_unacked: usize,
    close_timeout: Duration,
    summary: Summary,
}

fn session_config(limits: &DriverLimits) -> SessionConfig {
    SessionConfig {
        heartbeat: Duration::from_secs(u64::from(limits.heartbeat_s % 60) + 1),
        ack_timeout: Duration::from_secs(u64::from(limits.ack_timeout_s % 60) + 1),
        push_grace: Duration::from_secs(u64::from(limits.push_grace_s % 60) + 1),
        resume_window: Duration::from_secs(u64::from(limits.resume_window_s % 120) + 1),
        max_unacked: usize::from(limits.max_unacked % 32) + 1,
        max_unacked_bytes: (usize::from(limits.max_unacked_kb % 64) + 1) * 1024,
        ..SessionConfig::default()
    }
}

/// `driver`: runs the gateway on a paused current-thread runtime through `input`.
pub fn driver(input: DriverInput) -> Summary {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(run(input))
}

async fn run(input: DriverInput) -> Summary {
    let session = session_config(&input.limits);
    let max_unacked = session.max_unacked;
    let pipe_capacity = (usize::from(input.limits.pipe_kb % 64) + 1) * 1024;
    let recorder = Arc::new(Recorder::default());
    let mut tokens = StaticTokens::new();
    tokens.insert(TOKEN.to_owned(), UserId::new(USER));
    let app = App {
        id: AppId::new("chat"),
        authenticator: Arc::new(tokens),
        backend: Arc::new(RelayBackend::default()),
        session: Arc::new(session),
        push: recorder.clone(),
    };
    let server = ServerConfig {
        shards: 1,
        ..ServerConfig::default()
    };
    let close_timeout = server.close_timeout;
    let gw = Gateway::builder()
        .app(app)
        .config(server)
        .start()
        .await
        .expect("start");
    let listener = ListenerConfig::new(TransportKind::Tcp, PIPE_PEER);
    let mut model = Model {
        conns: Vec::new(),
        seqs: BTreeMap::new(),
        received: HashMap::new(),
        acked: HashMap::new(),
        newest: None,
        accepted: Vec::new(),
        gone: HashMap::new(),
        max_unacked,
        close_timeout,
        summary: Summary::default(),
    };
    for op in input.ops.into_iter().take(MAX_OPS) {
        step(&gw, &listener, pipe_capacity, &mut model, op).await;
        // Everything due before the next millisecond runs before the next operation.
        sleep(Duration::from_millis(1)).await;
        model.read_all();
        model.check_bounds(&gw, &recorder);
    }
    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let drain = tokio::spawn(gw.drain(grace, Duration::ZERO));
    while model.conns.iter().any(|c| !c.ended) {
        sleep(Duration::from_millis(10)).await;
        model.read_all();
        assert!(
            started.elapsed() <= grace + 2 * close_timeout,
            "connections still open {:?} after the drain began",
            started.elapsed()
        );
    }
    let report = drain.await.expect("drain task");
    assert!(report.clean, "drain: {report}");
    let ledger = recorder.0.lock().expect("ledger lock");
    assert!(ledger.violations.is_empty(), "{:?}", ledger.violations);
    for id in &model.accepted {
        assert!(
            ledger.settled.contains_key(id),
            "{id:?} was accepted and never acked nor handed to the offline path"
        );
    }
    let acked = ledger
        .settled
        .values()
        .filter(|&&h| h == Settled::Acked)
        .count();
    model.summary.settled = (acked, ledger.settled.len() - acked);
    model.summary
}

async fn step(
    gw: &RunningGateway,
    listener: &ListenerConfig,
    pipe_capacity: usize,
    model: &mut Model,
    op: DriverOp,
) {
    match op {
        DriverOp::Connect(hello) => {
            let (frame, resume_from, max_frame) = model.hello(&hello);
            let mut conn = model.open(gw, listener, pipe_capacity, max_frame);
            conn.resume_from = resume_from;
            model.conns.push(conn);
            model.send(frame).await;
        }
        DriverOp::Silent => {
            let conn = model.open(gw, listener, pipe_capacity, 0);
            model.conns.push(conn);
        }
        DriverOp::Ping(seq) => {
            let ack = model.ack(seq);
            model
                .send(
                    Ping {
                        client_time_ms: 1,
                        ack,
                    }
                    .into(),
                )
                .await;
        }
        DriverOp::Ack(seq) => {
            let seq = model.ack(seq);
            model.send(Ack { seq }.into()).await;
        }
        DriverOp::Send(msg_id, len) => {
            let frame = Send {
                msg_id,
                to: Some(To::User("bob".into())),
                payload: Bytes::from(vec![b's'; usize::from(len)]),
                ack: 0,
            };
            model.send(frame.into()).await;
        }
        DriverOp::Join(msg_id) => {
            let room = "lobby".into();
            model.send(JoinRoom { msg_id, room }.into()).await;
        }
        DriverOp::Error(code) => {
            let error = imgate_codec::Error::new(CloseCode(code), "client error");
            model.send(error.into()).await;
        }
        DriverOp::Raw(bytes) => model.write(&bytes).await,
        DriverOp::Deliver(len) => model.deliver(gw, len).await,
        DriverOp::Read => model.read_all(),
        DriverOp::Step(ms) => sleep(Duration::from_millis(u64::from(ms))).await,
        DriverOp::Close => {
            model.conns.pop();
        }
        DriverOp::Kick => {
            for info in gw
                .handle()
                .user_sessions(&AppId::new("chat"), &UserId::new(USER))
            {
                gw.handle().kick(info.id);
            }
        }
    }
}

impl Model {
    fn hello(&self, arg: &HelloArg) -> (Frame, Option<(SessionId, u64)>, u32) {
        let resume = match (&self.newest, arg.resume) {
            (Some((session, secret)), true) => {
                let last_seq = self.received.get(session).copied().unwrap_or(0);
                let mut secret = secret.to_vec();
                if arg.wrong_secret
                    && let Some(byte) = secret.first_mut()
                {
                    *byte ^= 1;
                }
                Some(Resume {
                    session_id: session.0,
                    resume_secret: secret.into(),
                    last_seq,
                })
            }
            _ => None,
        };
        let resume_from = resume
            .as_ref()
            .map(|r| (SessionId(r.session_id), r.last_seq));
        let max_frame = match arg.max_frame % 4 {
            0 => 0,
            _ => imgate_codec::MIN_MAX_FRAME as u32 + u32::from(arg.max_frame),
        };
        let mut features = Vec::new();
        if arg.features & 1 != 0 {
            features.push(FEATURE_LZ4.to_owned());
        }
        let mut dictionaries = Vec::new();
        if arg.features & 2 != 0 {
            dictionaries.push(Dictionary::builtin().id().0);
        }
        let hello = Hello {
            version: if arg.bad % 16 == 1 { 9 } else { 1 },
            token: if arg.bad % 16 == 2 {
                "nope".into()
            } else {
                TOKEN.into()
            },
            app_id: if arg.bad % 16 == 3 {
                "other".into()
            } else {
                "chat".into()
            },
            device_id: DEVICE.into(),
            resume,
            features,
            dictionaries,
            max_frame,
            ..Default::default()
        };
        (hello.into(), resume_from, max_frame)
    }

    fn open(
        &self,
        gw: &RunningGateway,
        listener: &ListenerConfig,
        pipe_capacity: usize,
        max_frame: u32,
    ) -> Conn {
        let (server, client) = FramedConn::pipe(listener, pipe_capacity);
        gw.serve(server);
        let limit = match max_frame {
            0 => imgate_codec::DEFAULT_MAX_FRAME,
            n => n as usize,
        };
        Conn {
            stream: client,
            buf: BytesMut::new(),
            // The client decodes within its announced limit, with the dictionary it listed.
            decoder: FrameDecoder::new(limit).with_dictionary(Some(Dictionary::builtin())),
            session: None,
            expected: None,
            resume_from: None,
            mirror: BytesMut::new(),
            last: None,
            frames: 0,
            excused: false,
            capacity: pipe_capacity,
            full: false,
            ended: false,
        }
    }

    /// The seq an ack names; remembered as acknowledged if the server gave it out.
    fn ack(&mut self, arg: SeqArg) -> u64 {
        let session = self.conns.last().and_then(|c| c.session);
        let seq = match arg {
            SeqArg::Received(back) => {
                let received = session.and_then(|s| self.received.get(&s).copied());
                received.unwrap_or(0).saturating_sub(u64::from(back))
            }
            SeqArg::Any(seq) => seq,
        };
        if let Some(session) = session
            && self.seqs.contains_key(&(session, seq))
        {
            let acked = self.acked.entry(session).or_default();
            *acked = (*acked).max(seq);
        }
        seq
    }

    async fn send(&mut self, frame: Frame) {
        let mut wire = BytesMut::new();
        FrameEncoder::new(1 << 20)
            .encode_stream(&frame, &mut wire)
            .expect("the client's frames encode");
        self.write(&wire).await;
    }

    /// Writes to the newest connection; a server that neither reads nor closes within ten
    /// minutes is a finding.
    async fn write(&mut self, bytes: &[u8]) {
        let Some(conn) = self.conns.last_mut() else {
            return;
        };
        if conn.ended {
            return;
        }
        conn.mirror.extend_from_slice(bytes);
        // As the server reads them (limit and compression aside): an `Error` among them
        // means the client is closing.
        let mirror = FrameDecoder::new(1 << 20).with_dictionary(Some(Dictionary::builtin()));
        while let Ok(Some(frame)) = mirror.decode_stream(&mut conn.mirror) {
            conn.excused |= matches!(frame.kind, Some(Kind::Error(_)));
        }
        let written = timeout(Duration::from_secs(600), conn.stream.write_all(bytes)).await;
        assert!(written.is_ok(), "the server neither reads nor closes");
    }

    async fn deliver(&mut self, gw: &RunningGateway, len: u16) {
        let delivery = imgate::deliver::Delivery {
            target: imgate::deliver::Target::User(UserId::new(USER)),
            payload: Bytes::from(vec![b'd'; usize::from(len)]),
            options: DeliveryOptions::default(),
        };
        let report = gw
            .handle()
            .deliver(&AppId::new("chat"), delivery)
            .await
            .expect("an in-memory delivery");
        self.accepted.push(report.message_id);
        for device in &report.devices {
            let seq = match device.outcome {
                DeviceOutcome::Sent { seq } | DeviceOutcome::Buffered { seq } => seq,
                DeviceOutcome::Offline => continue,
                ref other => panic!("a single node reported {other:?}"),
            };
            let session = device.session.expect("a seq is in a session");
            let before = self.seqs.insert((session, seq), report.message_id);
            assert!(before.is_none(), "seq {seq} of {session:?} given twice");
        }
    }

    fn read_all(&mut self) {
        for i in 0..self.conns.len() {
            self.read(i);
        }
    }

    /// Takes every frame already waiting on connection `i`, checking each.
    fn read(&mut self, i: usize) {
        let mut batch = 0;
        loop {
            let conn = &mut self.conns[i];
            if conn.ended {
                return;
            }
            match try_read(&mut conn.stream, &mut conn.buf) {
                None => {
                    conn.full = batch >= conn.capacity;
                    return;
                }
                Some(Ok(0)) | Some(Err(_)) => {
                    conn.ended = true;
                    // After a full pipe the client did not read in time (a stalled write, a
                    // close whose flush timed out): the stream may be cut anywhere, and the
                    // server's last frame may never have fitted in.
                    let full = conn.full || batch >= conn.capacity;
                    let trailing = !conn.buf.is_empty();
                    assert!(!trailing || full, "the server ended its stream mid-frame");
                    let closed_with_code = matches!(conn.last, Some("Error" | "GoAway"));
                    self.summary.closes.push(conn.last.unwrap_or("nothing"));
                    assert!(
                        conn.excused || full || closed_with_code,
                        "a server close without Error or GoAway last (last: {:?}, {} frames)",
                        conn.last,
                        conn.frames
                    );
                    return;
                }
                Some(Ok(n)) => batch += n,
            }
            loop {
                let conn = &mut self.conns[i];
                let frame = match conn.decoder.decode_stream(&mut conn.buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => panic!("the server sent an undecodable frame: {error}"),
                };
                self.received_frame(i, frame);
            }
        }
    }

    fn received_frame(&mut self, i: usize, frame: Frame) {
        let conn = &mut self.conns[i];
        let kind = frame.kind.expect("every server frame has a kind");
        let first = conn.frames == 0;
        conn.frames += 1;
        conn.last = Some(kind_name(&kind));
        assert!(
            !first || matches!(kind, Kind::Welcome(_) | Kind::Error(_)),
            "first frame {kind:?}"
        );
        match kind {
            Kind::Welcome(welcome) => {
                assert!(first, "a second Welcome");
                let session = SessionId(welcome.session_id);
                conn.expected = match (welcome.resumed, conn.resume_from) {
                    (true, Some((asked, _))) => {
                        assert_eq!(asked, session, "resumed another session");
                        None
                    }
                    (true, None) => panic!("resumed without asking"),
                    (false, _) => Some(1),
                };
                conn.session = Some(session);
                self.newest = Some((session, welcome.resume_secret));
                if welcome.resumed {
                    self.summary.welcomes.1 += 1;
                } else {
                    self.summary.welcomes.0 += 1;
                }
            }
            Kind::Deliver(deliver) => {
                let session = conn.session.expect("a Deliver after the Welcome");
                let seq = deliver.seq;
                match conn.expected {
                    Some(expected) => assert_eq!(seq, expected, "a gap, a repeat or a reorder"),
                    None => {
                        // The replay starts after what the client named or acknowledged,
                        // whichever is higher.
                        let named = conn.resume_from.map_or(0, |(_, last_seq)| last_seq);
                        let acked = self.acked.get(&session).copied().unwrap_or(0);
                        assert!(
                            seq > named && seq <= named.max(acked) + 1,
                            "the replay starts at {seq} (named {named}, acked {acked})"
                        );
                    }
                }
                conn.expected = Some(seq + 1);
                assert_eq!(
                    self.seqs.get(&(session, seq)),
                    Some(&MessageId(deliver.message_id)),
                    "seq {seq} carries another message than its delivery report said"
                );
                self.summary.delivers += 1;
                let received = self.received.entry(session).or_default();
                *received = (*received).max(seq);
            }
            _ => {}
        }
    }

    fn check_bounds(&mut self, gw: &RunningGateway, recorder: &Recorder) {
        let sessions = gw
            .handle()
            .user_sessions(&AppId::new("chat"), &UserId::new(USER));
        assert!(
            sessions.len() <= 1,
            "{} sessions for one device",
            sessions.len()
        );
        let ledger = recorder.0.lock().expect("ledger lock");
        assert!(ledger.violations.is_empty(), "{:?}", ledger.violations);
        let live = sessions.first().map(|info| info.id);
        let now = Instant::now();
        for &(session, _) in self.seqs.keys() {
            if Some(session) != live {
                self.gone.entry(session).or_insert(now);
            }
        }
        // A message is the live session's, an ended session's, or was settled at once (no
        // session took it).
        let ended: HashMap<MessageId, SessionId> = self
            .seqs
            .iter()
            .filter(|((session, _), _)| Some(*session) != live)
            .map(|(&(session, _), &id)| (id, session))
            .collect();
        let mut held = 0;
        for id in self
            .accepted
            .iter()
            .filter(|id| !ledger.settled.contains_key(id))
        {
            match ended.get(id) {
                Some(session) => {
                    let gone = self.gone[session];
                    assert!(
                        now <= gone + self.close_timeout,
                        "{id:?} of ended {session:?} still unsettled {:?} after it ended",
                        now - gone
                    );
                }
                None => held += 1,
            }
        }
        assert!(
            held <= self.max_unacked,
            "{held} messages held, max_unacked {}",
            self.max_unacked
        );
    }
}

/// Reads what is already in the pipe, without waiting.
fn try_read(stream: &mut DuplexStream, buf: &mut BytesMut) -> Option<io::Result<usize>> {
    let mut chunk = [0u8; 4096];
    let mut read = ReadBuf::new(&mut chunk);
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(stream).poll_read(&mut cx, &mut read) {
        Poll::Pending => None,
        Poll::Ready(Err(error)) => Some(Err(error)),
        Poll::Ready(Ok(())) => {
            buf.extend_from_slice(read.filled());
            Some(Ok(read.filled().len()))
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Error(_) => "Error",
        Kind::GoAway(_) => "GoAway",
        Kind::Welcome(_) => "Welcome",
        Kind::Deliver(_) => "Deliver",
        _ => "other",
    }
}
