//! Upstream de-duplication: one forward per client `msg_id`, the same receipt for every re-send.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashSet};

use imgate_codec::Receipt;

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
        }
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

    /// Records the backend's answer; returns false if `msg_id` was not in flight.
    pub(crate) fn answer(&mut self, receipt: &Receipt) -> bool {
        if !self.in_flight.remove(&receipt.msg_id) {
            return false;
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
        true
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn highest_answered(&self) -> u64 {
        self.highest_answered
    }
}
