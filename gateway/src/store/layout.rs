//! How session state sits in the redb file.
//!
//! Messages and receipts go to one append-only `log` (key: a global, increasing op number),
//! because nearly every message is acknowledged within milliseconds of its commit: keyed by
//! `(session, seq)`, every commit would rewrite leaves all over the tree (copy-on-write), while
//! appends touch the right edge only (measured: commit time per change was the limit of the
//! durable hot path). What is still needed is decided by three small per-session tables:
//! `sessions` (identity, secret; absent once ended), `acked` (the acknowledged point) and
//! `answered` (the latest receipt's ordinal). Each commit also compacts the head of the log
//! by a bounded amount: dead entries are deleted, live ones (messages a detached device has
//! not acknowledged yet, receipts still within the session's memory) are re-appended.
//!
//! A log entry's value is a fixed header, then the prost record:
//! `kind: u8` (1 message, 2 receipt), `session: u64`, `number: u64` (the message's `seq` or
//! the receipt's ordinal), `capacity: u64` (receipts: the session's receipt memory), all
//! little-endian.

use std::collections::{HashMap, HashSet};

use prost::Message;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::record::{OutboxRecord, PushRecord, ReceiptRecord, SessionRecord};
use super::{Change, StoredMessage, StoredReceipt};

pub(super) const SESSIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("sessions");
pub(super) const ACKED: TableDefinition<'_, u64, u64> = TableDefinition::new("acked");
pub(super) const ANSWERED: TableDefinition<'_, u64, u64> = TableDefinition::new("answered");
pub(super) const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");

const MESSAGE: u8 = 1;
const RECEIPT: u8 = 2;
const HEADER: usize = 25;

/// The fixed part of a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    kind: u8,
    session: u64,
    number: u64,
    capacity: u64,
}

impl Header {
    fn write(self, out: &mut Vec<u8>) {
        out.push(self.kind);
        out.extend_from_slice(&self.session.to_le_bytes());
        out.extend_from_slice(&self.number.to_le_bytes());
        out.extend_from_slice(&self.capacity.to_le_bytes());
    }

    fn read(value: &[u8]) -> Option<(Self, &[u8])> {
        let (header, body) = value.split_at_checked(HEADER)?;
        let word = |at: usize| {
            header
                .get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
        };
        Some((
            Self {
                kind: header[0],
                session: word(1)?,
                number: word(9)?,
                capacity: word(17)?,
            },
            body,
        ))
    }
}

/// What decides whether a log entry is still needed, per session.
#[derive(Clone, Copy, Debug)]
struct Liveness {
    acked: u64,
    answered: Option<u64>,
}

impl Liveness {
    fn keeps(self, header: &Header) -> bool {
        match header.kind {
            MESSAGE => header.number > self.acked,
            RECEIPT => self
                .answered
                .is_none_or(|latest| header.number + header.capacity > latest),
            _ => false,
        }
    }
}

