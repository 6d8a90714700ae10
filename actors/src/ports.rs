//! Ports: what the engine needs from the outside world, as traits the adapters implement, and
//! the records they exchange.
//!
//! | port | embedded default (in `otpd`) | distributed |
//! | --- | --- | --- |
//! | [`UserStore`], [`SessionStore`], [`DeviceStore`], [`PasskeyStore`], [`AuditLog`], [`CensusSource`] | fjall (LSM tree) with group commit | ScyllaDB |
//! | [`Limiter`] | `adapters::limiter::LocalLimiter` | Redis |
//! | [`Notifier`] | `actors::dispatch` dispatcher → development outbox | dispatcher → Twilio, webhook, SMTP |
//!
//! This module sits just above the rules: it names no actor, no adapter and no flow (the
//! crate doc lists the layers), so an adapter depends on the ports and the rules only.
//!
//! Contracts every implementation keeps (checked by the conformance suites in `testkit`):
//! * a write method returns `Ok` only once the write is durable (it survives `kill -9`);
//! * [`UserStore::insert_user`] is atomic per identifier: of two concurrent inserts for one
//!   identifier exactly one is `Inserted`;
//! * [`SessionStore::rotate_refresh`] is a compare-and-swap: of concurrent rotations that
//!   present the same refresh token at most one is `Rotated`;
//! * [`DeviceStore::insert_device`] and [`PasskeyStore::insert_passkey`] enforce the per-user
//!   cap atomically; [`PasskeyStore::record_passkey_use`] lets one of two uses with the same
//!   counter through;
//! * [`Limiter::check`] checks and records atomically: of concurrent requests that together
//!   exceed a limit, only as many as the limit allows are let through;
//! * [`Notifier::enqueue`] never blocks and never drops silently: it accepts or says why not.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rules::audit::{Api, AuditOutcome, Step};
use crate::rules::challenge::Purpose;
use crate::rules::clock::Timestamp;
use crate::rules::code::Code;
use crate::rules::device_key::DeviceKey;
use crate::rules::identifier::{Identifier, Via};
use crate::rules::ids::{DeviceId, SessionId, TraceId, UserId};
use crate::rules::keys::IdentHash;
use crate::rules::limits::{Decision, DestinationChange, DestinationState, LimitRequest, SmsTarget, Subject};
use crate::rules::locale::Locale;
use crate::rules::passkey::{CredentialId, PasskeyRef};

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
    /// A signature by an enrolled device key (fingerprint login).
    Device(DeviceId),
    /// A passkey login recorded before sessions named their passkey (read from older
    /// records, never written): deleting a passkey does not end it.
    PasskeyUnnamed,
    /// A WebAuthn assertion by a registered passkey.
    Passkey(PasskeyRef),
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Otp => "otp",
            AuthMethod::Device(_) => "device",
            AuthMethod::PasskeyUnnamed | AuthMethod::Passkey(_) => "passkey",
        }
    }

    /// The device or passkey that opened the session: what its removal ends sessions by.
    pub fn opener(self) -> Option<Uuid> {
        match self {
            AuthMethod::Device(d) => Some(d.0),
            AuthMethod::Passkey(p) => Some(p.0),
            AuthMethod::Otp | AuthMethod::PasskeyUnnamed => None,
        }
    }
}

/// How many rotated-away refresh-token digests a session remembers, so that replaying one of
/// them is recognised as reuse (and revokes the session) rather than as a token never issued.
pub const RETIRED_REFRESH_DIGESTS: usize = 32;

