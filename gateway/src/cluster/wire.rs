//! Requests between nodes and their answers, as protobuf messages (prost derive: they
//! cross only between imgate nodes, and protobuf lets a later version add fields while a
//! cluster is upgraded node by node).

use bytes::Bytes;
use imgate_codec::Deliver;

use crate::store::record::{PushRecord, ReceiptRecord, SessionRecord};

/// Deliver a message to exactly these sessions of the receiving node.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DeliverRequest {
    #[prost(string, tag = "1")]
    pub(crate) app: String,
    #[prost(string, tag = "2")]
    pub(crate) user: String,
    /// The sessions the directory lists on the receiving node: no other gets the message.
    #[prost(uint64, repeated, tag = "3")]
    pub(crate) sessions: Vec<u64>,
    #[prost(uint64, tag = "4")]
    pub(crate) message_id: u64,
    #[prost(bytes = "bytes", tag = "5")]
    pub(crate) payload: Bytes,
    #[prost(string, optional, tag = "6")]
    pub(crate) from: Option<String>,
    #[prost(uint64, tag = "7")]
    pub(crate) sent_at_ms: u64,
    #[prost(message, optional, tag = "8")]
    pub(crate) push: Option<PushRecord>,
}

/// What the node did for each session it was asked to deliver to (a session it no longer
/// has is left out).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DeliverReply {
    #[prost(message, repeated, tag = "1")]
    pub(crate) devices: Vec<DeviceRecord>,
    /// The node could not take the message (e.g. the app is unknown there).
    #[prost(string, tag = "2")]
    pub(crate) error: String,
}

/// One device's outcome.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DeviceRecord {
    #[prost(uint64, tag = "1")]
    pub(crate) session: u64,
    #[prost(string, tag = "2")]
    pub(crate) device: String,
    /// [`OUTCOME_SENT`], [`OUTCOME_BUFFERED`] or [`OUTCOME_OFFLINE`].
    #[prost(uint32, tag = "3")]
    pub(crate) outcome: u32,
    #[prost(uint64, tag = "4")]
    pub(crate) seq: u64,
}

pub(crate) const OUTCOME_SENT: u32 = 1;
pub(crate) const OUTCOME_BUFFERED: u32 = 2;
pub(crate) const OUTCOME_OFFLINE: u32 = 3;

/// End the device's session: it logged in on the sending node.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TakeoverRequest {
    #[prost(string, tag = "1")]
    pub(crate) app: String,
    #[prost(string, tag = "2")]
    pub(crate) user: String,
    #[prost(string, tag = "3")]
    pub(crate) device: String,
    #[prost(uint64, tag = "4")]
    pub(crate) session: u64,
}

/// Whether a session was ended.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TakeoverReply {
    #[prost(bool, tag = "1")]
    pub(crate) ended: bool,
}

/// Hand a session over: its client resumes on the sending node.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReleaseRequest {
    #[prost(string, tag = "1")]
    pub(crate) app: String,
    #[prost(string, tag = "2")]
    pub(crate) user: String,
    #[prost(string, tag = "3")]
    pub(crate) device: String,
    #[prost(uint64, tag = "4")]
    pub(crate) session: u64,
    /// The secret the client presented: a node releases a session only to its owner.
    #[prost(bytes = "vec", tag = "5")]
    pub(crate) secret: Vec<u8>,
}

/// The released session, or why not.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReleaseReply {
    #[prost(message, optional, tag = "1")]
    pub(crate) session: Option<SessionSnapshot>,
    /// Why the session was not released (`ResumeRefused` as a number; 0 with a session).
    #[prost(int32, tag = "2")]
    pub(crate) refused: i32,
}

/// Everything a session's new owner restores it from.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionSnapshot {
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    #[prost(message, optional, tag = "2")]
    pub(crate) record: Option<SessionRecord>,
    #[prost(uint64, tag = "3")]
    pub(crate) acked: u64,
    #[prost(message, repeated, tag = "4")]
    pub(crate) outbox: Vec<Deliver>,
    #[prost(message, repeated, tag = "5")]
    pub(crate) receipts: Vec<ReceiptRecord>,
}

/// The sessions of a user held by the receiving node.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionsRequest {
    #[prost(string, tag = "1")]
    pub(crate) app: String,
    #[prost(string, tag = "2")]
    pub(crate) user: String,
}

/// The answer to a [`SessionsRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionsReply {
    #[prost(message, repeated, tag = "1")]
    pub(crate) sessions: Vec<SessionRecordInfo>,
}

/// One session as a lookup shows it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionRecordInfo {
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    #[prost(string, tag = "2")]
    pub(crate) device: String,
    #[prost(bool, tag = "3")]
    pub(crate) attached: bool,
    #[prost(uint64, tag = "4")]
    pub(crate) unacked: u64,
}
