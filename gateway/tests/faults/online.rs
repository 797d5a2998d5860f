//! Faults while the device has a session: none (live), a dropped connection with and
//! without resume, a half-dead device, an overflowing outbox, a slow consumer.

use std::time::Duration;

use tokio::time::Instant;

use crate::N;
use crate::device::{self, Device};
use crate::hook::Hook;
use crate::ledger::{Ledger, pushed_and_reported};
use crate::node::{Node, Setup, case_dir};
use crate::providers::{self, fcm_endpoint, fcm_pushed};

#[tokio::test]
async fn live_device_acknowledges_every_message() {
    let hook = Hook::start(true).await;
    let fcm = providers::fcm().await;
    let dir = case_dir("live");
    let mut setup = Setup::new(hook.url());
    setup.fcm = Some(fcm_endpoint(&fcm));
    let node = Node::start(&setup.write(&dir));
    let mut bob = device::connect(node.tcp, "bob", None).await;
    bob.register_fcm("fcm-bob").await;

    let (delivered, read) = tokio::join!(node.deliver("bob", "live", N, 0), bob.read(N));
    bob.ack(read[N - 1].seq).await;
    bob.round_trip().await;
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    ledger.acked_delivers(&read);
    ledger.pushed(fcm_pushed(&fcm));
    ledger.reports(&hook.taken());
    let tally = ledger.tally("live");
    assert_eq!((tally.acked, tally.pushed, tally.reported), (N, 0, 0));
}

#[tokio::test]
async fn dropped_device_that_resumes_gets_the_rest_exactly_once() {
    let hook = Hook::start(true).await;
    let dir = case_dir("resume");
    let node = Node::start(&Setup::new(hook.url()).write(&dir));
    let mut bob = device::connect(node.tcp, "bob", None).await;
    let delivered = node.deliver("bob", "resume", N, 0).await;
    let mut read = bob.read(400).await;
    let welcome = bob.welcome.clone();
    drop(bob); // FIN, nothing acknowledged

    let mut bob = device::connect(node.tcp, "bob", Some((&welcome, 400))).await;
    assert!(bob.welcome.resumed, "{:?}", bob.welcome);
    read.extend(bob.read(N - 400).await);
    bob.ack(read[N - 1].seq).await;
    bob.round_trip().await;
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    ledger.acked_delivers(&read);
    ledger.reports(&hook.taken());
    let tally = ledger.tally("drop, resume");
    assert_eq!((tally.acked, tally.reported), (N, 0));
}

#[tokio::test]
async fn dropped_device_that_stays_away_is_pushed_then_reported() {
    let hook = Hook::start(true).await;
    let fcm = providers::fcm().await;
    let dir = case_dir("drop");
    let mut setup = Setup::new(hook.url());
    setup.fcm = Some(fcm_endpoint(&fcm));
    setup.push_grace_secs = 0;
    setup.resume_window_secs = 1;
    let node = Node::start(&setup.write(&dir));
    let mut bob = device::connect(node.tcp, "bob", None).await;
    bob.register_fcm("fcm-bob").await;
    let delivered = node.deliver("bob", "drop", N, 0).await;
    bob.read(400).await;
    drop(bob);

    pushed_and_reported(
        "drop, no resume",
        delivered.ids,
        &hook,
        &fcm,
        "session_ended",
    )
    .await;
}

