//! The accept back-off policy: recover from file-descriptor exhaustion without spinning.
//!
//! When the process runs out of descriptors (EMFILE/ENFILE) or kernel buffers, `accept`
//! fails immediately and keeps failing; retrying in a tight loop burns a core and starves
//! the connections that would free descriptors. So the loop sleeps, doubling from 10 ms to
//! 1 s, and resets after the next success.

use std::io;
use std::time::Duration;

/// Exponential back-off for a failing accept loop.
#[derive(Clone, Debug)]
pub struct AcceptBackoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl AcceptBackoff {
    /// Starts at `initial`, doubles per consecutive failure, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to sleep after a failure; the following one will be twice as long.
    pub fn failure(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Call after a successful accept: the next failure starts from `initial` again.
    pub fn success(&mut self) {
        self.next = self.initial;
    }
}

/// Whether an `accept` error concerns only the one connection being accepted (the peer
/// reset it before we got to it), so the loop should simply try again. Everything else
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM) is process- or system-wide and calls for back-off.
pub fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.failure().as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.success();
        assert_eq!(backoff.failure(), Duration::from_millis(10));
    }

    #[test]
    fn classifies_errors() {
        assert!(is_connection_error(
            &io::ErrorKind::ConnectionAborted.into()
        ));
        // EMFILE surfaces as an uncategorised OS error: back off.
        assert!(!is_connection_error(&io::Error::from_raw_os_error(24)));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(23)));
    }
}