/// Why a session ended before its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevokeReason {
    Logout,
    LogoutAll,
    /// A refresh token this session had already rotated away from was presented again.
    RefreshTokenReuse,
    /// The device that opened the session was revoked.
    DeviceRevoked,
    /// The passkey that opened the session was deleted.
    PasskeyDeleted,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::LogoutAll => "logout_all",
            RevokeReason::RefreshTokenReuse => "refresh_token_reuse",
            RevokeReason::DeviceRevoked => "device_revoked",
            RevokeReason::PasskeyDeleted => "passkey_deleted",
        }
    }
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
    pub revoke_reason: Option<RevokeReason>,
    /// Refresh rotations so far (0 for a fresh login).
    pub generation: u32,
    /// When the refresh token was last rotated.
    pub refreshed_at: Option<Timestamp>,
    /// First 16 bytes of the digests of rotated-away refresh tokens, oldest first, at most
    /// [`RETIRED_REFRESH_DIGESTS`].
    pub retired_digests: Vec<[u8; 16]>,
    /// Where the login came from, for `GET /v1/sessions`.
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Session {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    /// A new session with no rotation history.
    pub fn new(
        id: SessionId,
        user_id: UserId,
        refresh_digest: [u8; 32],
        method: AuthMethod,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Self {
        Session {
            id,
            user_id,
            refresh_digest,
            method,
            created_at,
            expires_at,
            revoked_at: None,
            revoke_reason: None,
            generation: 0,
            refreshed_at: None,
            retired_digests: Vec::new(),
            client_ip: None,
            user_agent: None,
        }
    }

    /// The rotation rule every store applies inside its atomic step (see
    /// [`SessionStore::rotate_refresh`]): compares `presented` with the current digest and
    /// the retired ones, and changes `self` accordingly.
    pub fn rotate(&mut self, presented: &[u8; 32], next: &[u8; 32], now: Timestamp) -> RotationVerdict {
        use subtle::ConstantTimeEq as _;
        if !self.is_active(now) {
            return RotationVerdict::Inactive;
        }
        if bool::from(self.refresh_digest.ct_eq(presented)) {
            let retired: [u8; 16] = presented[..16].try_into().expect("16 of 32 bytes");
            self.retired_digests.push(retired);
            if self.retired_digests.len() > RETIRED_REFRESH_DIGESTS {
                self.retired_digests.remove(0);
            }
            self.refresh_digest = *next;
            self.generation = self.generation.saturating_add(1);
            self.refreshed_at = Some(now);
            return RotationVerdict::Rotated;
        }
        let short = &presented[..16];
        if self.retired_digests.iter().any(|d| bool::from(d.ct_eq(short))) {
            self.revoked_at = Some(now);
            self.revoke_reason = Some(RevokeReason::RefreshTokenReuse);
            return RotationVerdict::Reused;
        }
        RotationVerdict::Mismatch
    }
}

/// What [`Session::rotate`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationVerdict {
    Rotated,
    Reused,
    Mismatch,
    Inactive,
}

/// Result of [`SessionStore::rotate_refresh`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current; `next` is current now. The session after the change.
    Rotated(Box<Session>),
    /// The presented token had already been rotated away: a replay. The session is now revoked.
    Reused(Box<Session>),
    /// The presented token was never this session's (or is older than the retired list).
    Mismatch,
    /// No such session, or it expired or was revoked.
    Inactive,
}

/// A phone (or other client) holding an enrolled key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Platform {
    Ios,
    Android,
    Web,
    Other,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Web => "web",
            Platform::Other => "other",
        }
    }
}

/// An enrolled device key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub user_id: UserId,
    /// Chosen by the user ("Ada's iPhone"); 1..=64 characters.
    pub name: String,
    pub platform: Platform,
    pub key: DeviceKey,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl Device {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// Result of [`DeviceStore::insert_device`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertDevice {
    Inserted,
    /// The user already has `max` active devices.
    LimitReached {
        max: usize,
    },
    /// The same public key is already enrolled (and active) for this user.
    DuplicateKey(DeviceId),
}

/// A registered passkey (WebAuthn credential).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passkey {
    pub id: CredentialId,
    pub user_id: UserId,
    /// Chosen by the user ("Ada's laptop"); 1..=64 characters.
    pub name: String,
    /// The relying party's record of the credential (public key, algorithm, flags, counter),
    /// as the [`RelyingParty`] adapter wrote it; opaque to the engine.
    pub credential: Vec<u8>,
    /// The authenticator's signature counter as last accepted (0: it counts nothing).
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// Result of [`PasskeyStore::insert_passkey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertPasskey {
    Inserted,
    /// The user already has `max` passkeys.
    LimitReached {
        max: usize,
    },
    /// A passkey with this credential id is registered already (to anyone).
    Exists,
}

