//! Who is connected: sessions by id, by user and by device; room membership.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::{Equivalent, HashSet as MemberSet};
use tokio::sync::Notify;

use crate::ids::{AppId, DeviceId, RoomId, SessionId, UserId};
use crate::session::{Identity, Session};
use crate::sharded::Sharded;

/// A session shared between its driver task and the threads that deliver to it.
#[derive(Debug)]
pub(crate) struct SessionCell {
    id: SessionId,
    identity: Identity,
    session: Mutex<Session>,
    /// Wakes the driver after input that did not come from its own connection.
    wake: Notify,
}

impl SessionCell {
    pub(crate) fn new(session: Session) -> Arc<Self> {
        Arc::new(Self {
            id: session.id(),
            identity: session.identity().clone(),
            session: Mutex::new(session),
            wake: Notify::new(),
        })
    }

    /// The session id.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    /// Who the session belongs to.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Locks the session (never across an `.await`).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Session> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the session's driver.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

type UserKey = (AppId, UserId);
type RoomKey = (AppId, RoomId);

/// A [`UserKey`] or [`RoomKey`] made of borrowed ids: hashes like the owned tuple, so
/// lookups on the per-message path clone no key.
#[derive(Hash)]
struct KeyRef<'a, T>(&'a AppId, &'a T);

impl<T: Eq> Equivalent<(AppId, T)> for KeyRef<'_, T> {
    fn equivalent(&self, key: &(AppId, T)) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

/// Sharded indexes over live (attached or detached) sessions.
#[derive(Debug)]
pub(crate) struct Registry {
    by_id: Sharded<SessionId, Arc<SessionCell>>,
    by_user: Sharded<UserKey, Vec<Arc<SessionCell>>>,
    rooms: Sharded<RoomKey, MemberSet<UserId>>,
    /// Sessions ended by a newer login of the same device (bounded, oldest forgotten first),
    /// so a kicked device that auto-reconnects cannot evict the login that replaced it.
    taken_over: Mutex<(HashSet<SessionId>, VecDeque<SessionId>)>,
}

/// How many taken-over session ids are remembered.
const TAKEN_OVER_MEMORY: usize = 65_536;

impl Registry {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            by_id: Sharded::new(shards),
            by_user: Sharded::new(shards),
            rooms: Sharded::new(shards),
            taken_over: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    pub(crate) fn remember_taken_over(&self, id: SessionId) {
        let mut guard = self
            .taken_over
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if set.insert(id) {
            order.push_back(id);
            if order.len() > TAKEN_OVER_MEMORY
                && let Some(oldest) = order.pop_front()
            {
                set.remove(&oldest);
            }
        }
    }

    pub(crate) fn was_taken_over(&self, id: SessionId) -> bool {
        self.taken_over
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .contains(&id)
    }

    pub(crate) fn insert(&self, cell: Arc<SessionCell>) {
        let key = (cell.identity.app.clone(), cell.identity.user.clone());
        self.by_user
            .write(&key)
            .entry(key)
            .or_default()
            .push(cell.clone());
        self.by_id.write(&cell.id).insert(cell.id, cell);
    }

    pub(crate) fn remove(&self, cell: &SessionCell) {
        self.by_id.write(&cell.id).remove(&cell.id);
        let key = KeyRef(&cell.identity.app, &cell.identity.user);
        let mut shard = self.by_user.write(&key);
        if let Some(sessions) = shard.get_mut(&key) {
            sessions.retain(|c| c.id != cell.id);
            if sessions.is_empty() {
                shard.remove(&key);
            }
        }
    }

    pub(crate) fn session(&self, id: SessionId) -> Option<Arc<SessionCell>> {
        self.by_id.get(&id)
    }

    /// The sessions of `user` (a snapshot: delivering to them takes their locks, which must
    /// never be taken under a registry lock).
    pub(crate) fn user_sessions(&self, app: &AppId, user: &UserId) -> Vec<Arc<SessionCell>> {
        let mut cells = Vec::new();
        self.push_user_sessions(app, user, &mut cells);
        cells
    }

    /// Appends the sessions of `user` to `out`.
    pub(crate) fn push_user_sessions(
        &self,
        app: &AppId,
        user: &UserId,
        out: &mut Vec<Arc<SessionCell>>,
    ) {
        self.by_user.with(&KeyRef(app, user), |sessions| {
            out.extend(sessions.into_iter().flatten().cloned());
        });
    }

    /// Appends the sessions of every member of `room` to `out`: one pass under the room's
    /// shard lock (rooms are locked before user shards, never the other way round).
    pub(crate) fn push_room_sessions(
        &self,
        app: &AppId,
        room: &RoomId,
        out: &mut Vec<Arc<SessionCell>>,
    ) {
        self.rooms.with(&KeyRef(app, room), |members| {
            for member in members.into_iter().flatten() {
                self.push_user_sessions(app, member, out);
            }
        });
    }

    pub(crate) fn device_session(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
    ) -> Option<Arc<SessionCell>> {
        self.by_user.with(&KeyRef(app, user), |sessions| {
            sessions?
                .iter()
                .find(|c| &c.identity.device == device)
                .cloned()
        })
    }

    pub(crate) fn all_sessions(&self) -> Vec<Arc<SessionCell>> {
        self.by_id.values()
    }

    pub(crate) fn session_count(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn join(&self, app: &AppId, room: &RoomId, user: UserId) -> bool {
        let key = (app.clone(), room.clone());
        self.rooms.write(&key).entry(key).or_default().insert(user)
    }

    pub(crate) fn leave(&self, app: &AppId, room: &RoomId, user: &UserId) -> bool {
        let key = KeyRef(app, room);
        let mut shard = self.rooms.write(&key);
        let Some(members) = shard.get_mut(&key) else {
            return false;
        };
        let removed = members.remove(user);
        if members.is_empty() {
            shard.remove(&key);
        }
        removed
    }
}
