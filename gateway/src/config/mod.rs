//! The binary's TOML configuration: parsed strictly (`deny_unknown_fields`), then validated
//! into the library's typed settings.

mod checks;
mod cluster;
mod dev_token;
mod file;
mod paths;
mod secret;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imgate_transports::{Identity as Certificate, ListenerConfig, TicketKeys, TransportKind};

use crate::app::App;
use crate::auth::{Authenticator, JwtAuthenticator, JwtConfig, JwtKey, StaticTokens};
use crate::backend::{Backend, RelayBackend};
use crate::ids::{AppId, UserId};
use crate::offline::{NoPush, PushPolicy};
use crate::push_policy::{
    ApnsEnvironment, ApnsSettings, PolicyLimits, PushLimits, PushService, PushServiceMetrics,
};
use crate::server::{GatewayBuilder, ServerConfig};
use crate::session::SessionConfig;
pub use file::ConfigFile;
use prometheus_client::registry::Registry;

/// The configuration `imgate serve` uses without `--config` (also `imgate.example.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../imgate.example.toml");

/// A configuration problem, with the key it is about.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A validated configuration, ready to start.
#[derive(Debug)]
pub struct Config {
    /// Server-wide settings.
    pub server: ServerConfig,
    /// Listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Apps.
    pub apps: Vec<App>,
    /// Whether TLS, WSS and QUIC use the development certificate (worth a loud warning): it
    /// is loaded or written by [`Config::into_builder`].
    pub dev_certificate: bool,
    /// The admin HTTP listener (its `demo` is filled in by the binary once the WebSocket
    /// listener is bound: see [`Config::demo`]).
    pub admin: crate::admin::AdminConfig,
    /// `[admin] demo`: the demo page's app, WebSocket path and token minter.
    pub demo: Option<DemoSettings>,
    /// How long a SIGTERM drain waits for clients to leave.
    pub drain_grace: Duration,
    /// `[tls] ticket_keys`, shared by every TLS listener; on SIGHUP the binary re-reads the
    /// list ([`Config::ticket_key_files`]) and the files (`TicketKeys::reload_from`).
    pub ticket_keys: Option<TicketKeys>,
    /// The session store's file (`<data_dir>/sessions.redb`), if an app has durable sessions.
    pub session_store: Option<PathBuf>,
    /// The relay's offline queue (`<data_dir>/offline.redb`), if a relay app keeps one: opened
    /// by [`Config::into_builder`].
    pub offline_queue: Option<PathBuf>,
    /// Relay apps with an offline queue, by index into `apps`, and their bounds.
    offline_apps: Vec<(usize, crate::backend::OfflineLimits)>,
    /// Per app id: how development tools get a token ([`Config::dev_token`]).
    dev_tokens: HashMap<String, dev_token::DevToken>,
    /// Push services to start, by index into `apps` (their push is [`NoPush`] until then).
    push: Vec<(usize, PendingPush)>,
    /// `[cluster]`: the NATS cluster this node joins (None: a single node).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// What is allowed but probably a mistake (e.g. no client listener), for the operator.
    pub warnings: Vec<String>,
    /// The notice metrics webhook backends share, registered by `into_builder_with_registry`.
    webhook_metrics: Option<crate::backend::WebhookMetrics>,
}