/// Result of [`PasskeyStore::record_passkey_use`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasskeyUse {
    Recorded,
    /// The stored counter is not below the new one (both not zero): another assertion with
    /// this counter came first, or the key was cloned.
    Regressed {
        stored: u32,
    },
    /// No such passkey (deleted meanwhile).
    Missing,
}

/// One line of the audit trail. Never holds an identifier or a code in clear: the identifier
/// only as its keyed hash.
///
/// Built once per call on the request path, so it borrows or shares what it can: the API and
/// step are `Copy` enums, the message is a `&'static str` unless it had to be formatted, and
/// the trace id and user agent share the request context's allocations. Serialised, every
/// field is what it was when they were all `String`s (see `rules::audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub trace_id: TraceId,
    /// The API called (`login`, `register_verify`, …, or `delivery`).
    pub api: Api,
    /// How far the call got (`parse`, `limit`, `challenge`, `done`, …).
    pub step: Step,
    pub outcome: AuditOutcome,
    /// A short human sentence; never contains a code or an identifier.
    pub message: Cow<'static, str>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<Arc<str>>,
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

/// What [`UserStore::erase_user`] deleted besides the account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    pub sessions: usize,
    pub devices: usize,
    /// Passkeys deleted (by the engine, through `PasskeyStore`, before the account).
    pub passkeys: usize,
    /// Keys of the audit trail's personal fields about the account, destroyed.
    pub audit_keys: usize,
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
    /// The account of `ident`, shared: a store that caches accounts hands out its copy.
    async fn user_by_identifier(&self, ident: &IdentHash) -> Result<Option<Arc<User>>, StoreError>;
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// Creates the account unless one exists for `user.ident_hash` (atomically).
    async fn insert_user(&self, user: &User) -> Result<InsertUser, StoreError>;
    /// Replaces the stored record of `user.id` (identifier unchanged).
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;
    /// Deletes up to `max` accounts never verified and created before `created_before`, each
    /// only if it is still unverified when deleted; returns how many. (Registration creates
    /// the account when its code verifies; older versions created it before, and the
    /// accounts nobody verified are what this removes.)
    async fn purge_unverified(&self, created_before: Timestamp, max: usize) -> Result<usize, StoreError>;
    /// Erases account `id`: deletes it with its sessions and devices, and destroys the keys
    /// that sealed the personal fields (client address, user agent) of the audit events about
    /// it, so the append-only trail keeps those events with the fields unreadable. `None` if
    /// there is no such account. Durable before it returns, like every write.
    async fn erase_user(&self, id: UserId) -> Result<Option<Erased>, StoreError>;
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError>;
    /// Stores a new session and appends `event`, the call's record of opening it, to the
    /// store's own audit trail: both durable before it returns. A sign-in then waits for one
    /// durable write, not two in a row; a store that can make them one commit (the embedded
    /// one) also makes them all or nothing, another writes the session first.
    async fn open_session(&self, session: Session, event: AuditEvent) -> Result<(), StoreError>;
    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError>;
    /// Applies [`Session::rotate`] to session `id` atomically (read, decide and write as one
    /// step, durable before it returns): two concurrent calls presenting the same digest
    /// yield at most one `Rotated`; the other sees the digest retired (`Reused`).
    async fn rotate_refresh(
        &self,
        id: SessionId,
        presented: &[u8; 32],
        next: &[u8; 32],
        now: Timestamp,
    ) -> Result<Rotation, StoreError>;
    /// Revokes one session if it is active; returns whether it was.
    async fn revoke_session(&self, id: SessionId, reason: RevokeReason, now: Timestamp) -> Result<bool, StoreError>;
    /// Revokes every active session of `user` (only those whose [`AuthMethod::opener`] is
    /// `opener`, if given: one device's or one passkey's); returns how many were revoked.
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        opener: Option<Uuid>,
        reason: RevokeReason,
        now: Timestamp,
    ) -> Result<usize, StoreError>;
    /// Every session of `user` (active or not), oldest first.
    async fn sessions_of_user(&self, user: UserId) -> Result<Vec<Session>, StoreError>;
}

