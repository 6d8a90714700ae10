//! The engine's metrics: every name it records, what each means, and the handles it records
//! through (the `metrics` facade; the `otpd` binary installs the Prometheus recorder).
//!
//! * Every name is a `const` here and has a [`MetricDef`] in [`CATALOGUE`] (type, labels,
//!   buckets, meaning). The front end's catalogue adds its own; together they are the metric
//!   catalogue (docs/metrics.md is generated from it), and the dashboard and alert rules in `deploy/` are checked
//!   against them.
//! * **Labels never carry an unbounded value**: no identifier, code, IP, trace id, user,
//!   session or device id. Label values come from fixed enums (purpose, channel, outcome,
//!   rule, reason), from configuration (provider names, shard indexes) or from `as_str` of an
//!   engine enum.
//! * The hot path records through handles registered once, when the engine starts (arrays of
//!   [`Counter`]s indexed by enum), so a request only bumps atomics; it never builds a label
//!   set. Rare events (a limit denial, a store error, an actor restart) use the macros.
//! * With no recorder installed (unit tests, embedding) every handle is a no-op.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::actors::dispatch::{FailoverReason, ReceiptStatus};
use crate::ports::{AuthMethod, LimiterError, RevokeReason};
use crate::rules::audit::Api;
use crate::rules::breaker::BreakerState;
use crate::rules::challenge::{Purpose, VerifyOutcome};
use crate::rules::clock::Timestamp;
use crate::rules::identifier::{Channel, Identifier};
use crate::rules::limits::{Check, CheckKind, Decision, LimitAction, Subject};
use crate::rules::sms::Money;

/// Codes handed to delivery.
pub const OTP_CODES_ISSUED: &str = "otpd_otp_codes_issued_total";
/// Codes checked, by verdict.
pub const OTP_VERIFICATIONS: &str = "otpd_otp_verifications_total";
/// Codes issued by `POST /v1/otp/resend`.
pub const OTP_RESENDS: &str = "otpd_otp_resends_total";
/// Answers that hide whether an account or device exists.
pub const OTP_ENUMERATION_SAFE: &str = "otpd_otp_enumeration_safe_responses_total";
/// Challenges held in memory per shard.
pub const CHALLENGES_LIVE: &str = "otpd_challenges_live";
/// Challenges that can still be answered.
pub const CHALLENGES_PENDING: &str = "otpd_challenges_pending";
/// Limiter decisions.
pub const LIMITER_DECISIONS: &str = "otpd_limiter_decisions_total";
/// Time to get a limiter decision (a Redis round trip for the distributed limiter).
pub const LIMITER_DURATION: &str = "otpd_limiter_check_duration_seconds";
/// 1 while the Redis limiter has fallen back to the in-process one; see
/// [`set_redis_fallback_active`].
pub const LIMITER_REDIS_FALLBACK: &str = "otpd_limiter_redis_fallback_active";
/// What the SMS budget counted, by country calling code, in 1/10 000 of the price list's
/// currency (`rules::sms`).
pub const SMS_SPEND: &str = "otpd_sms_spend_units_total";
/// SMS codes sent (let through by the limits, with or without an account behind the number)
/// and verified, by country calling code: their ratio is a destination's conversion.
pub const SMS_CODES: &str = "otpd_sms_codes_total";
/// The share of each daily SMS budget spent, by scope (`all`, or a country calling code).
pub const SMS_BUDGET_USED: &str = "otpd_sms_budget_used_ratio";
/// Messages accepted and not yet final.
pub const DELIVERY_QUEUE_DEPTH: &str = "otpd_delivery_queue_depth";
/// `delivery.queue_capacity`.
pub const DELIVERY_QUEUE_CAPACITY: &str = "otpd_delivery_queue_capacity";
/// `enqueue` results.
pub const DELIVERY_ENQUEUED: &str = "otpd_delivery_enqueued_total";
/// Final outcomes of messages.
pub const DELIVERY_MESSAGES: &str = "otpd_delivery_messages_total";
/// Messages per provider call.
pub const DELIVERY_BATCH_SIZE: &str = "otpd_delivery_batch_size";
/// Per-message results of provider calls.
pub const DELIVERY_SENDS: &str = "otpd_delivery_sends_total";
/// Attempts after a message's first.
pub const DELIVERY_RETRIES: &str = "otpd_delivery_retries_total";
/// Messages routed to a provider other than their channel's primary.
pub const DELIVERY_FAILOVERS: &str = "otpd_delivery_failovers_total";
/// Duration of provider calls.
pub const DELIVERY_PROVIDER_DURATION: &str = "otpd_delivery_provider_duration_seconds";
/// Circuit breaker state, one-hot.
pub const DELIVERY_BREAKER_STATE: &str = "otpd_delivery_breaker_state";
/// Times a breaker opened.
pub const DELIVERY_BREAKER_OPENED: &str = "otpd_delivery_breaker_opened_total";
/// Delivery receipts, by provider, channel, country and status.
pub const DELIVERY_RECEIPTS: &str = "otpd_delivery_receipts_total";
/// From a provider taking a message to its `delivered` receipt.
pub const DELIVERY_TIME_TO_DELIVERED: &str = "otpd_delivery_time_to_delivered_seconds";
/// Codes sent again on another route after a receipt (or its absence), by reason.
pub const DELIVERY_RECEIPT_FAILOVERS: &str = "otpd_delivery_receipt_failovers_total";
/// Store port calls, timed (`adapters::metered::MeteredStore`).
pub const STORE_DURATION: &str = "otpd_store_operation_duration_seconds";
/// Store port calls that failed.
pub const STORE_ERRORS: &str = "otpd_store_errors_total";
/// Sessions opened (an access and a refresh token issued).
pub const TOKENS_ISSUED: &str = "otpd_tokens_issued_total";
/// Refresh-token presentations.
pub const TOKENS_REFRESHED: &str = "otpd_tokens_refreshed_total";
/// Sessions revoked.
pub const SESSIONS_REVOKED: &str = "otpd_sessions_revoked_total";
/// Device-login answers, by verdict.
pub const DEVICE_LOGINS: &str = "otpd_device_logins_total";
/// Actors restarted by the supervisor.
pub const ACTOR_RESTARTS: &str = "otpd_actor_restarts_total";

