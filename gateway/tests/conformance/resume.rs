//! §10 and §8: take-over by resume or by a fresh login, and a resume below the acked point.

use imgate_codec::{Ack, CloseCode, GoAwayReason, Kind};
use imgate_transports::TransportKind;

use crate::support::{resume_of, text};
use crate::wire::{End, Wire};
use crate::{ALL, Server, assert_error_close, hello, hello_as, ws_status};

/// §10/§11: the old connection's last frame is `GoAway{TAKEOVER}`, then the close carries
/// `4001 SESSION_TAKEN_OVER`.
async fn assert_taken_over(old: &mut Wire, what: &str) {
    let kind = old.kind;
    let (frames, end) = old.until_end().await;
    match frames.last() {
        Some(Kind::GoAway(go_away)) => {
            assert_eq!(go_away.reason(), GoAwayReason::Takeover, "{kind:?} {what}");
        }
        other => panic!("{kind:?} {what}: no GoAway before the close, last {other:?}"),
    }
    let code = CloseCode::SESSION_TAKEN_OVER;
    match (kind, end) {
        (TransportKind::Quic, End::Quic { code: got }) => assert_eq!(got, u64::from(code.0)),
        (TransportKind::Ws | TransportKind::Wss, End::Ws { status, .. }) => {
            assert_eq!(status, ws_status(code), "{kind:?} {what}");
        }
        (TransportKind::Tcp | TransportKind::Tls, End::Eof) => {}
        (kind, end) => panic!("{kind:?} {what}: ended with {end:?}"),
    }
}

#[tokio::test]
async fn a_resume_taking_over_an_open_connection_sends_it_goaway_takeover() {
    let server = Server::start().await;
    for (i, kind) in ALL.into_iter().enumerate() {
        let (mut old, welcome) = server.login(kind, "phone").await;
        // The device reconnects on another transport while the old connection looks alive.
        let mut new = server.connect(ALL[(i + 1) % ALL.len()]).await;
        let resumed = hello(
            &mut new,
            hello_as("alice", "phone", Some(resume_of(&welcome, 0))),
        )
        .await;
        assert!(resumed.resumed, "{kind:?}");
        assert_taken_over(&mut old, "resume").await;
    }
}

#[tokio::test]
async fn a_fresh_hello_of_the_same_device_takes_over_its_session() {
    let server = Server::start().await;
    for (i, kind) in ALL.into_iter().enumerate() {
        let (mut old, welcome) = server.login(kind, "phone").await;
        let mut new = server.connect(ALL[(i + 1) % ALL.len()]).await;
        let fresh = hello(&mut new, hello_as("alice", "phone", None)).await;
        assert!(
            !fresh.resumed && fresh.session_id != welcome.session_id,
            "{kind:?}"
        );
        assert_taken_over(&mut old, "fresh Hello").await;
        // The old session is over; the replaced connection reconnecting on its own must not
        // evict the login that replaced it: its resume is refused 4001.
        let mut third = server.connect(kind).await;
        third
            .send(&hello_as("alice", "phone", Some(resume_of(&welcome, 0))).into())
            .await;
        assert_error_close(&mut third, CloseCode::SESSION_TAKEN_OVER, "stale resume").await;
    }
}

async fn deliver_seq(wire: &mut Wire) -> u64 {
    loop {
        match wire.frame().await {
            Kind::Deliver(d) => return d.seq,
            Kind::Receipt(_) | Kind::Pong(_) => {}
            other => panic!("expected Deliver, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_resume_below_the_acknowledged_point_resumes_after_it() {
    // §8: a lower ack is ignored; §10: `last_seq` acts as an ack.
    let server = Server::start().await;
    for (i, kind) in ALL.into_iter().enumerate() {
        let device = format!("phone-{i}");
        let (mut alice, welcome) = server.login(kind, &device).await;
        let (mut bob, _) = {
            let mut bob = server.connect(TransportKind::Tcp).await;
            let w = hello(&mut bob, hello_as("bob", &device, None)).await;
            (bob, w)
        };
        for msg_id in 1..=3 {
            bob.send(&text(msg_id, "alice", "hi")).await;
        }
        let seqs = [
            deliver_seq(&mut alice).await,
            deliver_seq(&mut alice).await,
            deliver_seq(&mut alice).await,
        ];
        assert_eq!(seqs, [1, 2, 3], "{kind:?}");
        alice.send(&Ack { seq: 2 }.into()).await;
        // The ack is in once it is answered in order: a Ping after it gets its Pong.
        alice.send(&imgate_codec::Ping::default().into()).await;
        assert!(matches!(alice.frame().await, Kind::Pong(_)));
        drop(alice);
        let mut again = server.connect(kind).await;
        again
            .send(&hello_as("alice", &device, Some(resume_of(&welcome, 1))).into())
            .await;
        match again.frame().await {
            Kind::Welcome(w) => assert!(w.resumed, "{kind:?}: refused {:?}", w.resume_refused()),
            other => panic!("{kind:?}: {other:?}"),
        }
        assert_eq!(
            deliver_seq(&mut again).await,
            3,
            "{kind:?}: replay starts after the ack"
        );
    }
}
