//! The delivery pipeline: a supervised dispatcher actor between the challenge flow and the
//! providers.
//!
//! ```text
//! Engine::issue ──enqueue──► DispatchHandle ──► ledger (bounded: full → DeliveryBusy → 503)
//!                                 │ cast Enqueued
//!                                 ▼
//!                         DispatcherActor ── route by channel ──► lane per provider (batch buffer)
//!                                 ▲                                   │ flush on size or age,
//!                                 │ Returned (results in the ledger)   │ ≤ concurrency calls
//!                                 └──────── send task ◄───────────────┘
//!                                                │ Provider::send(batch)
//!                                                ▼
//!                                   Twilio · webhook · SMTP · outbox
//! ```
//!
//! # One message's life
//!
//! ```text
//! New ──► Buffered(p) ──► InFlight(p) ──► Returned(p, result)
//!  ▲          │  breaker of p opened:        │ Ok ─────────────────────────► Delivered  ┐
//!  │          └─ re-routed                   │ Permanent ──────────────────► GivenUp    │ final:
//!  │                                         │ Retryable, attempts left ──► Waiting(due)│ audited,
//!  │                                         │ Retryable, none left ───────► GivenUp    │ counted,
//!  └──────────── Waiting(due) ◄── due ───────┘                                          │ removed
//!   any stage before a send, or a wait that would outlive the code ──────► Expired      ┘
//! ```
//!
//! * **Bounded**: the ledger holds every accepted message until its final outcome;
//!   when it holds `queue_capacity` messages, [`Notifier::enqueue`] answers
//!   [`NotifyError::QueueFull`] and the API answers 503 `delivery_busy`. Nothing is dropped
//!   silently.
//! * **Routing**: phone numbers go to the SMS route, e-mail addresses to the e-mail route; a
//!   route is a list of providers, primary first. A message goes to the first provider whose
//!   circuit breaker allows a call; if the primary's is open that is the secondary
//!   (failover). If none allows, the message waits until the earliest breaker half-opens.
//! * **Batching**: each provider has a lane that flushes when it holds
//!   `min(batch_max_size, provider.max_batch())` messages or its oldest message has waited
//!   `batch_max_age`, whichever comes first, with at most `concurrency` calls in flight.
//! * **Retries**: a retryable failure waits a full-jitter exponential backoff that is never
//!   shorter than the provider's `Retry-After`, up to `max_attempts` attempts in all.
//! * **Expiry**: a code past its `expires_at` is never sent: it is checked when routed and
//!   again just before each send, and a wait that would end after the expiry ends the message
//!   at once.
//! * **Crash safety**: the ledger, the breakers and the counters live outside the actor (in
//!   `shared::Shared`). When the actor fails, the engine's supervisor starts a new one, which adopts
//!   every message of the ledger where it stood; calls in flight report to whichever actor is
//!   current when they finish.
//! * **Audit**: every final outcome writes one audit event (`api` = `delivery`, `step` =
//!   `delivered` | `given_up` | `expired`) with the message's trace id and identifier hash,
//!   never the code or the recipient, and is counted in [`DispatchStats`].

mod config;
mod dispatcher;
mod ledger;
pub mod provider;
pub mod receipts;
mod shared;
pub mod template;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

pub use self::config::{DispatchConfig, ProviderSpec, RouteError, Routes};
pub use self::dispatcher::{DispatcherActor, DispatcherState};
use self::ledger::Ledger;
pub use self::provider::{Delivery, Provider, SendError, SendResult};
pub use self::receipts::{AllowAll, FailoverGate, FailoverReason, ReceiptAnswer, ReceiptStatus};
pub use self::shared::DispatcherMsg;
use self::shared::route_index;
use self::shared::{Counters, Lane, ProviderCounters, Shared};
pub use self::template::{Rendered, TemplateTexts, Templates};
use crate::metrics::{DeliveryMetrics, LaneMetrics};
use crate::ports::{AuditLog, Held, Notifier, NotifyError, OutboundMessage};
use crate::rules::breaker::{Breaker, BreakerState};
use crate::rules::clock::Clock;
use crate::rules::identifier::{Channel, Via};

/// The engine's [`Notifier`] when deliveries go through the dispatcher: bounded, non-blocking
/// enqueue, plus stats and health. Cheap to clone.
#[derive(Clone)]
pub struct DispatchHandle {
    shared: Arc<Shared>,
}

/// A snapshot of the dispatcher's counters since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Messages accepted by `enqueue`.
    pub accepted: u64,
    /// Messages refused because the queue was full (the API answered 503).
    pub refused: u64,
    /// Final outcomes.
    pub delivered: u64,
    pub given_up: u64,
    pub expired: u64,
    /// Deliveries handed to providers (a batch of n counts n).
    pub attempts: u64,
    /// Of those, attempts after the first for their message.
    pub retries: u64,
    /// Times a message was routed to a provider other than its channel's primary.
    pub failovers: u64,
    /// Messages accepted and not yet final.
    pub queued: usize,
    /// Times the dispatcher actor was restarted after a failure.
    pub restarts: u64,
    pub providers: Vec<ProviderStats>,
}

