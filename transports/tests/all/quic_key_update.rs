//! QUIC key updates against the server's session, which drops its TLS connection after the
//! handshake and derives each next key phase lazily: a plain quinn client forces several key
//! updates and frames keep flowing both ways after each.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use imgate_codec::{DEFAULT_MAX_FRAME, FrameDecoder, FrameEncoder};
use imgate_transports::TransportKind;
use quinn::crypto::rustls::QuicClientConfig;

use crate::common::*;

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
    let listener = server(listener_config(TransportKind::Quic)).await;
    let addr = listener.local_addr();
    let _echo = echo(listener);
    let endpoint = client_endpoint();
    let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut inbox = BytesMut::new();
    echo_once(&mut send, &mut recv, &mut inbox, 0).await;

    let mut seq = 1;
    for _update in 0..4 {
        // quinn ignores a forced update while the previous one's old keys are still kept
        // (three probe timeouts after it was acknowledged); on loopback that is well under
        // this pause.
        tokio::time::sleep(Duration::from_millis(400)).await;
        conn.force_key_update();
        for _ in 0..5 {
            echo_once(&mut send, &mut recv, &mut inbox, seq).await;
            seq += 1;
        }
    }
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}
