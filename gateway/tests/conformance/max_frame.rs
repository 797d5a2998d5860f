//! §12: the client's `Hello.max_frame` holds for everything the server sends: a limit below
//! 512 is refused, a `Deliver` that would not fit goes to the offline path instead (no frame
//! over the limit, no `seq` used), and a resume cannot bring a limit below a message it
//! would replay.

use std::sync::Arc;

use bytes::Bytes;
use imgate::GatewayHandle;
use imgate::backend::{
    Backend, Origin, RelayBackend, UpstreamOutcome, UpstreamRequest, async_trait,
};
use imgate::deliver::{Delivery, DeliveryOptions, DeviceOutcome, Target};
use imgate::ids::{AppId, DeviceId, MessageId, UserId};
use imgate::session::{SessionConfig, Undelivered, UndeliveredReason};
use imgate_codec::{CloseCode, Kind, Ping, ResumeRefused};
use tokio::sync::mpsc;

use crate::support::resume_of;
use crate::wire::Wire;
use crate::{ALL, Server, assert_error_close, hello, hello_as};

/// The relay, reporting each message the offline path is told about.
#[derive(Debug)]
struct Reporting(
    mpsc::UnboundedSender<(MessageId, UndeliveredReason)>,
    RelayBackend,
);

#[async_trait]
impl Backend for Reporting {
    async fn on_upstream(
        &self,
        gateway: &GatewayHandle,
        origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome {
        self.1.on_upstream(gateway, origin, request).await
    }

    async fn on_undelivered(
        &self,
        _gateway: &GatewayHandle,
        _app: &AppId,
        _user: &UserId,
        messages: &[Undelivered],
        reason: UndeliveredReason,
    ) {
        for m in messages {
            let _ = self.0.send((m.message_id, reason));
        }
    }
}

async fn start() -> (
    Server,
    mpsc::UnboundedReceiver<(MessageId, UndeliveredReason)>,
) {
    let (reports, reported) = mpsc::unbounded_channel();
    let backend = Arc::new(Reporting(reports, RelayBackend::default()));
    let server = Server::start_with_backend(backend, SessionConfig::default(), |_| {}).await;
    (server, reported)
}

async fn next_report(
    reported: &mut mpsc::UnboundedReceiver<(MessageId, UndeliveredReason)>,
) -> (MessageId, UndeliveredReason) {
    tokio::time::timeout(std::time::Duration::from_secs(10), reported.recv())
        .await
        .expect("reported in time")
        .expect("backend alive")
}

/// Delivers `len` bytes to `device` of alice; returns the message id and the device's outcome.
async fn deliver(server: &Server, device: &str, len: usize) -> (MessageId, DeviceOutcome) {
    let report = server
        .gateway
        .handle()
        .deliver(
            &AppId::new("chat"),
            Delivery {
                target: Target::Device(UserId::new("alice"), DeviceId::new(device)),
                payload: Bytes::from(vec![b'm'; len]),
                options: DeliveryOptions::default(),
            },
        )
        .await
        .expect("deliver");
    assert_eq!(report.devices.len(), 1, "{report:?}");
    (report.message_id, report.devices[0].outcome.clone())
}

async fn login_limited(wire: &mut Wire, device: &str, max_frame: u32) {
    let mut limited = hello_as("alice", device, None);
    limited.max_frame = max_frame;
    let welcome = hello(wire, limited).await;
    assert!(!welcome.resumed);
}

#[tokio::test]
async fn a_hello_max_frame_below_512_is_refused_protocol_error() {
    let (server, _reported) = start().await;
    for kind in ALL {
        let mut wire = server.connect(kind).await;
        let mut small = hello_as("alice", "phone", None);
        small.max_frame = 300;
        wire.send(&small.into()).await;
        assert_error_close(&mut wire, CloseCode::PROTOCOL_ERROR, "max_frame 300").await;
    }
}

#[tokio::test]
async fn a_delivery_over_the_clients_max_frame_goes_offline_and_a_small_one_is_sent() {
    let (server, mut reported) = start().await;
    for (i, kind) in ALL.into_iter().enumerate() {
        let device = format!("phone-{i}");
        let mut wire = server.connect(kind).await;
        login_limited(&mut wire, &device, 512).await;
        let (large, outcome) = deliver(&server, &device, 2000).await;
        assert_eq!(outcome, DeviceOutcome::Offline, "{kind:?}");
        assert_eq!(
            next_report(&mut reported).await,
            (large, UndeliveredReason::TooLarge),
            "{kind:?}"
        );
        let (small, outcome) = deliver(&server, &device, 100).await;
        assert_eq!(
            outcome,
            DeviceOutcome::Sent { seq: 1 },
            "{kind:?}: no seq was used"
        );
        match wire.frame().await {
            Kind::Deliver(d) => {
                assert_eq!((d.seq, d.message_id), (1, small.0), "{kind:?}");
            }
            other => panic!("{kind:?}: expected the small Deliver, got {other:?}"),
        }
        // The connection stays open, and nothing it received was over the limit.
        wire.send(&Ping::default().into()).await;
        assert!(matches!(wire.frame().await, Kind::Pong(_)), "{kind:?}");
        assert!(
            wire.largest_frame <= 512,
            "{kind:?}: a {}-byte frame",
            wire.largest_frame
        );
    }
}

#[tokio::test]
async fn a_resume_with_a_max_frame_below_a_buffered_message_is_refused_buffer_overflow() {
    let (server, mut reported) = start().await;
    for (i, kind) in ALL.into_iter().enumerate() {
        let device = format!("tablet-{i}");
        let (mut old, welcome) = server.login(kind, &device).await;
        let (large, outcome) = deliver(&server, &device, 2000).await;
        assert_eq!(outcome, DeviceOutcome::Sent { seq: 1 }, "{kind:?}");
        assert!(matches!(old.frame().await, Kind::Deliver(d) if d.seq == 1));
        drop(old);
        // Unacknowledged, it would be replayed: a new limit of 512 cannot take it.
        let mut again = server.connect(kind).await;
        let mut resume = hello_as("alice", &device, Some(resume_of(&welcome, 0)));
        resume.max_frame = 512;
        let fresh = hello(&mut again, resume).await;
        assert!(!fresh.resumed, "{kind:?}");
        assert_eq!(
            fresh.resume_refused(),
            ResumeRefused::BufferOverflow,
            "{kind:?}"
        );
        assert_ne!(fresh.session_id, welcome.session_id, "{kind:?}");
        // The lost range went offline as usual.
        assert_eq!(
            next_report(&mut reported).await,
            (large, UndeliveredReason::BufferOverflow),
            "{kind:?}"
        );
        // The fresh session holds the new limit.
        let (_, outcome) = deliver(&server, &device, 2000).await;
        assert_eq!(outcome, DeviceOutcome::Offline, "{kind:?}");
        assert_eq!(
            next_report(&mut reported).await.1,
            UndeliveredReason::TooLarge
        );
        assert!(
            again.largest_frame <= 512,
            "{kind:?}: {}",
            again.largest_frame
        );
    }
}