/// Live cluster members this node sees, itself included.
pub const CLUSTER_MEMBERS: &str = "otpd_cluster_members";
/// Partitions (of `cluster::PARTITIONS`) this node owns.
pub const CLUSTER_PARTITIONS_OWNED: &str = "otpd_cluster_partitions_owned";
/// Challenge commands sent to the owning node, by outcome.
pub const CLUSTER_FORWARDED: &str = "otpd_cluster_forwarded_total";
/// Round trip of a forwarded challenge command.
pub const CLUSTER_FORWARD_DURATION: &str = "otpd_cluster_forward_duration_seconds";
/// Challenge commands this node ran for other nodes.
pub const CLUSTER_SERVED: &str = "otpd_cluster_served_total";
/// Requests from the cluster link this node refused (not authentic, or replays).
pub const CLUSTER_REFUSED: &str = "otpd_cluster_refused_total";

/// A metric's type, as Prometheus names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One entry of the metric catalogue.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names (values are bounded; see the module doc).
    pub labels: &'static [&'static str],
    /// Upper bounds of a histogram's buckets (empty for other kinds).
    pub buckets: &'static [f64],
    /// The `# HELP` line, and the catalogue's meaning column.
    pub help: &'static str,
}

impl MetricDef {
    const fn counter(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Self {
        MetricDef { name, kind: Kind::Counter, labels, buckets: &[], help }
    }

    const fn gauge(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Self {
        MetricDef { name, kind: Kind::Gauge, labels, buckets: &[], help }
    }

    const fn histogram(
        name: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
        help: &'static str,
    ) -> Self {
        MetricDef { name, kind: Kind::Histogram, labels, buckets, help }
    }
}

/// Latencies from 10 µs to 10 s: in-process work takes microseconds, a store commit a few
/// hundred, so the low buckets are fine-grained.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Provider calls: a local gateway answers in a millisecond, Twilio in tens to hundreds.
pub const PROVIDER_BUCKETS: &[f64] =
    &[0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Time to a delivered receipt: carriers take from a second to minutes.
pub const RECEIPT_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Batch sizes (messages, records): powers of two.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Every metric the engine records.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(
        OTP_CODES_ISSUED,
        &["purpose", "channel"],
        "One-time codes handed to delivery, by purpose (register, login) and channel (sms, email); decoys for unknown identifiers are not counted here",
    ),
    MetricDef::counter(
        OTP_VERIFICATIONS,
        &["purpose", "outcome"],
        "Codes checked against a challenge, by purpose and verdict: ok, wrong, expired, blocked, used (already verified), unknown (no code pending)",
    ),
    MetricDef::counter(OTP_RESENDS, &["purpose"], "Codes issued by POST /v1/otp/resend, by purpose"),
    MetricDef::counter(
        OTP_ENUMERATION_SAFE,
        &["api"],
        "Answers that look like a real one but hide that the account or device does not exist (or, for register, already exists), by API",
    ),
    MetricDef::gauge(
        CHALLENGES_LIVE,
        &["shard"],
        "Challenges (codes and device-login nonces) held in memory by each shard, including answered and expired ones awaiting reclaim",
    ),
    MetricDef::gauge(CHALLENGES_PENDING, &[], "Challenges that can still be answered (pending), all shards together"),
    MetricDef::counter(
        LIMITER_DECISIONS,
        &["action", "rule", "outcome"],
        "Limiter decisions by action (send, verify), deciding rule (none when allowed) and outcome (allowed, denied, error)",
    ),
    MetricDef::histogram(
        LIMITER_DURATION,
        &[],
        LATENCY_BUCKETS,
        "Time to get a limiter decision, in seconds (a Redis round trip with the distributed limiter)",
    ),
    MetricDef::counter(
        SMS_SPEND,
        &["country"],
        "What the SMS spend budget counted for the sends it let through (with or without an account behind the number), by country calling code, in 1/10 000 of the price list's currency (docs/limits.md)",
    ),
    MetricDef::counter(
        SMS_CODES,
        &["country", "event"],
        "SMS codes by country calling code and event: sent (let through by the limits, with or without an account behind the number) and verified; verified / sent is the conversion the conversion guard judges (docs/limits.md)",
    ),
    MetricDef::gauge(
        SMS_BUDGET_USED,
        &["scope"],
        "Share of each daily SMS budget spent today (UTC), by scope: all, or a country calling code; as of this node's latest SMS send (with Redis, the total of every node), and 0 once its day has ended",
    ),
    MetricDef::gauge(
        LIMITER_REDIS_FALLBACK,
        &[],
        "1 while the Redis limiter is unreachable and decisions fall back to the in-process limiter; 0 otherwise (always 0 without Redis)",
    ),
    MetricDef::gauge(
        DELIVERY_QUEUE_DEPTH,
        &[],
        "Messages accepted by the dispatcher and not yet delivered, given up or expired",
    ),
    MetricDef::gauge(
        DELIVERY_QUEUE_CAPACITY,
        &[],
        "delivery.queue_capacity: queue depth at which sends are refused with 503",
    ),
    MetricDef::counter(
        DELIVERY_ENQUEUED,
        &["result"],
        "Messages offered to the dispatcher: accepted, or refused because the queue was full (the API answered 503 delivery_busy)",
    ),
    MetricDef::counter(
        DELIVERY_MESSAGES,
        &["channel", "outcome"],
        "Final outcomes of accepted messages by channel: delivered (a provider took it), given_up, expired",
    ),
    MetricDef::histogram(DELIVERY_BATCH_SIZE, &["provider"], BATCH_BUCKETS, "Messages per provider call"),
    MetricDef::counter(
        DELIVERY_SENDS,
        &["provider", "outcome"],
        "Per-message results of provider calls: delivered, failed (retryable: the provider's fault), rejected (refused for good)",
    ),
    MetricDef::counter(
        DELIVERY_RETRIES,
        &["provider"],
        "Messages sent again after an earlier attempt failed, by the provider retried on",
    ),
    MetricDef::counter(
        DELIVERY_FAILOVERS,
        &["provider"],
        "Messages routed to a provider other than their channel's primary, by the provider that took them",
    ),
    MetricDef::histogram(
        DELIVERY_PROVIDER_DURATION,
        &["provider"],
        PROVIDER_BUCKETS,
        "Duration of provider calls (one batch, or one message for Twilio), in seconds, timeouts included",
    ),
    MetricDef::gauge(
        DELIVERY_BREAKER_STATE,
        &["provider", "state"],
        "Circuit breaker of each provider, one-hot: 1 for its current state (closed, half_open, open), 0 for the others",
    ),
    MetricDef::counter(DELIVERY_BREAKER_OPENED, &["provider"], "Times a provider's circuit breaker opened"),
    MetricDef::counter(
        DELIVERY_RECEIPTS,
        &["provider", "channel", "country", "status"],
        "Delivery receipts of providers that report them, by country calling code (`email` for e-mail): accepted, sent, delivered, undelivered, failed; delivered / all final ones is the delivery rate",
    ),
    MetricDef::histogram(
        DELIVERY_TIME_TO_DELIVERED,
        &["provider", "channel"],
        RECEIPT_BUCKETS,
        "From a provider taking a message to its delivered receipt, in seconds",
    ),
    MetricDef::counter(
        DELIVERY_RECEIPT_FAILOVERS,
        &["reason"],
        "Codes sent again on the next route after a receipt said undelivered or failed, or none came in delivery.receipt_timeout (no_receipt)",
    ),
    MetricDef::histogram(
        STORE_DURATION,
        &["store", "operation"],
        LATENCY_BUCKETS,
        "Duration of store port calls, in seconds, by store (embedded, ...) and operation; writes include their durable commit",
    ),
    MetricDef::counter(
        STORE_ERRORS,
        &["store", "operation", "kind"],
        "Store port calls that failed, by store, operation and kind (unavailable, corrupt)",
    ),
    MetricDef::counter(
        TOKENS_ISSUED,
        &["method"],
        "Sessions opened with a new access and refresh token, by login method (otp, device, passkey)",
    ),
    MetricDef::counter(
        TOKENS_REFRESHED,
        &["outcome"],
        "Refresh-token presentations: ok (rotated), reused (a retired token: the session was revoked), invalid",
    ),
    MetricDef::counter(
        SESSIONS_REVOKED,
        &["reason"],
        "Sessions revoked, by reason: logout, logout_all, refresh_token_reuse, device_revoked, passkey_deleted",
    ),
    MetricDef::counter(
        DEVICE_LOGINS,
        &["outcome"],
        "Device-login answers (signature over a nonce), by verdict: ok, wrong, expired, blocked, used, unknown",
    ),
    MetricDef::counter(
        ACTOR_RESTARTS,
        &["actor"],
        "Actors restarted by the engine's supervisor after a failure, by kind (shard, dispatcher)",
    ),
    MetricDef::gauge(
        CLUSTER_MEMBERS,
        &[],
        "Live cluster members this node sees, itself included (1 when clustering is off)",
    ),
    MetricDef::gauge(
        CLUSTER_PARTITIONS_OWNED,
        &[],
        "Identifier partitions (of 1024) this node owns by rendezvous hashing over the live members",
    ),
    MetricDef::counter(
        CLUSTER_FORWARDED,
        &["outcome"],
        "Challenge commands forwarded to the node that owns the identifier, by outcome: ok, unreachable (timeout or owner gone: 503), error (the owner answered with a failure), refused (the owner's answer did not authenticate, or the owner refused the request as not authentic: the nodes' cookie or hash key differ, or someone altered the link)",
    ),
    MetricDef::histogram(
        CLUSTER_FORWARD_DURATION,
        &[],
        LATENCY_BUCKETS,
        "Round trip of a challenge command forwarded to its owner, in seconds",
    ),
    MetricDef::counter(CLUSTER_SERVED, &[], "Challenge commands this node ran on behalf of other nodes"),
    MetricDef::counter(
        CLUSTER_REFUSED,
        &[],
        "Requests from the cluster link this node refused: their tag did not verify (another cookie or hash key, or altered on the way) or they replayed an earlier request",
    ),
];

/// Registers the `# HELP` text of every metric in `catalogue` with the installed recorder.
pub fn describe(catalogue: &[MetricDef]) {
    for def in catalogue {
        match def.kind {
            Kind::Counter => metrics::describe_counter!(def.name, def.help),
            Kind::Gauge => metrics::describe_gauge!(def.name, def.help),
            Kind::Histogram => metrics::describe_histogram!(def.name, def.help),
        }
    }
}

/// Sets [`LIMITER_REDIS_FALLBACK`]: the Redis limiter calls this when it falls back to the
/// in-process limiter (`true`) and when Redis answers again (`false`).
pub fn set_redis_fallback_active(active: bool) {
    gauge!(LIMITER_REDIS_FALLBACK).set(if active { 1.0 } else { 0.0 });
}

/// The per-country SMS series ([`SMS_SPEND`], [`SMS_CODES`], [`SMS_BUDGET_USED`]), each
/// registered on its first use and kept, so that a send bumps an atomic instead of building a
/// label set and looking it up (that was ~2 % of a send's CPU). Registered lazily rather than
/// up front: a thousand calling codes times four series would flood the exposition with
/// countries the node never sends to. Held by whoever records (the engine, a limiter), so that
/// the handles belong to the recorder installed when that was built.
pub struct SmsSeries {
    /// Indexed by scope: 0 is the budget total (`all`), 1-999 a calling code, and the last slot
    /// any other code (none exists), labelled "0" as [`country_label`] labels it.
    by_scope: Box<[ScopeSeries]>,
}

#[derive(Default)]
struct ScopeSeries {
    spend: OnceLock<Counter>,
    codes: [OnceLock<Counter>; 2],
    budget_used: OnceLock<Gauge>,
}

/// What [`SmsSeries::code`] counts, the `event` label of [`SMS_CODES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeEvent {
    Sent = 0,
    Verified = 1,
}

impl CodeEvent {
    fn as_str(self) -> &'static str {
        match self {
            CodeEvent::Sent => "sent",
            CodeEvent::Verified => "verified",
        }
    }
}

