//! The session as the client keeps it across connections: resume credentials, the last
//! in-order `seq`, acks owed, and the requests waiting for receipts. No I/O and no clock
//! reads: time comes in as arguments.

use std::collections::BTreeMap;

use bytes::Bytes;
use imgate_codec::proto::send::To;
use imgate_codec::{
    CloseCode, Deliver, Frame, JoinRoom, LeaveRoom, Receipt, ReceiptStatus, Resume, ResumeRefused,
    Send, Welcome,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::{AckPolicy, ClientError, Message, OnFreshSession, StopReason, Target};

/// Where a request's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<Receipt, ClientError>>;

/// An upstream request.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    Send { to: Target, payload: Bytes },
    JoinRoom(String),
    LeaveRoom(String),
}

struct Pending {
    request: Request,
    reply: Option<Reply>,
}

/// What a `Deliver` meant.
#[derive(Debug)]
pub(crate) enum Delivered {
    /// The next message in order: hand it to the application.
    New(Message),
    /// Already received (replayed after a resume): dropped.
    Duplicate,
    /// A sequence number was skipped.
    Gap { expected: u64, got: u64 },
}

/// What a `Welcome` meant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Welcomed {
    pub(crate) session_id: u64,
    pub(crate) resumed: bool,
    /// A resume was asked for and refused: (reason, old session).
    pub(crate) refused: Option<(ResumeRefused, u64)>,
}

#[derive(Default)]
pub(crate) struct SessionState {
    /// (session id, resume secret) of the current session.
    session: Option<(u64, Bytes)>,
    /// Highest `seq` received in order in the current session.
    last_seq: u64,
    /// Highest `seq` the server knows we received.
    acked: u64,
    /// When the oldest un-acked message arrived.
    unacked_since: Option<Instant>,
    last_msg_id: u64,
    pending: BTreeMap<u64, Pending>,
}

impl SessionState {
    /// The `resume` field of the next `Hello`.
    pub(crate) fn resume(&self) -> Option<Resume> {
        self.session.as_ref().map(|(id, secret)| Resume {
            session_id: *id,
            resume_secret: secret.clone(),
            last_seq: self.last_seq,
        })
    }

    /// Takes in a `Welcome`: keeps the session's credentials, and after a refused resume
    /// starts over at `seq` 0 (failing pending requests if `policy` says so).
    pub(crate) fn on_welcome(&mut self, welcome: &Welcome, policy: OnFreshSession) -> Welcomed {
        let asked = self.session.as_ref().map(|(id, _)| *id);
        let resumed = welcome.resumed && asked == Some(welcome.session_id);
        let refused = match asked {
            Some(old) if !resumed => Some((welcome.resume_refused(), old)),
            _ => None,
        };
        if resumed {
            // `Hello.resume.last_seq` acknowledged everything received so far.
            self.acked = self.last_seq;
        } else {
            self.last_seq = 0;
            self.acked = 0;
            if refused.is_some() && policy == OnFreshSession::Fail {
                for (msg_id, pending) in std::mem::take(&mut self.pending) {
                    if let Some(reply) = pending.reply {
                        let _ = reply.send(Err(ClientError::SessionLost { msg_id }));
                    }
                }
            }
        }
        self.unacked_since = None;
        self.session = Some((welcome.session_id, welcome.resume_secret.clone()));
        Welcomed {
            session_id: welcome.session_id,
            resumed,
            refused,
        }
    }

    /// Takes in a `Deliver`.
    pub(crate) fn on_deliver(&mut self, now: Instant, deliver: Deliver) -> Delivered {
        let expected = self.last_seq + 1;
        if deliver.seq < expected {
            return Delivered::Duplicate;
        }
        if deliver.seq > expected {
            return Delivered::Gap {
                expected,
                got: deliver.seq,
            };
        }
        self.last_seq = deliver.seq;
        self.unacked_since.get_or_insert(now);
        let session = self.session.as_ref().map_or(0, |(id, _)| *id);
        Delivered::New(Message::new(session, deliver))
    }

