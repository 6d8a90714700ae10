//! A circuit breaker per provider: a pure state machine the delivery dispatcher consults.
//! It lives with the rules so that the metrics (which label its state) need nothing above
//! them.
//!
//! ```text
//!            failure (n < threshold)
//!            ┌──────┐
//!            ▼      │        n-th consecutive failure
//!        ┌────────┐─┘ ─────────────────────────────────► ┌──────┐
//!        │ Closed │                                        │ Open │ ◄─┐
//!        └────────┘ ◄──── success ──┐                      └──────┘   │
//!                                   │      open_for elapsed  │        │ probe fails
//!                               ┌──────────┐ ◄───────────────┘        │
//!                               │ HalfOpen │ ─────────────────────────┘
//!                               └──────────┘  (one probe call at a time)
//! ```
//!
//! Only provider failures (`SendError::Retryable` of the dispatcher's provider port) count; a
//! message the provider refused for good says nothing about the provider. While a breaker is open the dispatcher
//! routes the provider's traffic to the next provider of the channel (failover), or holds it
//! until the breaker lets a probe through. Time is an argument (tokio's clock, so tests can
//! pause it).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the breaker.
    pub failures: u32,
    /// How long it stays open before one probe call is let through.
    pub open_for: Duration,
}

impl BreakerConfig {
    /// The shipped defaults (`[delivery]` starts from these).
    pub const DEFAULT: BreakerConfig = BreakerConfig { failures: 5, open_for: Duration::from_secs(30) };
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig::DEFAULT
    }
}

/// What readiness reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    phase: Phase,
    consecutive_failures: u32,
    opened: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker { config, phase: Phase::Closed, consecutive_failures: 0, opened: 0 }
    }

    /// Whether a call may go out now. An open breaker whose time is up becomes half-open and
    /// allows exactly one call (the probe) until that call's result is in.
    pub fn allows(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Closed => true,
            Phase::Open { until } if now >= until => {
                self.phase = Phase::HalfOpen { probing: false };
                true
            }
            Phase::Open { .. } => false,
            Phase::HalfOpen { probing } => !probing,
        }
    }

    /// A call went out (after [`Breaker::allows`] said yes): in half-open it is the probe.
    pub fn on_dispatch(&mut self) {
        if let Phase::HalfOpen { .. } = self.phase {
            self.phase = Phase::HalfOpen { probing: true };
        }
    }

    /// A call got through to the provider.
    pub fn on_success(&mut self) {
        match self.phase {
            // A call sent before the breaker opened says nothing about the provider now.
            Phase::Open { .. } => {}
            Phase::Closed | Phase::HalfOpen { .. } => {
                self.phase = Phase::Closed;
                self.consecutive_failures = 0;
            }
        }
    }

    /// A call failed because of the provider. Returns whether this opened the breaker.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let open = match self.phase {
            Phase::Closed => self.consecutive_failures >= self.config.failures.max(1),
            Phase::HalfOpen { .. } => true,
            Phase::Open { .. } => false,
        };
        if open {
            self.phase = Phase::Open { until: now + self.config.open_for };
            self.opened += 1;
        }
        open
    }

    /// The state as it will be seen by the next call (an open breaker whose time is up reads
    /// half-open), without changing anything.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now >= until => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// When an open breaker will let a probe through.
    pub fn open_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How many times the breaker has opened.
    pub fn opened(&self) -> u64 {
        self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig { failures: 3, open_for: Duration::from_secs(10) })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut b = breaker();
        assert!(!b.on_failure(t));
        assert!(!b.on_failure(t));
        b.on_success();
        assert!(!b.on_failure(t));
        assert!(!b.on_failure(t));
        assert_eq!(b.state(t), BreakerState::Closed);
        assert!(b.on_failure(t), "the third consecutive failure opens it");
        assert_eq!(b.state(t), BreakerState::Open);
        assert!(!b.allows(t + Duration::from_secs(9)));
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_result_decides() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t);
        }
        let later = t + Duration::from_secs(10);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allows(later));
        b.on_dispatch();
        assert!(!b.allows(later), "only one probe at a time");
        assert!(b.on_failure(later), "a failed probe opens it again");
        assert_eq!(b.state(later), BreakerState::Open);
        assert_eq!(b.open_until(), Some(later + Duration::from_secs(10)));

        let again = later + Duration::from_secs(10);
        assert!(b.allows(again));
        b.on_dispatch();
        b.on_success();
        assert_eq!(b.state(again), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        assert!(b.allows(again));
    }

    #[test]
    fn a_late_success_does_not_close_an_open_breaker() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t);
        }
        b.on_success();
        assert_eq!(b.state(t), BreakerState::Open);
    }
}
