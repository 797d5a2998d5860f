//! How `decode_stream` sizes the caller's read buffer: by the bytes that arrived rather than
//! by a declared length, never past the frame, and without keeping a large frame's
//! allocation once the frame is out.
#![allow(clippy::unwrap_used)] // reason: tests; a panic is a test failure

use bytes::{BufMut, Bytes, BytesMut};
use imgate_codec::{DEFAULT_MAX_FRAME, Deliver, Frame, FrameDecoder, FrameEncoder, Kind};
use prost::Message;

/// The most the buffer may grow ahead of what arrived (the decoder's growth step).
const STEP: usize = 64 * 1024;

/// Deterministic pseudo-random numbers (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `1..=max`.
    fn up_to(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }
}

fn deliver(payload_len: usize) -> Frame {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let payload: Vec<u8> = (0..payload_len).map(|_| rng.next() as u8).collect();
    Deliver {
        seq: 1,
        payload: Bytes::from(payload),
        from: "alice".into(),
        ..Default::default()
    }
    .into()
}

/// A `Deliver` whose frame (flags byte + body) is exactly the default frame limit.
fn max_size_frame() -> Frame {
    let overhead = deliver(DEFAULT_MAX_FRAME).encoded_len() + 1 - DEFAULT_MAX_FRAME;
    let frame = deliver(DEFAULT_MAX_FRAME - overhead);
    assert_eq!(
        frame.encoded_len() + 1,
        DEFAULT_MAX_FRAME,
        "not at the limit"
    );
    frame
}

fn wire(frames: &[&Frame]) -> BytesMut {
    let mut wire = BytesMut::new();
    for frame in frames {
        FrameEncoder::default()
            .encode_stream(frame, &mut wire)
            .unwrap();
    }
    wire
}

/// The bound the decoder keeps to after a call that left a partial frame in `buf`.
fn assert_sized_by_arrival(buf: &BytesMut) {
    let (len, capacity) = (buf.len(), buf.capacity());
    assert!(
        capacity <= len + STEP.max(len),
        "capacity {capacity} for {len} bytes received"
    );
    assert!(
        capacity <= 4 + DEFAULT_MAX_FRAME,
        "capacity {capacity} past the frame limit"
    );
}

#[test]
fn a_large_declared_length_reserves_one_step_not_the_frame() {
    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    buf.put_u32(u32::try_from(DEFAULT_MAX_FRAME).unwrap());
    buf.put_slice(&[0, 0x0a, 0x03]);
    assert!(decoder.decode_stream(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() <= STEP + 64,
        "a prefix and 3 bytes pinned {} bytes",
        buf.capacity()
    );

    // Trickling stays within the step: the first growth covers it.
    for _ in 0..1000 {
        buf.put_u8(0);
        assert!(decoder.decode_stream(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= STEP + 1100, "capacity {}", buf.capacity());
    }
}

#[test]
fn a_max_size_frame_in_random_chunks_decodes_without_copying_its_payload() {
    let frame = max_size_frame();
    let wire = wire(&[&frame]);
    let decoder = FrameDecoder::default();
    for seed in 1..=4_u64 {
        let mut rng = Rng(seed);
        let mut buf = BytesMut::new();
        let mut offset = 0;
        let decoded = loop {
            let end = (offset + rng.up_to(32 * 1024)).min(wire.len());
            buf.extend_from_slice(&wire[offset..end]);
            offset = end;
            let before = buf.as_ptr_range();
            if let Some(decoded) = decoder.decode_stream(&mut buf).unwrap() {
                assert_eq!(offset, wire.len(), "decoded before the last byte");
                let Some(Kind::Deliver(d)) = &decoded.kind else {
                    panic!("not a Deliver")
                };
                assert!(before.contains(&d.payload.as_ptr()), "payload was copied");
                break decoded;
            }
            assert_sized_by_arrival(&buf);
        };
        assert!(decoded == frame, "seed {seed}: the frame changed");
        assert!(buf.is_empty());
    }
}

#[test]
fn after_a_large_frame_the_buffer_lets_go_of_its_allocation() {
    let large = max_size_frame();
    let small = deliver(10_000);
    let wire = wire(&[&large, &small, &small]);
    let large_len = 4 + DEFAULT_MAX_FRAME;
    let decoder = FrameDecoder::default();

    // As a socket would deliver it: 16 KiB reads, the last one running into the next frame.
    let mut buf = BytesMut::new();
    let mut offset = 0;
    while offset < large_len {
        let end = (offset + 16 * 1024).min(wire.len());
        buf.extend_from_slice(&wire[offset..end]);
        offset = end;
        if offset < large_len {
            assert!(decoder.decode_stream(&mut buf).unwrap().is_none());
        }
    }
    let allocation = buf.as_ptr()..buf.as_ptr().wrapping_add(buf.capacity());
    let decoded = decoder.decode_stream(&mut buf).unwrap().unwrap();
    assert!(decoded == large);
    let rest = offset - large_len;
    assert_eq!(buf.len(), rest);
    assert!(
        buf.capacity() <= rest + 64,
        "{} bytes kept for the {rest} after the frame",
        buf.capacity()
    );
    assert!(
        !allocation.contains(&buf.as_ptr()),
        "the rest still points into the large frame's allocation"
    );
    drop(decoded);

    buf.extend_from_slice(&wire[offset..]);
    assert_eq!(
        decoder.decode_stream(&mut buf).unwrap(),
        Some(small.clone())
    );
    assert_eq!(decoder.decode_stream(&mut buf).unwrap(), Some(small));
    assert_eq!(decoder.decode_stream(&mut buf).unwrap(), None);

    // A large frame that ends the buffer leaves it with no allocation at all, even when a
    // caller's read overshot and the buffer doubled past the frame.
    let mut buf = BytesMut::with_capacity(large_len);
    buf.extend_from_slice(&wire[..large_len]);
    buf.reserve(large_len);
    assert!(decoder.decode_stream(&mut buf).unwrap().is_some());
    assert_eq!(buf.capacity(), 0);
}
