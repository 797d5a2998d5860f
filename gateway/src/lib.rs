//! imgate: an IM connection gateway (sessions, routing, backends, delivery, push fallback).
#![forbid(unsafe_code)]
