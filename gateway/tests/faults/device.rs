//! A device speaking the raw protocol over TCP (the project's `FramedConn`).

use std::net::SocketAddr;
use std::time::Duration;

use imgate_codec::{Ack, Deliver, Frame, Kind, PushProvider, ReceiptStatus, RegisterPush, Welcome};
use imgate_transports::{Connector, ConnectorConfig, FramedConn, TransportKind};
use rustls::RootCertStore;

use crate::support::{hello_frame, recv, resume_of};

/// A connected, welcomed device.
pub(crate) struct Device {
    pub(crate) conn: FramedConn,
    pub(crate) welcome: Welcome,
}

/// Connects to `addr` and says Hello as `user` (token `tok-<user>`), resuming `resume`
/// (the earlier Welcome and the last seq received) if given.
pub(crate) async fn connect(
    addr: SocketAddr,
    user: &str,
    resume: Option<(&Welcome, u64)>,
) -> Device {
    let mut conn = Connector::new(ConnectorConfig::new(
        TransportKind::Tcp,
        RootCertStore::empty(),
    ))
    .expect("connector")
    .connect(addr)
    .await
    .expect("connect");
    let resume = resume.map(|(welcome, last_seq)| resume_of(welcome, last_seq));
    conn.send(&hello_frame(&format!("tok-{user}"), "phone", resume))
        .await
        .expect("hello");
    match recv(&mut conn).await {
        Kind::Welcome(welcome) => Device { conn, welcome },
        other => panic!("expected Welcome, got {other:?}"),
    }
}

impl Device {
    /// Registers an FCM token (`RegisterPush`, answered by a receipt).
    pub(crate) async fn register_fcm(&mut self, token: &str) {
        self.register(PushProvider::Fcm, token, "").await;
    }

    /// Registers an APNs token for the suite's topic.
    pub(crate) async fn register_apns(&mut self, token: &str) {
        self.register(PushProvider::Apns, token, crate::providers::TOPIC)
            .await;
    }

    async fn register(&mut self, provider: PushProvider, token: &str, topic: &str) {
        let frame: Frame = RegisterPush {
            msg_id: 1,
            provider: provider as i32,
            token: token.into(),
            topic: topic.into(),
            sandbox: false,
        }
        .into();
        self.conn.send(&frame).await.expect("register");
        loop {
            match recv(&mut self.conn).await {
                Kind::Receipt(r) => {
                    assert_eq!(r.status(), ReceiptStatus::Accepted, "{r:?}");
                    return;
                }
                Kind::Ping(_) | Kind::Pong(_) => {}
                other => panic!("expected the registration's receipt, got {other:?}"),
            }
        }
    }

    /// Reads the next `n` messages (any GoAway in between is returned as the stop).
    pub(crate) async fn read(&mut self, n: usize) -> Vec<Deliver> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match recv(&mut self.conn).await {
                Kind::Deliver(d) => {
                    if let Some(last) = got.last().map(|l: &Deliver| l.seq) {
                        assert_eq!(d.seq, last + 1, "in order, no gap, no duplicate");
                    }
                    got.push(d);
                }
                Kind::Ping(_) | Kind::Pong(_) | Kind::Receipt(_) => {}
                other => panic!("expected Deliver, got {other:?}"),
            }
        }
        got
    }

    /// Reads what the server sent until it closed the connection.
    pub(crate) async fn read_until_closed(&mut self) -> Vec<Deliver> {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(20), self.conn.recv()).await {
                Ok(Ok(Some(frame))) => {
                    if let Some(Kind::Deliver(d)) = frame.kind {
                        got.push(d);
                    }
                }
                Ok(Ok(None) | Err(_)) => return got,
                Err(_) => panic!("the server did not close the connection"),
            }
        }
    }

    /// Acknowledges everything up to `seq`.
    pub(crate) async fn ack(&mut self, seq: u64) {
        self.conn.send(&Ack { seq }.into()).await.expect("ack");
    }

    /// A ping whose pong comes back: the session has handled every frame sent before it.
    pub(crate) async fn round_trip(&mut self) {
        self.conn
            .send(&imgate_codec::Ping::default().into())
            .await
            .expect("ping");
        loop {
            match recv(&mut self.conn).await {
                Kind::Pong(_) => return,
                Kind::Ping(_) => {}
                other => panic!("expected Pong, got {other:?}"),
            }
        }
    }
}
