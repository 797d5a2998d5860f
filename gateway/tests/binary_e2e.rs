//! The real `imgate` binary as a process: config file, clients over TCP, WSS and QUIC, direct
//! and room messages through the relay, `/metrics`, and a SIGTERM drain.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use imgate_codec::{Frame, GoAwayReason, JoinRoom, Kind, Send};
use imgate_transports::{Connector, ConnectorConfig, FramedConn, TransportKind};
use rustls::RootCertStore;
use support::process::{spawn, spawn_with_output};
use support::{hello, http, recv, text};

fn write_config(dir: &std::path::Path) -> RootCertStore {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).expect("write key");
    let config = format!(
        r#"
[server]
drain_grace_secs = 5
data_dir = "{dir}/data"

[admin]
bind = "127.0.0.1:0"

[tls]
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"

[[listener]]
transport = "tcp"
bind = "127.0.0.1:0"

[[listener]]
transport = "wss"
bind = "127.0.0.1:0"

[[listener]]
transport = "quic"
bind = "127.0.0.1:0"

[[app]]
id = "chat"
[app.auth]
kind = "static"
tokens = {{ "tok-alice" = "alice", "tok-bob" = "bob", "tok-carol" = "carol" }}
"#,
        dir = dir.display()
    );
    std::fs::write(dir.join("imgate.toml"), config).expect("write config");
    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("trust");
    roots
}

async fn connect(
    listeners: &[(String, SocketAddr)],
    kind: TransportKind,
    roots: &RootCertStore,
) -> FramedConn {
    let addr = listeners
        .iter()
        .find(|(k, _)| k == kind.as_str())
        .map(|(_, a)| *a)
        .expect("listener");
    Connector::new(ConnectorConfig::new(kind, roots.clone()))
        .expect("connector")
        .connect(addr)
        .await
        .expect("connect")
}

fn room_message(msg_id: u64, room: &str, body: &'static str) -> Frame {
    Send {
        msg_id,
        to: Some(imgate_codec::proto::send::To::Room(room.into())),
        payload: Bytes::from_static(body.as_bytes()),
        ack: 0,
    }
    .into()
}

