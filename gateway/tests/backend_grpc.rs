//! The gRPC backend against a tonic server in the test: upstream requests on the one stream,
//! receipts and delivery/room commands back, time-outs, and reconnect after a break.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use imgate::RunningGateway;
use imgate::backend::grpc::proto::gateway_backend_server::{GatewayBackend, GatewayBackendServer};
use imgate::backend::grpc::proto::{self, backend_command::Command, gateway_event::Event};
use imgate::backend::{GrpcBackend, GrpcBackendConfig};
use imgate::session::SessionConfig;
use imgate_codec::{CloseCode, JoinRoom, Kind, ReceiptStatus};
use support::{app, login, receipt, recv, start_app, text};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

type Commands = mpsc::Sender<Result<proto::BackendCommand, Status>>;

/// One stream the gateway opened.
struct Conn {
    events: Streaming<proto::GatewayEvent>,
    commands: Commands,
}

impl Conn {
    /// The next event that is not a session notice.
    async fn next(&mut self) -> Event {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), self.events.message())
                .await
                .expect("timely event")
                .expect("stream ok")
                .expect("stream open")
                .event
                .expect("event set");
            match event {
                Event::Connected(_) | Event::Disconnected(_) | Event::Undelivered(_) => {}
                other => return other,
            }
        }
    }

    async fn upstream(&mut self) -> proto::UpstreamRequest {
        match self.next().await {
            Event::Upstream(request) => request,
            other => panic!("expected an upstream request, got {other:?}"),
        }
    }

    async fn result(&mut self) -> proto::CommandResult {
        match self.next().await {
            Event::CommandResult(result) => result,
            other => panic!("expected a command result, got {other:?}"),
        }
    }

    async fn send(&self, command_id: u64, command: Command) {
        self.commands
            .send(Ok(proto::BackendCommand {
                command_id,
                command: Some(command),
            }))
            .await
            .expect("gateway reads commands");
    }

    async fn answer(&self, request_id: u64, status: proto::ReceiptStatus) {
        self.send(
            0,
            Command::UpstreamResult(proto::UpstreamResult {
                request_id,
                status: status.into(),
                ..Default::default()
            }),
        )
        .await;
    }
}

