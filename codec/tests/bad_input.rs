//! One test per kind of bad input: each must produce its own `CodecError` variant and close
//! code, without panicking and without allocating beyond the frame limit.
#![allow(clippy::unwrap_used)] // reason: test helpers; a panic is a test failure

use bytes::{BufMut, Bytes, BytesMut};
use imgate_codec::{
    CloseCode, CodecError, Compression, Deliver, Dictionary, Frame, FrameDecoder, FrameEncoder,
    flags,
};

const LIMIT: usize = 64 * 1024;

fn decoder() -> FrameDecoder {
    FrameDecoder::new(LIMIT)
}

/// `length || flags || body` as it travels on a byte stream.
fn stream_frame(flag_bits: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::try_from(body.len() + 1).unwrap());
    buf.put_u8(flag_bits);
    buf.put_slice(body);
    buf
}

/// `flags || body` as one WebSocket message.
fn message(flag_bits: u8, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(flag_bits);
    buf.put_slice(body);
    buf.freeze()
}

/// Decodes `flags || body` through both framings and checks they agree.
fn decode_both(decoder: &FrameDecoder, flag_bits: u8, body: &[u8]) -> Result<Frame, CodecError> {
    let from_message = decoder.decode_message(message(flag_bits, body));
    let mut stream = stream_frame(flag_bits, body);
    let from_stream = decoder
        .decode_stream(&mut stream)
        .map(|frame| frame.unwrap());
    assert_eq!(
        format!("{from_message:?}"),
        format!("{from_stream:?}"),
        "stream and message framing disagree"
    );
    from_message
}

fn compressed_body(dictionary: Option<&Dictionary>, raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(dict) = dictionary {
        body.extend_from_slice(&dict.id().0.to_be_bytes());
    }
    body.extend_from_slice(&u32::try_from(raw.len()).unwrap().to_le_bytes());
    body.extend_from_slice(&match dictionary {
        Some(dict) => lz4_flex::block::compress_with_dict(raw, dict.content()),
        None => lz4_flex::block::compress(raw),
    });
    body
}

