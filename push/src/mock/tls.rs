//! A throw-away certificate authority for the mocks.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig};

use crate::PushError;

/// A CA plus a `localhost`/`127.0.0.1` server certificate it signed.
pub struct TestPki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestPki")
    }
}

fn err(e: impl std::fmt::Display) -> PushError {
    PushError::Config(format!("test PKI: {e}"))
}

impl TestPki {
    /// Generates the CA and server certificate.
    pub fn generate() -> Result<Self, PushError> {
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "imgate push test CA");
        let ca = ca_params.self_signed(&ca_key).map_err(err)?;
        let server_key = KeyPair::generate().map_err(err)?;
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(err)?;
        let server = params.signed_by(&server_key, &ca, &ca_key).map_err(err)?;
        Ok(Self {
            server_cert: server.der().clone(),
            server_key: server_key.serialize_der(),
            ca,
            ca_key,
        })
    }

    /// The CA certificate, PEM: give it to the client as its only trust root.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A client certificate signed by the CA, as (chain PEM, key PEM): APNs certificate auth.
    pub fn client_identity(&self, common_name: &str) -> Result<(String, String), PushError> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    pub(crate) fn server_config(
        &self,
        alpn: &[&[u8]],
        require_client_cert: bool,
    ) -> Result<Arc<ServerConfig>, PushError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(err)?;
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.der().clone()).map_err(err)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(err)?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = builder
            .with_single_cert(vec![self.server_cert.clone()], key)
            .map_err(err)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
