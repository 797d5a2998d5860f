//! `Client::connect` fails fast with a typed error naming the endpoint, within the connect
//! time-out; trusting a PEM file or the development certificate; reconnect off; logout.

mod support;

use std::time::Duration;

use imgate::session::SessionConfig;
use imgate_client::{
    Client, ClientError, ConnectCause, ConnectFailure, ConnectionState, Endpoint, RootCertStore,
    StopReason, Target, TransportKind,
};
use imgate_transports::Identity;

/// The connect time-out of these tests; every failure must come back within it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects with `config` and returns the failure, asserting it came within the time-out.
async fn failure(mut config: imgate_client::ClientConfig) -> ConnectFailure {
    config.handshake_timeout = CONNECT_TIMEOUT;
    let endpoint = config.endpoints[0].clone();
    let result = tokio::time::timeout(
        CONNECT_TIMEOUT + Duration::from_secs(1),
        Client::connect(config),
    )
    .await
    .expect("connect returned within the connect time-out");
    match result {
        Err(ClientError::Connect(failure)) => {
            assert_eq!(failure.endpoint, endpoint);
            let text = failure.to_string();
            assert!(
                text.contains(&endpoint.addr.to_string()),
                "names the address: {text}"
            );
            failure
        }
        Err(other) => panic!("expected a connect failure, got {other}"),
        Ok(_) => panic!("expected a connect failure, connected"),
    }
}

#[tokio::test]
async fn a_wrong_port_is_refused_at_once() {
    let t = support::start(SessionConfig::default()).await;
    // A port that was just free: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    for kind in [
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Ws,
        TransportKind::Wss,
    ] {
        let config = t
            .config("alice", &[kind])
            .with_endpoints(vec![Endpoint::new(kind, addr)]);
        let failure = failure(config).await;
        assert_eq!(failure.cause, ConnectCause::Refused, "{kind}: {failure}");
        assert!(failure.to_string().contains("refused"), "{failure}");
    }
    t.gw.shutdown().await;
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts and never answers: no transport handshake, no Welcome.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    let t = support::start(SessionConfig::default()).await;
    for kind in [TransportKind::Tcp, TransportKind::Tls, TransportKind::Ws] {
        let config = t
            .config("alice", &[kind])
            .with_endpoints(vec![Endpoint::new(kind, addr)]);
        let failure = failure(config).await;
        assert_eq!(
            failure.cause,
            ConnectCause::Timeout(CONNECT_TIMEOUT),
            "{kind}: {failure}"
        );
    }
    drop(silent);
    t.gw.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error() {
    let t = support::start(SessionConfig::default()).await;
    for kind in [TransportKind::Tls, TransportKind::Wss, TransportKind::Quic] {
        let mut config = t.config("alice", &[kind]);
        config.roots = std::sync::Arc::new(RootCertStore::empty());
        let failure = failure(config).await;
        match &failure.cause {
            ConnectCause::Tls(reason) => {
                assert!(reason.contains("UnknownIssuer"), "{kind}: {reason}")
            }
            other => panic!("{kind}: expected a TLS error, got {other:?}"),
        }
        assert!(
            failure.to_string().contains("trust_pem_file"),
            "says what to do: {failure}"
        );
    }
    t.gw.shutdown().await;
}

