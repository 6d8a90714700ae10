//! `DispatcherActor`: routes, batches, sends, retries and finishes every accepted message.
//!
//! The actor owns only scheduling state (each lane's batch buffer, the retry heap, the armed
//! timers); what must survive a crash (the ledger, breakers, counters) is in [`Shared`]. All
//! provider calls run in their own tasks, so a slow provider never blocks the mailbox; a call
//! writes its results into the ledger and then tells whichever actor is current.
//! See the [module doc](super) for a message's life.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::ledger::Stage;
use super::provider::{Delivery, SendError, SendResult};
use super::shared::{DispatcherMsg, Shared, route_index};
use crate::metrics::{MessageOutcome, SendOutcome};
use crate::ports::AuditEvent;
use crate::rules::audit::{Api, AuditOutcome, Step};

/// The target of this module's log lines, kept as it was before the crate was split into
/// layers: operators filter and query logs by it, whatever folder the module lives in.
const LOG_TARGET: &str = "otpd_actors::dispatch::dispatcher";

/// The actor: a handle on the shared pipeline. Cloned for every (re)spawn.
#[derive(Clone)]
pub struct DispatcherActor {
    pub(crate) shared: Arc<Shared>,
}

/// What the actor changes: scheduling only.
pub struct DispatcherState {
    lanes: Vec<LaneState>,
    /// `(due, id)` of messages waiting for a retry.
    waiting: BinaryHeap<Reverse<(Instant, u64)>>,
    /// When the armed `WakeDue` timer fires.
    wake_at: Option<Instant>,
    draining: bool,
}

#[derive(Default)]
struct LaneState {
    /// `(id, buffered at)`, oldest first.
    buffer: VecDeque<(u64, Instant)>,
    /// When the armed `FlushDue` timer fires.
    flush_at: Option<Instant>,
}

/// A final outcome.
enum Final {
    Delivered { lane: usize },
    GivenUp(String),
    Expired(&'static str),
}

impl Actor for DispatcherActor {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<DispatcherMsg>, _: ()) -> Result<DispatcherState, ActorProcessingErr> {
        let s = &self.shared;
        // Current first, then adopt: an enqueue that still saw the previous actor inserted
        // into the ledger before this store, so the scan below finds its message.
        s.current.store(Some(Arc::new(myself.clone())));
        let mut state = DispatcherState {
            lanes: s.lanes.iter().map(|_| LaneState::default()).collect(),
            waiting: BinaryHeap::new(),
            wake_at: None,
            draining: false,
        };
        let adopted = self.adopt(&myself, &mut state);
        if s.lanes.iter().any(|l| l.provider.receipts()) {
            myself.send_interval(RECEIPT_SWEEP, || DispatcherMsg::ReceiptsDue);
        }
        if s.starts.fetch_add(1, Ordering::Relaxed) > 0 {
            tracing::warn!(target: LOG_TARGET, adopted, "delivery dispatcher restarted; it adopted the messages of its predecessor");
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<DispatcherMsg>,
        msg: DispatcherMsg,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match msg {
            DispatcherMsg::Enqueued { ids } => {
                for id in ids {
                    self.on_enqueued(&myself, state, id, now);
                }
            }
            DispatcherMsg::Returned { lane, ids } => self.on_returned(&myself, state, lane, ids, now),
            DispatcherMsg::FlushDue { lane } => {
                state.lanes[lane].flush_at = None;
                self.flush(&myself, state, lane, now);
            }
            DispatcherMsg::WakeDue => self.on_wake(&myself, state, now, false),
            DispatcherMsg::ReceiptsDue => {
                // Off the mailbox: a failover asks the engine's gate (the limiter).
                tokio::spawn(self.shared.clone().sweep_watches());
            }
            DispatcherMsg::Drain => {
                state.draining = true;
                self.on_wake(&myself, state, now, true);
                for lane in 0..state.lanes.len() {
                    self.flush(&myself, state, lane, now);
                }
            }
            #[cfg(feature = "testkit")]
            DispatcherMsg::Panic => panic!("delivery dispatcher asked to panic (fault injection)"),
        }
        Ok(())
    }
}

impl DispatcherActor {
    /// Takes over every message of the ledger where it stands. Returns how many.
    fn adopt(&self, myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState) -> usize {
        let now = Instant::now();
        let (mut to_route, mut returned) = (Vec::new(), Vec::new());
        let total = {
            let ledger = self.shared.ledger.lock();
            for (id, entry) in ledger.iter() {
                match entry.stage {
                    Stage::New | Stage::Buffered(_) => to_route.push(id),
                    Stage::Waiting(due) => state.waiting.push(Reverse((due, id))),
                    // Its call is still running and will report to this actor.
                    Stage::InFlight(_) => {}
                    Stage::Returned(lane, _) => returned.push((lane, id)),
                }
            }
            ledger.len()
        };
        to_route.sort_unstable();
        for (lane, id) in returned {
            self.on_returned(myself, state, lane, vec![id], now);
        }
        for id in to_route {
            self.route(myself, state, id, now);
        }
        if let Some(Reverse((due, _))) = state.waiting.peek().copied() {
            self.arm_wake(myself, state, due, now);
        }
        total
    }

