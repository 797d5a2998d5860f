//! Replays every file under `fuzz/corpus/<target>/` through the fuzz harness, so the corpus
//! (and any crash input added to it) is re-checked by plain `cargo test`, without nightly.
//!
//! The harness is `fuzz/src/lib.rs` itself, compiled in here: the targets and this test cannot
//! drift apart. `write_seed_corpus` (ignored) regenerates the committed seeds:
//! `cargo test -p imgate-codec --test fuzz_corpus_replay -- --ignored write_seed_corpus`.
#![allow(clippy::unwrap_used)] // reason: test helpers; a panic is a test failure

#[allow(unreachable_pub, dead_code)] // reason: the harness's items are `pub` for the fuzz crate
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Compression, Deliver, Dictionary, Frame, FrameEncoder, Hello, Ping, Receipt, Send, Welcome,
};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn run(target: &str, data: &[u8]) {
    match target {
        "stream_decoder" => harness::stream_decoder(data),
        "ws_decoder" => harness::ws_decoder(data),
        "decompress" => harness::decompress(data),
        "roundtrip" => {
            // libFuzzer's `fuzz_target!(|input: T|)` builds T with `arbitrary_take_rest`.
            let input = arbitrary::Unstructured::new(data);
            if let Ok(round_trip) =
                <harness::RoundTrip as arbitrary::Arbitrary>::arbitrary_take_rest(input)
            {
                harness::roundtrip(round_trip);
            }
        }
        other => panic!("fuzz/corpus/{other}: no such fuzz target"),
    }
}

#[test]
fn replay_fuzz_corpus() {
    let mut replayed = 0;
    for target in ["stream_decoder", "ws_decoder", "decompress", "roundtrip"] {
        let dir = corpus_root().join(target);
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| run(target, &data));
            assert!(result.is_ok(), "fuzz input {} fails", path.display());
            count += 1;
        }
        assert!(count > 0, "{} holds no seeds", dir.display());
        replayed += count;
    }
    assert!(replayed >= 4);
}

fn seed_frames() -> Vec<Frame> {
    let chat = Bytes::from(
        r#"{"type":"text","text":"你好 👋 see you at 7? ¿Dónde? Привет","mentions":["u-1"]}"#
            .repeat(4),
    );
    vec![
        Hello {
            version: 1,
            token: "eyJhbGciOiJIUzI1NiJ9.e30.sig".into(),
            app_id: "chat".into(),
            device_id: "ios-1".into(),
            platform: 1,
            features: vec!["lz4".into()],
            dictionaries: vec![Dictionary::builtin().id().0],
            ..Default::default()
        }
        .into(),
        Welcome {
            session_id: 42,
            resume_secret: Bytes::from_static(&[7; 16]),
            heartbeat_ms: 30_000,
            max_frame: 1 << 20,
            features: vec!["lz4".into()],
            dictionary_id: Dictionary::builtin().id().0,
            user_id: "alice".into(),
            ..Default::default()
        }
        .into(),
        Ping {
            client_time_ms: 1_700_000_000_000,
            ack: 3,
        }
        .into(),
        Deliver {
            seq: 4,
            payload: chat.clone(),
            from: "bob".into(),
            room: "general".into(),
            message_id: 99,
            sent_at_ms: 1_700_000_000_123,
        }
        .into(),
        Send {
            msg_id: 8,
            to: Some(imgate_codec::proto::send::To::Room("general".into())),
            payload: chat,
            ack: 4,
        }
        .into(),
        Receipt {
            msg_id: 8,
            status: 2,
            message_id: 100,
            ..Default::default()
        }
        .into(),
    ]
}

fn encoders() -> [(&'static str, FrameEncoder); 3] {
    let builtin = Some(Dictionary::builtin());
    [
        ("plain", FrameEncoder::default()),
        (
            "lz4",
            FrameEncoder::default().with_compression(Some(Compression {
                threshold: 0,
                dictionary: None,
            })),
        ),
        (
            "dict",
            FrameEncoder::default().with_compression(Some(Compression {
                threshold: 0,
                dictionary: builtin,
            })),
        ),
    ]
}

/// Writes the seed corpus: valid frames in each target's input format.
#[test]
#[ignore = "writes fuzz/corpus; run by hand after changing the frame layout"]
fn write_seed_corpus() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus_root().join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    let frames = seed_frames();
    for (mode, encoder) in encoders() {
        // stream_decoder: a seed byte for the read sizes, then every frame back to back.
        let mut stream = BytesMut::from(&[0x5A][..]);
        for frame in &frames {
            encoder.encode_stream(frame, &mut stream).unwrap();
        }
        write("stream_decoder", &format!("{mode}-all"), &stream);
        for (i, frame) in frames.iter().enumerate() {
            let message = encoder.encode_message(frame).unwrap();
            write("ws_decoder", &format!("{mode}-{i}"), &message);
            // decompress: mode 0x04 takes the whole frame as it is.
            if message[0] != 0 {
                let mut data = vec![0x04];
                data.extend_from_slice(&message);
                write("decompress", &format!("{mode}-{i}"), &data);
                // The same frame in the harness's header-writing modes 0 and 1.
                let skip = if message[0] & imgate_codec::flags::DICTIONARY != 0 {
                    5
                } else {
                    1
                };
                let mut data = vec![if skip == 5 { 1 } else { 0 }];
                data.extend_from_slice(&message[skip..]);
                write("decompress", &format!("{mode}-{i}-header"), &data);
            }
        }
    }
    // roundtrip: Arbitrary reads any bytes; a few varied seeds give it a start.
    for (i, seed) in [
        &b"\x02\x01\x05hello world, hello world, hello world"[..],
        &[0x07; 64][..],
        &(0..=255u8).collect::<Vec<_>>()[..],
        br#"{"type":"text","text":"hi"}{"type":"text","text":"hi"}"#,
    ]
    .iter()
    .enumerate()
    {
        write("roundtrip", &i.to_string(), seed);
    }
}
