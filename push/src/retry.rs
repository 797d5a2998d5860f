//! Exponential back-off with jitter, honouring `Retry-After`, capped by the message expiry.

use std::time::Duration;

use crate::Verdict;

/// When to try a retryable push again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay ceiling before jitter for the first retry; doubles per attempt.
    pub base: Duration,
    /// Ceiling on the exponential part (a provider's `Retry-After` may exceed it).
    pub max_delay: Duration,
    /// Total attempts, the first send included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s … up to 5 min, 8 attempts: the shape FCM's scaling guide asks for.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt, or `None` to give up.
    ///
    /// `attempts` is how many sends already failed (≥ 1). The exponential part uses "equal
    /// jitter" (half fixed, half random) so a burst of failures spreads out without ever
    /// retrying immediately. A provider's `Retry-After` and the verdict's floor are lower
    /// bounds. `remaining` is the time left before the message expires: a retry that would
    /// land after it is pointless, so the push is given up instead.
    pub fn next_delay(
        &self,
        attempts: u32,
        verdict: &Verdict,
        remaining: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let (retry_after, min_delay) = match verdict {
            Verdict::Retryable {
                retry_after,
                min_delay,
            } => (*retry_after, *min_delay),
            _ => (None, None),
        };
        let shift = attempts.saturating_sub(1).min(31);
        let exp = self.base.saturating_mul(1 << shift).min(self.max_delay);
        let half = exp / 2;
        let jitter_ms = rng.u64(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX));
        let mut delay = half + Duration::from_millis(jitter_ms);
        for floor in [retry_after, min_delay].into_iter().flatten() {
            delay = delay.max(floor);
        }
        match remaining {
            Some(left) if delay >= left => None,
            _ => Some(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> Verdict {
        Verdict::Retryable {
            retry_after: None,
            min_delay: None,
        }
    }

    #[test]
    fn doubles_within_equal_jitter_bounds() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 1..8u32 {
            let exp = Duration::from_secs(1 << (attempt - 1)).min(p.max_delay);
            let d = p
                .next_delay(attempt, &transient(), None, &mut rng)
                .expect("retry");
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {attempt}: {d:?} vs {exp:?}"
            );
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let p = RetryPolicy::default();
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (1..6)
                .map(|a| p.next_delay(a, &transient(), None, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn caps_at_max_delay_and_gives_up_after_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 30,
            ..RetryPolicy::default()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let d = p
            .next_delay(25, &transient(), None, &mut rng)
            .expect("retry");
        assert!(d <= p.max_delay && d >= p.max_delay / 2);
        assert_eq!(p.next_delay(30, &transient(), None, &mut rng), None);
    }

    #[test]
    fn honours_retry_after_and_quota_floor() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(3);
        let v = Verdict::Retryable {
            retry_after: Some(Duration::from_secs(30)),
            min_delay: None,
        };
        assert_eq!(
            p.next_delay(1, &v, None, &mut rng),
            Some(Duration::from_secs(30))
        );
        let quota = Verdict::Retryable {
            retry_after: None,
            min_delay: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            p.next_delay(1, &quota, None, &mut rng),
            Some(Duration::from_secs(60))
        );
        // A Retry-After above max_delay still wins: the provider knows better.
        let long = Verdict::Retryable {
            retry_after: Some(Duration::from_secs(900)),
            min_delay: None,
        };
        assert_eq!(
            p.next_delay(1, &long, None, &mut rng),
            Some(Duration::from_secs(900))
        );
    }

    #[test]
    fn gives_up_when_the_retry_would_land_after_expiry() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(9);
        let v = Verdict::Retryable {
            retry_after: Some(Duration::from_secs(120)),
            min_delay: None,
        };
        assert_eq!(
            p.next_delay(1, &v, Some(Duration::from_secs(60)), &mut rng),
            None
        );
        assert!(
            p.next_delay(1, &v, Some(Duration::from_secs(600)), &mut rng)
                .is_some()
        );
    }
}
