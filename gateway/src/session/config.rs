//! Session limits and timers.

use std::time::Duration;

use imgate_codec::Platform;

use crate::store::Durability;

/// Limits and timers of one session. Every buffer a session holds is bounded by these.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Interval the client is told to send heartbeats at (unless its platform has its own).
    pub heartbeat: Duration,
    /// Per-platform heartbeat intervals: mobile NATs drop idle flows after 30–300 s depending
    /// on the carrier, and a phone's radio costs battery on every ping, so iOS and Android
    /// usually want a longer interval than desktops and browsers.
    pub platform_heartbeats: Vec<(Platform, Duration)>,
    /// How long a silent connection lives, in heartbeat intervals (default 2.5).
    pub liveness_factor: f32,
    /// Most unacknowledged downstream messages kept for re-delivery and resume.
    pub max_unacked: usize,
    /// Most payload bytes of unacknowledged downstream messages kept.
    pub max_unacked_bytes: usize,
    /// How long a detached session waits for its client to resume.
    pub resume_window: Duration,
    /// How long a detached session waits before its pending messages go to push.
    pub push_grace: Duration,
    /// How long a message for an attached client may stay unacknowledged before push
    /// covers it, counted from when it was buffered (or the session resumed) whether it was
    /// transmitted or still waits behind a socket that takes nothing (a half-dead mobile
    /// socket accepts writes that never arrive, then stops accepting any).
    pub ack_timeout: Duration,
    /// Upstream receipts remembered to answer re-sent `msg_id`s identically. Set it to at
    /// least the clients' window of un-receipted requests (the SDK's default is 256): a
    /// client only re-sends requests inside that window, and older ids are answered
    /// generically. Each remembered receipt is a map entry plus an order slot (~100 B, estimated
    /// from the types' sizes, not measured), held for the session's life once it has sent
    /// that many requests (256: ~25 KB; it was 1,024: ~100 KB).
    pub receipt_memory: usize,
    /// Largest frame accepted from the client.
    pub max_frame: u32,
    /// Where the app's sessions live: [`Durability::Disk`] needs the gateway to have a
    /// session store (`GatewayBuilder::store`).
    pub durability: Durability,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(30),
            platform_heartbeats: Vec::new(),
            liveness_factor: 2.5,
            max_unacked: 1024,
            max_unacked_bytes: 1024 * 1024,
            resume_window: Duration::from_secs(120),
            push_grace: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(20),
            receipt_memory: 256,
            max_frame: imgate_codec::DEFAULT_MAX_FRAME as u32,
            durability: Durability::Memory,
        }
    }
}

impl SessionConfig {
    /// The heartbeat interval for `platform`.
    pub fn heartbeat_for(&self, platform: Platform) -> Duration {
        self.platform_heartbeats
            .iter()
            .find(|(p, _)| *p == platform)
            .map_or(self.heartbeat, |(_, interval)| *interval)
    }

    /// How long a connection with this heartbeat interval may stay silent before it is
    /// closed.
    pub fn liveness_timeout(&self, heartbeat: Duration) -> Duration {
        heartbeat.mul_f32(self.liveness_factor.max(1.0))
    }
}