impl Default for SmsSeries {
    fn default() -> Self {
        SmsSeries { by_scope: (0..=1000).map(|_| ScopeSeries::default()).collect() }
    }
}

impl SmsSeries {
    fn slot(&self, scope: u16) -> &ScopeSeries {
        &self.by_scope[usize::from(scope.min(1000))]
    }

    /// After a limiter let an SMS send to `country` through: counts its cost ([`SMS_SPEND`])
    /// and, for each `(i, total)` of `spent` (today's total of the budget `checks[i]` counts
    /// against), sets [`SMS_BUDGET_USED`]. Nothing when no budget is on.
    pub fn spent(&self, country: u16, checks: &[Check], spent: &[(usize, Money)]) {
        let Some(cost) = checks.iter().find_map(|c| match c.kind {
            CheckKind::Spend(s) => Some(s.cost),
            _ => None,
        }) else {
            return;
        };
        let spend = &self.slot(country).spend;
        spend.get_or_init(|| counter!(SMS_SPEND, "country" => country_label(country))).increment(cost);
        for &(i, total) in spent {
            if let Some(Check { kind: CheckKind::Spend(s), subject, .. }) = checks.get(i) {
                let scope = if *subject == Subject::Everywhere { 0 } else { country };
                BUDGET_DAY_END.fetch_max(s.ends_at.as_millis(), Ordering::Relaxed);
                let used = &self.slot(scope).budget_used;
                used.get_or_init(|| gauge!(SMS_BUDGET_USED, "scope" => scope_label(scope)))
                    .set(total as f64 / s.budget.max(1) as f64);
                if let Some(set) = BUDGET_SCOPES.get(usize::from(scope)) {
                    set.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counts an SMS code `event` for the country `country` ([`SMS_CODES`]).
    pub fn code(&self, country: u16, event: CodeEvent) {
        let series = &self.slot(country).codes[event as usize];
        series
            .get_or_init(|| counter!(SMS_CODES, "country" => country_label(country), "event" => event.as_str()))
            .increment(1);
    }
}

/// The label values of calling codes, made once, so that a send allocates none.
static CALLING_CODES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (0..1000u16).map(|c| c.to_string()).collect());

/// A calling code (1-999) as a label value.
fn country_label(code: u16) -> &'static str {
    CALLING_CODES.get(usize::from(code)).map_or("0", String::as_str)
}

/// A [`SMS_BUDGET_USED`] scope as a label value: 0 is the total (`all`), else a calling code.
fn scope_label(scope: u16) -> &'static str {
    if scope == 0 { "all" } else { country_label(scope) }
}

/// Which scopes of [`SMS_BUDGET_USED`] hold a share (index as [`scope_label`]), and the end of
/// the day those shares belong to: every budget's day is the same UTC day.
static BUDGET_SCOPES: [AtomicBool; 1000] = [const { AtomicBool::new(false) }; 1000];
static BUDGET_DAY_END: AtomicU64 = AtomicU64::new(0);

/// Sets [`SMS_BUDGET_USED`] to 0 for every scope once its day has ended: a new day has spent
/// nothing until its first send, and yesterday's share must not keep an alert firing all night.
/// Called with the periodic refresh of the gauges.
pub fn end_budget_days(now: Timestamp) {
    let ends_at = BUDGET_DAY_END.load(Ordering::Relaxed);
    if ends_at == 0 || ends_at > now.as_millis() {
        return;
    }
    for (scope, set) in (0u16..).zip(&BUDGET_SCOPES) {
        if set.swap(false, Ordering::Relaxed) {
            gauge!(SMS_BUDGET_USED, "scope" => scope_label(scope)).set(0.0);
        }
    }
}

/// Counts an actor restart by the supervisor (`shard`, `dispatcher`).
pub(crate) fn actor_restarted(actor: &'static str) {
    counter!(ACTOR_RESTARTS, "actor" => actor).increment(1);
}

/// A counter exported to Prometheus that the node can also read back (for the admin stats).
pub(crate) struct Tally {
    local: AtomicU64,
    exported: Counter,
}

impl Tally {
    fn new(exported: Counter) -> Self {
        Tally { local: AtomicU64::new(0), exported }
    }