    fn on_enqueued(&self, myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState, id: u64, now: Instant) {
        // Adoption may already have routed it.
        let fresh = self.shared.ledger.lock().get_mut(id).is_some_and(|e| matches!(e.stage, Stage::New));
        if fresh {
            self.route(myself, state, id, now);
        }
    }

    /// Puts a message in the lane of the first provider of its channel whose breaker allows a
    /// call, or makes it wait for the earliest breaker to half-open.
    fn route(&self, myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState, id: u64, now: Instant) {
        enum Decision {
            Expire,
            Buffer { lane: usize, failover: bool },
            Wait(Instant),
        }
        let s = &self.shared;
        let today = s.clock.now();
        let decision = {
            let mut ledger = s.ledger.lock();
            let Some(entry) = ledger.get_mut(id) else { return };
            if today >= entry.message.expires_at {
                Decision::Expire
            } else {
                let route = &s.routes[route_index(entry.message.to.channel())];
                let mut chosen = None;
                let mut earliest: Option<Instant> = None;
                let tried = entry.tried;
                for (rank, &lane) in route.iter().enumerate().filter(|(_, l)| tried & bit(**l) == 0) {
                    let mut breaker = s.lanes[lane].breaker.lock();
                    if breaker.allows(now) {
                        chosen = Some((rank, lane));
                        break;
                    }
                    if let Some(until) = breaker.open_until() {
                        earliest = Some(earliest.map_or(until, |e| e.min(until)));
                    }
                }
                match chosen {
                    Some((rank, lane)) => {
                        entry.stage = Stage::Buffered(lane);
                        Decision::Buffer { lane, failover: rank > 0 && tried == 0 }
                    }
                    // A half-open breaker with its probe out has no deadline: look again soon.
                    None => {
                        Decision::Wait(earliest.unwrap_or(now + s.config.backoff.base.max(Duration::from_millis(10))))
                    }
                }
            }
        };
        match decision {
            Decision::Expire => self.finish(id, Final::Expired("the code expired before it could be sent")),
            Decision::Buffer { lane, failover } => {
                if failover {
                    s.counters.failovers.fetch_add(1, Ordering::Relaxed);
                    s.lanes[lane].metrics.failover();
                }
                state.lanes[lane].buffer.push_back((id, now));
                self.flush(myself, state, lane, now);
            }
            Decision::Wait(due) => self.wait(myself, state, id, due, now),
        }
    }

    /// Sends what a lane holds as long as a batch is due (full, old enough, or draining) and
    /// the provider has a free call slot; otherwise arms the lane's age timer.
    fn flush(&self, myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState, lane: usize, now: Instant) {
        let s = &self.shared;
        let l = &s.lanes[lane];
        loop {
            let draining = state.draining;
            let ls = &mut state.lanes[lane];
            let Some(&(_, oldest)) = ls.buffer.front() else { return };
            let due = draining || ls.buffer.len() >= l.batch || now.duration_since(oldest) >= s.config.batch_max_age;
            if !due {
                let at = oldest + s.config.batch_max_age;
                if ls.flush_at.is_none_or(|t| at < t) {
                    ls.flush_at = Some(at);
                    myself.send_after(at.duration_since(now), move || DispatcherMsg::FlushDue { lane });
                }
                return;
            }
            if l.in_flight.load(Ordering::Acquire) >= l.concurrency {
                // The next Returned of this lane flushes again.
                return;
            }
            if !l.breaker.lock().allows(now) {
                // The breaker opened after these were buffered: route them again (failover).
                let ids: Vec<u64> = ls.buffer.drain(..).map(|(id, _)| id).collect();
                for id in ids {
                    self.route(myself, state, id, now);
                }
                return;
            }
            let n = ls.buffer.len().min(l.batch);
            let ids: Vec<u64> = ls.buffer.drain(..n).map(|(id, _)| id).collect();
            self.send(lane, ids);
        }
    }

