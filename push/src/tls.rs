//! rustls client configuration for the providers.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::PushError;

/// Which certificate authorities a provider connection trusts.
#[derive(Debug, Clone, Default)]
pub enum TrustRoots {
    /// Mozilla's roots compiled in (`webpki-roots`): what Apple's and Google's servers chain to.
    #[default]
    WebPki,
    /// Only the CA certificates in this PEM bundle (tests, private proxies).
    Pem(Vec<u8>),
}

/// A PEM client certificate chain and its private key (APNs certificate auth).
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) chain_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
}

pub(crate) fn client_config(
    roots: &TrustRoots,
    identity: Option<&ClientIdentity>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, PushError> {
    let mut store = RootCertStore::empty();
    match roots {
        TrustRoots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TrustRoots::Pem(pem) => {
            for cert in read_certs(pem)? {
                store
                    .add(cert)
                    .map_err(|e| PushError::Config(format!("trust root: {e}")))?;
            }
        }
    }
    // Name the provider explicitly: the workspace may enable several rustls crypto backends,
    // and the process-default lookup panics when more than one is compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PushError::Config(format!("tls: {e}")))?
        .with_root_certificates(store);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(read_certs(&id.chain_pem)?, read_key(&id.key_pem)?)
            .map_err(|e| PushError::Config(format!("client certificate: {e}")))?,
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

pub(crate) fn read_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PushError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PushError::Config(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PushError::Config("no certificate in PEM".into()));
    }
    Ok(certs)
}

pub(crate) fn read_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PushError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| PushError::Config(format!("private key PEM: {e}")))?
        .ok_or_else(|| PushError::Config("no private key in PEM".into()))
}
