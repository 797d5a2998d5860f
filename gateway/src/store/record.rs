//! The stored forms of a session's state, as protobuf messages (prost derive, no `.proto`
//! file: they never cross the wire, and protobuf lets a later version add fields).

use imgate_codec::{Deliver, Receipt};

/// A session's identity and resume credentials, written once when it opens.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) secret: Vec<u8>,
    #[prost(string, tag = "2")]
    pub(crate) app: String,
    #[prost(string, tag = "3")]
    pub(crate) user: String,
    #[prost(string, tag = "4")]
    pub(crate) device: String,
    #[prost(int32, tag = "5")]
    pub(crate) platform: i32,
    /// When the session opened, ms since the Unix epoch (the newest of a device's sessions
    /// wins if a crash left two).
    #[prost(uint64, tag = "6")]
    pub(crate) opened_at_ms: u64,
    /// The outbox overflowed: a resume would leave a hole, so it is refused.
    #[prost(bool, tag = "7")]
    pub(crate) overflowed: bool,
}

/// One unacknowledged message: the frame as the client will get it, and how to push it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OutboxRecord {
    #[prost(message, optional, tag = "1")]
    pub(crate) deliver: Option<Deliver>,
    #[prost(message, optional, tag = "2")]
    pub(crate) push: Option<PushRecord>,
}

/// [`crate::deliver::PushOptions`] as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PushRecord {
    #[prost(bool, tag = "1")]
    pub(crate) has_alert: bool,
    #[prost(string, tag = "2")]
    pub(crate) title: String,
    #[prost(string, tag = "3")]
    pub(crate) body: String,
    #[prost(string, optional, tag = "4")]
    pub(crate) collapse_id: Option<String>,
    #[prost(uint32, tag = "5")]
    pub(crate) ttl_secs: u32,
    #[prost(string, repeated, tag = "6")]
    pub(crate) data_keys: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub(crate) data_values: Vec<String>,
}

/// One remembered upstream receipt (a slot of the session's bounded de-duplication ring).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReceiptRecord {
    /// The receipt's place in the order the session answered requests.
    #[prost(uint64, tag = "1")]
    pub(crate) ordinal: u64,
    /// The session's forgetting point when it was answered.
    #[prost(uint64, tag = "2")]
    pub(crate) forgotten_up_to: u64,
    #[prost(message, optional, tag = "3")]
    pub(crate) receipt: Option<Receipt>,
}

impl From<&crate::deliver::PushOptions> for PushRecord {
    fn from(options: &crate::deliver::PushOptions) -> Self {
        let (has_alert, title, body) = match &options.alert {
            Some(alert) => (true, alert.title.to_string(), alert.body.to_string()),
            None => (false, String::new(), String::new()),
        };
        let (data_keys, data_values) = options.data.iter().cloned().unzip();
        Self {
            has_alert,
            title,
            body,
            collapse_id: options.collapse_id.clone(),
            ttl_secs: options.ttl_secs,
            data_keys,
            data_values,
        }
    }
}

impl From<PushRecord> for crate::deliver::PushOptions {
    fn from(record: PushRecord) -> Self {
        Self {
            alert: record.has_alert.then(|| crate::deliver::PushAlert {
                title: record.title.into(),
                body: record.body.into(),
            }),
            collapse_id: record.collapse_id,
            ttl_secs: record.ttl_secs,
            data: record
                .data_keys
                .into_iter()
                .zip(record.data_values)
                .collect(),
        }
    }
}
