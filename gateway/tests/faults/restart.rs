//! Faults of the process: SIGTERM and SIGKILL with unacknowledged messages, SIGKILL with
//! undelivered notices the webhook had not taken, SIGKILL and SIGTERM with pushes queued
//! behind a provider answering 503.

use std::path::{Path, PathBuf};
use std::time::Duration;

use imgate_codec::{Deliver, GoAwayReason, Kind};
use imgate_push::mock::ApnsReply;

use crate::N;
use crate::device;
use crate::hook::Hook;
use crate::ledger::Ledger;
use crate::node::{Node, Setup, case_dir};
use crate::providers::{Apns, apns_answered, apns_pushed, port_of};
use crate::support::recv;

/// How many of the messages the device read before the fault.
const READ_BEFORE: usize = 400;

/// After the restart: Bob resumes from the `read` he holds (`welcome` is his session's)
/// and gets exactly the rest, in order, and acknowledges them; every message acknowledged,
/// none reported.
async fn resumed_and_acknowledged(
    case: &str,
    node: &Node,
    hook: &Hook,
    delivered: Vec<u64>,
    welcome: &imgate_codec::Welcome,
    mut read: Vec<Deliver>,
) {
    let last = read.last().map_or(0, |d| d.seq);
    let mut bob = device::connect(node.tcp, "bob", Some((welcome, last))).await;
    assert!(bob.welcome.resumed, "{:?}", bob.welcome);
    let rest = bob.read(N - read.len()).await;
    assert_eq!(rest[0].seq, last + 1, "resumed right after what he held");
    read.extend(rest);
    bob.ack(read[N - 1].seq).await;
    bob.round_trip().await;
    let mut ledger = Ledger::default();
    ledger.delivered(delivered);
    ledger.acked_delivers(&read);
    ledger.reports(&hook.taken());
    let tally = ledger.tally(case);
    assert_eq!((tally.acked, tally.reported), (N, 0));
}

#[tokio::test]
async fn sigterm_with_unacknowledged_messages_loses_none() {
    let hook = Hook::start(true).await;
    let dir = case_dir("sigterm");
    let setup = Setup::new(hook.url());
    let config = setup.write(&dir);
    let mut node = Node::start(&config);
    let mut bob = device::connect(node.tcp, "bob", None).await;
    let delivered = node.deliver("bob", "sigterm", N, 0).await;
    let read = bob.read(READ_BEFORE).await;

    node.server.signal("TERM");
    // Bob stays connected after the GoAway: what was on its way still arrives (he sets it
    // aside, unprocessed), and his ack of what he processed is taken before he leaves.
    loop {
        match recv(&mut bob.conn).await {
            Kind::GoAway(g) => {
                assert_eq!(g.reason(), GoAwayReason::Drain);
                break;
            }
            Kind::Deliver(d) => assert!(d.seq as usize > READ_BEFORE),
            other => panic!("expected GoAway, got {other:?}"),
        }
    }
    bob.ack(read[READ_BEFORE - 1].seq).await;
    let welcome = bob.welcome.clone();
    drop(bob);
    let report = node.drained().await;
    eprintln!("fault case SIGTERM: drain report {report}");
    assert!(report.contains("kept=1"), "{report}");
    assert!(
        report.contains(&format!("messages_kept={}", N - READ_BEFORE)),
        "the ack after the GoAway counted: {report}"
    );
    assert!(report.contains("clean=true"), "{report}");

    let node = Node::start(&config);
    resumed_and_acknowledged(
        "SIGTERM, unacknowledged",
        &node,
        &hook,
        delivered.ids,
        &welcome,
        read,
    )
    .await;
}

#[tokio::test]
async fn sigkill_with_unacknowledged_messages_then_restart_and_resume_loses_none() {
    let hook = Hook::start(true).await;
    let dir = case_dir("sigkill");
    let config = Setup::new(hook.url()).write(&dir);
    let node = Node::start(&config);
    let mut bob = device::connect(node.tcp, "bob", None).await;
    let delivered = node.deliver("bob", "sigkill", N, 0).await;
    let read = bob.read(READ_BEFORE).await;
    let welcome = bob.welcome.clone();
    node.kill().await;
    drop(bob);

    let node = Node::start(&config);
    resumed_and_acknowledged(
        "SIGKILL, unacknowledged, resume",
        &node,
        &hook,
        delivered.ids,
        &welcome,
        read,
    )
    .await;
}

