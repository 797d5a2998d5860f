//! The session directory: one JetStream KV entry per user listing which node holds each of
//! the user's devices' sessions. Every write is a compare-and-set on the entry's revision,
//! so concurrent logins of one device on two nodes serialise: the later write wins and names
//! the earlier owner, which it then tells to end its session.
//!
//! Values are JSON (small, and readable with `nats kv get ig_dir <key>` when debugging).

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::names::{DIRECTORY_BUCKET, user_key};
use crate::ids::{AppId, DeviceId, UserId};

/// How many taken-over session ids a device entry remembers, so that a device kicked by a
/// newer login that reconnects with its old session on another node is refused instead of
/// evicting the login that replaced it.
const TAKEN_OVER_MEMORY: usize = 4;

/// How often a write that lost a race is retried on the fresh entry.
const MAX_ATTEMPTS: usize = 32;

/// A user's devices with a session somewhere in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserEntry {
    #[serde(default)]
    pub(crate) devices: Vec<DeviceEntry>,
}

/// Where one device's session lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceEntry {
    pub(crate) device: String,
    pub(crate) node: String,
    pub(crate) session: u64,
    /// Bumped whenever the device's session or its node changes.
    pub(crate) epoch: u64,
    /// Sessions of this device ended by a newer login, newest last.
    #[serde(default)]
    pub(crate) taken_over: Vec<u64>,
}

impl UserEntry {
    pub(crate) fn device(&self, device: &DeviceId) -> Option<&DeviceEntry> {
        self.devices.iter().find(|d| d.device == device.as_str())
    }

    /// Makes `session` on `node` the device's session; returns the entry it replaced.
    fn claim(&mut self, device: &DeviceId, node: &str, session: u64) -> Option<DeviceEntry> {
        let index = self
            .devices
            .iter()
            .position(|d| d.device == device.as_str());
        let previous = index.map(|i| self.devices.remove(i));
        let mut taken_over = previous
            .as_ref()
            .map(|p| p.taken_over.clone())
            .unwrap_or_default();
        if let Some(p) = &previous
            && p.session != session
        {
            taken_over.push(p.session);
            let excess = taken_over.len().saturating_sub(TAKEN_OVER_MEMORY);
            taken_over.drain(..excess);
        }
        self.devices.push(DeviceEntry {
            device: device.as_str().to_owned(),
            node: node.to_owned(),
            session,
            epoch: previous.as_ref().map_or(1, |p| p.epoch + 1),
            taken_over,
        });
        previous
    }
}

/// The directory bucket.
#[derive(Debug)]
pub(crate) struct Directory {
    kv: kv::Store,
    client: async_nats::Client,
    /// The bound on every directory operation (the cluster's request time-out).
    timeout: std::time::Duration,
}

impl Directory {
    /// Opens the bucket, creating it on first use (one value per key: no history).
    pub(super) async fn open(
        client: &async_nats::Client,
        replicas: usize,
        timeout: std::time::Duration,
    ) -> Result<Self, ClusterError> {
        use async_nats::jetstream::stream;
        let jetstream = async_nats::jetstream::new(client.clone());
        if jetstream.get_key_value(DIRECTORY_BUCKET).await.is_err() {
            // The bucket's stream, made the way KV clients make it. Not `create_key_value`:
            // it first reads the account's limits, whose reply from a 2.9 server (Debian's)
            // lacks fields async-nats 0.50 requires. Creating an existing stream with the
            // same config is a no-op, so nodes starting together do not race.
            jetstream
                .create_stream(stream::Config {
                    name: format!("KV_{DIRECTORY_BUCKET}"),
                    description: Some("imgate: which node holds each device's session".into()),
                    subjects: vec![format!("$KV.{DIRECTORY_BUCKET}.>")],
                    max_messages_per_subject: 1,
                    discard: stream::DiscardPolicy::New,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    num_replicas: replicas.max(1),
                    storage: stream::StorageType::File,
                    duplicate_window: std::time::Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    ClusterError::Directory(format!("creating {DIRECTORY_BUCKET}: {e}"))
                })?;
        }
        let kv = jetstream
            .get_key_value(DIRECTORY_BUCKET)
            .await
            .map_err(|e| ClusterError::Directory(format!("opening {DIRECTORY_BUCKET}: {e}")))?;
        Ok(Self {
            kv,
            client: client.clone(),
            timeout,
        })
    }

