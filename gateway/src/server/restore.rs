//! Bringing stored sessions back after a restart, clean or not.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::connection::detached_driver_task;
use super::driver::Driver;
use crate::backend::Origin;
use crate::handle::{GatewayHandle, wall_ms};
use crate::handoff::Handoff;
use crate::ids::MessageId;
use crate::registry::SessionCell;
use crate::session::{Session, Undelivered, UndeliveredReason};
use crate::store::{Change, Durability, SessionStore, StoredSession};

/// What a restore did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RestoreReport {
    /// Sessions restored (detached, resumable).
    pub(super) sessions: usize,
    /// Unacknowledged messages they hold.
    pub(super) messages: usize,
    /// Stored sessions ended instead: their app is gone or no longer durable, or a newer
    /// session of the same device was stored too (a crash between a takeover and its end).
    pub(super) ended: usize,
}

/// Restores every stored session as detached, each with its own driver, so that it resumes,
/// is pushed after the push grace and ends after the resume window as if the process had
/// never stopped. Runs before the listeners accept anything.
pub(super) fn restore_sessions(
    handle: &GatewayHandle,
    store: &dyn SessionStore,
    mut stored: Vec<StoredSession>,
) -> RestoreReport {
    let mut report = RestoreReport::default();
    let now = Instant::now();
    let wall = wall_ms();
    // Newest first: of two sessions of one device only the newest is the device's.
    stored.sort_by_key(|s| std::cmp::Reverse(s.opened_at_ms));
    let mut devices = HashSet::new();
    for session in stored {
        let identity = session.identity.clone();
        let app = handle
            .app(&identity.app)
            .filter(|app| app.session.durability == Durability::Disk)
            .cloned();
        let newest = devices.insert((
            identity.app.clone(),
            identity.user.clone(),
            identity.device.clone(),
        ));
        let Some(app) = app.filter(|_| newest) else {
            report.ended += 1;
            let Some(app) = handle.app(&identity.app) else {
                // Nobody left to tell.
                store.append(Change::Ended {
                    session: session.id,
                });
                continue;
            };
            let messages = session
                .outbox
                .iter()
                .map(|m| Undelivered {
                    message_id: MessageId(m.deliver.message_id),
                    seq: m.deliver.seq,
                })
                .collect::<Vec<_>>();
            if handle.shared.store_for(app).is_some() {
                Handoff::new(handle, app).session_ended(
                    session.id,
                    identity.user.clone(),
                    Some(&identity.device),
                    messages,
                    UndeliveredReason::SessionEnded,
                );
            } else {
                // The app is no longer durable: its hand-off does not know this store.
                store.append(Change::Ended {
                    session: session.id,
                });
                Handoff::new(handle, app).undelivered(
                    identity.user.clone(),
                    Some(&identity.device),
                    messages,
                    UndeliveredReason::SessionEnded,
                );
            }
            continue;
        };
        // The push policy learns each message's push options again (they live in memory).
        let handoff = Handoff::new(handle, &app);
        for message in &session.outbox {
            if let Some(push) = &message.push {
                handoff.accepted(MessageId(message.deliver.message_id), push);
            }
        }
        report.sessions += 1;
        report.messages += session.outbox.len();
        let restored = Session::restore(now, wall, session, Arc::clone(&app.session));
        let cell = SessionCell::new(restored);
        handle.shared.registry.insert(Arc::clone(&cell));
        let origin = Origin {
            session: cell.id(),
            identity: cell.identity().clone(),
        };
        let driver = Driver::new(handle.clone(), app, cell, origin);
        handle.spawn(detached_driver_task(driver));
    }
    handle
        .metrics()
        .sessions_restored
        .inc_by(report.sessions as u64);
    report
}

/// Registers a session that moved here from another cluster node, detached with its own
/// driver, for the resume that asked for it (which attaches it right after).
#[cfg(feature = "cluster")]
pub(crate) fn adopt_session(
    handle: &GatewayHandle,
    app: Arc<crate::app::App>,
    stored: StoredSession,
) {
    let restored = Session::restore(Instant::now(), wall_ms(), stored, Arc::clone(&app.session));
    let cell = SessionCell::new(restored);
    handle.shared.registry.insert(Arc::clone(&cell));
    let origin = Origin {
        session: cell.id(),
        identity: cell.identity().clone(),
    };
    let driver = Driver::new(handle.clone(), app, cell, origin);
    handle.spawn(detached_driver_task(driver));
}