/// The tables of one write transaction.
pub(super) struct Tables<'txn> {
    sessions: Table<'txn, u64, &'static [u8]>,
    acked: Table<'txn, u64, u64>,
    answered: Table<'txn, u64, u64>,
    log: Table<'txn, u64, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            sessions: txn.open_table(SESSIONS)?,
            acked: txn.open_table(ACKED)?,
            answered: txn.open_table(ANSWERED)?,
            log: txn.open_table(LOG)?,
        })
    }

    /// The op number the next appended entry gets.
    pub(super) fn next_op(&self) -> Result<u64, redb::Error> {
        Ok(self.log.last()?.map_or(0, |(key, _)| key.value() + 1))
    }

    /// Applies `changes` in order; returns how many log entries were appended.
    pub(super) fn apply(
        &mut self,
        changes: &[Change],
        next_op: &mut u64,
    ) -> Result<usize, redb::Error> {
        // Sessions that ended in this batch: later changes for them (a delivery that raced
        // the end) must not write anything.
        let mut ended = HashSet::new();
        // Cumulative: a session's acks and answers of one batch are written once, the last.
        let mut last_ack = HashMap::new();
        let mut last_answer = HashMap::new();
        for (index, change) in changes.iter().enumerate() {
            match change {
                Change::Acked { session, .. } => {
                    last_ack.insert(session.0, index);
                }
                Change::Answered { session, .. } => {
                    last_answer.insert(session.0, index);
                }
                _ => {}
            }
        }
        let mut appended = 0;
        let mut buffer = Vec::new();
        for (index, change) in changes.iter().enumerate() {
            buffer.clear();
            match change {
                Change::Opened {
                    session,
                    secret,
                    identity,
                    opened_at_ms,
                } => {
                    SessionRecord {
                        secret: secret.as_bytes().to_vec(),
                        app: identity.app.as_str().to_owned(),
                        user: identity.user.as_str().to_owned(),
                        device: identity.device.as_str().to_owned(),
                        platform: identity.platform.into(),
                        opened_at_ms: *opened_at_ms,
                        overflowed: false,
                    }
                    .encode(&mut buffer)
                    .map_err(encode_error)?;
                    self.sessions.insert(session.0, buffer.as_slice())?;
                    ended.remove(&session.0);
                }
                Change::Delivered {
                    session,
                    deliver,
                    push,
                } => {
                    if ended.contains(&session.0) {
                        continue;
                    }
                    Header {
                        kind: MESSAGE,
                        session: session.0,
                        number: deliver.seq,
                        capacity: 0,
                    }
                    .write(&mut buffer);
                    OutboxRecord {
                        deliver: Some(deliver.clone()),
                        push: push.as_deref().map(PushRecord::from),
                    }
                    .encode(&mut buffer)
                    .map_err(encode_error)?;
                    self.append(next_op, &buffer)?;
                    appended += 1;
                }
                Change::Acked { session, seq } => {
                    if last_ack.get(&session.0) != Some(&index) || ended.contains(&session.0) {
                        continue;
                    }
                    let before = self.acked.get(session.0)?.map_or(0, |v| v.value());
                    if *seq > before {
                        self.acked.insert(session.0, *seq)?;
                    }
                }
                Change::Answered {
                    session,
                    mark,
                    receipt,
                } => {
                    if ended.contains(&session.0) {
                        continue;
                    }
                    Header {
                        kind: RECEIPT,
                        session: session.0,
                        number: mark.ordinal,
                        capacity: mark.capacity,
                    }
                    .write(&mut buffer);
                    ReceiptRecord {
                        ordinal: mark.ordinal,
                        forgotten_up_to: mark.forgotten_up_to,
                        receipt: Some(receipt.clone()),
                    }
                    .encode(&mut buffer)
                    .map_err(encode_error)?;
                    self.append(next_op, &buffer)?;
                    appended += 1;
                    if last_answer.get(&session.0) == Some(&index) {
                        self.answered.insert(session.0, mark.ordinal)?;
                    }
                }
                Change::Overflowed { session } => {
                    let record = self
                        .sessions
                        .get(session.0)?
                        .map(|v| SessionRecord::decode(v.value()));
                    if let Some(Ok(mut record)) = record {
                        record.overflowed = true;
                        record.encode(&mut buffer).map_err(encode_error)?;
                        self.sessions.insert(session.0, buffer.as_slice())?;
                    }
                }
                Change::Ended { session } => {
                    ended.insert(session.0);
                    self.sessions.remove(session.0)?;
                    self.acked.remove(session.0)?;
                    self.answered.remove(session.0)?;
                }
            }
        }
        Ok(appended)
    }

    /// Looks at up to `budget` entries at the head of the log: deletes the dead ones and
    /// re-appends the live ones, so the log holds what is pending plus what the last
    /// commits wrote, not history. Returns how many entries it looked at.
    pub(super) fn compact(
        &mut self,
        budget: usize,
        next_op: &mut u64,
    ) -> Result<usize, redb::Error> {
        let mut liveness: HashMap<u64, Option<Liveness>> = HashMap::new();
        let mut live = Vec::new();
        let mut last = None;
        let mut seen = 0;
        for entry in self.log.range::<u64>(..)? {
            if seen == budget {
                break;
            }
            let (key, value) = entry?;
            seen += 1;
            last = Some(key.value());
            let Some((header, _)) = Header::read(value.value()) else {
                continue;
            };
            let state = match liveness.get(&header.session) {
                Some(state) => *state,
                None => {
                    let state = self.liveness(header.session)?;
                    liveness.insert(header.session, state);
                    state
                }
            };
            if state.is_some_and(|state| state.keeps(&header)) {
                live.push(value.value().to_vec());
            }
        }
        if let Some(last) = last {
            self.log.retain_in(..=last, |_, _| false)?;
        }
        for value in live {
            self.append(next_op, &value)?;
        }
        Ok(seen)
    }

    /// None: the session has ended (everything of it is dead).
    fn liveness(&self, session: u64) -> Result<Option<Liveness>, redb::Error> {
        if self.sessions.get(session)?.is_none() {
            return Ok(None);
        }
        Ok(Some(Liveness {
            acked: self.acked.get(session)?.map_or(0, |v| v.value()),
            answered: self.answered.get(session)?.map(|v| v.value()),
        }))
    }

    fn append(&mut self, next_op: &mut u64, value: &[u8]) -> Result<(), redb::Error> {
        self.log.insert(*next_op, value)?;
        *next_op += 1;
        Ok(())
    }
}

/// What the log holds for one session, as loaded.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) messages: Vec<StoredMessage>,
    pub(super) receipts: Vec<StoredReceipt>,
}

/// Reads every live log entry of the sessions in `sessions` (id → acked, latest answer).
pub(super) fn read_log(
    log: &impl ReadableTable<u64, &'static [u8]>,
    sessions: &HashMap<u64, (u64, Option<u64>)>,
) -> Result<HashMap<u64, Pending>, String> {
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    for entry in log.range::<u64>(..).map_err(|e| e.to_string())? {
        let (_, value) = entry.map_err(|e| e.to_string())?;
        let Some((header, body)) = Header::read(value.value()) else {
            return Err("a log entry shorter than its header".into());
        };
        let Some(&(acked, answered)) = sessions.get(&header.session) else {
            continue;
        };
        if !(Liveness { acked, answered }).keeps(&header) {
            continue;
        }
        let slot = pending.entry(header.session).or_default();
        match header.kind {
            MESSAGE => {
                let record = OutboxRecord::decode(body).map_err(|e| e.to_string())?;
                if let Some(deliver) = record.deliver {
                    slot.messages.push(StoredMessage {
                        deliver,
                        push: record.push.map(Into::into),
                    });
                }
            }
            _ => {
                let record = ReceiptRecord::decode(body).map_err(|e| e.to_string())?;
                if let Some(receipt) = record.receipt {
                    slot.receipts.push(StoredReceipt {
                        ordinal: record.ordinal,
                        forgotten_up_to: record.forgotten_up_to,
                        receipt,
                    });
                }
            }
        }
    }
    for slot in pending.values_mut() {
        // Compaction re-appends live entries: the log's order is not the session's.
        slot.messages.sort_by_key(|m| m.deliver.seq);
        slot.messages.dedup_by_key(|m| m.deliver.seq);
        slot.receipts.sort_by_key(|r| r.ordinal);
    }
    Ok(pending)
}

fn encode_error(error: prost::EncodeError) -> redb::Error {
    redb::Error::Corrupted(error.to_string())
}
