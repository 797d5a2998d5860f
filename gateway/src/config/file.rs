//! The TOML file as written: every section, every key with its default, nothing unknown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub(super) server: Server,
    #[serde(default)]
    pub(super) admin: Admin,
    #[serde(default)]
    pub(super) tls: Tls,
    #[serde(default)]
    pub(super) listener: Vec<Listener>,
    #[serde(default)]
    pub(super) app: Vec<App>,
    /// Absent: a single node.
    pub(super) cluster: Option<Cluster>,
}

/// `[cluster]`: join other nodes on NATS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cluster {
    /// NATS servers (`nats://…` or `tls://…`).
    pub(super) urls: Vec<String>,
    /// This node's name, unique in the cluster.
    pub(super) node: String,
    pub(super) token: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT + NKey seed).
    pub(super) credentials_file: Option<PathBuf>,
    /// Extra trust roots (PEM) for the NATS servers' certificates.
    pub(super) tls_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) require_tls: bool,
    /// JetStream replicas of the directory: 1 for one NATS server, 3 for a NATS cluster.
    #[serde(default = "one")]
    pub(super) replicas: usize,
    #[serde(default = "default_request_timeout_ms")]
    pub(super) request_timeout_ms: u64,
    #[serde(default = "default_unready_after_secs")]
    pub(super) unready_after_secs: u64,
    #[serde(default = "default_connect_timeout_secs")]
    pub(super) connect_timeout_secs: u64,
    /// A node silent this long is dead (its sessions are released on the next delivery).
    #[serde(default = "default_node_timeout_secs")]
    pub(super) node_timeout_secs: u64,
}

fn default_node_timeout_secs() -> u64 {
    10
}

fn one() -> usize {
    1
}

fn default_request_timeout_ms() -> u64 {
    2000
}

fn default_unready_after_secs() -> u64 {
    5
}

fn default_connect_timeout_secs() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Server {
    pub(super) handshake_timeout_secs: u64,
    pub(super) shards: usize,
    pub(super) drain_grace_secs: u64,
    pub(super) handshakes_per_sec: f64,
    pub(super) frames_per_sec_per_connection: f64,
    /// Where durable state lives (the session store: `sessions.redb`).
    pub(super) data_dir: PathBuf,
    /// Seconds a connection whose socket accepts nothing may live (slow consumer).
    pub(super) write_stall_timeout_secs: u64,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            handshake_timeout_secs: 10,
            shards: 64,
            drain_grace_secs: 30,
            handshakes_per_sec: 2000.0,
            frames_per_sec_per_connection: 200.0,
            data_dir: PathBuf::from("imgate-data"),
            write_stall_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Admin {
    pub(super) bind: SocketAddr,
    pub(super) token: Option<String>,
    /// The token from this environment variable instead of inline.
    pub(super) token_env: Option<String>,
    /// The token from this file (trailing newline ignored) instead of inline.
    pub(super) token_file: Option<PathBuf>,
    /// The demo chat page (`/demo/`, with tokens for any user name): loopback only.
    pub(super) demo: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7180)),
            token: None,
            token_env: None,
            token_file: None,
            demo: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    /// Session-ticket key files shared by every node (the first seals); empty: per process.
    #[serde(default)]
    pub(super) ticket_keys: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Listener {
    #[serde(deserialize_with = "transport")]
    pub(super) transport: imgate_transports::TransportKind,
    pub(super) bind: SocketAddr,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: usize,
    #[serde(default)]
    pub(super) max_per_ip: usize,
    pub(super) path: Option<String>,
    /// Browser origins allowed to connect (ws, wss, http, https); absent: every origin.
    pub(super) allowed_origins: Option<Vec<String>>,
}

fn default_max_connections() -> usize {
    100_000
}

fn transport<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<imgate_transports::TransportKind, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "unknown transport {name:?} (tcp, tls, ws, wss, quic, http, https)"
        ))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct App {
    pub(super) id: String,
    #[serde(default = "default_backend")]
    pub(super) backend: Backend,
    pub(super) auth: Auth,
    #[serde(default)]
    pub(super) session: Session,
    /// Push fallback; absent: the app pushes nothing.
    pub(super) push: Option<Push>,
    /// The relay's offline queue; absent: on, with its defaults (relay backend only).
    pub(super) offline_queue: Option<OfflineQueue>,
}

/// `[app.offline_queue]`: messages for users without a session, kept until their next login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct OfflineQueue {
    pub(super) enabled: bool,
    pub(super) max_messages_per_user: usize,
    pub(super) max_bytes_per_user: usize,
    pub(super) ttl_secs: u64,
}

impl Default for OfflineQueue {
    fn default() -> Self {
        Self {
            enabled: true,
            max_messages_per_user: 1000,
            max_bytes_per_user: 1024 * 1024,
            ttl_secs: 7 * 24 * 3600,
        }
    }
}

fn default_backend() -> Backend {
    Backend::Relay
}

