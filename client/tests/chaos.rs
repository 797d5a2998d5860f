//! Chaos: two clients exchange 20,000 messages (10,000 each way) through a real gateway
//! while their connections are cut at random moments, at least 200 times per run, both
//! from the client side (`debug_drop_connection`: the client drops its socket) and from the
//! network side (a TCP proxy in front of the gateway aborts a connection, so the gateway's
//! side dies too; QUIC endpoints are not proxied and get client-side drops only). Each side
//! must receive every message exactly once, in order, in the one session it started with.
//!
//! `CHAOS_SEED=<n>` replays a run's choice of cuts.

mod support;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use imgate::session::SessionConfig;
use imgate_client::{Client, Event, Incoming, ReceiptStatus, Target, TransportKind};
use support::proxy::ChaosProxy;
use support::{TestGateway, payload, payload_id};
use tokio::sync::watch;
use tokio::time::Instant;

const PER_SIDE: u64 = 10_000;
/// A sender runs at most this far ahead of what its peer has received (the gateway keeps
/// at most 1,024 unacked messages per session).
const WINDOW: u64 = 256;
const MIN_CUTS: u64 = 200;
/// The senders wait for one more cut every this many messages each: at least 250 cuts per
/// run, all while traffic flows.
const PER_CUT: u64 = 40;
/// Messages received (both sides together) between two cuts, at least; with `PER_CUT` this
/// leaves 250–500 cuts per run.
const MIN_GAP: u64 = 40;
const RUN_DEADLINE: Duration = Duration::from_secs(55);

#[derive(Debug, Default)]
struct Counts {
    disconnects: u64,
    resumes: u64,
    refused: u64,
    overdue: u64,
}

async fn count_events(client: &Client) -> tokio::task::JoinHandle<Counts> {
    let mut events = client.events();
    tokio::spawn(async move {
        let mut counts = Counts::default();
        loop {
            match events.recv().await {
                Ok(Event::Disconnected { .. }) => counts.disconnects += 1,
                Ok(Event::Connected { resumed: true, .. }) => counts.resumes += 1,
                Ok(Event::ResumeRefused { reason, .. }) => {
                    eprintln!("resume refused: {reason:?}");
                    counts.refused += 1;
                }
                Ok(Event::ReceiptOverdue { .. }) => counts.overdue += 1,
                Ok(Event::Stopped { .. }) => return counts,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    panic!("event counter lagged by {n}")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return counts,
            }
        }
    })
}

async fn sender(
    client: Client,
    to: &'static str,
    tag: &'static str,
    peer: watch::Receiver<u64>,
    cuts: watch::Receiver<u64>,
) {
    let (mut peer, mut cuts) = (peer, cuts);
    let mut outstanding = VecDeque::new();
    for n in 1..=PER_SIDE {
        peer.wait_for(|got| got + WINDOW >= n)
            .await
            .expect("peer receiver alive");
        // Pace the exchange to the cuts: every `PER_CUT` messages need one more cut.
        cuts.wait_for(|cuts| (cuts + 1) * PER_CUT >= n)
            .await
            .expect("chaos loop alive");
        outstanding.push_back(client.send(Target::user(to), payload(tag, n)));
        if outstanding.len() as u64 > WINDOW {
            check_receipt(outstanding.pop_front().expect("non-empty").await);
        }
    }
    for receipt in outstanding {
        check_receipt(receipt.await);
    }
}

fn check_receipt(receipt: Result<imgate_client::Receipt, imgate_client::ClientError>) {
    let receipt = receipt.expect("receipt");
    // Stored: the receiver was between connections (its session buffers it for the resume,
    // protocol §4 `Receipt`); the receiver's own checks show it arrives exactly once.
    assert!(
        matches!(
            receipt.status(),
            ReceiptStatus::Delivered | ReceiptStatus::StoredOffline
        ),
        "{receipt:?}"
    );
}

async fn receiver(mut incoming: Incoming, tag: &'static str, progress: watch::Sender<u64>) {
    let mut session = None;
    for n in 1..=PER_SIDE {
        let m = incoming.recv().await.expect("client alive");
        assert_eq!(
            payload_id(&m.payload),
            (tag.to_owned(), n),
            "exactly once, in order (seq {}, session {})",
            m.seq,
            m.session_id
        );
        assert_eq!(
            *session.get_or_insert(m.session_id),
            m.session_id,
            "one session"
        );
        progress.send_replace(n);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), incoming.recv())
            .await
            .is_err(),
        "nothing after the last message"
    );
}

/// Cuts `client`'s connection if it has one right now.
fn drop_if_connected(client: &Client, count: &mut u64) -> bool {
    let connected = matches!(
        &*client.state().borrow(),
        imgate_client::ConnectionState::Connected { .. }
    );
    if connected {
        client.debug_drop_connection();
        *count += 1;
    }
    connected
}

