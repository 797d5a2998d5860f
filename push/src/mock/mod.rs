//! Loopback mock APNs and FCM servers, for tests here and benches in other crates.
//!
//! Both bind `127.0.0.1:0`, verify what the real services verify (JWTs, headers, schema,
//! sizes), answer with the services' real error bodies, take per-device-token scripted
//! outcomes, record requests and count connections. They stop when dropped or on
//! `shutdown()`: dropping the handle aborts the accept loop and every connection task.

mod apns;
mod fcm;
mod keys;
mod server;
mod tls;

pub use apns::{ApnsRecord, ApnsReply, MockApns, MockApnsAuth, MockApnsConfig};
pub use fcm::{FcmRecord, FcmReply, MockFcm, MockFcmConfig};
pub use keys::{ApnsTestKey, RsaTestKey};
pub use tls::TestPki;

/// Decodes base64url, tolerating padding and the standard alphabet (some JOSE libraries emit
/// them and the real services appear to accept them).
pub(crate) fn b64_lenient(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let norm: String = s
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(norm)
        .ok()
}

/// Splits a compact JWS into (signing input, header JSON, claims JSON, base64url signature).
pub(crate) fn split_jwt(
    token: &str,
) -> Option<(&str, serde_json::Value, serde_json::Value, String)> {
    let (input, sig) = token.rsplit_once('.')?;
    let (h, c) = input.split_once('.')?;
    let header = serde_json::from_slice(&b64_lenient(h)?).ok()?;
    let claims = serde_json::from_slice(&b64_lenient(c)?).ok()?;
    let sig = sig
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    Some((input, header, claims, sig))
}
