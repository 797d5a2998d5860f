//! The net effect of a log segment: what its changes leave behind once later changes have
//! cancelled earlier ones. Checkpoints write only this to redb, so a message delivered and
//! acknowledged within one segment never touches the B-tree, and a session's receipts cost
//! at most one row per slot however often the slot was reused.

use std::collections::BTreeMap;

use hashbrown::HashMap;

use super::Change;
use crate::ids::SessionId;

/// Changes folded per session, in a form that replays to the same state.
#[derive(Debug, Default)]
pub(super) struct Net {
    sessions: HashMap<u64, Pending>,
    folded: usize,
}

/// One session's part of a segment.
#[derive(Debug, Default)]
struct Pending {
    /// Rows stored before this segment must go: the session ended here (and perhaps its id
    /// was opened again afterwards, which needs a collision of 64 random bits).
    ends_stored: bool,
    /// Ended in this segment: everything after is a change that raced the end.
    ended: bool,
    /// `Change::Opened`, when the session began in this segment.
    opened: Option<Change>,
    acked: Option<u64>,
    /// `Change::Delivered` above the ack point, by seq.
    outbox: BTreeMap<u64, Change>,
    /// The latest `Change::Answered` per slot.
    receipts: HashMap<u64, Change>,
    overflowed: bool,
}

impl Net {
    /// Folds `change` in after everything folded so far.
    pub(super) fn fold(&mut self, change: Change) {
        self.folded += 1;
        let session = session_of(&change);
        let pending = self.sessions.entry(session.0).or_default();
        if pending.ended && !matches!(change, Change::Opened { .. }) {
            return;
        }
        match change {
            Change::Opened { .. } => {
                *pending = Pending {
                    ends_stored: pending.ends_stored,
                    opened: Some(change),
                    ..Pending::default()
                };
            }
            Change::Delivered { ref deliver, .. } => {
                if pending.acked.is_none_or(|acked| deliver.seq > acked) {
                    pending.outbox.insert(deliver.seq, change);
                }
            }
            Change::Acked { seq, .. } => {
                if pending.acked.is_none_or(|acked| seq > acked) {
                    pending.acked = Some(seq);
                    // Acks release the oldest messages: pop them rather than split the map.
                    while let Some(oldest) = pending.outbox.first_entry()
                        && *oldest.key() <= seq
                    {
                        oldest.remove();
                    }
                }
            }
            Change::Answered { ref mark, .. } => {
                pending.receipts.insert(mark.slot, change);
            }
            Change::Overflowed { .. } => pending.overflowed = true,
            Change::Ended { .. } => {
                // A session opened in this segment has no stored rows of its own.
                let ends_stored = pending.ends_stored || pending.opened.is_none();
                *pending = Pending {
                    ends_stored,
                    ended: true,
                    ..Pending::default()
                };
            }
        }
    }

    /// Nothing folded since the last checkpoint.
    pub(super) fn is_empty(&self) -> bool {
        self.folded == 0
    }

    /// Changes folded (before netting).
    pub(super) fn folded(&self) -> usize {
        self.folded
    }

    /// The changes that leave the store as the folded ones would, in an order that
    /// replays correctly.
    pub(super) fn into_changes(self) -> Vec<Change> {
        let mut changes = Vec::new();
        for (id, pending) in self.sessions {
            let session = SessionId(id);
            if pending.ends_stored {
                changes.push(Change::Ended { session });
            }
            if pending.ended {
                continue;
            }
            changes.extend(pending.opened);
            if let Some(seq) = pending.acked {
                changes.push(Change::Acked { session, seq });
            }
            changes.extend(pending.outbox.into_values());
            changes.extend(pending.receipts.into_values());
            if pending.overflowed {
                changes.push(Change::Overflowed { session });
            }
        }
        changes
    }
}

fn session_of(change: &Change) -> SessionId {
    match change {
        Change::Opened { session, .. }
        | Change::Delivered { session, .. }
        | Change::Acked { session, .. }
        | Change::Answered { session, .. }
        | Change::Overflowed { session }
        | Change::Ended { session } => *session,
    }
}