/// Counters of one provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderStats {
    pub name: String,
    /// Calls made (a batch is one call).
    pub calls: u64,
    /// Deliveries handed over in those calls.
    pub messages: u64,
    /// Deliveries the provider accepted.
    pub delivered: u64,
    /// Deliveries that failed retryably (the provider's fault).
    pub failed: u64,
    /// Deliveries refused for good.
    pub rejected: u64,
    pub breaker_opened: u64,
}

/// What readiness shows for one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderHealth {
    pub name: String,
    /// `(channel, rank)` for every route the provider is on; rank 0 is the primary.
    pub routes: Vec<(Channel, usize)>,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    /// Until an open breaker lets a probe through.
    pub retry_in: Option<Duration>,
    pub in_flight: usize,
    /// How long the provider's latest call took (none yet: `None`).
    pub last_call: Option<Duration>,
}

impl DispatchHandle {
    /// Builds the pipeline (no actor yet: the engine's supervisor starts [`Self::actor`], given
    /// as `EnginePorts::dispatcher`).
    pub fn new(
        config: DispatchConfig,
        providers: Vec<ProviderSpec>,
        routes: &Routes,
        templates: Templates,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> Result<DispatchHandle, RouteError> {
        let mut lanes: Vec<Lane> = Vec::new();
        for spec in providers {
            let name = spec.provider.name().to_owned();
            if lanes.iter().any(|l| l.name == name) {
                return Err(RouteError(format!("provider {name:?} given twice")));
            }
            let batch = config.batch_max_size.min(spec.provider.max_batch()).max(1);
            lanes.push(Lane {
                metrics: LaneMetrics::new(&name),
                provider: spec.provider,
                name,
                concurrency: spec.concurrency.max(1),
                batch,
                breaker: Mutex::new(Breaker::new(config.breaker)),
                in_flight: AtomicUsize::new(0),
                counters: ProviderCounters::default(),
            });
        }
        let resolve = |channel: &str, names: &[String]| -> Result<Vec<usize>, RouteError> {
            if names.is_empty() {
                return Err(RouteError(format!("no provider for {channel}")));
            }
            let mut out = Vec::new();
            for name in names {
                let i = lanes
                    .iter()
                    .position(|l| &l.name == name)
                    .ok_or_else(|| RouteError(format!("{channel} route names unknown provider {name:?}")))?;
                if out.contains(&i) {
                    return Err(RouteError(format!("{channel} route names {name:?} twice")));
                }
                out.push(i);
            }
            Ok(out)
        };
        let routes = [resolve("sms", &routes.sms)?, resolve("email", &routes.email)?];
        if lanes.iter().any(|l| l.provider.receipts()) {
            crate::metrics::register_receipt_failovers();
        }
        let shared = Shared {
            metrics: DeliveryMetrics::new(config.queue_capacity),
            config,
            lanes,
            routes,
            templates,
            audit,
            clock,
            ledger: Mutex::new(Ledger::default()),
            current: ArcSwapOption::empty(),
            counters: Counters::default(),
            starts: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            audits_pending: AtomicUsize::new(0),
            watches: Mutex::new(Default::default()),
            gate: ArcSwapOption::empty(),
        };
        Ok(DispatchHandle { shared: Arc::new(shared) })
    }

    /// The actor the supervisor runs.
    pub fn actor(&self) -> DispatcherActor {
        DispatcherActor { shared: self.shared.clone() }
    }

    /// The templates messages are rendered with: the engine chooses locales from the same
    /// catalogue and prices SMS by the segments they take.
    pub fn templates(&self) -> &Templates {
        &self.shared.templates
    }

    pub fn stats(&self) -> DispatchStats {
        let s = &self.shared;
        let c = &s.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DispatchStats {
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            delivered: get(&c.delivered),
            given_up: get(&c.given_up),
            expired: get(&c.expired),
            attempts: get(&c.attempts),
            retries: get(&c.retries),
            failovers: get(&c.failovers),
            queued: s.ledger.lock().len(),
            restarts: s.starts.load(Ordering::Relaxed).saturating_sub(1),
            providers: s
                .lanes
                .iter()
                .map(|l| ProviderStats {
                    name: l.name.clone(),
                    calls: get(&l.counters.calls),
                    messages: get(&l.counters.messages),
                    delivered: get(&l.counters.delivered),
                    failed: get(&l.counters.failed),
                    rejected: get(&l.counters.rejected),
                    breaker_opened: l.breaker.lock().opened(),
                })
                .collect(),
        }
    }

    /// Every provider's breaker, for readiness.
    pub fn health(&self) -> Vec<ProviderHealth> {
        let now = Instant::now();
        let s = &self.shared;
        s.lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| {
                let b = lane.breaker.lock();
                let mut routes = Vec::new();
                for (channel, route) in [Channel::Sms, Channel::Email].into_iter().zip(&s.routes) {
                    if let Some(rank) = route.iter().position(|&r| r == i) {
                        routes.push((channel, rank));
                    }
                }
                let state = b.state(now);
                ProviderHealth {
                    name: lane.name.clone(),
                    routes,
                    breaker: state,
                    consecutive_failures: b.consecutive_failures(),
                    retry_in: b.open_until().filter(|_| state == BreakerState::Open).map(|u| u - now),
                    in_flight: lane.in_flight.load(Ordering::Relaxed),
                    last_call: lane.metrics.last_call(),
                }
            })
            .collect()
    }

