//! `[scylla]` as the store needs it: consistency levels and TTLs in the driver's terms.
//!
//! The section's validation (names CQL accepts, ranges) lives with the section, in
//! `crate::config::scylla`; this module turns the validated values into what the driver takes.

use std::time::Duration;

pub use crate::config::scylla::{DAY, MAX_TTL_SECS, consistency, serial_consistency, valid_keyspace};

/// How long session rows outlive the session's end, so that a just-expired session still
/// reads as "expired" (not "unknown") and clocks of otpd and Scylla need not agree exactly.
pub const SESSION_ROW_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A TTL in whole seconds, clamped to what Scylla accepts.
pub fn ttl_secs(d: Duration) -> u64 {
    d.as_secs().clamp(1, MAX_TTL_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_clamped_to_what_scylla_accepts() {
        assert_eq!(ttl_secs(Duration::from_millis(10)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(90 * 86_400)), 7_776_000);
        assert_eq!(ttl_secs(Duration::from_secs(u64::MAX / 2)), MAX_TTL_SECS);
    }
}
