//! The fault suite (issue 13): the real `imgate` binary with a webhook backend, loopback mock
//! FCM and APNs and devices speaking the raw protocol, one fault per case, at least 1,000
//! messages per case, and every message id accounted for: acknowledged by a device, pushed
//! (the mock's 200 answers, whose payload names the message), reported undelivered to the
//! webhook (a notice it took), or lost. Every case asserts that none is lost; a push is sent
//! twice only where a provider's answer was lost, and then counted. The figures each case
//! prints are in docs/operations.md ("What survives what: the fault suite").
//!
//! Nothing waits for time to pass: cases wait for the webhook's notices, the mocks' answers,
//! the device's frames, a metric reaching a value, or the process's exit.

#[path = "../support/mod.rs"]
mod support;

mod device;
mod hook;
mod ledger;
mod node;
mod providers;

mod offline;
mod online;
mod restart;

/// Messages per case.
pub(crate) const N: usize = 1_000;
