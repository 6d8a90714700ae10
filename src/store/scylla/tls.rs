//! TLS to the cluster with rustls (aws-lc-rs, like the rest of the binary). A client key
//! other users can read is refused ([`crate::tls_files::secret_private_key`]).
//!
//! The driver names each node by its IP address when it checks a certificate, so a node's
//! certificate must carry that address — unless `scylla.tls_server_name` is set, in which case
//! every node's certificate is checked against that one DNS name instead (the common case of
//! clusters whose certificates name a service, not addresses).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::ScyllaConfig;
use crate::tls_files::{TlsFileError, certificates, roots, secret_private_key};

/// The rustls client configuration `[scylla]` describes.
pub fn client_config(c: &ScyllaConfig) -> Result<Arc<rustls::ClientConfig>, TlsFileError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = roots(c.tls_ca_file.as_deref(), "scylla.tls_ca_file")?;
    let roots = Arc::new(roots);
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = if c.tls_server_name.is_empty() {
        builder.with_root_certificates(roots)
    } else {
        let name = ServerName::try_from(c.tls_server_name.clone())
            .map_err(|source| TlsFileError::ServerName { name: c.tls_server_name.clone(), source })?;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(FixedName { name, inner }))
    };
    let config = match (&c.tls_cert_file, &c.tls_key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert)?, secret_private_key(key)?)
            .map_err(TlsFileError::refused(cert))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Full WebPKI verification, against a configured name instead of the address dialled.
#[derive(Debug)]
struct FixedName {
    name: ServerName<'static>,
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
