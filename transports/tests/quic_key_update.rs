//! QUIC key updates against the server's session, which drops its TLS connection after the
//! handshake and derives each next key phase lazily: a plain quinn client forces several key
//! updates and frames keep flowing both ways after each.
//!
//! Its own test binary (its own process), because it installs a global tracing subscriber to
//! count the key updates quinn executes.
#![cfg(feature = "quic")]
#![allow(missing_docs, clippy::unwrap_used)] // reason: test binary

#[path = "all/common.rs"]
#[allow(dead_code)] // reason: shared with the `all` binary, which uses the rest
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use imgate_codec::{DEFAULT_MAX_FRAME, FrameDecoder, FrameEncoder};
use imgate_transports::TransportKind;
use quinn::crypto::rustls::QuicClientConfig;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use common::*;

/// Counts quinn-proto's "executing key update" events (client and server share the process),
/// so the test knows the updates it forced really happened.
struct KeyUpdates(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for KeyUpdates {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct IsKeyUpdate(bool);
        impl Visit for IsKeyUpdate {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 |= format!("{value:?}") == "executing key update";
                }
            }
        }
        let mut visitor = IsKeyUpdate(false);
        event.record(&mut visitor);
        if visitor.0 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn client_endpoint() -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(identity().root_store())
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"imgate/1".to_vec()];
    let crypto = QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// Sends `frame` and reads its echo from the raw stream.
async fn echo_once(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    inbox: &mut BytesMut,
    seq: u64,
) {
    let frame = deliver(seq, 300);
    let mut out = BytesMut::new();
    FrameEncoder::new(DEFAULT_MAX_FRAME)
        .encode_stream(&frame, &mut out)
        .unwrap();
    send.write_all(&out).await.unwrap();
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let echoed = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(frame) = decoder.decode_stream(inbox).unwrap() {
                return frame;
            }
            let chunk = recv.read_chunk(64 * 1024, true).await.unwrap().unwrap();
            inbox.extend_from_slice(&chunk.bytes);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("frame {seq} was not echoed (keys out of step?)"));
    assert_eq!(echoed, frame);
}

#[tokio::test]
async fn frames_flow_through_repeated_key_updates() {
    let updates = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(KeyUpdates(Arc::clone(&updates)));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let listener = server(listener_config(TransportKind::Quic)).await;
    let addr = listener.local_addr();
    let _echo = echo(listener);
    let endpoint = client_endpoint();
    let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut inbox = BytesMut::new();
    echo_once(&mut send, &mut recv, &mut inbox, 0).await;

    let mut seq = 1;
    let forced = 4;
    for _update in 0..forced {
        // quinn ignores a forced update while the previous one's old keys are still kept
        // (three probe timeouts after it was acknowledged); on loopback that is well under
        // this pause. The scenario's pacing, not a synchronisation: quinn has no event for it.
        tokio::time::sleep(Duration::from_millis(400)).await;
        conn.force_key_update();
        for _ in 0..5 {
            echo_once(&mut send, &mut recv, &mut inbox, seq).await;
            seq += 1;
        }
    }
    // Each forced update is executed by the client, then by the server when it sees the new
    // key phase (its lazily derived keys decrypt it, or the echoes above would have stalled).
    assert_eq!(updates.load(Ordering::Relaxed), 2 * forced);
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}