    /// Starts one provider call for `ids` (those still buffered for `lane` and not expired).
    fn send(&self, lane: usize, ids: Vec<u64>) {
        let s = &self.shared;
        let l = &s.lanes[lane];
        let today = s.clock.now();
        let mut expired = Vec::new();
        let mut picked = Vec::with_capacity(ids.len());
        {
            let mut ledger = s.ledger.lock();
            for id in ids {
                let Some(entry) = ledger.get_mut(id) else { continue };
                if !matches!(entry.stage, Stage::Buffered(b) if b == lane) {
                    continue;
                }
                if today >= entry.message.expires_at {
                    expired.push(id);
                    continue;
                }
                entry.attempts += 1;
                entry.stage = Stage::InFlight(lane);
                if l.provider.receipts() {
                    s.watch(entry, lane);
                }
                picked.push((id, entry.message.clone(), entry.delivery_id, entry.attempts));
            }
        }
        for id in expired {
            self.finish(id, Final::Expired("the code expired before it could be sent"));
        }
        if picked.is_empty() {
            return;
        }
        l.breaker.lock().on_dispatch();
        let retries = picked.iter().filter(|p| p.3 > 1).count() as u64;
        let mut ids = Vec::with_capacity(picked.len());
        let batch: Vec<Delivery> = picked
            .into_iter()
            .map(|(id, message, delivery_id, attempt)| {
                ids.push(id);
                let rendered = s.templates.render(&message, today);
                Delivery { id: delivery_id, message, subject: rendered.subject, body: rendered.body, attempt }
            })
            .collect();
        let n = batch.len() as u64;
        s.counters.attempts.fetch_add(n, Ordering::Relaxed);
        s.counters.retries.fetch_add(retries, Ordering::Relaxed);
        l.counters.calls.fetch_add(1, Ordering::Relaxed);
        l.counters.messages.fetch_add(n, Ordering::Relaxed);
        l.metrics.call_started(n, retries);
        l.in_flight.fetch_add(1, Ordering::AcqRel);
        let call = Call { shared: s.clone(), lane, ids, done: false };
        tokio::spawn(call.run(batch));
    }

    /// Acts on the results of a finished call.
    fn on_returned(
        &self,
        myself: &ActorRef<DispatcherMsg>,
        state: &mut DispatcherState,
        lane: usize,
        ids: Vec<u64>,
        now: Instant,
    ) {
        let s = &self.shared;
        // The batch's final outcomes are audited together: one store write for the lot.
        let mut events = Vec::new();
        for id in ids {
            let taken = {
                let mut ledger = s.ledger.lock();
                let Some(entry) = ledger.get_mut(id) else { continue };
                match std::mem::replace(&mut entry.stage, Stage::New) {
                    Stage::Returned(_, result) => {
                        if result.is_err() {
                            s.unwatch(&entry.delivery_id);
                        }
                        Some((result, entry.attempts))
                    }
                    // Already handled (by adoption after a restart): leave it be.
                    other => {
                        entry.stage = other;
                        None
                    }
                }
            };
            let Some((result, attempts)) = taken else { continue };
            let outcome = match result {
                Ok(()) => Final::Delivered { lane },
                Err(SendError::Permanent { reason }) => Final::GivenUp(format!("{reason}; not retried")),
                Err(SendError::Retryable { reason, .. }) if attempts >= s.config.max_attempts => {
                    Final::GivenUp(format!("every attempt failed; the last: {reason}"))
                }
                Err(SendError::Retryable { retry_after, .. }) => {
                    let delay = s.config.backoff.delay(attempts, retry_after);
                    self.wait(myself, state, id, now + delay, now);
                    continue;
                }
            };
            events.extend(s.finish(id, outcome));
        }
        s.spawn_audits(events);
        self.flush(myself, state, lane, now);
    }

    /// Parks a message until `due`, unless the code would have expired by then.
    fn wait(&self, myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState, id: u64, due: Instant, now: Instant) {
        let s = &self.shared;
        let at_due = s.clock.now().plus(due.duration_since(now));
        let outlives = {
            let mut ledger = s.ledger.lock();
            let Some(entry) = ledger.get_mut(id) else { return };
            if at_due >= entry.message.expires_at {
                true
            } else {
                entry.stage = Stage::Waiting(due);
                false
            }
        };
        if outlives {
            self.finish(id, Final::Expired("the code would expire before the next attempt"));
        } else {
            state.waiting.push(Reverse((due, id)));
            self.arm_wake(myself, state, due, now);
        }
    }

