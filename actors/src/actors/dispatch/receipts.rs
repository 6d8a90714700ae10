//! Delivery receipts: what happens to a message after a provider took it.
//!
//! A provider that reports receipts ([`super::Provider::receipts`]: Twilio with a status
//! callback URL, the webhook with a receipt secret) has each message it took *watched* until
//! the phone has it, or until its code expires. The front end hands every authentic report to
//! [`super::DispatchHandle::receipt`]:
//!
//! | report | what follows |
//! | --- | --- |
//! | `accepted`, `sent` | noted; still watched |
//! | `delivered` | the watch ends: audited (`receipt_delivered`), time to delivered measured |
//! | `undelivered`, `failed` | audited (`receipt_failed`, with the provider's error code); failover |
//! | nothing `delivered` within `delivery.receipt_timeout` | failover, reason `no_receipt` |
//! | a report for no watched message (unknown, expired, already final) | ignored |
//!
//! **Failover** sends the same code again through the next provider of its channel's route
//! that has not carried it yet, at most once per provider, never once the code has expired,
//! and only if the engine's gate allows it (the limits and SMS budget count it like a send,
//! [`FailoverGate`]). The new send is a new message in the ledger (queue bound, retries,
//! breakers, audit as any), which is watched again if its provider reports receipts.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use uuid::Uuid;

use super::dispatcher::bit;
use super::ledger::Entry;
use super::shared::{DispatcherMsg, Shared, route_index};
use crate::ports::{AuditEvent, OutboundMessage};
use crate::rules::audit::{Api, AuditOutcome, Step};
use crate::rules::clock::Timestamp;

/// A provider's report about one message, in the words every provider maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiptStatus {
    /// The provider has it and has not sent it yet (`queued`, `accepted`, `sending`).
    Accepted,
    /// Handed to the carrier.
    Sent,
    /// The handset has it.
    Delivered,
    /// The carrier could not deliver it.
    Undelivered,
    /// The provider could not send it.
    Failed,
}

impl ReceiptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptStatus::Accepted => "accepted",
            ReceiptStatus::Sent => "sent",
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Undelivered => "undelivered",
            ReceiptStatus::Failed => "failed",
        }
    }
}

/// Why a code was sent again on another route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailoverReason {
    Undelivered,
    Failed,
    NoReceipt,
}

impl FailoverReason {
    pub const ALL: [FailoverReason; 3] =
        [FailoverReason::Undelivered, FailoverReason::Failed, FailoverReason::NoReceipt];

    pub fn as_str(self) -> &'static str {
        match self {
            FailoverReason::Undelivered => "undelivered",
            FailoverReason::Failed => "failed",
            FailoverReason::NoReceipt => "no_receipt",
        }
    }
}

/// What a report did (the callback endpoints answer the same whatever it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptAnswer {
    /// No watched message has this id (for this provider): ignored.
    Ignored,
    /// Noted; the message is still watched.
    Noted,
    /// The handset has it: the watch ended.
    Delivered,
    /// Sent again on another route.
    FailedOver,
    /// Reported as not delivered, and no route is left (or the code expired, or the gate
    /// refused): the watch ended.
    Ended,
}

/// Whether the code of `message` may be sent once more through another route: the engine
/// counts it against the same limits and SMS budget as a send.
#[async_trait]
pub trait FailoverGate: Send + Sync + 'static {
    async fn allow(&self, message: &OutboundMessage, now: Timestamp) -> bool;
}

/// A gate that allows every failover (the dispatcher's default, and tests').
pub struct AllowAll;

#[async_trait]
impl FailoverGate for AllowAll {
    async fn allow(&self, _: &OutboundMessage, _: Timestamp) -> bool {
        true
    }
}

/// One message a provider took and that is watched for its receipt.
pub(crate) struct Watch {
    pub message: Arc<OutboundMessage>,
    /// The lane that took it.
    pub lane: usize,
    /// Lanes (bit per lane) that carried this code already, this one included.
    pub tried: u64,
    pub accepted_at: Timestamp,
    /// When the missing `delivered` counts as a failure.
    pub deadline: Timestamp,
}

/// The watched messages, by delivery id.
pub(crate) type Watches = rustc_hash::FxHashMap<Uuid, Watch>;

impl Shared {
    /// Starts watching a message as it is handed to `lane`: before the call, so that a report
    /// the provider sends before its own answer has arrived finds it. A call that fails ends
    /// the watch ([`Shared::unwatch`]); its retry starts a new one.
    pub(super) fn watch(&self, entry: &Entry, lane: usize) {
        let now = self.clock.now();
        let expires = entry.message.expires_at;
        let timeout = self.config.receipt_timeout;
        let deadline = if timeout.is_zero() { expires } else { now.plus(timeout).min(expires) };
        let watch =
            Watch { message: entry.message.clone(), lane, tried: entry.tried | bit(lane), accepted_at: now, deadline };
        self.watches.lock().insert(entry.delivery_id, watch);
    }

    /// Stops watching a delivery whose call failed (or whose message ended without a
    /// provider taking it).
    pub(super) fn unwatch(&self, delivery_id: &Uuid) {
        self.watches.lock().remove(delivery_id);
    }