#[tokio::test]
async fn a_ca_certificate_served_as_the_leaf_is_a_tls_error() {
    // What `openssl req -x509` makes by default: a self-signed certificate with CA:TRUE.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    let dir = tempdir("ca-leaf");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
    let identity =
        Identity::from_pem_files(&dir.join("cert.pem"), &dir.join("key.pem")).expect("identity");
    let t = support::start_with(SessionConfig::default(), identity).await;
    let mut config = t.config("alice", &[TransportKind::Tls]);
    config.roots = std::sync::Arc::new(RootCertStore::empty());
    let config = config.trust_pem_file(dir.join("cert.pem")).expect("trust");
    let failure = failure(config).await;
    assert!(
        matches!(&failure.cause, ConnectCause::Tls(reason) if reason.contains("CaUsedAsEndEntity")),
        "{failure}"
    );
    t.gw.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_wrong_websocket_path_is_http_404() {
    let t = support::start(SessionConfig::default()).await;
    for kind in [TransportKind::Ws, TransportKind::Wss] {
        let mut config = t.config("alice", &[kind]);
        config.ws_path = "/chat".to_owned();
        let failure = failure(config).await;
        assert_eq!(
            failure.cause,
            ConnectCause::HttpStatus(404),
            "{kind}: {failure}"
        );
        assert!(failure.to_string().contains("ws_path"), "{failure}");
    }
    // The right path connects.
    let (client, _incoming) = Client::connect(t.config("alice", &[TransportKind::Ws]))
        .await
        .expect("connect on /ws");
    client.close().await;
    t.gw.shutdown().await;
}

#[tokio::test]
async fn the_development_certificate_is_trusted_from_its_file() {
    let dir = tempdir("dev-cert");
    let (identity, generated) = Identity::dev_in(&dir, &["localhost"]).expect("dev identity");
    assert!(generated);
    // A second start reuses it: clients that trust the file keep trusting the server.
    let (again, generated) = Identity::dev_in(&dir, &["localhost"]).expect("dev identity");
    assert!(!generated);
    assert_eq!(again.leaf(), identity.leaf());
    let t = support::start_with(SessionConfig::default(), identity).await;
    for kind in [TransportKind::Tls, TransportKind::Wss, TransportKind::Quic] {
        let mut config = t.config("alice", &[kind]);
        config.roots = std::sync::Arc::new(RootCertStore::empty());
        let config = config.trust_pem_file(dir.join("cert.pem")).expect("trust");
        let (client, _incoming) = Client::connect(config).await.expect("trusted");
        client.close().await;
    }
    let missing = t
        .config("alice", &[TransportKind::Tls])
        .trust_pem_file(dir.join("nope.pem"));
    assert!(
        matches!(&missing, Err(ClientError::Certificate { path, .. }) if path.ends_with("nope.pem")),
        "{missing:?}"
    );
    t.gw.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn without_automatic_reconnect_a_drop_stops_the_client() {
    let t = support::start(SessionConfig::default()).await;
    let mut config = t.config("alice", &[TransportKind::Tcp]);
    config.reconnect.automatic = false;
    let (client, _incoming) = Client::connect(config).await.expect("connect");
    client.debug_drop_connection();
    let stopped = support::stopped(&client).await;
    assert!(
        matches!(
            stopped,
            StopReason::Disconnected(imgate_client::DisconnectReason::Dropped)
        ),
        "{stopped:?}"
    );
    t.gw.shutdown().await;
}

#[tokio::test]
async fn logout_ends_the_session_close_does_not() {
    let t = support::start(SessionConfig::default()).await;
    for kind in TransportKind::ALL {
        let (alice, _in) = Client::connect(t.config("alice", &[kind]))
            .await
            .expect("alice");
        alice.send(Target::user("alice"), "hi").await.expect("send");
        alice.close().await;
        // Closed: the session stays, detached, for a resume.
        assert_eq!(t.gw.handle().session_count(), 1, "{kind}");
        let (alice, _in) = Client::connect(t.config("alice", &[kind]))
            .await
            .expect("alice");
        alice.logout().await.expect("logout");
        // Logged out: the server ended the session before it closed the connection.
        assert_eq!(t.gw.handle().session_count(), 0, "{kind}");
        assert!(matches!(
            &*alice.state().borrow(),
            ConnectionState::Stopped {
                reason: StopReason::LoggedOut
            }
        ));
        assert!(matches!(
            alice.send(Target::user("bob"), "late").await,
            Err(ClientError::Stopped(StopReason::LoggedOut))
        ));
    }
    t.gw.shutdown().await;
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("imgate-client-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}