    /// Fails at once while NATS is unreachable, and after the time-out otherwise: a
    /// delivery or a login never waits longer than that for the directory.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        operation: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ClusterError> {
        if self.client.connection_state() == async_nats::connection::State::Disconnected {
            return Err(ClusterError::Directory("NATS is unreachable".into()));
        }
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(result) => result.map_err(|e| ClusterError::Directory(e.to_string())),
            Err(_) => Err(ClusterError::Directory(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// The user's entry and its revision (0: no entry).
    pub(crate) async fn read(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> Result<(UserEntry, u64), ClusterError> {
        let entry = self.bounded(self.kv.entry(user_key(app, user))).await?;
        match entry {
            None => Ok((UserEntry::default(), 0)),
            // A deleted key: empty, but a write must name the delete marker's revision.
            Some(entry) if entry.operation != kv::Operation::Put => {
                Ok((UserEntry::default(), entry.revision))
            }
            Some(entry) => {
                let value = serde_json::from_slice(&entry.value)
                    .map_err(|e| ClusterError::Directory(format!("entry {}: {e}", entry.key)))?;
                Ok((value, entry.revision))
            }
        }
    }

    /// Applies `change` to the user's entry by compare-and-set, re-reading and re-applying
    /// it when another node wrote meanwhile; returns what `change` returned on the entry
    /// that was written (or left alone: an unchanged entry is not written).
    pub(crate) async fn modify<T>(
        &self,
        app: &AppId,
        user: &UserId,
        mut change: impl FnMut(&mut UserEntry) -> T,
    ) -> Result<T, ClusterError> {
        let key = user_key(app, user);
        for _ in 0..MAX_ATTEMPTS {
            let (mut entry, revision) = self.read(app, user).await?;
            let before = entry.clone();
            let out = change(&mut entry);
            if entry == before {
                return Ok(out);
            }
            let value = if entry.devices.is_empty() {
                None
            } else {
                Some(
                    serde_json::to_vec(&entry)
                        .map_err(|e| ClusterError::Directory(e.to_string()))?,
                )
            };
            let written = self
                .bounded(async {
                    // Ok(false): another node wrote first.
                    match value {
                        None => match self.kv.delete_expect_revision(&key, Some(revision)).await {
                            Ok(()) => Ok(true),
                            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {
                                Ok(false)
                            }
                            Err(e) => Err(e.to_string()),
                        },
                        Some(value) if revision == 0 => {
                            match self.kv.create(&key, value.into()).await {
                                Ok(_) => Ok(true),
                                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                                    Ok(false)
                                }
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        Some(value) => match self.kv.update(&key, value.into(), revision).await {
                            Ok(_) => Ok(true),
                            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                                Ok(false)
                            }
                            Err(e) => Err(e.to_string()),
                        },
                    }
                })
                .await?;
            if written {
                return Ok(out);
            }
            // Another node wrote first: apply the change to what it wrote.
        }
        Err(ClusterError::Directory(format!(
            "entry {key}: {MAX_ATTEMPTS} concurrent writers in a row"
        )))
    }

    /// Makes `session` on `node` the device's session; returns the entry it replaced.
    pub(crate) async fn claim(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
        node: &str,
        session: u64,
    ) -> Result<Option<DeviceEntry>, ClusterError> {
        self.modify(app, user, |entry| entry.claim(device, node, session))
            .await
    }

    /// Removes the device's entry if it still names `session` on `node` (a session that
    /// was taken over or moved is not the device's any more: its end changes nothing).
    pub(crate) async fn release(
        &self,
        app: &AppId,
        user: &UserId,
        device: &DeviceId,
        node: &str,
        session: u64,
    ) -> Result<(), ClusterError> {
        self.modify(app, user, |entry| {
            entry.devices.retain(|d| {
                !(d.device == device.as_str() && d.node == node && d.session == session)
            });
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_bumps_the_epoch_and_remembers_the_session_it_replaced() {
        let mut entry = UserEntry::default();
        let phone = DeviceId::new("phone");
        assert_eq!(entry.claim(&phone, "a", 1), None);
        let previous = entry.claim(&phone, "b", 2).expect("replaced");
        assert_eq!(
            (previous.node.as_str(), previous.session, previous.epoch),
            ("a", 1, 1)
        );
        let now = entry.device(&phone).expect("claimed");
        assert_eq!((now.node.as_str(), now.session, now.epoch), ("b", 2, 2));
        assert_eq!(now.taken_over, vec![1]);
        // A resume moving the same session to another node is no take-over.
        entry.claim(&phone, "c", 2);
        assert_eq!(
            entry.device(&phone).map(|d| d.taken_over.clone()),
            Some(vec![1])
        );
        for session in 3..10 {
            entry.claim(&phone, "a", session);
        }
        assert_eq!(
            entry.device(&phone).map(|d| d.taken_over.clone()),
            Some(vec![5, 6, 7, 8])
        );
        assert_eq!(entry.devices.len(), 1);
    }
}
