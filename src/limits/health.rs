//! [`LimiterHealth`]: whether the Redis limiter is deciding in-process because Redis does not
//! answer, read by readiness and the metrics.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Whether the limiter is bypassing its shared store. Cheap to read from any thread; the metrics
/// issue turns it into a gauge.
#[derive(Default)]
pub struct LimiterHealth {
    degraded: AtomicBool,
    outages: AtomicU64,
    fallback_decisions: AtomicU64,
    reason: Mutex<String>,
}

impl fmt::Debug for LimiterHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterHealth")
            .field("degraded", &self.is_degraded())
            .field("outages", &self.outages())
            .field("fallback_decisions", &self.fallback_decisions())
            .finish()
    }
}

impl LimiterHealth {
    /// True while decisions are made in-process because Redis does not answer.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Times the limiter fell back to in-process decisions since start.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    /// Decisions made in-process because Redis did not answer.
    pub fn fallback_decisions(&self) -> u64 {
        self.fallback_decisions.load(Ordering::Relaxed)
    }

    /// Why the limiter is degraded (for readiness), if it is.
    pub fn reason(&self) -> Option<String> {
        self.is_degraded().then(|| self.reason.lock().clone())
    }

    /// Marks the limiter degraded; logs only on the transition.
    pub(crate) fn degrade(&self, why: &dyn fmt::Display) {
        let why = why.to_string();
        *self.reason.lock() = why.clone();
        if !self.degraded.swap(true, Ordering::SeqCst) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %why,
                "redis limiter unavailable: cooldowns and rate limits are decided in-process until it answers again"
            );
        }
    }

    /// Marks the limiter healthy; logs only on the transition.
    pub(crate) fn recover(&self) {
        if self.degraded.swap(false, Ordering::SeqCst) {
            tracing::info!("redis limiter answers again: cooldowns and rate limits are decided in redis");
        }
    }

    pub(crate) fn count_fallback(&self) {
        self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
    }
}
