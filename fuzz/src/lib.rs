//! The fuzz harness: one function per target.
//!
//! The same file is compiled into `codec/tests/fuzz_corpus_replay.rs` (with `#[path]`), which
//! replays every file under `fuzz/corpus/<target>/` through these functions, so plain
//! `cargo test` re-checks the corpus without nightly or libFuzzer.
//!
//! Oracles: no panic; the read buffer never grows past what the frame limit allows; a frame
//! that decodes re-encodes and decodes to itself; both framings agree.

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use imgate_codec::proto::send::To;
use imgate_codec::{
    Ack, Compression, Deliver, Dictionary, Error, Frame, FrameDecoder, FrameEncoder, GoAway, Hello,
    JoinRoom, Kind, LENGTH_PREFIX_LEN, LeaveRoom, Ping, Pong, Receipt, RegisterPush, Resume, Send,
    Welcome, flags,
};

/// A small limit, so that the limit checks are reached often.
pub const FUZZ_LIMIT: usize = 64 * 1024;

fn decoder() -> FrameDecoder {
    FrameDecoder::new(FUZZ_LIMIT).with_dictionary(Some(Dictionary::builtin()))
}

/// A decoded frame must survive re-encoding. (Re-encoding may be a few bytes longer than the
/// input, e.g. a single unpacked `fixed32` becomes packed, so the encoder gets room.)
fn check_reencodes(frame: &Frame) {
    let encoder = FrameEncoder::new(2 * FUZZ_LIMIT);
    let message = encoder
        .encode_message(frame)
        .expect("a decoded frame re-encodes");
    let again = FrameDecoder::new(2 * FUZZ_LIMIT)
        .decode_message(message)
        .expect("a re-encoded frame decodes");
    assert_eq!(&again, frame, "decode → encode → decode changed the frame");
}

