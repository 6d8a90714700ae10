//! `[cluster]`: several nodes sharing one population (ractor_cluster). Off by default; when on, every

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::value::{Dur, Secret, check, host_port, secs, section};

section! {
    /// Several nodes sharing one population (ractor_cluster). Off by default; when on, every
    /// node needs the same `cookie`, `secrets.hash_key` and token signing key, a shared store
    /// (`store.kind = "scylla"`) and shared limits (`[redis]`).
    pub struct ClusterConfig {
        /// Join other nodes (off: a single node).
        enabled: bool = false,
        /// This node's name, unique in the cluster; ownership is hashed over these names, so
        /// a node that restarts under the same name gets the same identifiers back.
        node_name: String = String::new(),
        /// Address the inter-node listener binds.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 4370)),
        /// Host name or address the other nodes reach this one at; default: `listen`'s address.
        advertise_host: String = String::new(),
        /// Other nodes (`host:port`) to join through; any one that is up is enough.
        seeds: Vec<String> = Vec::new(),
        /// Shared secret the nodes authenticate each other with (at least 16 characters).
        /// Prefer the environment: `OTPD_CLUSTER__COOKIE`.
        cookie: Option<Secret> = None,
        /// Longest wait for the owner of an identifier to answer a forwarded request; past it
        /// the request fails with 503 `owner_unreachable`.
        forward_timeout: Dur = secs(2),
        /// How often unreachable seeds are tried again.
        reconnect_interval: Dur = secs(1),
        /// PEM certificate chain of this node, for TLS between nodes (with `tls_key_file` and
        /// `tls_ca_file`; all three or none).
        tls_cert_file: Option<PathBuf> = None,
        /// PEM private key of `tls_cert_file`.
        tls_key_file: Option<PathBuf> = None,
        /// PEM CA that signed every node's certificate; peers must present one it signed.
        tls_ca_file: Option<PathBuf> = None,
    }
}

impl ClusterConfig {
    /// This section's own rules (the shared store, limits and keys a cluster node needs are
    /// checked across sections, in `Config::validate_across`).
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        let name_ok = !self.node_name.is_empty()
            && self.node_name.len() <= 64
            && self.node_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        check(errors, name_ok, || "cluster.node_name: required, 1-64 characters of A-Z a-z 0-9 - _ .".into());
        check(errors, self.cookie.as_ref().is_some_and(|c| c.0.len() >= 16), || {
            "cluster.cookie: required, at least 16 characters (set OTPD_CLUSTER__COOKIE)".into()
        });
        for seed in &self.seeds {
            check(errors, host_port(seed), || format!("cluster.seeds: {seed:?} is not host:port"));
        }
        check(errors, self.forward_timeout.0 >= Duration::from_millis(10), || {
            "cluster.forward_timeout: must be at least 10ms".into()
        });
        check(errors, self.reconnect_interval.0 >= Duration::from_millis(10), || {
            "cluster.reconnect_interval: must be at least 10ms".into()
        });
        let tls = [&self.tls_cert_file, &self.tls_key_file, &self.tls_ca_file];
        check(errors, tls.iter().all(|f| f.is_some()) || tls.iter().all(|f| f.is_none()), || {
            "cluster.tls_cert_file, tls_key_file, tls_ca_file: give all three or none".into()
        });
    }
}
