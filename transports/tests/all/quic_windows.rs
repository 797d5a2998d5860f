//! QUIC flow-control windows far below the frame limit still carry frames at the limit.

use imgate_codec::DEFAULT_MAX_FRAME;
use imgate_transports::{Connector, QuicConfig, TransportKind};

use crate::common::*;

async fn max_size_frames_both_ways(quic: QuicConfig) {
    let mut config = listener_config(TransportKind::Quic);
    config.quic = quic.clone();
    let listener = server(config).await;
    let addr = listener.local_addr();
    let _echo = echo(listener);
    let mut client_config = connector_config(TransportKind::Quic);
    client_config.quic = quic;
    let connector = Connector::new(client_config).expect("connector");
    let mut conn = connector.connect(addr).await.expect("connect");
    let at_limit = frame_of_size(DEFAULT_MAX_FRAME);
    for _ in 0..2 {
        conn.send(&at_limit).await.expect("send");
        assert_eq!(recv(&mut conn).await.expect("echo"), Some(at_limit.clone()));
    }
}

/// The default windows (128 KiB) and a 1 MiB frame: eight windows per frame.
#[tokio::test]
async fn default_windows_carry_a_max_size_frame() {
    max_size_frames_both_ways(QuicConfig::default()).await;
}

/// Windows of 16 KiB: 64 window updates per frame, and still no stall.
#[tokio::test]
async fn tiny_windows_carry_a_max_size_frame() {
    let mut quic = QuicConfig::default();
    quic.stream_receive_window = 16 * 1024;
    quic.receive_window = 16 * 1024;
    quic.send_window = 16 * 1024;
    max_size_frames_both_ways(quic).await;
}