    /// A report about a watched message (see the module doc).
    pub(super) async fn receipt(
        self: &Arc<Self>,
        provider: &str,
        delivery_id: Uuid,
        status: ReceiptStatus,
        error_code: Option<u32>,
    ) -> ReceiptAnswer {
        let now = self.clock.now();
        let watch = {
            let mut watches = self.watches.lock();
            let Some(w) = watches.get(&delivery_id) else { return ReceiptAnswer::Ignored };
            // One callback serves a provider's every way (`twilio`: `twilio_whatsapp`, …).
            let lane = self.lanes[w.lane].name.as_str();
            let from_it = lane == provider || lane.strip_prefix(provider).is_some_and(|r| r.starts_with('_'));
            if !from_it || now >= w.message.expires_at {
                return ReceiptAnswer::Ignored;
            }
            match status {
                ReceiptStatus::Accepted | ReceiptStatus::Sent => {
                    crate::metrics::delivery_receipt(lane, &w.message.to, status);
                    return ReceiptAnswer::Noted;
                }
                _ => watches.remove(&delivery_id).expect("just found"),
            }
        };
        let channel = watch.message.to.channel();
        let provider = self.lanes[watch.lane].name.as_str();
        crate::metrics::delivery_receipt(provider, &watch.message.to, status);
        if status == ReceiptStatus::Delivered {
            crate::metrics::time_to_delivered(provider, channel, now.since(watch.accepted_at));
            let text = format!("{provider} reports it delivered");
            self.spawn_audits(vec![receipt_event(&watch.message, now, Step::ReceiptDelivered, AuditOutcome::Ok, text)]);
            return ReceiptAnswer::Delivered;
        }
        let code = error_code.map(|c| format!(" (error {c})")).unwrap_or_default();
        let text = format!("{provider} reports it {}{code}", status.as_str());
        self.spawn_audits(vec![receipt_event(&watch.message, now, Step::ReceiptFailed, AuditOutcome::Failed, text)]);
        let reason =
            if status == ReceiptStatus::Undelivered { FailoverReason::Undelivered } else { FailoverReason::Failed };
        self.failover(watch, reason, now).await
    }

    /// Fails over every watched message whose receipt is overdue, and forgets those whose code
    /// expired.
    pub(super) async fn sweep_watches(self: Arc<Self>) {
        let now = self.clock.now();
        let overdue: Vec<Watch> = {
            let mut watches = self.watches.lock();
            watches.retain(|_, w| now < w.message.expires_at);
            let ids: Vec<Uuid> = watches.iter().filter(|(_, w)| now >= w.deadline).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| watches.remove(&id)).collect()
        };
        for watch in overdue {
            let text = format!("no delivery receipt from {} within its timeout", self.lanes[watch.lane].name);
            self.spawn_audits(vec![receipt_event(
                &watch.message,
                now,
                Step::ReceiptFailed,
                AuditOutcome::Failed,
                text,
            )]);
            self.failover(watch, FailoverReason::NoReceipt, now).await;
        }
    }

    /// Sends the code of `watch` again through the next route it has not taken, if any is
    /// left, the code is alive and the gate allows it.
    async fn failover(self: &Arc<Self>, watch: Watch, reason: FailoverReason, now: Timestamp) -> ReceiptAnswer {
        let route = &self.routes[route_index(watch.message.to.channel())];
        let next = route.iter().copied().find(|&lane| watch.tried & bit(lane) == 0);
        let why_not = match next {
            _ if now >= watch.message.expires_at => Some("the code expired"),
            None => Some("every route of its channel carried it already"),
            Some(_) => None,
        };
        let allowed = match why_not {
            Some(_) => false,
            None => match self.gate.load_full() {
                Some(gate) => gate.allow(&watch.message, now).await,
                None => true,
            },
        };
        let why_not = why_not.or((!allowed).then_some("the limits refused another send"));
        if let Some(why) = why_not {
            let text = format!("not sent again ({}): {why}", reason.as_str());
            self.spawn_audits(vec![receipt_event(&watch.message, now, Step::Failover, AuditOutcome::Failed, text)]);
            return ReceiptAnswer::Ended;
        }
        let id = {
            let mut ledger = self.ledger.lock();
            if ledger.len() >= self.config.queue_capacity {
                None
            } else {
                Some(ledger.insert_avoiding(watch.message.clone(), watch.tried))
            }
        };
        let Some(id) = id else {
            let text = format!("not sent again ({}): the delivery queue is full", reason.as_str());
            self.spawn_audits(vec![receipt_event(&watch.message, now, Step::Failover, AuditOutcome::Failed, text)]);
            return ReceiptAnswer::Ended;
        };
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.metrics.enqueued(true);
        crate::metrics::receipt_failover(reason);
        let text = format!("sent again on another route ({})", reason.as_str());
        self.spawn_audits(vec![receipt_event(&watch.message, now, Step::Failover, AuditOutcome::Ok, text)]);
        if let Some(actor) = self.current.load_full() {
            let _ = actor.cast(DispatcherMsg::Enqueued { ids: vec![id] });
        }
        ReceiptAnswer::FailedOver
    }
}

/// The audit event of a receipt or a failover, under the code's trace id.
fn receipt_event(
    message: &OutboundMessage,
    at: Timestamp,
    step: Step,
    outcome: AuditOutcome,
    text: String,
) -> AuditEvent {
    AuditEvent {
        at,
        trace_id: message.trace_id.clone(),
        api: Api::Delivery,
        step,
        outcome,
        message: Cow::Owned(text),
        client_ip: None,
        user_agent: None,
        ident_hash: Some(message.ident_hash),
        user_id: None,
    }
}
