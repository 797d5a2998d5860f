//! The device registry: which push tokens each user's devices registered, per app.
//!
//! One registration per (app, user, device installation): a device that registers again
//! replaces its token. A token index answers "whose token is this?" when a provider reports
//! it dead.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use imgate_push::Platform;
use redb::{Database, TableDefinition};

use crate::ids::{AppId, DeviceId, UserId};

/// One device's push registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRegistration {
    /// Push service.
    pub platform: Platform,
    /// The provider's token (APNs: hex; FCM: registration token).
    pub token: String,
    /// APNs topic (bundle id); empty for FCM.
    pub topic: String,
    /// APNs sandbox (development) environment.
    pub sandbox: bool,
    /// When it was registered, ms since the epoch.
    pub registered_at_ms: u64,
}

/// A registered device of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredDevice {
    /// The device installation.
    pub device: DeviceId,
    /// Its registration.
    pub registration: DeviceRegistration,
}

/// A device-store failure.
#[derive(Debug, thiserror::Error)]
#[error("device store: {0}")]
pub struct StoreError(pub String);

/// Where registrations live. Every method is a short synchronous transaction; writes are
/// durable when they return.
pub trait DeviceStore: Send + Sync + fmt::Debug + 'static {
    /// Stores (or replaces) `device`'s registration.
    fn put(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
        registration: &DeviceRegistration,
    ) -> Result<(), StoreError>;

    /// Forgets `device`'s registration, returning it.
    fn remove(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<DeviceRegistration>, StoreError>;

    /// Every registered device of `user`.
    fn devices(&self, app: &AppId, user: &UserId) -> Result<Vec<RegisteredDevice>, StoreError>;

    /// Who registered `token` (for pruning).
    fn owner(&self, app: &AppId, token: &str) -> Result<Option<(UserId, DeviceId)>, StoreError>;

    /// Forgets `token` if it is still the registered one, returning its owner.
    fn remove_token(
        &self,
        app: &AppId,
        token: &str,
    ) -> Result<Option<(UserId, DeviceId)>, StoreError> {
        let Some((user, device)) = self.owner(app, token)? else {
            return Ok(None);
        };
        let current = self
            .devices(app, &user)?
            .into_iter()
            .find(|d| d.device == device);
        match current {
            Some(d) if d.registration.token == token => {
                self.remove(app, &user, &device)?;
                Ok(Some((user, device)))
            }
            _ => Ok(None),
        }
    }
}

// Keys are `app \0 user \0 device` (devices) and `app \0 token` (owners); ids with a NUL are
// refused at registration.
const SEP: char = '\0';

fn device_key(app: &AppId, user: &UserId, device: &DeviceId) -> String {
    format!("{app}{SEP}{user}{SEP}{device}")
}

fn user_prefix(app: &AppId, user: &UserId) -> String {
    format!("{app}{SEP}{user}{SEP}")
}

fn token_key(app: &AppId, token: &str) -> String {
    format!("{app}{SEP}{token}")
}

fn owner_value(user: &UserId, device: &DeviceId) -> String {
    format!("{user}{SEP}{device}")
}

fn parse_owner(value: &str) -> Option<(UserId, DeviceId)> {
    let (user, device) = value.split_once(SEP)?;
    Some((UserId::new(user), DeviceId::new(device)))
}

/// A registry in memory: for tests, and for deployments that re-register on every start.
#[derive(Debug, Default)]
pub struct MemoryDeviceStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    devices: BTreeMap<String, DeviceRegistration>,
    owners: HashMap<String, String>,
}

impl MemoryDeviceStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DeviceStore for MemoryDeviceStore {
    fn put(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
        registration: &DeviceRegistration,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let key = device_key(app, user, device);
        if let Some(old) = inner.devices.insert(key, registration.clone()) {
            inner.owners.remove(&token_key(app, &old.token));
        }
        inner.owners.insert(
            token_key(app, &registration.token),
            owner_value(user, device),
        );
        Ok(())
    }

