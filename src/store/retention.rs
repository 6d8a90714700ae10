//! Retention: what each store deletes once it is past its lifetime (`[retention]`), and the
//! hourly sweep that does it on the embedded store (ScyllaDB expires audit events by TTL).

use std::sync::Arc;
use std::time::Duration;

use otpd_actors::ports::{Device, Session};
use otpd_actors::rules::clock::Timestamp;
use tokio::task::JoinHandle;

use crate::config::RetentionConfig;

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Records one sweep step deletes at most (then the next step, at once).
pub const SWEEP_BATCH: usize = 1_000;

/// The instants before which records are past their lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cutoffs {
    /// Audit events written before this (and subject keys last used before this) go.
    pub audit: Timestamp,
    /// Sessions that ended before this go.
    pub sessions: Timestamp,
    /// Devices revoked before this go.
    pub devices: Timestamp,
}

impl Cutoffs {
    pub fn at(now: Timestamp, retention: &RetentionConfig) -> Cutoffs {
        let before = |d: Duration| Timestamp::from_millis(now.as_millis().saturating_sub(d.as_millis() as u64));
        Cutoffs {
            audit: before(retention.audit.0),
            sessions: before(retention.ended_sessions.0),
            devices: before(retention.removed_devices.0),
        }
    }

    /// Whether `session` ended (revoked, or expired) before the sessions' cutoff.
    pub fn session_ended_before(&self, session: &Session) -> bool {
        let ended = session.revoked_at.map_or(session.expires_at, |r| r.min(session.expires_at));
        ended < self.sessions
    }

    /// Whether `device` was revoked before the devices' cutoff.
    pub fn device_removed_before(&self, device: &Device) -> bool {
        device.revoked_at.is_some_and(|r| r < self.devices)
    }
}

/// What one sweep step deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub audit_events: usize,
    pub sessions: usize,
    pub devices: usize,
    pub subject_keys: usize,
}

impl Swept {
    pub fn total(&self) -> usize {
        self.audit_events + self.sessions + self.devices + self.subject_keys
    }

    fn add(&mut self, o: Swept) {
        self.audit_events += o.audit_events;
        self.sessions += o.sessions;
        self.devices += o.devices;
        self.subject_keys += o.subject_keys;
    }

    /// Counts what went in `otpd_retention_removed_total`.
    fn count(&self) {
        for (kind, n) in [
            ("audit_event", self.audit_events),
            ("session", self.sessions),
            ("device", self.devices),
            ("audit_key", self.subject_keys),
        ] {
            if n > 0 {
                metrics::counter!(crate::metrics::RETENTION_REMOVED, "kind" => kind).increment(n as u64);
            }
        }
    }
}

/// Sweeps `store` at `now` in bounded steps until a step comes back short; returns the total.
pub async fn sweep(store: &Arc<super::embedded::EmbeddedStore>, now: Timestamp, retention: &RetentionConfig) -> Swept {
    let cutoffs = Cutoffs::at(now, retention);
    let mut total = Swept::default();
    let mut cursor = super::embedded::SweepCursor::default();
    loop {
        match store.sweep(cutoffs, SWEEP_BATCH, &mut cursor).await {
            Ok((swept, more)) => {
                swept.count();
                total.add(swept);
                if !more {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention sweep failed; trying again in an hour");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    if total.total() > 0 {
        tracing::info!(
            audit_events = total.audit_events,
            sessions = total.sessions,
            devices = total.devices,
            audit_keys = total.subject_keys,
            "retention sweep removed records past their lifetime"
        );
    }
    total
}

/// Runs [`sweep`] every [`SWEEP_EVERY`] (and once at start) at the engine's clock, until the
/// app is dropped.
pub fn spawn_sweeper(
    app: &Arc<crate::http::App>,
    store: Arc<super::embedded::EmbeddedStore>,
    retention: RetentionConfig,
) -> JoinHandle<()> {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(SWEEP_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(app) = weak.upgrade() else { break };
            let now = app.engine.now();
            drop(app);
            sweep(&store, now, &retention).await;
        }
    })
}