    /// When the next ack is due under `policy` (`None`: nothing to ack).
    pub(crate) fn ack_deadline(&self, policy: &AckPolicy) -> Option<Instant> {
        if self.last_seq <= self.acked {
            return None;
        }
        self.unacked_since.map(|since| since + policy.delay)
    }

    /// Whether enough messages are un-acked to ack at once.
    pub(crate) fn ack_batch_full(&self, policy: &AckPolicy) -> bool {
        self.last_seq.saturating_sub(self.acked) >= policy.every.max(1)
    }

    /// The cumulative ack to send now (0: nothing new), marked as sent.
    pub(crate) fn take_ack(&mut self) -> u64 {
        if self.last_seq <= self.acked {
            return 0;
        }
        self.acked = self.last_seq;
        self.unacked_since = None;
        self.last_seq
    }

    /// Requests waiting for their receipt.
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether request `msg_id` still waits for its receipt.
    pub(crate) fn is_pending(&self, msg_id: u64) -> bool {
        self.pending.contains_key(&msg_id)
    }

    /// The oldest request still waiting for its receipt.
    pub(crate) fn oldest_pending(&self) -> Option<u64> {
        self.pending.first_key_value().map(|(msg_id, _)| *msg_id)
    }

    /// The frame of pending request `msg_id`, to send again.
    pub(crate) fn pending_frame(&self, msg_id: u64) -> Option<Frame> {
        self.pending
            .get(&msg_id)
            .map(|pending| request_frame(msg_id, &pending.request))
    }

    /// Registers a request; returns its frame (ack not set).
    pub(crate) fn push_request(&mut self, request: Request, reply: Reply) -> Frame {
        self.last_msg_id += 1;
        let msg_id = self.last_msg_id;
        let frame = request_frame(msg_id, &request);
        self.pending.insert(
            msg_id,
            Pending {
                request,
                reply: Some(reply),
            },
        );
        frame
    }

    /// Every un-receipted request, in `msg_id` order, to re-send after a (re)connect.
    pub(crate) fn resend_frames(&self) -> impl Iterator<Item = Frame> + '_ {
        self.pending
            .iter()
            .map(|(msg_id, pending)| request_frame(*msg_id, &pending.request))
    }

    /// Takes in a `Receipt`: completes its request (a duplicate receipt is ignored).
    pub(crate) fn on_receipt(&mut self, receipt: Receipt) {
        let Some(mut pending) = self.pending.remove(&receipt.msg_id) else {
            return;
        };
        let Some(reply) = pending.reply.take() else {
            return;
        };
        let result = if receipt.status() == ReceiptStatus::Rejected {
            Err(ClientError::Rejected {
                msg_id: receipt.msg_id,
                code: CloseCode(u16::try_from(receipt.reason_code).unwrap_or(u16::MAX)),
                reason: receipt.reason,
            })
        } else {
            Ok(receipt)
        };
        let _ = reply.send(result);
    }

    /// Fails every pending request: the client stopped.
    pub(crate) fn fail_all(&mut self, reason: &StopReason) {
        for (_, pending) in std::mem::take(&mut self.pending) {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(ClientError::Stopped(reason.clone())));
            }
        }
    }
}

