//! `[retention]`: how long records are kept once they stop being needed.

use std::time::Duration;

use super::value::{Dur, check, section};

const DAY: Duration = Duration::from_secs(24 * 3600);

section! {
    /// How long the store keeps what is no longer in use. The embedded store deletes what is
    /// past these lifetimes in an hourly sweep, in bounded batches; ScyllaDB expires audit
    /// events by TTL. Accounts never verified go after `otp.unverified_account_ttl`.
    pub struct RetentionConfig {
        /// Audit events are deleted this long after they were written.
        audit: Dur = Dur(365 * DAY),
        /// Sessions that ended (expired, revoked, logged out) are deleted this long after they
        /// ended. On ScyllaDB a session's rows expire with the session itself.
        ended_sessions: Dur = Dur(30 * DAY),
        /// Devices revoked are deleted this long after their revocation.
        removed_devices: Dur = Dur(30 * DAY),
    }
}

/// ScyllaDB's largest TTL; the audit's day index lives two days longer than the events.
const MAX_AUDIT: Duration = Duration::from_secs(super::scylla::MAX_TTL_SECS - 2 * 24 * 3600);

impl RetentionConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, self.audit.0 >= DAY && self.audit.0 <= MAX_AUDIT, || {
            format!("retention.audit: must be between 1 day and 20 years, got {:?}", self.audit)
        });
        for (name, d) in [("ended_sessions", self.ended_sessions), ("removed_devices", self.removed_devices)] {
            check(errors, d.0 <= 20 * 365 * DAY, || format!("retention.{name}: must be at most 20 years, got {d:?}"));
        }
    }
}
