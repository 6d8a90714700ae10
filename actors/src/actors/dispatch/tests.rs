//! The dispatcher's scheduling rules in virtual time (`tokio::time::pause`): batching by size
//! and age, retries and `Retry-After`, the attempt cap, breakers and failover, expiry, the
//! queue bound, adoption after a crash, and drain. The provider here is an in-memory script;
//! the real adapters are exercised over HTTP and SMTP in the `otpd` integration tests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use ractor::Actor;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::*;
use crate::ports::{AuditEvent, StoreError};
use crate::rules::audit::AuditOutcome;
use crate::rules::backoff::Backoff;
use crate::rules::breaker::BreakerConfig;
use crate::rules::challenge::Purpose;
use crate::rules::clock::{ManualClock, Timestamp};
use crate::rules::code::{Alphabet, CodePolicy};
use crate::rules::identifier::Identifier;
use crate::rules::keys::IdentHash;

/// An audit log in memory.
#[derive(Default)]
struct MemoryAudit(Mutex<Vec<AuditEvent>>);

#[async_trait]
impl AuditLog for MemoryAudit {
    async fn append(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.0.lock().push(event);
        Ok(())
    }
    async fn by_identifier(&self, _: &IdentHash, _: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(Vec::new())
    }
    async fn by_trace(&self, trace: &str, _: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self.0.lock().iter().filter(|e| e.trace_id == trace).cloned().collect())
    }
}

/// One recorded call.
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    traces: Vec<String>,
    attempts: Vec<u32>,
}

/// A provider that answers from a script (then `Ok`), records every call, and can be held.
struct Scripted {
    name: String,
    max_batch: usize,
    script: Mutex<VecDeque<Vec<SendResult>>>,
    /// Answer every call with this when the script is empty (default: Ok).
    otherwise: Mutex<Option<SendError>>,
    calls: Mutex<Vec<Call>>,
    gate: Option<Semaphore>,
}

impl Scripted {
    fn new(name: &str, max_batch: usize) -> Arc<Self> {
        Self::with_gate(name, max_batch, None)
    }

    /// Calls wait until `release`d.
    fn held(name: &str, max_batch: usize) -> Arc<Self> {
        Self::with_gate(name, max_batch, Some(Semaphore::new(0)))
    }

    fn with_gate(name: &str, max_batch: usize, gate: Option<Semaphore>) -> Arc<Self> {
        Arc::new(Scripted {
            name: name.into(),
            max_batch,
            script: Mutex::new(VecDeque::new()),
            otherwise: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
            gate,
        })
    }

    fn then(&self, results: Vec<SendResult>) {
        self.script.lock().push_back(results);
    }

    fn always_fail(&self, e: Option<SendError>) {
        *self.otherwise.lock() = e;
    }

