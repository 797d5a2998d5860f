//! The most recent messages handed to the offline path as undelivered, for the admin
//! console (`GET /v1/undelivered`): a bounded ring, newest last, so an operator can see what
//! just failed to reach a device without grepping logs. Memory is fixed: at most
//! [`RECENT_UNDELIVERED`] entries, allocated only once something was undelivered.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::ids::{AppId, DeviceId, MessageId, UserId};
use crate::session::UndeliveredReason;

/// Entries kept.
pub const RECENT_UNDELIVERED: usize = 256;

/// One message that will not reach a device over a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndeliveredRecord {
    /// When it was handed over, ms since the Unix epoch.
    pub at_ms: u64,
    /// The app.
    pub app: AppId,
    /// The recipient.
    pub user: UserId,
    /// The device, when one session's messages were handed over.
    pub device: Option<DeviceId>,
    /// The message.
    pub message_id: MessageId,
    /// Why.
    pub reason: UndeliveredReason,
}

/// The ring itself.
#[derive(Debug, Default)]
pub(crate) struct RecentUndelivered {
    ring: Mutex<VecDeque<UndeliveredRecord>>,
}

impl RecentUndelivered {
    /// Records `records`, dropping the oldest beyond the bound.
    pub(crate) fn record(&self, records: impl IntoIterator<Item = UndeliveredRecord>) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        for record in records {
            if ring.len() == RECENT_UNDELIVERED {
                ring.pop_front();
            }
            ring.push_back(record);
        }
    }

    /// A copy, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<UndeliveredRecord> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> UndeliveredRecord {
        UndeliveredRecord {
            at_ms: n,
            app: AppId::new("a"),
            user: UserId::new("u"),
            device: None,
            message_id: MessageId(n),
            reason: UndeliveredReason::NoSession,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_entries_in_order() {
        let recent = RecentUndelivered::default();
        assert!(recent.snapshot().is_empty());
        let total = RECENT_UNDELIVERED as u64 + 10;
        recent.record((0..total).map(record));
        let kept = recent.snapshot();
        assert_eq!(kept.len(), RECENT_UNDELIVERED);
        assert_eq!(kept.first().map(|r| r.message_id), Some(MessageId(10)));
        assert_eq!(
            kept.last().map(|r| r.message_id),
            Some(MessageId(total - 1))
        );
    }
}
