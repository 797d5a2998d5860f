//! Upstream de-duplication: one forward per client `msg_id`, the same receipt for every re-send.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashSet};

use imgate_codec::Receipt;

use crate::store::StoredReceipt;

/// Where an answered receipt sits in a session's bounded memory, so a store can keep the
/// same bounded set: `slot` cycles through `0..receipt_memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerMark {
    /// The storage slot (the ordinal modulo the memory's capacity).
    pub slot: u64,
    /// The answer's place in the order the session answered requests.
    pub ordinal: u64,
    /// Highest `msg_id` forgotten so far (re-sends at or below it are answered generically).
    pub forgotten_up_to: u64,
}

/// What to do with an upstream request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// First time: forward it.
    New,
    /// Forwarded, the backend has not answered yet: drop the re-send, the receipt will come.
    InFlight,
    /// Already answered: send this receipt again.
    Answered(Receipt),
}

/// Bounded memory of upstream requests. In-flight ids are bounded by the caller's flow
/// control (the backend answers every forward); answered ones by `capacity`.
///
/// The sets hash with foldhash (randomly seeded per process), not SipHash: every `Send` costs
/// several lookups here, and SipHash made them ~4% of the routed path's instructions. The ids
/// are the client's, but each table belongs to one session and is bounded, so a client that
/// found colliding ids would only slow its own session's lookups.
#[derive(Debug)]
pub(crate) struct Dedup {
    in_flight: HashSet<u64>,
    answered: HashMap<u64, Receipt>,
    /// `answered` keys, oldest first, to forget in order.
    order: VecDeque<u64>,
    capacity: usize,
    /// Highest `msg_id` whose receipt was forgotten; a re-send at or below it is answered
    /// generically rather than forwarded twice.
    forgotten_up_to: u64,
    /// Highest `msg_id` answered so far.
    highest_answered: u64,
    /// Answers given so far (the next answer's ordinal).
    answers: u64,
}

impl Dedup {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            in_flight: HashSet::new(),
            answered: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            forgotten_up_to: 0,
            highest_answered: 0,
            answers: 0,
        }
    }

    /// The memory a stored session left, oldest first; keeps the newest `capacity`.
    pub(crate) fn restore(capacity: usize, mut stored: Vec<StoredReceipt>) -> Self {
        let mut dedup = Self::new(capacity);
        stored.sort_by_key(|r| r.ordinal);
        let keep_from = stored.len().saturating_sub(dedup.capacity);
        for (index, record) in stored.into_iter().enumerate() {
            let msg_id = record.receipt.msg_id;
            dedup.forgotten_up_to = dedup.forgotten_up_to.max(record.forgotten_up_to);
            dedup.highest_answered = dedup.highest_answered.max(msg_id);
            dedup.answers = dedup.answers.max(record.ordinal + 1);
            if index < keep_from {
                dedup.forgotten_up_to = dedup.forgotten_up_to.max(msg_id);
            } else {
                dedup.order.push_back(msg_id);
                dedup.answered.insert(msg_id, record.receipt);
            }
        }
        dedup.highest_answered = dedup.highest_answered.max(dedup.forgotten_up_to);
        dedup
    }

    pub(crate) fn check(&mut self, msg_id: u64) -> Seen {
        if self.in_flight.contains(&msg_id) {
            return Seen::InFlight;
        }
        if let Some(receipt) = self.answered.get(&msg_id) {
            return Seen::Answered(receipt.clone());
        }
        if msg_id <= self.forgotten_up_to {
            return Seen::Answered(Receipt {
                msg_id,
                status: imgate_codec::ReceiptStatus::Accepted.into(),
                reason: "duplicate: already processed".into(),
                ..Default::default()
            });
        }
        self.in_flight.insert(msg_id);
        Seen::New
    }

    /// Records the backend's answer; returns where it is remembered, or None if `msg_id`
    /// was not in flight.
    pub(crate) fn answer(&mut self, receipt: &Receipt) -> Option<AnswerMark> {
        if !self.in_flight.remove(&receipt.msg_id) {
            return None;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.answered.remove(&old);
            self.forgotten_up_to = self.forgotten_up_to.max(old);
        }
        self.highest_answered = self.highest_answered.max(receipt.msg_id);
        self.order.push_back(receipt.msg_id);
        self.answered.insert(receipt.msg_id, receipt.clone());
        let ordinal = self.answers;
        self.answers += 1;
        Some(AnswerMark {
            slot: ordinal % self.capacity as u64,
            ordinal,
            forgotten_up_to: self.forgotten_up_to,
        })
    }

    /// The remembered receipts, oldest first, as [`Dedup::restore`] takes them (a move to
    /// another node carries them along, so re-sends there are still de-duplicated).
    pub(crate) fn snapshot(&self) -> Vec<StoredReceipt> {
        let first = self.answers.saturating_sub(self.order.len() as u64);
        (first..)
            .zip(&self.order)
            .filter_map(|(ordinal, msg_id)| {
                Some(StoredReceipt {
                    ordinal,
                    forgotten_up_to: self.forgotten_up_to,
                    receipt: self.answered.get(msg_id)?.clone(),
                })
            })
            .collect()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn highest_answered(&self) -> u64 {
        self.highest_answered
    }
}
