//! Reconnect delays: exponential back-off with full jitter.

use std::time::Duration;

use crate::ReconnectPolicy;

/// The delay before attempt `attempt` (0 for the first reconnect): uniform in
/// `[0, min(max, initial × 2^attempt)]`.
pub(crate) fn backoff(policy: &ReconnectPolicy, attempt: u32) -> Duration {
    let ceiling = policy
        .initial
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(policy.max);
    uniform(ceiling)
}

/// The delay after a `GoAway`: `reconnect_after` plus a jitter uniform in
/// `[0, max(reconnect_after, policy.goaway_jitter)]` (protocol §11).
pub(crate) fn after_goaway(policy: &ReconnectPolicy, reconnect_after: Duration) -> Duration {
    reconnect_after + uniform(reconnect_after.max(policy.goaway_jitter))
}

fn uniform(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_the_cap() {
        let policy = ReconnectPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..ReconnectPolicy::default()
        };
        for _ in 0..200 {
            assert!(backoff(&policy, 0) <= Duration::from_millis(100));
            assert!(backoff(&policy, 2) <= Duration::from_millis(400));
            assert!(backoff(&policy, 40) <= Duration::from_secs(1));
            let goaway = after_goaway(&policy, Duration::from_millis(50));
            assert!(goaway >= Duration::from_millis(50));
            assert!(goaway <= Duration::from_millis(50) + policy.goaway_jitter);
        }
    }
}
