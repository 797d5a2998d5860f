//! Counters of what the listeners accepted and refused, for metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Counters shared by a listener and its connections (relaxed atomics: they are
        /// statistics, not synchronisation). The gateway exports them to Prometheus as
        /// `imgate_transport_events_total{listener, transport, event}`.
        #[derive(Debug, Default)]
        pub struct TransportStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// Woken by every count, for [`TransportStats::wait_for`].
            changed: tokio::sync::Notify,
        }

        /// A plain copy of [`TransportStats`] at one instant.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl TransportStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl StatsSnapshot {
            /// Every counter with its field name (for exporters: the names are stable).
            pub fn counters(&self) -> impl Iterator<Item = (&'static str, u64)> + use<> {
                [$((stringify!($name), self.$name),)*].into_iter()
            }
        }
    };
}

stats! {
    /// Sockets (or QUIC attempts) taken from the kernel.
    accepted,
    /// Connections whose transport handshake finished and that were handed to `accept()`.
    established,
    /// TLS handshakes (TLS, WSS, QUIC) that resumed an earlier session with a ticket instead
    /// of a full handshake.
    handshake_resumed,
    /// Times the accept loop waited because the global connection limit was reached
    /// (counted as the wait begins).
    global_limit_waits,
    /// Connections refused because their IP address was at its limit.
    rejected_per_ip,
    /// `accept()` errors that made the loop back off (file descriptors exhausted, …).
    accept_errors,
    /// Handshakes that did not finish before the deadline.
    handshake_timeout,
    /// TLS handshakes that failed (bad bytes, untrusted peer, protocol version).
    handshake_tls,
    /// TLS or QUIC handshakes that did not negotiate ALPN `imgate/1`.
    handshake_alpn,
    /// WebSocket upgrades that were not valid HTTP/WebSocket requests.
    handshake_ws_bad_request,
    /// WebSocket upgrades on a path other than the configured one.
    handshake_ws_path,
    /// WebSocket upgrades from an Origin outside the allow-list.
    handshake_ws_origin,
    /// WebSocket upgrades without the `imgate.v1` subprotocol.
    handshake_ws_subprotocol,
    /// QUIC handshakes that failed, or connections that never opened their stream.
    handshake_quic,
    /// HTTP-fallback requests that were not a valid open, send or close request (wrong path
    /// or method, a missing or malformed connection id header, an open naming a connection).
    handshake_http_bad_request,
    /// HTTP-fallback requests from an Origin outside the allow-list.
    handshake_http_origin,
    /// HTTP-fallback opens refused because the listener was at its global connection limit
    /// (the other transports wait in the backlog instead, counted in `global_limit_waits`).
    rejected_global,
    /// HTTP-fallback POST bodies over the size limit (413; the connection closes with
    /// `FRAME_TOO_LARGE`).
    http_post_too_large,
    /// HTTP-fallback POST bodies not received within the deadline (408; the connection
    /// closes with `HANDSHAKE_TIMEOUT`).
    http_post_timeout,
    /// HTTP-fallback POST bodies that did not end on a frame boundary (400; the connection
    /// closes with `PROTOCOL_ERROR`).
    http_post_malformed,
    /// HTTP-fallback POSTs naming no open connection (404).
    http_post_unknown,
    /// HTTP-fallback POSTs sent while another POST of the same connection was still being
    /// received (409; the connection is unaffected).
    http_post_conflict,
    /// Inbound frames over the frame limit.
    frame_too_large,
    /// WebSocket text messages.
    unsupported_data,
    /// Other malformed inbound frames.
    protocol_error,
}

/// Why a transport handshake failed; each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The deadline passed.
    Timeout,
    /// TLS failed.
    Tls,
    /// ALPN did not produce `imgate/1`.
    Alpn,
    /// Not a valid WebSocket upgrade request.
    WsBadRequest,
    /// Wrong WebSocket path.
    WsPath,
    /// Origin not allowed.
    WsOrigin,
    /// Subprotocol `imgate.v1` not offered.
    WsSubprotocol,
    /// QUIC handshake or stream opening failed.
    Quic,
    /// Not a valid HTTP-fallback request.
    HttpBadRequest,
    /// Origin not allowed (HTTP fallback).
    HttpOrigin,
}

impl HandshakeFailure {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Alpn => "alpn",
            Self::WsBadRequest => "ws_bad_request",
            Self::WsPath => "ws_path",
            Self::WsOrigin => "ws_origin",
            Self::WsSubprotocol => "ws_subprotocol",
            Self::Quic => "quic",
            Self::HttpBadRequest => "http_bad_request",
            Self::HttpOrigin => "http_origin",
        }
    }
}

impl TransportStats {
    /// Counts one event in `counter` (one of this struct's) and wakes the waiters.
    pub(crate) fn incr(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Waits until the counters satisfy `check` and returns them: a test (or a probe) waits
    /// for the count that proves what it needs instead of polling.
    pub async fn wait_for(&self, mut check: impl FnMut(&StatsSnapshot) -> bool) -> StatsSnapshot {
        loop {
            // Registered before the counters are read, so a count in between still wakes us.
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            let snapshot = self.snapshot();
            if check(&snapshot) {
                return snapshot;
            }
            changed.await;
        }
    }

    /// Counts a failed handshake under its reason.
    pub(crate) fn handshake_failed(&self, reason: HandshakeFailure) {
        self.incr(match reason {
            HandshakeFailure::Timeout => &self.handshake_timeout,
            HandshakeFailure::Tls => &self.handshake_tls,
            HandshakeFailure::Alpn => &self.handshake_alpn,
            HandshakeFailure::WsBadRequest => &self.handshake_ws_bad_request,
            HandshakeFailure::WsPath => &self.handshake_ws_path,
            HandshakeFailure::WsOrigin => &self.handshake_ws_origin,
            HandshakeFailure::WsSubprotocol => &self.handshake_ws_subprotocol,
            HandshakeFailure::Quic => &self.handshake_quic,
            HandshakeFailure::HttpBadRequest => &self.handshake_http_bad_request,
            HandshakeFailure::HttpOrigin => &self.handshake_http_origin,
        });
    }
}
