//! HTTPS on a listener: the rustls configuration and a certificate that is reloaded from disk.
//!
//! * TLS 1.3 and 1.2 only, with the aws-lc-rs provider's suites: AEAD ciphers (AES-GCM,
//!   ChaCha20-Poly1305) over ECDHE key exchange. No CBC, no RSA key exchange, nothing older.
//! * ALPN offers `h2` then `http/1.1`; a client that names neither gets HTTP/1.1.
//! * The certificate is resolved per handshake from a [`ReloadingCert`]: a background task
//!   ([`spawn_reloader`]) reads the files every `http.tls_reload_interval` and on SIGHUP, and
//!   swaps in a new pair when their bytes changed and they load (chain parsed, key readable by
//!   its owner only, key matching the leaf). A pair that does not load is logged and the old
//!   one is served until a good one appears, so a half-copied file never takes HTTPS down.
//!   Open connections keep the certificate they were made with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tls_files::{self, TlsFileError};

/// A listener's certificate and key, as loaded last.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// BLAKE3 of the files' bytes: of the pair served, and of the last pair that failed (so
    /// a bad pair is reported once, not every interval).
    seen: Mutex<(blake3::Hash, Option<blake3::Hash>)>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

/// What one check of the files did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but do not load; the previous pair is still served.
    Refused(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn digest(cert: &Path, key: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for path in [cert, key] {
        // A missing file hashes as empty: the load that follows names the problem.
        let bytes = std::fs::read(path).unwrap_or_default();
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize()
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsFileError> {
    let chain = tls_files::certificates(cert)?;
    let private = tls_files::secret_private_key(key)?;
    let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(TlsFileError::refused(key))?;
    Ok(certified)
}

impl ReloadingCert {
    /// Loads the pair once; an error here stops the node from starting.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, TlsFileError> {
        let seen = digest(cert, key);
        let current = load(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(current),
            seen: Mutex::new((seen, None)),
        }))
    }

    /// Reads the files; swaps in the pair if it changed and loads.
    pub fn reload(&self) -> Reload {
        let now = digest(&self.cert, &self.key);
        {
            let seen = self.seen.lock();
            if seen.0 == now || seen.1 == Some(now) {
                return Reload::Unchanged;
            }
        }
        match load(&self.cert, &self.key) {
            Ok(pair) => {
                self.current.store(Arc::new(pair));
                *self.seen.lock() = (now, None);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                Reload::Reloaded
            }
            Err(e) => {
                self.seen.lock().1 = Some(now);
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; still serving the previous pair");
                Reload::Refused(e.to_string())
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server side of TLS for one listener.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, TlsFileError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks `certs` every `every` and on SIGHUP, until `certs` is the only holder left (the
/// listeners are gone).
pub fn spawn_reloader(certs: Vec<Arc<ReloadingCert>>, every: Duration) {
    if certs.is_empty() {
        return;
    }
    let weak: Vec<_> = certs.iter().map(Arc::downgrade).collect();
    drop(certs);
    // Registered before this returns, so a SIGHUP sent once the node is up is never the
    // default action (which would end the process).
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tokio::spawn(async move {
        // The files were just read: the first check is one interval away.
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            tokio::select! {
                _ = interval.tick() => {}
                _ = hup => tracing::info!("SIGHUP: reading the TLS certificate files"),
            }
            let live: Vec<_> = weak.iter().filter_map(|w| w.upgrade()).collect();
            if live.is_empty() {
                break;
            }
            for cert in live {
                // Reading two small files: off the runtime's threads all the same.
                let _ = tokio::task::spawn_blocking(move || cert.reload()).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_modern_suites_and_versions() {
        let p = provider();
        for suite in &p.cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.starts_with("TLS13_")
                    || (name.contains("_ECDHE_") && (name.contains("GCM") || name.contains("CHACHA20"))),
                "{name}"
            );
        }
    }
}
