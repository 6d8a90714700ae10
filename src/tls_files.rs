//! PEM files for TLS: the certificates and keys of the cluster link and of the ScyllaDB
//! driver, read the same way, with one error type that names the file and what was wrong.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS set-up that could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {}: {source}", path.display())]
    Pem { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    /// rustls refused a certificate, a key or their pairing.
    #[error("{}: {source}", path.display())]
    Refused { path: PathBuf, source: rustls::Error },
    /// rustls could not build a configuration (no file is to blame).
    #[error("{0}")]
    Config(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("no CA certificates found on the system; set scylla.tls_ca_file")]
    NoSystemRoots,
    #[error("scylla.tls_server_name {name:?}: {source}")]
    ServerName { name: String, source: rustls::pki_types::InvalidDnsNameError },
}

impl TlsFileError {
    pub fn refused(path: &Path) -> impl FnOnce(rustls::Error) -> TlsFileError + '_ {
        move |source| TlsFileError::Refused { path: path.to_owned(), source }
    }
}

/// Every certificate in a PEM file; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = |source| TlsFileError::Pem { path: path.to_owned(), source };
    let certs = CertificateDer::pem_file_iter(path).map_err(pem)?.collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsFileError::Pem { path: path.to_owned(), source })
}
