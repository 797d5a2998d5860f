//! The worked examples in `docs/protocol.md` ("Test vectors") are checked here, so the spec
//! cannot drift from the code: every block marked `<!-- vector: NAME -->` must hold exactly
//! the bytes this crate produces for NAME, and must decode back to the same frame.
//!
//! To regenerate the blocks after an intended change:
//! `IMGATE_PRINT_VECTORS=1 cargo test -p imgate-codec --test spec_vectors -- --nocapture`.
#![allow(clippy::unwrap_used)] // reason: test helpers; a panic is a test failure

use bytes::{Bytes, BytesMut};
use imgate_codec::{
    Compression, Deliver, Dictionary, DictionaryId, Frame, FrameDecoder, FrameEncoder, Hello, Ping,
    Platform, Receipt, ReceiptStatus, Resume,
};

const SPEC: &str = include_str!("../../docs/protocol.md");

/// The dictionary of the dictionary example: small enough to print in the spec.
const EXAMPLE_DICTIONARY: &[u8] = br#"{"type":"text","text":"#;

/// Which framing a vector uses.
#[derive(Clone, Copy)]
enum Framing {
    Stream,
    WebSocket,
}

struct Vector {
    name: &'static str,
    framing: Framing,
    compression: Option<Compression>,
    frame: Frame,
}

fn vectors() -> Vec<Vector> {
    let dictionary = Dictionary::new(Bytes::from_static(EXAMPLE_DICTIONARY));
    let chat = Bytes::from_static(
        br#"{"type":"text","text":"hello hello hello hello hello hello hello hello"}"#,
    );
    vec![
        Vector {
            name: "ping-stream",
            framing: Framing::Stream,
            compression: None,
            frame: Ping {
                client_time_ms: 1_700_000_000_000,
                ack: 41,
            }
            .into(),
        },
        Vector {
            name: "hello-stream",
            framing: Framing::Stream,
            compression: None,
            frame: Hello {
                version: 1,
                token: "t0k".into(),
                app_id: "chat".into(),
                device_id: "d1".into(),
                platform: Platform::Android.into(),
                features: vec!["lz4".into()],
                resume: Some(Resume {
                    session_id: 7,
                    resume_secret: Bytes::from_static(&[0xAA, 0xBB]),
                    last_seq: 12,
                }),
                dictionaries: vec![dictionary.id().0],
                max_frame: 0,
            }
            .into(),
        },
        Vector {
            name: "deliver-stream",
            framing: Framing::Stream,
            compression: None,
            frame: Deliver {
                seq: 1,
                payload: Bytes::from_static(b"hi"),
                from: "alice".into(),
                room: String::new(),
                message_id: 1001,
                sent_at_ms: 0,
            }
            .into(),
        },
        Vector {
            name: "deliver-websocket",
            framing: Framing::WebSocket,
            compression: None,
            frame: Deliver {
                seq: 1,
                payload: Bytes::from_static(b"hi"),
                from: "alice".into(),
                room: String::new(),
                message_id: 1001,
                sent_at_ms: 0,
            }
            .into(),
        },
        Vector {
            name: "receipt-websocket",
            framing: Framing::WebSocket,
            compression: None,
            frame: Receipt {
                msg_id: 5,
                status: ReceiptStatus::Rejected.into(),
                reason_code: 4101,
                reason: "no such user".into(),
                message_id: 0,
            }
            .into(),
        },
        Vector {
            name: "deliver-lz4-stream",
            framing: Framing::Stream,
            compression: Some(Compression {
                threshold: 0,
                dictionary: None,
            }),
            frame: Deliver {
                seq: 2,
                payload: chat.clone(),
                ..Default::default()
            }
            .into(),
        },
        Vector {
            name: "deliver-lz4-dictionary-websocket",
            framing: Framing::WebSocket,
            compression: Some(Compression {
                threshold: 0,
                dictionary: Some(dictionary),
            }),
            frame: Deliver {
                seq: 3,
                payload: chat,
                ..Default::default()
            }
            .into(),
        },
    ]
}

fn encode(vector: &Vector) -> Vec<u8> {
    let encoder = FrameEncoder::default().with_compression(vector.compression.clone());
    match vector.framing {
        Framing::Stream => {
            let mut out = BytesMut::new();
            encoder.encode_stream(&vector.frame, &mut out).unwrap();
            out.to_vec()
        }
        Framing::WebSocket => encoder.encode_message(&vector.frame).unwrap().to_vec(),
    }
}

fn decode(framing: Framing, bytes: &[u8]) -> Frame {
    let decoder = FrameDecoder::default().with_dictionary(Some(Dictionary::new(
        Bytes::from_static(EXAMPLE_DICTIONARY),
    )));
    match framing {
        Framing::Stream => {
            let mut buf = BytesMut::from(bytes);
            let frame = decoder.decode_stream_eof(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty(), "trailing bytes after the vector's frame");
            frame
        }
        Framing::WebSocket => decoder
            .decode_message(Bytes::copy_from_slice(bytes))
            .unwrap(),
    }
}

/// 16 bytes per line, lower-case, space-separated: the layout of the spec's hex blocks.
fn hex_block(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The bytes in the first fenced block after `<!-- vector: NAME -->`.
fn spec_block(name: &str) -> Option<Vec<u8>> {
    let marker = format!("<!-- vector: {name} -->");
    let after = &SPEC[SPEC.find(&marker)? + marker.len()..];
    let open = after.find("```")?;
    let body = &after[open..];
    let body = &body[body.find('\n')? + 1..];
    let body = &body[..body.find("```")?];
    let digits: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}

#[test]
fn spec_vectors_match_the_codec() {
    let print = std::env::var_os("IMGATE_PRINT_VECTORS").is_some();
    let mut stale = Vec::new();
    for vector in vectors() {
        let bytes = encode(&vector);
        if print {
            println!(
                "<!-- vector: {} -->\n```text\n{}\n```\n",
                vector.name,
                hex_block(&bytes)
            );
        }
        assert_eq!(
            decode(vector.framing, &bytes),
            vector.frame,
            "{} round trip",
            vector.name
        );
        match spec_block(vector.name) {
            Some(in_spec) if in_spec == bytes => {
                assert_eq!(decode(vector.framing, &in_spec), vector.frame);
            }
            _ => stale.push(vector.name),
        }
    }
    assert!(
        stale.is_empty(),
        "docs/protocol.md vectors missing or stale: {stale:?} (see this file's header to regenerate)"
    );
}

#[test]
fn spec_states_the_example_dictionary_id() {
    let id = DictionaryId::of(EXAMPLE_DICTIONARY);
    let line = format!("id `{:#010x}`", id.0);
    assert!(
        SPEC.contains(&line),
        "docs/protocol.md must state the example dictionary {line}"
    );
}

#[test]
fn spec_states_the_builtin_dictionary_id() {
    let line = format!("builtin id\n`{:#010x}`", Dictionary::builtin().id().0);
    assert!(
        SPEC.contains(&line),
        "docs/protocol.md must state the built-in dictionary {line}"
    );
}

#[test]
fn spec_lists_every_error_code() {
    for code in imgate_codec::CloseCode::ALL {
        let row = format!("| {} | `{}` |", code.0, code.name());
        assert!(
            SPEC.contains(&row),
            "docs/protocol.md error table lacks the row {row:?}"
        );
    }
}