struct TestBackend {
    conns: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl GatewayBackend for TestBackend {
    type ConnectStream = ReceiverStream<Result<proto::BackendCommand, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<proto::GatewayEvent>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (commands, rx) = mpsc::channel(16);
        let _ = self.conns.send(Conn {
            events: request.into_inner(),
            commands,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The test's backend server, stopped on drop.
struct Server {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, conns) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(GatewayBackendServer::new(TestBackend { conns: tx }))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            url,
            conns,
            stop: Some(stop),
            task,
        }
    }

    /// The next stream, with its `Hello` already checked.
    async fn accept(&mut self) -> Conn {
        let mut conn = tokio::time::timeout(Duration::from_secs(5), self.conns.recv())
            .await
            .expect("timely stream")
            .expect("server running");
        match conn.next().await {
            Event::Hello(hello) => {
                assert_eq!(hello.gateway_id, "gw-test");
                assert_eq!(hello.protocol_version, 1);
            }
            other => panic!("expected Hello first, got {other:?}"),
        }
        conn
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn config(server: &Server) -> GrpcBackendConfig {
    let mut config = GrpcBackendConfig::new(server.url.clone());
    config.gateway_id = "gw-test".into();
    config.request_timeout = Duration::from_secs(3);
    config.reconnect_backoff_base = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(100);
    config
}

async fn start(backend: Arc<GrpcBackend>) -> RunningGateway {
    let gw = start_app(app(backend.clone(), SessionConfig::default())).await;
    backend.attach(gw.handle());
    gw
}

#[tokio::test]
async fn upstream_arrives_and_the_backend_answers_with_a_receipt_and_a_delivery() {
    let mut server = Server::start().await;
    let backend = Arc::new(GrpcBackend::new(config(&server)).expect("backend"));
    let gw = start(backend.clone()).await;
    let mut conn = server.accept().await;
    let mut alice = login(&gw, "tok-alice").await;
    let mut bob = login(&gw, "tok-bob").await;

    alice.send(&text(1, "bob", "hi bob")).await.expect("send");
    let request = conn.upstream().await;
    let origin = request.origin.as_ref().expect("origin");
    assert_eq!(
        (origin.app.as_str(), origin.user.as_str()),
        ("chat", "alice")
    );
    assert!(request.deadline_ms > request.received_at_ms);
    let Some(proto::upstream_request::Request::Message(message)) = &request.request else {
        panic!("expected a message, got {request:?}");
    };
    assert_eq!(
        message.to,
        Some(proto::upstream_message::To::User("bob".into()))
    );
    assert_eq!(&message.payload[..], b"hi bob");

    conn.send(
        7,
        Command::Deliver(proto::Deliver {
            app: "chat".into(),
            target: Some(proto::deliver::Target::User("bob".into())),
            payload: message.payload.clone(),
            from: origin.user.clone(),
            ..Default::default()
        }),
    )
    .await;
    conn.answer(request.request_id, proto::ReceiptStatus::Delivered)
        .await;

    let r = receipt(&mut alice).await;
    assert_eq!((r.msg_id, r.status()), (1, ReceiptStatus::Delivered));
    match recv(&mut bob).await {
        Kind::Deliver(d) => assert_eq!((&d.from[..], &d.payload[..]), ("alice", &b"hi bob"[..])),
        other => panic!("expected Deliver, got {other:?}"),
    }
    let result = conn.result().await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.command_id, 7);
    let report = result.delivery.expect("delivery report");
    assert_eq!(report.devices.len(), 1);
    assert_eq!(report.devices[0].outcome(), proto::DeviceOutcome::Sent);
    assert!(backend.is_connected());
    gw.shutdown().await;
}

#[tokio::test]
async fn rooms_are_joined_by_command_and_by_an_accepted_request() {
    let mut server = Server::start().await;
    let backend = Arc::new(GrpcBackend::new(config(&server)).expect("backend"));
    let gw = start(backend.clone()).await;
    let mut conn = server.accept().await;
    let mut alice = login(&gw, "tok-alice").await;
    let mut bob = login(&gw, "tok-bob").await;

    // Bob joins by the backend's command.
    conn.send(
        1,
        Command::JoinRoom(proto::RoomMembership {
            app: "chat".into(),
            room: "lobby".into(),
            user: "bob".into(),
        }),
    )
    .await;
    let result = conn.result().await;
    assert!(result.ok && result.changed, "{result:?}");

    // Alice asks; the backend accepts, so the gateway adds her.
    alice
        .send(
            &JoinRoom {
                msg_id: 1,
                room: "lobby".into(),
            }
            .into(),
        )
        .await
        .expect("send");
    let request = conn.upstream().await;
    assert_eq!(
        request.request,
        Some(proto::upstream_request::Request::JoinRoom("lobby".into()))
    );
    conn.answer(request.request_id, proto::ReceiptStatus::Accepted)
        .await;
    assert_eq!(receipt(&mut alice).await.status(), ReceiptStatus::Accepted);

    conn.send(
        2,
        Command::Deliver(proto::Deliver {
            app: "chat".into(),
            target: Some(proto::deliver::Target::Room("lobby".into())),
            payload: Bytes::from_static(b"welcome"),
            ..Default::default()
        }),
    )
    .await;
    for client in [&mut alice, &mut bob] {
        match recv(client).await {
            Kind::Deliver(d) => {
                assert_eq!((&d.room[..], &d.payload[..]), ("lobby", &b"welcome"[..]))
            }
            other => panic!("expected Deliver, got {other:?}"),
        }
    }
    let result = conn.result().await;
    assert_eq!(result.delivery.expect("report").devices.len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_silent_backend_times_out_to_backend_unavailable() {
    let mut server = Server::start().await;
    let mut config = config(&server);
    config.request_timeout = Duration::from_millis(300);
    let backend = Arc::new(GrpcBackend::new(config).expect("backend"));
    let gw = start(backend.clone()).await;
    let mut conn = server.accept().await;
    let mut alice = login(&gw, "tok-alice").await;

    alice.send(&text(1, "bob", "anyone?")).await.expect("send");
    let request = conn.upstream().await;
    let r = receipt(&mut alice).await;
    assert_eq!(r.status(), ReceiptStatus::Rejected);
    assert_eq!(r.reason_code, u32::from(CloseCode::BACKEND_UNAVAILABLE.0));
    // A late answer is ignored.
    conn.answer(request.request_id, proto::ReceiptStatus::Accepted)
        .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_broken_stream_fails_requests_in_flight_and_reconnects() {
    let mut server = Server::start().await;
    let backend = Arc::new(GrpcBackend::new(config(&server)).expect("backend"));
    let gw = start(backend.clone()).await;
    let mut conn = server.accept().await;
    let mut alice = login(&gw, "tok-alice").await;

    alice.send(&text(1, "bob", "first")).await.expect("send");
    conn.upstream().await;
    // The backend breaks the stream without answering.
    conn.commands
        .send(Err(Status::unavailable("backend restarting")))
        .await
        .expect("send error");
    drop(conn);
    let started = tokio::time::Instant::now();
    let r = receipt(&mut alice).await;
    assert_eq!(r.reason_code, u32::from(CloseCode::BACKEND_UNAVAILABLE.0));
    assert!(started.elapsed() < Duration::from_secs(2), "failed fast");

    let mut conn = server.accept().await;
    alice.send(&text(2, "bob", "second")).await.expect("send");
    let request = conn.upstream().await;
    conn.answer(request.request_id, proto::ReceiptStatus::StoredOffline)
        .await;
    let r = receipt(&mut alice).await;
    assert_eq!((r.msg_id, r.status()), (2, ReceiptStatus::StoredOffline));
    assert_eq!(backend.streams_opened(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pruned_push_token_reaches_the_backend_on_the_stream() {
    use imgate::backend::Backend;
    use imgate::ids::{AppId, DeviceId, UserId};

    let mut server = Server::start().await;
    let backend = Arc::new(GrpcBackend::new(config(&server)).expect("backend"));
    let gw = start(backend.clone()).await;
    let mut conn = server.accept().await;
    backend
        .on_push_token_invalid(
            &AppId::new("chat"),
            &UserId::new("ann"),
            &DeviceId::new("phone"),
            "abcd",
            "UNREGISTERED",
        )
        .await;
    match conn.next().await {
        Event::PushTokenInvalid(notice) => assert_eq!(
            notice,
            proto::PushTokenInvalid {
                app: "chat".into(),
                user: "ann".into(),
                device: "phone".into(),
                token: "abcd".into(),
                reason: "UNREGISTERED".into(),
            }
        ),
        other => panic!("expected PushTokenInvalid, got {other:?}"),
    }
    gw.shutdown().await;
}
