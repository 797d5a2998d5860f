//! Compression ratios on held-out synthetic traffic (seed 2; the dictionary is trained on
//! seed 1), per message-size class: uncompressed, LZ4 alone, LZ4 with a dictionary.
//!
//! `cargo run --release -p imgate-codec --example dict_ratio [-- <dict file>...]`
//! Without arguments it measures the built-in dictionary (`codec/dict/im-v1.dict`).
//! Ratio = uncompressed bytes / bytes on the wire (flags + body, as a WebSocket message);
//! the encoder only compresses a frame when that makes it smaller, as in production.

#![allow(clippy::disallowed_types)] // reason: a synchronous example timing itself with std Instant; no tokio here

#[path = "support/traffic.rs"]
#[allow(dead_code)] // reason: shared with gen_samples, which uses other parts
mod traffic;

use std::time::Instant;

use imgate_codec::{Compression, Dictionary, Frame, FrameEncoder};

const HELD_OUT_SEED: u64 = 2;
const FRAMES: usize = 20_000;
const CLASSES: [(&str, usize, usize); 4] = [
    ("< 128 B", 0, 128),
    ("128–511 B", 128, 512),
    ("512 B–2 KiB", 512, 2048),
    ("2–16 KiB", 2048, usize::MAX),
];

/// Bytes on the wire and time spent encoding, for one encoder over one set of frames.
fn measure(encoder: &FrameEncoder, frames: &[&Frame]) -> (usize, f64) {
    let start = Instant::now();
    let mut bytes = 0;
    for frame in frames {
        bytes += encoder.encode_message(frame).map(|m| m.len()).unwrap_or(0);
    }
    let nanos = start.elapsed().as_nanos() as f64 / frames.len().max(1) as f64;
    (bytes, nanos)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dictionaries: Vec<(String, Dictionary)> = std::env::args()
        .skip(1)
        .map(|path| Ok((path.clone(), Dictionary::new(std::fs::read(&path)?))))
        .collect::<Result<_, std::io::Error>>()?;
    if dictionaries.is_empty() {
        dictionaries.push(("built-in im-v1.dict".into(), Dictionary::builtin()));
    }

    let mut traffic = traffic::Traffic::new(HELD_OUT_SEED);
    let frames: Vec<Frame> = (0..FRAMES).map(|_| traffic.next_frame()).collect();
    let plain = FrameEncoder::default();
    let lz4 = |threshold, dictionary| {
        FrameEncoder::default().with_compression(Some(Compression {
            threshold,
            dictionary,
        }))
    };

    for (name, dictionary) in &dictionaries {
        println!(
            "\n{name}: {} bytes, id {:#010x}; held-out seed {HELD_OUT_SEED}, {FRAMES} frames\n",
            dictionary.content().len(),
            dictionary.id().0
        );
        println!(
            "| Size class | Frames | Uncompressed | LZ4 | LZ4 + dict | LZ4 ns/frame | LZ4 + dict ns/frame |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let mut rows: Vec<(&str, Vec<&Frame>)> = CLASSES
            .iter()
            .map(|&(label, lo, hi)| {
                let members = frames
                    .iter()
                    .filter(|f| (lo..hi).contains(&(1 + prost::Message::encoded_len(*f))))
                    .collect();
                (label, members)
            })
            .collect();
        rows.push(("all", frames.iter().collect()));
        for (label, members) in rows {
            let (raw, _) = measure(&plain, &members);
            let (compressed, lz4_ns) = measure(&lz4(0, None), &members);
            let (with_dict, dict_ns) = measure(&lz4(0, Some(dictionary.clone())), &members);
            let ratio = |bytes: usize| raw as f64 / bytes.max(1) as f64;
            println!(
                "| {label} | {} | {raw} B (1.00) | {compressed} B ({:.2}) | {with_dict} B ({:.2}) | {lz4_ns:.0} | {dict_ns:.0} |",
                members.len(),
                ratio(compressed),
                ratio(with_dict),
            );
        }
        let all: Vec<&Frame> = frames.iter().collect();
        let (raw, _) = measure(&plain, &all);
        let (policy, _) = measure(
            &lz4(Compression::DEFAULT_THRESHOLD, Some(dictionary.clone())),
            &all,
        );
        println!(
            "\nWith the default threshold ({} B) and the dictionary: {raw} B → {policy} B ({:.2}).",
            Compression::DEFAULT_THRESHOLD,
            raw as f64 / policy as f64
        );
    }
    Ok(())
}
