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

/// One [`crate::store::Change`] as the write-ahead log keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LogRecord {
    #[prost(uint64, tag = "1")]
    pub(crate) session: u64,
    #[prost(oneof = "LogChange", tags = "2, 3, 4, 5, 6, 7")]
    pub(crate) change: Option<LogChange>,
}

/// What changed, per [`crate::store::Change`] variant.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum LogChange {
    #[prost(message, tag = "2")]
    Opened(SessionRecord),
    #[prost(message, tag = "3")]
    Delivered(OutboxRecord),
    #[prost(uint64, tag = "4")]
    Acked(u64),
    #[prost(message, tag = "5")]
    Answered(AnsweredRecord),
    #[prost(bool, tag = "6")]
    Overflowed(bool),
    #[prost(bool, tag = "7")]
    Ended(bool),
}

/// An answered upstream request: its slot and the receipt.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AnsweredRecord {
    #[prost(uint64, tag = "1")]
    pub(crate) slot: u64,
    #[prost(message, optional, tag = "2")]
    pub(crate) receipt: Option<ReceiptRecord>,
}

impl SessionRecord {
    /// A fresh session's record.
    pub(crate) fn opened(
        secret: &crate::session::ResumeSecret,
        identity: &crate::session::Identity,
        opened_at_ms: u64,
    ) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
            app: identity.app.as_str().to_owned(),
            user: identity.user.as_str().to_owned(),
            device: identity.device.as_str().to_owned(),
            platform: identity.platform.into(),
            opened_at_ms,
            overflowed: false,
        }
    }

    /// The resume secret and the owner, if the record is well formed.
    pub(crate) fn credentials(
        &self,
    ) -> Result<(crate::session::ResumeSecret, crate::session::Identity), String> {
        let secret = <[u8; 16]>::try_from(self.secret.as_slice())
            .map_err(|_| format!("bad secret length {}", self.secret.len()))?;
        Ok((
            crate::session::ResumeSecret::from_bytes(secret),
            crate::session::Identity {
                app: crate::ids::AppId::new(self.app.clone()),
                user: crate::ids::UserId::new(self.user.clone()),
                device: crate::ids::DeviceId::new(self.device.clone()),
                platform: imgate_codec::Platform::try_from(self.platform).unwrap_or_default(),
            },
        ))
    }
}

impl From<&crate::store::Change> for LogRecord {
    fn from(change: &crate::store::Change) -> Self {
        use crate::store::Change;
        let (session, change) = match change {
            Change::Opened {
                session,
                secret,
                identity,
                opened_at_ms,
            } => (
                session,
                LogChange::Opened(SessionRecord::opened(secret, identity, *opened_at_ms)),
            ),
            Change::Delivered {
                session,
                deliver,
                push,
            } => (
                session,
                LogChange::Delivered(OutboxRecord {
                    deliver: Some(deliver.clone()),
                    push: push.as_deref().map(PushRecord::from),
                }),
            ),
            Change::Acked { session, seq } => (session, LogChange::Acked(*seq)),
            Change::Answered {
                session,
                mark,
                receipt,
            } => (
                session,
                LogChange::Answered(AnsweredRecord {
                    slot: mark.slot,
                    receipt: Some(ReceiptRecord {
                        ordinal: mark.ordinal,
                        forgotten_up_to: mark.forgotten_up_to,
                        receipt: Some(receipt.clone()),
                    }),
                }),
            ),
            Change::Overflowed { session } => (session, LogChange::Overflowed(true)),
            Change::Ended { session } => (session, LogChange::Ended(true)),
        };
        Self {
            session: session.0,
            change: Some(change),
        }
    }
}

impl TryFrom<LogRecord> for crate::store::Change {
    type Error = String;

    fn try_from(record: LogRecord) -> Result<Self, String> {
        let session = crate::ids::SessionId(record.session);
        Ok(match record.change.ok_or("a record without a change")? {
            LogChange::Opened(opened) => {
                let (secret, identity) = opened.credentials()?;
                Self::Opened {
                    session,
                    secret,
                    identity,
                    opened_at_ms: opened.opened_at_ms,
                }
            }
            LogChange::Delivered(outbox) => Self::Delivered {
                session,
                deliver: outbox.deliver.ok_or("a delivery without its frame")?,
                push: outbox
                    .push
                    .map(|push| std::sync::Arc::new(crate::deliver::PushOptions::from(push))),
            },
            LogChange::Acked(seq) => Self::Acked { session, seq },
            LogChange::Answered(answered) => {
                let stored = answered.receipt.ok_or("an answer without its receipt")?;
                Self::Answered {
                    session,
                    mark: crate::session::AnswerMark {
                        slot: answered.slot,
                        ordinal: stored.ordinal,
                        forgotten_up_to: stored.forgotten_up_to,
                    },
                    receipt: stored.receipt.ok_or("an answer without its receipt")?,
                }
            }
            LogChange::Overflowed(_) => Self::Overflowed { session },
            LogChange::Ended(_) => Self::Ended { session },
        })
    }
}

