//! One `imgate` process: its config (webhook backend, durable sessions, push to the mocks,
//! short timers), its start, and the admin API the cases deliver through.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::process::{Output, Server, spawn_with_output};

/// The settings a case changes; the rest of the config is fixed.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) webhook: String,
    /// `[app.backend] notice_capacity`.
    pub(crate) notice_capacity: usize,
    /// `[app.push.fcm]`, if any.
    pub(crate) fcm: Option<crate::providers::FcmEndpoint>,
    /// `[app.push.apns]`, if any (a whole section, from `providers::Apns::section`).
    pub(crate) apns: Option<String>,
    /// `[app.push] queue_capacity`.
    pub(crate) push_queue_capacity: usize,
    pub(crate) max_unacked: usize,
    pub(crate) max_unacked_bytes: usize,
    pub(crate) heartbeat_secs: u64,
    pub(crate) resume_window_secs: u64,
    pub(crate) push_grace_secs: u64,
    pub(crate) ack_timeout_secs: u64,
    pub(crate) write_stall_timeout_secs: u64,
    pub(crate) drain_grace_secs: u64,
}

impl Setup {
    /// Defaults for a case: a patient webhook, no push, a window long enough that nothing
    /// ends while the case runs.
    pub(crate) fn new(webhook: String) -> Self {
        Self {
            webhook,
            notice_capacity: 65_536,
            fcm: None,
            apns: None,
            push_queue_capacity: 100_000,
            max_unacked: 2_000,
            max_unacked_bytes: 16 << 20,
            heartbeat_secs: 30,
            resume_window_secs: 120,
            push_grace_secs: 60,
            ack_timeout_secs: 60,
            write_stall_timeout_secs: 30,
            drain_grace_secs: 5,
        }
    }

    /// Writes `dir/imgate.toml` (the data directories are `dir/data` and `dir/push`).
    pub(crate) fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("case dir");
        let mut push = String::new();
        if self.fcm.is_some() || self.apns.is_some() {
            push += &format!(
                "[app.push]\ndata_dir = \"{}/push\"\nqueue_capacity = {}\n",
                dir.display(),
                self.push_queue_capacity
            );
        }
        if let Some(fcm) = &self.fcm {
            push += &format!(
                "[app.push.fcm]\nservice_account = \"{}\"\nbase_url = \"{}\"\ntoken_uri = \"{}\"\n",
                fcm.service_account(dir).display(),
                fcm.base_url,
                fcm.token_uri
            );
        }
        if let Some(apns) = &self.apns {
            push += apns;
        }
        let config = format!(
            r#"
[server]
drain_grace_secs = {drain}
data_dir = "{dir}/data"
frames_per_sec_per_connection = 100000.0
write_stall_timeout_secs = {stall}

[admin]
bind = "127.0.0.1:0"

[[listener]]
transport = "tcp"
bind = "127.0.0.1:0"

[[app]]
id = "chat"
[app.backend]
kind = "webhook"
url = "{webhook}"
secret = "{secret}"
timeout_ms = 60000
notice_capacity = {notices}
[app.auth]
kind = "static"
tokens = {{ "tok-bob" = "bob", "tok-carol" = "carol" }}
[app.session]
heartbeat_secs = {heartbeat}
max_unacked = {max_unacked}
max_unacked_bytes = {max_bytes}
resume_window_secs = {window}
push_grace_secs = {grace}
ack_timeout_secs = {ack}
durability = "disk"
{push}"#,
            drain = self.drain_grace_secs,
            dir = dir.display(),
            stall = self.write_stall_timeout_secs,
            webhook = self.webhook,
            secret = crate::hook::SECRET,
            notices = self.notice_capacity,
            heartbeat = self.heartbeat_secs,
            max_unacked = self.max_unacked,
            max_bytes = self.max_unacked_bytes,
            window = self.resume_window_secs,
            grace = self.push_grace_secs,
            ack = self.ack_timeout_secs,
        );
        let path = dir.join("imgate.toml");
        std::fs::write(&path, config).expect("write config");
        path
    }
}

/// A fresh directory for `case`, on disk (Cargo's target dir), not tmpfs: the stores'
/// fsyncs are part of every figure. Removed when dropped, whether the case passed or not.
pub(crate) fn case_dir(case: &str) -> CaseDir {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-{case}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    CaseDir(dir)
}

/// A case's directory; see [`case_dir`].
pub(crate) struct CaseDir(PathBuf);

