//! Limiter adapters: the in-process limiter (embedded default) or Redis, chosen by
//! configuration, and the [`LimiterHealth`] flag that readiness reads.
//!
//! * no `[redis]` URL or cluster nodes: [`otpd_actors::adapters::limiter::LocalLimiter`], as before;
//! * a URL or cluster nodes: [`redis::RedisLimiter`], which falls back to an in-process limiter
//!   while Redis is unreachable (see its module doc and docs/decisions/2026-11-21-redis-fallback.md for why).

pub mod redis;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use otpd_actors::adapters::limiter::LocalLimiter;
use otpd_actors::ports::Limiter;
use otpd_actors::rules::clock::Clock;
use otpd_actors::rules::limits::LimitPolicy;
use parking_lot::Mutex;

use self::redis::{RedisLimiter, RedisSettings, RedisStartError};
use crate::config::RedisConfig;

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

/// The node's limiter, whichever it is.
pub struct Limits {
    pub limiter: Arc<dyn Limiter>,
    /// Set when Redis is configured.
    pub redis: Option<Arc<RedisLimiter>>,
}

impl Limits {
    /// Builds the configured limiter. With Redis, the node starts even when Redis does not
    /// answer yet: it starts degraded, and switches to Redis as soon as it answers.
    /// `policy` is `[limits]` with `[otp]`'s cooldown and send cap (`LimitsConfig::policy`).
    pub async fn start(
        redis: &RedisConfig,
        policy: LimitPolicy,
        master: &[u8; 32],
        clock: Arc<dyn Clock>,
    ) -> Result<Limits, RedisStartError> {
        let local = Arc::new(LocalLimiter::new(policy.clone()));
        local.spawn_sweeper(clock, Duration::from_secs(64));
        match RedisSettings::from_config(redis) {
            None => Ok(Limits { limiter: local, redis: None }),
            Some(settings) => {
                let key = blake3::derive_key("otpd limiter keys v1", master);
                let redis = RedisLimiter::start(settings, policy, key, local).await?;
                Ok(Limits { limiter: redis.clone(), redis: Some(redis) })
            }
        }
    }

    pub fn health(&self) -> Option<Arc<LimiterHealth>> {
        self.redis.as_ref().map(|r| r.health())
    }

    /// Stops background work and closes connections.
    pub async fn stop(&self) {
        if let Some(redis) = &self.redis {
            redis.stop().await;
        }
    }
}
