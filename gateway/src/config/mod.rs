//! The binary's TOML configuration: parsed strictly (`deny_unknown_fields`), then validated
//! into the library's typed settings.

mod file;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use imgate_transports::{Identity as Certificate, ListenerConfig, TransportKind};

use crate::app::App;
use crate::auth::{Authenticator, JwtAuthenticator, JwtConfig, JwtKey, StaticTokens};
use crate::backend::RelayBackend;
use crate::ids::{AppId, UserId};
use crate::server::{GatewayBuilder, ServerConfig};
use crate::session::SessionConfig;
pub use file::ConfigFile;

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
    /// Whether a development certificate was generated (worth a loud warning).
    pub dev_certificate: bool,
    /// The admin HTTP listener.
    pub admin: crate::admin::AdminConfig,
    /// How long a SIGTERM drain waits for clients to leave.
    pub drain_grace: Duration,
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| ConfigError(format!("invalid config: {e}")))?;
        file.validate()
    }

    /// A builder with every app and listener of this configuration.
    pub fn into_builder(self) -> GatewayBuilder {
        let mut builder = crate::Gateway::builder().config(self.server);
        for app in self.apps {
            builder = builder.app(app);
        }
        for listener in self.listeners {
            builder = builder.listener(listener);
        }
        builder
    }
}

impl ConfigFile {
    fn validate(self) -> Result<Config, ConfigError> {
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
            ..ServerConfig::default()
        };
        let needs_cert = self.listener.iter().any(|l| {
            matches!(
                l.transport,
                TransportKind::Tls | TransportKind::Wss | TransportKind::Quic
            )
        });
        let (certificate, dev_certificate) = match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => (
                Some(
                    Certificate::from_pem_files(cert, key)
                        .map_err(|e| ConfigError(format!("tls: {e}")))?,
                ),
                false,
            ),
            (None, None) if needs_cert => (
                Some(
                    Certificate::self_signed(&["localhost", "127.0.0.1"])
                        .map_err(|e| ConfigError(format!("tls: development certificate: {e}")))?,
                ),
                true,
            ),
            (None, None) => (None, false),
            _ => {
                return Err(ConfigError(
                    "tls: give both cert and key, or neither".into(),
                ));
            }
        };
        let mut listeners = Vec::new();
        for (index, listener) in self.listener.into_iter().enumerate() {
            let mut config = ListenerConfig::new(listener.transport, listener.bind);
            config.handshake_timeout = server.handshake_timeout;
            config.max_connections = listener.max_connections;
            config.max_per_ip = (listener.max_per_ip > 0).then_some(listener.max_per_ip);
            if let Some(path) = listener.path {
                if !listener.transport.is_websocket() {
                    return Err(ConfigError(format!(
                        "listener[{index}]: path only applies to ws and wss"
                    )));
                }
                config.ws.path = path;
            }
            if listener.transport.uses_tls() || listener.transport == TransportKind::Quic {
                if let Some(cert) = &certificate {
                    config = config.with_identity(cert.clone());
                }
            }
            listeners.push(config);
        }
        let mut apps = Vec::new();
        let mut seen = HashMap::new();
        for app in self.app {
            if seen.insert(app.id.clone(), ()).is_some() {
                return Err(ConfigError(format!("app {:?} is defined twice", app.id)));
            }
            let id = AppId::new(app.id.as_str());
            let authenticator = app.auth.build(&app.id)?;
            let session = SessionConfig {
                heartbeat: Duration::from_secs(app.session.heartbeat_secs.max(1)),
                max_unacked: app.session.max_unacked.max(1),
                max_unacked_bytes: app.session.max_unacked_bytes.max(1),
                resume_window: Duration::from_secs(app.session.resume_window_secs),
                push_grace: Duration::from_secs(app.session.push_grace_secs),
                ack_timeout: Duration::from_secs(app.session.ack_timeout_secs.max(1)),
                max_frame: app.session.max_frame,
                ..SessionConfig::default()
            };
            let backend = match app.backend {
                file::Backend::Relay => Arc::new(RelayBackend),
            };
            apps.push(App {
                id,
                authenticator,
                backend,
                session,
                push: Arc::new(crate::offline::NoPush),
            });
        }
        if apps.is_empty() {
            return Err(ConfigError("at least one [[app]] is required".into()));
        }
        Ok(Config {
            server,
            listeners,
            apps,
            dev_certificate,
            admin: crate::admin::AdminConfig {
                bind: self.admin.bind,
                token: self.admin.token,
            },
            drain_grace: Duration::from_secs(self.server.drain_grace_secs),
        })
    }
}

impl file::Auth {
    fn build(&self, app: &str) -> Result<Arc<dyn Authenticator>, ConfigError> {
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
                        self.secret
                            .clone()
                            .ok_or_else(|| ConfigError(format!("app {app}: HS256 needs secret")))?
                            .into_bytes(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let config = Config::parse(DEFAULT_CONFIG).expect("default config");
        assert_eq!(config.listeners.len(), 5);
        assert!(config.dev_certificate);
        assert_eq!(config.apps[0].id, AppId::new("default"));
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
}
