//! Connection limits as small layers: a global semaphore and a per-IP count.
//!
//! The global permit is taken *before* `accept`, so at the limit new connections wait in the
//! kernel's backlog instead of costing a file descriptor and a task (mini-redis style). The
//! per-IP check needs the peer address, so it runs right after `accept` and refuses at once.
//! Both are released when the [`ConnGuard`] is dropped with the connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection refused by a limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The peer's address already holds its maximum number of connections.
    #[error("connection limit reached ({limit} per IP address)")]
    PerIp {
        /// The per-IP maximum.
        limit: usize,
    },
    /// The listener is at its global maximum (HTTP fallback: an open cannot wait in the
    /// backlog as a socket does).
    #[error("connection limit reached ({limit} connections)")]
    Global {
        /// The global maximum.
        limit: usize,
    },
}

/// The global and per-IP connection limits of one listener (cheap to clone; clones share).
#[derive(Clone, Debug)]
pub struct ConnLimits {
    global: Arc<Semaphore>,
    max_connections: usize,
    per_ip: Option<Arc<PerIp>>,
}

#[derive(Debug)]
struct PerIp {
    max: usize,
    // Touched once per connect and once per disconnect, never per message, so one mutex
    // is enough.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds a connection's place under the limits; dropping it frees the place.
#[derive(Debug)]
pub struct ConnGuard {
    _permit: OwnedSemaphorePermit,
    ip: Option<(Arc<PerIp>, IpAddr)>,
}

impl ConnLimits {
    /// At most `max_connections` at once (clamped to tokio's semaphore maximum), and at most
    /// `max_per_ip` from one address (`None`: no per-IP limit).
    pub fn new(max_connections: usize, max_per_ip: Option<usize>) -> Self {
        let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            global: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            per_ip: max_per_ip.map(|max| {
                Arc::new(PerIp {
                    max,
                    counts: Mutex::new(HashMap::new()),
                })
            }),
        }
    }

    /// Waits for a global slot. Returns `true` in the second field if it had to wait
    /// (counted as a limit event).
    pub async fn acquire(&self) -> (OwnedSemaphorePermit, bool) {
        if let Ok(permit) = Arc::clone(&self.global).try_acquire_owned() {
            return (permit, false);
        }
        let permit = Arc::clone(&self.global)
            .acquire_owned()
            .await
            .expect("invariant: the limit semaphore is never closed");
        (permit, true)
    }

    /// [`ConnLimits::acquire`] for an accept loop: a wait is counted in `stats` as it
    /// begins, so an accept loop held at the limit shows at once (and a test can wait for
    /// that instead of for time to pass).
    pub(crate) async fn acquire_counted(
        &self,
        stats: &crate::TransportStats,
    ) -> OwnedSemaphorePermit {
        if let Ok(permit) = Arc::clone(&self.global).try_acquire_owned() {
            return permit;
        }
        stats.incr(&stats.global_limit_waits);
        self.acquire().await.0
    }

    /// Admits a connection from `ip` holding `permit`, or refuses it at the per-IP limit.
    pub fn admit(&self, permit: OwnedSemaphorePermit, ip: IpAddr) -> Result<ConnGuard, LimitError> {
        let Some(per_ip) = &self.per_ip else {
            return Ok(ConnGuard {
                _permit: permit,
                ip: None,
            });
        };
        let mut counts = per_ip.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= per_ip.max {
            return Err(LimitError::PerIp { limit: per_ip.max });
        }
        *count += 1;
        Ok(ConnGuard {
            _permit: permit,
            ip: Some((Arc::clone(per_ip), ip)),
        })
    }

    /// Admits a connection from `ip` if a global slot is free now (no waiting).
    pub fn try_admit(&self, ip: IpAddr) -> Result<ConnGuard, LimitError> {
        let permit =
            Arc::clone(&self.global)
                .try_acquire_owned()
                .map_err(|_| LimitError::Global {
                    limit: self.max_connections,
                })?;
        self.admit(permit, ip)
    }

    /// Connections currently holding a global slot.
    pub fn active(&self) -> usize {
        self.max_connections - self.global.available_permits()
    }

    /// The global maximum.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = self.ip.take() {
            let mut counts = per_ip.counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    // Keep the map as small as the set of connected addresses.
                    counts.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_ip_limit_counts_and_releases() {
        let limits = ConnLimits::new(10, Some(2));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let a = limits
            .admit(limits.acquire().await.0, ip)
            .expect("admitted");
        let _b = limits
            .admit(limits.acquire().await.0, ip)
            .expect("admitted");
        assert_eq!(
            limits
                .admit(limits.acquire().await.0, ip)
                .expect_err("over the limit"),
            LimitError::PerIp { limit: 2 }
        );
        let _c = limits
            .admit(limits.acquire().await.0, other)
            .expect("admitted");
        assert_eq!(limits.active(), 3);
        drop(a);
        let _d = limits
            .admit(limits.acquire().await.0, ip)
            .expect("admitted");
    }

    #[tokio::test(start_paused = true)]
    async fn global_limit_waits_for_a_slot() {
        let limits = ConnLimits::new(1, None);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let first = limits
            .admit(limits.acquire().await.0, ip)
            .expect("admitted");
        let waiting = tokio::time::timeout(std::time::Duration::from_secs(1), limits.acquire());
        assert!(waiting.await.is_err(), "second slot must wait");
        drop(first);
        let (_permit, waited) = limits.acquire().await;
        assert!(!waited);
    }
}
