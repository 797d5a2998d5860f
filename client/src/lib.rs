//! imgate client SDK: connect over any transport, reconnect, resume, acks and receipts.
#![forbid(unsafe_code)]
