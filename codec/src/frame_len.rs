//! How long a frame is as a peer's frame limit counts it, and the smallest limit a peer may
//! announce.

use prost::Message;

use crate::Deliver;

/// The smallest frame limit a client may announce in `Hello.max_frame` (other than 0, "the
/// default"). Every frame the server sends except `Deliver` fits in it; a `Deliver` that does
/// not fit the client's limit is never sent (protocol §12).
pub const MIN_MAX_FRAME: usize = 512;

/// The length (flags byte + uncompressed body) of `deliver` sent as a `Frame`, without
/// building the frame: what the peer's limit is checked against.
pub fn deliver_frame_len(deliver: &Deliver) -> usize {
    let body = deliver.encoded_len();
    // The flags byte, then `Frame.deliver` (field 6, length-delimited): a one-byte key.
    1 + 1 + prost::length_delimiter_len(body) + body
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::Frame;

    #[test]
    fn matches_the_encoded_frame() {
        for len in [0, 1, 100, 127, 128, 300, 16_383, 16_384, 70_000] {
            let deliver = Deliver {
                seq: u64::MAX,
                payload: Bytes::from(vec![7; len]),
                from: "alice".into(),
                room: "r".repeat(len % 300),
                message_id: 1 << 60,
                sent_at_ms: 1_700_000_000_000,
            };
            let frame = Frame::from(deliver.clone());
            assert_eq!(
                deliver_frame_len(&deliver),
                1 + frame.encoded_len(),
                "{len}"
            );
        }
    }
}
