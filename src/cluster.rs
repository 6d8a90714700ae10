//! `[cluster]` of the configuration, turned into what the engine joins a cluster with:
//! names, addresses, the cookie and, when configured, mutual TLS between nodes.
//!
//! With TLS, every node presents `tls_cert_file` and accepts only peers whose certificate
//! `tls_ca_file` signed; a node dials a seed by its host name and checks the seed's
//! certificate against that name, so node certificates name their advertised host.

use std::sync::Arc;

use otpd_actors::actors::cluster::{ClusterSettings, ClusterTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::Config;

/// The settings to join with, or `None` when `cluster.enabled` is false.
pub fn settings(config: &Config) -> Result<Option<ClusterSettings>, String> {
    let c = &config.cluster;
    if !c.enabled {
        return Ok(None);
    }
    let tls = match (&c.tls_cert_file, &c.tls_key_file, &c.tls_ca_file) {
        (Some(cert), Some(key), Some(ca)) => Some(tls(cert, key, ca)?),
        _ => None,
    };
    Ok(Some(ClusterSettings {
        node_name: c.node_name.clone(),
        listen: c.listen,
        advertise_host: c.advertise_host.clone(),
        seeds: c.seeds.clone(),
        cookie: c.cookie.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
        forward_timeout: c.forward_timeout.0,
        reconnect_interval: c.reconnect_interval.0,
        tls,
    }))
}

fn tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> Result<ClusterTls, String> {
    let read_certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cluster TLS: cannot read {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cluster TLS: {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("cluster TLS: no certificate in {}", path.display()));
        }
        Ok(certs)
    };
    let chain = read_certs(cert)?;
    let mut roots = RootCertStore::empty();
    for ca_cert in read_certs(ca)? {
        roots.add(ca_cert).map_err(|e| format!("cluster TLS: {}: {e}", ca.display()))?;
    }
    let roots = Arc::new(roots);
    let key_der =
        || PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cluster TLS: cannot read {}: {e}", key.display()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| format!("cluster TLS: {e}"))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cluster TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key_der()?)
        .map_err(|e| format!("cluster TLS: {}: {e}", cert.display()))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cluster TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der()?)
        .map_err(|e| format!("cluster TLS: {}: {e}", cert.display()))?;
    Ok(ClusterTls {
        acceptor: otpd_actors::actors::cluster::tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        connector: otpd_actors::actors::cluster::tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}