impl Config {
    /// Reads and validates a TOML file. Relative paths in it are relative to its directory.
    /// Nothing is started, created or opened but the files the config names (certificates,
    /// keys, credentials), which are read and checked; [`Config::into_builder`] does the rest.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse_in(&text, base)
    }

    /// The embedded defaults `imgate serve` runs without `--config`: [`DEFAULT_CONFIG`] with
    /// the demo chat page on (`[admin] demo`), the one difference from that file.
    pub fn embedded() -> Result<Self, ConfigError> {
        let mut file: ConfigFile = toml::from_str(DEFAULT_CONFIG)
            .map_err(|e| ConfigError(format!("invalid config: {e}")))?;
        file.admin.demo = true;
        file.resolve_paths(Path::new(""));
        file.validate()
    }

    /// Parses and validates TOML text; relative paths are relative to the working directory.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_in(text, Path::new(""))
    }

    fn parse_in(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut file: ConfigFile =
            toml::from_str(text).map_err(|e| ConfigError(format!("invalid config: {e}")))?;
        file.resolve_paths(base);
        file.validate()
    }

    /// The `[tls] ticket_keys` files a config file names now (for SIGHUP: the rest of the file
    /// is not applied, so nothing else is validated or started).
    pub fn ticket_key_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let mut file: ConfigFile =
            toml::from_str(&text).map_err(|e| ConfigError(format!("invalid config: {e}")))?;
        file.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(file.tls.ticket_keys)
    }

    /// A token `user` can log in to `app` with (valid for `ttl`), for development tools:
    /// minted with the app's HS256 secret, or the user's static token.
    pub fn dev_token(&self, app: &str, user: &str, ttl: Duration) -> Result<String, ConfigError> {
        self.dev_tokens
            .get(app)
            .ok_or_else(|| ConfigError(format!("no [[app]] with id {app:?}")))?
            .token(app, user, ttl)
    }

    /// Opens the session store (creating its directory and file), if an app needs one; its
    /// commits are observed in `metrics`. Give it to the builder with
    /// [`GatewayBuilder::store`](crate::GatewayBuilder::store).
    pub fn open_session_store(
        &self,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Option<Arc<dyn crate::store::SessionStore>>, crate::store::StoreError> {
        let Some(path) = &self.session_store else {
            return Ok(None);
        };
        let store = crate::store::RedbStore::open(path, Some(metrics.store_observer()))?;
        Ok(Some(Arc::new(store)))
    }

    /// A builder with every app and listener of this configuration, after what a
    /// configuration only describes is set up: the development certificate is loaded from (or
    /// written to) [`imgate_transports::dev_certificate_dir`], and each app's push service
    /// starts (its thread; its redb files opened). Push metrics go to a registry of their
    /// own; see [`Config::into_builder_with_registry`].
    pub fn into_builder(self) -> Result<GatewayBuilder, ConfigError> {
        self.into_builder_with_registry(&mut Registry::default())
    }

    /// [`Config::into_builder`], registering push metrics into `registry`.
    pub fn into_builder_with_registry(
        mut self,
        registry: &mut Registry,
    ) -> Result<GatewayBuilder, ConfigError> {
        if self.dev_certificate {
            let dir = imgate_transports::dev_certificate_dir();
            let (mut identity, _) = Certificate::dev_in(&dir, &["localhost", "127.0.0.1"])
                .map_err(|e| ConfigError(format!("tls: development certificate: {e}")))?;
            if let Some(keys) = &self.ticket_keys {
                identity = identity.with_ticket_keys(keys.clone());
            }
            for listener in &mut self.listeners {
                if listener.kind.uses_tls() || listener.kind == TransportKind::Quic {
                    listener.identity.get_or_insert_with(|| identity.clone());
                }
            }
        }
        if let Some(metrics) = &self.webhook_metrics {
            metrics.register(registry);
        }
        if let Some(path) = &self.offline_queue {
            let metrics = crate::backend::OfflineQueueMetrics::new(registry);
            let queue = crate::backend::OfflineQueue::open(path, metrics)
                .map_err(|e| ConfigError(format!("offline queue: {e}")))?;
            let queue = Arc::new(queue);
            for (index, limits) in std::mem::take(&mut self.offline_apps) {
                self.apps[index].backend =
                    Arc::new(RelayBackend::with_offline_queue(Arc::clone(&queue), limits));
            }
        }
        if !self.push.is_empty() {
            let metrics = PushServiceMetrics::new(registry);
            for (index, push) in std::mem::take(&mut self.push) {
                let app = &mut self.apps[index];
                let service = push
                    .builder
                    .data_dir(&push.data_dir)
                    .and_then(|b| b.start(&metrics))
                    .map_err(|e| ConfigError(format!("app {}: push: {e}", app.id)))?;
                app.push = Arc::new(service);
            }
        }
        let mut builder = crate::Gateway::builder().config(self.server);
        if let Some(cluster) = self.cluster {
            builder = builder.cluster(cluster);
        }
        for app in self.apps {
            builder = builder.app(app);
        }
        for listener in self.listeners {
            builder = builder.listener(listener);
        }
        Ok(builder)
    }
}

/// What the demo chat page needs from the configuration (`[admin] demo`): it logs its users
/// in to the first app, over the first `ws` listener.
#[derive(Clone, Debug)]
pub struct DemoSettings {
    /// The first app's id.
    pub app: AppId,
    /// The WebSocket path of the first `ws` listener (its address is known once bound).
    pub ws_path: String,
    /// The base path of the first `http` (fallback) listener, if there is one: the page's
    /// clients fall back to it when WebSocket fails.
    pub http_path: Option<String>,
    tokens: dev_token::DevToken,
}

impl DemoSettings {
    /// A login token for `user`, valid for `ttl`.
    pub fn token(&self, user: &UserId, ttl: Duration) -> Result<String, ConfigError> {
        self.tokens.token(self.app.as_str(), user.as_str(), ttl)
    }
}

/// An app's push service, described: started by [`Config::into_builder`].
struct PendingPush {
    builder: crate::push_policy::PushServiceBuilder,
    data_dir: PathBuf,
}

