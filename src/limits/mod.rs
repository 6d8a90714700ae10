//! Limiter adapters: the in-process limiter (embedded default) or Redis, chosen by
//! configuration, and the [`LimiterHealth`] flag that readiness reads.
//!
//! * no `[redis]` URL or cluster nodes: [`otpd_actors::adapters::limiter::LocalLimiter`], as before;
//! * a URL or cluster nodes: [`redis::RedisLimiter`], which falls back to an in-process limiter
//!   while Redis is unreachable (see its module doc and docs/decisions/2026-11-21-redis-fallback.md for why).

pub mod health;
pub mod redis;

use std::sync::Arc;

use std::time::Duration;

use otpd_actors::adapters::limiter::LocalLimiter;
use otpd_actors::ports::Limiter;
use otpd_actors::rules::clock::Clock;
use otpd_actors::rules::limits::LimitPolicy;

pub use self::health::LimiterHealth;
use self::redis::{RedisLimiter, RedisSettings, RedisStartError};
use crate::config::RedisConfig;

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
