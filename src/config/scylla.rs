//! `[scylla]`: a ScyllaDB cluster as the durable store (`store.kind = "scylla"`).

use std::path::PathBuf;
use std::time::Duration;

use scylla::statement::{Consistency, SerialConsistency};

use super::value::{Dur, Secret, host_port, millis, secs, section};

/// Scylla refuses a TTL above 20 years (`630720000` s).
pub const MAX_TTL_SECS: u64 = 630_720_000;

/// One day: the width of an audit bucket, and the extra life of a day-index row.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

section! {
    /// A ScyllaDB cluster as the durable store (`store.kind = "scylla"`).
    pub struct ScyllaConfig {
        /// Nodes to connect to first (`host:port`); the driver discovers the rest.
        contact_points: Vec<String> = vec!["127.0.0.1:9042".into()],
        /// Keyspace of otpd's tables (created by the migrations unless `create_keyspace = false`).
        keyspace: String = "otpd".into(),
        /// The datacenter this node is in: requests go to its replicas first and consistency
        /// `LOCAL_*` counts them. Empty: no preference (single-datacenter clusters).
        local_datacenter: String = String::new(),
        /// Consistency of account, session and device reads and writes.
        consistency: String = "LOCAL_QUORUM".into(),
        /// Consistency of audit writes and reads.
        audit_consistency: String = "LOCAL_QUORUM".into(),
        /// Consistency of the Paxos round of lightweight transactions: `LOCAL_SERIAL` or `SERIAL`.
        serial_consistency: String = "LOCAL_SERIAL".into(),
        /// Empty: no authentication.
        username: String = String::new(),
        /// Prefer the environment: `OTPD_SCYLLA__PASSWORD`.
        password: Option<Secret> = None,
        /// Connect over TLS (rustls).
        tls: bool = false,
        /// PEM file of the CA(s) that signed the nodes' certificates; default: the system's roots.
        tls_ca_file: Option<PathBuf> = None,
        /// Client certificate (PEM) for clusters that require one, with `tls_key_file`.
        tls_cert_file: Option<PathBuf> = None,
        /// PEM private key of `tls_cert_file`; readable by its owner only (mode 0600), or the
        /// node refuses to start.
        tls_key_file: Option<PathBuf> = None,
        /// Name the nodes' certificates are checked against; empty: each node's IP address.
        tls_server_name: String = String::new(),
        /// Longest wait for a connection to a node.
        connect_timeout: Dur = secs(5),
        /// Longest wait for one request (retries and speculative executions included).
        request_timeout: Dur = secs(2),
        /// Idempotent reads still unanswered after this long are also sent to another
        /// replica; `0s` turns speculative execution off.
        speculative_after: Dur = millis(100),
        /// `CREATE KEYSPACE IF NOT EXISTS` with `replication_factor` per datacenter (or in
        /// `local_datacenter` when set). Off: the keyspace must exist.
        create_keyspace: bool = true,
        /// Replicas per datacenter when otpd creates the keyspace.
        replication_factor: u32 = 3,
        /// Apply pending schema migrations when a node starts. Off: a node refuses to start
        /// until `otpd migrate` has run.
        migrate_on_start: bool = true,
        /// Wait for every node to agree on the schema after a migration. Turn off only for a
        /// single test server that cannot report schema versions.
        await_schema_agreement: bool = true,
        /// How often readiness asks the cluster for an answer.
        health_interval: Dur = secs(2),
    }
}

pub fn consistency(name: &str) -> Option<Consistency> {
    Some(match name.to_ascii_uppercase().as_str() {
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => return None,
    })
}

pub fn serial_consistency(name: &str) -> Option<SerialConsistency> {
    match name.to_ascii_uppercase().as_str() {
        "SERIAL" => Some(SerialConsistency::Serial),
        "LOCAL_SERIAL" => Some(SerialConsistency::LocalSerial),
        _ => None,
    }
}

/// A keyspace name otpd will splice into CQL text: lower-case, unquoted, at most 48
/// characters (Scylla's limit), so it can never break out of a statement.
pub fn valid_keyspace(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A datacenter name spliced into `CREATE KEYSPACE` as a quoted map key.
fn valid_datacenter(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl ScyllaConfig {
    /// This section's rules; checked only when `store.kind = "scylla"`.
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        let mut check = |ok: bool, msg: String| {
            if !ok {
                errors.push(msg);
            }
        };
        check(!self.contact_points.is_empty(), "scylla.contact_points: give at least one host:port".into());
        for cp in &self.contact_points {
            check(host_port(cp), format!("scylla.contact_points: {cp:?} is not host:port"));
        }
        check(
            valid_keyspace(&self.keyspace),
            format!(
                "scylla.keyspace: must be lower-case letters, digits and _, starting with a letter, at most 48; got {:?}",
                self.keyspace
            ),
        );
        check(
            self.local_datacenter.is_empty() || valid_datacenter(&self.local_datacenter),
            format!("scylla.local_datacenter: not a datacenter name: {:?}", self.local_datacenter),
        );
        for (key, value) in [("consistency", &self.consistency), ("audit_consistency", &self.audit_consistency)] {
            check(
                consistency(value).is_some(),
                format!(
                    "scylla.{key}: must be one of ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE; got {value:?}"
                ),
            );
        }
        check(
            serial_consistency(&self.serial_consistency).is_some(),
            format!("scylla.serial_consistency: must be LOCAL_SERIAL or SERIAL, got {:?}", self.serial_consistency),
        );
        check(
            self.username.is_empty() == self.password.is_none(),
            "scylla: set both scylla.username and scylla.password (OTPD_SCYLLA__PASSWORD), or neither".into(),
        );
        check(
            self.tls_cert_file.is_some() == self.tls_key_file.is_some(),
            "scylla: set both scylla.tls_cert_file and scylla.tls_key_file, or neither".into(),
        );
        let tls_keys = self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || !self.tls_server_name.is_empty();
        check(self.tls || !tls_keys, "scylla: tls_* keys are set but scylla.tls is false".into());
        check(!self.connect_timeout.0.is_zero(), "scylla.connect_timeout: must be more than zero".into());
        check(!self.request_timeout.0.is_zero(), "scylla.request_timeout: must be more than zero".into());
        check(
            self.speculative_after.0 < self.request_timeout.0,
            "scylla.speculative_after: must be less than scylla.request_timeout (0s turns it off)".into(),
        );
        check(
            (1..=10).contains(&self.replication_factor),
            format!("scylla.replication_factor: must be 1..=10, got {}", self.replication_factor),
        );
        check(!self.health_interval.0.is_zero(), "scylla.health_interval: must be more than zero".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_names_that_could_break_cql_are_refused() {
        for ok in ["otpd", "otpd_prod_2", "a"] {
            assert!(valid_keyspace(ok), "{ok}");
        }
        for bad in ["", "Otpd", "1otpd", "otpd;drop", "otpd.x", "\"otpd\"", &"a".repeat(49)] {
            assert!(!valid_keyspace(bad), "{bad}");
        }
    }

    #[test]
    fn consistency_names_are_the_cql_ones() {
        assert_eq!(consistency("local_quorum"), Some(Consistency::LocalQuorum));
        assert_eq!(consistency("LOCAL_ONE"), Some(Consistency::LocalOne));
        assert_eq!(consistency("ANY"), None, "ANY is write-only and loses writes; not offered");
        assert_eq!(serial_consistency("serial"), Some(SerialConsistency::Serial));
        assert_eq!(serial_consistency("LOCAL_QUORUM"), None);
    }
}