    pub(crate) fn add(&self, n: u64) {
        self.local.fetch_add(n, Ordering::Relaxed);
        self.exported.increment(n);
    }

    fn get(&self) -> u64 {
        self.local.load(Ordering::Relaxed)
    }
}

/// Code purposes that are delivered (device-login nonces never are).
const PURPOSES: [Purpose; 2] = [Purpose::Register, Purpose::Login];
const CHANNELS: [Channel; 2] = [Channel::Sms, Channel::Email];
const VERDICTS: [&str; 6] = ["ok", "wrong", "expired", "blocked", "used", "unknown"];
const ENUMERATION_SAFE_APIS: [Api; 5] =
    [Api::Register, Api::Login, Api::OtpResend, Api::DeviceChallenge, Api::DeviceVerify];
const ACTIONS: [&str; 2] = ["send", "verify"];
const REFRESH_OUTCOMES: [&str; 3] = ["ok", "reused", "invalid"];
const REVOKE_REASONS: [RevokeReason; 5] = [
    RevokeReason::Logout,
    RevokeReason::LogoutAll,
    RevokeReason::RefreshTokenReuse,
    RevokeReason::DeviceRevoked,
    RevokeReason::PasskeyDeleted,
];

fn purpose_index(purpose: Purpose) -> Option<usize> {
    PURPOSES.iter().position(|p| *p == purpose)
}

fn channel_index(channel: Channel) -> usize {
    match channel {
        Channel::Sms => 0,
        Channel::Email => 1,
    }
}

fn verdict_index(outcome: &VerifyOutcome) -> usize {
    match outcome {
        VerifyOutcome::Verified => 0,
        VerifyOutcome::Wrong { .. } => 1,
        VerifyOutcome::Expired => 2,
        VerifyOutcome::Blocked => 3,
        VerifyOutcome::AlreadyUsed => 4,
        VerifyOutcome::NoChallenge => 5,
    }
}

/// A resend is a send as far as limits are concerned (`otpd_otp_resends_total` counts them).
fn action_index(action: LimitAction) -> usize {
    match action {
        LimitAction::Send(_) | LimitAction::Resend(_) | LimitAction::Failover(_) | LimitAction::Challenge => 0,
        LimitAction::Verify(_) => 1,
    }
}

/// The engine's handles, registered when it starts.
pub(crate) struct EngineMetrics {
    issued: [[Tally; 2]; 2],
    resends: [Tally; 2],
    verifications: [[Tally; 6]; 2],
    enumeration_safe: [Tally; 5],
    limiter_allowed: [Counter; 2],
    limiter_duration: Histogram,
    tokens_issued: [Counter; 3],
    refreshed: [Counter; 3],
    revoked: [Counter; REVOKE_REASONS.len()],
    device_logins: [Counter; 6],
    challenges_live: Vec<Gauge>,
    challenges_pending: Gauge,
    pub(crate) sms: SmsSeries,
}

impl EngineMetrics {
    pub(crate) fn new(shards: usize) -> Self {
        let purpose = |i: usize| PURPOSES[i].as_str();
        // Registered at zero so that a rate over the first events is right and every series
        // exists from the start; the restart counters live in the supervisor.
        for actor in ["shard", "dispatcher"] {
            let _ = counter!(ACTOR_RESTARTS, "actor" => actor);
        }
        EngineMetrics {
            issued: std::array::from_fn(|p| {
                std::array::from_fn(|c| {
                    Tally::new(counter!(OTP_CODES_ISSUED, "purpose" => purpose(p), "channel" => CHANNELS[c].as_str()))
                })
            }),
            resends: std::array::from_fn(|p| Tally::new(counter!(OTP_RESENDS, "purpose" => purpose(p)))),
            verifications: std::array::from_fn(|p| {
                std::array::from_fn(|v| {
                    Tally::new(counter!(OTP_VERIFICATIONS, "purpose" => purpose(p), "outcome" => VERDICTS[v]))
                })
            }),
            enumeration_safe: std::array::from_fn(|a| {
                Tally::new(counter!(OTP_ENUMERATION_SAFE, "api" => ENUMERATION_SAFE_APIS[a].as_str()))
            }),
            limiter_allowed: std::array::from_fn(
                |a| counter!(LIMITER_DECISIONS, "action" => ACTIONS[a], "rule" => "none", "outcome" => "allowed"),
            ),
            limiter_duration: histogram!(LIMITER_DURATION),
            tokens_issued: [AuthMethod::Otp.as_str(), "device", AuthMethod::PasskeyUnnamed.as_str()]
                .map(|m| counter!(TOKENS_ISSUED, "method" => m)),
            refreshed: REFRESH_OUTCOMES.map(|o| counter!(TOKENS_REFRESHED, "outcome" => o)),
            revoked: REVOKE_REASONS.map(|r| counter!(SESSIONS_REVOKED, "reason" => r.as_str())),
            device_logins: VERDICTS.map(|v| counter!(DEVICE_LOGINS, "outcome" => v)),
            challenges_live: (0..shards).map(|i| gauge!(CHALLENGES_LIVE, "shard" => i.to_string())).collect(),
            challenges_pending: gauge!(CHALLENGES_PENDING),
            sms: SmsSeries::default(),
        }
    }