impl std::ops::Deref for CaseDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for CaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `imgate`.
pub(crate) struct Node {
    pub(crate) server: Server,
    pub(crate) tcp: SocketAddr,
    pub(crate) admin: SocketAddr,
    /// The rest of stdout, read on a thread of its own: a pipe nobody reads fills up and
    /// blocks every thread of the gateway that logs (a shed push logs a warning).
    stdout: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Node {
    /// Starts `imgate serve --config config` and waits until it listens.
    pub(crate) fn start(config: &Path) -> Self {
        let (server, listeners, admin, output) = spawn_with_output(config);
        let tcp = listeners
            .iter()
            .find(|(kind, _)| kind == "tcp")
            .map(|(_, addr)| *addr)
            .expect("tcp listener");
        Self {
            server,
            tcp,
            admin,
            stdout: Some(read_all(output)),
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub(crate) async fn kill(mut self) {
        self.server.signal("KILL");
        self.server.exited(Duration::from_secs(10)).await;
    }

    /// SIGTERM; waits for the exit (0) and returns the drain report line.
    pub(crate) async fn terminate(mut self) -> String {
        self.server.signal("TERM");
        self.drained().await
    }

    /// Waits for the drained process's exit (0) and returns its drain report.
    pub(crate) async fn drained(&mut self) -> String {
        let status = self.server.exited(Duration::from_secs(30)).await;
        assert!(status.success(), "a drain exits 0: {status:?}");
        let stdout = self.stdout.take().expect("stdout");
        // The process has exited: its stdout is at its end.
        let lines = tokio::task::spawn_blocking(move || stdout.join().expect("stdout reader"))
            .await
            .expect("join");
        lines
            .iter()
            .find_map(|line| line.strip_prefix("imgate drained: ").map(str::to_owned))
            .expect("drain report")
    }

    /// `POST /v1/deliver` of `n` messages to `user` (texts `"{tag}-{i}"`, each with a push
    /// alert), `CONCURRENCY` at a time so the store group-commits; the message ids in the
    /// order of `i`, and the per-device outcomes seen.
    pub(crate) async fn deliver(&self, user: &str, tag: &str, n: usize, size: usize) -> Delivered {
        const CONCURRENCY: usize = 32;
        let padding = "x".repeat(size);
        let mut ids = vec![0; n];
        let mut at = vec![tokio::time::Instant::now(); n];
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        let mut next = 0;
        let mut running = tokio::task::JoinSet::new();
        while next < n || !running.is_empty() {
            while next < n && running.len() < CONCURRENCY {
                let body = serde_json::json!({
                    "app": "chat",
                    "target": {"user": user},
                    "text": format!("{tag}-{next}{padding}"),
                    "push": {"title": "fault suite", "body": format!("{tag}-{next}")},
                })
                .to_string();
                let admin = self.admin;
                let i = next;
                running.spawn(async move {
                    let (status, answer) =
                        crate::support::http(admin, "POST", "/v1/deliver", &body).await;
                    assert_eq!(status, 200, "deliver: {answer}");
                    (i, answer)
                });
                next += 1;
            }
            let (i, answer) = running
                .join_next()
                .await
                .expect("a delivery runs")
                .expect("delivery task");
            let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
            ids[i] = answer["message_id"].as_u64().expect("message_id");
            at[i] = tokio::time::Instant::now();
            for device in answer["devices"].as_array().expect("devices") {
                let outcome = device["outcome"].as_str().expect("outcome").to_owned();
                *outcomes.entry(outcome).or_default() += 1;
            }
        }
        Delivered { ids, at, outcomes }
    }

    /// The sum of the samples of `metric` whose labels contain every one of `labels`
    /// (`key="value"` strings), from `/metrics`.
    pub(crate) async fn metric(&self, metric: &str, labels: &[&str]) -> f64 {
        let (status, text) = crate::support::http(self.admin, "GET", "/metrics", "").await;
        assert_eq!(status, 200);
        text.lines()
            .filter(|line| {
                line.split(['{', ' '])
                    .next()
                    .is_some_and(|name| name == metric)
                    && labels.iter().all(|l| line.contains(l))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (20 s at most) until `metric` satisfies `reached`, scraping on every step of a
    /// short interval: the process's counters are only visible through `/metrics`.
    pub(crate) async fn until_metric(
        &self,
        metric: &str,
        labels: &[&str],
        reached: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.metric(metric, labels).await;
            if reached(value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{metric}{labels:?} = {value}: not reached within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn read_all(output: Output) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || output.map_while(Result::ok).collect())
}

/// What a batch of deliveries returned.
#[derive(Debug)]
pub(crate) struct Delivered {
    /// Message ids, in the order they were asked for.
    pub(crate) ids: Vec<u64>,
    /// When each delivery was answered (the message was durable from then on).
    pub(crate) at: Vec<tokio::time::Instant>,
    /// How many device reports said each outcome (`sent`, `buffered`, `offline`).
    pub(crate) outcomes: std::collections::BTreeMap<String, usize>,
}
