//! `[http]`: the HTTP listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::value::{Dur, IpRange, check, secs, section};

section! {
    /// The HTTP listener.
    pub struct HttpConfig {
        /// Address of the API listener (`0.0.0.0:8080` to serve beyond this host).
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// Largest request body accepted (bytes).
        max_body_bytes: usize = 16 * 1024,
        /// Open connections beyond this wait in the kernel's accept queue.
        max_connections: usize = 10_000,
        /// Time allowed to receive a request's headers: from the connection's accept for its
        /// first request, from the request's first byte for the next ones.
        header_read_timeout: Dur = secs(5),
        /// How long a kept-alive connection (HTTP/2: one with no request in flight) may wait
        /// for its next request before otpd closes it. Keep it longer than the idle timeout
        /// of a load balancer in front (AWS's ALB: 60 s), so that the balancer closes idle
        /// connections first and never sends a request on one otpd is closing.
        idle_timeout: Dur = secs(75),
        /// Time allowed for a whole request, body and handling included.
        request_timeout: Dur = secs(10),
        /// Peers whose `X-Forwarded-For` is believed (load balancers), as addresses or CIDR
        /// ranges (`"10.0.0.0/8"`). The client is the right-most hop not in these ranges.
        /// Empty: the socket address is the client address.
        trusted_proxies: Vec<IpRange> = Vec::new(),
        /// PEM certificate chain (leaf first). With `tls_key_file`, this listener serves
        /// HTTPS only (TLS 1.2 and 1.3, AEAD ciphers with forward secrecy, HTTP/2 by ALPN);
        /// without, plain HTTP. Reloaded without a restart: see `tls_reload_interval`.
        tls_cert_file: Option<PathBuf> = None,
        /// PEM private key of `tls_cert_file` (PKCS#8, SEC1 or PKCS#1); only its owner may
        /// read it (mode 0600 or stricter).
        tls_key_file: Option<PathBuf> = None,
        /// How often the certificate and key files (of this listener and of `admin.listen`)
        /// are read for a change; a changed pair is served to new connections at once. SIGHUP
        /// reloads them too.
        tls_reload_interval: Dur = secs(5),
        /// `max-age` of the `Strict-Transport-Security` header sent on every answer over TLS
        /// (never over plain HTTP); `0s` sends no header.
        hsts_max_age: Dur = secs(365 * 24 * 3600),
    }
}

impl HttpConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, (256..=16 * 1024 * 1024).contains(&self.max_body_bytes), || {
            format!("http.max_body_bytes: must be 256..=16777216, got {}", self.max_body_bytes)
        });
        check(errors, self.max_connections >= 1, || "http.max_connections: must be at least 1".into());
        for (key, value) in [("header_read_timeout", self.header_read_timeout), ("idle_timeout", self.idle_timeout)] {
            check(errors, value.0 >= Duration::from_millis(10), || {
                format!("http.{key}: must be at least 10ms, got {value:?}")
            });
        }
        check_tls_pair(errors, "http", &self.tls_cert_file, &self.tls_key_file);
        check(errors, self.tls_reload_interval.0 >= Duration::from_millis(10), || {
            format!("http.tls_reload_interval: must be at least 10ms, got {:?}", self.tls_reload_interval)
        });
    }

    /// The certificate and key files, when this listener serves TLS.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert_file.clone().zip(self.tls_key_file.clone())
    }
}

/// A listener's certificate and key are given together or not at all.
pub(super) fn check_tls_pair(errors: &mut Vec<String>, section: &str, cert: &Option<PathBuf>, key: &Option<PathBuf>) {
    check(errors, cert.is_some() == key.is_some(), || {
        format!("{section}.tls_cert_file and {section}.tls_key_file: give both (HTTPS) or neither (plain HTTP)")
    });
}
