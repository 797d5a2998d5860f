//! `[cluster]`: validated into the library's [`crate::cluster::ClusterConfig`] without
//! connecting to anything.

use std::time::Duration;

use super::{ConfigError, file, secret};
/// `[cluster]` as the library takes it; every key checked here, nothing connected.
pub(super) fn from_file(
    file: &file::Cluster,
) -> Result<crate::cluster::ClusterConfig, ConfigError> {
    use crate::cluster::{ClusterAuth, ClusterConfig, valid_node_name};
    if !valid_node_name(&file.node) {
        return Err(ConfigError(format!(
            "cluster.node = {:?}: use 1 to 64 letters, digits, '-' or '_'",
            file.node
        )));
    }
    if file.urls.is_empty() {
        return Err(ConfigError(
            "cluster.urls: name at least one NATS server".into(),
        ));
    }
    for url in &file.urls {
        let scheme_ok = ["nats://", "tls://"].iter().any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(ConfigError(format!(
                "cluster.urls: {url:?}: use nats://host:port or tls://host:port"
            )));
        }
    }
    if !(1..=5).contains(&file.replicas) {
        return Err(ConfigError(format!(
            "cluster.replicas = {}: JetStream takes 1 to 5",
            file.replicas
        )));
    }
    let token = secret::resolve(
        "cluster.token",
        file.token.as_ref(),
        file.token_env.as_ref(),
        file.token_file.as_ref(),
    )?;
    let password = secret::resolve(
        "cluster.password",
        file.password.as_ref(),
        file.password_env.as_ref(),
        file.password_file.as_ref(),
    )?;
    let auth = match (token, &file.user, password, &file.credentials_file) {
        (None, None, None, None) => ClusterAuth::None,
        (Some(token), None, None, None) => ClusterAuth::Token(token),
        (None, Some(user), Some(password), None) => ClusterAuth::UserPassword {
            user: user.clone(),
            password,
        },
        (None, None, None, Some(path)) => {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "cluster.credentials_file: {} is not a file",
                    path.display()
                )));
            }
            ClusterAuth::CredentialsFile(path.clone())
        }
        (None, Some(_), None, None) | (None, None, Some(_), None) => {
            return Err(ConfigError("cluster: user and password go together".into()));
        }
        _ => {
            return Err(ConfigError(
                "cluster: give one of token, user + password and credentials_file".into(),
            ));
        }
    };
    if let Some(ca) = &file.tls_ca
        && !ca.is_file()
    {
        return Err(ConfigError(format!(
            "cluster.tls_ca: {} is not a file",
            ca.display()
        )));
    }
    let mut config = ClusterConfig::new(file.node.clone(), file.urls.clone());
    config.auth = auth;
    config.tls_ca = file.tls_ca.clone();
    config.require_tls = file.require_tls;
    config.replicas = file.replicas;
    config.request_timeout = Duration::from_millis(file.request_timeout_ms.max(1));
    config.unready_after = Duration::from_secs(file.unready_after_secs);
    config.connect_timeout = Duration::from_secs(file.connect_timeout_secs.max(1));
    config.node_timeout = Duration::from_secs(file.node_timeout_secs.max(1));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn refused(cluster: &str) -> String {
        let text = format!(
            "[cluster]\n{cluster}\n[[app]]\nid = \"chat\"\n[app.auth]\nkind = \"static\"\ntokens = {{ \"t\" = \"u\" }}\n"
        );
        Config::parse(&text).expect_err("refused").0
    }

    #[test]
    fn each_bad_cluster_section_is_refused_naming_the_key() {
        let urls = "urls = [\"nats://127.0.0.1:4222\"]";
        assert!(refused(&format!("{urls}\nnode = \"a.b\"")).contains("cluster.node"));
        assert!(refused("urls = []\nnode = \"a\"").contains("cluster.urls"));
        assert!(refused("urls = [\"http://x:1\"]\nnode = \"a\"").contains("cluster.urls"));
        assert!(
            refused(&format!("{urls}\nnode = \"a\"\nreplicas = 7")).contains("cluster.replicas")
        );
        assert!(
            refused(&format!("{urls}\nnode = \"a\"\nuser = \"u\"")).contains("user and password")
        );
        assert!(
            refused(&format!(
                "{urls}\nnode = \"a\"\ntoken = \"t\"\nuser = \"u\"\npassword = \"p\""
            ))
            .contains("one of")
        );
        assert!(
            refused(&format!(
                "{urls}\nnode = \"a\"\ntls_ca = \"/nonexistent/ca.pem\""
            ))
            .contains("cluster.tls_ca")
        );
        assert!(refused(&format!("{urls}\nnode = \"a\"\nbogus = 1")).contains("bogus"));
    }

    #[test]
    fn a_good_cluster_section_is_taken_as_written() {
        let text = "[cluster]\nurls = [\"nats://127.0.0.1:4222\"]\nnode = \"gw-1\"\nreplicas = 3\ntoken = \"s3cret\"\nrequest_timeout_ms = 500\n[[app]]\nid = \"chat\"\n[app.auth]\nkind = \"static\"\ntokens = { \"t\" = \"u\" }\n";
        let config = Config::parse(text).expect("valid");
        let cluster = config.cluster.expect("cluster");
        assert_eq!((cluster.node.as_str(), cluster.replicas), ("gw-1", 3));
        assert_eq!(
            cluster.request_timeout,
            std::time::Duration::from_millis(500)
        );
        assert!(matches!(cluster.auth, crate::cluster::ClusterAuth::Token(ref t) if t == "s3cret"));
        // Secrets stay out of Debug output.
        assert!(!format!("{:?}", cluster.auth).contains("s3cret"));
    }
}
