//! The dispatcher's configuration: limits, retries, breakers, which providers serve which
//! channel.

use std::sync::Arc;
use std::time::Duration;

use super::provider::Provider;
use crate::rules::backoff::Backoff;
use crate::rules::breaker::BreakerConfig;

/// Fixed configuration of the dispatcher.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Messages accepted and not yet finally delivered, given up or expired; beyond it
    /// `enqueue` refuses (503).
    pub queue_capacity: usize,
    /// A lane flushes once it holds this many messages (capped by the provider's own batch
    /// limit). 1 turns batching off.
    pub batch_max_size: usize,
    /// … or once its oldest message has waited this long.
    pub batch_max_age: Duration,
    /// Attempts per message, all providers together.
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub breaker: BreakerConfig,
    /// Longest a provider call may take; after it the call counts as a retryable failure.
    pub send_timeout: Duration,
    /// A message taken by a provider that reports receipts and not reported delivered within
    /// this long is sent again on the next route (zero: never for want of a receipt).
    pub receipt_timeout: Duration,
}

impl DispatchConfig {
    /// The shipped defaults (`[delivery]` starts from these).
    pub const DEFAULT: DispatchConfig = DispatchConfig {
        queue_capacity: 10_000,
        batch_max_size: 100,
        batch_max_age: Duration::from_millis(10),
        max_attempts: 5,
        backoff: Backoff::DEFAULT,
        breaker: BreakerConfig::DEFAULT,
        send_timeout: Duration::from_secs(10),
        receipt_timeout: Duration::from_secs(60),
    };
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig::DEFAULT
    }
}

/// A provider and how many calls it may have in flight.
#[derive(Clone)]
pub struct ProviderSpec {
    pub provider: Arc<dyn Provider>,
    pub concurrency: usize,
}

/// Which providers serve which channel, by name, primary first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub sms: Vec<String>,
    pub email: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delivery routes: {0}")]
pub struct RouteError(pub(super) String);
