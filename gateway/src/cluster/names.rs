//! NATS subjects and KV keys. Ids may hold any UTF-8, and subject tokens and keys may not
//! hold `.`, `*`, `>` or spaces, so ids are written in unpadded base64url.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ids::{AppId, UserId};

/// The directory's JetStream KV bucket.
pub(super) const DIRECTORY_BUCKET: &str = "ig_dir";

/// The directory key of `user` of `app`.
pub(super) fn user_key(app: &AppId, user: &UserId) -> String {
    format!(
        "u.{}.{}",
        URL_SAFE_NO_PAD.encode(app.as_str()),
        URL_SAFE_NO_PAD.encode(user.as_str())
    )
}

/// The subject `node` answers `verb` requests on.
pub(super) fn node_subject(node: &str, verb: &str) -> String {
    format!("ig.v1.node.{node}.{verb}")
}

/// Every request subject of `node`.
pub(super) fn node_wildcard(node: &str) -> String {
    format!("ig.v1.node.{node}.*")
}

/// Whether `name` can name a node: it is a subject token as it stands.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_dots_and_spaces_make_valid_keys() {
        let key = user_key(&AppId::new("chat.app"), &UserId::new("a b.c>*"));
        assert!(key.starts_with("u."));
        assert_eq!(key.matches('.').count(), 2);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
    }

    #[test]
    fn node_names_are_single_tokens() {
        assert!(valid_node_name("gw-1_a"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a.b"));
        assert!(!valid_node_name("a*"));
        assert!(!valid_node_name(&"x".repeat(65)));
    }
}
