//! Load-generator clients: imgate raw frames over any imgate transport, MQTT (rumqttc), NATS (async-nats).
//! Every connection reports each delivered payload to a callback and can send to a user or a
//! room; sends are bounded by a window of outstanding acknowledgements where the protocol
//! has them (imgate `Receipt`, MQTT `PUBACK`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use imgate_codec::{Ack, Frame, Hello, JoinRoom, Kind, Ping, Resume, Send as SendFrame};
use imgate_transports::{Connector, ConnectorConfig, FramedConn, RootCertStore, TransportKind};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

/// The development secret of the default configuration.
pub(crate) const JWT_SECRET: &str = "imgate-development-secret-change-me";
/// App id of the generated configuration.
pub(crate) const APP: &str = "default";

/// A system under test and the way it is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// imgate, acknowledged delivery (Receipts to senders, Acks from receivers).
    Imgate,
    /// mosquitto, MQTT QoS 1.
    MqttQos1,
    /// mosquitto, MQTT QoS 0.
    MqttQos0,
    /// nats-server, core publish.
    Nats,
}

impl Target {
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "imgate" => Self::Imgate,
            "mosquitto-qos1" | "mqtt-qos1" => Self::MqttQos1,
            "mosquitto-qos0" | "mqtt-qos0" => Self::MqttQos0,
            "nats" => Self::Nats,
            other => {
                return Err(format!(
                    "unknown target {other:?} (imgate, mosquitto-qos1, mosquitto-qos0, nats)"
                ));
            }
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Imgate => "imgate",
            Self::MqttQos1 => "mosquitto-qos1",
            Self::MqttQos0 => "mosquitto-qos0",
            Self::Nats => "nats",
        }
    }

    pub(crate) fn server(self) -> crate::server::ServerKind {
        match self {
            Self::Imgate => crate::server::ServerKind::Imgate,
            Self::MqttQos1 | Self::MqttQos0 => crate::server::ServerKind::Mosquitto,
            Self::Nats => crate::server::ServerKind::Nats,
        }
    }
}

/// Called with every delivered payload.
pub(crate) type OnMessage = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Connection settings shared by every connection of a run.
#[derive(Clone)]
pub(crate) struct ClientConfig {
    pub target: Target,
    pub addr: SocketAddr,
    /// Outstanding un-receipted sends per connection.
    pub window: usize,
    /// Client heartbeat interval (imgate Ping, MQTT keep-alive, NATS ping).
    pub heartbeat: Duration,
    /// imgate: the transport `addr` speaks (the peers are always TCP).
    pub transport: TransportKind,
    /// imgate over TLS, WSS or QUIC: PEM certificate to trust (the bench's self-signed one).
    pub ca: Option<PathBuf>,
}

/// An HS256 token for `user`, valid for a day.
pub(crate) fn token(user: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        app_id: &'a str,
        exp: u64,
    }
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 86_400;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims {
            sub: user,
            app_id: APP,
            exp,
        },
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap_or_default()
}

enum Cmd {
    Frame(Frame),
}

/// imgate session state needed for a resume.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionInfo {
    pub session_id: u64,
    pub secret: Bytes,
    pub resumed: bool,
}

