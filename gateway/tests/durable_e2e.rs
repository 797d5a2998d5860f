//! Durable sessions through the real binary: a crash (SIGKILL) or a deploy (SIGTERM) while a
//! device holds unacknowledged messages loses none of them, duplicates none, and keeps the
//! sender's de-duplication marks: after the restart the device resumes and gets exactly the
//! messages after its `last_seq`, in order.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use imgate_codec::{Ack, Frame, GoAwayReason, Kind, Ping, Send, Welcome};
use imgate_transports::{Connector, ConnectorConfig, FramedConn, TransportKind};
use rustls::RootCertStore;
use support::process::{Output, Server, spawn_with_output};
use support::{hello, recv, resume_of};

/// Messages per case.
const MESSAGES: u64 = 1_000;
/// How many of them the device has read before the process goes away.
const READ_BEFORE: u64 = 400;

fn write_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let config = format!(
        r#"
[server]
drain_grace_secs = 5
data_dir = "{dir}/data"
frames_per_sec_per_connection = 100000.0

[admin]
bind = "127.0.0.1:0"

[[listener]]
transport = "tcp"
bind = "127.0.0.1:0"

[[app]]
id = "chat"
[app.auth]
kind = "static"
tokens = {{ "tok-alice" = "alice", "tok-bob" = "bob" }}
[app.session]
max_unacked = 2000
resume_window_secs = 120
push_grace_secs = 60
durability = "disk"
"#,
        dir = dir.display()
    );
    let path = dir.join("imgate.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn tcp(listeners: &[(String, SocketAddr)]) -> SocketAddr {
    listeners
        .iter()
        .find(|(k, _)| k == "tcp")
        .map(|(_, a)| *a)
        .expect("tcp listener")
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

fn message(msg_id: u64) -> Frame {
    Send {
        msg_id,
        to: Some(imgate_codec::proto::send::To::User("bob".into())),
        payload: Bytes::from(format!("m{msg_id}")),
        ack: 0,
    }
    .into()
}

/// Alice sends `MESSAGES` messages to Bob and waits for every receipt (each one says the
/// message is durable); returns the server message id of the last one.
async fn alice_sends_everything(alice: &mut FramedConn) -> u64 {
    for msg_id in 1..=MESSAGES {
        alice.send(&message(msg_id)).await.expect("send");
    }
    // Receipts may come in any order (protocol.md §7); each comes once.
    let mut receipted = std::collections::HashMap::new();
    for _ in 1..=MESSAGES {
        match recv(alice).await {
            Kind::Receipt(r) => {
                assert!(receipted.insert(r.msg_id, r.message_id).is_none(), "{r:?}");
            }
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    assert!((1..=MESSAGES).all(|id| receipted.contains_key(&id)));
    receipted[&MESSAGES]
}

/// Bob reads messages `from..=to` (seq k carries "mk"), acknowledging none.
async fn bob_reads(bob: &mut FramedConn, from: u64, to: u64) {
    for seq in from..=to {
        match recv(bob).await {
            Kind::Deliver(d) => {
                assert_eq!(d.seq, seq, "in order, no gap, no duplicate");
                assert_eq!(d.payload, Bytes::from(format!("m{seq}")));
            }
            other => panic!("expected Deliver {seq}, got {other:?}"),
        }
    }
}

/// Nothing else is on its way: a ping's pong is the next frame.
async fn nothing_more(conn: &mut FramedConn) {
    conn.send(&Ping::default().into()).await.expect("ping");
    match recv(conn).await {
        Kind::Pong(_) => {}
        other => panic!("expected nothing but the Pong, got {other:?}"),
    }
}

struct Node {
    server: Server,
    tcp: SocketAddr,
    output: Output,
}

fn start(config: &Path) -> Node {
    let (server, listeners, _admin, output) = spawn_with_output(config);
    Node {
        server,
        tcp: tcp(&listeners),
        output,
    }
}

/// Both devices are connected, Alice's messages are all durable, Bob holds `READ_BEFORE`
/// of them unacknowledged.
async fn before_the_fault(node: &Node) -> (FramedConn, Welcome, FramedConn, Welcome, u64) {
    let mut bob = connect(node.tcp).await;
    let bob_welcome = hello(&mut bob, "tok-bob", None).await;
    let mut alice = connect(node.tcp).await;
    let alice_welcome = hello(&mut alice, "tok-alice", None).await;
    let last_message_id = alice_sends_everything(&mut alice).await;
    bob_reads(&mut bob, 1, READ_BEFORE).await;
    (bob, bob_welcome, alice, alice_welcome, last_message_id)
}

/// After the restart: Bob resumes from `READ_BEFORE` and gets exactly the rest; Alice resumes
/// and a re-sent request is answered from the stored receipt, not delivered again.
async fn after_the_restart(
    node: &Node,
    bob_welcome: &Welcome,
    alice_welcome: &Welcome,
    last_message_id: u64,
) {
    let mut bob = connect(node.tcp).await;
    let welcome = hello(
        &mut bob,
        "tok-bob",
        Some(resume_of(bob_welcome, READ_BEFORE)),
    )
    .await;
    assert!(welcome.resumed, "{welcome:?}");
    assert_eq!(welcome.session_id, bob_welcome.session_id);
    bob_reads(&mut bob, READ_BEFORE + 1, MESSAGES).await;
    nothing_more(&mut bob).await;
    bob.send(&Ack { seq: MESSAGES }.into()).await.expect("ack");

    let mut alice = connect(node.tcp).await;
    let welcome = hello(&mut alice, "tok-alice", Some(resume_of(alice_welcome, 0))).await;
    assert!(welcome.resumed);
    assert_eq!(welcome.last_receipted_msg_id, MESSAGES);
    alice.send(&message(MESSAGES)).await.expect("re-send");
    match recv(&mut alice).await {
        Kind::Receipt(r) => {
            assert_eq!(r.msg_id, MESSAGES);
            assert_eq!(r.message_id, last_message_id, "the stored receipt");
        }
        other => panic!("expected the receipt again, got {other:?}"),
    }
    nothing_more(&mut bob).await;
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imgate-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn sigkill_with_unacknowledged_messages_then_restart_and_resume_loses_nothing() {
    let dir = temp_dir("kill");
    let config = write_config(&dir);
    let mut node = start(&config);
    let (_bob, bob_welcome, _alice, alice_welcome, last) = before_the_fault(&node).await;
    node.server.signal("KILL");
    node.server.exited(Duration::from_secs(10)).await;

    let node = start(&config);
    after_the_restart(&node, &bob_welcome, &alice_welcome, last).await;
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_drain_lets_the_device_ack_then_keeps_the_rest_for_the_next_start() {
    let dir = temp_dir("term");
    let config = write_config(&dir);
    let mut node = start(&config);
    let (mut bob, bob_welcome, alice, alice_welcome, last) = before_the_fault(&node).await;
    drop(alice);
    node.server.signal("TERM");
    // Bob is still connected after the GoAway: the messages after what he read may still
    // arrive before it; his ack of what he read is taken, then he leaves.
    loop {
        match recv(&mut bob).await {
            Kind::GoAway(g) => {
                assert_eq!(g.reason(), GoAwayReason::Drain);
                break;
            }
            Kind::Deliver(d) => assert!(d.seq > READ_BEFORE),
            other => panic!("expected GoAway, got {other:?}"),
        }
    }
    bob.send(&Ack { seq: READ_BEFORE }.into())
        .await
        .expect("ack after GoAway");
    drop(bob);
    let status = node.server.exited(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let mut output = node.output;
    let report = tokio::task::spawn_blocking(move || {
        output
            .find_map(|line| {
                line.ok()?
                    .strip_prefix("imgate drained: ")
                    .map(str::to_owned)
            })
            .expect("drain report")
    })
    .await
    .expect("join");
    assert!(report.contains("kept=2"), "{report}");
    assert!(
        report.contains(&format!("messages_kept={}", MESSAGES - READ_BEFORE)),
        "the ack sent after GoAway counted: {report}"
    );
    assert!(report.contains("clean=true"), "{report}");

    let node = start(&config);
    after_the_restart(&node, &bob_welcome, &alice_welcome, last).await;
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