#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// Stores a new device unless the user has `max_active` active devices already or the
    /// same key is active for the user, atomically (the cap holds under concurrency).
    async fn insert_device(&self, device: &Device, max_active: usize) -> Result<InsertDevice, StoreError>;
    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError>;
    /// Every device of `user` (active or revoked), oldest first.
    async fn devices_of_user(&self, user: UserId) -> Result<Vec<Device>, StoreError>;
    /// Marks device `id` of `user` revoked (idempotent). `None` if `user` has no such device.
    async fn revoke_device(&self, user: UserId, id: DeviceId, now: Timestamp) -> Result<Option<Device>, StoreError>;
}

#[async_trait]
pub trait PasskeyStore: Send + Sync + 'static {
    /// Stores a new passkey unless the user has `max` already or its credential id is taken,
    /// atomically (the cap holds under concurrency).
    async fn insert_passkey(&self, passkey: &Passkey, max: usize) -> Result<InsertPasskey, StoreError>;
    async fn passkey(&self, id: &CredentialId) -> Result<Option<Passkey>, StoreError>;
    /// Every passkey of `user`, oldest first.
    async fn passkeys_of_user(&self, user: UserId) -> Result<Vec<Passkey>, StoreError>;
    /// Stores a login's counter, backup state and credential record, if the stored counter is
    /// below `used.sign_count` or both are zero; atomic against concurrent uses.
    async fn record_passkey_use(&self, used: &Passkey, now: Timestamp) -> Result<PasskeyUse, StoreError>;
    /// Deletes passkey `id` of `user` (nothing is kept). `false` if `user` has no such passkey.
    async fn delete_passkey(&self, user: UserId, id: &CredentialId) -> Result<bool, StoreError>;
    /// Deletes every passkey of `user` (account erasure); how many there were.
    async fn delete_user_passkeys(&self, user: UserId) -> Result<usize, StoreError>;
}

/// The account a passkey is registered for, as the browser shows it.
#[derive(Clone, Debug)]
pub struct PasskeyHolder {
    pub user: UserId,
    /// What the authenticator lists the passkey under (the account's identifier).
    pub name: String,
    pub display_name: String,
}

/// Options for the browser's `navigator.credentials.create()` or `.get()`, as JSON text.
#[derive(Clone, Debug)]
pub struct CeremonyOptions(pub String);

/// A client's answer to a ceremony, parsed but not verified.
pub struct CeremonyResponse {
    /// The challenge the client signed (from its client data).
    pub challenge: [u8; 32],
    pub credential_id: CredentialId,
    /// The account id the authenticator keeps with a discoverable credential (assertions).
    pub user_handle: Option<Vec<u8>>,
    /// The adapter's parsed form, handed back to it to verify.
    pub parsed: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for CeremonyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeremonyResponse").field("credential_id", &self.credential_id).finish_non_exhaustive()
    }
}

/// What a verified registration or assertion tells of its credential.
#[derive(Clone, Debug)]
pub struct CeremonyCredential {
    pub id: CredentialId,
    /// The relying party's record (updated after an assertion).
    pub credential: Vec<u8>,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
}