async fn expect_receipt(conn: &mut FramedConn, msg_id: u64) {
    match recv(conn).await {
        Kind::Receipt(r) => assert_eq!(r.msg_id, msg_id),
        other => panic!("expected Receipt {msg_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn binary_relays_over_tcp_wss_and_quic_reports_metrics_and_drains_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("imgate-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let roots = write_config(&dir);
    let (server, listeners, admin) = spawn(&dir.join("imgate.toml"));
    assert_eq!(listeners.len(), 3, "{listeners:?}");

    let mut alice = connect(&listeners, TransportKind::Tcp, &roots).await;
    let mut bob = connect(&listeners, TransportKind::Wss, &roots).await;
    let mut carol = connect(&listeners, TransportKind::Quic, &roots).await;
    hello(&mut alice, "tok-alice", None).await;
    hello(&mut bob, "tok-bob", None).await;
    hello(&mut carol, "tok-carol", None).await;

    // Direct: TCP → WSS.
    alice.send(&text(1, "bob", "hi bob")).await.expect("send");
    expect_receipt(&mut alice, 1).await;
    match recv(&mut bob).await {
        Kind::Deliver(d) => {
            assert_eq!((d.from.as_str(), &d.payload[..]), ("alice", &b"hi bob"[..]))
        }
        other => panic!("expected Deliver, got {other:?}"),
    }
    // Room: bob and carol join; alice (not a member) posts; both members receive it.
    for (conn, msg_id) in [(&mut bob, 2), (&mut carol, 1)] {
        let join = JoinRoom {
            msg_id,
            room: "lobby".into(),
        };
        conn.send(&join.into()).await.expect("join");
        expect_receipt(conn, msg_id).await;
    }
    alice
        .send(&room_message(2, "lobby", "hello lobby"))
        .await
        .expect("send");
    expect_receipt(&mut alice, 2).await;
    for conn in [&mut bob, &mut carol] {
        match recv(conn).await {
            Kind::Deliver(d) => {
                assert_eq!(
                    (d.room.as_str(), &d.payload[..]),
                    ("lobby", &b"hello lobby"[..])
                );
            }
            other => panic!("expected room Deliver, got {other:?}"),
        }
    }

    let (status, metrics) = http(admin, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    for needle in [
        r#"imgate_connections{transport="tcp"} 1"#,
        r#"imgate_connections{transport="wss"} 1"#,
        r#"imgate_connections{transport="quic"} 1"#,
        r#"imgate_handshakes_total{outcome="ok"} 3"#,
        r#"imgate_deliveries_total{outcome="sent"} 3"#,
        "imgate_sessions 3",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // SIGTERM: every client gets GoAway{Drain}; the process exits 0 once they have gone.
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    for conn in [&mut alice, &mut bob, &mut carol] {
        match recv(conn).await {
            Kind::GoAway(g) => assert_eq!(g.reason(), GoAwayReason::Drain),
            other => panic!("expected GoAway, got {other:?}"),
        }
    }
    drop((alice, bob, carol));
    let mut server = server;
    let exit = server.exited(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// [`write_config`] plus `[tls] ticket_keys` naming one key file of `key_byte`s; returns the
/// roots, the key file and the config file.
fn write_config_with_ticket_key(
    dir: &std::path::Path,
    key_byte: u8,
) -> (RootCertStore, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("temp dir");
    let roots = write_config(dir);
    let key_file = dir.join("ticket.key");
    std::fs::write(&key_file, [key_byte; imgate_transports::TICKET_KEY_LEN]).expect("write key");
    let config_file = dir.join("imgate.toml");
    let line = format!(
        "[tls]\nticket_keys = [{:?}]\n",
        key_file.display().to_string()
    );
    let config = std::fs::read_to_string(&config_file)
        .expect("config")
        .replace("[tls]\n", &line);
    std::fs::write(&config_file, config).expect("write config");
    (roots, key_file, config_file)
}

/// Two gateway processes configured with the same `[tls] ticket_keys`: a phone that reconnects
/// to the other one (WSS and QUIC) resumes its TLS session there, and that node counts it.
#[tokio::test]
async fn nodes_sharing_ticket_keys_resume_each_others_sessions() {
    let dir = std::env::temp_dir().join(format!("imgate-e2e-tickets-{}", std::process::id()));
    let (roots, _key_file, config_file) = write_config_with_ticket_key(&dir, 7);
    // Each node has its own session store (a redb file has one writer).
    let config_b = dir.join("imgate-b.toml");
    let text = std::fs::read_to_string(&config_file).expect("config");
    std::fs::write(&config_b, text.replace("/data\"", "/data-b\"")).expect("config b");
    let (_node_a, listeners_a, _) = spawn(&config_file);
    let (_node_b, listeners_b, admin_b) = spawn(&config_b);

    for kind in [TransportKind::Wss, TransportKind::Quic] {
        // One phone: one connector, which keeps the tickets it receives.
        let phone = Connector::new(ConnectorConfig::new(kind, roots.clone())).expect("connector");
        for listeners in [&listeners_a, &listeners_b] {
            let addr = listeners
                .iter()
                .find(|(k, _)| k == kind.as_str())
                .map(|(_, a)| *a)
                .expect("listener");
            let mut conn = phone.connect(addr).await.expect("connect");
            hello(&mut conn, "tok-alice", None).await; // the Welcome comes after the ticket
        }
        let (_, metrics) = http(admin_b, "GET", "/metrics", "").await;
        let resumed = metrics
            .lines()
            .find(|l| {
                l.starts_with("imgate_transport_events_total{")
                    && l.contains(&format!("transport=\"{}\"", kind.as_str()))
                    && l.contains("event=\"handshake_resumed\"")
            })
            .unwrap_or_else(|| panic!("no resumption series for {kind:?} in\n{metrics}"));
        assert!(resumed.ends_with(" 1"), "{resumed}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `[tls] ticket_keys` rotate on SIGHUP: after the key file changes and the signal, a ticket
/// sealed with the old key no longer resumes (it was the only key), the new one does.
#[tokio::test]
async fn sighup_reloads_ticket_keys() {
    let dir = std::env::temp_dir().join(format!("imgate-e2e-sighup-{}", std::process::id()));
    let (roots, key_file, config_file) = write_config_with_ticket_key(&dir, 1);
    let (server, listeners, admin, mut output) = spawn_with_output(&config_file);
    let phone =
        Connector::new(ConnectorConfig::new(TransportKind::Wss, roots.clone())).expect("connector");
    let resumed = || async {
        let (_, metrics) = http(admin, "GET", "/metrics", "").await;
        metrics
            .lines()
            .find(|l| l.contains("transport=\"wss\"") && l.contains("handshake_resumed"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .expect("resumed counter")
    };
    let visit = || async {
        let mut conn = phone
            .connect(listeners.iter().find(|(k, _)| k == "wss").expect("wss").1)
            .await
            .expect("connect");
        hello(&mut conn, "tok-alice", None).await;
    };
    visit().await; // full handshake, a ticket sealed with key 1
    visit().await; // resumes with it
    assert_eq!(resumed().await, 1);

    let mut hangup = || {
        let status = Command::new("kill")
            .args(["-HUP", &server.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        // Logs share stdout (an error is logged too); the announcement is what counts.
        output
            .by_ref()
            .map(|line| line.expect("line"))
            .find(|line| line.starts_with("imgate ticket keys"))
            .expect("a reload line")
    };

    // New contents in the same file.
    std::fs::write(&key_file, [2u8; imgate_transports::TICKET_KEY_LEN]).expect("new key");
    assert_eq!(hangup(), "imgate ticket keys reloaded: 1");
    visit().await; // its ticket was sealed with key 1, now unknown: a full handshake
    assert_eq!(resumed().await, 1);
    visit().await; // the ticket from the last visit, sealed with key 2
    assert_eq!(resumed().await, 2);

    // A new list in the config: only another file, with key 3.
    let other_key = dir.join("other.key");
    std::fs::write(&other_key, [3u8; imgate_transports::TICKET_KEY_LEN]).expect("key 3");
    let config = std::fs::read_to_string(&config_file).expect("config");
    let with_list = |file: &std::path::Path| {
        config.replace(
            &format!("ticket_keys = [{:?}]", key_file.display().to_string()),
            &format!("ticket_keys = [{:?}]", file.display().to_string()),
        )
    };
    std::fs::write(&config_file, with_list(&other_key)).expect("config");
    assert_eq!(hangup(), "imgate ticket keys reloaded: 1");
    visit().await; // sealed with key 2, which the new list dropped: a full handshake
    assert_eq!(resumed().await, 2);
    visit().await; // key 3
    assert_eq!(resumed().await, 3);

    // A list naming a missing file: refused, the keys in use stay.
    std::fs::write(&config_file, with_list(&dir.join("missing.key"))).expect("config");
    let refused = hangup();
    assert!(
        refused.starts_with("imgate ticket keys not reloaded: "),
        "{refused}"
    );
    visit().await;
    assert_eq!(resumed().await, 4);
    std::fs::remove_dir_all(&dir).ok();
}
