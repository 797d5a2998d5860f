//! imgate push: APNs and FCM HTTP v1 providers, durable dispatcher, loopback mock servers.
#![forbid(unsafe_code)]