/// Why a ceremony's answer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CeremonyError {
    /// Not a WebAuthn response (JSON shape, encodings, CBOR, lengths); the text says which.
    #[error("the credential is malformed: {0}")]
    Malformed(String),
    /// Made for another origin, relying party, ceremony or challenge; or its signature fails.
    #[error("the credential does not verify: {0}")]
    Invalid(&'static str),
    /// The authenticator did not verify the user (fingerprint, face, PIN).
    #[error("the authenticator did not verify the user")]
    UserNotVerified,
    /// The counter did not grow: two authenticators hold one key.
    #[error("the signature counter went backwards: possible cloned authenticator")]
    CounterRegressed,
    /// An attestation format or key algorithm this relying party does not accept.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// The WebAuthn relying party: makes ceremony options and checks the answers. The binary
/// implements it with webauthn-rs; every check of origin, RP id hash, challenge, flags,
/// signature and counter happens here, none in a shard's mailbox.
pub trait RelyingParty: Send + Sync + 'static {
    fn registration_options(
        &self,
        challenge: &[u8; 32],
        holder: &PasskeyHolder,
        exclude: &[CredentialId],
    ) -> Result<CeremonyOptions, CeremonyError>;
    fn read_registration(&self, json: &str) -> Result<CeremonyResponse, CeremonyError>;
    fn finish_registration(
        &self,
        response: &CeremonyResponse,
        challenge: &[u8; 32],
        holder: &PasskeyHolder,
        exclude: &[CredentialId],
    ) -> Result<CeremonyCredential, CeremonyError>;
    fn login_options(&self, challenge: &[u8; 32]) -> Result<CeremonyOptions, CeremonyError>;
    fn read_assertion(&self, json: &str) -> Result<CeremonyResponse, CeremonyError>;
    /// Checks an assertion against `passkey`'s key; with `None` (unknown credential) against
    /// a decoy key instead, doing the same work, and refuses.
    fn finish_assertion(
        &self,
        response: &CeremonyResponse,
        challenge: &[u8; 32],
        passkey: Option<&Passkey>,
    ) -> Result<CeremonyCredential, CeremonyError>;
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends durably.
    async fn append(&self, event: AuditEvent) -> Result<(), StoreError>;
    /// Appends several events durably, in order; a store that can commits them together
    /// (this default appends one after the other and stops at the first failure).
    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        for event in events {
            self.append(event).await?;
        }
        Ok(())
    }
    /// The newest `limit` events for an identifier, newest first.
    async fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// The newest `limit` events of one trace id, newest first.
    async fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
}

/// How many accounts and sessions a store holds (gauges and the admin stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub users: u64,
    pub verified_users: u64,
    /// Sessions neither revoked nor expired.
    pub active_sessions: u64,
}

/// Cheap population counts. Called periodically (every `admin.refresh_interval`) and by the
/// admin stats endpoint, never per request, so an implementation may keep counters or run
/// a bounded query.
#[async_trait]
pub trait CensusSource: Send + Sync + 'static {
    /// The counts at `now`; `None` while the store is still counting (just after it opened).
    async fn census(&self, now: Timestamp) -> Result<Option<Census>, StoreError>;
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("limiter unavailable: {0}")]
pub struct LimiterError(pub String);

#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Checks every rule that applies to `req` and, if all allow, records it, atomically.
    async fn check(&self, req: &LimitRequest) -> Result<Decision, LimiterError>;

    /// A code for `ident` was right: forgets its guess count and lifts its block (the guess
    /// budget), and, for an SMS to `sms`, counts a verified code for its destination (the
    /// conversion guard; `rules::limits`).
    async fn code_verified(&self, ident: IdentHash, sms: Option<SmsTarget>, now: Timestamp)
    -> Result<(), LimiterError>;

    /// The conversion guard's destinations this node has seen, with their (shared) counts,
    /// worst first, at most `limit`.
    async fn destinations(&self, now: Timestamp, limit: usize) -> Result<Vec<DestinationState>, LimiterError>;

    /// An operator's change to one destination (`Subject::Prefix` or `Subject::Country`);
    /// returns its state after.
    async fn change_destination(
        &self,
        subject: Subject,
        change: DestinationChange,
        now: Timestamp,
    ) -> Result<DestinationState, LimiterError>;
}

/// A message the delivery pipeline holds and has not started (see [`Notifier::enqueue`]).
#[must_use = "a held message is delivered only once started"]
#[derive(Debug, PartialEq, Eq)]
pub struct Held(pub u64);

