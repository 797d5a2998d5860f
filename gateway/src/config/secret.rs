//! Secrets written inline, or taken from an environment variable or a file, so a config
//! file can be shared without them.

use std::path::PathBuf;

use super::ConfigError;

/// The secret `key` names: `key` inline, `key_env` (a variable's value) or `key_file` (the
/// file's contents without the trailing newline); at most one of them.
pub(super) fn resolve(
    key: &str,
    inline: Option<&String>,
    env: Option<&String>,
    file: Option<&PathBuf>,
) -> Result<Option<String>, ConfigError> {
    match (inline, env, file) {
        (None, None, None) => Ok(None),
        (Some(secret), None, None) => Ok(Some(secret.clone())),
        (None, Some(var), None) => std::env::var(var)
            .map(Some)
            .map_err(|e| ConfigError(format!("{key}_env = {var:?}: {e}"))),
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| Some(text.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| ConfigError(format!("{key}_file = {}: {e}", path.display()))),
        _ => Err(ConfigError(format!(
            "give one of {key}, {key}_env and {key}_file"
        ))),
    }
}
