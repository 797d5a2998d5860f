//! A client's requests reach the backend in the order it sent them, even when a resume
//! moves its session to a new connection while the old driver is still forwarding.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgate::GatewayHandle;
use imgate::ServerConfig;
use imgate::backend::{Backend, Origin, UpstreamOutcome, UpstreamRequest, async_trait};
use imgate::session::SessionConfig;
use imgate_codec::{Kind, Ping, ReceiptStatus};
use support::*;
use tokio::sync::Notify;

/// Records each request's payload on arrival; holds the first one until released.
#[derive(Default)]
struct GatedBackend {
    arrived: Mutex<Vec<String>>,
    arrival: Notify,
    release: Notify,
}

impl GatedBackend {
    fn arrived(&self) -> Vec<String> {
        self.arrived.lock().expect("lock").clone()
    }

    async fn wait_for(&self, count: usize) {
        let wait = async {
            loop {
                let notified = self.arrival.notified();
                if self.arrived().len() >= count {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("requests reach the backend");
    }
}

#[async_trait]
impl Backend for GatedBackend {
    async fn on_upstream(
        &self,
        _gateway: &GatewayHandle,
        _origin: &Origin,
        request: UpstreamRequest,
    ) -> UpstreamOutcome {
        let UpstreamRequest::Message { payload, .. } = request else {
            return UpstreamOutcome::ok(ReceiptStatus::Accepted, None);
        };
        let first = {
            let mut arrived = self.arrived.lock().expect("lock");
            arrived.push(String::from_utf8_lossy(&payload).into_owned());
            arrived.len() == 1
        };
        self.arrival.notify_waiters();
        if first {
            self.release.notified().await;
        }
        UpstreamOutcome::ok(ReceiptStatus::Accepted, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_forwarded_before_a_resume_reaches_the_backend_before_later_ones() {
    let backend = Arc::new(GatedBackend::default());
    let gw = builder(
        app(backend.clone(), SessionConfig::default()),
        ServerConfig::default(),
    )
    .start()
    .await
    .expect("start");

    let mut old = connect(&gw).await;
    let welcome = hello(&mut old, "tok-alice", None).await;
    old.send(&text(1, "bob", "first")).await.expect("send");
    backend.wait_for(1).await;
    // The phone changes networks while the backend still holds request 1.
    drop(old);
    let mut new = connect(&gw).await;
    let resumed = hello(&mut new, "tok-alice", Some(resume_of(&welcome, 0))).await;
    assert!(resumed.resumed, "{:?}", resumed.resume_refused());
    new.send(&text(2, "bob", "second")).await.expect("send");
    // The Pong proves the session has taken request 2 (frames are handled in order, and a
    // request the driver may forward reaches the backend before the next frame is read).
    new.send(&Ping::default().into()).await.expect("ping");
    loop {
        match recv(&mut new).await {
            Kind::Pong(_) => break,
            Kind::Receipt(r) => panic!("request {} answered while 1 is held", r.msg_id),
            _ => {}
        }
    }
    assert_eq!(
        backend.arrived(),
        ["first"],
        "request 2 overtook request 1, still being forwarded"
    );

    backend.release.notify_one();
    backend.wait_for(2).await;
    assert_eq!(backend.arrived(), ["first", "second"]);
    let mut receipted = Vec::new();
    while receipted.len() < 2 {
        if let Kind::Receipt(receipt) = recv(&mut new).await {
            receipted.push(receipt.msg_id);
        }
    }
    assert_eq!(
        receipted,
        [1, 2],
        "both answered on the new connection, in order"
    );
    gw.shutdown().await;
}