    /// A code was handed to delivery.
    pub(crate) fn code_issued(&self, purpose: Purpose, channel: Channel, resend: bool) {
        let Some(p) = purpose_index(purpose) else { return };
        self.issued[p][channel_index(channel)].add(1);
        if resend {
            self.resends[p].add(1);
        }
    }

    /// A shard's verdict on a typed code.
    pub(crate) fn verification(&self, purpose: Purpose, outcome: &VerifyOutcome) {
        if let Some(p) = purpose_index(purpose) {
            self.verifications[p][verdict_index(outcome)].add(1);
        }
    }

    /// A shard's verdict on a device-login answer.
    pub(crate) fn device_login(&self, outcome: &VerifyOutcome) {
        self.device_logins[verdict_index(outcome)].increment(1);
    }

    /// An answer that hides whether an account or device exists.
    pub(crate) fn enumeration_safe(&self, api: Api) {
        if let Some(a) = ENUMERATION_SAFE_APIS.iter().position(|x| *x == api) {
            self.enumeration_safe[a].add(1);
        }
    }

    /// A limiter decision and how long it took.
    pub(crate) fn limit(&self, action: LimitAction, decision: &Result<Decision, LimiterError>, took: Duration) {
        self.limiter_duration.record(took.as_secs_f64());
        let a = action_index(action);
        match decision {
            Ok(Decision::Allow) => self.limiter_allowed[a].increment(1),
            Ok(Decision::Deny { rule, .. }) => {
                counter!(LIMITER_DECISIONS, "action" => ACTIONS[a], "rule" => rule.as_str(), "outcome" => "denied")
                    .increment(1)
            }
            Err(_) => {
                counter!(LIMITER_DECISIONS, "action" => ACTIONS[a], "rule" => "none", "outcome" => "error").increment(1)
            }
        }
    }

