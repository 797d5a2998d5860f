//! The unacknowledged downstream buffer: sequence numbers, transmission cursor, acks.
//!
//! Invariant: `entries` holds exactly the messages with `acked < seq < next_seq`, in order and
//! without gaps, so `entries[i].seq == acked + 1 + i`. It never holds more than the
//! configured count and bytes.

use std::collections::VecDeque;
use std::time::Duration;

use imgate_codec::Deliver;
use tokio::time::Instant;

use super::event::Undelivered;
use crate::ids::MessageId;

#[derive(Debug)]
struct Entry {
    deliver: Deliver,
    /// Since when the client could have had it: buffered for the attached connection, or
    /// the connection resumed (None: restored, not resumed yet). Its ack time-out counts
    /// from here whether it was transmitted or still waits behind a socket that takes
    /// nothing: a half-dead client with a full receive window is as overdue as one that
    /// received and never acknowledged.
    since: Option<Instant>,
}

/// Why a message did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// An ack for a sequence number the server never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckBeyondSent;

#[derive(Debug)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    /// Highest sequence number the client acknowledged.
    acked: u64,
    /// Next sequence number to transmit.
    cursor: u64,
    /// Messages with `seq < overdue_cursor` have had their ack time-out reported (or were acked).
    overdue_cursor: u64,
    /// Highest sequence number known to be durable: nothing above it is transmitted, so a
    /// client never holds a message a restart could forget. `u64::MAX` without a store
    /// (every message is durable as it is pushed).
    durable: u64,
}

