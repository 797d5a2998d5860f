//! Faults on the offline path: a user without a session, a webhook too slow for its notice
//! queue (with and without push tokens), a push queue at capacity.

use std::time::Duration;

use crate::N;
use crate::device;
use crate::hook::Hook;
use crate::ledger::{Ledger, pushed_and_reported};
use crate::node::{Node, Setup, case_dir};
use crate::providers::{self, FcmEndpoint, fcm_endpoint, fcm_pushed};

/// Bob registers an FCM token, then leaves for good: his session ends (the webhook hears
/// `disconnect`) and he has none when the messages come.
async fn sessionless_with_token(node: &Node, hook: &Hook, token: &str) {
    let mut bob = device::connect(node.tcp, "bob", None).await;
    bob.register_fcm(token).await;
    drop(bob);
    hook.until_ended("bob").await;
}

#[tokio::test]
async fn user_without_a_session_is_pushed_and_reported() {
    let hook = Hook::start(true).await;
    let fcm = providers::fcm().await;
    let dir = case_dir("no-session");
    let mut setup = Setup::new(hook.url());
    setup.fcm = Some(fcm_endpoint(&fcm));
    setup.resume_window_secs = 0;
    let node = Node::start(&setup.write(&dir));
    sessionless_with_token(&node, &hook, "fcm-bob").await;

    let delivered = node.deliver("bob", "no-session", N, 0).await;
    assert_eq!(delivered.outcomes.get("offline"), Some(&N), "{delivered:?}");
    pushed_and_reported("no session", delivered.ids, &hook, &fcm, "no_session").await;
}

/// The webhook takes nothing while 2 × 1,000 messages for users without a session arrive:
/// its notice queue (16) fills, the hand-offs wait instead of dropping, pushes go out
/// meanwhile for the user with a token; once the webhook answers, every message is reported.
#[tokio::test]
async fn full_notice_queue_waits_and_reports_every_message_with_and_without_tokens() {
    const CAPACITY: usize = 16;
    let hook = Hook::start(true).await;
    let fcm = providers::fcm().await;
    let dir = case_dir("notice-queue");
    let mut setup = Setup::new(hook.url());
    setup.fcm = Some(fcm_endpoint(&fcm));
    setup.resume_window_secs = 0;
    setup.notice_capacity = CAPACITY;
    let node = Node::start(&setup.write(&dir));
    sessionless_with_token(&node, &hook, "fcm-bob").await;

    hook.close();
    // Bob has a push token, Carol never registered one (nor connected).
    let (bob, carol) = tokio::join!(
        node.deliver("bob", "notice-bob", N, 0),
        node.deliver("carol", "notice-carol", N, 0)
    );
    node.until_metric("imgate_webhook_notices_pending", &[], |v| {
        v >= CAPACITY as f64
    })
    .await;
    // Bob's pushes do not wait for the webhook.
    tokio::time::timeout(Duration::from_secs(30), fcm.answered(N as u64))
        .await
        .expect("pushed while the webhook takes nothing");
    let taken_while_closed = hook.taken().len();
    hook.open();
    hook.until_taken(2 * N, Duration::from_secs(60)).await;
    let dropped = node
        .metric(
            "imgate_webhook_notices_total",
            &["kind=\"undelivered\"", "outcome=\"dropped\""],
        )
        .await;
    assert_eq!(dropped, 0.0);
    assert_eq!(taken_while_closed, 0);

    let mut ledger = Ledger::default();
    ledger.delivered(bob.ids.iter().copied());
    ledger.pushed(fcm_pushed(&fcm));
    ledger.reports(&hook.taken_for("bob"));
    let tally = ledger.tally("full notice queue, push token");
    assert_eq!((tally.pushed, tally.reported), (N, N));
    assert_eq!(tally.push_duplicates, 0);
    let mut ledger = Ledger::default();
    ledger.delivered(carol.ids.iter().copied());
    ledger.reports(&hook.taken_for("carol"));
    let tally = ledger.tally("full notice queue, no push token");
    assert_eq!((tally.pushed, tally.reported), (0, N));
}

/// The push provider is down and the push queue holds 100: the rest of 1,000 pushes are shed,
/// counted, and every message is still reported; after a restart with the provider back, the
/// queued pushes go out.
#[tokio::test]
async fn push_queue_at_capacity_sheds_visibly_and_loses_nothing() {
    const CAPACITY: usize = 100;
    let hook = Hook::start(true).await;
    let dir = case_dir("push-capacity");
    let mut setup = Setup::new(hook.url());
    setup.fcm = Some(FcmEndpoint::down());
    setup.resume_window_secs = 0;
    setup.push_queue_capacity = CAPACITY;
    let node = Node::start(&setup.write(&dir));
    sessionless_with_token(&node, &hook, "fcm-bob").await;

    let delivered = node.deliver("bob", "capacity", N, 0).await;
    hook.until_taken(N, Duration::from_secs(30)).await;
    let shed = node
        .until_metric("push_shed_total", &[], |v| v >= (N - CAPACITY) as f64)
        .await;
    let depth = node.metric("push_queue_depth", &[]).await;
    assert_eq!((shed, depth), ((N - CAPACITY) as f64, CAPACITY as f64));
    node.kill().await;

    let fcm = providers::fcm().await;
    setup.fcm = Some(fcm_endpoint(&fcm));
    let node = Node::start(&setup.write(&dir));
    tokio::time::timeout(Duration::from_secs(30), fcm.answered(CAPACITY as u64))
        .await
        .expect("the queued pushes sent after the restart");
    node.until_metric("push_queue_depth", &[], |v| v == 0.0)
        .await;
    eprintln!("fault case push queue at capacity: {shed} pushes shed, {depth} queued");
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    ledger.pushed(fcm_pushed(&fcm));
    ledger.reports(&hook.taken());
    let tally = ledger.tally("push queue at capacity");
    assert_eq!((tally.pushed, tally.reported), (CAPACITY, N));
    assert_eq!(tally.push_duplicates, 0);
}