    /// A session was opened (an access and a refresh token issued).
    pub(crate) fn tokens_issued(&self, method: AuthMethod) {
        let m = match method {
            AuthMethod::Otp => 0,
            AuthMethod::Device(_) => 1,
            AuthMethod::PasskeyUnnamed | AuthMethod::Passkey(_) => 2,
        };
        self.tokens_issued[m].increment(1);
    }

    /// A refresh-token presentation: `Ok` rotated; `reused`; otherwise invalid.
    pub(crate) fn refreshed(&self, outcome: RefreshOutcome) {
        self.refreshed[outcome as usize].increment(1);
    }

    /// `n` sessions were revoked for `reason`.
    pub(crate) fn sessions_revoked(&self, reason: RevokeReason, n: usize) {
        if let Some(r) = REVOKE_REASONS.iter().position(|x| *x == reason) {
            self.revoked[r].increment(n as u64);
        }
    }

    /// Sets the live-challenge gauges from the shards' stats: `(shard index, live challenges)`
    /// of each shard that answered, and the pending challenges of them all.
    pub(crate) fn challenges(&self, live: impl IntoIterator<Item = (usize, usize)>, pending: usize) {
        for (index, challenges) in live {
            if let Some(g) = self.challenges_live.get(index) {
                g.set(challenges as f64);
            }
        }
        self.challenges_pending.set(pending as f64);
    }

    /// The OTP counters since the engine started.
    pub(crate) fn otp_stats(&self) -> OtpStats {
        let mut out = OtpStats::default();
        for (p, purpose) in PURPOSES.iter().enumerate() {
            let issued = out.issued.entry(purpose.as_str()).or_default();
            for (c, channel) in CHANNELS.iter().enumerate() {
                issued.insert(channel.as_str(), self.issued[p][c].get());
            }
            out.resends.insert(purpose.as_str(), self.resends[p].get());
            let verdicts = out.verifications.entry(purpose.as_str()).or_default();
            for (v, verdict) in VERDICTS.iter().enumerate() {
                verdicts.insert(verdict, self.verifications[p][v].get());
            }
        }
        for (a, api) in ENUMERATION_SAFE_APIS.iter().enumerate() {
            out.enumeration_safe.insert(api.as_str(), self.enumeration_safe[a].get());
        }
        out
    }
}

/// The dispatcher's handles (one per node), beside its own counters in `dispatch::Shared`.
pub(crate) struct DeliveryMetrics {
    queue_depth: Gauge,
    accepted: Counter,
    refused: Counter,
    /// channel × (delivered, given_up, expired)
    outcomes: [[Counter; 3]; 2],
}

/// A final outcome of a message, for [`DELIVERY_MESSAGES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MessageOutcome {
    Delivered = 0,
    GivenUp = 1,
    Expired = 2,
}

