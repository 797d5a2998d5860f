//! The cluster (issue 14) with real processes: a `nats-server` with JetStream and three
//! `imgate` nodes on loopback, devices speaking the raw protocol. Skipped (with a note)
//! where `nats-server` is missing, unless `IMGATE_REQUIRE_NATS` is set (CI sets it).
//!
//! Cases wait for frames, answers and exits. Two states have no event to wait for and are
//! polled (bounded, a short sleep between asks): `/readyz` turning false once NATS has been
//! gone for `unready_after_secs`, and a dead node's heartbeat key ageing out of its bucket;
//! each is the behaviour under test, observable only by asking.

#[path = "../support/mod.rs"]
mod support;

mod nats;
mod node;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use imgate_codec::{Ack, Deliver, Frame, GoAwayReason, Kind, ReceiptStatus, Resume, Welcome};
use imgate_transports::{Connector, ConnectorConfig, FramedConn, TransportKind};
use rustls::RootCertStore;

use nats::Nats;
use node::Node;
use support::{hello_frame, recv, resume_of, text};

/// A NATS server and three nodes `a`, `b`, `c`, removed with their files when dropped.
struct Cluster {
    nodes: Vec<Node>,
    nats: Nats,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// None when nats-server is missing (and not required).
    fn start(case: &str, durability: &str) -> Option<Self> {
        let binary = nats::binary()?;
        let dir =
            std::env::temp_dir().join(format!("imgate-cluster-{case}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nats = Nats::start(&binary, &dir.join("nats"));
        let nodes = ["a", "b", "c"]
            .iter()
            .map(|name| node::start(name, &nats.url, &dir, durability))
            .collect();
        Some(Self { nodes, nats, dir })
    }

    fn node(&self, name: &str) -> &Node {
        let index = ["a", "b", "c"]
            .iter()
            .position(|n| *n == name)
            .expect("node");
        &self.nodes[index]
    }
}

/// A welcomed device.
struct Device {
    conn: FramedConn,
    welcome: Welcome,
}

async fn connect(addr: SocketAddr) -> FramedConn {
    Connector::new(ConnectorConfig::new(
        TransportKind::Tcp,
        RootCertStore::empty(),
    ))
    .expect("connector")
    .connect(addr)
    .await
    .expect("connect")
}

/// Logs `user`'s `device` in on `node` (resuming `resume` if given).
async fn login(node: &Node, user: &str, device: &str, resume: Option<Resume>) -> Device {
    let mut conn = connect(node.tcp).await;
    conn.send(&hello_frame(&format!("tok-{user}"), device, resume))
        .await
        .expect("hello");
    match recv(&mut conn).await {
        Kind::Welcome(welcome) => Device { conn, welcome },
        other => panic!("expected Welcome, got {other:?}"),
    }
}

impl Device {
    /// The next `Deliver` (heartbeat answers skipped).
    async fn deliver(&mut self) -> Deliver {
        loop {
            match recv(&mut self.conn).await {
                Kind::Deliver(deliver) => return deliver,
                Kind::Pong(_) => {}
                other => panic!("expected Deliver, got {other:?}"),
            }
        }
    }

    async fn ack(&mut self, seq: u64) {
        let ack: Frame = Ack { seq }.into();
        self.conn.send(&ack).await.expect("ack");
    }

    /// Frames until the server closes the connection (at most 10 s).
    async fn until_closed(&mut self) -> Vec<Kind> {
        let mut frames = Vec::new();
        let read = async {
            while let Ok(Some(frame)) = self.conn.recv().await {
                frames.extend(frame.kind);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        frames
    }
}

fn text_of(deliver: &Deliver) -> String {
    String::from_utf8_lossy(&deliver.payload).into_owned()
}

/// The outcomes of a deliver answer, by device (a user-level entry as `"-"`).
fn outcomes(answer: &serde_json::Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = answer["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| {
            (
                d["device"].as_str().unwrap_or("-").to_owned(),
                d["outcome"].as_str().expect("outcome").to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

fn pair(device: &str, outcome: &str) -> (String, String) {
    (device.to_owned(), outcome.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_on_node_a_reaches_a_user_on_node_c() {
    let Some(cluster) = Cluster::start("route", "memory") else {
        return;
    };
    let mut bob = login(cluster.node("c"), "bob", "phone", None).await;
    let mut alice = login(cluster.node("a"), "alice", "phone", None).await;
    alice
        .conn
        .send(&text(1, "bob", "hello from a"))
        .await
        .expect("send");
    let receipt = support::receipt(&mut alice.conn).await;
    assert_eq!(receipt.status(), ReceiptStatus::Delivered, "{receipt:?}");
    let got = bob.deliver().await;
    assert_eq!(
        (text_of(&got), got.from.as_str(), got.seq),
        ("hello from a".into(), "alice", 1)
    );
    // The backend's API on a third node: one device report, from node c.
    let answer = cluster.node("b").deliver("bob", "via b").await;
    assert_eq!(outcomes(&answer), vec![pair("phone", "sent")]);
    assert_eq!(text_of(&bob.deliver().await), "via b");
    // A user with no session anywhere: offline, once.
    let answer = cluster.node("b").deliver("carol", "nobody").await;
    assert_eq!(outcomes(&answer), vec![pair("-", "offline")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_to_a_user_on_two_nodes_reports_both_devices() {
    let Some(cluster) = Cluster::start("devices", "memory") else {
        return;
    };
    let mut phone = login(cluster.node("a"), "bob", "phone", None).await;
    let mut tablet = login(cluster.node("b"), "bob", "tablet", None).await;
    let answer = cluster.node("c").deliver("bob", "to both").await;
    assert_eq!(
        outcomes(&answer),
        vec![pair("phone", "sent"), pair("tablet", "sent")]
    );
    assert_eq!(text_of(&phone.deliver().await), "to both");
    assert_eq!(text_of(&tablet.deliver().await), "to both");
    // The lookup names each device's node.
    let sessions = cluster.node("c").sessions("bob").await;
    let mut where_: Vec<(String, String, bool)> = sessions
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            (
                s["device"].as_str().expect("device").to_owned(),
                s["node"].as_str().expect("node").to_owned(),
                s["attached"].as_bool().expect("attached"),
            )
        })
        .collect();
    where_.sort();
    assert_eq!(
        where_,
        vec![
            ("phone".into(), "a".into(), true),
            ("tablet".into(), "b".into(), true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_takes_the_device_over_and_the_old_session_cannot_return() {
    let Some(cluster) = Cluster::start("takeover", "memory") else {
        return;
    };
    let mut old = login(cluster.node("a"), "bob", "phone", None).await;
    let new = login(cluster.node("b"), "bob", "phone", None).await;
    let closing = old.until_closed().await;
    let go_away = closing.iter().find_map(|k| match k {
        Kind::GoAway(g) => Some(g.reason()),
        _ => None,
    });
    assert_eq!(go_away, Some(GoAwayReason::Takeover), "{closing:?}");
    let answer = cluster.node("c").deliver("bob", "to the new one").await;
    assert_eq!(outcomes(&answer), vec![pair("phone", "sent")]);
    assert_eq!(
        answer["devices"][0]["session"].as_str(),
        Some(format!("{:016x}", new.welcome.session_id).as_str())
    );
    let mut new = new;
    assert_eq!(text_of(&new.deliver().await), "to the new one");
    // The kicked device reconnects on its own, resuming its old session on node c: refused,
    // so it cannot evict the login that replaced it.
    let mut conn = connect(cluster.node("c").tcp).await;
    conn.send(&hello_frame(
        "tok-bob",
        "phone",
        Some(resume_of(&old.welcome, 0)),
    ))
    .await
    .expect("hello");
    match recv(&mut conn).await {
        Kind::Error(e) => assert_eq!(
            e.code,
            u32::from(imgate_codec::CloseCode::SESSION_TAKEN_OVER.0)
        ),
        other => panic!("expected Error SESSION_TAKEN_OVER, got {other:?}"),
    }
    let answer = cluster.node("a").deliver("bob", "still the new one").await;
    assert_eq!(outcomes(&answer), vec![pair("phone", "sent")]);
    assert_eq!(text_of(&new.deliver().await), "still the new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_on_another_node_with_every_unacknowledged_message_once_in_order() {
    for durability in ["memory", "disk"] {
        let Some(cluster) = Cluster::start(&format!("resume-{durability}"), durability) else {
            return;
        };
        let mut bob = login(cluster.node("a"), "bob", "phone", None).await;
        for i in 1..=5 {
            cluster.node("c").deliver("bob", &format!("m{i}")).await;
        }
        for i in 1..=5 {
            assert_eq!(text_of(&bob.deliver().await), format!("m{i}"));
        }
        bob.ack(2).await;
        let welcome = bob.welcome.clone();
        drop(bob);
        // Buffered on node a while the phone is away (the lookup waits for the detach).
        for i in 6..=7 {
            let answer = cluster.node("c").deliver("bob", &format!("m{i}")).await;
            let outcome = outcomes(&answer);
            assert!(
                outcome == vec![pair("phone", "buffered")]
                    || outcome == vec![pair("phone", "sent")],
                "{outcome:?}"
            );
        }
        // The phone comes back on node b, having received up to 2 as far as it knows.
        let mut bob = login(
            cluster.node("b"),
            "bob",
            "phone",
            Some(resume_of(&welcome, 2)),
        )
        .await;
        assert!(bob.welcome.resumed, "{:?}", bob.welcome);
        assert_eq!(bob.welcome.session_id, welcome.session_id);
        for i in 3..=7 {
            let got = bob.deliver().await;
            assert_eq!(
                (got.seq, text_of(&got)),
                (i, format!("m{i}")),
                "{durability}"
            );
        }
        // New messages now go to node b, from any node.
        let answer = cluster.node("a").deliver("bob", "m8").await;
        assert_eq!(
            outcomes(&answer),
            vec![pair("phone", "sent")],
            "{durability}"
        );
        let got = bob.deliver().await;
        assert_eq!((got.seq, text_of(&got)), (8, "m8".to_owned()));
        let sessions = cluster.node("c").sessions("bob").await;
        assert_eq!(sessions[0]["node"].as_str(), Some("b"), "{sessions}");
        assert_eq!(sessions[0]["unacked"].as_u64(), Some(6), "{sessions}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_that_wakes_up_delivers_nothing_for_a_device_that_moved_on() {
    let Some(cluster) = Cluster::start("frozen", "memory") else {
        return;
    };
    let mut stale = login(cluster.node("a"), "bob", "phone", None).await;
    cluster.node("a").server.signal("STOP");
    // The phone gives up on node a and logs in on b: a cannot answer the take-over, the
    // directory fences it anyway.
    let mut fresh = login(cluster.node("b"), "bob", "phone", None).await;
    for i in 1..=10 {
        let answer = cluster.node("c").deliver("bob", &format!("m{i}")).await;
        assert_eq!(outcomes(&answer), vec![pair("phone", "sent")], "m{i}");
    }
    cluster.node("a").server.signal("CONT");
    for i in 11..=15 {
        let answer = cluster.node("a").deliver("bob", &format!("m{i}")).await;
        assert_eq!(outcomes(&answer), vec![pair("phone", "sent")], "m{i}");
    }
    for i in 1..=15 {
        assert_eq!(text_of(&fresh.deliver().await), format!("m{i}"));
    }
    // Node a, awake, ends its stale session (the take-over it missed) and sent it nothing.
    let frames = stale.until_closed().await;
    assert!(
        frames.iter().all(|k| !matches!(k, Kind::Deliver(_))),
        "the stale connection got a message: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_local_sessions_keep_working_remote_ones_are_reported_unreachable() {
    let Some(mut cluster) = Cluster::start("nats-down", "memory") else {
        return;
    };
    let mut bob = login(cluster.node("a"), "bob", "phone", None).await;
    cluster.nats.kill();
    // Node a still delivers to its own session, and says what it could not check.
    let answer = cluster.node("a").deliver("bob", "local").await;
    assert_eq!(
        outcomes(&answer),
        vec![pair("-", "unreachable"), pair("phone", "sent")]
    );
    assert_eq!(text_of(&bob.deliver().await), "local");
    // Node b cannot reach bob: refused in the report, not lost silently.
    let answer = cluster.node("b").deliver("bob", "remote").await;
    assert_eq!(outcomes(&answer), vec![pair("-", "unreachable")]);
    // And tells its load balancer (unready_after_secs = 1).
    let admin = cluster.node("b").admin;
    let unready = async {
        loop {
            let (status, _) = support::http(admin, "GET", "/readyz", "").await;
            if status == 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), unready)
        .await
        .expect("/readyz turns false within 10 s of losing NATS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_sessions_are_released_once_its_heartbeat_stops() {
    let Some(cluster) = Cluster::start("dead-node", "memory") else {
        return;
    };
    let _carol = login(cluster.node("a"), "carol", "phone", None).await;
    let _phone = login(cluster.node("a"), "bob", "phone", None).await;
    let mut tablet = login(cluster.node("b"), "bob", "tablet", None).await;
    cluster.node("a").server.signal("KILL");
    // Until node a's heartbeat ages out (node_timeout_secs = 2) its devices are reported
    // unreachable; then the first delivery that finds it dead releases them, and carol, with
    // no session left anywhere, is handed to the offline path.
    let released = async {
        for i in 0.. {
            let answer = cluster.node("c").deliver("carol", &format!("c{i}")).await;
            match outcomes(&answer).as_slice() {
                [(device, outcome)] if device == "-" && outcome == "offline" => return i,
                [(device, outcome)] if device == "phone" && outcome == "unreachable" => {}
                other => panic!("unexpected outcomes {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        unreachable!()
    };
    let attempts = tokio::time::timeout(Duration::from_secs(15), released)
        .await
        .expect("node a declared dead within 15 s");
    eprintln!("carol's session on the dead node released after {attempts} deliveries");
    // Bob's phone went with node a; his tablet on b still gets everything.
    let answer = cluster.node("c").deliver("bob", "after a died").await;
    let found = outcomes(&answer);
    assert!(
        found == vec![pair("tablet", "sent")]
            || found == vec![pair("phone", "unreachable"), pair("tablet", "sent")],
        "{found:?}"
    );
    let answer = cluster.node("c").deliver("bob", "and again").await;
    assert_eq!(outcomes(&answer), vec![pair("tablet", "sent")]);
    assert_eq!(text_of(&tablet.deliver().await), "after a died");
    assert_eq!(text_of(&tablet.deliver().await), "and again");
    let sessions = cluster.node("b").sessions("bob").await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
}
