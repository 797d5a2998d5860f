//! Durable session state: what a session must keep across a restart (its identity and resume
//! secret, every unacknowledged message, the acknowledged point, the upstream receipts it
//! de-duplicates with), behind [`SessionStore`].
//!
//! The runtime appends [`Change`]s in the order they happen to a session (under the
//! session's lock, so one session's changes are totally ordered) and awaits
//! [`SessionStore::sync`] where a promise depends on durability: `deliver` reports
//! `Sent`/`Buffered` only after its sync resolved, and a session transmits a message only
//! once it is durable. [`RedbStore`] group-commits: every change that arrived while the
//! previous commit was being written goes into the next one, so one fsync covers many
//! messages under load and a lone message waits for one commit only.
//!
//! On start the gateway [loads](SessionStore::load) every stored session and restores it as
//! detached: the client may resume within the resume window; if it does not, push covers it
//! after the push grace and the backend hears of the messages when the window ends.

mod log;
mod net;
pub(crate) mod record;
mod redb_store;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use imgate_codec::{Deliver, Receipt};

use crate::deliver::PushOptions;
use crate::ids::SessionId;
use crate::session::{AnswerMark, Identity, ResumeSecret};
pub use redb_store::{CommitObserver, CommitStats, RedbStore};

/// Where an app's session state lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// In the process only: a restart or crash ends every session and loses what was
    /// unacknowledged (reported to nobody). Costs no disk I/O.
    #[default]
    Memory,
    /// In the gateway's [`SessionStore`]: sessions and unacknowledged messages survive a
    /// restart, clean or not.
    Disk,
}

/// A session-store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's files could not be opened, read or written.
    #[error("session store {path}: {reason}")]
    Io {
        /// The store's file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The store's writer has stopped (the gateway is shutting down, or a write failed).
    #[error("session store writer stopped")]
    Stopped,
}

/// One change to a session's durable state.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Change {
    /// A fresh session.
    Opened {
        /// The session.
        session: SessionId,
        /// Its resume secret.
        secret: ResumeSecret,
        /// Its owner.
        identity: Identity,
        /// When it opened, ms since the Unix epoch.
        opened_at_ms: u64,
    },
    /// A message joined the session's outbox (its `seq` is set).
    Delivered {
        /// The session.
        session: SessionId,
        /// The frame the client will get.
        deliver: Deliver,
        /// How to push it if the client does not take it.
        push: Option<Arc<PushOptions>>,
    },
    /// The client acknowledged everything up to `seq`.
    Acked {
        /// The session.
        session: SessionId,
        /// The cumulative ack.
        seq: u64,
    },
    /// The backend answered an upstream request; re-sends get this receipt.
    Answered {
        /// The session.
        session: SessionId,
        /// Where the receipt sits in the session's bounded memory.
        mark: AnswerMark,
        /// The receipt.
        receipt: Receipt,
    },
    /// The outbox overflowed: the session can no longer be resumed without a hole.
    Overflowed {
        /// The session.
        session: SessionId,
    },
    /// The session is over: forget it.
    Ended {
        /// The session.
        session: SessionId,
    },
}

/// A remembered upstream receipt, as loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredReceipt {
    /// Its place in the order the session answered requests.
    pub ordinal: u64,
    /// The session's forgetting point when it was answered.
    pub forgotten_up_to: u64,
    /// The receipt.
    pub receipt: Receipt,
}

/// A message waiting in a stored outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    /// The frame (with its `seq`).
    pub deliver: Deliver,
    /// How to push it.
    pub push: Option<PushOptions>,
}

/// A session as loaded after a restart.
#[derive(Clone, Debug)]
pub struct StoredSession {
    /// The session.
    pub id: SessionId,
    /// Its resume secret.
    pub secret: ResumeSecret,
    /// Its owner.
    pub identity: Identity,
    /// When it opened, ms since the Unix epoch.
    pub opened_at_ms: u64,
    /// A resume would leave a hole (overflow, or messages missing from the store).
    pub overflowed: bool,
    /// The acknowledged point.
    pub acked: u64,
    /// The unacknowledged messages, `acked + 1 ..`, gap-free, in order.
    pub outbox: Vec<StoredMessage>,
    /// The remembered receipts, oldest first.
    pub receipts: Vec<StoredReceipt>,
}

/// Run by [`SessionStore::on_durable`].
pub type Durable = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Resolves once every change appended before it is durable.
pub type Synced = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Durable session state. Implementations: [`RedbStore`] (embedded, one node); the cluster
/// implements it on NATS JetStream.
///
/// Changes of one session arrive in the order they happened; an implementation must apply
/// them in that order and make a change durable no later than every change appended after
/// it.
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// Queues a change; never blocks.
    fn append(&self, change: Change);

    /// A barrier: resolves when every change appended before the call is durable.
    fn sync(&self) -> Synced;

    /// Like [`SessionStore::sync`], but runs `then` (on the store's own thread, so it must
    /// be short and never block) once every change appended before the call is durable, or
    /// with the error if that cannot be. The runtime lets sessions transmit from here: one
    /// commit releases every message it made durable at once, without a task per message.
    fn on_durable(&self, then: Durable);

    /// Every stored session, for restoring after a restart.
    fn load(&self) -> Result<Vec<StoredSession>, StoreError>;
}

#[cfg(test)]
mod tests;
