//! Property tests: frames of every kind survive both framings, with and without compression,
//! however the byte stream is cut into reads; and arbitrary bytes never panic the decoder or
//! make it allocate beyond its limit.
#![allow(clippy::unwrap_used)] // reason: test helpers; a panic is a test failure

use bytes::{BufMut, Bytes, BytesMut};
use imgate_codec::proto::send::To;
use imgate_codec::{
    Ack, CodecError, Compression, Deliver, Dictionary, Error, Frame, FrameDecoder, FrameEncoder,
    GoAway, Hello, JoinRoom, Kind, LeaveRoom, Ping, Pong, Receipt, RegisterPush, Resume, Send,
    Welcome,
};
use proptest::collection::vec;
use proptest::prelude::*;

// ---- Strategies, one per message -------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{0,12}",
        "\\PC{0,24}",
        Just("你好，世界 👋 привет مرحبا".to_owned()),
    ]
}

/// Payloads: random (incompressible), repetitive (compressible), and empty.
fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        vec(any::<u8>(), 0..512).prop_map(Bytes::from),
        (text(), 1..200usize).prop_map(|(t, n)| Bytes::from(
            format!(r#"{{"type":"text","text":"{t}","mentions":[]}}"#).repeat(n)
        )),
        Just(Bytes::new()),
    ]
}

/// Open proto3 enums: known values mostly, unknown ones too (they must survive as numbers).
fn enum_value(known: i32) -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0..known, 1 => any::<i32>()]
}

fn strings() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u32>(),
        text(),
        text(),
        text(),
        enum_value(5),
        strings(),
        proptest::option::of(resume()),
        vec(any::<u32>(), 0..4),
        any::<u32>(),
    )
        .prop_map(
            |(
                version,
                token,
                app_id,
                device_id,
                platform,
                features,
                resume,
                dictionaries,
                max_frame,
            )| {
                Hello {
                    version,
                    token,
                    app_id,
                    device_id,
                    platform,
                    features,
                    resume,
                    dictionaries,
                    max_frame,
                }
            },
        )
}

fn resume() -> impl Strategy<Value = Resume> {
    (any::<u64>(), vec(any::<u8>(), 0..48), any::<u64>()).prop_map(
        |(session_id, secret, last_seq)| Resume {
            session_id,
            resume_secret: secret.into(),
            last_seq,
        },
    )
}

fn welcome() -> impl Strategy<Value = Welcome> {
    (
        (
            any::<u64>(),
            vec(any::<u8>(), 0..48),
            any::<u32>(),
            any::<u32>(),
        ),
        (strings(), any::<u64>(), any::<bool>(), enum_value(6)),
        (any::<u32>(), text(), any::<u64>()),
    )
        .prop_map(
            |(
                (session_id, secret, heartbeat_ms, max_frame),
                (features, server_time_ms, resumed, resume_refused),
                (dictionary_id, user_id, last_receipted_msg_id),
            )| Welcome {
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
            },
        )
}

fn error() -> impl Strategy<Value = Error> {
    (any::<u32>(), text()).prop_map(|(code, message)| Error { code, message })
}

fn ping() -> impl Strategy<Value = Ping> {
    (any::<u64>(), any::<u64>()).prop_map(|(client_time_ms, ack)| Ping {
        client_time_ms,
        ack,
    })
}

fn pong() -> impl Strategy<Value = Pong> {
    (any::<u64>(), any::<u64>()).prop_map(|(client_time_ms, server_time_ms)| Pong {
        client_time_ms,
        server_time_ms,
    })
}