impl std::fmt::Debug for PendingPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPush")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl ConfigFile {
    fn validate(self) -> Result<Config, ConfigError> {
        checks::file(&self)?;
        let cluster = self.cluster.as_ref().map(cluster::from_file).transpose()?;
        let server = ServerConfig {
            handshake_timeout: Duration::from_secs(self.server.handshake_timeout_secs.max(1)),
            shards: self.server.shards.max(1),
            handshake_rate: crate::rate_limit::RateLimit::new(
                self.server.handshakes_per_sec,
                self.server.handshakes_per_sec * 2.0,
            ),
            message_rate: crate::rate_limit::RateLimit::new(
                self.server.frames_per_sec_per_connection,
                self.server.frames_per_sec_per_connection * 2.0,
            ),
            write_stall_timeout: Duration::from_secs(self.server.write_stall_timeout_secs.max(1)),
            ..ServerConfig::default()
        };
        let needs_cert = self.listener.iter().any(|l| l.transport.uses_tls());
        let (certificate, dev_certificate) = match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => {
                let identity = Certificate::from_pem_files(cert, key)
                    .map_err(|e| ConfigError(format!("tls.cert / tls.key: {e}")))?;
                identity.check().map_err(|e| {
                    ConfigError(format!(
                        "tls.cert / tls.key: {} and {} do not work together: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
                (Some(identity), false)
            }
            (None, None) => (None, needs_cert),
            _ => {
                return Err(ConfigError(
                    "tls: give both cert and key, or neither".into(),
                ));
            }
        };
        let ticket_keys = match (needs_cert, self.tls.ticket_keys.is_empty()) {
            (_, true) => None,
            (true, false) => Some(
                TicketKeys::from_files(&self.tls.ticket_keys)
                    .map_err(|e| ConfigError(format!("tls: {e}")))?,
            ),
            (false, false) => {
                return Err(ConfigError(
                    "tls.ticket_keys: given but no tls, wss, quic or https listener".into(),
                ));
            }
        };
        let certificate = match (certificate, &ticket_keys) {
            (Some(certificate), Some(keys)) => Some(certificate.with_ticket_keys(keys.clone())),
            (certificate, _) => certificate,
        };
        let mut listeners = Vec::new();
        for (index, listener) in self.listener.into_iter().enumerate() {
            let mut config = ListenerConfig::new(listener.transport, listener.bind);
            config.handshake_timeout = server.handshake_timeout;
            config.max_connections = listener.max_connections;
            config.max_per_ip = (listener.max_per_ip > 0).then_some(listener.max_per_ip);
            let kind = listener.transport;
            if let Some(path) = listener.path {
                if kind.is_websocket() {
                    config.ws.path = path;
                } else if kind.is_http() {
                    config.http.path = path;
                } else {
                    return Err(ConfigError(format!(
                        "listener[{index}]: path only applies to ws, wss, http and https"
                    )));
                }
            }
            if let Some(origins) = listener.allowed_origins {
                if !(kind.is_websocket() || kind.is_http()) {
                    return Err(ConfigError(format!(
                        "listener[{index}]: allowed_origins only applies to ws, wss, http and \
                         https"
                    )));
                }
                config.ws.allowed_origins = Some(origins.clone());
                config.http.allowed_origins = Some(origins);
            }
            if (listener.transport.uses_tls() || listener.transport == TransportKind::Quic)
                && let Some(cert) = &certificate
            {
                config = config.with_identity(cert.clone());
            }
            listeners.push(config);
        }
        let mut apps = Vec::new();
        let mut seen = HashMap::new();
        let mut data_dirs = HashMap::new();
        let mut pending_push = Vec::new();
        let mut offline_apps = Vec::new();
        let mut dev_tokens = HashMap::new();
        // Registered with the gateway's registry by `into_builder_with_registry`: checking a
        // configuration registers nothing.
        let mut webhook_metrics = None;
        for app in self.app {
            if seen.insert(app.id.clone(), ()).is_some() {
                return Err(ConfigError(format!("app {:?} is defined twice", app.id)));
            }
            let id = AppId::new(app.id.as_str());
            let auth_secret = secret::resolve(
                &format!("app {}: auth.secret", app.id),
                app.auth.secret.as_ref(),
                app.auth.secret_env.as_ref(),
                app.auth.secret_file.as_ref(),
            )?;
            let authenticator = app.auth.build(&app.id, auth_secret.as_deref())?;
            dev_tokens.insert(app.id.clone(), app.auth.dev_token(auth_secret.as_deref()));
            let session = SessionConfig {
                heartbeat: Duration::from_secs(app.session.heartbeat_secs.max(1)),
                max_unacked: app.session.max_unacked.max(1),
                max_unacked_bytes: app.session.max_unacked_bytes.max(1),
                resume_window: Duration::from_secs(app.session.resume_window_secs),
                push_grace: Duration::from_secs(app.session.push_grace_secs),
                ack_timeout: Duration::from_secs(app.session.ack_timeout_secs.max(1)),
                max_frame: app.session.max_frame,
                platform_heartbeats: platform_heartbeats(&app.id, &app.session)?,
                durability: match app.session.durability {
                    file::Durability::Disk => crate::store::Durability::Disk,
                    file::Durability::Memory => crate::store::Durability::Memory,
                },
                ..SessionConfig::default()
            };
            let backend = build_backend(&app.id, &app.backend, || {
                webhook_metrics
                    .get_or_insert_with(crate::backend::WebhookMetrics::default)
                    .clone()
            })?;
            if let Some(push) = &app.push {
                if let Some(other) = data_dirs.insert(push.data_dir.clone(), app.id.clone()) {
                    return Err(ConfigError(format!(
                        "app {}: push.data_dir {} is already used by app {other}",
                        app.id,
                        push.data_dir.display()
                    )));
                }
                let builder = push.build(&id, Arc::clone(&backend))?;
                pending_push.push((
                    apps.len(),
                    PendingPush {
                        builder,
                        data_dir: push.data_dir.clone(),
                    },
                ));
            }
            if let Some(limits) = offline_limits(&app)? {
                offline_apps.push((apps.len(), limits));
            }
            let push: Arc<dyn PushPolicy> = Arc::new(NoPush);
            apps.push(App {
                id,
                authenticator,
                backend,
                session: Arc::new(session),
                push,
            });
        }
        if apps.is_empty() {
            return Err(ConfigError("at least one [[app]] is required".into()));
        }
        let durable = apps
            .iter()
            .any(|app| app.session.durability == crate::store::Durability::Disk);
        let warnings = checks::warnings(&listeners);
        let demo = if self.admin.demo {
            let app = apps[0].id.clone();
            let tokens = dev_tokens
                .get(app.as_str())
                .cloned()
                .ok_or_else(|| ConfigError(format!("no [[app]] with id {app}")))?;
            if matches!(tokens, dev_token::DevToken::PublicKey) {
                return Err(ConfigError(format!(
                    "admin.demo: app {app} verifies RS256/ES256 tokens, which imgate cannot \
                     mint for the demo page"
                )));
            }
            let ws = listeners
                .iter()
                .find(|l| l.kind == TransportKind::Ws)
                .ok_or_else(|| {
                    ConfigError(
                        "admin.demo: the demo page needs a [[listener]] with transport = \"ws\""
                            .into(),
                    )
                })?;
            let http_path = listeners
                .iter()
                .find(|l| l.kind == TransportKind::Http)
                .map(|l| l.http.path.clone());
            Some(DemoSettings {
                app,
                ws_path: ws.ws.path.clone(),
                http_path,
                tokens,
            })
        } else {
            None
        };
        let admin_token = secret::resolve(
            "admin.token",
            self.admin.token.as_ref(),
            self.admin.token_env.as_ref(),
            self.admin.token_file.as_ref(),
        )?;
        Ok(Config {
            server,
            cluster,
            listeners,
            apps,
            dev_certificate,
            ticket_keys,
            dev_tokens,
            push: pending_push,
            warnings,
            webhook_metrics,
            admin: crate::admin::AdminConfig {
                bind: self.admin.bind,
                token: admin_token,
                demo: None,
            },
            demo,
            drain_grace: Duration::from_secs(self.server.drain_grace_secs),
            session_store: durable.then(|| self.server.data_dir.join("sessions.redb")),
            offline_queue: (!offline_apps.is_empty())
                .then(|| self.server.data_dir.join("offline.redb")),
            offline_apps,
        })
    }
}

impl file::Push {
    fn build(
        &self,
        app: &AppId,
        backend: Arc<dyn Backend>,
    ) -> Result<crate::push_policy::PushServiceBuilder, ConfigError> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                ConfigError(format!(
                    "app {app}: push {what}: cannot read {}: {e}",
                    path.display()
                ))
            })
        };
        if self.apns.is_none() && self.fcm.is_none() {
            return Err(ConfigError(format!(
                "app {app}: [app.push] needs [app.push.apns] and/or [app.push.fcm]"
            )));
        }
        let mut limits = PushLimits {
            policy: PolicyLimits {
                max_messages: self.max_messages.max(1),
                message_ttl: Duration::from_secs(self.message_memory_secs.max(1)),
                ..PolicyLimits::default()
            },
            default_ttl_secs: self.default_ttl_secs,
            ..PushLimits::default()
        };
        limits.dispatcher.capacity = self.queue_capacity.max(1);
        let mut builder = PushService::builder(app.clone())
            .backend(backend)
            .limits(limits);
        if let Some(apns) = &self.apns {
            let mut config = match (
                &apns.key,
                &apns.key_id,
                &apns.team_id,
                &apns.cert,
                &apns.cert_key,
            ) {
                (Some(key), Some(key_id), Some(team_id), None, None) => {
                    imgate_push::ApnsConfig::token(read("apns.key", key)?, key_id, team_id)
                }
                (None, None, None, Some(cert), Some(cert_key)) => {
                    imgate_push::ApnsConfig::certificate(
                        read("apns.cert", cert)?,
                        read("apns.cert_key", cert_key)?,
                    )
                }
                _ => {
                    return Err(ConfigError(format!(
                        "app {app}: [app.push.apns] needs key, key_id and team_id (token auth) \
                         or cert and cert_key (certificate auth)"
                    )));
                }
            };
            let environment = match apns.endpoint.as_str() {
                "production" => ApnsEnvironment::Production,
                "sandbox" => {
                    config.sandbox();
                    ApnsEnvironment::Sandbox
                }
                url if url.starts_with("https://") => {
                    config.base_url(url);
                    ApnsEnvironment::Custom
                }
                other => {
                    return Err(ConfigError(format!(
                        "app {app}: push apns.endpoint {other:?} (production, sandbox, or an https:// URL)"
                    )));
                }
            };
            if let Some(ca) = &apns.ca {
                config.trust_pem(read("apns.ca", ca)?);
            }
            if apns.topic.is_empty() {
                return Err(ConfigError(format!(
                    "app {app}: push apns.topic is required"
                )));
            }
            builder = builder.apns(ApnsSettings {
                config,
                topic: apns.topic.clone(),
                environment,
            });
        }
        if let Some(fcm) = &self.fcm {
            let json = read("fcm.service_account", &fcm.service_account)?;
            let account = imgate_push::fcm::ServiceAccount::from_json(&json)
                .map_err(|e| ConfigError(format!("app {app}: push fcm.service_account: {e}")))?;
            let mut config = imgate_push::FcmConfig::new(account);
            if let Some(url) = &fcm.base_url {
                config.base_url(url.as_str());
            }
            if let Some(uri) = &fcm.token_uri {
                config.token_uri(uri.as_str());
            }
            builder = builder.fcm(config);
        }
        Ok(builder)
    }
}

