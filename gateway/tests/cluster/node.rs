//! One `imgate` process joined to the cluster.

use std::net::SocketAddr;
use std::path::Path;

use crate::support::process::{Server, spawn};

/// A gateway node: its process, client listener and admin address.
pub(crate) struct Node {
    pub(crate) server: Server,
    pub(crate) tcp: SocketAddr,
    pub(crate) admin: SocketAddr,
}

/// Starts node `name` in `dir` against the NATS server at `url`.
pub(crate) fn start(name: &str, url: &str, dir: &Path, durability: &str) -> Node {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("node dir");
    let config = format!(
        r#"
[server]
data_dir = "{dir}/data"
drain_grace_secs = 5
frames_per_sec_per_connection = 100000.0

[admin]
bind = "127.0.0.1:0"

[cluster]
urls = ["{url}"]
node = "{name}"
request_timeout_ms = 1000
unready_after_secs = 1
node_timeout_secs = 2

[[listener]]
transport = "tcp"
bind = "127.0.0.1:0"

[[app]]
id = "chat"
[app.session]
durability = "{durability}"
resume_window_secs = 120
push_grace_secs = 60
ack_timeout_secs = 60
[app.auth]
kind = "static"
tokens = {{ "tok-alice" = "alice", "tok-bob" = "bob", "tok-carol" = "carol" }}
"#,
        dir = dir.display()
    );
    let path = dir.join("imgate.toml");
    std::fs::write(&path, config).expect("write config");
    let (server, listeners, admin) = spawn(&path);
    let tcp = listeners
        .iter()
        .find(|(kind, _)| kind == "tcp")
        .map(|(_, addr)| *addr)
        .expect("tcp listener");
    Node { server, tcp, admin }
}

impl Node {
    /// `POST /v1/deliver` of `text` to `user`; the answer's JSON.
    pub(crate) async fn deliver(&self, user: &str, text: &str) -> serde_json::Value {
        let body =
            serde_json::json!({"app": "chat", "target": {"user": user}, "text": text}).to_string();
        let (status, answer) = crate::support::http(self.admin, "POST", "/v1/deliver", &body).await;
        assert_eq!(status, 200, "deliver: {answer}");
        serde_json::from_str(&answer).expect("deliver answer")
    }

    /// `GET /v1/users/chat/<user>/sessions`.
    pub(crate) async fn sessions(&self, user: &str) -> serde_json::Value {
        let path = format!("/v1/users/chat/{user}/sessions");
        let (status, answer) = crate::support::http(self.admin, "GET", &path, "").await;
        assert_eq!(status, 200, "sessions: {answer}");
        serde_json::from_str(&answer).expect("sessions answer")
    }
}
