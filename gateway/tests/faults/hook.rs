//! The webhook: a loopback HTTP server that takes every notice the gateway POSTs and
//! records it. Closed, it holds every request unanswered (a webhook that takes nothing);
//! opened, it answers 200.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The webhook's HMAC secret (the gateway signs; this hook does not check, backend_webhook.rs
/// does).
pub(crate) const SECRET: &str = "fault-suite-secret-0123456789";

/// One `undelivered` notice.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    pub(crate) user: String,
    pub(crate) reason: String,
    pub(crate) messages: Vec<u64>,
}

#[derive(Debug, Default)]
struct Log {
    /// `undelivered` notices received, answered or not.
    seen: Vec<Report>,
    /// `undelivered` notices answered 200: the webhook took them.
    taken: Vec<Report>,
    /// Users whose `disconnect` (session ended) notice was taken.
    ended: Vec<String>,
}

#[derive(Debug)]
struct State {
    log: Mutex<Log>,
    /// Ticks on every change of the log.
    changed: watch::Sender<u64>,
    open: watch::Sender<bool>,
}

/// A running webhook; stops when dropped.
pub(crate) struct Hook {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hook {
    /// Starts the hook, answering (`open`) or holding every request.
    pub(crate) async fn start(open: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            log: Mutex::default(),
            changed: watch::Sender::new(0),
            open: watch::Sender::new(open),
        });
        let serving = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let state = Arc::clone(&serving);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(state.take(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// The URL to configure.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// From now on every request, held ones too, is answered 200.
    pub(crate) fn open(&self) {
        self.state.open.send_replace(true);
    }

    /// From now on new requests are held unanswered.
    pub(crate) fn close(&self) {
        self.state.open.send_replace(false);
    }

    /// Every `undelivered` notice taken so far.
    pub(crate) fn taken(&self) -> Vec<Report> {
        self.state.lock().taken.clone()
    }

    /// How many messages the taken notices name, by reason.
    pub(crate) fn by_reason(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for report in self.taken() {
            *counts.entry(report.reason).or_default() += report.messages.len();
        }
        counts
    }

    /// Every `undelivered` notice for `user` taken so far.
    pub(crate) fn taken_for(&self, user: &str) -> Vec<Report> {
        self.taken()
            .into_iter()
            .filter(|r| r.user == user)
            .collect()
    }

    /// Waits (`within` at most) until the hook has taken notices naming `n` messages.
    pub(crate) async fn until_taken(&self, n: usize, within: Duration) {
        self.until(&format!("{n} messages reported"), within, |log| {
            log.taken.iter().map(|r| r.messages.len()).sum::<usize>() >= n
        })
        .await;
    }

    /// Waits (`within` at most) until the hook has taken notices naming `n` of `user`'s
    /// messages.
    pub(crate) async fn until_taken_for(&self, user: &str, n: usize, within: Duration) {
        self.until(
            &format!("{n} of {user}'s messages reported"),
            within,
            |log| {
                log.taken
                    .iter()
                    .filter(|r| r.user == user)
                    .map(|r| r.messages.len())
                    .sum::<usize>()
                    >= n
            },
        )
        .await;
    }

    /// Waits until the hook has received (not necessarily taken) notices naming `n`
    /// messages.
    pub(crate) async fn until_seen(&self, n: usize) {
        self.until(&format!("{n} messages in notices"), WAIT, |log| {
            log.seen.iter().map(|r| r.messages.len()).sum::<usize>() >= n
        })
        .await;
    }

    /// Waits until `user`'s session has ended (its `disconnect` notice).
    pub(crate) async fn until_ended(&self, user: &str) {
        self.until(&format!("{user}'s session ended"), WAIT, |log| {
            log.ended.iter().any(|u| u == user)
        })
        .await;
    }

    async fn until(&self, what: &str, within: Duration, mut reached: impl FnMut(&Log) -> bool) {
        let mut changed = self.state.changed.subscribe();
        let state = &self.state;
        tokio::time::timeout(within, changed.wait_for(|_| reached(&state.lock())))
            .await
            .unwrap_or_else(|_| panic!("webhook: {what}: not within {within:?}"))
            .expect("the hook lives");
    }
}

/// How long a case waits for the webhook by default.
const WAIT: Duration = Duration::from_secs(20);

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("hook log")
    }

    fn record(&self, change: impl FnOnce(&mut Log)) {
        change(&mut self.lock());
        self.changed.send_modify(|n| *n += 1);
    }

    async fn take(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let event: Value = serde_json::from_slice(&body).unwrap_or_default();
        let report = (event["type"] == "undelivered").then(|| Report {
            user: event["user"].as_str().unwrap_or_default().to_owned(),
            reason: event["reason"].as_str().unwrap_or_default().to_owned(),
            messages: event["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["message_id"].as_str()?.parse().ok())
                .collect(),
        });
        if let Some(report) = &report {
            self.record(|log| log.seen.push(report.clone()));
        }
        let mut open = self.open.subscribe();
        // The sender lives in `self`: the wait ends when the hook opens.
        let _ = open.wait_for(|open| *open).await;
        match report {
            Some(report) => self.record(|log| log.taken.push(report)),
            None if event["type"] == "disconnect" => {
                let user = event["user"].as_str().unwrap_or_default().to_owned();
                self.record(|log| log.ended.push(user));
            }
            None => {}
        }
        Response::new(Full::new(Bytes::new()))
    }
}
