//! Wall-clock time that follows tokio's clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// UNIX time derived from one `SystemTime` reading plus tokio's elapsed time.
///
/// Providers need wall-clock values (JWT `iat`, `Retry-After` dates, durable due times), but
/// tests pause and advance tokio's clock; anchoring the wall clock on a tokio `Instant` makes
/// both move together, so a paused test can age a JWT by an hour without sleeping.
#[derive(Debug, Clone, Copy)]
pub struct UnixClock {
    base_ms: u64,
    base: Instant,
}

impl UnixClock {
    /// A clock reading the system time now.
    pub fn system() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::starting_at(base_ms)
    }

    /// A clock whose current reading is `unix_ms`.
    pub fn starting_at(unix_ms: u64) -> Self {
        Self {
            base_ms: unix_ms,
            base: Instant::now(),
        }
    }

    /// Milliseconds since the UNIX epoch.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }

    /// Seconds since the UNIX epoch.
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// The tokio instant at which this clock reads `unix_ms` (now, if that is in the past).
    pub fn instant_at(&self, unix_ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(unix_ms.saturating_sub(self.now_ms()))
    }
}

impl Default for UnixClock {
    fn default() -> Self {
        Self::system()
    }
}