impl DeliveryMetrics {
    pub(crate) fn new(queue_capacity: usize) -> Self {
        gauge!(DELIVERY_QUEUE_CAPACITY).set(queue_capacity as f64);
        let outcome = ["delivered", "given_up", "expired"];
        DeliveryMetrics {
            queue_depth: gauge!(DELIVERY_QUEUE_DEPTH),
            accepted: counter!(DELIVERY_ENQUEUED, "result" => "accepted"),
            refused: counter!(DELIVERY_ENQUEUED, "result" => "refused"),
            outcomes: CHANNELS
                .map(|c| outcome.map(|o| counter!(DELIVERY_MESSAGES, "channel" => c.as_str(), "outcome" => o))),
        }
    }

    pub(crate) fn enqueued(&self, accepted: bool) {
        if accepted {
            self.accepted.increment(1);
            self.queue_depth.increment(1.0);
        } else {
            self.refused.increment(1);
        }
    }

    /// A rehearsal ([`crate::ports::Notifier::rehearse`]): the queue-depth gauge moves as for a
    /// message taken and back, so it costs what `enqueued` does and counts nothing.
    pub(crate) fn rehearsed(&self) {
        self.queue_depth.increment(1.0);
        self.queue_depth.decrement(1.0);
    }

    pub(crate) fn finished(&self, channel: Channel, outcome: MessageOutcome) {
        self.outcomes[channel_index(channel)][outcome as usize].increment(1);
        self.queue_depth.decrement(1.0);
    }
}

/// A per-message result of a provider call, for [`DELIVERY_SENDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    Delivered = 0,
    /// Retryable: the provider's fault.
    Failed = 1,
    /// Refused for good.
    Rejected = 2,
}

/// A delivery receipt of `provider` about a message to `to`.
pub fn delivery_receipt(provider: &str, to: &Identifier, status: ReceiptStatus) {
    let (channel, country) = match to {
        Identifier::Phone { country_code, .. } => ("sms", country_label(*country_code)),
        Identifier::Email(_) => ("email", "email"),
    };
    counter!(DELIVERY_RECEIPTS, "provider" => provider.to_owned(), "channel" => channel, "country" => country, "status" => status.as_str())
        .increment(1);
}

pub fn time_to_delivered(provider: &str, channel: Channel, took: Duration) {
    histogram!(DELIVERY_TIME_TO_DELIVERED, "provider" => provider.to_owned(), "channel" => channel.as_str())
        .record(took.as_secs_f64());
}

/// Registers [`DELIVERY_RECEIPT_FAILOVERS`] at zero for every reason (when a provider reports
/// receipts), so a rate over it exists before the first failover.
pub fn register_receipt_failovers() {
    for reason in FailoverReason::ALL {
        counter!(DELIVERY_RECEIPT_FAILOVERS, "reason" => reason.as_str()).increment(0);
    }
}

pub fn receipt_failover(reason: FailoverReason) {
    counter!(DELIVERY_RECEIPT_FAILOVERS, "reason" => reason.as_str()).increment(1);
}

/// Label values of [`DELIVERY_SENDS`], indexed by [`SendOutcome`].
const SEND_OUTCOMES: [&str; 3] = ["delivered", "failed", "rejected"];
const BREAKER_STATES: [BreakerState; 3] = [BreakerState::Closed, BreakerState::HalfOpen, BreakerState::Open];

/// One provider's handles.
pub(crate) struct LaneMetrics {
    batch_size: Histogram,
    /// delivered, failed, rejected
    sends: [Counter; 3],
    retries: Counter,
    failovers: Counter,
    duration: Histogram,
    breaker_opened: Counter,
    breaker_state: [Gauge; 3],
    /// Duration of the latest call, in µs (`u64::MAX` before the first): readiness shows it.
    last_call_micros: AtomicU64,
}

impl LaneMetrics {
    pub(crate) fn new(provider: &str) -> Self {
        let p = provider.to_owned();
        LaneMetrics {
            batch_size: histogram!(DELIVERY_BATCH_SIZE, "provider" => p.clone()),
            sends: SEND_OUTCOMES.map(|o| counter!(DELIVERY_SENDS, "provider" => p.clone(), "outcome" => o)),
            retries: counter!(DELIVERY_RETRIES, "provider" => p.clone()),
            failovers: counter!(DELIVERY_FAILOVERS, "provider" => p.clone()),
            duration: histogram!(DELIVERY_PROVIDER_DURATION, "provider" => p.clone()),
            breaker_opened: counter!(DELIVERY_BREAKER_OPENED, "provider" => p.clone()),
            breaker_state: BREAKER_STATES
                .map(|s| gauge!(DELIVERY_BREAKER_STATE, "provider" => p.clone(), "state" => s.as_str())),
            last_call_micros: AtomicU64::new(u64::MAX),
        }
    }

    /// A call of `messages` deliveries left, `retries` of them not for the first time.
    pub(crate) fn call_started(&self, messages: u64, retries: u64) {
        self.batch_size.record(messages as f64);
        self.retries.increment(retries);
    }

    /// A call ended after `took`.
    pub(crate) fn call_took(&self, took: Duration) {
        self.duration.record(took.as_secs_f64());
        self.last_call_micros.store(took.as_micros().min(u128::from(u64::MAX - 1)) as u64, Ordering::Relaxed);
    }

    /// One message's result within a call.
    pub(crate) fn send(&self, outcome: SendOutcome) {
        self.sends[outcome as usize].increment(1);
    }