/// Bob's session ends with 1,000 unacknowledged messages while the webhook takes nothing;
/// the process is killed with the notices unanswered. After the restart the session is
/// restored from the store and, its window over again, reported to the (now answering)
/// webhook: nothing the webhook never took is forgotten.
#[tokio::test]
async fn sigkill_with_undelivered_notices_not_yet_taken_loses_none() {
    let stuck = Hook::start(false).await;
    let dir = case_dir("untaken");
    let mut setup = Setup::new(stuck.url());
    setup.resume_window_secs = 1;
    let node = Node::start(&setup.write(&dir));
    let bob = device::connect(node.tcp, "bob", None).await;
    let mut carol = device::connect(node.tcp, "carol", None).await;
    let delivered = node.deliver("bob", "untaken", N, 0).await;
    drop(bob);
    // The session ends after its window; its report reaches the webhook, which holds it.
    stuck.until_seen(N).await;
    // A barrier: a delivery is answered once it is committed, and the store commits in
    // order, so whatever the gateway wrote about Bob's end is on disk before the kill.
    let barrier = node.deliver("carol", "barrier", 1, 0).await;
    let taken = carol.read(1).await;
    assert_eq!(taken[0].message_id, barrier.ids[0]);
    carol.ack(taken[0].seq).await;
    carol.round_trip().await;
    node.kill().await;
    assert!(stuck.taken().is_empty());
    drop(stuck);

    let hook = Hook::start(true).await;
    setup.webhook = hook.url();
    let _node = Node::start(&setup.write(&dir));
    hook.until_taken_for("bob", N, Duration::from_secs(30))
        .await;
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    // Carol's barrier is hers (acknowledged; reported too if her ack missed the kill).
    let bob_reports = hook.taken_for("bob");
    ledger.reports(&bob_reports);
    let tally = ledger.tally("SIGKILL, notices not taken");
    assert_eq!(tally.reported, N);
    assert!(bob_reports.iter().all(|r| r.reason == "session_ended"));
}

/// Bob has a push token and no session; the provider answers 503 to the first attempt of
/// every push (a retry, one back-off later, would succeed), so about 1,000 pushes wait in
/// the queue when the process stops. After the restart, the provider healthy, every message
/// is pushed, and pushed twice only where the process never had the provider's answer:
/// after SIGKILL those resends are counted in `push_resent_after_restart_total`; after
/// SIGTERM the drain let the sends in flight finish: none.
async fn pushes_queued_then(signal: &str) {
    let hook = Hook::start(true).await;
    let apns = Apns::new();
    let dir = case_dir(&format!("queued-{signal}"));
    let failing = apns.start(0).await;
    failing.script(
        &token(),
        std::iter::repeat_n(ApnsReply::ServiceUnavailable(None), N),
    );
    let (config, node) = sessionless_bob_on_apns(&hook, &apns, &dir, &failing.url()).await;
    let delivered = node.deliver("bob", &format!("queued-{signal}"), N, 0).await;
    assert_eq!(
        delivered.outcomes.get("offline"),
        Some(&N),
        "the backend is told"
    );
    tokio::time::timeout(Duration::from_secs(60), failing.answered(N as u64))
        .await
        .expect("every push tried once and refused");
    match signal {
        "KILL" => node.kill().await,
        _ => {
            let report = node.terminate().await;
            assert!(report.contains("clean=true"), "{report}");
        }
    }
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    // Retries that came before the stop were answered 200: pushed.
    let before = apns_pushed(&failing);
    ledger.pushed(before.iter().copied());
    let port = port_of(&failing.url());
    drop(failing);

    let healthy = apns.start(port).await;
    let node = Node::start(&config);
    let rest = N - before.len();
    if tokio::time::timeout(Duration::from_secs(60), healthy.answered(rest as u64))
        .await
        .is_err()
    {
        let (_, metrics) = crate::support::http(node.admin, "GET", "/metrics", "").await;
        let push: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("push_") && !l.contains("_bucket"))
            .collect();
        panic!(
            "{} of {rest} queued pushes sent within 60 s of the restart: {push:#?}",
            healthy.request_count()
        );
    }
    node.until_metric("push_queue_depth", &[], |v| v == 0.0)
        .await;
    let resent = node.metric("push_resent_after_restart_total", &[]).await;
    if signal == "TERM" {
        // The drain hands every notice to the webhook before the exit.
        hook.until_taken(N, Duration::from_secs(30)).await;
    }
    ledger.pushed(apns_pushed(&healthy));
    ledger.reports(&hook.taken());
    let tally = ledger.tally(&format!("SIG{signal}, pushes queued behind 503"));
    eprintln!(
        "fault case SIG{signal}, pushes queued: {} pushed before the stop, {} after; \
         push_resent_after_restart_total={resent}",
        before.len(),
        healthy.request_count()
    );
    // Every message is pushed. (A `no_session` notice the webhook had not taken when the
    // process was killed is gone; the delivery's answer, `offline`, told the backend.)
    assert_eq!(tally.pushed, N);
    assert!(
        tally.push_duplicates as f64 <= resent,
        "a second push that is not a counted resend: {:?}",
        ledger.pushed_twice()
    );
    if signal == "TERM" {
        assert_eq!(tally.reported, N);
        // The drain lets the sends in flight finish: no answer is lost, nothing is resent.
        assert_eq!(resent, 0.0, "resent after a drain");
    }
}