fn request_frame(msg_id: u64, request: &Request) -> Frame {
    match request {
        Request::Send { to, payload } => Send {
            msg_id,
            to: match to {
                Target::User(user) => Some(To::User(user.clone())),
                Target::Room(room) => Some(To::Room(room.clone())),
                Target::Backend => None,
            },
            payload: payload.clone(),
            ack: 0,
        }
        .into(),
        Request::JoinRoom(room) => JoinRoom {
            msg_id,
            room: room.clone(),
        }
        .into(),
        Request::LeaveRoom(room) => LeaveRoom {
            msg_id,
            room: room.clone(),
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(seq: u64) -> Deliver {
        Deliver {
            seq,
            payload: Bytes::from(seq.to_string()),
            ..Deliver::default()
        }
    }

    fn welcome(session_id: u64, resumed: bool) -> Welcome {
        Welcome {
            session_id,
            resume_secret: Bytes::from_static(b"s"),
            resumed,
            ..Welcome::default()
        }
    }

    #[test]
    fn duplicates_are_dropped_and_gaps_reported() {
        let now = Instant::now();
        let mut state = SessionState::default();
        state.on_welcome(&welcome(7, false), OnFreshSession::Resend);
        assert!(matches!(state.on_deliver(now, deliver(1)), Delivered::New(m) if m.seq == 1));
        assert!(matches!(
            state.on_deliver(now, deliver(1)),
            Delivered::Duplicate
        ));
        assert!(matches!(
            state.on_deliver(now, deliver(3)),
            Delivered::Gap {
                expected: 2,
                got: 3
            }
        ));
        assert_eq!(
            state.resume().map(|r| (r.session_id, r.last_seq)),
            Some((7, 1))
        );
    }

    #[test]
    fn acks_batch_and_resume_counts_as_ack() {
        let now = Instant::now();
        let policy = AckPolicy {
            every: 2,
            delay: std::time::Duration::from_millis(10),
        };
        let mut state = SessionState::default();
        state.on_welcome(&welcome(7, false), OnFreshSession::Resend);
        assert_eq!(state.ack_deadline(&policy), None);
        let _ = state.on_deliver(now, deliver(1));
        assert_eq!(state.ack_deadline(&policy), Some(now + policy.delay));
        assert!(!state.ack_batch_full(&policy));
        let _ = state.on_deliver(now, deliver(2));
        assert!(state.ack_batch_full(&policy));
        assert_eq!(state.take_ack(), 2);
        assert_eq!(state.take_ack(), 0);
        let _ = state.on_deliver(now, deliver(3));
        state.on_welcome(&welcome(7, true), OnFreshSession::Resend);
        assert_eq!(state.take_ack(), 0, "Hello.resume.last_seq acked seq 3");
    }

    #[test]
    fn refused_resume_restarts_seq_and_keeps_or_fails_requests() {
        for policy in [OnFreshSession::Resend, OnFreshSession::Fail] {
            let now = Instant::now();
            let mut state = SessionState::default();
            state.on_welcome(&welcome(7, false), policy);
            let _ = state.on_deliver(now, deliver(1));
            let (tx, mut rx) = oneshot::channel();
            state.push_request(Request::JoinRoom("r".into()), tx);
            let welcomed = state.on_welcome(&welcome(8, false), policy);
            assert_eq!(welcomed.refused.map(|(_, old)| old), Some(7));
            assert!(matches!(
                state.on_deliver(now, deliver(1)),
                Delivered::New(_)
            ));
            let resent = state.resend_frames().count();
            match policy {
                OnFreshSession::Resend => assert_eq!(resent, 1),
                OnFreshSession::Fail => {
                    assert_eq!(resent, 0);
                    assert!(matches!(
                        rx.try_recv(),
                        Ok(Err(ClientError::SessionLost { msg_id: 1 }))
                    ));
                }
            }
        }
    }

    #[test]
    fn receipts_complete_requests_once() {
        let mut state = SessionState::default();
        let (tx, mut rx) = oneshot::channel();
        state.push_request(Request::JoinRoom("r".into()), tx);
        let receipt = Receipt {
            msg_id: 1,
            status: ReceiptStatus::Accepted.into(),
            ..Receipt::default()
        };
        state.on_receipt(receipt.clone());
        state.on_receipt(receipt);
        assert!(matches!(rx.try_recv(), Ok(Ok(r)) if r.msg_id == 1));
        assert_eq!(state.requests_in_flight(), 0);
    }
}
