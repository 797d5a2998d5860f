//! The accept loop backs off when file descriptors run out, and recovers.
//!
//! Its own test binary (its own process), because it lowers the process's descriptor limit.
#![allow(missing_docs)] // reason: test binary

use std::time::Duration;

use imgate_transports::{Connector, ConnectorConfig, Listener, ListenerConfig, TransportKind};
use rlimit::Resource;

#[tokio::test]
async fn accept_backs_off_on_emfile_and_recovers() {
    let mut listener = Listener::bind(ListenerConfig::new(
        TransportKind::Tcp,
        "127.0.0.1:0".parse().expect("addr"),
    ))
    .await
    .expect("bind");
    let addr = listener.local_addr();
    let stats = listener.stats().clone();
    let (soft, hard) = Resource::NOFILE.get().expect("getrlimit");
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(64);
    Resource::NOFILE.set(open + 32, hard).expect("setrlimit");
    // Fill the table, leaving one descriptor for the client's socket.
    let mut fillers = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        fillers.push(file);
    }
    fillers.pop();
    let connector = Connector::new(ConnectorConfig::plain(TransportKind::Tcp)).expect("connector");
    let mut client = connector.connect(addr).await.expect("connect");
    client
        .send(&imgate_codec::Ping::default().into())
        .await
        .expect("send");
    // The server cannot accept: it must back off (not spin, not die). Three failures after
    // the first take at least its back-off of 10 + 20 + 40 ms; a spinning loop takes
    // microseconds.
    let counted = |n| stats.wait_for(move |s| s.accept_errors >= n);
    tokio::time::timeout(Duration::from_secs(5), counted(1))
        .await
        .expect("accept fails");
    let first = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), counted(4))
        .await
        .expect("accept keeps trying");
    let backed_off = first.elapsed();
    assert!(
        backed_off >= Duration::from_millis(70),
        "4 accept errors within {backed_off:?}: no back-off"
    );
    drop(fillers);
    let mut conn = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("recovered")
        .expect("connection");
    assert!(conn.recv().await.expect("recv").is_some());
    Resource::NOFILE.set(soft, hard).expect("restore");
}
