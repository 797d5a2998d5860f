//! The gateway without sockets: clients over in-memory pipes (`FramedConn::pipe`), so that a
//! test can run the runtime on tokio's paused clock and assert timings to the millisecond.

use std::sync::{Arc, Mutex};

use imgate::ids::{AppId, DeviceId, MessageId, UserId};
use imgate::offline::{PushPolicy, PushTrigger};
use imgate::{App, Gateway, RunningGateway, ServerConfig};
use imgate_codec::{Frame, Kind};
use imgate_transports::{ConnectorConfig, FramedConn, ListenerConfig, PIPE_PEER, TransportKind};
use tokio::time::Instant;

/// Bytes each direction of a pipe holds before a write waits (a loopback socket's order).
pub const PIPE_CAPACITY: usize = 256 * 1024;

/// A gateway serving `app` with no listener at all: every client comes through [`pipe`].
pub async fn start_piped(app: App, server: ServerConfig) -> RunningGateway {
    Gateway::builder()
        .app(app)
        .config(server)
        .start()
        .await
        .expect("start")
}

/// A client connection handed to `gw` as a default TCP listener's connection would be.
pub fn pipe(gw: &RunningGateway) -> FramedConn {
    pipe_holding(gw, PIPE_CAPACITY)
}

/// [`pipe`] holding `capacity` bytes each way (a small one makes the server's writes wait).
pub fn pipe_holding(gw: &RunningGateway, capacity: usize) -> FramedConn {
    let listener = ListenerConfig::new(TransportKind::Tcp, PIPE_PEER);
    let (server, client) = FramedConn::pipe(&listener, capacity);
    gw.serve(server);
    FramedConn::pipe_client(client, &ConnectorConfig::plain(TransportKind::Tcp))
}

/// The next frame (no time limit: on the paused clock a wait costs no time, and a gateway
/// that never answers leaves the test's runtime with nothing to do, which tokio reports).
pub async fn next(conn: &mut FramedConn) -> Option<Frame> {
    conn.recv().await.expect("a frame or a clean end")
}

/// The next frame's kind; panics at the end of the stream.
pub async fn next_kind(conn: &mut FramedConn) -> Kind {
    next(conn)
        .await
        .and_then(|f| f.kind)
        .expect("a frame with a kind")
}

/// Whether a frame (or the end of the stream) is already waiting, without waiting for one.
pub fn pending(conn: &mut FramedConn) -> bool {
    futures_util::FutureExt::now_or_never(conn.recv()).is_some()
}

/// A push policy that records when each push was asked for, on the gateway's clock.
#[derive(Debug, Default)]
pub struct ClockedPush {
    /// (when, messages, trigger) of every push, in order.
    pub pushes: Mutex<Vec<(Instant, Vec<MessageId>, PushTrigger)>>,
}

impl ClockedPush {
    /// The pushes so far.
    pub fn log(&self) -> Vec<(Instant, Vec<MessageId>, PushTrigger)> {
        self.pushes.lock().expect("lock").clone()
    }
}

impl PushPolicy for ClockedPush {
    fn push(
        &self,
        _app: &AppId,
        _user: &UserId,
        _device: Option<&DeviceId>,
        messages: &[MessageId],
        trigger: PushTrigger,
    ) {
        self.pushes
            .lock()
            .expect("lock")
            .push((Instant::now(), messages.to_vec(), trigger));
    }
}

/// `app` pushing through a fresh [`ClockedPush`]; both.
pub fn clocked(mut app: App) -> (App, Arc<ClockedPush>) {
    let push = Arc::new(ClockedPush::default());
    app.push = push.clone();
    (app, push)
}