fn sample_frame() -> Frame {
    Deliver {
        seq: 9,
        payload: Bytes::from(r#"{"type":"text","text":"hello hello hello"}"#.repeat(8)),
        ..Default::default()
    }
    .into()
}

#[test]
fn declared_length_above_limit_is_rejected_before_allocating() {
    let mut buf = BytesMut::with_capacity(16);
    buf.put_u32(u32::MAX);
    buf.put_slice(b"abc");
    let capacity = buf.capacity();
    let err = decoder().decode_stream(&mut buf).unwrap_err();
    assert!(
        matches!(err, CodecError::FrameTooLarge { declared, limit } if declared == u32::MAX as usize && limit == LIMIT),
        "{err:?}"
    );
    assert_eq!(err.close_code(), CloseCode::FRAME_TOO_LARGE);
    assert_eq!(
        buf.capacity(),
        capacity,
        "the buffer grew towards the declared size"
    );

    // Just one byte over the limit is enough.
    let mut buf = BytesMut::with_capacity(16);
    buf.put_u32(u32::try_from(LIMIT + 1).unwrap());
    let capacity = buf.capacity();
    assert!(matches!(
        decoder().decode_stream(&mut buf),
        Err(CodecError::FrameTooLarge { .. })
    ));
    assert_eq!(buf.capacity(), capacity);
}

#[test]
fn declared_length_at_the_limit_reserves_at_most_the_limit() {
    let mut buf = BytesMut::new();
    buf.put_u32(u32::try_from(LIMIT).unwrap());
    assert!(decoder().decode_stream(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() >= 4 + LIMIT,
        "a partial frame reserves room for itself"
    );
    assert!(
        buf.capacity() <= 2 * (4 + LIMIT),
        "reserved far beyond the limit"
    );
}

#[test]
fn websocket_message_above_limit_is_rejected() {
    let err = decoder()
        .decode_message(Bytes::from(vec![0; LIMIT + 1]))
        .unwrap_err();
    assert!(matches!(err, CodecError::FrameTooLarge { declared, .. } if declared == LIMIT + 1));
    assert_eq!(err.close_code(), CloseCode::FRAME_TOO_LARGE);
}

#[test]
fn decompression_bomb_is_rejected_before_decompressing() {
    // The block is garbage: had the decoder tried to decompress it, the error would be
    // `Decompress`, not `DecompressedTooLarge`.
    let mut body = u32::try_from(LIMIT).unwrap().to_le_bytes().to_vec();
    body.extend_from_slice(&[0xFF; 32]);
    let err = decode_both(&decoder(), flags::LZ4, &body).unwrap_err();
    assert!(
        matches!(err, CodecError::DecompressedTooLarge { declared, limit } if declared == LIMIT && limit == LIMIT - 1),
        "{err:?}"
    );
    assert_eq!(err.close_code(), CloseCode::COMPRESSION_ERROR);

    // The largest size a real compressor would declare for a tiny block: 4 GiB.
    let mut body = u32::MAX.to_le_bytes().to_vec();
    body.extend_from_slice(&[0x00]);
    assert!(matches!(
        decode_both(&decoder(), flags::LZ4, &body),
        Err(CodecError::DecompressedTooLarge { .. })
    ));
}

#[test]
fn frame_that_fits_only_compressed_is_rejected() {
    // A valid compressed frame whose uncompressed body is over the limit: the limit applies
    // to the uncompressed size.
    let raw = vec![b'a'; LIMIT];
    let body = compressed_body(None, &raw);
    assert!(body.len() < 1024);
    assert!(matches!(
        decode_both(&decoder(), flags::LZ4, &body),
        Err(CodecError::DecompressedTooLarge { .. })
    ));
}

#[test]
fn truncated_stream_is_an_error_at_eof() {
    let mut full = BytesMut::new();
    FrameEncoder::default()
        .encode_stream(&sample_frame(), &mut full)
        .unwrap();
    for cut in [1, 3, 4, 5, full.len() - 1] {
        let mut buf = BytesMut::from(&full[..cut]);
        assert!(
            decoder().decode_stream(&mut buf).unwrap().is_none(),
            "cut {cut}"
        );
        let err = decoder().decode_stream_eof(&mut buf).unwrap_err();
        assert!(
            matches!(err, CodecError::UnexpectedEof(n) if n == cut),
            "cut {cut}: {err:?}"
        );
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
    let mut empty = BytesMut::new();
    assert!(decoder().decode_stream_eof(&mut empty).unwrap().is_none());
}

#[test]
fn garbage_is_rejected() {
    // An HTTP request on the raw TCP port: "GET " reads as a 1.2 GB length.
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"[..]);
    let err = decoder().decode_stream(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::FrameTooLarge {
                declared: 0x4745_5420,
                ..
            }
        ),
        "{err:?}"
    );

    // A TLS ClientHello on the plain TCP port: 0x16030100 is over any sane limit too.
    let mut buf = BytesMut::from(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01][..]);
    assert!(matches!(
        decoder().decode_stream(&mut buf),
        Err(CodecError::FrameTooLarge { .. })
    ));

    // Garbage that fits the limit ends as invalid protobuf.
    let err = decode_both(&decoder(), 0, &[0xFF; 40]).unwrap_err();
    assert!(matches!(err, CodecError::Protobuf(_)), "{err:?}");
}

#[test]
fn unknown_flag_bits_are_rejected() {
    for bits in [0x04, 0x08, 0x10, 0x80, 0xFF, 0x05] {
        let err = decode_both(&decoder(), bits, b"\x22\x00").unwrap_err();
        assert!(
            matches!(err, CodecError::UnknownFlags(b) if b == bits),
            "{bits:#04x}: {err:?}"
        );
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn dictionary_bit_without_lz4_is_rejected() {
    let dict = Dictionary::builtin();
    let decoder = decoder().with_dictionary(Some(dict.clone()));
    let err = decode_both(
        &decoder,
        flags::DICTIONARY,
        &compressed_body(Some(&dict), b"x"),
    )
    .unwrap_err();
    assert!(
        matches!(err, CodecError::UnknownFlags(flags::DICTIONARY)),
        "{err:?}"
    );
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn unknown_dictionary_id_is_rejected() {
    let raw = prost::Message::encode_to_vec(&sample_frame());
    let dict = Dictionary::builtin();
    let both = flags::LZ4 | flags::DICTIONARY;

    // An id that names nothing.
    let mut body = 0xDEAD_BEEF_u32.to_be_bytes().to_vec();
    body.extend_from_slice(&compressed_body(None, &raw));
    let err = decode_both(&decoder().with_dictionary(Some(dict.clone())), both, &body).unwrap_err();
    assert!(
        matches!(err, CodecError::UnknownDictionary(0xDEAD_BEEF)),
        "{err:?}"
    );
    assert_eq!(err.close_code(), CloseCode::COMPRESSION_ERROR);

    // Id 0 means "no dictionary" and is never valid with the dictionary bit.
    let mut body = 0_u32.to_be_bytes().to_vec();
    body.extend_from_slice(&compressed_body(None, &raw));
    assert!(matches!(
        decode_both(&decoder().with_dictionary(Some(dict.clone())), both, &body),
        Err(CodecError::UnknownDictionary(0))
    ));

    // A real dictionary, correctly used, but not the one this decoder was configured with.
    let other = Dictionary::new(Bytes::from_static(b"some other perfectly real dictionary"));
    let body = compressed_body(Some(&other), &raw);
    let err = decode_both(&decoder().with_dictionary(Some(dict.clone())), both, &body).unwrap_err();
    assert!(
        matches!(err, CodecError::UnknownDictionary(id) if id == other.id().0),
        "{err:?}"
    );

    // The builtin dictionary, but this decoder negotiated none.
    let body = compressed_body(Some(&dict), &raw);
    let err = decode_both(&decoder(), both, &body).unwrap_err();
    assert!(
        matches!(err, CodecError::UnknownDictionary(id) if id == dict.id().0),
        "{err:?}"
    );

    // Sanity: the same body decodes with the right configuration.
    let decoded = decode_both(&decoder().with_dictionary(Some(dict)), both, &body).unwrap();
    assert_eq!(decoded, sample_frame());
}

#[test]
fn truncated_compression_headers_are_rejected() {
    let err = decode_both(&decoder(), flags::LZ4, &[0x10, 0x00]).unwrap_err();
    assert!(
        matches!(err, CodecError::Truncated("uncompressed size")),
        "{err:?}"
    );
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);

    let dict = Dictionary::builtin();
    let decoder = decoder().with_dictionary(Some(dict));
    let err = decode_both(&decoder, flags::LZ4 | flags::DICTIONARY, &[0xAB, 0xCD]).unwrap_err();
    assert!(
        matches!(err, CodecError::Truncated("dictionary id")),
        "{err:?}"
    );
}

#[test]
fn corrupt_lz4_block_is_rejected() {
    let raw = prost::Message::encode_to_vec(&sample_frame());
    let mut body = compressed_body(None, &raw);
    // Point the first match far before the start of the output.
    let len = body.len();
    body.truncate(len / 2);
    body.extend_from_slice(&[0x0F, 0xFF, 0xFF, 0xFF]);
    let err = decode_both(&decoder(), flags::LZ4, &body).unwrap_err();
    assert!(matches!(err, CodecError::Decompress(_)), "{err:?}");
    assert_eq!(err.close_code(), CloseCode::COMPRESSION_ERROR);

    // A match reaching back into a dictionary the frame did not use.
    let dict = Dictionary::new(Bytes::from_static(br#"{"type":"text","text":"hello"#));
    let with_dict = lz4_flex::block::compress_with_dict(&raw, dict.content());
    let mut body = u32::try_from(raw.len()).unwrap().to_le_bytes().to_vec();
    body.extend_from_slice(&with_dict);
    assert!(matches!(
        decode_both(&decoder(), flags::LZ4, &body),
        Err(CodecError::Decompress(_))
    ));
}

#[test]
fn declared_size_mismatch_is_rejected() {
    let raw = prost::Message::encode_to_vec(&sample_frame());
    let mut body = compressed_body(None, &raw);
    let declared = raw.len() + 10;
    body[..4].copy_from_slice(&u32::try_from(declared).unwrap().to_le_bytes());
    let err = decode_both(&decoder(), flags::LZ4, &body).unwrap_err();
    assert!(
        matches!(err, CodecError::DecompressedSizeMismatch { declared: d, actual } if d == declared && actual == raw.len()),
        "{err:?}"
    );
    assert_eq!(err.close_code(), CloseCode::COMPRESSION_ERROR);
}

#[test]
fn invalid_protobuf_is_rejected() {
    // Field 6 (deliver), length-delimited, claims 100 bytes but has 2.
    let err = decode_both(&decoder(), 0, &[0x32, 100, 0x08, 0x01]).unwrap_err();
    assert!(matches!(err, CodecError::Protobuf(_)), "{err:?}");
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);

    // Wire type 7 does not exist.
    assert!(matches!(
        decode_both(&decoder(), 0, &[0x0F]),
        Err(CodecError::Protobuf(_))
    ));

    // Invalid protobuf inside a valid LZ4 block is reported as protobuf, not compression.
    let body = compressed_body(None, &[0x32, 100, 0x08, 0x01]);
    assert!(matches!(
        decode_both(&decoder(), flags::LZ4, &body),
        Err(CodecError::Protobuf(_))
    ));
}

#[test]
fn empty_frame_is_rejected() {
    let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
    let err = decoder().decode_stream(&mut buf).unwrap_err();
    assert!(matches!(err, CodecError::EmptyFrame), "{err:?}");
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);

    let err = decoder().decode_message(Bytes::new()).unwrap_err();
    assert!(matches!(err, CodecError::EmptyFrame), "{err:?}");
}

#[test]
fn frame_without_kind_is_rejected() {
    // Just the flags byte: an empty `Frame`.
    let err = decode_both(&decoder(), 0, &[]).unwrap_err();
    assert!(matches!(err, CodecError::MissingKind), "{err:?}");
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);

    // A kind from a future version (field 99): skipped as unknown, so no kind is left.
    let err = decode_both(&decoder(), 0, &[0x9A, 0x06, 0x02, 0x08, 0x01]).unwrap_err();
    assert!(matches!(err, CodecError::MissingKind), "{err:?}");

    // Compressed to nothing.
    let err = decode_both(&decoder(), flags::LZ4, &compressed_body(None, &[])).unwrap_err();
    assert!(matches!(err, CodecError::MissingKind), "{err:?}");
}

#[test]
fn encoder_refuses_frames_over_the_peer_limit() {
    let encoder = FrameEncoder::new(100);
    let err = encoder.encode_message(&sample_frame()).unwrap_err();
    assert!(
        matches!(err, CodecError::FrameTooLarge { limit: 100, .. }),
        "{err:?}"
    );
    // Even when compression would make it fit: the peer's limit is on the uncompressed size.
    let encoder = encoder.with_compression(Some(Compression::default()));
    assert!(matches!(
        encoder.encode_message(&sample_frame()),
        Err(CodecError::FrameTooLarge { .. })
    ));
    let mut buf = BytesMut::new();
    assert!(encoder.encode_stream(&sample_frame(), &mut buf).is_err());
    assert!(buf.is_empty(), "a refused frame left bytes behind");
}

#[test]
fn an_error_leaves_later_frames_alone() {
    // The server closes after an error, but the decoder itself must not have consumed past
    // the bad frame: a frame rejected for its content is split off, the next one stays.
    let mut buf = stream_frame(0x80, b"\x22\x00");
    FrameEncoder::default()
        .encode_stream(&sample_frame(), &mut buf)
        .unwrap();
    assert!(decoder().decode_stream(&mut buf).is_err());
    assert_eq!(
        decoder().decode_stream(&mut buf).unwrap(),
        Some(sample_frame())
    );
}
