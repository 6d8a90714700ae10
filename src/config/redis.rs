//! `[redis]`: Redis for the cooldowns and rate limits every node shares, over TCP or TLS
//! (`rediss://`, with the CA and client certificate files checked like the other TLS files).

use std::path::PathBuf;
use std::time::Duration;

use super::value::{Dur, RedisUrl, Secret, check, host_port, millis, secs, section};

section! {
    /// Redis for the cooldowns and rate limits every node shares. Without a URL or cluster
    /// nodes, limits are kept in-process (the embedded default).
    pub struct RedisConfig {
        /// `redis://[user:password@]host:6379[/db]` for one server, or
        /// `redis-cluster://host:7000?node=host:7001&node=host:7002` for Redis Cluster;
        /// `rediss://` and `rediss-cluster://` for the same over TLS (`valkey…` schemes too).
        url: RedisUrl = RedisUrl::default(),
        /// Redis Cluster seed nodes (`host:port`), instead of a `redis-cluster://` URL.
        cluster_nodes: Vec<String> = Vec::new(),
        /// Password (overrides one in the URL).
        password: Option<Secret> = None,
        /// A decision slower than this is made by the in-process limiter instead.
        timeout: Dur = millis(250),
        /// How often Redis is pinged (to notice an outage without traffic, and a recovery).
        probe_interval: Dur = secs(1),
        /// First part of every key (`<key_prefix>:{…}:…`), to share a Redis between deployments.
        key_prefix: String = "otpd".into(),
        /// With a `rediss://` URL: PEM file of the CA(s) that signed the server's certificate,
        /// trusted instead of the system's roots.
        tls_ca_file: Option<PathBuf> = None,
        /// With a `rediss://` URL: client certificate (PEM), for servers that require one
        /// (`tls-auth-clients yes`), with `tls_key_file`.
        tls_cert_file: Option<PathBuf> = None,
        /// PEM private key of `tls_cert_file`; readable by its owner only (mode 0600), or the
        /// node refuses to start.
        tls_key_file: Option<PathBuf> = None,
    }
}

/// The URL schemes otpd accepts (fred reads them all).
const SCHEMES: [&str; 8] = [
    "redis://",
    "redis-cluster://",
    "rediss://",
    "rediss-cluster://",
    "valkey://",
    "valkey-cluster://",
    "valkeys://",
    "valkeys-cluster://",
];

/// The schemes of TLS connections.
const TLS_SCHEMES: [&str; 4] = ["rediss://", "rediss-cluster://", "valkeys://", "valkeys-cluster://"];

impl RedisConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if !self.url.0.is_empty() {
            check(errors, SCHEMES.iter().any(|s| self.url.0.starts_with(s)), || {
                format!("redis.url: must start with one of {}", SCHEMES.join(", "))
            });
            check(errors, self.cluster_nodes.is_empty(), || {
                "redis.cluster_nodes: give either redis.url or redis.cluster_nodes, not both".into()
            });
        }
        for node in &self.cluster_nodes {
            check(errors, host_port(node), || format!("redis.cluster_nodes: {node:?} is not host:port"));
        }
        check(errors, !self.timeout.0.is_zero(), || "redis.timeout: must be more than zero".into());
        check(errors, self.probe_interval.0 >= Duration::from_millis(10), || {
            "redis.probe_interval: must be at least 10ms".into()
        });
        let prefix = &self.key_prefix;
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        check(errors, prefix_ok, || "redis.key_prefix: 1-64 printable characters without spaces, '{' or '}'".into());
        check(errors, self.tls_cert_file.is_some() == self.tls_key_file.is_some(), || {
            "redis: set both redis.tls_cert_file and redis.tls_key_file, or neither".into()
        });
        let tls_keys = self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_key_file.is_some();
        check(errors, self.tls() || !tls_keys, || {
            "redis: tls_* keys are set but redis.url is not a rediss:// (or rediss-cluster://) URL".into()
        });
    }

    /// Whether Redis is reached over TLS (the URL's scheme says so; seed nodes given as
    /// `cluster_nodes` are plain TCP: use a `rediss-cluster://` URL for TLS).
    pub fn tls(&self) -> bool {
        TLS_SCHEMES.iter().any(|s| self.url.0.starts_with(s))
    }

    /// Whether limits are shared through Redis (a URL or cluster nodes are given).
    pub fn enabled(&self) -> bool {
        !self.url.0.is_empty() || !self.cluster_nodes.is_empty()
    }
}