/// Appends `change` as a [`LogRecord`]'s bytes. A delivery, the most frequent change, is
/// encoded from its borrowed frame and push options (no copy of the payload, sender, room or
/// alert text); the rest go through [`LogRecord`].
pub(crate) fn encode_change(change: &crate::store::Change, buf: &mut Vec<u8>) {
    use prost::encoding::{self, WireType};
    match change {
        crate::store::Change::Delivered {
            session,
            deliver,
            push,
        } => {
            let push_len = push.as_deref().map(push_record_len);
            let outbox_len = encoding::message::encoded_len(1, deliver)
                + push_len.map_or(0, |len| delimited_len(2, len));
            encoding::uint64::encode(1, &session.0, buf);
            encoding::encode_key(3, WireType::LengthDelimited, buf);
            encoding::encode_varint(outbox_len as u64, buf);
            encoding::message::encode(1, deliver, buf);
            if let (Some(push), Some(len)) = (push.as_deref(), push_len) {
                encoding::encode_key(2, WireType::LengthDelimited, buf);
                encoding::encode_varint(len as u64, buf);
                encode_push_record(push, buf);
            }
        }
        other => {
            // A Vec grows as needed: encoding into one cannot run out of room.
            let _ = prost::Message::encode(&LogRecord::from(other), buf);
        }
    }
}

/// [`PushRecord::from`]`(push)`'s fields, encoded straight from `push`.
fn encode_push_record(push: &crate::deliver::PushOptions, buf: &mut Vec<u8>) {
    use prost::encoding;
    if let Some(alert) = &push.alert {
        encoding::bool::encode(1, &true, buf);
        put_str(2, &alert.title, buf);
        put_str(3, &alert.body, buf);
    }
    if let Some(collapse_id) = &push.collapse_id {
        put_str(4, collapse_id, buf);
    }
    if push.ttl_secs != 0 {
        encoding::uint32::encode(5, &push.ttl_secs, buf);
    }
    for (key, _) in &push.data {
        put_str(6, key, buf);
    }
    for (_, value) in &push.data {
        put_str(7, value, buf);
    }
}

fn push_record_len(push: &crate::deliver::PushOptions) -> usize {
    let alert = push.alert.as_ref().map_or(0, |alert| {
        2 + delimited_len(2, alert.title.len()) + delimited_len(3, alert.body.len())
    });
    let collapse = push
        .collapse_id
        .as_ref()
        .map_or(0, |id| delimited_len(4, id.len()));
    let ttl = if push.ttl_secs == 0 {
        0
    } else {
        prost::encoding::uint32::encoded_len(5, &push.ttl_secs)
    };
    let data: usize = push
        .data
        .iter()
        .map(|(key, value)| delimited_len(6, key.len()) + delimited_len(7, value.len()))
        .sum();
    alert + collapse + ttl + data
}

fn put_str(tag: u32, text: &str, buf: &mut Vec<u8>) {
    use prost::encoding::{self, WireType};
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(text.len() as u64, buf);
    buf.extend_from_slice(text.as_bytes());
}

/// Bytes of a length-delimited field of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::{LogRecord, encode_change};
    use crate::deliver::{PushAlert, PushOptions};
    use crate::ids::SessionId;
    use crate::store::Change;

    #[test]
    fn a_delivery_encoded_from_its_borrowed_frame_decodes_as_the_record_would() {
        let deliver = imgate_codec::Deliver {
            seq: 7,
            payload: bytes::Bytes::from_static(b"hello"),
            from: "alice".into(),
            room: "r1".into(),
            message_id: 99,
            sent_at_ms: 1_700_000_000_000,
        };
        let push = PushOptions {
            alert: Some(PushAlert {
                title: "alice".into(),
                body: "New message".into(),
            }),
            collapse_id: Some("c".into()),
            ttl_secs: 30,
            data: vec![("k".into(), "v".into())],
        };
        let silent = PushOptions::default();
        for (session, push) in [
            (0, None),
            (u64::MAX, Some(Arc::new(push))),
            (3, Some(Arc::new(silent))),
        ] {
            let change = Change::Delivered {
                session: SessionId(session),
                deliver: deliver.clone(),
                push,
            };
            let mut bytes = Vec::new();
            encode_change(&change, &mut bytes);
            let decoded = LogRecord::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(decoded, LogRecord::from(&change));
        }
    }
}