    pub(crate) fn failover(&self) {
        self.failovers.increment(1);
    }

    pub(crate) fn breaker_opened(&self) {
        self.breaker_opened.increment(1);
    }

    /// Sets the one-hot breaker gauges (called periodically).
    pub(crate) fn breaker(&self, state: BreakerState) {
        for (g, s) in self.breaker_state.iter().zip(BREAKER_STATES) {
            g.set(if s == state { 1.0 } else { 0.0 });
        }
    }

    /// Duration of the latest call, if any.
    pub(crate) fn last_call(&self) -> Option<Duration> {
        let micros = self.last_call_micros.load(Ordering::Relaxed);
        (micros != u64::MAX).then(|| Duration::from_micros(micros))
    }
}

/// How a refresh-token presentation ended, for [`TOKENS_REFRESHED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshOutcome {
    Ok = 0,
    Reused = 1,
    Invalid = 2,
}

/// One-time-code counters since the engine started (the admin stats endpoint shows them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtpStats {
    /// Codes handed to delivery: purpose → channel → count.
    pub issued: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Codes issued by resend, per purpose.
    pub resends: BTreeMap<&'static str, u64>,
    /// Verdicts on typed codes: purpose → verdict (`ok`, `wrong`, …) → count.
    pub verifications: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Enumeration-safe answers, per API.
    pub enumeration_safe: BTreeMap<&'static str, u64>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metrics::{Key, KeyName, Metadata, Recorder, SharedString, Unit};

    use super::*;
    use crate::rules::limits::{LimitRule, Spend};

    /// Keeps the last value of each gauge it is given.
    #[derive(Default)]
    struct Gauges(Arc<parking_lot::Mutex<BTreeMap<String, f64>>>);

    struct OneGauge(String, Arc<parking_lot::Mutex<BTreeMap<String, f64>>>);

    impl metrics::GaugeFn for OneGauge {
        fn increment(&self, v: f64) {
            *self.1.lock().entry(self.0.clone()).or_default() += v;
        }
        fn decrement(&self, v: f64) {
            *self.1.lock().entry(self.0.clone()).or_default() -= v;
        }
        fn set(&self, v: f64) {
            self.1.lock().insert(self.0.clone(), v);
        }
    }

    impl Recorder for Gauges {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> metrics::Gauge {
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            metrics::Gauge::from_arc(Arc::new(OneGauge(name, self.0.clone())))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn a_budgets_share_goes_back_to_zero_when_its_day_ends() {
        let gauges = Gauges::default();
        let values = gauges.0.clone();
        // Far ahead of any day another test of this process spends in (the day is global).
        let midnight = Timestamp::from_millis(4_102_444_800_000); // 2100-01-01T00:00:00Z
        let spend = Spend { budget: 1_000, cost: 100, ends_at: midnight };
        let checks = [
            Check { rule: LimitRule::SmsBudget, subject: Subject::Everywhere, kind: CheckKind::Spend(spend) },
            Check { rule: LimitRule::SmsBudget, subject: Subject::Country(44), kind: CheckKind::Spend(spend) },
        ];
        let all = format!("{SMS_BUDGET_USED}{{scope=all}}");
        let uk = format!("{SMS_BUDGET_USED}{{scope=44}}");
        let read = || {
            let v = values.lock();
            (v[&all], v[&uk])
        };
        metrics::with_local_recorder(&gauges, || {
            let series = SmsSeries::default();
            series.spent(44, &checks, &[(0, 900), (1, 500)]);
            series.spent(44, &checks, &[(0, 950), (1, 600)]);
            assert_eq!(read(), (0.95, 0.6), "a kept handle sets the same series");
            end_budget_days(Timestamp::from_millis(midnight.as_millis() - 1));
            assert_eq!(read(), (0.95, 0.6), "the day is not over");
            end_budget_days(midnight);
            assert_eq!(read(), (0.0, 0.0), "a new day has spent nothing");
        });
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for def in CATALOGUE {
            assert!(seen.insert(def.name), "{} listed twice", def.name);
            assert!(def.name.starts_with("otpd_"), "{}", def.name);
            assert!(
                def.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                def.name
            );
            assert_eq!(
                def.kind == Kind::Counter,
                def.name.ends_with("_total"),
                "{}: only counters end in _total",
                def.name
            );
            if def.kind == Kind::Histogram {
                assert!(!def.buckets.is_empty() && def.buckets.is_sorted(), "{}: buckets", def.name);
            } else {
                assert!(def.buckets.is_empty(), "{}", def.name);
            }
            assert!(!def.help.is_empty());
            for label in def.labels {
                assert!(!["le", "quantile", "trace_id", "identifier", "phone", "email", "ip"].contains(label));
            }
        }
    }

    #[test]
    fn label_tables_match_the_enums_they_index() {
        assert_eq!(verdict_index(&VerifyOutcome::Verified), 0);
        assert_eq!(VERDICTS[verdict_index(&VerifyOutcome::NoChallenge)], "unknown");
        assert_eq!(VERDICTS[verdict_index(&VerifyOutcome::AlreadyUsed)], "used");
        assert_eq!(REFRESH_OUTCOMES[RefreshOutcome::Reused as usize], "reused");
        assert_eq!(purpose_index(Purpose::DeviceLogin), None);
        assert_eq!(CHANNELS[channel_index(Channel::Email)], Channel::Email);
    }
}