impl file::Auth {
    fn dev_token(&self, secret: Option<&str>) -> dev_token::DevToken {
        match (self.kind.as_str(), secret) {
            ("static", _) => dev_token::DevToken::Static(self.tokens.clone()),
            (_, Some(secret)) if self.algorithm == "HS256" => {
                dev_token::DevToken::Hs256(secret.as_bytes().to_vec())
            }
            _ => dev_token::DevToken::PublicKey,
        }
    }

    fn build(
        &self,
        app: &str,
        secret: Option<&str>,
    ) -> Result<Arc<dyn Authenticator>, ConfigError> {
        match self.kind.as_str() {
            "static" => {
                let mut tokens = StaticTokens::new();
                for (token, user) in &self.tokens {
                    tokens.insert(token.clone(), UserId::new(user.as_str()));
                }
                Ok(Arc::new(tokens))
            }
            "jwt" => {
                let key = match self.algorithm.as_str() {
                    "HS256" => JwtKey::Secret(
                        secret
                            .ok_or_else(|| {
                                ConfigError(format!(
                                    "app {app}: auth: HS256 needs secret (or secret_env, secret_file)"
                                ))
                            })?
                            .as_bytes()
                            .to_vec(),
                    ),
                    "RS256" | "ES256" => {
                        let path = self.public_key_pem.as_ref().ok_or_else(|| {
                            ConfigError(format!(
                                "app {app}: {} needs public_key_pem",
                                self.algorithm
                            ))
                        })?;
                        JwtKey::PublicKeyPem(std::fs::read_to_string(path).map_err(|e| {
                            ConfigError(format!("app {app}: cannot read {}: {e}", path.display()))
                        })?)
                    }
                    other => {
                        return Err(ConfigError(format!(
                            "app {app}: unknown algorithm {other:?} (HS256, RS256, ES256)"
                        )));
                    }
                };
                let algorithm = match self.algorithm.as_str() {
                    "RS256" => crate::auth::JwtAlgorithm::Rs256,
                    "ES256" => crate::auth::JwtAlgorithm::Es256,
                    _ => crate::auth::JwtAlgorithm::Hs256,
                };
                let config = JwtConfig {
                    algorithm,
                    key,
                    audience: self.audience.clone(),
                    issuer: self.issuer.clone(),
                    leeway_secs: crate::auth::DEFAULT_LEEWAY_SECS,
                };
                let authenticator = JwtAuthenticator::new(config)
                    .map_err(|e| ConfigError(format!("app {app}: {e}")))?;
                Ok(Arc::new(authenticator))
            }
            other => Err(ConfigError(format!(
                "app {app}: unknown auth kind {other:?} (jwt, static)"
            ))),
        }
    }
}

