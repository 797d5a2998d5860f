//! The policy's memory on disk: message options, push de-duplication marks, acknowledgements
//! and unread badges, kept as records beside the push queue ([`PushQueue::put_record`]), so
//! they are written in order with the pushes they describe and survive a restart.
//!
//! Records: `m` + message id (8 bytes, big-endian) → [`MessageRecord`]; `u` + user id → the
//! user's unacknowledged message ids. JSON, small, versioned by field names.

use std::sync::Arc;
use std::time::Duration;

use imgate_push::{PushQueue, QueueError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::state::{Dirty, Entry, PolicyState};
use crate::deliver::{PushAlert, PushOptions};
use crate::ids::{MessageId, UserId};

#[derive(Serialize, Deserialize)]
struct MessageRecord {
    /// Wall-clock ms when the message was remembered (its age survives the restart).
    at_ms: u64,
    alert: Option<(String, String)>,
    collapse_id: Option<String>,
    ttl_secs: u32,
    data: Vec<(String, String)>,
    pushed: Vec<String>,
    acked: Vec<String>,
}

fn message_key(id: MessageId) -> Vec<u8> {
    let mut key = vec![b'm'];
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

fn unread_key(user: &UserId) -> Vec<u8> {
    let mut key = vec![b'u'];
    key.extend_from_slice(user.as_str().as_bytes());
    key
}

fn encode(entry: &Entry, now: Instant, wall_now_ms: u64) -> Vec<u8> {
    let age = u64::try_from(now.saturating_duration_since(entry.at).as_millis()).unwrap_or(0);
    let options = &entry.options;
    let record = MessageRecord {
        at_ms: wall_now_ms.saturating_sub(age),
        alert: options
            .alert
            .as_ref()
            .map(|a| (a.title.to_string(), a.body.to_string())),
        collapse_id: options.collapse_id.clone(),
        ttl_secs: options.ttl_secs,
        data: options.data.clone(),
        pushed: entry.pushed_tokens.iter().map(|t| t.to_string()).collect(),
        acked: entry.acked.iter().map(|u| u.to_string()).collect(),
    };
    serde_json::to_vec(&record).unwrap_or_default()
}

fn decode(bytes: &[u8], now: Instant, wall_now_ms: u64) -> Option<Entry> {
    let record: MessageRecord = serde_json::from_slice(bytes).ok()?;
    let age = Duration::from_millis(wall_now_ms.saturating_sub(record.at_ms));
    Some(Entry {
        options: Arc::new(PushOptions {
            alert: record.alert.map(|(title, body)| PushAlert {
                title: title.into(),
                body: body.into(),
            }),
            collapse_id: record.collapse_id,
            ttl_secs: record.ttl_secs,
            data: record.data,
        }),
        // A message older than this process counts as remembered at its start.
        at: now.checked_sub(age).unwrap_or(now),
        pushed_tokens: record.pushed.into_iter().map(Arc::from).collect(),
        acked: record.acked.into_iter().map(UserId::new).collect(),
    })
}

/// Writes what changed.
pub(crate) fn write(
    queue: &dyn PushQueue,
    dirty: Dirty,
    now: Instant,
    wall_now_ms: u64,
) -> Result<(), QueueError> {
    for (id, entry) in dirty.messages {
        let value = entry.map(|e| encode(&e, now, wall_now_ms));
        queue.put_record(&message_key(id), value.as_deref())?;
    }
    for (user, ids) in dirty.unread {
        let value = (!ids.is_empty())
            .then(|| serde_json::to_vec(&ids.iter().map(|id| id.0).collect::<Vec<_>>()))
            .transpose()
            .unwrap_or_default();
        queue.put_record(&unread_key(&user), value.as_deref())?;
    }
    Ok(())
}

/// Reads the records of earlier runs back into `state`; returns (messages, users) restored.
/// A record that does not decode is skipped (and logged): a badge may then be low, nothing
/// else is affected.
pub(crate) fn restore(
    queue: &dyn PushQueue,
    state: &mut PolicyState,
    now: Instant,
    wall_now_ms: u64,
) -> Result<(usize, usize), QueueError> {
    let (mut messages, mut users) = (0, 0);
    for (key, value) in queue.records()? {
        match key.split_first() {
            Some((b'm', id)) => {
                let id = <[u8; 8]>::try_from(id).ok().map(u64::from_be_bytes);
                match (id, decode(&value, now, wall_now_ms)) {
                    (Some(id), Some(entry)) => {
                        state.restore_message(MessageId(id), entry);
                        messages += 1;
                    }
                    _ => tracing::warn!(
                        len = value.len(),
                        "push policy: undecodable message record skipped"
                    ),
                }
            }
            Some((b'u', user)) => {
                let user = std::str::from_utf8(user).ok().map(UserId::new);
                let ids: Option<Vec<u64>> = serde_json::from_slice(&value).ok();
                match (user, ids) {
                    (Some(user), Some(ids)) => {
                        state.restore_unread(user, ids.into_iter().map(MessageId));
                        users += 1;
                    }
                    _ => tracing::warn!("push policy: undecodable badge record skipped"),
                }
            }
            _ => tracing::warn!("push policy: unknown record skipped"),
        }
    }
    Ok((messages, users))
}