fn deliver() -> impl Strategy<Value = Deliver> {
    (
        any::<u64>(),
        payload(),
        text(),
        text(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(seq, payload, from, room, message_id, sent_at_ms)| Deliver {
                seq,
                payload,
                from,
                room,
                message_id,
                sent_at_ms,
            },
        )
}

fn send() -> impl Strategy<Value = Send> {
    let to = prop_oneof![
        Just(None),
        text().prop_map(|u| Some(To::User(u))),
        text().prop_map(|r| Some(To::Room(r))),
    ];
    (any::<u64>(), to, payload(), any::<u64>()).prop_map(|(msg_id, to, payload, ack)| Send {
        msg_id,
        to,
        payload,
        ack,
    })
}

fn ack() -> impl Strategy<Value = Ack> {
    any::<u64>().prop_map(|seq| Ack { seq })
}

fn receipt() -> impl Strategy<Value = Receipt> {
    (
        any::<u64>(),
        enum_value(5),
        any::<u32>(),
        text(),
        any::<u64>(),
    )
        .prop_map(
            |(msg_id, status, reason_code, reason, message_id)| Receipt {
                msg_id,
                status,
                reason_code,
                reason,
                message_id,
            },
        )
}

fn go_away() -> impl Strategy<Value = GoAway> {
    (enum_value(6), any::<u32>(), text()).prop_map(|(reason, reconnect_after_ms, message)| GoAway {
        reason,
        reconnect_after_ms,
        message,
    })
}

fn register_push() -> impl Strategy<Value = RegisterPush> {
    (any::<u64>(), enum_value(3), text(), text(), any::<bool>()).prop_map(
        |(msg_id, provider, token, topic, sandbox)| RegisterPush {
            msg_id,
            provider,
            token,
            topic,
            sandbox,
        },
    )
}

fn join_room() -> impl Strategy<Value = JoinRoom> {
    (any::<u64>(), text()).prop_map(|(msg_id, room)| JoinRoom { msg_id, room })
}

fn leave_room() -> impl Strategy<Value = LeaveRoom> {
    (any::<u64>(), text()).prop_map(|(msg_id, room)| LeaveRoom { msg_id, room })
}

/// A frame of any kind, every kind equally likely.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        hello().prop_map(Kind::Hello),
        welcome().prop_map(Kind::Welcome),
        error().prop_map(Kind::Error),
        ping().prop_map(Kind::Ping),
        pong().prop_map(Kind::Pong),
        deliver().prop_map(Kind::Deliver),
        send().prop_map(Kind::Send),
        ack().prop_map(Kind::Ack),
        receipt().prop_map(Kind::Receipt),
        go_away().prop_map(Kind::GoAway),
        register_push().prop_map(Kind::RegisterPush),
        join_room().prop_map(Kind::JoinRoom),
        leave_room().prop_map(Kind::LeaveRoom),
    ]
    .prop_map(Frame::from)
}

/// The dictionary of a compressed run: the shipped one, or an ad-hoc one.
fn dictionary() -> impl Strategy<Value = Dictionary> {
    prop_oneof![
        Just(Dictionary::builtin()),
        vec(any::<u8>(), 1..256).prop_map(Dictionary::new),
        Just(Dictionary::new(Bytes::from_static(
            br#"{"type":"text","text":"","mentions":[]}"#
        ))),
    ]
}

/// No compression, LZ4 alone, or LZ4 with a dictionary; thresholds from "always" upwards.
fn compression() -> impl Strategy<Value = Option<Compression>> {
    prop_oneof![
        Just(None),
        (0..300usize).prop_map(|threshold| Some(Compression {
            threshold,
            dictionary: None
        })),
        (0..300usize, dictionary()).prop_map(|(threshold, dict)| Some(Compression {
            threshold,
            dictionary: Some(dict)
        })),
    ]
}

// ---- Helpers -----------------------------------------------------------------------------------