    fn arm_wake(&self, myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState, due: Instant, now: Instant) {
        if state.wake_at.is_none_or(|w| due < w) {
            state.wake_at = Some(due);
            myself.send_after(due.duration_since(now), || DispatcherMsg::WakeDue);
        }
    }

    /// Routes every waiting message that is due (all of them when `all`).
    fn on_wake(&self, myself: &ActorRef<DispatcherMsg>, state: &mut DispatcherState, now: Instant, all: bool) {
        state.wake_at = None;
        let mut due_ids = Vec::new();
        while let Some(Reverse((due, id))) = state.waiting.peek().copied() {
            if due > now && !all {
                break;
            }
            state.waiting.pop();
            // A stale heap entry (the message moved on) no longer matches its stage.
            let current =
                self.shared.ledger.lock().get_mut(id).is_some_and(|e| matches!(e.stage, Stage::Waiting(d) if d == due));
            if current {
                due_ids.push(id);
            }
        }
        for id in due_ids {
            self.route(myself, state, id, now);
        }
        if let Some(Reverse((due, _))) = state.waiting.peek().copied() {
            self.arm_wake(myself, state, due, now);
        }
    }

    fn finish(&self, id: u64, outcome: Final) {
        self.shared.spawn_audits(self.shared.finish(id, outcome).into_iter().collect());
    }

    /// Graceful shutdown (called by `Engine::stop`): sends everything that waits at once
    /// (ignoring batch age and backoff) and waits up to `timeout` for final outcomes; what is
    /// still open then is given up ("node shut down") and audited. Enqueue refuses from now on.
    pub(crate) async fn drain(&self, timeout: Duration) {
        let s = &self.shared;
        if let Some(actor) = s.current.load_full() {
            let _ = actor.cast(DispatcherMsg::Drain);
        }
        let deadline = Instant::now() + timeout;
        while !s.ledger.lock().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.closed.store(true, Ordering::SeqCst);
        let left = s.ledger.lock().ids();
        if !left.is_empty() {
            tracing::warn!(target: LOG_TARGET, messages = left.len(), "node shutting down: giving up messages not yet delivered");
        }
        let events: Vec<AuditEvent> = left
            .into_iter()
            .filter_map(|id| s.finish(id, Final::GivenUp("the node shut down before it could be sent".into())))
            .collect();
        if !events.is_empty()
            && let Err(e) = s.audit.append_all(events).await
        {
            tracing::warn!(target: LOG_TARGET, error = %e, "could not audit delivery outcomes");
        }
        while s.audits_pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the current actor (after its supervisor stopped, so nothing restarts it).
    pub(crate) async fn stop(&self) {
        if let Some(actor) = self.shared.current.swap(None) {
            let _ = actor.stop_and_wait(None, Some(Duration::from_secs(5))).await;
        }
    }
}

/// How often overdue receipts are looked for.
const RECEIPT_SWEEP: Duration = Duration::from_secs(1);

/// A lane's bit in a set of lanes.
pub(super) fn bit(lane: usize) -> u64 {
    1u64 << lane.min(63)
}

impl Shared {
    /// Removes a message from the ledger, counts and logs its outcome, and returns its audit
    /// event (none if it was already finished). A message a receipt-reporting provider took
    /// is watched from here on.
    fn finish(&self, id: u64, outcome: Final) -> Option<AuditEvent> {
        let entry = self.ledger.lock().remove(id)?;
        let attempts = entry.attempts;
        let (step, result, text) = match outcome {
            Final::Delivered { lane } => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                self.metrics.finished(entry.message.to.channel(), MessageOutcome::Delivered);
                let name = &self.lanes[lane].name;
                (Step::Delivered, AuditOutcome::Ok, format!("handed to {name} on attempt {attempts}"))
            }
            Final::GivenUp(reason) => {
                self.unwatch(&entry.delivery_id);
                self.counters.given_up.fetch_add(1, Ordering::Relaxed);
                self.metrics.finished(entry.message.to.channel(), MessageOutcome::GivenUp);
                (Step::GivenUp, AuditOutcome::Failed, format!("given up after {attempts} attempt(s): {reason}"))
            }
            Final::Expired(reason) => {
                self.unwatch(&entry.delivery_id);
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                self.metrics.finished(entry.message.to.channel(), MessageOutcome::Expired);
                (Step::Expired, AuditOutcome::Failed, format!("{reason} (after {attempts} attempt(s))"))
            }
        };
        let message = &entry.message;
        if result == AuditOutcome::Ok {
            tracing::debug!(target: LOG_TARGET, trace_id = %message.trace_id, channel = message.to.channel().as_str(), "{text}");
        } else {
            tracing::warn!(target: LOG_TARGET, trace_id = %message.trace_id, channel = message.to.channel().as_str(), step = step.as_str(), "{text}");
        }
        Some(AuditEvent {
            at: self.clock.now(),
            trace_id: message.trace_id.clone(),
            api: Api::Delivery,
            step,
            outcome: result,
            message: Cow::Owned(text),
            client_ip: None,
            user_agent: None,
            ident_hash: Some(message.ident_hash),
            user_id: None,
        })
    }

