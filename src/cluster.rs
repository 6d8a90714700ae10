//! `[cluster]` of the configuration, turned into what the engine joins a cluster with:
//! names, addresses, the cookie, the keys that authenticate forwarded requests and, when
//! configured, mutual TLS between nodes (the configuration requires it whenever the link leaves
//! the host, unless `cluster.insecure_plaintext_on_private_network` is set: then
//! [`settings`] logs a warning at every start).
//!
//! With TLS, every node presents `tls_cert_file` and accepts only peers whose certificate
//! `tls_ca_file` signed; a node dials a seed by its host name and checks the seed's
//! certificate against that name, so node certificates name their advertised host.

use std::path::Path;
use std::sync::Arc;

use otpd_actors::actors::cluster::wire::FrameKeys;
use otpd_actors::actors::cluster::{ClusterSettings, ClusterTls};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::ClusterConfig;
use crate::tls_files::{TlsFileError, certificates, secret_private_key};

/// Why the cluster's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cluster TLS: {0}")]
pub struct ClusterTlsError(#[from] TlsFileError);

/// The settings to join with, or `None` when `cluster.enabled` is false. `hash_key` is
/// `secrets.hash_key` (a cluster requires it configured, the same on every node).
pub fn settings(c: &ClusterConfig, hash_key: &[u8; 32]) -> Result<Option<ClusterSettings>, ClusterTlsError> {
    if !c.enabled {
        return Ok(None);
    }
    if c.plaintext_by_opt_out() {
        tracing::warn!(
            exposed = %c.exposed().join("; "),
            "INSECURE: the cluster link is plaintext on the network (cluster.insecure_plaintext_on_private_network \
             = true): anyone who can reach or watch it sees the codes users type; configure cluster.tls_* instead"
        );
    }
    let cookie = c.cookie.as_ref().map(|s| s.0.clone()).unwrap_or_default();
    let tls = match (&c.tls_cert_file, &c.tls_key_file, &c.tls_ca_file) {
        (Some(cert), Some(key), Some(ca)) => Some(tls(cert, key, ca)?),
        _ => None,
    };
    Ok(Some(ClusterSettings {
        node_name: c.node_name.clone(),
        listen: c.listen,
        advertise_host: c.advertise_host.clone(),
        seeds: c.seeds.clone(),
        keys: FrameKeys::derive(hash_key, cookie.as_bytes()),
        cookie,
        forward_timeout: c.forward_timeout.0,
        reconnect_interval: c.reconnect_interval.0,
        tls,
    }))
}

fn tls(cert: &Path, key: &Path, ca: &Path) -> Result<ClusterTls, TlsFileError> {
    let chain = certificates(cert)?;
    // Refused when group or others may read it: whoever reads it can pose as this node.
    let private = secret_private_key(key)?;
    let mut roots = RootCertStore::empty();
    for ca_cert in certificates(ca)? {
        roots.add(ca_cert).map_err(TlsFileError::refused(ca))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(TlsFileError::from)?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private.clone_key())
        .map_err(TlsFileError::refused(cert))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)
        .map_err(TlsFileError::refused(cert))?;
    Ok(ClusterTls {
        acceptor: otpd_actors::actors::cluster::tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        connector: otpd_actors::actors::cluster::tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}
