//! Certificates: PEM files for production, a self-signed one for development, and the
//! rustls configurations built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[cfg(test)]
use crate::ALPN_IMGATE;
use crate::TransportError;
use crate::tickets::TicketKeys;

/// A server certificate chain and its private key (cheap to clone).
#[derive(Clone)]
pub struct Identity {
    chain: Arc<[CertificateDer<'static>]>,
    key: Arc<PrivateKeyDer<'static>>,
    /// Session-ticket keys shared with other nodes; `None`: keys of this process only.
    ticket_keys: Option<TicketKeys>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .field("shared_ticket_keys", &self.ticket_keys.is_some())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TransportError> {
        let chain = certificates_from_pem_file(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| TransportError::Config(format!("key file {}: {e}", key.display())))?;
        Ok(Self {
            chain: chain.into(),
            key: Arc::new(key),
            ticket_keys: None,
        })
    }

    /// Generates a self-signed certificate for `names` (DNS names or IP addresses), for
    /// development only: clients must be told to trust it explicitly. Logs a warning.
    pub fn self_signed(names: &[&str]) -> Result<Self, TransportError> {
        tracing::warn!(
            ?names,
            "generated a SELF-SIGNED development certificate: clients will not trust it \
             unless told to; configure a real certificate and key for production"
        );
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TransportError::Config(format!("generating a certificate: {e}")))?;
        let key = PrivateKeyDer::try_from(certified.key_pair.serialize_der())
            .map_err(|e| TransportError::Config(format!("generated key: {e}")))?;
        Ok(Self {
            chain: vec![certified.cert.der().clone()].into(),
            key: Arc::new(key),
            ticket_keys: None,
        })
    }

    /// The development identity kept in `dir` (`cert.pem`, `key.pem`): loaded if both files
    /// are there and valid, else generated as by [`Identity::self_signed`] and written (the
    /// directory and key owner-only), so clients that trust `cert.pem` keep trusting the
    /// server across restarts. Returns whether it was generated.
    pub fn dev_in(dir: &Path, names: &[&str]) -> Result<(Self, bool), TransportError> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if let Ok(identity) = Self::from_pem_files(&cert, &key)
            && identity.server_config(crate::ALPN_IMGATE, false).is_ok()
        {
            return Ok((identity, false));
        }
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TransportError::Config(format!("generating a certificate: {e}")))?;
        let write = |path: &Path, pem: String, mode: u32| {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(path)
                .and_then(|mut file| file.write_all(pem.as_bytes()))
                .map_err(|e| TransportError::Config(format!("writing {}: {e}", path.display())))
        };
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| TransportError::Config(format!("creating {}: {e}", dir.display())))?;
        write(&key, certified.key_pair.serialize_pem(), 0o600)?;
        write(&cert, certified.cert.pem(), 0o644)?;
        Ok((Self::from_pem_files(&cert, &key)?, true))
    }

    /// Checks that the certificate and key work together (the key is the certificate's, of a
    /// supported kind), as a server built on them would at start.
    pub fn check(&self) -> Result<(), TransportError> {
        self.server_config(crate::ALPN_IMGATE, false).map(drop)
    }

    /// Seals session tickets with `keys` (shared by every node) instead of keys of this
    /// process alone, so clients resume on any node (see [`TicketKeys`]).
    pub fn with_ticket_keys(mut self, keys: TicketKeys) -> Self {
        self.ticket_keys = Some(keys);
        self
    }

    /// The leaf certificate, e.g. to add to a client's [`RootCertStore`] in tests.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// A root store trusting only this identity's leaf (for development and tests).
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        // A certificate we generated or loaded ourselves; if webpki cannot parse it the
        // server could not use it either, and connecting will fail with a clear TLS error.
        let _ = roots.add(self.leaf().clone());
        roots
    }

    /// A rustls server configuration for `alpn`, TLS 1.2 and 1.3 (1.3 only when
    /// `tls13_only`, as QUIC requires).
    pub(crate) fn server_config(
        &self,
        alpn: &str,
        tls13_only: bool,
    ) -> Result<ServerConfig, TransportError> {
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_single_cert(self.chain.to_vec(), self.key.clone_key())?;
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        // Stateless session tickets, so every reconnecting phone can resume: without a
        // ticketer rustls keeps sessions in a 256-entry cache for the whole server, and at
        // gateway scale nearly every reconnect would be a full handshake. Keys shared by the
        // fleet if configured, else rustls' own (rotated every 6 hours, this process only).
        config.ticketer = match &self.ticket_keys {
            Some(keys) => keys.ticketer(),
            None => rustls::crypto::ring::Ticketer::new()?,
        };
        Ok(config)
    }
}

/// The one crypto provider: ring (no OpenSSL, no aws-lc).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration trusting `roots`, offering `alpn`.
pub(crate) fn client_config(
    roots: Arc<RootCertStore>,
    alpn: &str,
    tls13_only: bool,
) -> Result<ClientConfig, TransportError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Ok(config)
}

/// Where `imgate serve` keeps its development certificate (`cert.pem`, which clients trust)
/// and key when no certificate is configured: `$IMGATE_DEV_DIR` if set, else
/// `imgate-dev` in the system's temporary directory.
pub fn dev_certificate_dir() -> PathBuf {
    std::env::var_os("IMGATE_DEV_DIR")
        .map_or_else(|| std::env::temp_dir().join("imgate-dev"), PathBuf::from)
}

/// A root store trusting every certificate in the PEM file at `path`: how a client trusts a
/// private CA or a server's self-signed certificate.
pub fn roots_from_pem_file(path: &Path) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from_pem_file(path)? {
        roots.add(cert).map_err(|e| {
            TransportError::Config(format!("certificate file {}: {e}", path.display()))
        })?;
    }
    Ok(roots)
}

/// The certificates of a PEM file, in order; an error if it holds none.
fn certificates_from_pem_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TransportError::Config(format!("certificate file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TransportError::Config(format!(
            "certificate file {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_pem_files() {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("generate");
        let dir = std::env::temp_dir().join(format!("imgate-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
        let identity = Identity::from_pem_files(&cert, &key).expect("load");
        assert_eq!(identity.leaf().as_ref(), certified.cert.der().as_ref());
        assert_eq!(roots_from_pem_file(&cert).expect("roots").len(), 1);
        // A key file holds no certificate: refused, not an empty (useless) root store.
        assert!(matches!(
            roots_from_pem_file(&key),
            Err(TransportError::Config(_))
        ));
        assert!(identity.server_config(ALPN_IMGATE, false).is_ok());
        // A key file holding a certificate is a clear configuration error, not a panic.
        assert!(matches!(
            Identity::from_pem_files(&cert, &cert),
            Err(TransportError::Config(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