    /// Audits `events` (delivery outcomes) off the caller's path, in one store write.
    pub(super) fn spawn_audits(self: &Arc<Self>, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        self.audits_pending.fetch_add(1, Ordering::AcqRel);
        let shared = self.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.audit.append_all(events).await {
                tracing::warn!(target: LOG_TARGET, error = %e, "could not audit delivery outcomes");
            }
            shared.audits_pending.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Tells the current actor (whichever it is when the call ends) that results are in.
    async fn report(self: Arc<Self>, lane: usize, ids: Vec<u64>) {
        for _ in 0..500 {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            if let Some(actor) = self.current.load_full()
                && actor.cast(DispatcherMsg::Returned { lane, ids: ids.clone() }).is_ok()
            {
                return;
            }
            // Between a failed actor and its successor: the successor also adopts returned
            // results from the ledger, so this only shortens the wait.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::error!(target: LOG_TARGET, lane, "no delivery dispatcher to report a finished call to");
    }
}

/// One provider call in flight. Dropping it unfinished (its task panicked or was cancelled)
/// still records a retryable failure for each of its messages, so none is stranded.
struct Call {
    shared: Arc<Shared>,
    lane: usize,
    ids: Vec<u64>,
    done: bool,
}

impl Call {
    async fn run(mut self, batch: Vec<Delivery>) {
        let s = self.shared.clone();
        let l = &s.lanes[self.lane];
        let n = batch.len();
        let started = Instant::now();
        let results = match tokio::time::timeout(s.config.send_timeout, l.provider.send(&batch)).await {
            Ok(mut results) => {
                results.truncate(n);
                while results.len() < n {
                    results.push(Err(SendError::retryable(format!("{}: no result for this message", l.name))));
                }
                results
            }
            Err(_) => {
                let reason = format!("{}: no answer within {:?}", l.name, s.config.send_timeout);
                vec![Err(SendError::retryable(reason)); n]
            }
        };
        drop(batch);
        l.metrics.call_took(started.elapsed());
        self.complete(results);
        let ids = std::mem::take(&mut self.ids);
        s.report(self.lane, ids).await;
    }

    /// Updates the breaker and counters and writes the results into the ledger.
    fn complete(&mut self, results: Vec<SendResult>) {
        self.done = true;
        let s = &self.shared;
        let l = &s.lanes[self.lane];
        let provider_failed = results.iter().all(|r| r.as_ref().is_err_and(SendError::is_retryable));
        {
            let mut breaker = l.breaker.lock();
            if provider_failed {
                if breaker.on_failure(Instant::now()) {
                    l.metrics.breaker_opened();
                    tracing::warn!(target: LOG_TARGET,
                        provider = %l.name,
                        open_for = ?s.config.breaker.open_for,
                        "circuit breaker opened: sends go to the next provider of the channel"
                    );
                }
            } else {
                breaker.on_success();
            }
        }
        for r in &results {
            let (counter, outcome) = match r {
                Ok(()) => (&l.counters.delivered, SendOutcome::Delivered),
                Err(SendError::Retryable { .. }) => (&l.counters.failed, SendOutcome::Failed),
                Err(SendError::Permanent { .. }) => (&l.counters.rejected, SendOutcome::Rejected),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            l.metrics.send(outcome);
            if let Err(e) = r {
                tracing::debug!(target: LOG_TARGET, provider = %l.name, error = %e, "provider did not take a message");
            }
        }
        {
            let mut ledger = s.ledger.lock();
            for (&id, result) in self.ids.iter().zip(results) {
                if let Some(entry) = ledger.get_mut(id)
                    && matches!(entry.stage, Stage::InFlight(lane) if lane == self.lane)
                {
                    entry.stage = Stage::Returned(self.lane, result);
                }
            }
        }
        l.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let name = self.shared.lanes[self.lane].name.clone();
        let n = self.ids.len();
        self.complete(vec![Err(SendError::retryable(format!("{name}: the call was interrupted"))); n]);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(self.shared.clone().report(self.lane, std::mem::take(&mut self.ids)));
        }
    }
}
