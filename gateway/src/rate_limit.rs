//! Token buckets: the handshake rate (per gateway) and the message rate (per connection).
//! Sans-IO: time is an argument.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A rate limit: `rate` per second sustained, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained tokens per second.
    pub rate: f64,
    /// Bucket size.
    pub burst: f64,
}

impl RateLimit {
    /// `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
        }
    }
}

/// One token bucket. 24 bytes, so one per connection is cheap.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: &RateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, limit: &RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated);
        self.updated = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * limit.rate).min(limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available.
    pub fn wait_time(&self, limit: &RateLimit) -> Duration {
        if self.tokens >= 1.0 || limit.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / limit.rate)
    }
}

/// A token bucket shared by every connection (the handshake rate).
#[derive(Debug)]
pub(crate) struct SharedBucket {
    limit: RateLimit,
    bucket: Mutex<TokenBucket>,
}

impl SharedBucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            bucket: Mutex::new(TokenBucket::new(&limit, Instant::now())),
        }
    }

    pub(crate) fn try_take(&self, now: Instant) -> bool {
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_take(&self.limit, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limit = RateLimit::new(10.0, 3.0);
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(&limit, t0);
        assert!((0..3).all(|_| bucket.try_take(&limit, t0)));
        assert!(!bucket.try_take(&limit, t0));
        assert_eq!(bucket.wait_time(&limit), Duration::from_millis(100));
        assert!(!bucket.try_take(&limit, t0 + Duration::from_millis(99)));
        assert!(bucket.try_take(&limit, t0 + Duration::from_millis(200)));
        // Never more than the burst, however long it was idle.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| bucket.try_take(&limit, later)));
        assert!(!bucket.try_take(&limit, later));
    }
}