    fn release(&self, calls: usize) {
        self.gate.as_ref().expect("a held provider").add_permits(calls);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    fn sizes(&self) -> Vec<usize> {
        self.calls().iter().map(|c| c.traces.len()).collect()
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    async fn send(&self, batch: &[Delivery]) -> Vec<SendResult> {
        self.calls.lock().push(Call {
            at: Instant::now(),
            traces: batch.iter().map(|d| d.message.trace_id.to_string()).collect(),
            attempts: batch.iter().map(|d| d.attempt).collect(),
        });
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("the gate stays open").forget();
        }
        if let Some(results) = self.script.lock().pop_front() {
            return results;
        }
        match self.otherwise.lock().clone() {
            Some(e) => vec![Err(e); batch.len()],
            None => vec![Ok(()); batch.len()],
        }
    }
}

struct Rig {
    handle: DispatchHandle,
    audit: Arc<MemoryAudit>,
    clock: Arc<ManualClock>,
    actor: ractor::ActorRef<DispatcherMsg>,
}

fn config() -> DispatchConfig {
    DispatchConfig {
        queue_capacity: 100,
        batch_max_size: 100,
        batch_max_age: Duration::from_millis(50),
        max_attempts: 5,
        backoff: Backoff { base: Duration::from_millis(100), max: Duration::from_secs(2) },
        breaker: BreakerConfig { failures: 3, open_for: Duration::from_secs(10) },
        send_timeout: Duration::from_secs(5),
        receipt_timeout: Duration::from_secs(60),
    }
}

async fn rig(config: DispatchConfig, sms: Vec<(Arc<Scripted>, usize)>) -> Rig {
    let audit = Arc::new(MemoryAudit::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let names: Vec<String> = sms.iter().map(|(p, _)| p.name.clone()).collect();
    let providers = sms
        .into_iter()
        .map(|(p, concurrency)| ProviderSpec { provider: p as Arc<dyn Provider>, concurrency })
        .collect();
    let routes = Routes { sms: names.clone(), email: names };
    let handle =
        DispatchHandle::new(config, providers, &routes, Templates::defaults("Test"), audit.clone(), clock.clone())
            .expect("valid routes");
    let (actor, _) = Actor::spawn(None, handle.actor(), ()).await.expect("the dispatcher starts");
    Rig { handle, audit, clock, actor }
}

impl Rig {
    fn message(&self, trace: &str) -> OutboundMessage {
        OutboundMessage {
            to: Identifier::Phone { e164: "+12025550123".into(), country_code: 1 },
            purpose: Purpose::Login,
            resend: false,
            code: CodePolicy::new(6, Alphabet::Numeric).unwrap().generate(),
            expires_at: self.clock.now().plus(Duration::from_secs(300)),
            trace_id: trace.into(),
            ident_hash: IdentHash([7; 16]),
            via: None,
            locale: None,
        }
    }

    fn send(&self, trace: &str) {
        let held = self.handle.enqueue(self.message(trace)).expect("accepted");
        self.handle.start(vec![held]);
    }

    /// Lets virtual time run (in `step`s) until `done` holds; panics after `limit`.
    async fn until(&self, limit: Duration, done: impl Fn(&DispatchStats) -> bool) -> DispatchStats {
        let start = Instant::now();
        loop {
            let stats = self.handle.stats();
            if done(&stats) {
                return stats;
            }
            assert!(start.elapsed() < limit, "condition not reached within {limit:?}: {stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn events(&self, trace: &str) -> Vec<AuditEvent> {
        self.audit.0.lock().iter().filter(|e| e.trace_id == trace).cloned().collect()
    }
}

/// Lets every runnable task run without moving virtual time.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_at_once_and_the_rest_waits_for_its_age() {
    let p = Scripted::new("hook", 100);
    let mut c = config();
    c.batch_max_size = 3;
    c.batch_max_age = Duration::from_secs(3600);
    let r = rig(c, vec![(p.clone(), 4)]).await;
    for i in 0..7 {
        r.send(&format!("m{i}"));
    }
    settle().await;
    assert_eq!(p.sizes(), [3, 3], "two full batches leave at once");
    tokio::time::sleep(Duration::from_secs(3599)).await;
    assert_eq!(p.sizes(), [3, 3], "the seventh waits for its age");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.sizes(), [3, 3, 1]);
    let s = r.until(Duration::from_secs(1), |s| s.delivered == 7).await;
    assert_eq!((s.attempts, s.queued, s.providers[0].calls), (7, 0, 3));
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_leaves_when_its_oldest_message_reaches_the_age() {
    let p = Scripted::new("hook", 100);
    let r = rig(config(), vec![(p.clone(), 4)]).await;
    let start = Instant::now();
    r.send("a");
    tokio::time::sleep(Duration::from_millis(20)).await;
    r.send("b");
    r.send("c");
    tokio::time::sleep(Duration::from_millis(29)).await;
    assert!(p.calls().is_empty(), "49 ms: nothing sent yet");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let calls = p.calls();
    assert_eq!(calls.len(), 1, "one call for the three messages");
    assert_eq!(calls[0].traces, ["a", "b", "c"]);
    assert_eq!(calls[0].at - start, Duration::from_millis(50), "flushed at the oldest message's age");
}

#[tokio::test(start_paused = true)]
async fn batch_size_one_sends_each_message_at_once() {
    let p = Scripted::new("hook", 100);
    let mut c = config();
    c.batch_max_size = 1;
    let r = rig(c, vec![(p.clone(), 4)]).await;
    let start = Instant::now();
    r.send("a");
    r.send("b");
    settle().await;
    assert_eq!(p.sizes(), [1, 1]);
    assert!(p.calls().iter().all(|c| c.at == start), "no batching delay");
}

#[tokio::test(start_paused = true)]
async fn a_provider_without_batches_gets_one_message_per_call_within_its_concurrency() {
    let p = Scripted::held("twilio", 1);
    let r = rig(config(), vec![(p.clone(), 2)]).await;
    for i in 0..5 {
        r.send(&format!("m{i}"));
    }
    settle().await;
    assert_eq!(p.sizes(), [1, 1], "two calls in flight, the limit");
    assert_eq!(r.handle.health()[0].in_flight, 2);
    p.release(5);
    r.until(Duration::from_secs(1), |s| s.delivered == 5).await;
    assert_eq!(p.sizes(), [1, 1, 1, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_jittered_exponential_backoff() {
    let p = Scripted::new("twilio", 1);
    let fail = || vec![Err(SendError::retryable("twilio: HTTP 503"))];
    p.then(fail());
    p.then(fail());
    let r = rig(config(), vec![(p.clone(), 1)]).await;
    r.send("m");
    let s = r.until(Duration::from_secs(10), |s| s.delivered == 1).await;
    assert_eq!((s.attempts, s.retries, s.given_up), (3, 2, 0));
    let calls = p.calls();
    assert_eq!(calls.iter().map(|c| c.attempts[0]).collect::<Vec<_>>(), [1, 2, 3]);
    // Full jitter: each wait is within [0, base·2^(n-1)].
    assert!(calls[1].at - calls[0].at <= Duration::from_millis(100), "{calls:?}");
    assert!(calls[2].at - calls[1].at <= Duration::from_millis(200), "{calls:?}");
    let events = r.events("m");
    assert_eq!(events.len(), 1, "one audit event per final outcome");
    assert_eq!((events[0].step.as_str(), events[0].outcome), ("delivered", AuditOutcome::Ok));
    assert_eq!(events[0].message, "handed to twilio on attempt 3");
    assert_eq!(events[0].ident_hash, Some(IdentHash([7; 16])));
}

/// A rig whose one provider answers its first call `429` with `Retry-After: secs`, and one
/// message sent into it.
async fn sent_into_429(secs: u64) -> (Arc<Scripted>, Rig) {
    let p = Scripted::new("twilio", 1);
    p.then(vec![Err(SendError::Retryable {
        retry_after: Some(Duration::from_secs(secs)),
        reason: "twilio: HTTP 429".into(),
    })]);
    let r = rig(config(), vec![(p.clone(), 1)]).await;
    r.send("m");
    (p, r)
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_for_the_next_attempt() {
    let (p, r) = sent_into_429(7).await;
    r.until(Duration::from_secs(60), |s| s.delivered == 1).await;
    let calls = p.calls();
    assert_eq!(calls.len(), 2);
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= Duration::from_secs(7), "retried after {waited:?}, before Retry-After");
    assert!(waited < Duration::from_secs(8), "…but not much later: {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let p = Scripted::new("twilio", 1);
    p.then(vec![Err(SendError::permanent("twilio: HTTP 400, error 21211"))]);
    let r = rig(config(), vec![(p.clone(), 1)]).await;
    let message = r.message("m");
    let code = message.code.expose().to_owned();
    let held = r.handle.enqueue(message).unwrap();
    r.handle.start(vec![held]);
    let s = r.until(Duration::from_secs(1), |s| s.given_up == 1).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(p.calls().len(), 1, "never retried");
    assert_eq!((s.delivered, s.retries, s.queued), (0, 0, 0));
    assert_eq!(r.handle.health()[0].breaker, BreakerState::Closed, "not the provider's fault");
    let events = r.events("m");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!((e.api.as_str(), e.step.as_str(), e.outcome), ("delivery", "given_up", AuditOutcome::Failed));
    assert_eq!(e.message, "given up after 1 attempt(s): twilio: HTTP 400, error 21211; not retried");
    let all = format!("{events:?}");
    assert!(!all.contains(&code) && !all.contains("+12025550123"), "no code or number in the trail: {all}");
}

#[tokio::test(start_paused = true)]
async fn attempts_are_capped() {
    let p = Scripted::new("twilio", 1);
    p.always_fail(Some(SendError::retryable("twilio: HTTP 500")));
    let mut c = config();
    c.max_attempts = 3;
    c.breaker.failures = 100;
    let r = rig(c, vec![(p.clone(), 1)]).await;
    r.send("m");
    let s = r.until(Duration::from_secs(10), |s| s.given_up == 1).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(p.calls().len(), 3);
    assert_eq!(s.attempts, 3);
    assert_eq!(
        r.events("m")[0].message,
        "given up after 3 attempt(s): every attempt failed; the last: twilio: HTTP 500"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_over_to_the_secondary_and_a_probe_closes_it_again() {
    let primary = Scripted::new("twilio", 1);
    let secondary = Scripted::new("hook", 100);
    primary.always_fail(Some(SendError::retryable("twilio: HTTP 503")));
    let mut c = config();
    c.breaker.failures = 2;
    c.batch_max_size = 1;
    let r = rig(c, vec![(primary.clone(), 1), (secondary.clone(), 1)]).await;

    r.send("first");
    let s = r.until(Duration::from_secs(10), |s| s.delivered == 1).await;
    assert_eq!(primary.calls().len(), 2, "two failures open the primary's breaker");
    assert_eq!(secondary.calls()[0].traces, ["first"]);
    assert_eq!(secondary.calls()[0].attempts, [3], "the retry went to the secondary");
    assert_eq!(s.failovers, 1);
    assert_eq!(r.events("first")[0].message, "handed to hook on attempt 3");
    let health = r.handle.health();
    assert_eq!((health[0].breaker, health[1].breaker), (BreakerState::Open, BreakerState::Closed));
    assert_eq!(health[0].routes, [(Channel::Sms, 0), (Channel::Email, 0)]);
    assert!(r.handle.check().is_ok(), "the secondary serves: ready");

    r.send("second");
    r.until(Duration::from_secs(1), |s| s.delivered == 2).await;
    assert_eq!(primary.calls().len(), 2, "an open breaker gets no traffic");
    assert_eq!(secondary.calls()[1].attempts, [1], "straight to the secondary");

    // After open_for the primary gets one probe; it works again, so the breaker closes.
    primary.always_fail(None);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(r.handle.health()[0].breaker, BreakerState::HalfOpen);
    r.send("third");
    r.until(Duration::from_secs(1), |s| s.delivered == 3).await;
    assert_eq!(primary.calls().last().unwrap().traces, ["third"]);
    assert_eq!(r.handle.health()[0].breaker, BreakerState::Closed);
    assert_eq!(r.handle.stats().providers[0].breaker_opened, 1);
}

#[tokio::test(start_paused = true)]
async fn messages_buffered_for_a_provider_whose_breaker_opens_fail_over() {
    let primary = Scripted::held("twilio", 1);
    let secondary = Scripted::new("hook", 100);
    primary.then(vec![Err(SendError::retryable("twilio: HTTP 500"))]);
    let mut c = config();
    c.breaker.failures = 1;
    c.batch_max_size = 1;
    let r = rig(c, vec![(primary.clone(), 1), (secondary.clone(), 1)]).await;
    r.send("a");
    r.send("b");
    settle().await;
    assert_eq!(primary.sizes(), [1], "b waits for the primary's only call slot");
    primary.release(1);
    let s = r.until(Duration::from_secs(5), |s| s.delivered == 2).await;
    assert_eq!(primary.calls().len(), 1, "nothing more went to the open breaker");
    let mut traces: Vec<String> = secondary.calls().into_iter().flat_map(|c| c.traces).collect();
    traces.sort();
    assert_eq!(traces, ["a", "b"]);
    assert_eq!(s.failovers, 2);
}

#[tokio::test(start_paused = true)]
async fn with_every_breaker_open_messages_wait_and_readiness_says_so() {
    let p = Scripted::new("twilio", 1);
    p.then(vec![Err(SendError::retryable("twilio: HTTP 503"))]);
    let mut c = config();
    c.breaker.failures = 1;
    let r = rig(c, vec![(p.clone(), 1)]).await;
    r.send("m");
    r.until(Duration::from_secs(1), |_| p.calls().len() == 1).await;
    settle().await;
    let err = r.handle.check().unwrap_err();
    assert!(err.starts_with("no sms provider available (twilio open)"), "{err}");
    assert!(r.handle.health()[0].retry_in.is_some());
    let s = r.until(Duration::from_secs(30), |s| s.delivered == 1).await;
    let calls = p.calls();
    assert!(calls[1].at - calls[0].at >= Duration::from_secs(10), "waited for the breaker: {calls:?}");
    assert_eq!(s.attempts, 2);
    assert!(r.handle.check().is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_expired_code_is_never_sent() {
    let p = Scripted::held("twilio", 1);
    let r = rig(config(), vec![(p.clone(), 1)]).await;
    r.send("in-flight");
    r.send("queued");
    settle().await;
    assert_eq!(p.sizes(), [1], "one call in flight, the other message buffered");
    r.clock.advance(Duration::from_secs(301));
    p.release(1);
    let s = r.until(Duration::from_secs(1), |s| s.delivered + s.expired == 2).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(p.calls().len(), 1, "the expired code never reached the provider");
    assert_eq!((s.delivered, s.expired), (1, 1));
    let e = &r.events("queued")[0];
    assert_eq!(
        (e.step.as_str(), &*e.message),
        ("expired", "the code expired before it could be sent (after 0 attempt(s))")
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_would_outlive_the_code_ends_it_now() {
    let (p, r) = sent_into_429(400).await;
    let s = r.until(Duration::from_secs(1), |s| s.expired == 1).await;
    assert_eq!(p.calls().len(), 1);
    assert_eq!(s.queued, 0, "not parked for 400 s");
    assert_eq!(r.events("m")[0].message, "the code would expire before the next attempt (after 1 attempt(s))");
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_bounded_and_frees_up_after_delivery() {
    let p = Scripted::held("twilio", 1);
    let mut c = config();
    c.queue_capacity = 2;
    let r = rig(c, vec![(p.clone(), 1)]).await;
    r.send("a");
    r.send("b");
    assert_eq!(r.handle.enqueue(r.message("c")), Err(NotifyError::QueueFull));
    assert_eq!(r.handle.stats().refused, 1);
    p.release(2);
    r.until(Duration::from_secs(1), |s| s.delivered == 2).await;
    r.send("d");
    assert_eq!(r.handle.stats().accepted, 3);
}

#[tokio::test(start_paused = true)]
async fn per_message_results_in_one_batch() {
    let p = Scripted::new("hook", 100);
    p.then(vec![Ok(()), Err(SendError::permanent("hook: rejected")), Err(SendError::retryable("hook: busy"))]);
    let r = rig(config(), vec![(p.clone(), 1)]).await;
    r.send("ok");
    r.send("bad");
    r.send("later");
    let s = r.until(Duration::from_secs(5), |s| s.delivered == 2 && s.given_up == 1).await;
    assert_eq!(p.sizes(), [3, 1]);
    assert_eq!(p.calls()[1].traces, ["later"]);
    assert_eq!(s.providers[0].rejected, 1);
    assert_eq!(r.handle.health()[0].consecutive_failures, 0, "a batch that got through is a success");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_dispatcher_adopts_what_its_predecessor_held() {
    let p = Scripted::held("twilio", 1);
    let r = rig(config(), vec![(p.clone(), 1)]).await;
    r.send("in-flight");
    r.send("buffered");
    settle().await;
    assert_eq!(p.sizes(), [1]);
    // Killed: its state (lane buffers, timers) is gone, as after a panic.
    r.actor.kill();
    settle().await;
    assert!(r.actor.get_status() == ractor::ActorStatus::Stopped, "the actor died");
    r.send("while-down");
    let (next, _) = Actor::spawn(None, r.handle.actor(), ()).await.expect("a successor starts");
    p.release(3);
    let s = r.until(Duration::from_secs(5), |s| s.delivered == 3).await;
    assert_eq!(s.restarts, 1);
    assert_eq!(p.calls().len(), 3, "nothing sent twice, nothing lost");
    next.stop(None);
}

#[tokio::test(start_paused = true)]
async fn drain_sends_what_waits_and_gives_up_the_rest() {
    let p = Scripted::new("hook", 100);
    let mut c = config();
    c.batch_max_age = Duration::from_secs(3600);
    let r = rig(c, vec![(p.clone(), 1)]).await;
    r.send("a");
    r.send("b");
    r.handle.actor().drain(Duration::from_secs(5)).await;
    assert_eq!(p.sizes(), [2], "sent without waiting for the batch age");
    assert_eq!(r.handle.stats().delivered, 2);
    assert_eq!(r.handle.enqueue(r.message("late")), Err(NotifyError::Closed));

    let held = Scripted::held("slow", 1);
    let r = rig(config(), vec![(held.clone(), 1)]).await;
    r.send("stuck");
    r.handle.actor().drain(Duration::from_secs(1)).await;
    let s = r.handle.stats();
    assert_eq!((s.given_up, s.queued), (1, 0));
    assert_eq!(r.events("stuck")[0].message, "given up after 1 attempt(s): the node shut down before it could be sent");
}

#[test]
fn routes_must_name_known_providers() {
    let p: Arc<dyn Provider> = Scripted::new("a", 1);
    let build = |routes: Routes| {
        DispatchHandle::new(
            config(),
            vec![ProviderSpec { provider: p.clone(), concurrency: 1 }],
            &routes,
            Templates::defaults("x"),
            Arc::new(MemoryAudit::default()),
            Arc::new(ManualClock::starting_now()),
        )
        .err()
        .map(|e| e.to_string())
    };
    assert_eq!(build(Routes { sms: vec!["a".into()], email: vec!["a".into()] }), None);
    assert_eq!(
        build(Routes { sms: vec!["a".into(), "b".into()], email: vec!["a".into()] }),
        Some("delivery routes: sms route names unknown provider \"b\"".into())
    );
    assert_eq!(
        build(Routes { sms: vec!["a".into()], email: vec![] }),
        Some("delivery routes: no provider for email".into())
    );
}

/// A provider that reports receipts, and whose report arrives before its own answer (a fast
/// carrier): the report must find the message watched.
struct EarlyReporter {
    handle: parking_lot::Mutex<Option<DispatchHandle>>,
    status: ReceiptStatus,
}

#[async_trait]
impl Provider for EarlyReporter {
    fn name(&self) -> &str {
        "early"
    }
    fn receipts(&self) -> bool {
        true
    }
    async fn send(&self, batch: &[Delivery]) -> Vec<SendResult> {
        let handle = self.handle.lock().clone().expect("set before the first send");
        for d in batch {
            assert_eq!(handle.receipt("early", d.id, self.status, None).await, ReceiptAnswer::Delivered);
        }
        vec![Ok(()); batch.len()]
    }
}

#[tokio::test(start_paused = true)]
async fn a_receipt_that_comes_before_the_providers_answer_is_not_lost() {
    let provider = Arc::new(EarlyReporter { handle: parking_lot::Mutex::new(None), status: ReceiptStatus::Delivered });
    let audit = Arc::new(MemoryAudit::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let routes = Routes { sms: vec!["early".into()], email: vec!["early".into()] };
    let spec = ProviderSpec { provider: provider.clone() as Arc<dyn Provider>, concurrency: 1 };
    let handle = DispatchHandle::new(config(), vec![spec], &routes, Templates::defaults("Test"), audit, clock.clone())
        .expect("valid routes");
    *provider.handle.lock() = Some(handle.clone());
    let (actor, _) = Actor::spawn(None, handle.actor(), ()).await.expect("the dispatcher starts");
    let rig = Rig { handle, audit: Arc::new(MemoryAudit::default()), clock, actor };
    rig.send("early-1");
    rig.until(Duration::from_secs(5), |s| s.delivered == 1).await;
    assert_eq!(rig.handle.watched(), 0, "the delivered report ended the watch it found");
}