/// One connected user.
pub(crate) struct Conn {
    inner: Inner,
    /// Receipts (imgate), PUBACKs/SUBACKs (MQTT) seen.
    pub acks: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

enum Inner {
    Imgate {
        tx: mpsc::UnboundedSender<Cmd>,
        window: Arc<Semaphore>,
        next_id: AtomicU64,
        last_seq: Arc<AtomicU64>,
        session: SessionInfo,
    },
    Mqtt {
        client: rumqttc::AsyncClient,
        qos: rumqttc::QoS,
    },
    Nats {
        client: async_nats::Client,
    },
}

impl Drop for Conn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Where a message goes.
pub(crate) enum Dest<'a> {
    User(&'a str),
    Room(&'a str),
}

fn mqtt_topic(dest: &Dest<'_>) -> String {
    match dest {
        Dest::User(u) => format!("u/{u}"),
        Dest::Room(r) => format!("room/{r}"),
    }
}

fn nats_subject(dest: &Dest<'_>) -> String {
    match dest {
        Dest::User(u) => format!("u.{u}"),
        Dest::Room(r) => format!("room.{r}"),
    }
}

impl Conn {
    /// Connects `user` (the full handshake: imgate Hello → Welcome, MQTT CONNECT → CONNACK and
    /// SUBSCRIBE → SUBACK on its own topic, NATS CONNECT and SUB).
    pub(crate) async fn connect(
        config: &ClientConfig,
        user: &str,
        on_message: OnMessage,
    ) -> Result<Self, String> {
        Self::connect_resume(config, user, on_message, None).await
    }

    /// As `connect`; for imgate, with `Hello.resume` when `resume` is given.
    pub(crate) async fn connect_resume(
        config: &ClientConfig,
        user: &str,
        on_message: OnMessage,
        resume: Option<(SessionInfo, u64)>,
    ) -> Result<Self, String> {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match config.target {
                Target::Imgate => {
                    connect_imgate(config, user, on_message.clone(), resume.clone()).await
                }
                Target::MqttQos1 | Target::MqttQos0 => {
                    connect_mqtt(config, user, on_message.clone()).await
                }
                Target::Nats => connect_nats(config, user, on_message.clone()).await,
            };
            match result {
                Ok(conn) => return Ok(conn),
                Err(e) if attempt >= 8 => return Err(format!("{user}: {e}")),
                Err(_) => {
                    tokio::time::sleep(delay + Duration::from_millis(fastrand::u64(0..50))).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Session to resume later, and the last in-order seq received (imgate only).
    pub(crate) fn session(&self) -> Option<(SessionInfo, u64)> {
        match &self.inner {
            Inner::Imgate {
                session, last_seq, ..
            } => Some((session.clone(), last_seq.load(Ordering::Acquire))),
            _ => None,
        }
    }

    /// Sends one message; waits for window space first (acknowledged protocols).
    pub(crate) async fn send(&self, dest: Dest<'_>, payload: Bytes) -> Result<(), String> {
        match &self.inner {
            Inner::Imgate {
                tx,
                window,
                next_id,
                ..
            } => {
                let permit = window.acquire().await.map_err(|e| e.to_string())?;
                permit.forget();
                let to = match dest {
                    Dest::User(u) => imgate_codec::proto::send::To::User(u.into()),
                    Dest::Room(r) => imgate_codec::proto::send::To::Room(r.into()),
                };
                let frame: Frame = SendFrame {
                    msg_id: next_id.fetch_add(1, Ordering::Relaxed),
                    to: Some(to),
                    payload,
                    ack: 0,
                }
                .into();
                tx.send(Cmd::Frame(frame))
                    .map_err(|_| "connection closed".into())
            }
            Inner::Mqtt { client, qos } => client
                .publish_bytes(mqtt_topic(&dest), *qos, false, payload)
                .await
                .map_err(|e| e.to_string()),
            Inner::Nats { client } => client
                .publish(nats_subject(&dest), payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Joins a room (imgate `JoinRoom`, MQTT/NATS subscribe). Completion shows in `acks`
    /// (imgate, MQTT); NATS subscriptions are flushed.
    pub(crate) async fn join(&self, room: &str) -> Result<(), String> {
        match &self.inner {
            Inner::Imgate { tx, next_id, .. } => {
                let frame: Frame = JoinRoom {
                    msg_id: next_id.fetch_add(1, Ordering::Relaxed),
                    room: room.into(),
                }
                .into();
                tx.send(Cmd::Frame(frame))
                    .map_err(|_| "connection closed".to_owned())
            }
            Inner::Mqtt { client, qos } => client
                .subscribe(mqtt_topic(&Dest::Room(room)), *qos)
                .await
                .map_err(|e| e.to_string()),
            Inner::Nats { .. } => Err("NATS room joins go through join_nats".into()),
        }
    }

    /// NATS: subscribe to a room, delivering into `on_message`.
    pub(crate) async fn join_nats(
        &mut self,
        room: &str,
        on_message: OnMessage,
    ) -> Result<(), String> {
        let Inner::Nats { client } = &self.inner else {
            return Err("not a NATS connection".into());
        };
        let mut sub = client
            .subscribe(nats_subject(&Dest::Room(room)))
            .await
            .map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())?;
        self.acks.fetch_add(1, Ordering::Relaxed);
        self.tasks.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(message) = sub.next().await {
                on_message(&message.payload);
            }
        }));
        Ok(())
    }

    /// Flushes buffered publishes (NATS); a no-op elsewhere.
    pub(crate) async fn flush(&self) {
        if let Inner::Nats { client } = &self.inner {
            let _ = client.flush().await;
        }
    }

    /// Drops the socket at once, without a goodbye (imgate: the session stays resumable).
    pub(crate) fn cut(self) {
        drop(self);
    }
}

/// The connector of this worker thread for `transport` trusting `ca`, built once: a QUIC
/// connector is a UDP endpoint, and rebuilding TLS roots per connection would be waste.
fn connector_for(transport: TransportKind, ca: Option<&Path>) -> Result<Arc<Connector>, String> {
    type Cache = Option<(TransportKind, Option<PathBuf>, Arc<Connector>)>;
    thread_local! {
        static CONNECTOR: std::cell::RefCell<Cache> = const { std::cell::RefCell::new(None) };
    }
    CONNECTOR.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((kind, path, connector)) = cache.as_ref()
            && *kind == transport
            && path.as_deref() == ca
        {
            return Ok(Arc::clone(connector));
        }
        let roots = match ca {
            Some(path) => {
                imgate_transports::roots_from_pem_file(path).map_err(|e| e.to_string())?
            }
            None => RootCertStore::empty(),
        };
        let mut cfg = ConnectorConfig::new(transport, roots);
        cfg.handshake_timeout = Duration::from_secs(30);
        let connector = Arc::new(Connector::new(cfg).map_err(|e| format!("connector: {e}"))?);
        *cache = Some((transport, ca.map(Path::to_owned), Arc::clone(&connector)));
        Ok(connector)
    })
}

async fn connect_imgate(
    config: &ClientConfig,
    user: &str,
    on_message: OnMessage,
    resume: Option<(SessionInfo, u64)>,
) -> Result<Conn, String> {
    let connector = connector_for(config.transport, config.ca.as_deref())?;
    let mut conn: FramedConn =
        tokio::time::timeout(Duration::from_secs(30), connector.connect(config.addr))
            .await
            .map_err(|_| "connect timeout".to_owned())?
            .map_err(|e| e.to_string())?;
    let last = resume.as_ref().map_or(0, |(_, seq)| *seq);
    let hello: Frame = Hello {
        version: 1,
        token: token(user),
        app_id: APP.into(),
        device_id: "bench".into(),
        resume: resume.as_ref().map(|(s, seq)| Resume {
            session_id: s.session_id,
            resume_secret: s.secret.clone(),
            last_seq: *seq,
        }),
        ..Default::default()
    }
    .into();
    conn.send(&hello).await.map_err(|e| e.to_string())?;
    let welcome = match tokio::time::timeout(Duration::from_secs(30), conn.recv()).await {
        Ok(Ok(Some(Frame {
            kind: Some(Kind::Welcome(w)),
        }))) => w,
        Ok(Ok(Some(Frame {
            kind: Some(Kind::Error(e)),
        }))) => return Err(format!("refused: {} {}", e.code, e.message)),
        Ok(other) => return Err(format!("expected Welcome, got {other:?}")),
        Err(_) => return Err("no Welcome within 30 s".into()),
    };
    let session = SessionInfo {
        session_id: welcome.session_id,
        secret: welcome.resume_secret.clone(),
        resumed: welcome.resumed,
    };
    let heartbeat = if welcome.heartbeat_ms > 0 {
        Duration::from_millis(u64::from(welcome.heartbeat_ms)).min(config.heartbeat)
    } else {
        config.heartbeat
    };
    let (mut reader, mut writer) = conn.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
    let window = Arc::new(Semaphore::new(config.window));
    let acks = Arc::new(AtomicU64::new(0));
    let last_seq = Arc::new(AtomicU64::new(if welcome.resumed { last } else { 0 }));
    let dead = Arc::new(AtomicBool::new(false));

    let writer_task = tokio::spawn({
        let dead = Arc::clone(&dead);
        async move {
            let first =
                tokio::time::Instant::now() + heartbeat.mul_f64(0.5 + fastrand::f64() * 0.5);
            let mut tick = tokio::time::interval_at(first, heartbeat);
            loop {
                tokio::select! {
                    cmd = rx.recv() => {
                        let Some(Cmd::Frame(frame)) = cmd else { break };
                        if writer.queue(&frame).is_err() { break }
                        // Coalesce whatever else is queued into one write.
                        let mut more = 0;
                        while more < 256 {
                            match rx.try_recv() {
                                Ok(Cmd::Frame(frame)) => {
                                    if writer.queue(&frame).is_err() { break }
                                    more += 1;
                                }
                                Err(_) => break,
                            }
                        }
                        if writer.flush().await.is_err() { break }
                    }
                    _ = tick.tick() => {
                        let ping: Frame = Ping { client_time_ms: 0, ack: 0 }.into();
                        if writer.send(&ping).await.is_err() { break }
                    }
                }
            }
            dead.store(true, Ordering::Relaxed);
        }
    });
    let reader_task = tokio::spawn({
        let tx = tx.clone();
        let window = Arc::clone(&window);
        let acks = Arc::clone(&acks);
        let last_seq = Arc::clone(&last_seq);
        async move {
            let mut acked = last_seq.load(Ordering::Relaxed);
            loop {
                let seq = last_seq.load(Ordering::Relaxed);
                // Acks are batched: every 32 deliveries, or 20 ms after the last one.
                let frame = if seq > acked {
                    match tokio::time::timeout(Duration::from_millis(20), reader.recv()).await {
                        Ok(frame) => frame,
                        Err(_) => {
                            let _ = tx.send(Cmd::Frame(Ack { seq }.into()));
                            acked = seq;
                            continue;
                        }
                    }
                } else {
                    reader.recv().await
                };
                let Ok(Some(frame)) = frame else { break };
                match frame.kind {
                    Some(Kind::Deliver(d)) => {
                        if d.seq > last_seq.load(Ordering::Relaxed) {
                            last_seq.store(d.seq, Ordering::Release);
                            on_message(&d.payload);
                        }
                        if d.seq >= acked + 32 {
                            let _ = tx.send(Cmd::Frame(Ack { seq: d.seq }.into()));
                            acked = d.seq;
                        }
                    }
                    Some(Kind::Receipt(_)) => {
                        acks.fetch_add(1, Ordering::Relaxed);
                        window.add_permits(1);
                    }
                    Some(Kind::Error(_) | Kind::GoAway(_)) => break,
                    _ => {}
                }
            }
            // Unblock senders waiting on a window that will never open again.
            window.close();
        }
    });
    Ok(Conn {
        inner: Inner::Imgate {
            tx,
            window,
            next_id: AtomicU64::new(1),
            last_seq,
            session,
        },
        acks,
        tasks: vec![writer_task, reader_task],
    })
}

async fn connect_mqtt(
    config: &ClientConfig,
    user: &str,
    on_message: OnMessage,
) -> Result<Conn, String> {
    use rumqttc::{Event, MqttOptions, Packet, QoS};
    let qos = if config.target == Target::MqttQos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let mut options = MqttOptions::new(
        format!("{user}-{}", fastrand::u32(..)),
        config.addr.ip().to_string(),
        config.addr.port(),
    );
    options.set_keep_alive(config.heartbeat.max(Duration::from_secs(5)));
    options.set_clean_session(true);
    options.set_inflight(u16::try_from(config.window.clamp(1, 65_535)).unwrap_or(u16::MAX));
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1024);
    client
        .subscribe(mqtt_topic(&Dest::User(user)), qos)
        .await
        .map_err(|e| e.to_string())?;
    // Drive the event loop until CONNACK and SUBACK, then hand it to a task.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => return Err("no SUBACK within 30 s".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
        }
    }
    let acks = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn({
        let acks = Arc::clone(&acks);
        async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => on_message(&p.payload),
                    Ok(Event::Incoming(Packet::PubAck(_) | Packet::SubAck(_))) => {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    });
    Ok(Conn {
        inner: Inner::Mqtt { client, qos },
        acks,
        tasks: vec![task],
    })
}

async fn connect_nats(
    config: &ClientConfig,
    user: &str,
    on_message: OnMessage,
) -> Result<Conn, String> {
    let client = async_nats::ConnectOptions::new()
        .ping_interval(config.heartbeat)
        .subscription_capacity(65_536)
        .client_capacity(65_536)
        .connection_timeout(Duration::from_secs(30))
        .connect(format!("nats://{}", config.addr))
        .await
        .map_err(|e| e.to_string())?;
    let mut sub = client
        .subscribe(nats_subject(&Dest::User(user)))
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(message) = sub.next().await {
            on_message(&message.payload);
        }
    });
    Ok(Conn {
        inner: Inner::Nats { client },
        acks: Arc::new(AtomicU64::new(0)),
        tasks: vec![task],
    })
}

/// A 100-byte (or `size`) payload: message id, send time (ns on the process clock), padding.
pub(crate) fn payload(id: u64, sent_ns: u64, size: usize) -> Bytes {
    let mut buf = vec![b'x'; size.max(16)];
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    Bytes::from(buf)
}

/// (id, send time) of a payload made by `payload`.
pub(crate) fn parse_payload(bytes: &[u8]) -> Option<(u64, u64)> {
    let id = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let ns = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((id, ns))
}