/// A burst of 1,000 messages of 4 KiB to a device that stopped reading (its socket open: no
/// FIN, no reads, no acks; the kernel keeps the bytes it can, the rest waits in the gateway):
/// every message is pushed within the ack time-out plus one second of its delivery, whether
/// it was transmitted or not, with the push queue's files on disk. (Two
/// workers: the mock FCM answers on one while this test watches its answers on the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_dead_device_is_pushed_within_ack_timeout_plus_1s() {
    let hook = Hook::start(true).await;
    let fcm = providers::fcm().await;
    let dir = case_dir("half-dead");
    let mut setup = Setup::new(hook.url());
    setup.fcm = Some(fcm_endpoint(&fcm));
    // As in the measurement: 2 s, so the budget is 3 s.
    setup.ack_timeout_secs = 2;
    let node = Node::start(&setup.write(&dir));
    let mut bob = device::connect(node.tcp, "bob", None).await;
    bob.register_fcm("fcm-bob").await;
    // From here on Bob neither reads nor writes.
    let delivered = node.deliver("bob", "half-dead", N, 4 << 10).await;
    let sent_at: std::collections::HashMap<u64, Instant> = delivered
        .ids
        .iter()
        .copied()
        .zip(delivered.at.iter().copied())
        .collect();
    // The instant each answer was seen (the mock's k-th answer is its k-th record); the
    // records are read once at the end, so watching costs the mock nothing.
    let mut answered_at = Vec::with_capacity(N);
    for k in 1..=N as u64 {
        tokio::time::timeout(Duration::from_secs(30), fcm.answered(k))
            .await
            .unwrap_or_else(|_| panic!("{} of {N} pushed", k - 1));
        answered_at.push(Instant::now());
    }
    let latency: Vec<Duration> = fcm
        .requests()
        .iter()
        .zip(&answered_at)
        .map(|(request, at)| {
            let id: u64 = request.message["data"]["message_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("message id");
            *at - sent_at[&id]
        })
        .collect();
    let latest = latency.iter().max().copied().unwrap_or_default();
    let last_delivery = delivered.at.iter().max().copied().expect("deliveries");
    let budget = Duration::from_secs(setup.ack_timeout_secs + 1);
    eprintln!(
        "fault case half-dead: {N} pushes, the first {:?} after its delivery, the last {:?} \
         after the last delivery; the slowest message pushed {latest:?} after its delivery \
         (budget {budget:?}); the deliveries took {:?}",
        latency[0],
        answered_at[N - 1] - last_delivery,
        last_delivery - delivered.at.iter().min().copied().expect("deliveries")
    );
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    ledger.pushed(fcm_pushed(&fcm));
    let tally = ledger.tally("half-dead");
    assert_eq!(tally.pushed, N);
    assert_eq!(tally.push_duplicates, 0, "{:?}", ledger.pushed_twice());
    assert!(
        latest <= budget,
        "a push came {latest:?} after its delivery"
    );
    // Bob held his socket open (and unread) to the end.
    drop(bob);
}

#[tokio::test]
async fn overflowing_outbox_reports_every_message() {
    let hook = Hook::start(true).await;
    let dir = case_dir("overflow");
    let mut setup = Setup::new(hook.url());
    setup.max_unacked = 100;
    setup.resume_window_secs = 1;
    let node = Node::start(&setup.write(&dir));
    let bob = device::connect(node.tcp, "bob", None).await;
    // Bob reads nothing and acknowledges nothing: the 101st message overflows his outbox.
    let delivered = node.deliver("bob", "overflow", N, 0).await;
    hook.until_taken(N, Duration::from_secs(30)).await;
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    ledger.reports(&hook.taken());
    let tally = ledger.tally("outbox overflow");
    assert_eq!(tally.reported, N);
    let reasons = hook.by_reason();
    eprintln!("fault case outbox overflow: messages reported by reason {reasons:?}");
    assert!(
        reasons.get("buffer_overflow") > Some(&0),
        "the outbox overflowed"
    );
    // The slow-consumer close ends the session after its window; what comes later finds
    // no session.
    assert!(
        reasons
            .keys()
            .all(|r| ["buffer_overflow", "session_ended", "no_session"].contains(&r.as_str())),
        "{reasons:?}"
    );
    assert_eq!(tally.report_duplicates, 0);
    // Bob held his socket open (and unread) to the end.
    drop(bob);
}

/// A device whose socket takes nothing (16 MB for it, never read) is closed as a slow
/// consumer after the write-stall time-out; its session stays resumable and it gets every
/// message exactly once after the resume.
#[tokio::test]
async fn slow_consumer_is_closed_and_resumes_without_loss() {
    const SIZE: usize = 16 << 10;
    let hook = Hook::start(true).await;
    let dir = case_dir("slow");
    let mut setup = Setup::new(hook.url());
    setup.write_stall_timeout_secs = 1;
    setup.max_unacked_bytes = 32 << 20;
    let node = Node::start(&setup.write(&dir));
    let mut bob = device::connect(node.tcp, "bob", None).await;
    let delivered = node.deliver("bob", "slow", N, SIZE).await;
    node.until_metric("imgate_closes_total", &["outcome=\"SLOW_CONSUMER\""], |v| {
        v >= 1.0
    })
    .await;
    let mut read = bob.read_until_closed().await;
    assert!(read.len() < N, "the socket took everything: no stall");
    let last = read.last().map_or(0, |d| d.seq);
    let welcome = bob.welcome.clone();
    let mut bob: Device = device::connect(node.tcp, "bob", Some((&welcome, last))).await;
    assert!(bob.welcome.resumed, "{:?}", bob.welcome);
    read.extend(bob.read(N - read.len()).await);
    bob.ack(read[N - 1].seq).await;
    bob.round_trip().await;
    eprintln!(
        "fault case slow consumer: {last} of {N} messages ({SIZE} B each) taken before the close"
    );
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    ledger.acked_delivers(&read);
    ledger.reports(&hook.taken());
    let tally = ledger.tally("slow consumer");
    assert_eq!((tally.acked, tally.reported), (N, 0));
}