    fn remove(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<DeviceRegistration>, StoreError> {
        let mut inner = self.lock();
        let old = inner.devices.remove(&device_key(app, user, device));
        if let Some(old) = &old {
            inner.owners.remove(&token_key(app, &old.token));
        }
        Ok(old)
    }

    fn devices(&self, app: &AppId, user: &UserId) -> Result<Vec<RegisteredDevice>, StoreError> {
        let prefix = user_prefix(app, user);
        let inner = self.lock();
        Ok(inner
            .devices
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, r)| RegisteredDevice {
                device: DeviceId::new(&k[prefix.len()..]),
                registration: r.clone(),
            })
            .collect())
    }

    fn owner(&self, app: &AppId, token: &str) -> Result<Option<(UserId, DeviceId)>, StoreError> {
        Ok(self
            .lock()
            .owners
            .get(&token_key(app, token))
            .and_then(|v| parse_owner(v)))
    }
}

const DEVICES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("push_devices");
const OWNERS: TableDefinition<'_, &str, &str> = TableDefinition::new("push_token_owners");

/// A registry in a redb file: every write is committed (fsync) before it returns, so a
/// restart loses nothing.
pub struct RedbDeviceStore {
    db: Database,
}

impl fmt::Debug for RedbDeviceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbDeviceStore").finish_non_exhaustive()
    }
}

fn err(e: impl fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedbDeviceStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db =
            Database::create(path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(DEVICES).map_err(err)?;
            tx.open_table(OWNERS).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }
}

