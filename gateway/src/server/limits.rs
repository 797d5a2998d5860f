//! What a handshake negotiated, applied to the connection before its `Welcome` goes out: the
//! frame limit the app announces in `Welcome.max_frame` (enforced on the client's frames),
//! and compressed frames from the client only once compression was agreed (§3.3).

use imgate_codec::{Compression, Dictionary};
use imgate_transports::FrameReader;

use crate::app::App;

/// Sets the reader's limit and compression for the rest of the connection. Leaves the
/// listener's shared decoder alone (no per-connection copy) when nothing changes, as for
/// most connections.
pub(super) fn apply(reader: &mut FrameReader, app: &App, compression: Option<&Compression>) {
    let current = reader.decoder();
    let max_frame = current
        .max_frame()
        .min(usize::try_from(app.session.max_frame).unwrap_or(usize::MAX));
    if max_frame == current.max_frame() && compression.is_none() {
        return;
    }
    // Only the dictionary this server issued is ever accepted from the client.
    let dictionary = compression
        .and_then(|c| c.dictionary.as_ref())
        .map(|_| Dictionary::builtin());
    let decoder = reader.decoder_mut();
    *decoder = decoder
        .clone()
        .with_max_frame(max_frame)
        .with_compression(compression.is_some())
        .with_dictionary(dictionary);
}