/// A code to deliver.
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    pub to: Identifier,
    pub purpose: Purpose,
    /// Whether this is a resend (templates differ).
    pub resend: bool,
    pub code: Code,
    pub expires_at: Timestamp,
    pub trace_id: TraceId,
    pub ident_hash: IdentHash,
    /// The way the request asked for (a phone number only): the route starts at its provider.
    pub via: Option<Via>,
    /// The language to write it in (`rules::locale`): the engine's choice, which the
    /// templates render when they have it; `None`: the templates choose (country, default).
    pub locale: Option<Locale>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("the delivery queue is full")]
    QueueFull,
    #[error("the delivery pipeline is shut down")]
    Closed,
}

pub trait Notifier: Send + Sync + 'static {
    /// Hands a message to the delivery pipeline (it is held from now on, and counted against
    /// the queue) without starting its delivery: [`Notifier::start`] does, once the call that
    /// sent it has written its audit event. A call whose code is delivered must not take
    /// longer than one whose code is not: delivery work (a provider call, its own audit event)
    /// starting inside the call would tell a known account from an unknown one.
    fn enqueue(&self, message: OutboundMessage) -> Result<Held, NotifyError>;

    /// Starts the delivery of messages [`Notifier::enqueue`] holds.
    fn start(&self, held: Vec<Held>);

    /// Does with `message` what [`Notifier::enqueue`] does (the same checks, allocations and
    /// bookkeeping) and keeps nothing: what a send for an identifier without an account does
    /// instead, so that it takes as long as a real send and a full queue refuses it alike.
    fn rehearse(&self, message: OutboundMessage) -> Result<(), NotifyError> {
        drop(message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// `AuditEvent` as it was when its text fields were `String`s: what stores hold.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct StoredBefore {
        at: Timestamp,
        trace_id: String,
        api: String,
        step: String,
        outcome: AuditOutcome,
        message: String,
        client_ip: Option<IpAddr>,
        user_agent: Option<String>,
        ident_hash: Option<IdentHash>,
        user_id: Option<UserId>,
    }

    /// The embedded store's bytes (postcard through serde) are those of the `String` fields,
    /// both ways, for every API and step.
    #[test]
    fn audit_events_serialise_as_they_did_with_strings() {
        for (i, (api, step)) in Api::ALL.iter().zip(Step::ALL.iter().cycle()).enumerate() {
            let user_agent = (i % 2 == 0).then_some("curl/8.5");
            let new = AuditEvent {
                at: Timestamp::from_millis(1_700_000_000_000 + i as u64),
                trace_id: TraceId::from("trace-1"),
                api: *api,
                step: *step,
                outcome: AuditOutcome::Rejected,
                message: Cow::Borrowed("the code is not correct"),
                client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                user_agent: user_agent.map(Arc::from),
                ident_hash: Some(IdentHash([9; 16])),
                user_id: None,
            };
            let old = StoredBefore {
                at: new.at,
                trace_id: "trace-1".into(),
                api: api.as_str().into(),
                step: step.as_str().into(),
                outcome: AuditOutcome::Rejected,
                message: "the code is not correct".into(),
                client_ip: new.client_ip,
                user_agent: user_agent.map(str::to_owned),
                ident_hash: new.ident_hash,
                user_id: None,
            };
            let bytes = postcard::to_allocvec(&old).unwrap();
            assert_eq!(postcard::to_allocvec(&new).unwrap(), bytes, "{api} {step}");
            assert_eq!(postcard::from_bytes::<AuditEvent>(&bytes).unwrap(), new);
        }
        let unknown = postcard::to_allocvec(&StoredBefore {
            at: Timestamp::from_millis(0),
            trace_id: String::new(),
            api: "teleport".into(),
            step: "done".into(),
            outcome: AuditOutcome::Ok,
            message: String::new(),
            client_ip: None,
            user_agent: None,
            ident_hash: None,
            user_id: None,
        })
        .unwrap();
        assert!(postcard::from_bytes::<AuditEvent>(&unknown).is_err(), "an unknown API is an error, not a guess");
    }
}
