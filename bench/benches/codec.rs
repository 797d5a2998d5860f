//! Codec micro-benchmarks: encode and decode a `Deliver` frame on a byte stream, uncompressed,
//! LZ4, and LZ4 with the built-in dictionary, for 60 B, 600 B and 16 KiB payloads.
//!
//! Every case runs twice, once reporting frames/s (`…/frames`) and once payload MB/s
//! (`…/bytes`): criterion 0.5 reports one throughput per benchmark.
//!
//! `cargo bench -p imgate-bench --bench codec -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // reason: criterion's macros generate undocumented public items
#![allow(clippy::unwrap_used)] // reason: benchmark set-up; a panic is a failed run

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use imgate_codec::{Compression, Deliver, Dictionary, Frame, FrameDecoder, FrameEncoder};

const SIZES: [(&str, usize); 3] = [("60B", 60), ("600B", 600), ("16KiB", 16 * 1024)];

/// Chat-like JSON text in several scripts, cut to `len` bytes: neither random (which LZ4
/// cannot shrink) nor one repeated byte (which it shrinks absurdly well).
fn payload(len: usize) -> Bytes {
    const LINES: &[&str] = &[
        r#"{"type":"text","text":"see you at 7 tonight? 🍕","mentions":[]}"#,
        r#"{"type":"text","text":"明天早上九点开会，别迟到","mentions":["u-1042"]}"#,
        r#"{"type":"text","text":"¿Dónde quedamos mañana por la tarde?","mentions":[]}"#,
        r#"{"type":"typing","state":"started","room":"general"}"#,
        r#"{"type":"text","text":"Привет! Как дела? Созвонимся позже.","mentions":[]}"#,
        r#"{"type":"text","text":"了解しました。よろしくお願いします 🙏","mentions":["u-77"]}"#,
        r#"{"type":"text","text":"مرحبا، هل وصلت الرسالة؟","mentions":[]}"#,
        r#"{"type":"image","url":"https://cdn.example.com/m/8f3a2c91.jpg","w":1080,"h":1350}"#,
    ];
    let mut out = Vec::with_capacity(len + 128);
    let mut i = 0_usize;
    while out.len() < len {
        out.extend_from_slice(LINES[i % LINES.len()].as_bytes());
        out.push(b'\n');
        // Vary the numbers so long payloads are not one period repeated.
        out.extend_from_slice(format!("{}", i.wrapping_mul(2_654_435_761) % 100_000).as_bytes());
        i += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}

fn deliver(len: usize) -> Frame {
    Deliver {
        seq: 123_456,
        payload: payload(len),
        from: "user-4711".into(),
        room: "room-42".into(),
        message_id: 987_654_321_012,
        sent_at_ms: 1_700_000_000_000,
    }
    .into()
}

fn modes() -> [(&'static str, Option<Compression>); 3] {
    [
        ("plain", None),
        ("lz4", Some(Compression::default())),
        (
            "lz4-dict",
            Some(Compression {
                dictionary: Some(Dictionary::builtin()),
                ..Compression::default()
            }),
        ),
    ]
}

/// Runs `run` once per throughput unit so both frames/s and MB/s are reported.
fn both_throughputs(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    payload_len: usize,
    mut run: impl FnMut(&mut criterion::Bencher<'_>),
) {
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("{name}/frames"), &mut run);
    group.throughput(Throughput::Bytes(payload_len as u64));
    group.bench_function(format!("{name}/bytes"), &mut run);
}

fn encode(c: &mut Criterion) {
    for (mode, compression) in modes() {
        let mut group = c.benchmark_group(format!("encode_stream/{mode}"));
        let encoder = FrameEncoder::default().with_compression(compression);
        for (size_name, size) in SIZES {
            let frame = deliver(size);
            let mut buf = BytesMut::with_capacity(2 * size + 64);
            both_throughputs(&mut group, size_name, size, |b| {
                b.iter(|| {
                    buf.clear();
                    encoder.encode_stream(black_box(&frame), &mut buf).unwrap();
                });
            });
        }
        group.finish();
    }
}

fn decode(c: &mut Criterion) {
    for (mode, compression) in modes() {
        let mut group = c.benchmark_group(format!("decode_stream/{mode}"));
        let dictionary = compression.as_ref().and_then(|c| c.dictionary.clone());
        let encoder = FrameEncoder::default().with_compression(compression);
        let decoder = FrameDecoder::default().with_dictionary(dictionary);
        for (size_name, size) in SIZES {
            let mut wire = BytesMut::new();
            encoder.encode_stream(&deliver(size), &mut wire).unwrap();
            both_throughputs(&mut group, size_name, size, |b| {
                // The read buffer is set up outside the timing, as a socket read would fill it.
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |mut buf| decoder.decode_stream(&mut buf).unwrap(),
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("decode_message/plain");
    let decoder = FrameDecoder::default();
    let message = FrameEncoder::default()
        .encode_message(&deliver(600))
        .unwrap();
    both_throughputs(&mut group, "600B", 600, |b| {
        b.iter(|| decoder.decode_message(black_box(message.clone())).unwrap());
    });
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
