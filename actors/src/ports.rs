//! Ports: what the engine needs from the outside world, as traits the adapters implement.
//!
//! | port | embedded default (in `otpd`) | distributed |
//! | --- | --- | --- |
//! | [`UserStore`], [`SessionStore`], [`AuditLog`] | redb with group commit | ScyllaDB |
//! | [`Limiter`] | [`crate::limiter::LocalLimiter`] | Redis |
//! | [`Notifier`] | development outbox file | SMS dispatcher (Twilio, webhook, SMTP) |
//!
//! Contracts every implementation keeps (checked by the conformance suite in
//! [`crate::testkit`]):
//! * a write method returns `Ok` only once the write is durable (it survives `kill -9`);
//! * [`UserStore::insert_user`] is atomic per identifier: of two concurrent inserts for one
//!   identifier exactly one is `Inserted`;
//! * [`Limiter::check`] checks and records atomically: of concurrent requests that together
//!   exceed a limit, only as many as the limit allows are let through;
//! * [`Notifier::enqueue`] never blocks and never drops silently: it accepts or says why not.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::challenge::Purpose;
use crate::clock::Timestamp;
use crate::code::Code;
use crate::identifier::Identifier;
use crate::keys::IdentHash;

/// A user's stable id (UUID v7: time-ordered, so new users land at the end of indexes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub Uuid);

/// A session's id; also the `sid` claim of its access tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// The normalised identifier the account signs in with.
    pub identifier: Identifier,
    pub ident_hash: IdentHash,
    pub first_name: String,
    pub last_name: String,
    /// A contact address given at registration (the identifier may be a phone number).
    pub email: Option<String>,
    pub verified: bool,
    pub created_at: Timestamp,
    pub verified_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// How a session was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMethod {
    Otp,
}

/// A login: holds the digest of its refresh token, never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub refresh_digest: [u8; 32],
    pub method: AuthMethod,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl Session {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// How an audited call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// Did what was asked.
    Ok,
    /// Refused because of the request (bad input, wrong code, no account).
    Rejected,
    /// Refused by a cooldown or rate limit.
    Limited,
    /// Could not be served because of the service (a dependency down, a queue full).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Rejected => "rejected",
            AuditOutcome::Limited => "limited",
            AuditOutcome::Failed => "failed",
        }
    }
}

/// One line of the audit trail. Never holds an identifier or a code in clear: the identifier
/// only as its keyed hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub trace_id: String,
    /// The API called (`login`, `register_verify`, …).
    pub api: String,
    /// How far the call got (`parse`, `limit`, `challenge`, `done`, …).
    pub step: String,
    pub outcome: AuditOutcome,
    /// A short human sentence; never contains a code or an identifier.
    pub message: String,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub ident_hash: Option<IdentHash>,
    pub user_id: Option<UserId>,
}

/// A storage failure. The message is for logs and operators, not for API callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take the request now (down, overloaded, timed out).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded or violates an invariant.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// Result of [`UserStore::insert_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertUser {
    Inserted,
    /// An account with this identifier already exists; here it is.
    Exists(Box<User>),
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    async fn user_by_identifier(&self, ident: &IdentHash) -> Result<Option<User>, StoreError>;
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// Creates the account unless one exists for `user.ident_hash` (atomically).
    async fn insert_user(&self, user: &User) -> Result<InsertUser, StoreError>;
    /// Replaces the stored record of `user.id` (identifier unchanged).
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError>;
    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError>;
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends durably.
    async fn append(&self, event: AuditEvent) -> Result<(), StoreError>;
    /// The newest `limit` events for an identifier, newest first.
    async fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// The newest `limit` events of one trace id, newest first.
    async fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
}

/// What a request wants to do, as far as limits are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitAction {
    /// Issue a code (`/v1/register`, `/v1/login`).
    Send(Purpose),
    /// Issue a new code through `/v1/otp/resend` (shares the cooldown of `Send(purpose)`).
    Resend(Purpose),
    /// Check a code.
    Verify(Purpose),
}

impl LimitAction {
    /// Whether the action sends a code.
    pub fn sends(self) -> bool {
        matches!(self, LimitAction::Send(_) | LimitAction::Resend(_))
    }
}