impl Outbox {
    pub(crate) fn new(max_count: usize, max_bytes: usize, wait_for_store: bool) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
            acked: 0,
            cursor: 1,
            overdue_cursor: 1,
            durable: if wait_for_store { 0 } else { u64::MAX },
        }
    }

    /// An outbox as a store kept it: acknowledged up to `acked`, then `messages` (each with
    /// its `seq`, gap-free), all durable. Messages beyond the bounds are left out and
    /// returned (a restart must not make a session hold more than its limits allow).
    pub(crate) fn restore(
        max_count: usize,
        max_bytes: usize,
        wait_for_store: bool,
        acked: u64,
        messages: impl IntoIterator<Item = Deliver>,
    ) -> (Self, Vec<Deliver>) {
        let mut outbox = Self::new(max_count, max_bytes, wait_for_store);
        outbox.acked = acked;
        outbox.cursor = acked + 1;
        outbox.overdue_cursor = acked + 1;
        let mut rest = Vec::new();
        for deliver in messages {
            let fits = rest.is_empty()
                && deliver.seq == outbox.last_seq() + 1
                && outbox.entries.len() < outbox.max_count
                && outbox.bytes + deliver.payload.len() <= outbox.max_bytes;
            if fits {
                outbox.bytes += deliver.payload.len();
                outbox.entries.push_back(Entry {
                    deliver,
                    since: None,
                });
            } else {
                rest.push(deliver);
            }
        }
        outbox.mark_durable(outbox.last_seq());
        // Any of them may have reached the client before the restart: its resume may ack
        // up to the last (the resume rewinds the cursor to what it acknowledges).
        outbox.cursor = outbox.last_seq() + 1;
        (outbox, rest)
    }

    /// Messages up to `seq` are durable and may be transmitted.
    pub(crate) fn mark_durable(&mut self, seq: u64) {
        self.durable = self.durable.max(seq);
    }

    /// The buffered message with sequence number `seq`.
    pub(crate) fn get(&self, seq: u64) -> Option<&Deliver> {
        self.entry(seq).map(|e| &e.deliver)
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// The highest sequence number assigned so far.
    pub(crate) fn last_seq(&self) -> u64 {
        self.acked + self.entries.len() as u64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Assigns the next sequence number to `deliver` and buffers it (at `now`).
    pub(crate) fn push(&mut self, now: Instant, mut deliver: Deliver) -> Result<u64, Full> {
        let size = deliver.payload.len();
        if self.entries.len() >= self.max_count || self.bytes + size > self.max_bytes {
            return Err(Full);
        }
        let seq = self.last_seq() + 1;
        deliver.seq = seq;
        self.bytes += size;
        self.entries.push_back(Entry {
            deliver,
            since: Some(now),
        });
        Ok(seq)
    }

    /// Cumulative ack: releases every message up to `seq`; returns their ids.
    pub(crate) fn ack(&mut self, seq: u64) -> Result<Vec<MessageId>, AckBeyondSent> {
        if seq >= self.cursor && seq > self.acked {
            // The client cannot have received what was never transmitted.
            return Err(AckBeyondSent);
        }
        let mut released = Vec::new();
        while self.acked < seq {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= entry.deliver.payload.len();
            self.acked = entry.deliver.seq;
            released.push(MessageId(entry.deliver.message_id));
        }
        self.overdue_cursor = self.overdue_cursor.max(self.acked + 1);
        super::release_if_empty(&mut self.entries);
        Ok(released)
    }

    /// Buffer capacity in entries (for memory tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// The next message to transmit.
    pub(crate) fn next_transmit(&mut self) -> Option<Deliver> {
        if self.cursor > self.durable {
            return None;
        }
        let index = usize::try_from(self.cursor.checked_sub(self.acked + 1)?).ok()?;
        let entry = self.entries.get(index)?;
        self.cursor += 1;
        Some(entry.deliver.clone())
    }

    /// Messages transmitted and not yet acknowledged.
    pub(crate) fn in_flight(&self) -> u64 {
        self.cursor.saturating_sub(self.acked + 1)
    }

    /// Whether messages are waiting to be transmitted.
    pub(crate) fn has_untransmitted(&self) -> bool {
        self.cursor <= self.last_seq().min(self.durable)
    }

    /// Transmission restarts after `last_seq` (the client's resume point, already acked),
    /// on a connection resumed at `now`.
    pub(crate) fn rewind(&mut self, now: Instant) {
        self.cursor = self.acked + 1;
        for entry in &mut self.entries {
            entry.since = Some(now);
        }
    }

    /// Messages the client could have had for at least `timeout`, not acked and not
    /// reported before.
    pub(crate) fn take_overdue(&mut self, now: Instant, timeout: Duration) -> Vec<MessageId> {
        let mut overdue = Vec::new();
        while let Some(entry) = self.entry(self.overdue_cursor) {
            match entry.since {
                Some(since) if since + timeout <= now => {
                    overdue.push(MessageId(entry.deliver.message_id));
                    self.overdue_cursor += 1;
                }
                _ => break,
            }
        }
        overdue
    }

    /// When the oldest unreported message becomes overdue.
    pub(crate) fn overdue_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.entry(self.overdue_cursor)?
            .since
            .map(|since| since + timeout)
    }

    /// The largest buffered message's frame length (0: none), as the client's limit counts it.
    pub(crate) fn largest_frame(&self) -> usize {
        self.entries
            .iter()
            .map(|e| imgate_codec::deliver_frame_len(&e.deliver))
            .max()
            .unwrap_or(0)
    }

    /// Ids of every buffered message, in order.
    pub(crate) fn message_ids(&self) -> Vec<MessageId> {
        self.entries
            .iter()
            .map(|e| MessageId(e.deliver.message_id))
            .collect()
    }

    /// Empties the buffer, handing every message to the caller.
    pub(crate) fn drain(&mut self) -> Vec<Undelivered> {
        self.bytes = 0;
        self.cursor = self.cursor.max(self.last_seq() + 1);
        let drained: Vec<_> = self
            .entries
            .drain(..)
            .map(|e| Undelivered {
                message_id: MessageId(e.deliver.message_id),
                seq: e.deliver.seq,
            })
            .collect();
        self.acked += drained.len() as u64;
        drained
    }

    /// Empties the buffer for another owner of the session (a move to another node): the
    /// acknowledged point and every unacknowledged frame, in order.
    pub(crate) fn take_all(&mut self) -> (u64, Vec<Deliver>) {
        let acked = self.acked;
        self.bytes = 0;
        self.cursor = self.cursor.max(self.last_seq() + 1);
        let taken: Vec<_> = self.entries.drain(..).map(|e| e.deliver).collect();
        self.acked += taken.len() as u64;
        (acked, taken)
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        let index = usize::try_from(seq.checked_sub(self.acked + 1)?).ok()?;
        self.entries.get(index)
    }
}
