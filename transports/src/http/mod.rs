//! The HTTP fallback (HTTP, HTTPS): for networks whose proxies block WebSocket. A connection
//! is one long response carrying the server's frames and POSTs carrying the client's, both
//! with the byte-stream framing; it is tied together by an unguessable id that the opening
//! response announces (docs/protocol.md §1.1).
//!
//! Each logical connection becomes a [`FramedConn`](crate::FramedConn) like any other: its
//! halves read and write a [`Channel`] (two byte queues) that the request handlers fill and
//! the response body drains, so the gateway's handshake, sessions, resume, limits and close
//! codes are the ones of every transport. HTTP/1.1 only (hyper): a connection is then two
//! sockets at most, the stream's and one kept alive for POSTs, and closing the stream's
//! socket ends exactly one connection.
//!
//! - `queue`: the channel and the halves' transport; `server`: the listener side (accept
//!   loop, request handlers, CORS); `body`: the long response; `client`: the connector side.

mod body;
mod client;
mod queue;
mod server;

pub(crate) use client::{Dial, connect};
pub(crate) use queue::{Channel, HttpRead, HttpWrite, Refusal, Side};
pub(crate) use server::{Server, serve_socket};

/// The header naming a connection: on the opening response, and on every later request.
pub(crate) const CONNECTION_HEADER: &str = "imgate-connection";
/// The content type of request and response bodies: length-prefixed frames.
pub(crate) const CONTENT_TYPE: &str = "application/octet-stream";
