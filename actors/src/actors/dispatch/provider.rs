//! The provider port: what the dispatcher needs from an SMS or e-mail gateway.
//!
//! Adapters (Twilio, a JSON webhook, SMTP, the development outbox) live in the `otpd` crate and
//! implement [`Provider`]. The dispatcher hands them batches of rendered [`Delivery`]s and
//! reads back one [`SendResult`] per delivery; everything else (queueing, batching, retries,
//! circuit breaking, failover, auditing) is the dispatcher's job and the same for every
//! provider.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::ports::OutboundMessage;
use crate::rules::identifier::Via;

/// One message as a provider sends it: who receives it and the text they read.
#[derive(Clone)]
pub struct Delivery {
    /// Stable across attempts and providers, so a gateway can recognise a retry.
    pub id: Uuid,
    /// The message as the engine queued it (recipient, purpose, code, expiry, trace id).
    pub message: Arc<OutboundMessage>,
    /// Subject line (e-mail only).
    pub subject: String,
    /// The text the person reads; it contains the code.
    pub body: String,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
}

impl fmt::Debug for Delivery {
    // The body holds the code and the message the recipient: neither is ever printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("channel", &self.message.to.channel())
            .field("trace_id", &self.message.trace_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// Why a provider did not take a message.
///
/// `reason` is written to logs and the audit trail, so adapters build it only from status
/// codes and provider error codes: never from a provider's free text (which can echo the
/// recipient), never with a credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider failed, not the message (rate limit, 5xx, timeout, lost connection,
    /// rejected credentials): try again later, possibly through another provider. Counts
    /// against the provider's circuit breaker.
    #[error("{reason}")]
    Retryable {
        /// What the provider asked for (`Retry-After`); the dispatcher never retries sooner.
        retry_after: Option<Duration>,
        reason: String,
    },
    /// The provider refused this message for good (invalid or unreachable recipient): never
    /// retried, and no evidence against the provider.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl SendError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        SendError::Retryable { retry_after: None, reason: reason.into() }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        SendError::Permanent { reason: reason.into() }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            SendError::Retryable { reason, .. } | SendError::Permanent { reason } => reason,
        }
    }
}

/// The outcome of one delivery within a provider call.
pub type SendResult = Result<(), SendError>;

/// A gateway that can deliver rendered messages.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Short stable name (`twilio`, `webhook`, `smtp`, `outbox`): config, logs, readiness.
    fn name(&self) -> &str;

    /// Most deliveries one [`Provider::send`] call takes. 1 means the provider's API has no
    /// batches (Twilio): the dispatcher then makes one call per message, up to the provider's
    /// concurrency limit.
    fn max_batch(&self) -> usize {
        1
    }

    /// Whether it reports what became of a message after it took it (delivery receipts,
    /// [`super::receipts`]): the dispatcher then watches each message it took.
    fn receipts(&self) -> bool {
        false
    }

    /// How it carries a code to a phone (a text message unless it says otherwise); a request's
    /// `channel` starts the SMS route at the first provider of that way.
    fn via(&self) -> Via {
        Via::Sms
    }

    /// Sends `batch` (never empty, at most [`Provider::max_batch`] long) and returns one result
    /// per delivery, in order. A missing result counts as a retryable failure. The dispatcher
    /// bounds the call with its send timeout.
    async fn send(&self, batch: &[Delivery]) -> Vec<SendResult>;
}