/// One run: both clients rotate through `kinds` on every reconnect.
async fn run(kinds: &[TransportKind]) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos {kinds:?}: CHAOS_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let t: TestGateway = support::start(SessionConfig::default()).await;
    // A cutting proxy in front of every TCP-based listener.
    let mut proxies = HashMap::new();
    for kind in kinds.iter().copied().filter(|k| *k != TransportKind::Quic) {
        let proxy = ChaosProxy::start(t.gw.local_addr(kind).expect("listener")).await;
        proxies.insert(kind, proxy);
    }
    let config = |user: &str| {
        let mut config = t.config(user, kinds);
        config.requests.receipt_timeout = Duration::from_millis(500);
        for endpoint in &mut config.endpoints {
            if let Some(proxy) = proxies.get(&endpoint.kind) {
                endpoint.addr = proxy.addr();
            }
        }
        config
    };
    let (alice, alice_in) = Client::connect(config("alice")).await.expect("alice");
    let (bob, bob_in) = Client::connect(config("bob")).await.expect("bob");
    let counters = [count_events(&alice).await, count_events(&bob).await];

    let (alice_got, alice_progress) = watch::channel(0u64);
    let (bob_got, bob_progress) = watch::channel(0u64);
    let (cuts_tx, cuts_rx) = watch::channel(0u64);
    let tasks = [
        tokio::spawn(receiver(alice_in, "b", alice_got)),
        tokio::spawn(receiver(bob_in, "a", bob_got)),
        tokio::spawn(sender(
            alice.clone(),
            "bob",
            "a",
            bob_progress.clone(),
            cuts_rx.clone(),
        )),
        tokio::spawn(sender(
            bob.clone(),
            "alice",
            "b",
            alice_progress.clone(),
            cuts_rx,
        )),
    ];

    // Cut at random moments (retried while the chosen client is between connections):
    // alice drops, bob drops, or the proxy kills a connection.
    let (mut a, mut b) = (alice_progress, bob_progress);
    let (mut client_cuts, mut proxy_cuts) = (0u64, 0u64);
    let mut at_last_cut = 0;
    while *a.borrow() + *b.borrow() < 2 * PER_SIDE {
        // At least `MIN_GAP` messages between two cuts (keeps the run short), then a
        // random moment.
        loop {
            let total = *a.borrow_and_update() + *b.borrow_and_update();
            if total >= at_last_cut + MIN_GAP || total >= 2 * PER_SIDE {
                break;
            }
            // (A receiver that finished drops its sender: then only the other one moves.)
            tokio::select! {
                Ok(()) = a.changed() => {}
                Ok(()) = b.changed() => {}
                else => break,
            }
        }
        // The scenario's jitter, not a synchronisation: the cut lands at a random moment.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=4))).await;
        loop {
            let cut = match rng.u8(0..3) {
                0 => drop_if_connected(&alice, &mut client_cuts),
                1 => drop_if_connected(&bob, &mut client_cuts),
                _ => {
                    let kind = kinds[rng.usize(0..kinds.len())];
                    match proxies.get(&kind) {
                        Some(proxy) => {
                            let killed = proxy.cut(|n| rng.usize(0..n));
                            proxy_cuts += u64::from(killed);
                            killed
                        }
                        None => drop_if_connected(&alice, &mut client_cuts),
                    }
                }
            };
            if cut || *a.borrow() + *b.borrow() >= 2 * PER_SIDE {
                break;
            }
            // Nothing to cut yet (every link reconnecting): try again a moment later.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        at_last_cut = *a.borrow() + *b.borrow();
        cuts_tx.send_replace(client_cuts + proxy_cuts);
    }
    for task in tasks {
        task.await.expect("task");
    }
    alice.close().await;
    bob.close().await;
    let mut total = Counts::default();
    for counter in counters {
        let c = counter.await.expect("counter");
        total.disconnects += c.disconnects;
        total.resumes += c.resumes;
        total.refused += c.refused;
        total.overdue += c.overdue;
    }
    eprintln!(
        "chaos {kinds:?}: {} messages, {client_cuts} client drops + {proxy_cuts} proxy kills \
         made, {} disconnects, {} resumes, {} refused, {} receipts overdue, {:?}",
        2 * PER_SIDE,
        total.disconnects,
        total.resumes,
        total.refused,
        total.overdue,
        started.elapsed()
    );
    assert_eq!(total.refused, 0, "every resume succeeds");
    assert!(
        total.disconnects >= MIN_CUTS,
        "only {} connections were cut",
        total.disconnects
    );
    assert!(total.resumes >= MIN_CUTS, "only {} resumes", total.resumes);
    drop(proxies);
    t.gw.shutdown().await;
}

async fn bounded(kinds: &[TransportKind]) {
    tokio::time::timeout(RUN_DEADLINE, run(kinds))
        .await
        .unwrap_or_else(|_| panic!("chaos run over {kinds:?} exceeded {RUN_DEADLINE:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_tcp() {
    bounded(&[TransportKind::Tcp]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_tls() {
    bounded(&[TransportKind::Tls]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ws() {
    bounded(&[TransportKind::Ws]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_wss() {
    bounded(&[TransportKind::Wss]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_quic() {
    bounded(&[TransportKind::Quic]).await;
}

/// Every reconnect moves to the next transport: TCP, then QUIC, then WSS, and around.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_across_transports() {
    bounded(&[TransportKind::Tcp, TransportKind::Quic, TransportKind::Wss]).await;
}
