//! `[cluster]`: several nodes sharing one population (ractor_cluster). Off by default; when on, every
//! node needs the same cookie, hash key and signing key, the shared store and shared limits.
//!
//! A cluster link carries what users type (codes to check) and the owner's verdicts, so a node
//! refuses to put it on a network without mutual TLS: when `listen` or any seed is not a
//! loopback address, all three `tls_*` files are required, unless the operator sets
//! `insecure_plaintext_on_private_network` (named so that nobody sets it by accident; the node
//! logs a warning at every start). The cookie must be at least 32 bytes and not obviously
//! weak: ractor_cluster's handshake hashes it with a 32-bit challenge the peer picks, so a
//! guessable cookie can be recovered offline from one handshake.

use std::net::{IpAddr, SocketAddr};
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
        /// Shared secret the nodes authenticate each other with: at least 32 bytes, random
        /// (`openssl rand -hex 32`). With `secrets.hash_key` it also keys the MAC of every
        /// forwarded command and answer. Prefer the environment: `OTPD_CLUSTER__COOKIE`.
        cookie: Option<Secret> = None,
        /// Longest wait for the owner of an identifier to answer a forwarded request; past it
        /// the request fails with 503 `owner_unreachable`.
        forward_timeout: Dur = secs(2),
        /// How often the seeds and members this node is not connected to are dialed (again),
        /// and its members asked whom they are connected to.
        reconnect_interval: Dur = secs(1),
        /// PEM certificate chain of this node, for mutual TLS between nodes (with
        /// `tls_key_file` and `tls_ca_file`; all three or none). Required when `listen` or a
        /// seed is not a loopback address. It must name the host the others dial this node at
        /// (`advertise_host`), and be usable as server and client certificate.
        tls_cert_file: Option<PathBuf> = None,
        /// PEM private key of `tls_cert_file`.
        tls_key_file: Option<PathBuf> = None,
        /// PEM CA that signed every node's certificate; peers must present one it signed.
        tls_ca_file: Option<PathBuf> = None,
        /// Run the cluster link in plaintext although `listen` or a seed is not a loopback
        /// address. Only for a private network that nobody else can reach: anyone on it can
        /// read the codes users type as they cross the link. Without it, such a node needs the
        /// three `tls_*` files; with them, it must not be set. The node logs a warning at start.
        insecure_plaintext_on_private_network: bool = false,
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
        match &self.cookie {
            None => errors.push(format!("cluster.cookie: required, {COOKIE_RULE}")),
            Some(cookie) => {
                check(errors, cookie.0.len() >= MIN_COOKIE_BYTES, || {
                    format!("cluster.cookie: too short ({} bytes), {COOKIE_RULE}", cookie.0.len())
                });
                check(errors, !weak_cookie(&cookie.0), || {
                    format!(
                        "cluster.cookie: too weak (fewer than {MIN_COOKIE_SYMBOLS} different characters), {COOKIE_RULE}"
                    )
                });
            }
        }
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
        let exposed = self.exposed();
        if self.tls_configured() {
            check(errors, !self.insecure_plaintext_on_private_network, || {
                "cluster.insecure_plaintext_on_private_network: set, but TLS is configured (tls_*): remove one of \
                 them"
                    .into()
            });
        } else if !exposed.is_empty() && !self.insecure_plaintext_on_private_network {
            errors.push(format!(
                "cluster.tls_cert_file, tls_key_file, tls_ca_file: required, because the link between nodes would \
                 cross a network ({}) and it carries the codes users type: give all three for mutual TLS (see \
                 docs/OPERATIONS.md, \"Cluster link security\"), or, only on a private network nobody else \
                 reaches, set cluster.insecure_plaintext_on_private_network = true",
                exposed.join("; "),
            ));
        }
    }

    /// Whether all three TLS files are given (validation refuses one or two).
    pub fn tls_configured(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some() && self.tls_ca_file.is_some()
    }

    /// Why the link would leave this host: the listener and the seeds that are not loopback
    /// addresses, each described. Empty: every address is loopback.
    pub fn exposed(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.listen.ip().is_loopback() {
            out.push(format!("listen = {} is not a loopback address", self.listen));
        }
        for seed in self.seeds.iter().filter(|s| !loopback_host(s)) {
            out.push(format!("seed {seed:?} is not a loopback address"));
        }
        out
    }

    /// Whether this node runs its cluster link in plaintext on a network because the operator
    /// said so (what the start-up warning is about).
    pub fn plaintext_by_opt_out(&self) -> bool {
        self.enabled
            && !self.tls_configured()
            && self.insecure_plaintext_on_private_network
            && !self.exposed().is_empty()
    }
}

/// Shortest cookie accepted, in bytes.
pub const MIN_COOKIE_BYTES: usize = 32;
/// Fewest different characters a cookie may have: a random one of 32 bytes or more has many
/// more (64 hex digits hold about 16), a repeated pattern has few.
const MIN_COOKIE_SYMBOLS: usize = 8;
const COOKIE_RULE: &str =
    "at least 32 random bytes: set OTPD_CLUSTER__COOKIE=$(openssl rand -hex 32), the same on every node";

fn weak_cookie(cookie: &str) -> bool {
    let mut seen = [false; 256];
    for b in cookie.bytes() {
        seen[usize::from(b)] = true;
    }
    seen.iter().filter(|s| **s).count() < MIN_COOKIE_SYMBOLS
}

/// Whether a `host:port` seed names this host: a loopback address or `localhost`. Any other
/// name may resolve anywhere, so it counts as the network.
fn loopback_host(seed: &str) -> bool {
    let host = seed.rsplit_once(':').map_or(seed, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
