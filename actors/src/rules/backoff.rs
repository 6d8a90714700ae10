//! Retry delays: exponential backoff with full jitter, never shorter than `Retry-After`.
//!
//! Full jitter (a uniform draw between zero and the exponential ceiling) spreads the retries
//! of many messages that failed together, so a provider coming back from an outage is not hit
//! by a synchronised wave. A provider's `Retry-After` is a floor: the dispatcher never retries
//! sooner than it was asked to, even beyond the backoff ceiling (if that would outlive the
//! code, the message is given up as expired instead).

use std::time::Duration;

use rand::RngExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay; it doubles with every attempt.
    pub base: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The shipped defaults (`[delivery]` starts from these).
    pub const DEFAULT: Backoff = Backoff { base: Duration::from_millis(200), max: Duration::from_secs(30) };
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

impl Backoff {
    /// The exponential ceiling after `attempts` failed attempts: `min(max, base · 2^(attempts-1))`.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The delay for a draw `unit` in `[0, 1]`: `unit · ceiling`, at least `retry_after`.
    pub fn delay_for(&self, attempts: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let jittered = self.ceiling(attempts).mul_f64(unit.clamp(0.0, 1.0));
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
    }

    /// The delay before the next attempt, after `attempts` failed attempts.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_for(attempts, retry_after, rand::rng().random_range(0.0..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        let ceilings: Vec<u128> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert_eq!(b.delay_for(3, None, 0.0), Duration::ZERO);
        assert_eq!(b.delay_for(3, None, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay_for(3, None, 0.5), Duration::from_millis(200));
        for _ in 0..1000 {
            let d = b.delay(3, None);
            assert!(d <= Duration::from_millis(400), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_even_beyond_the_cap() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert_eq!(b.delay_for(1, Some(Duration::from_secs(7)), 1.0), Duration::from_secs(7));
        assert_eq!(b.delay_for(5, Some(Duration::from_millis(10)), 1.0), Duration::from_secs(1));
    }
}
