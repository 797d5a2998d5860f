//! The crate's error type, split by boundary so callers can branch on who caused it.

use std::time::Duration;

/// Any failure of the push crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// Configuration is unusable (bad URL, key, certificate…): fix the config, don't retry.
    #[error("push configuration: {0}")]
    Config(String),
    /// The notification was refused locally, before anything was sent.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Provider credentials could not be produced or were refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// TCP or TLS connection to the provider failed.
    #[error("connect to {host}: {source}")]
    Connect {
        /// `host:port` being dialled.
        host: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The HTTP/2 connection or stream failed mid-request.
    #[error("http/2 to provider: {0}")]
    Http(#[from] hyper::Error),
    /// The provider did not answer within the request time-out.
    #[error("provider request timed out after {0:?}")]
    Timeout(Duration),
    /// The durable queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The queue is full: the push was shed rather than letting the queue grow.
    #[error("push queue full ({capacity} pending): push shed")]
    Shed {
        /// The configured queue capacity.
        capacity: usize,
    },
    /// No provider is configured for this app and platform.
    #[error("no {platform} provider configured for app {app:?}")]
    NoRoute {
        /// App id of the request.
        app: String,
        /// Platform of the device.
        platform: &'static str,
    },
    /// The dispatcher has shut down.
    #[error("push dispatcher is shut down")]
    Closed,
}

impl PushError {
    /// Whether the failure happened on the way to the provider (connection, stream, time-out),
    /// so the same request may succeed on a new attempt.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Http(_) | Self::Timeout(_)
        )
    }
}

/// A notification refused before sending: retrying it cannot help.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadError {
    /// The encoded payload exceeds the provider's limit.
    #[error("payload is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// Provider limit in bytes.
        limit: usize,
    },
    /// `apns-collapse-id` longer than 64 bytes.
    #[error("collapse id is {0} bytes, over the 64-byte limit")]
    CollapseIdTooLong(usize),
    /// A field failed validation (device token, apns-id, topic…).
    #[error("invalid {field}: {why}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// JSON encoding failed.
    #[error("payload encoding: {0}")]
    Encode(String),
}

/// Provider credentials could not be minted or were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A key could not be loaded or used to sign.
    #[error("signing key: {0}")]
    Key(String),
    /// The OAuth2 token endpoint refused the assertion or answered nonsense.
    #[error("token endpoint answered {status}: {body}")]
    TokenEndpoint {
        /// HTTP status.
        status: u16,
        /// Body, truncated.
        body: String,
    },
}

/// The durable queue failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The embedded database failed.
    #[error("queue database: {0}")]
    Db(String),
    /// A stored record could not be decoded.
    #[error("queue record {id}: {why}")]
    Corrupt {
        /// Record id.
        id: u64,
        /// Decoder error.
        why: String,
    },
    /// The queue's writer thread has stopped (the queue was dropped or could not commit).
    #[error("queue writer stopped")]
    Stopped,
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for QueueError {
            fn from(e: $t) -> Self {
                Self::Db(e.to_string())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
