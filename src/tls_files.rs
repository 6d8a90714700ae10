//! PEM files for TLS: the certificates and keys of the cluster link, of the ScyllaDB driver
//! and of Redis, read the same way, with one error type that names the file and what was
//! wrong. A client's private key must be its owner's only ([`secret_private_key`]).

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::private_fs::{ExposedSecret, check_secret_mode};

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
    /// No `<key>` was given and the system has no CA certificates to use instead.
    #[error("no CA certificates found on the system; set {key}")]
    NoSystemRoots { key: &'static str },
    #[error("scylla.tls_server_name {name:?}: {source}")]
    ServerName { name: String, source: rustls::pki_types::InvalidDnsNameError },
    /// A private key file other users can open.
    #[error("{0}")]
    Exposed(#[from] ExposedSecret),
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

/// The private key in a PEM file that only its owner may open: a key other users can read is
/// refused ([`TlsFileError::Exposed`]) before it is read.
pub fn secret_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    check_secret_mode(path)?;
    private_key(path)
}

/// The certificates a client trusts: those of `ca_file`, or the system's when it is `None`
/// (`key` names the setting to give when the system has none).
pub fn roots(ca_file: Option<&Path>, key: &'static str) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(TlsFileError::refused(path))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // One unusable system certificate does not make the others unusable.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsFileError::NoSystemRoots { key });
            }
        }
    }
    Ok(roots)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_private_key_others_can_read_is_refused_before_it_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("client.key");
        // Not even a key: the mode is checked first.
        std::fs::write(&key, "not a key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = secret_private_key(&key).unwrap_err();
        assert!(
            matches!(e, TlsFileError::Exposed(ref x) if x.path == key.display().to_string() && x.mode == 0o644),
            "{e}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(secret_private_key(&key), Err(TlsFileError::Pem { .. })), "then read");
    }
}