impl DeviceStore for RedbDeviceStore {
    fn put(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
        registration: &DeviceRegistration,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut devices = tx.open_table(DEVICES).map_err(err)?;
            let mut owners = tx.open_table(OWNERS).map_err(err)?;
            let key = device_key(app, user, device);
            let old = devices
                .insert(key.as_str(), encode(registration).as_slice())
                .map_err(err)?
                .and_then(|v| decode(v.value()));
            if let Some(old) = old {
                owners
                    .remove(token_key(app, &old.token).as_str())
                    .map_err(err)?;
            }
            owners
                .insert(
                    token_key(app, &registration.token).as_str(),
                    owner_value(user, device).as_str(),
                )
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn remove(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<DeviceRegistration>, StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let old;
        {
            let mut devices = tx.open_table(DEVICES).map_err(err)?;
            let mut owners = tx.open_table(OWNERS).map_err(err)?;
            old = devices
                .remove(device_key(app, user, device).as_str())
                .map_err(err)?
                .and_then(|v| decode(v.value()));
            if let Some(old) = &old {
                owners
                    .remove(token_key(app, &old.token).as_str())
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(old)
    }

    fn devices(&self, app: &AppId, user: &UserId) -> Result<Vec<RegisteredDevice>, StoreError> {
        let prefix = user_prefix(app, user);
        let tx = self.db.begin_read().map_err(err)?;
        let devices = tx.open_table(DEVICES).map_err(err)?;
        let mut out = Vec::new();
        for entry in devices.range(prefix.as_str()..).map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            let key = key.value();
            if !key.starts_with(&prefix) {
                break;
            }
            if let Some(registration) = decode(value.value()) {
                out.push(RegisteredDevice {
                    device: DeviceId::new(&key[prefix.len()..]),
                    registration,
                });
            }
        }
        Ok(out)
    }

    fn owner(&self, app: &AppId, token: &str) -> Result<Option<(UserId, DeviceId)>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let owners = tx.open_table(OWNERS).map_err(err)?;
        let value = owners.get(token_key(app, token).as_str()).map_err(err)?;
        Ok(value.and_then(|v| parse_owner(v.value())))
    }
}

// Value layout (version 1): [1, platform, sandbox, registered_at_ms: u64 LE,
// topic_len: u32 LE, topic, token].
fn encode(r: &DeviceRegistration) -> Vec<u8> {
    let mut out = Vec::with_capacity(15 + r.topic.len() + r.token.len());
    out.push(1);
    out.push(match r.platform {
        Platform::Apns => 0,
        Platform::Fcm => 1,
    });
    out.push(u8::from(r.sandbox));
    out.extend_from_slice(&r.registered_at_ms.to_le_bytes());
    let topic_len = u32::try_from(r.topic.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&topic_len.to_le_bytes());
    out.extend_from_slice(r.topic.as_bytes());
    out.extend_from_slice(r.token.as_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<DeviceRegistration> {
    let (&[1, platform, sandbox], rest) = bytes.split_first_chunk::<3>()? else {
        return None;
    };
    let (at, rest) = rest.split_first_chunk::<8>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (topic, token) = rest.split_at(len);
    Some(DeviceRegistration {
        platform: match platform {
            0 => Platform::Apns,
            1 => Platform::Fcm,
            _ => return None,
        },
        sandbox: sandbox != 0,
        registered_at_ms: u64::from_le_bytes(*at),
        topic: String::from_utf8(topic.to_vec()).ok()?,
        token: String::from_utf8(token.to_vec()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(token: &str) -> DeviceRegistration {
        DeviceRegistration {
            platform: Platform::Apns,
            token: token.into(),
            topic: "com.example.chat".into(),
            sandbox: true,
            registered_at_ms: 42,
        }
    }

    fn exercise(store: &dyn DeviceStore) {
        let (app, other_app) = (AppId::new("chat"), AppId::new("other"));
        let (ann, bob) = (UserId::new("ann"), UserId::new("bob"));
        let (phone, pad) = (DeviceId::new("phone"), DeviceId::new("pad"));
        store.put(&app, &ann, &phone, &reg("t1")).expect("put");
        store.put(&app, &ann, &pad, &reg("t2")).expect("put");
        store.put(&app, &bob, &phone, &reg("t3")).expect("put");
        store
            .put(&other_app, &ann, &phone, &reg("t9"))
            .expect("put");
        let devices = store.devices(&app, &ann).expect("devices");
        assert_eq!(devices.len(), 2);
        assert!(
            devices
                .iter()
                .any(|d| d.device == pad && d.registration == reg("t2"))
        );
        // Re-registering replaces the token and its index entry.
        store.put(&app, &ann, &phone, &reg("t1b")).expect("put");
        assert_eq!(store.owner(&app, "t1").expect("owner"), None);
        assert_eq!(
            store.owner(&app, "t1b").expect("owner"),
            Some((ann.clone(), phone.clone()))
        );
        // Pruning a stale token keeps the new one; pruning the current one removes it.
        assert_eq!(store.remove_token(&app, "t1").expect("prune"), None);
        assert_eq!(
            store.remove_token(&app, "t1b").expect("prune"),
            Some((ann.clone(), phone.clone()))
        );
        assert_eq!(store.devices(&app, &ann).expect("devices").len(), 1);
        assert_eq!(store.devices(&other_app, &ann).expect("devices").len(), 1);
        assert_eq!(
            store.remove(&app, &bob, &phone).expect("remove"),
            Some(reg("t3"))
        );
        assert!(store.devices(&app, &bob).expect("devices").is_empty());
    }

    #[test]
    fn memory_store() {
        exercise(&MemoryDeviceStore::new());
    }

    #[test]
    fn redb_store_survives_reopen() {
        let dir = std::env::temp_dir().join(format!(
            "imgate-devices-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("devices.redb");
        exercise(&RedbDeviceStore::open(&path).expect("open"));
        let store = RedbDeviceStore::open(&path).expect("reopen");
        let ann = store
            .devices(&AppId::new("chat"), &UserId::new("ann"))
            .expect("devices");
        assert_eq!(ann.len(), 1);
        assert_eq!(ann[0].registration, reg("t2"));
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn fastrand_u64() -> u64 {
        let mut b = [0; 8];
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    }
}
