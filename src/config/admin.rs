//! `[admin]`: what SREs use: Prometheus metrics, readiness details and the admin API, on a
//! listener of their own. The public listener does not serve them: what they count (codes sent
//! to known accounts, sign-ups, users) would tell an outsider known accounts from unknown ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::value::{Dur, check, secs, section};

section! {
    /// What SREs use: Prometheus metrics, health and admin endpoints.
    pub struct AdminConfig {
        /// The ops listener: `/metrics`, `/health/*` with details and `/v1/admin/*`. Keep it
        /// off the public network (`0.0.0.0:9464` only where a private network reaches it).
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9464)),
        /// Also serve `/metrics`, `/v1/admin/*` and readiness details on the public listener
        /// (`http.listen`). Only for a public listener that no outsider reaches: the metrics
        /// tell known accounts from unknown ones.
        ops_on_public_listener: bool = false,
        /// How often sampled gauges are refreshed: users, sessions, live challenges, breaker
        /// states, readiness.
        refresh_interval: Dur = secs(5),
        /// Where `otpd backup` (`POST /v1/admin/backup`) may write: a backup's directory must
        /// be inside this absolute path, which must exist. Empty: anywhere the node's user may
        /// create a directory.
        backup_root: PathBuf = PathBuf::new(),
        /// PEM certificate chain of the ops listener; with `tls_key_file` it serves HTTPS only
        /// (same rules and reloading as `http.tls_cert_file`).
        tls_cert_file: Option<PathBuf> = None,
        /// PEM private key of `admin.tls_cert_file` (mode 0600 or stricter).
        tls_key_file: Option<PathBuf> = None,
    }
}

impl AdminConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, self.refresh_interval.0 >= Duration::from_millis(10), || {
            format!("admin.refresh_interval: must be at least 10ms, got {:?}", self.refresh_interval)
        });
        check(errors, self.backup_root.as_os_str().is_empty() || self.backup_root.is_absolute(), || {
            format!("admin.backup_root: must be an absolute path (or empty), got {:?}", self.backup_root.display())
        });
        super::http::check_tls_pair(errors, "admin", &self.tls_cert_file, &self.tls_key_file);
    }

    /// The certificate and key files, when the ops listener serves TLS.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert_file.clone().zip(self.tls_key_file.clone())
    }
}