/// `stream_decoder`: the first byte seeds the read sizes; the rest is the byte stream, fed to
/// `decode_stream` piece by piece as a socket would deliver it.
pub fn stream_decoder(data: &[u8]) {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let decoder = decoder();
    let mut buf = BytesMut::new();
    let mut offset = 0;
    let mut state = u32::from(seed) | 1;
    while offset < input.len() {
        // xorshift: cheap, deterministic read sizes between 1 and 256 bytes.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = 1 + (state as usize % 256);
        let end = (offset + size).min(input.len());
        buf.extend_from_slice(&input[offset..end]);
        offset = end;
        loop {
            let received = buf.len();
            let result = decoder.decode_stream(&mut buf);
            let bound = 2 * received.max(LENGTH_PREFIX_LEN + FUZZ_LIMIT);
            assert!(
                buf.capacity() <= bound,
                "read buffer grew to {}",
                buf.capacity()
            );
            match result {
                Ok(Some(frame)) => check_reencodes(&frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.decode_stream_eof(&mut buf);
}

/// `ws_decoder`: the input is one WebSocket binary message.
pub fn ws_decoder(data: &[u8]) {
    if let Ok(frame) = decoder().decode_message(Bytes::copy_from_slice(data)) {
        check_reencodes(&frame);
    }
}

/// `decompress`: compressed frames through the public API. The first byte picks the header
/// the harness writes (so the fuzzer need not find the flags and dictionary id itself):
///
/// - `0`: flags LZ4; the input is the body (size and block)
/// - `1`: flags LZ4|DICTIONARY, the built-in dictionary's id; the input is size and block
/// - `2`: flags LZ4; a small declared size from the first two input bytes, then the block
/// - `3`: flags LZ4|DICTIONARY, the built-in id, a small size, then the block
/// - otherwise: the input after the first byte is the whole frame, flags included
///
/// Both framings must give the same outcome.
pub fn decompress(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut frame = Vec::with_capacity(rest.len() + 9);
    let dictionary_id = Dictionary::builtin().id().0.to_be_bytes();
    let small_size = |rest: &[u8]| -> (Vec<u8>, usize) {
        let size = match rest {
            [a, b, ..] => u32::from(u16::from_le_bytes([*a, *b])),
            _ => 0,
        };
        (size.to_le_bytes().to_vec(), rest.len().min(2))
    };
    match mode % 8 {
        0 => {
            frame.push(flags::LZ4);
            frame.extend_from_slice(rest);
        }
        1 => {
            frame.push(flags::LZ4 | flags::DICTIONARY);
            frame.extend_from_slice(&dictionary_id);
            frame.extend_from_slice(rest);
        }
        2 => {
            let (size, used) = small_size(rest);
            frame.push(flags::LZ4);
            frame.extend_from_slice(&size);
            frame.extend_from_slice(&rest[used..]);
        }
        3 => {
            let (size, used) = small_size(rest);
            frame.push(flags::LZ4 | flags::DICTIONARY);
            frame.extend_from_slice(&dictionary_id);
            frame.extend_from_slice(&size);
            frame.extend_from_slice(&rest[used..]);
        }
        _ => frame.extend_from_slice(rest),
    }
    let decoder = decoder();
    let from_message = decoder.decode_message(Bytes::copy_from_slice(&frame));
    let mut stream = BytesMut::with_capacity(frame.len() + LENGTH_PREFIX_LEN);
    stream.extend_from_slice(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes());
    stream.extend_from_slice(&frame);
    let from_stream = decoder.decode_stream(&mut stream);
    match (&from_message, &from_stream) {
        (Ok(a), Ok(Some(b))) => {
            assert_eq!(a, b, "framings disagree");
            check_reencodes(a);
        }
        (Err(a), Err(b)) => assert_eq!(a.close_code(), b.close_code(), "framings disagree"),
        // An empty message is an empty frame; on a stream, a zero length prefix is too.
        _ => panic!("framings disagree: {from_message:?} vs {from_stream:?}"),
    }
}

/// `roundtrip` input: frames built by `Arbitrary`, a compression setting and read sizes.
#[derive(Arbitrary, Debug)]
pub struct RoundTrip {
    frames: Vec<ArbFrame>,
    /// 0: none; 1: LZ4; 2: LZ4 with the built-in dictionary; 3: LZ4 with an ad-hoc dictionary.
    compression: u8,
    threshold: u8,
    adhoc_dictionary: Vec<u8>,
    chunks: Vec<u8>,
}

/// Every frame kind, field by field, in `Arbitrary`-friendly form.
#[derive(Arbitrary, Debug)]
#[allow(missing_docs, clippy::type_complexity)] // reason: mirrors frame.proto one to one
pub enum ArbFrame {
    Hello(
        (u32, String, String, String, i32),
        (Vec<String>, Option<(u64, Vec<u8>, u64)>, Vec<u32>, u32),
    ),
    Welcome(
        (u64, Vec<u8>, u32, u32, Vec<String>, u64),
        (bool, i32, u32, String, u64),
    ),
    Error(u32, String),
    Ping(u64, u64),
    Pong(u64, u64),
    Deliver(u64, Vec<u8>, String, String, u64, u64),
    Send(u64, Option<Result<String, String>>, Vec<u8>, u64),
    Ack(u64),
    Receipt(u64, i32, u32, String, u64),
    GoAway(i32, u32, String),
    RegisterPush(u64, i32, String, String, bool),
    JoinRoom(u64, String),
    LeaveRoom(u64, String),
}

impl From<ArbFrame> for Frame {
    fn from(frame: ArbFrame) -> Self {
        let kind = match frame {
            ArbFrame::Hello(
                (version, token, app_id, device_id, platform),
                (features, resume, dictionaries, max_frame),
            ) => Kind::Hello(Hello {
                version,
                token,
                app_id,
                device_id,
                platform,
                features,
                resume: resume.map(|(session_id, secret, last_seq)| Resume {
                    session_id,
                    resume_secret: secret.into(),
                    last_seq,
                }),
                dictionaries,
                max_frame,
            }),
            ArbFrame::Welcome(
                (session_id, secret, heartbeat_ms, max_frame, features, server_time_ms),
                (resumed, resume_refused, dictionary_id, user_id, last_receipted_msg_id),
            ) => Kind::Welcome(Welcome {
                session_id,
                resume_secret: secret.into(),
                heartbeat_ms,
                max_frame,
                features,
                server_time_ms,
                resumed,
                resume_refused,
                dictionary_id,
                user_id,
                last_receipted_msg_id,
            }),
            ArbFrame::Error(code, message) => Kind::Error(Error { code, message }),
            ArbFrame::Ping(client_time_ms, ack) => Kind::Ping(Ping {
                client_time_ms,
                ack,
            }),
            ArbFrame::Pong(client_time_ms, server_time_ms) => Kind::Pong(Pong {
                client_time_ms,
                server_time_ms,
            }),
            ArbFrame::Deliver(seq, payload, from, room, message_id, sent_at_ms) => {
                Kind::Deliver(Deliver {
                    seq,
                    payload: payload.into(),
                    from,
                    room,
                    message_id,
                    sent_at_ms,
                })
            }
            ArbFrame::Send(msg_id, to, payload, ack) => Kind::Send(Send {
                msg_id,
                to: to.map(|to| match to {
                    Ok(user) => To::User(user),
                    Err(room) => To::Room(room),
                }),
                payload: payload.into(),
                ack,
            }),
            ArbFrame::Ack(seq) => Kind::Ack(Ack { seq }),
            ArbFrame::Receipt(msg_id, status, reason_code, reason, message_id) => {
                Kind::Receipt(Receipt {
                    msg_id,
                    status,
                    reason_code,
                    reason,
                    message_id,
                })
            }
            ArbFrame::GoAway(reason, reconnect_after_ms, message) => Kind::GoAway(GoAway {
                reason,
                reconnect_after_ms,
                message,
            }),
            ArbFrame::RegisterPush(msg_id, provider, token, topic, sandbox) => {
                Kind::RegisterPush(RegisterPush {
                    msg_id,
                    provider,
                    token,
                    topic,
                    sandbox,
                })
            }
            ArbFrame::JoinRoom(msg_id, room) => Kind::JoinRoom(JoinRoom { msg_id, room }),
            ArbFrame::LeaveRoom(msg_id, room) => Kind::LeaveRoom(LeaveRoom { msg_id, room }),
        };
        kind.into()
    }
}

/// `roundtrip`: encode the frames on a stream and as messages, decode them (the stream in the
/// given read sizes), and require equality.
pub fn roundtrip(input: RoundTrip) {
    let dictionary = match input.compression % 4 {
        2 => Some(Dictionary::builtin()),
        3 if !input.adhoc_dictionary.is_empty() => Some(Dictionary::new(input.adhoc_dictionary)),
        _ => None,
    };
    let compression = (!input.compression.is_multiple_of(4)).then(|| Compression {
        threshold: usize::from(input.threshold),
        dictionary: dictionary.clone(),
    });
    let encoder = FrameEncoder::new(FUZZ_LIMIT).with_compression(compression);
    let decoder = FrameDecoder::new(FUZZ_LIMIT).with_dictionary(dictionary);
    let frames: Vec<Frame> = input.frames.into_iter().map(Frame::from).collect();

    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for frame in frames {
        match encoder.encode_message(&frame) {
            Ok(message) => {
                assert_eq!(decoder.decode_message(message).as_ref().ok(), Some(&frame));
                encoder
                    .encode_stream(&frame, &mut wire)
                    .expect("fits as a message, so fits on a stream");
                sent.push(frame);
            }
            // Only frames over the limit may be refused.
            Err(error) => assert_eq!(error.close_code(), imgate_codec::CloseCode::FRAME_TOO_LARGE),
        }
    }

    let mut received = Vec::new();
    let mut buf = BytesMut::new();
    let mut offset = 0;
    let mut chunks = input.chunks.iter().cycle();
    while offset < wire.len() {
        let size = chunks.next().map_or(wire.len(), |&c| usize::from(c) + 1);
        let end = (offset + size).min(wire.len());
        buf.extend_from_slice(&wire[offset..end]);
        offset = end;
        while let Some(frame) = decoder
            .decode_stream(&mut buf)
            .expect("own encoding decodes")
        {
            received.push(frame);
        }
    }
    assert!(
        decoder
            .decode_stream_eof(&mut buf)
            .expect("no partial frame")
            .is_none()
    );
    assert_eq!(received, sent);
}
