//! `[engine]`: the actor tree.

use otpd_actors::actors::shard::ShardConfig;

use super::value::{Dur, check, secs, section};

section! {
    /// The actor tree.
    pub struct EngineSection {
        /// Challenge shards (actors). More shards, shorter mailboxes.
        shards: usize = 64,
        /// Longest wait for a shard's answer.
        call_timeout: Dur = secs(2),
        /// How often shards reclaim expired challenges.
        reclaim_interval: Dur = Dur(ShardConfig::DEFAULT.reclaim_every),
        /// How long an expired challenge is kept so late attempts read "expired".
        expired_grace: Dur = Dur(ShardConfig::DEFAULT.grace),
        /// Refusals of one kind (bad JSON, bad token, rate limited) from one client within
        /// this window make one audit event and, when the window ends, one summary with the
        /// count; `"0s"`: one event per refusal.
        audit_refusal_window: Dur = secs(60),
    }
}

impl EngineSection {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, (1..=4096).contains(&self.shards), || {
            format!("engine.shards: must be 1..=4096, got {}", self.shards)
        });
        check(errors, !self.call_timeout.0.is_zero(), || "engine.call_timeout: must be more than zero".into());
        check(errors, !self.reclaim_interval.0.is_zero(), || "engine.reclaim_interval: must be more than zero".into());
    }
}