/// Everything a limit can be keyed by.
#[derive(Clone, Copy, Debug)]
pub struct LimitRequest {
    pub action: LimitAction,
    pub ident: IdentHash,
    pub client_ip: Option<IpAddr>,
    /// The SMS recipient, for the number-prefix and country rules (`None` for e-mail).
    pub sms: Option<SmsTarget>,
    pub now: Timestamp,
}

/// An SMS recipient as the limits see it: its country calling code and the digits of its
/// E.164 number (for number-prefix rules and the destination lists). `Debug` shows only the
/// country: a phone number is personal data.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SmsTarget {
    country_code: u16,
    digits: u64,
    len: u8,
}

impl SmsTarget {
    /// The SMS target of a phone identifier; `None` for an e-mail address.
    pub fn of(identifier: &Identifier) -> Option<SmsTarget> {
        match identifier {
            Identifier::Phone { e164, country_code } => Self::from_e164(e164, *country_code),
            Identifier::Email(_) => None,
        }
    }

    /// From `+<digits>` (at most 15 digits, as E.164 allows).
    pub fn from_e164(e164: &str, country_code: u16) -> Option<SmsTarget> {
        let digits = e164.strip_prefix('+')?;
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(SmsTarget { country_code, digits: digits.parse().ok()?, len: digits.len() as u8 })
    }

    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// The first `n` digits of the number, country code included (all of them if `n` is
    /// longer than the number), as a value and a digit count.
    pub fn prefix(&self, n: u8) -> (u64, u8) {
        let n = n.min(self.len);
        (self.digits / 10u64.pow(u32::from(self.len - n)), n)
    }
}

impl fmt::Debug for SmsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmsTarget(+{}…)", self.country_code)
    }
}

/// Which rule refused a request. The name is part of the API (the problem `code`); none of
/// them depends on whether the identifier has an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitRule {
    /// A code was sent for this identifier and purpose too recently.
    ResendCooldown,
    /// Too many codes sent to this identifier within the window.
    IdentifierSends,
    /// Too many login codes sent to this identifier.
    IdentifierLogins,
    /// Too many registration codes sent to this identifier.
    IdentifierRegistrations,
    /// Too many resends to this identifier.
    IdentifierResends,
    /// Too many codes checked for this identifier.
    IdentifierVerifies,
    /// Too many codes sent on behalf of this client IP address (IPv6: its /64).
    IpSends,
    /// Too many codes checked from this client IP address (IPv6: its /64).
    IpVerifies,
    /// Too many codes sent to numbers sharing this number's prefix.
    PrefixSends,
    /// Too many codes sent to this country.
    CountrySends,
    /// SMS to this country or number range is not allowed (destination lists).
    DestinationNotAllowed,
}

impl LimitRule {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitRule::ResendCooldown => "resend_cooldown",
            LimitRule::IdentifierSends => "identifier_send_limit",
            LimitRule::IdentifierLogins => "identifier_login_limit",
            LimitRule::IdentifierRegistrations => "identifier_register_limit",
            LimitRule::IdentifierResends => "identifier_resend_limit",
            LimitRule::IdentifierVerifies => "identifier_verify_limit",
            LimitRule::IpSends => "ip_send_limit",
            LimitRule::IpVerifies => "ip_verify_limit",
            LimitRule::PrefixSends => "prefix_send_limit",
            LimitRule::CountrySends => "country_send_limit",
            LimitRule::DestinationNotAllowed => "destination_not_allowed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { rule: LimitRule, retry_after: Duration },
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("limiter unavailable: {0}")]
pub struct LimiterError(pub String);

#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Checks every rule that applies to `req` and, if all allow, records it, atomically.
    async fn check(&self, req: &LimitRequest) -> Result<Decision, LimiterError>;
}

/// A code to deliver.
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    pub to: Identifier,
    pub purpose: Purpose,
    /// Whether this is a resend (templates differ).
    pub resend: bool,
    pub code: Code,
    pub expires_at: Timestamp,
    pub trace_id: String,
    pub ident_hash: IdentHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("the delivery queue is full")]
    QueueFull,
    #[error("the delivery pipeline is shut down")]
    Closed,
}

pub trait Notifier: Send + Sync + 'static {
    /// Hands a message to the delivery pipeline without waiting for delivery.
    fn enqueue(&self, message: OutboundMessage) -> Result<(), NotifyError>;
}
