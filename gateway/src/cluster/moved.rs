//! A session moved here from another node: rebuilt from its snapshot, made durable in this
//! node's store if its app is durable, and registered detached for the resume that asked
//! for it.

use crate::handle::GatewayHandle;
use crate::ids::SessionId;
use crate::session::AnswerMark;
use crate::store::{Change, StoredMessage, StoredReceipt, StoredSession};

use super::wire::SessionSnapshot;

/// Restores `snapshot` into this node's registry (detached, with its own driver).
pub(super) async fn restore(
    handle: &GatewayHandle,
    snapshot: SessionSnapshot,
) -> Result<(), &'static str> {
    let record = snapshot.record.ok_or("no session record")?;
    let (secret, identity) = record
        .credentials()
        .map_err(|_| "malformed session record")?;
    let app = handle.app(&identity.app).ok_or("unknown app")?.clone();
    let stored = StoredSession {
        id: SessionId(snapshot.id),
        secret,
        identity,
        opened_at_ms: record.opened_at_ms,
        overflowed: record.overflowed,
        acked: snapshot.acked,
        outbox: snapshot
            .outbox
            .into_iter()
            .map(|deliver| StoredMessage {
                deliver,
                push: None,
            })
            .collect(),
        receipts: snapshot
            .receipts
            .into_iter()
            .filter_map(|r| {
                Some(StoredReceipt {
                    ordinal: r.ordinal,
                    forgotten_up_to: r.forgotten_up_to,
                    receipt: r.receipt?,
                })
            })
            .collect(),
    };
    if let Some(store) = handle.shared.store_for(&app) {
        // Durable here before the client can hold anything of it from this node.
        store.append(Change::Opened {
            session: stored.id,
            secret: stored.secret.clone(),
            identity: stored.identity.clone(),
            opened_at_ms: stored.opened_at_ms,
        });
        if stored.acked > 0 {
            store.append(Change::Acked {
                session: stored.id,
                seq: stored.acked,
            });
        }
        for message in &stored.outbox {
            store.append(Change::Delivered {
                session: stored.id,
                deliver: message.deliver.clone(),
                push: None,
            });
        }
        let capacity = app.session.receipt_memory.max(1) as u64;
        for receipt in &stored.receipts {
            store.append(Change::Answered {
                session: stored.id,
                mark: AnswerMark {
                    slot: receipt.ordinal % capacity,
                    ordinal: receipt.ordinal,
                    forgotten_up_to: receipt.forgotten_up_to,
                },
                receipt: receipt.receipt.clone(),
            });
        }
        store.sync().await.map_err(|_| "the session store failed")?;
    }
    crate::server::adopt_session(handle, app, stored);
    Ok(())
}