fn platform_heartbeats(
    app: &str,
    session: &file::Session,
) -> Result<Vec<(imgate_codec::Platform, Duration)>, ConfigError> {
    session
        .platform_heartbeat_secs
        .iter()
        .map(|(name, secs)| {
            let platform = match name.as_str() {
                "ios" => imgate_codec::Platform::Ios,
                "android" => imgate_codec::Platform::Android,
                "web" => imgate_codec::Platform::Web,
                "desktop" => imgate_codec::Platform::Desktop,
                other => {
                    return Err(ConfigError(format!(
                        "app {app}: platform_heartbeat_secs: unknown platform {other:?} \
                         (ios, android, web, desktop)"
                    )));
                }
            };
            Ok((platform, Duration::from_secs((*secs).max(1))))
        })
        .collect()
}

/// The bounds of a relay app's offline queue; None when it keeps none.
fn offline_limits(app: &file::App) -> Result<Option<crate::backend::OfflineLimits>, ConfigError> {
    let relay = matches!(app.backend, file::Backend::Relay);
    let settings = match (&app.offline_queue, relay) {
        (Some(_), false) => {
            return Err(ConfigError(format!(
                "app {}: [app.offline_queue] applies only to the relay backend (a webhook or \
                 gRPC backend keeps its own history)",
                app.id
            )));
        }
        (_, false) => return Ok(None),
        (Some(settings), true) => settings,
        (None, true) => &file::OfflineQueue::default(),
    };
    if !settings.enabled {
        return Ok(None);
    }
    let positive = |key: &str, value: u64| {
        if value == 0 {
            Err(ConfigError(format!(
                "app {}: offline_queue.{key} must be at least 1 (set enabled = false to keep \
                 no queue)",
                app.id
            )))
        } else {
            Ok(())
        }
    };
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    positive(
        "max_messages_per_user",
        as_u64(settings.max_messages_per_user),
    )?;
    positive("max_bytes_per_user", as_u64(settings.max_bytes_per_user))?;
    positive("ttl_secs", settings.ttl_secs)?;
    Ok(Some(crate::backend::OfflineLimits {
        max_messages: settings.max_messages_per_user,
        max_bytes: settings.max_bytes_per_user,
        ttl: Duration::from_secs(settings.ttl_secs),
    }))
}