/// Bob's APNs token.
fn token() -> String {
    format!("{:064x}", 0xb0b)
}

/// A node pushing to the mock APNs at `url`, where Bob registered his token and left for
/// good (no session); its config and the node.
async fn sessionless_bob_on_apns(
    hook: &Hook,
    apns: &Apns,
    dir: &Path,
    url: &str,
) -> (PathBuf, Node) {
    let mut setup = Setup::new(hook.url());
    setup.apns = Some(apns.section(dir, url));
    setup.resume_window_secs = 0;
    let config = setup.write(dir);
    let node = Node::start(&config);
    let mut bob = device::connect(node.tcp, "bob", None).await;
    bob.register_apns(&token()).await;
    drop(bob);
    hook.until_ended("bob").await;
    (config, node)
}

/// The provider takes the first 25 pushes without ever answering (as if its answers were lost
/// on the way), the rest with 200; the process is killed. After the restart exactly the sends
/// whose answer the process never had are sent again: every unanswered push is pushed a
/// second time, every second push is counted in `push_resent_after_restart_total`, and
/// nothing else is pushed twice.
#[tokio::test]
async fn sigkill_with_provider_answers_lost_resends_only_those_and_counts_them() {
    const LOST: usize = 25;
    let hook = Hook::start(true).await;
    let apns = Apns::new();
    let dir = case_dir("answers-lost");
    let first = apns.start(0).await;
    first.script(&token(), std::iter::repeat_n(ApnsReply::NoAnswer, LOST));
    let (config, node) = sessionless_bob_on_apns(&hook, &apns, &dir, &first.url()).await;
    let delivered = node.deliver("bob", "answers-lost", N, 0).await;
    assert_eq!(
        delivered.outcomes.get("offline"),
        Some(&N),
        "the backend is told"
    );
    tokio::time::timeout(Duration::from_secs(60), first.answered(N as u64))
        .await
        .expect("every push taken once");
    node.kill().await;
    // The provider took them; their answer is lost.
    let lost = apns_answered(&first, 0);
    assert_eq!(lost.len(), LOST);
    let mut ledger = Ledger::default();
    ledger.delivered(delivered.ids);
    // A push the provider took counts, answered or not.
    ledger.pushed(apns_pushed(&first));
    ledger.pushed(lost.iter().copied());
    let port = port_of(&first.url());
    drop(first);

    let second = apns.start(port).await;
    let node = Node::start(&config);
    tokio::time::timeout(Duration::from_secs(60), second.answered(LOST as u64))
        .await
        .expect("the unanswered pushes sent again");
    node.until_metric("push_queue_depth", &[], |v| v == 0.0)
        .await;
    let resent = node.metric("push_resent_after_restart_total", &[]).await;
    ledger.pushed(apns_pushed(&second));
    ledger.reports(&hook.taken());
    let tally = ledger.tally("SIGKILL, provider answers lost");
    eprintln!(
        "fault case SIGKILL, provider answers lost: {LOST} unanswered, {} pushed twice, \
         push_resent_after_restart_total={resent}",
        tally.push_duplicates
    );
    // Every message pushed (the `no_session` notices are not this case's subject: those
    // the webhook had not taken at the kill are gone, the deliveries' answers said
    // `offline`).
    assert_eq!(tally.pushed, N);
    let twice = ledger.pushed_twice();
    assert!(
        lost.iter().all(|id| twice.contains(id)),
        "every unanswered push resent"
    );
    assert!(
        tally.push_duplicates as f64 <= resent,
        "every second push counted: {} > {resent}",
        tally.push_duplicates
    );
    assert_eq!(
        resent,
        second.request_count() as f64,
        "only resends after the restart"
    );
}

#[tokio::test]
async fn sigkill_with_pushes_queued_pushes_each_and_counts_every_second_push() {
    pushes_queued_then("KILL").await;
}

#[tokio::test]
async fn sigterm_with_pushes_queued_pushes_each_exactly_once() {
    pushes_queued_then("TERM").await;
}
