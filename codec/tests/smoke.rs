//! Basic round trips through both framings; the property tests cover the rest.
#![allow(clippy::unwrap_used)] // reason: tests; a panic is a test failure

use bytes::{Bytes, BytesMut};
use imgate_codec::{Compression, Deliver, Dictionary, Frame, FrameDecoder, FrameEncoder, Kind};

fn deliver(len: usize) -> Frame {
    Deliver {
        seq: 7,
        payload: Bytes::from("hello, 世界 👋 ".repeat(len / 20 + 1)),
        from: "alice".into(),
        ..Default::default()
    }
    .into()
}

#[test]
fn stream_round_trip_with_and_without_compression() {
    let dict = Dictionary::new(Bytes::from_static(b"hello, \xe4\xb8\x96\xe7\x95\x8c"));
    for compression in [
        None,
        Some(Compression::default()),
        Some(Compression {
            threshold: 0,
            dictionary: Some(dict.clone()),
        }),
    ] {
        let encoder = FrameEncoder::default().with_compression(compression);
        let decoder = FrameDecoder::default().with_dictionary(Some(dict.clone()));
        let mut buf = BytesMut::new();
        for len in [0, 60, 600, 16 * 1024] {
            encoder.encode_stream(&deliver(len), &mut buf).unwrap();
        }
        for len in [0, 60, 600, 16 * 1024] {
            assert_eq!(decoder.decode_stream(&mut buf).unwrap(), Some(deliver(len)));
        }
        assert_eq!(decoder.decode_stream(&mut buf).unwrap(), None);
        let message = encoder.encode_message(&deliver(600)).unwrap();
        assert_eq!(decoder.decode_message(message).unwrap(), deliver(600));
    }
}

#[test]
fn decoded_payload_is_not_copied() {
    let encoder = FrameEncoder::default();
    let mut buf = BytesMut::new();
    encoder.encode_stream(&deliver(600), &mut buf).unwrap();
    let range = buf.as_ptr_range();
    let frame = FrameDecoder::default()
        .decode_stream(&mut buf)
        .unwrap()
        .unwrap();
    let Some(Kind::Deliver(d)) = frame.kind else {
        panic!("not a Deliver")
    };
    assert!(range.contains(&d.payload.as_ptr()), "payload was copied");
}
