//! imgate transports: TCP, TLS, WebSocket, WSS and QUIC behind one framed connection.
#![forbid(unsafe_code)]