/// `backend = "relay"`, or a table `[app.backend]` whose `kind` (`relay`, `webhook`, `grpc`)
/// says which keys it may have.
#[derive(Debug)]
pub(super) enum Backend {
    Relay,
    Webhook(Webhook),
    Grpc(Grpc),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum BackendTable {
    Relay(Relay),
    Webhook(Webhook),
    Grpc(Grpc),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Relay {}

impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shorthand;
        impl<'de> Visitor<'de> for Shorthand {
            type Value = Backend;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"relay\" or a table with kind = \"relay\", \"webhook\" or \"grpc\"")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Backend, E> {
                match name {
                    "relay" => Ok(Backend::Relay),
                    other => Err(E::custom(format!(
                        "backend {other:?}: use \"relay\", or a [app.backend] table with \
                         kind = \"webhook\" or \"grpc\""
                    ))),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Backend, A::Error> {
                let table = BackendTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match table {
                    BackendTable::Relay(Relay {}) => Backend::Relay,
                    BackendTable::Webhook(webhook) => Backend::Webhook(webhook),
                    BackendTable::Grpc(grpc) => Backend::Grpc(grpc),
                })
            }
        }
        deserializer.deserialize_any(Shorthand)
    }
}

/// `[app.backend]` with `kind = "webhook"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Webhook {
    /// Where to POST.
    pub(super) url: String,
    /// HMAC secret (≥ 16 bytes): inline, from an environment variable, or from a file.
    pub(super) secret: Option<String>,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    /// Per-request time-out.
    pub(super) timeout_ms: Option<u64>,
    /// Retries after the first attempt.
    pub(super) max_retries: Option<u32>,
    /// Bounded queue of pending requests.
    pub(super) queue_capacity: Option<usize>,
    /// webhook: notices queued or being sent at most.
    pub(super) notice_capacity: Option<usize>,
}

/// `[app.backend]` with `kind = "grpc"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Grpc {
    /// `http://` or `https://` endpoint.
    pub(super) endpoint: String,
    /// Upstream request time-out.
    pub(super) timeout_ms: Option<u64>,
    /// Bounded queue of pending requests.
    pub(super) queue_capacity: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Auth {
    pub(super) kind: String,
    #[serde(default = "default_algorithm")]
    pub(super) algorithm: String,
    pub(super) secret: Option<String>,
    /// The HS256 secret from this environment variable instead of inline.
    pub(super) secret_env: Option<String>,
    /// The HS256 secret from this file (trailing newline ignored) instead of inline.
    pub(super) secret_file: Option<PathBuf>,
    pub(super) public_key_pem: Option<PathBuf>,
    pub(super) audience: Option<String>,
    pub(super) issuer: Option<String>,
    #[serde(default)]
    pub(super) tokens: BTreeMap<String, String>,
}

fn default_algorithm() -> String {
    "HS256".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Session {
    pub(super) heartbeat_secs: u64,
    pub(super) max_unacked: usize,
    pub(super) max_unacked_bytes: usize,
    pub(super) resume_window_secs: u64,
    pub(super) push_grace_secs: u64,
    pub(super) ack_timeout_secs: u64,
    pub(super) max_frame: u32,
    /// Per-platform heartbeat intervals (`ios`, `android`, `web`, `desktop`), seconds.
    pub(super) platform_heartbeat_secs: BTreeMap<String, u64>,
    /// `disk` (the session store) or `memory`.
    pub(super) durability: Durability,
}

/// `[app.session] durability`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Durability {
    #[default]
    Disk,
    Memory,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            heartbeat_secs: 30,
            max_unacked: 1024,
            max_unacked_bytes: 1024 * 1024,
            resume_window_secs: 120,
            push_grace_secs: 10,
            ack_timeout_secs: 20,
            max_frame: 1024 * 1024,
            platform_heartbeat_secs: BTreeMap::new(),
            durability: Durability::Disk,
        }
    }
}

/// `[app.push]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Push {
    /// Directory of the device registry and the push queue (redb files).
    pub(super) data_dir: PathBuf,
    #[serde(default = "default_queue_capacity")]
    pub(super) queue_capacity: usize,
    #[serde(default = "default_push_ttl")]
    pub(super) default_ttl_secs: u64,
    #[serde(default = "default_max_messages")]
    pub(super) max_messages: usize,
    #[serde(default = "default_message_memory")]
    pub(super) message_memory_secs: u64,
    pub(super) apns: Option<Apns>,
    pub(super) fcm: Option<Fcm>,
}

fn default_queue_capacity() -> usize {
    100_000
}

fn default_push_ttl() -> u64 {
    24 * 3600
}

fn default_max_messages() -> usize {
    100_000
}

fn default_message_memory() -> u64 {
    15 * 60
}

/// `[app.push.apns]`: token auth (`key`, `key_id`, `team_id`) or certificate auth
/// (`cert`, `cert_key`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Apns {
    pub(super) topic: String,
    #[serde(default = "default_endpoint")]
    pub(super) endpoint: String,
    pub(super) key: Option<PathBuf>,
    pub(super) key_id: Option<String>,
    pub(super) team_id: Option<String>,
    pub(super) cert: Option<PathBuf>,
    pub(super) cert_key: Option<PathBuf>,
    /// Trust only this CA (PEM) instead of the web PKI roots.
    pub(super) ca: Option<PathBuf>,
}

fn default_endpoint() -> String {
    "production".into()
}

/// `[app.push.fcm]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Fcm {
    pub(super) service_account: PathBuf,
    pub(super) base_url: Option<String>,
    pub(super) token_uri: Option<String>,
}
