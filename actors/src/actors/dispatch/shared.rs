//! What outlives a dispatcher actor, and how everyone else talks to the current one.
//!
//! [`Shared`] holds the ledger of accepted messages, each provider's lane (breaker,
//! counters, metric handles) and which actor is current. The handle's `enqueue` and the
//! provider calls' tasks are not the actor: they reach it through [`Shared::current`] with a
//! [`DispatcherMsg`], which is why the actor's messages are declared here, beside the state
//! they point into, and the actor (`dispatcher.rs`) implements them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use ractor::ActorRef;

use super::config::DispatchConfig;
use super::ledger::Ledger;
use super::provider::Provider;
use super::receipts::{FailoverGate, Watches};
use super::template::Templates;
use crate::metrics::{DeliveryMetrics, LaneMetrics};
use crate::ports::AuditLog;
use crate::rules::breaker::Breaker;
use crate::rules::clock::Clock;
use crate::rules::identifier::Channel;

/// What the dispatcher actor is told.
pub enum DispatcherMsg {
    /// Messages `ids` entered the ledger: route them to providers' lanes.
    Enqueued { ids: Vec<u64> },
    /// A call to the provider of `lane` finished; the results for `ids` are in the ledger.
    Returned { lane: usize, ids: Vec<u64> },
    /// The oldest message in `lane` may have waited `batch_max_age`: flush if so.
    FlushDue { lane: usize },
    /// The earliest retry wait may be over.
    WakeDue,
    /// The node is shutting down: send what waits now, ignoring batch age and backoff.
    Drain,
    /// Look for watched messages whose receipt is overdue (every second while any provider
    /// reports receipts).
    ReceiptsDue,
    /// Panics inside the handler, to prove that supervision restarts the dispatcher and that
    /// the new actor adopts the messages of the old one.
    #[cfg(feature = "testkit")]
    Panic,
}

// Local only: the cluster feature of ractor asks every message type to say whether it
// can cross nodes; this one never does.
impl ractor::Message for DispatcherMsg {}

/// Counters of one provider (what `ProviderStats` shows).
#[derive(Default)]
pub(super) struct ProviderCounters {
    pub(super) calls: AtomicU64,
    pub(super) messages: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) rejected: AtomicU64,
}

/// A provider as the dispatcher holds it: the adapter, its limits, breaker and counters.
pub(super) struct Lane {
    pub(super) provider: Arc<dyn Provider>,
    pub(super) name: String,
    pub(super) concurrency: usize,
    pub(super) batch: usize,
    pub(super) breaker: Mutex<Breaker>,
    pub(super) in_flight: AtomicUsize,
    pub(super) counters: ProviderCounters,
    pub(super) metrics: LaneMetrics,
}

/// The dispatcher's counters since the node started (what `DispatchStats` shows).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) accepted: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) given_up: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) attempts: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) failovers: AtomicU64,
}

/// Everything that outlives a dispatcher actor: what was accepted, the breakers, the counters,
/// and which actor is current.
pub struct Shared {
    pub(super) config: DispatchConfig,
    pub(super) lanes: Vec<Lane>,
    /// Lane indexes per channel, primary first: `[sms, email]`.
    pub(super) routes: [Vec<usize>; 2],
    pub(super) templates: Templates,
    pub(super) audit: Arc<dyn AuditLog>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) ledger: Mutex<Ledger>,
    pub(super) current: ArcSwapOption<ActorRef<DispatcherMsg>>,
    pub(super) counters: Counters,
    pub(super) metrics: DeliveryMetrics,
    /// Actor starts (the first one included).
    pub(super) starts: AtomicU64,
    /// Set at shutdown: calls finishing later stop looking for an actor to report to.
    pub(super) closed: AtomicBool,
    /// Audit appends spawned and not yet done (shutdown waits for them).
    pub(super) audits_pending: AtomicUsize,
    /// Messages taken by a provider that reports receipts, until delivered or expired.
    pub(super) watches: Mutex<Watches>,
    /// What a failover must pass (the engine's limits); every failover passes until set.
    pub(super) gate: ArcSwapOption<Arc<dyn FailoverGate>>,
}

pub(super) fn route_index(channel: Channel) -> usize {
    match channel {
        Channel::Sms => 0,
        Channel::Email => 1,
    }
}