/// Builds an app's backend. Must run inside a tokio runtime (the gRPC backend starts its
/// stream at once). `webhook_metrics` gives the (shared) notice metrics of webhook backends.
fn build_backend(
    app: &str,
    spec: &file::Backend,
    webhook_metrics: impl FnOnce() -> crate::backend::WebhookMetrics,
) -> Result<Arc<dyn Backend>, ConfigError> {
    match spec {
        // Given its offline queue by `into_builder` (opening it is a side effect).
        file::Backend::Relay => Ok(Arc::new(RelayBackend::default())),
        file::Backend::Webhook(webhook) => {
            let secret = secret::resolve(
                &format!("app {app}: backend.secret"),
                webhook.secret.as_ref(),
                webhook.secret_env.as_ref(),
                webhook.secret_file.as_ref(),
            )?
            .ok_or_else(|| {
                ConfigError(format!(
                    "app {app}: a webhook backend needs secret (or secret_env, secret_file)"
                ))
            })?;
            let mut config =
                crate::backend::WebhookConfig::new(webhook.url.clone(), secret.into_bytes());
            if let Some(ms) = webhook.timeout_ms {
                config.timeout = Duration::from_millis(ms.max(1));
            }
            if let Some(retries) = webhook.max_retries {
                config.max_retries = retries;
            }
            if let Some(capacity) = webhook.queue_capacity {
                config.queue_capacity = capacity.max(1);
            }
            if let Some(capacity) = webhook.notice_capacity {
                config.notice_capacity = capacity.max(1);
            }
            let backend = crate::backend::WebhookBackend::with_metrics(config, webhook_metrics())
                .map_err(|e| ConfigError(format!("app {app}: webhook backend: {e}")))?;
            Ok(Arc::new(backend))
        }
        file::Backend::Grpc(grpc) => {
            let mut config = crate::backend::GrpcBackendConfig::new(grpc.endpoint.clone());
            if let Some(ms) = grpc.timeout_ms {
                config.request_timeout = Duration::from_millis(ms.max(1));
            }
            if let Some(capacity) = grpc.queue_capacity {
                config.queue_capacity = capacity.max(1);
            }
            let backend = crate::backend::GrpcBackend::new(config)
                .map_err(|e| ConfigError(format!("app {app}: grpc backend: {e}")))?;
            Ok(Arc::new(backend))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let config = Config::parse(DEFAULT_CONFIG).expect("default config");
        assert_eq!(config.listeners.len(), 6);
        let http = &config.listeners[5];
        assert_eq!(
            (http.kind, http.http.path.as_str()),
            (TransportKind::Http, "/imgate")
        );
        assert!(config.dev_certificate);
        assert_eq!(config.apps[0].id, AppId::new("default"));
        assert!(config.demo.is_none(), "the file itself keeps the demo off");
    }

    #[tokio::test]
    async fn the_embedded_defaults_turn_the_demo_page_on_and_it_mints_tokens_that_verify() {
        let config = Config::embedded().expect("embedded");
        let demo = config.demo.as_ref().expect("demo on");
        assert_eq!(demo.app, AppId::new("default"));
        assert_eq!(demo.ws_path, "/ws");
        let token = demo
            .token(&UserId::new("alice"), Duration::from_secs(60))
            .expect("token");
        let request = crate::auth::AuthRequest {
            app: AppId::new("default"),
            device: crate::ids::DeviceId::new("web"),
            token,
            peer: None,
        };
        let user = config.apps[0]
            .authenticator
            .authenticate(&request)
            .await
            .expect("the app accepts the demo's token");
        assert_eq!(user.user, UserId::new("alice"));
    }

    #[test]
    fn the_demo_page_needs_loopback_a_ws_listener_and_mintable_tokens() {
        let on = DEFAULT_CONFIG.replace("[admin]\n", "[admin]\ndemo = true\n");
        let config = Config::parse(&on).expect("demo in a file");
        assert!(config.demo.is_some());
        let wide = on.replace(
            "bind = \"127.0.0.1:7180\"",
            "bind = \"0.0.0.0:7180\"\ntoken = \"t\"",
        );
        let error = Config::parse(&wide).expect_err("beyond loopback");
        assert!(error.0.contains("admin.demo"), "{error}");
        let no_ws = on.replace("transport = \"ws\"", "transport = \"tcp\"");
        let no_ws = no_ws.replace(
            "path = \"/ws\"\n\n[[listener]]\ntransport = \"wss\"",
            "\n[[listener]]\ntransport = \"wss\"",
        );
        let error = Config::parse(&no_ws).expect_err("no ws listener");
        assert!(error.0.contains("transport = \"ws\""), "{error}");
    }

    #[test]
    fn push_section_builds_a_push_service() {
        let dir = std::env::temp_dir().join(format!("imgate-push-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = imgate_push::mock::ApnsTestKey::generate().expect("key");
        let key_path = dir.join("AuthKey.p8");
        std::fs::write(&key_path, &key.key_pem).expect("write key");
        let push = format!(
            "\n[app.push]\ndata_dir = {data:?}\n\n[app.push.apns]\nkey = {key:?}\n\
             key_id = \"ABC123DEFG\"\nteam_id = \"DEF123GHIJ\"\ntopic = \"com.example.chat\"\n\
             endpoint = \"sandbox\"\n",
            data = dir.join("data").display().to_string(),
            key = key_path.display().to_string(),
        );
        let in_dir = DEFAULT_CONFIG.replace(
            "data_dir = \"imgate-data\"",
            &format!("data_dir = {:?}", dir.join("server").display().to_string()),
        );
        let config = Config::parse(&format!("{in_dir}{push}")).expect("push config");
        // Described, not started: nothing is opened until into_builder.
        assert!(format!("{:?}", config.push).contains(&dir.join("data").display().to_string()));
        assert!(!dir.join("data").exists());
        let builder = config.into_builder().expect("start push");
        assert!(dir.join("data").join("push-queue.redb").exists());
        drop(builder);
        let typo = push.replace("team_id", "teamid");
        assert!(Config::parse(&format!("{DEFAULT_CONFIG}{typo}")).is_err());
        let no_provider = format!("{DEFAULT_CONFIG}\n[app.push]\ndata_dir = \"/nonexistent\"\n");
        let error = Config::parse(&no_provider).expect_err("no provider");
        assert!(error.0.contains("app.push.apns"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_offline_queue_is_opened_by_into_builder_not_by_parse() {
        let dir =
            std::env::temp_dir().join(format!("imgate-offline-config-{}", std::process::id()));
        let data = format!("data_dir = {:?}", dir.display().to_string());
        let text = DEFAULT_CONFIG.replace("data_dir = \"imgate-data\"", &data);
        let config = Config::parse(&text).expect("config");
        assert_eq!(config.offline_queue, Some(dir.join("offline.redb")));
        assert!(
            !dir.join("offline.redb").exists(),
            "checking creates nothing"
        );
        drop(config.into_builder().expect("builder"));
        assert!(dir.join("offline.redb").exists());
        let off = format!("{text}\n[app.offline_queue]\nenabled = false\n");
        assert_eq!(Config::parse(&off).expect("disabled").offline_queue, None);
        let zero = format!("{text}\n[app.offline_queue]\nttl_secs = 0\n");
        let error = Config::parse(&zero).expect_err("ttl 0");
        assert!(error.0.contains("offline_queue.ttl_secs"), "{error}");
        let webhook = text.replace(
            "backend = \"relay\"",
            "[app.backend]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"0123456789abcdef0123\"\n\n[app.offline_queue]\nenabled = true",
        );
        let error = Config::parse(&webhook).expect_err("webhook with a queue");
        assert!(error.0.contains("only to the relay"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let typo = DEFAULT_CONFIG.replace("heartbeat_secs", "hearbeat_secs");
        let error = Config::parse(&typo).expect_err("typo");
        assert!(error.0.contains("hearbeat_secs"), "{error}");
        let bad = DEFAULT_CONFIG.replace("transport = \"quic\"", "transport = \"carrier-pigeon\"");
        assert!(Config::parse(&bad).is_err());
        let no_secret =
            DEFAULT_CONFIG.replace("secret = \"imgate-development-secret-change-me\"", "");
        assert!(
            Config::parse(&no_secret)
                .expect_err("secret")
                .0
                .contains("secret")
        );
    }

    #[test]
    fn shared_ticket_keys_reach_every_tls_listener() {
        let dir = std::env::temp_dir().join(format!("imgate-ticket-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (current, previous, short) = (
            dir.join("current.key"),
            dir.join("previous.key"),
            dir.join("short.key"),
        );
        std::fs::write(&current, [1u8; imgate_transports::TICKET_KEY_LEN]).expect("write");
        std::fs::write(&previous, [2u8; imgate_transports::TICKET_KEY_LEN]).expect("write");
        std::fs::write(&short, [3u8; 32]).expect("write");
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).expect("write");
        let with_keys = |paths: &[&std::path::Path]| {
            let list: Vec<String> = paths
                .iter()
                .map(|p| format!("{:?}", p.display().to_string()))
                .collect();
            DEFAULT_CONFIG.replace(
                "[tls]\n",
                &format!(
                    "[tls]\ncert = {:?}\nkey = {:?}\nticket_keys = [{}]\n",
                    dir.join("cert.pem").display().to_string(),
                    dir.join("key.pem").display().to_string(),
                    list.join(", ")
                ),
            )
        };
        let config = Config::parse(&with_keys(&[&current, &previous])).expect("config");
        let tls_listeners: Vec<_> = config
            .listeners
            .iter()
            .filter(|l| l.identity.is_some())
            .collect();
        assert!(tls_listeners.len() >= 3, "tls, wss and quic");
        for listener in tls_listeners {
            let identity = format!("{:?}", listener.identity);
            assert!(identity.contains("shared_ticket_keys: true"), "{identity}");
        }
        let error = Config::parse(&with_keys(&[&current, &short])).expect_err("short key");
        assert!(error.0.contains("expected exactly 48"), "{error}");
        let no_tls_listener = with_keys(&[&current])
            .replace("cert = ", "# cert = ")
            .replace("key = \"/", "# key = \"/")
            .replace("transport = \"tls\"", "transport = \"tcp\"")
            .replace("transport = \"wss\"", "transport = \"ws\"")
            .replace("transport = \"quic\"", "transport = \"tcp\"");
        let error = Config::parse(&no_tls_listener).expect_err("no tls listener");
        assert!(error.0.contains("ticket_keys"), "{error}");
        let without_keys = no_tls_listener.replace("ticket_keys", "# ticket_keys");
        assert!(
            Config::parse(&without_keys).is_ok(),
            "the same file without keys is valid"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn backends_and_platform_heartbeats_are_configurable() {
        let webhook = DEFAULT_CONFIG.replace(
            "backend = \"relay\"",
            "[app.backend]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"0123456789abcdef0123\"\nmax_retries = 1\nnotice_capacity = 8",
        );
        Config::parse(&webhook).expect("webhook config");
        // The webhook constructor ran: it refuses a short secret.
        let short = webhook.replace("0123456789abcdef0123", "short");
        assert!(
            Config::parse(&short)
                .expect_err("short secret")
                .0
                .contains("webhook")
        );
        let grpc = DEFAULT_CONFIG.replace(
            "backend = \"relay\"",
            "[app.backend]\nkind = \"grpc\"\nendpoint = \"http://127.0.0.1:9\"",
        );
        Config::parse(&grpc).expect("grpc config");
        let bad_endpoint = grpc.replace("http://127.0.0.1:9", "ftp://nowhere");
        assert!(
            Config::parse(&bad_endpoint)
                .expect_err("endpoint")
                .0
                .contains("grpc")
        );
        let missing =
            DEFAULT_CONFIG.replace("backend = \"relay\"", "[app.backend]\nkind = \"webhook\"");
        assert!(Config::parse(&missing).expect_err("url").0.contains("url"));
        let unknown = DEFAULT_CONFIG.replace("backend = \"relay\"", "backend = \"carrier\"");
        assert!(Config::parse(&unknown).is_err());
        let config = Config::parse(DEFAULT_CONFIG).expect("default");
        let session = &config.apps[0].session;
        assert_eq!(
            session.heartbeat_for(imgate_codec::Platform::Ios),
            Duration::from_secs(240)
        );
        assert_eq!(
            session.heartbeat_for(imgate_codec::Platform::Web),
            Duration::from_secs(30)
        );
        let bad = DEFAULT_CONFIG.replace("ios = 240", "symbian = 240");
        assert!(
            Config::parse(&bad)
                .expect_err("platform")
                .0
                .contains("symbian")
        );
    }
}