    /// Sets the breaker-state gauges (called periodically, not per message).
    pub fn refresh_gauges(&self) {
        let now = Instant::now();
        for lane in &self.shared.lanes {
            let state = lane.breaker.lock().state(now);
            lane.metrics.breaker(state);
        }
    }

    /// Readiness: every channel has a provider whose breaker is not open. The error names the
    /// channel and its providers' states.
    pub fn check(&self) -> Result<(), String> {
        let now = Instant::now();
        let s = &self.shared;
        let mut problems = Vec::new();
        for (channel, route) in [Channel::Sms, Channel::Email].into_iter().zip(&s.routes) {
            let states: Vec<(usize, BreakerState)> =
                route.iter().map(|&i| (i, s.lanes[i].breaker.lock().state(now))).collect();
            if states.iter().all(|(_, st)| *st == BreakerState::Open) {
                let names: Vec<String> =
                    states.iter().map(|(i, st)| format!("{} {}", s.lanes[*i].name, st.as_str())).collect();
                problems.push(format!("no {} provider available ({})", channel.as_str(), names.join(", ")));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// What every failover must pass from now on (the engine's limits).
    pub fn set_failover_gate(&self, gate: Arc<dyn FailoverGate>) {
        self.shared.gate.store(Some(Arc::new(gate)));
    }

    /// A provider's authentic report about the message it took as `delivery_id` (see
    /// [`receipts`]). `provider` must be the one that took it; `error_code` is the provider's
    /// (audited, never its free text).
    pub async fn receipt(
        &self,
        provider: &str,
        delivery_id: Uuid,
        status: ReceiptStatus,
        error_code: Option<u32>,
    ) -> ReceiptAnswer {
        self.shared.receipt(provider, delivery_id, status, error_code).await
    }

    /// The ways a code can reach a phone here: those of the SMS route's providers, in order.
    pub fn vias(&self) -> Vec<Via> {
        let mut out: Vec<Via> = Vec::new();
        for &lane in &self.shared.routes[0] {
            let via = self.shared.lanes[lane].provider.via();
            if !out.contains(&via) {
                out.push(via);
            }
        }
        out
    }

    /// Messages watched for a receipt now.
    pub fn watched(&self) -> usize {
        self.shared.watches.lock().len()
    }

    /// Makes the current dispatcher actor panic (fault injection for tests).
    #[cfg(feature = "testkit")]
    pub fn inject_panic(&self) {
        if let Some(actor) = self.shared.current.load_full() {
            let _ = actor.cast(DispatcherMsg::Panic);
        }
    }
}

impl DispatchHandle {
    /// [`Notifier::enqueue`]'s work. A rehearsal (`keep` false) takes the message out of the
    /// ledger again under the same lock, so nobody ever sees it and it holds no room.
    fn admit(&self, message: OutboundMessage, keep: bool) -> Result<u64, NotifyError> {
        let s = &self.shared;
        if s.closed.load(Ordering::Relaxed) {
            return Err(NotifyError::Closed);
        }
        // A requested way starts the route at its first provider: those before count as tried.
        let skip = match message.via {
            Some(via) => {
                let route = &s.routes[route_index(message.to.channel())];
                let first = route.iter().position(|&l| s.lanes[l].provider.via() == via).unwrap_or(0);
                route[..first].iter().fold(0u64, |m, &l| m | dispatcher::bit(l))
            }
            None => 0,
        };
        let message = Arc::new(message);
        let id = {
            let mut ledger = s.ledger.lock();
            if ledger.len() >= s.config.queue_capacity {
                drop(ledger);
                s.counters.refused.fetch_add(1, Ordering::Relaxed);
                s.metrics.enqueued(false);
                return Err(NotifyError::QueueFull);
            }
            let id = ledger.insert_avoiding(message, skip);
            if !keep {
                ledger.remove(id);
            }
            id
        };
        if keep {
            s.counters.accepted.fetch_add(1, Ordering::Relaxed);
            s.metrics.enqueued(true);
        } else {
            s.metrics.rehearsed();
        }
        Ok(id)
    }
}

impl Notifier for DispatchHandle {
    fn rehearse(&self, message: OutboundMessage) -> Result<(), NotifyError> {
        self.admit(message, false).map(drop)
    }

    fn enqueue(&self, message: OutboundMessage) -> Result<Held, NotifyError> {
        self.admit(message, true).map(Held)
    }

    fn start(&self, held: Vec<Held>) {
        // If no actor is current (it is being restarted) the new one adopts the messages from
        // the ledger when it starts.
        if !held.is_empty()
            && let Some(actor) = self.shared.current.load_full()
        {
            let _ = actor.cast(DispatcherMsg::Enqueued { ids: held.into_iter().map(|h| h.0).collect() });
        }
    }
}

#[cfg(test)]
mod tests;
