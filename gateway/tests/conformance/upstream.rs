//! §9 and §4 `Receipt`: `msg_id` 0, decreasing ids, and what "delivered" means.

use imgate_codec::{CloseCode, Kind, Receipt, ReceiptStatus};
use imgate_transports::TransportKind;

use crate::support::text;
use crate::wire::Wire;
use crate::{ALL, Server, hello, hello_as};

async fn receipt(wire: &mut Wire) -> Receipt {
    loop {
        match wire.frame().await {
            Kind::Receipt(r) => return r,
            Kind::Deliver(_) | Kind::Pong(_) => {}
            other => panic!("expected Receipt, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn msg_id_zero_is_rejected_with_protocol_error_and_not_forwarded() {
    let server = Server::start().await;
    for kind in ALL {
        let (mut alice, _) = server.login(kind, "phone").await;
        let mut bob = server.connect(TransportKind::Tcp).await;
        hello(&mut bob, hello_as("bob", "phone", None)).await;
        alice.send(&text(0, "bob", "lost?")).await;
        let rejected = receipt(&mut alice).await;
        assert_eq!(rejected.msg_id, 0);
        assert_eq!(rejected.status(), ReceiptStatus::Rejected, "{kind:?}");
        assert_eq!(rejected.reason_code, u32::from(CloseCode::PROTOCOL_ERROR));
        // The connection stays; the next request is delivered, the rejected one never was.
        alice.send(&text(1, "bob", "second")).await;
        assert_eq!(receipt(&mut alice).await.status(), ReceiptStatus::Delivered);
        match bob.frame().await {
            Kind::Deliver(d) => assert_eq!(&d.payload[..], b"second", "{kind:?}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_new_lower_msg_id_is_forwarded_and_a_resent_one_is_not() {
    // §9: ids within the receipt memory are matched exactly; a lower id never seen is new.
    let server = Server::start().await;
    let (mut alice, _) = server.login(TransportKind::Tcp, "phone").await;
    let mut bob = server.connect(TransportKind::Tcp).await;
    hello(&mut bob, hello_as("bob", "phone", None)).await;
    for (msg_id, body) in [(5, "five"), (3, "three"), (5, "five again")] {
        alice.send(&text(msg_id, "bob", body)).await;
        assert_eq!(receipt(&mut alice).await.msg_id, msg_id);
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        match bob.frame().await {
            Kind::Deliver(d) => got.push(String::from_utf8_lossy(&d.payload).into_owned()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, ["five", "three"]);
    // The re-sent 5 was not delivered again: the next Deliver is the next request.
    alice.send(&text(6, "bob", "six")).await;
    receipt(&mut alice).await;
    match bob.frame().await {
        Kind::Deliver(d) => assert_eq!(&d.payload[..], b"six"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_message_buffered_for_a_detached_device_is_stored_not_delivered() {
    let server = Server::start().await;
    let (mut alice, _) = server.login(TransportKind::Tcp, "phone").await;
    let mut bob = server.connect(TransportKind::Tcp).await;
    hello(&mut bob, hello_as("bob", "phone", None)).await;
    // Bob leaves deliberately; once the server closed his connection his session is detached.
    bob.send(&imgate_codec::Error::new(CloseCode::NORMAL, "bye").into())
        .await;
    let _ = bob.until_end().await;
    alice.send(&text(1, "bob", "later")).await;
    assert_eq!(
        receipt(&mut alice).await.status(),
        ReceiptStatus::StoredOffline
    );
}
