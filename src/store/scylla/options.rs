//! `[scylla]` as the store needs it: validated names, consistency levels and TTLs.
//!
//! Validation lives here (called by `Config::validate` when `store.kind = "scylla"`) so that
//! the rules about what the driver and CQL accept sit next to the code that relies on them.

use std::time::Duration;

use scylla::statement::{Consistency, SerialConsistency};

use crate::config::ScyllaConfig;

/// Scylla refuses a TTL above 20 years (`630720000` s).
pub const MAX_TTL_SECS: u64 = 630_720_000;

/// How long session rows outlive the session's end, so that a just-expired session still
/// reads as "expired" (not "unknown") and clocks of otpd and Scylla need not agree exactly.
pub const SESSION_ROW_GRACE: Duration = Duration::from_secs(24 * 3600);

/// One day: the width of an audit bucket, and the extra life of a day-index row.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

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

/// A TTL in whole seconds, clamped to what Scylla accepts.
pub fn ttl_secs(d: Duration) -> u64 {
    d.as_secs().clamp(1, MAX_TTL_SECS)
}

impl ScyllaConfig {
    /// Everything wrong with this section, each with its dotted key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, msg: String| {
            if !ok {
                out.push(msg);
            }
        };
        check(!self.contact_points.is_empty(), "scylla.contact_points: give at least one host:port".into());
        for cp in &self.contact_points {
            let ok = cp.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            check(ok, format!("scylla.contact_points: {cp:?} is not host:port"));
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
            self.audit_retention.0 >= DAY && self.audit_retention.0.as_secs() + DAY.as_secs() * 2 <= MAX_TTL_SECS,
            format!("scylla.audit_retention: must be between 1 day and 20 years, got {:?}", self.audit_retention),
        );
        check(
            (1..=10).contains(&self.replication_factor),
            format!("scylla.replication_factor: must be 1..=10, got {}", self.replication_factor),
        );
        check(!self.health_interval.0.is_zero(), "scylla.health_interval: must be more than zero".into());
        out
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

    #[test]
    fn ttls_are_clamped_to_what_scylla_accepts() {
        assert_eq!(ttl_secs(Duration::from_millis(10)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(90 * 86_400)), 7_776_000);
        assert_eq!(ttl_secs(Duration::from_secs(u64::MAX / 2)), MAX_TTL_SECS);
    }
}
