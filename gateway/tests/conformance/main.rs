//! Conformance: the server as a third-party client sees it, one test per rule of
//! docs/protocol.md that issue 15 found broken or unspecified, on every transport where the
//! rule applies. The client (`wire`) is written from the spec, below the project's own
//! transports, so that it sees the bytes, the QUIC close codes and WebSocket statuses.

#[path = "../support/mod.rs"]
mod support;

mod errors;
mod handshake;
mod limits;
mod max_frame;
mod resume;
mod upstream;
mod wire;

use std::sync::Arc;

use imgate::backend::RelayBackend;
use imgate::session::SessionConfig;
use imgate::{Gateway, RunningGateway, ServerConfig};
use imgate_codec::{CloseCode, Frame, Hello, Kind, Resume, Welcome};
use imgate_transports::{Identity, ListenerConfig, TransportKind};
use rustls::RootCertStore;
use wire::{End, Wire};

/// Every transport of §1.
pub(crate) const ALL: [TransportKind; 5] = [
    TransportKind::Tcp,
    TransportKind::Tls,
    TransportKind::Ws,
    TransportKind::Wss,
    TransportKind::Quic,
];

/// The byte-stream transports (§2.1).
pub(crate) const STREAMS: [TransportKind; 3] =
    [TransportKind::Tcp, TransportKind::Tls, TransportKind::Quic];

/// A gateway listening on all five transports of 127.0.0.1, and the roots to trust it.
pub(crate) struct Server {
    pub(crate) gateway: RunningGateway,
    pub(crate) roots: RootCertStore,
}

impl Server {
    pub(crate) async fn start() -> Self {
        Self::start_with(SessionConfig::default(), |_| {}).await
    }

    /// With the app's session settings and each listener adjusted by `listener`.
    pub(crate) async fn start_with(
        session: SessionConfig,
        listener: impl Fn(&mut ListenerConfig),
    ) -> Self {
        Self::start_with_backend(Arc::new(RelayBackend::default()), session, listener).await
    }

    /// As [`Server::start_with`], with `backend` instead of the plain relay.
    pub(crate) async fn start_with_backend(
        backend: Arc<dyn imgate::backend::Backend>,
        session: SessionConfig,
        listener: impl Fn(&mut ListenerConfig),
    ) -> Self {
        let identity = Identity::self_signed(&["localhost"]).expect("certificate");
        let roots = identity.root_store();
        let mut builder = Gateway::builder()
            .app(support::app(backend, session))
            .config(ServerConfig::default());
        for kind in ALL {
            let mut config =
                ListenerConfig::new(kind, support::loopback()).with_identity(identity.clone());
            listener(&mut config);
            builder = builder.listener(config);
        }
        let gateway = builder.start().await.expect("start");
        Self { gateway, roots }
    }

    pub(crate) async fn connect(&self, kind: TransportKind) -> Wire {
        Wire::connect(kind, self.addr(kind), &self.roots).await
    }

    pub(crate) fn addr(&self, kind: TransportKind) -> std::net::SocketAddr {
        self.gateway.local_addr(kind).expect("listener")
    }

    /// A connection over `kind` that said `Hello` as `alice` on `device` and got `Welcome`.
    pub(crate) async fn login(&self, kind: TransportKind, device: &str) -> (Wire, Welcome) {
        let mut wire = self.connect(kind).await;
        let welcome = hello(&mut wire, hello_as("alice", device, None)).await;
        (wire, welcome)
    }
}

pub(crate) fn hello_as(user: &str, device: &str, resume: Option<Resume>) -> Hello {
    Hello {
        version: 1,
        token: format!("tok-{user}"),
        app_id: "chat".into(),
        device_id: device.into(),
        resume,
        ..Default::default()
    }
}

/// Sends `hello` and returns the `Welcome`.
pub(crate) async fn hello(wire: &mut Wire, hello: Hello) -> Welcome {
    wire.send(&Frame::from(hello)).await;
    match wire.frame().await {
        Kind::Welcome(welcome) => welcome,
        other => panic!("{:?}: expected Welcome, got {other:?}", wire.kind),
    }
}

/// §13: the WebSocket close status for each error code (the table under "WebSocket close
/// status").
pub(crate) fn ws_status(code: CloseCode) -> u16 {
    match code.0 {
        1000 => 1000,
        1001 | 1003 | 1004 | 1005 => 1002,
        1002 => 1009,
        1008 => 1003,
        3001..=3004 => 1013,
        4003 => 1001,
        5000 => 1011,
        _ => 1008,
    }
}

/// Words of the libraries under the server that must never reach `Error.message` (§4).
const LIBRARY_TEXT: [&str; 7] = [
    "protocol error:",
    "tungstenite",
    "unmasked",
    "failed to decode protobuf",
    "decodeerror",
    "decompressed buffer",
    "expected another byte",
];

/// §13 and §4: the connection's last frame is `Error{code}` with a message of the server's
/// own words, then the transport closes carrying the code (QUIC: application close code;
/// WebSocket: the mapped status, never 1000 for an error).
pub(crate) async fn assert_error_close(wire: &mut Wire, code: CloseCode, what: &str) {
    let kind = wire.kind;
    let (frames, end) = wire.until_end().await;
    let Some(Kind::Error(error)) = frames.last() else {
        panic!("{kind:?} {what}: no Error frame before the close (frames {frames:?}, end {end:?})");
    };
    assert_eq!(error.close_code(), code, "{kind:?} {what}: {error:?}");
    for text in LIBRARY_TEXT {
        assert!(
            !error.message.to_lowercase().contains(&text.to_lowercase()),
            "{kind:?} {what}: library text in {:?}",
            error.message
        );
    }
    match (kind, end) {
        (TransportKind::Quic, End::Quic { code: got }) => {
            assert_eq!(
                got,
                u64::from(code.0),
                "{kind:?} {what}: QUIC application close code"
            );
        }
        (TransportKind::Ws | TransportKind::Wss, End::Ws { status, reason }) => {
            assert_eq!(
                status,
                ws_status(code),
                "{kind:?} {what}: WebSocket close status ({reason})"
            );
            assert_ne!(
                status, 1000,
                "{kind:?} {what}: an error is not a normal closure"
            );
        }
        (TransportKind::Tcp | TransportKind::Tls, End::Eof) => {}
        (kind, end) => panic!("{kind:?} {what}: ended with {end:?}"),
    }
}