/// Feeds `wire` to the decoder in reads of the given sizes (cycled), as a socket would, and
/// collects every frame.
fn decode_in_chunks(
    decoder: &FrameDecoder,
    wire: &[u8],
    chunks: &[usize],
) -> Result<Vec<Frame>, CodecError> {
    let mut read_buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut offset = 0;
    for &size in chunks.iter().cycle() {
        if offset == wire.len() {
            break;
        }
        let end = (offset + size).min(wire.len());
        read_buf.extend_from_slice(&wire[offset..end]);
        offset = end;
        while let Some(frame) = decoder.decode_stream(&mut read_buf)? {
            frames.push(frame);
        }
    }
    assert!(decoder.decode_stream_eof(&mut read_buf)?.is_none());
    assert!(read_buf.is_empty());
    Ok(frames)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---- Properties --------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn stream_round_trip_in_random_chunks(
        frames in vec(frame(), 1..12),
        compression in compression(),
        chunks in prop_oneof![
            vec(1..8usize, 1..8),       // tiny reads: every header split
            vec(1..600usize, 1..16),    // mixed
            Just(vec![usize::MAX]),     // everything in one read
        ],
    ) {
        let dictionary = compression.as_ref().and_then(|c| c.dictionary.clone());
        let encoder = FrameEncoder::default().with_compression(compression);
        let decoder = FrameDecoder::default().with_dictionary(dictionary);
        let mut wire = BytesMut::new();
        for frame in &frames {
            encoder.encode_stream(frame, &mut wire).unwrap();
        }
        prop_assert_eq!(decode_in_chunks(&decoder, &wire, &chunks).unwrap(), frames);
    }

    #[test]
    fn websocket_round_trip(frame in frame(), compression in compression()) {
        let dictionary = compression.as_ref().and_then(|c| c.dictionary.clone());
        let encoder = FrameEncoder::default().with_compression(compression);
        let decoder = FrameDecoder::default().with_dictionary(dictionary);
        let message = encoder.encode_message(&frame).unwrap();
        // Compression is used only when it shrinks the frame.
        let plain = 1 + prost::Message::encoded_len(&frame);
        prop_assert!(message.len() <= plain);
        prop_assert_eq!(message[0] != 0, message.len() < plain);
        prop_assert_eq!(decoder.decode_message(message).unwrap(), frame);
    }

    #[test]
    fn both_framings_carry_the_same_bytes(frame in frame(), compression in compression()) {
        let encoder = FrameEncoder::default().with_compression(compression);
        let mut stream = BytesMut::new();
        encoder.encode_stream(&frame, &mut stream).unwrap();
        let message = encoder.encode_message(&frame).unwrap();
        prop_assert_eq!(&stream[4..], &message[..]);
        prop_assert_eq!(stream[..4].to_vec(), u32::try_from(message.len()).unwrap().to_be_bytes().to_vec());
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(
        bytes in vec(any::<u8>(), 0..4096),
        limit in 1..8192usize,
        chunks in vec(1..512usize, 1..8),
    ) {
        check_garbage(&bytes, limit, &chunks);
    }

    #[test]
    fn plausible_frames_with_garbage_bodies_never_panic(
        parts in vec((0..4u8, any::<u8>(), vec(any::<u8>(), 0..300)), 1..6),
        limit in 1..8192usize,
        chunks in vec(1..512usize, 1..8),
    ) {
        // Length prefixes that mostly fit, flags that are mostly valid, bodies that are not:
        // this reaches the decompressor and the protobuf decoder much more often.
        let mut wire = BytesMut::new();
        for (flag_choice, raw_flags, mut body) in parts {
            let flag_bits = match flag_choice {
                0 => 0,
                1 => imgate_codec::flags::LZ4,
                2 => imgate_codec::flags::LZ4 | imgate_codec::flags::DICTIONARY,
                _ => raw_flags,
            };
            if flag_bits & imgate_codec::flags::DICTIONARY != 0 && body.len() >= 4 {
                body[..4].copy_from_slice(&Dictionary::builtin().id().0.to_be_bytes());
            }
            wire.put_u32(u32::try_from(body.len() + 1).unwrap());
            wire.put_u8(flag_bits);
            wire.put_slice(&body);
        }
        check_garbage(&wire, limit, &chunks);
    }
}

/// Decodes `bytes` both ways with a decoder limited to `limit`: any result but a panic is
/// fine, and the read buffer never grows past what the limit allows.
fn check_garbage(bytes: &[u8], limit: usize, chunks: &[usize]) {
    let decoder = FrameDecoder::new(limit).with_dictionary(Some(Dictionary::builtin()));
    let _ = decoder.decode_message(Bytes::copy_from_slice(bytes));

    let mut read_buf = BytesMut::new();
    let mut offset = 0;
    'reads: for &size in chunks.iter().cycle() {
        if offset == bytes.len() {
            let _ = decoder.decode_stream_eof(&mut read_buf);
            break;
        }
        let end = (offset + size).min(bytes.len());
        read_buf.extend_from_slice(&bytes[offset..end]);
        offset = end;
        loop {
            let received = read_buf.len();
            let result = decoder.decode_stream(&mut read_buf);
            // Growth is bounded by what was received or one frame of at most `limit`, never
            // by a declared length (Vec-style doubling allows a factor of two).
            let bound = 2 * received.max(imgate_codec::LENGTH_PREFIX_LEN + limit);
            assert!(
                read_buf.capacity() <= bound,
                "capacity {} > {bound}",
                read_buf.capacity()
            );
            match result {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => break 'reads,
            }
        }
    }
}
