//! The engine façade: every API flow, from a normalised identifier to a durable outcome.
//!
//! A flow is a straight line through the ports and the shards:
//!
//! ```text
//! send (register, login, resend):
//!   limiter.check(Send) → user lookup → code + seal → shard Issue (a registration: with its
//!   profile) → notifier.enqueue (or, for no account, notifier.rehearse) → audit
//! verify (register/verify, login/verify):
//!   limiter.check(Verify) → shard Verify → user lookup (a registration: create or complete
//!   the account, verified, with the profile bound to the code) → session insert → audit
//! ```
//!
//! Sessions (refresh, logout, listing) are in `flows::sessions`, device enrolment and
//! fingerprint login in `flows::devices`; both follow the same pattern (and import this
//! module, never the reverse).
//!
//! Every call ends with exactly one audit event, awaited before the call returns, so an answer
//! the client saw is always in the trail; refusals that repeat at a client's pace are
//! aggregated (`rules::refusals`).
//!
//! # Enumeration safety
//!
//! Unless `reveal_accounts` is set, a send for an identifier without an account does all the
//! work a real one does (limiter, lookup, code, seal, shard, audit) and, instead of the
//! enqueue, rehearses it: the notifier does everything but keep the message (so a full queue
//! refuses both alike, and both take as long), then answers with the same receipt; its challenge can never verify because nobody
//! knows the code. A registration does one lookup and no write whatever the identifier's state:
//! the account is created only when its code verifies, with the profile sent with that code
//! (or with the verification), so a stranger's registration of the same number cannot choose
//! the owner's profile. A registration for a verified account answers like a fresh one: its
//! code signs the owner in, profile untouched. An account left unverified by an older version
//! is refused (403) on login only after its code was verified, i.e. only to the phone's holder.
//! A message's locale (`rules::locale`) is chosen from the request and the number before the
//! account is read, and what an SMS costs follows from it alone: no branch differs by it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use uuid::Uuid;

use crate::actors::cluster::{Cluster, ClusterError, ClusterSettings, ForwardError, Route};
use crate::actors::dispatch::{DispatcherActor, FailoverGate};
use crate::actors::shard::{ChallengeKey, ShardActor, ShardAnswer, ShardCommand, ShardConfig, ShardStats};
use crate::actors::supervisor::{EngineSupervisor, ShardError, ShardRouter, SupervisorArgs, SupervisorMsg};
use crate::flows::error::EngineError;
use crate::flows::notices::Notices;
use crate::metrics::{CodeEvent, EngineMetrics, OtpStats};
use crate::ports::{
    AuditEvent, AuditLog, AuthMethod, DeviceStore, Held, InsertUser, Limiter, Notifier, NotifyError, OutboundMessage,
    PasskeyStore, RelyingParty, Session, SessionStore, User, UserStore,
};
use crate::rules::audit::{Api, AuditOutcome, Step};
use crate::rules::challenge::{Profile, Purpose, VerifyOutcome};
use crate::rules::clock::{Clock, Timestamp};
use crate::rules::code::{CodePolicy, Sealed};
use crate::rules::identifier::{Channel, Identifier, Normalizer, Via};
use crate::rules::ids::{DeviceId, SessionId, TraceId, UserId};
use crate::rules::keys::{IdentHash, Keys};
use crate::rules::limits::{
    Decision, DestinationChange, DestinationState, LimitAction, LimitRequest, LimitRule, SmsTarget, Subject,
};
use crate::rules::locale::{Locale, LocaleId, Locales};
use crate::rules::refresh::RefreshToken;
use crate::rules::refusals::{Admit, RefusalKey, Refusals, Summary};
use crate::rules::sms::SmsSegments;

/// The target of this module's log lines, kept as it was before the crate was split into
/// layers: operators filter and query logs by it, whatever folder the module lives in.
const LOG_TARGET: &str = "otpd_actors::engine";

/// How long after a call's answer its code's delivery starts (see `Engine::finish`).
const DELIVERY_NOTICE: Duration = Duration::from_millis(10);

/// How long a command waits for membership to name a new owner after its owner left.
const OWNER_HANDOVER: Duration = Duration::from_secs(3);

/// Fixed engine configuration (built by the binary from its config file).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub code: CodePolicy,
    pub shard: ShardConfig,
    pub shard_count: usize,
    /// Longest wait for a shard's answer.
    pub call_timeout: Duration,
    /// Told to clients as `resend_after`; enforced by the limiter.
    pub resend_cooldown: Duration,
    /// Lifetime of a session (and so of its refresh token).
    pub session_ttl: Duration,
    /// Answer 404/409 for unknown/existing accounts instead of enumeration-safe answers.
    pub reveal_accounts: bool,
    /// Device enrolment and fingerprint login.
    pub devices: crate::rules::device_key::DevicePolicy,
    /// Passkey registration and login.
    pub passkeys: crate::rules::passkey::PasskeyPolicy,
    /// Refusals of one kind from one client within this window make one audit event and a
    /// count (`rules::refusals`); zero: an event each.
    pub refusal_window: Duration,
    /// The locales messages are written in (`Templates::locales`), which the engine chooses
    /// from for each send.
    pub locales: Locales,
    /// What each kind of SMS costs in segments in each of `locales` (same order), for the
    /// spend budget (`Templates::sms_segments`).
    pub sms_segments: Vec<SmsSegments>,
}

/// The adapters the engine runs on.
#[derive(Clone)]
pub struct EnginePorts {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub passkeys: Arc<dyn PasskeyStore>,
    /// The WebAuthn relying party (webauthn-rs in the binary).
    pub relying_party: Arc<dyn RelyingParty>,
    pub audit: Arc<dyn AuditLog>,
    pub limiter: Arc<dyn Limiter>,
    pub notifier: Arc<dyn Notifier>,
    /// The dispatcher actor behind `notifier` (`DispatchHandle::actor`), which the engine's
    /// supervisor starts and restarts; `None` for a notifier that needs no actor. Given here
    /// rather than asked of the notifier so that the `Notifier` port names no actor.
    pub dispatcher: Option<DispatcherActor>,
}

/// Who is calling, for limits and the audit trail.
#[derive(Clone, Debug, Default)]
///
/// Built once per request by the front end; the trace id and user agent are shared (not
/// copied) by the audit event and the message handed to delivery.
pub struct RequestContext {
    pub trace_id: TraceId,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<Arc<str>>,
}

/// How the person asked their code to reach them: a language (`rules::locale`) and a way
/// (the front end checked that the SMS route has it). Either may be absent.
#[derive(Clone, Debug, Default)]
pub struct Asked {
    pub locale: Option<Locale>,
    pub via: Option<Via>,
}

/// A sign-up request.
#[derive(Clone, Debug)]
pub struct Registration {
    pub identifier: Identifier,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub asked: Asked,
}

/// What a code is checked for, and the profile the client sent with a registration's code.
struct Target<'a> {
    identifier: &'a Identifier,
    ident: IdentHash,
    purpose: Purpose,
    sent: Option<Profile>,
}

/// What a code is sent for.
#[derive(Clone, Copy)]
struct Send<'a> {
    identifier: &'a Identifier,
    ident: IdentHash,
    purpose: Purpose,
    resend: bool,
    /// The locale chosen for the message (`Engine::locale`).
    locale: LocaleId,
    /// The way asked for, if any.
    via: Option<Via>,
}

/// What a client is told after a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    pub channel: Channel,
    pub expires_in: Duration,
    pub resend_after: Duration,
}

/// A successful verification: the account and its new session. The front end turns this into
/// an access token.
#[derive(Debug)]
pub struct Grant {
    pub user: User,
    pub session: Session,
    /// The refresh token in clear; exists only to be returned once.
    pub refresh_token: String,
    pub login_at: Timestamp,
}

/// The running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) keys: Arc<Keys>,
    clock: Arc<dyn Clock>,
    normalizer: Arc<Normalizer>,
    pub(crate) ports: EnginePorts,
    router: Arc<ShardRouter>,
    cluster: OnceLock<Cluster>,
    supervisor: ActorRef<SupervisorMsg>,
    dispatcher: Option<DispatcherActor>,
    /// Deliveries that start `DELIVERY_NOTICE` after their calls answered.
    notices: Arc<Notices>,
    pub(crate) metrics: EngineMetrics,
    refusals: parking_lot::Mutex<Refusals>,
    /// Until when a refusal said an SMS budget is spent (ms; 0: none seen), for readiness.
    sms_budget_spent_until: std::sync::atomic::AtomicU64,
    /// An identifier and a device id that exist, for the decoy lookups of `lookup_user` and
    /// `lookup_device`.
    pub(crate) known: parking_lot::Mutex<(Option<IdentHash>, Option<DeviceId>)>,
    /// A passkey credential id that exists, for the decoy lookup of `lookup_passkey`.
    pub(crate) known_passkey: parking_lot::Mutex<Option<crate::rules::passkey::CredentialId>>,
}

/// What the audit event of a call will say, filled in as the flow advances.
pub(crate) struct Trail {
    pub(crate) api: Api,
    pub(crate) step: Step,
    pub(crate) ident: Option<IdentHash>,
    pub(crate) user: Option<UserId>,
    pub(crate) note: &'static str,
    /// A code the call handed to delivery, started once the call's event is written.
    pub(crate) held: Option<Held>,
    /// A send without an account rehearsed its delivery: `finish` schedules what it would for
    /// a held message, and starts nothing.
    pub(crate) rehearsed: bool,
    /// A session the call opens: stored with the call's event, in one write
    /// (`SessionStore::open_session`), and only if the call succeeds.
    pub(crate) session: Option<Session>,
}

impl Trail {
    pub(crate) fn new(api: Api, ident: Option<IdentHash>) -> Self {
        Trail { api, step: Step::Start, ident, user: None, note: "", held: None, rehearsed: false, session: None }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not start the engine's supervision tree: {0}")]
pub struct StartError(String);

impl Engine {
    pub async fn start(
        config: EngineConfig,
        keys: Keys,
        clock: Arc<dyn Clock>,
        normalizer: Arc<Normalizer>,
        ports: EnginePorts,
    ) -> Result<Engine, StartError> {
        let keys = Arc::new(keys);
        let metrics = EngineMetrics::new(config.shard_count.max(1));
        crate::actors::cluster::record_standalone();
        let router = Arc::new(ShardRouter::new(config.shard_count, config.call_timeout));
        let shard = ShardActor { config: config.shard.clone(), keys: keys.clone(), clock: clock.clone() };
        let dispatcher = ports.dispatcher.clone();
        let args = SupervisorArgs { shard, router: router.clone(), dispatcher: dispatcher.clone() };
        let (supervisor, _) =
            Actor::spawn(None, EngineSupervisor, args).await.map_err(|e| StartError(e.to_string()))?;
        let refusals = parking_lot::Mutex::new(Refusals::new(config.refusal_window, Refusals::CAPACITY));
        let notices = Notices::start(ports.notifier.clone(), DELIVERY_NOTICE);
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                keys,
                clock,
                normalizer,
                ports,
                router,
                cluster: OnceLock::new(),
                supervisor,
                dispatcher,
                notices,
                metrics,
                refusals,
                known: parking_lot::Mutex::new((None, None)),
                known_passkey: parking_lot::Mutex::new(None),
                sms_budget_spent_until: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        engine.spawn_refusal_flusher();
        Ok(engine)
    }

    /// Writes the summaries of ended refusal windows as they end (checked at least every
    /// second, on the engine's clock); ends with the engine.
    fn spawn_refusal_flusher(&self) {
        let window = self.inner.config.refusal_window;
        if window.is_zero() {
            return;
        }
        let tick = window.min(Duration::from_secs(1));
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                Engine { inner }.flush_refusals(false).await;
            }
        });
    }

    /// Stops the supervision tree: drains the delivery dispatcher (what is queued goes out, at
    /// most 5 s), then the supervisor (so it restarts nothing), then shards.
    pub async fn stop(&self) {
        self.flush_refusals(true).await;
        let inner = &self.inner;
        if let Some(cluster) = inner.cluster.get() {
            cluster.stop().await;
        }
        if let Some(dispatcher) = &inner.dispatcher {
            dispatcher.drain(Duration::from_secs(5)).await;
        }
        let _ = inner.supervisor.stop_and_wait(None, Some(Duration::from_secs(5))).await;
        for i in 0..inner.router.len() {
            if let Some(shard) = inner.router.actor(i) {
                let _ = shard.stop_and_wait(None, Some(Duration::from_secs(5))).await;
            }
        }
        if let Some(dispatcher) = &inner.dispatcher {
            dispatcher.stop().await;
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn normalizer(&self) -> &Normalizer {
        &self.inner.normalizer
    }

    pub fn identifier_hash(&self, identifier: &Identifier) -> IdentHash {
        self.inner.keys.identifier_hash(identifier.as_str())
    }

    /// The passkey store (tests, and account export and erasure).
    pub fn passkey_store(&self) -> &Arc<dyn PasskeyStore> {
        &self.inner.ports.passkeys
    }

    pub fn audit_log(&self) -> &Arc<dyn AuditLog> {
        &self.inner.ports.audit
    }

    /// `POST /v1/register`: creates (or refreshes) an unverified account and sends a code.
    pub async fn register(&self, ctx: &RequestContext, reg: Registration) -> Result<SendReceipt, EngineError> {
        let ident = self.identifier_hash(&reg.identifier);
        let mut trail = Trail::new(Api::Register, Some(ident));
        let result = self.register_flow(&mut trail, ctx, reg, ident).await;
        self.finish(ctx, trail, result).await
    }

    async fn register_flow(
        &self,
        trail: &mut Trail,
        ctx: &RequestContext,
        reg: Registration,
        ident: IdentHash,
    ) -> Result<SendReceipt, EngineError> {
        let now = self.now();
        trail.step = Step::Limit;
        let sms = SmsTarget::of(&reg.identifier);
        let action = LimitAction::Send(Purpose::Register);
        let locale = self.locale(reg.asked.locale.as_ref(), &reg.identifier);
        self.limit(action, ident, sms, self.segments(action, locale, sms), ctx, now).await?;

        // One read, and no write, whatever the number's state: the account is created when its
        // code verifies, with the profile sent with that code (`Profile`), so a new number, an
        // unverified one and a verified one cost the same.
        trail.step = Step::Account;
        let user = self.lookup_user(ident).await?;
        trail.user = user.as_ref().map(|u| u.id);
        match &user {
            Some(u) if u.verified => {
                if self.inner.config.reveal_accounts {
                    return Err(EngineError::AccountExists);
                }
                // The code will sign the owner in to the existing account; profile untouched.
                trail.note = "account exists and is verified; code signs in";
                self.inner.metrics.enumeration_safe(trail.api);
            }
            Some(_) => trail.note = "unverified account; new code",
            None => trail.note = "new registration; code sent",
        }
        let profile = Profile { first_name: reg.first_name, last_name: reg.last_name, email: reg.email };
        let (identifier, via) = (&reg.identifier, reg.asked.via);
        let send = Send { identifier, ident, purpose: Purpose::Register, resend: false, locale, via };
        self.issue(trail, ctx, send, Some(Box::new(profile)), true, now).await
    }

    /// `POST /v1/login`: sends a login code (or, for an unknown identifier, pretends to), in
    /// `locale` when the templates have it (`rules::locale`).
    pub async fn login(
        &self,
        ctx: &RequestContext,
        identifier: Identifier,
        asked: Asked,
    ) -> Result<SendReceipt, EngineError> {
        self.send(ctx, Api::Login, identifier, Purpose::Login, false, asked).await
    }

    /// `POST /v1/otp/resend`: a new code for `purpose`; the previous one stops working.
    pub async fn resend(
        &self,
        ctx: &RequestContext,
        identifier: Identifier,
        purpose: Purpose,
        asked: Asked,
    ) -> Result<SendReceipt, EngineError> {
        self.send(ctx, Api::OtpResend, identifier, purpose, true, asked).await
    }

    async fn send(
        &self,
        ctx: &RequestContext,
        api: Api,
        identifier: Identifier,
        purpose: Purpose,
        resend: bool,
        asked: Asked,
    ) -> Result<SendReceipt, EngineError> {
        let ident = self.identifier_hash(&identifier);
        let mut trail = Trail::new(api, Some(ident));
        let locale = self.locale(asked.locale.as_ref(), &identifier);
        let send = Send { identifier: &identifier, ident, purpose, resend, locale, via: asked.via };
        let result = self.send_flow(&mut trail, ctx, send).await;
        self.finish(ctx, trail, result).await
    }

    async fn send_flow(
        &self,
        trail: &mut Trail,
        ctx: &RequestContext,
        send: Send<'_>,
    ) -> Result<SendReceipt, EngineError> {
        let Send { identifier, ident, purpose, resend, locale, .. } = send;
        let now = self.now();
        trail.step = Step::Limit;
        let action = if resend { LimitAction::Resend(purpose) } else { LimitAction::Send(purpose) };
        let sms = SmsTarget::of(identifier);
        self.limit(action, ident, sms, self.segments(action, locale, sms), ctx, now).await?;

        trail.step = Step::Account;
        let user = self.lookup_user(ident).await?;
        trail.user = user.as_ref().map(|u| u.id);
        let reveal = self.inner.config.reveal_accounts;
        let deliver = match (&user, purpose) {
            (None, _) if reveal => return Err(EngineError::AccountNotFound),
            (None, _) => {
                trail.note = "no account; nothing sent";
                self.inner.metrics.enumeration_safe(trail.api);
                false
            }
            (Some(u), Purpose::Login) if !u.verified && reveal => return Err(EngineError::AccountNotVerified),
            (Some(u), Purpose::Register) if u.verified && reveal => return Err(EngineError::AccountExists),
            (Some(_), _) => true,
        };
        self.issue(trail, ctx, send, None, deliver, now).await
    }

    /// Issues a code: seal, store in the shard (with a registration's profile), hand to the
    /// notifier (`deliver`; else only ask whether it would take it).
    async fn issue(
        &self,
        trail: &mut Trail,
        ctx: &RequestContext,
        send: Send<'_>,
        profile: Option<Box<Profile>>,
        deliver: bool,
        now: Timestamp,
    ) -> Result<SendReceipt, EngineError> {
        let Send { identifier, ident, purpose, resend, locale, via } = send;
        trail.step = Step::Challenge;
        let code = self.inner.config.code.generate();
        let sealed = Sealed::seal(&self.inner.keys, &code);
        let key = ChallengeKey { subject: ident, purpose };
        let (expires_at, registration) = self.issue_on_owner(ShardCommand::Issue { key, sealed, profile, now }).await?;
        // A resend of a registration whose account does not exist yet: the registration waits.
        let deliver = deliver || registration;
        let notify_error = |e| match e {
            NotifyError::QueueFull => EngineError::DeliveryBusy,
            NotifyError::Closed => EngineError::Unavailable("delivery pipeline closed".into()),
        };
        trail.step = Step::Dispatch;
        let message = OutboundMessage {
            to: identifier.clone(),
            purpose,
            resend,
            code,
            expires_at,
            trace_id: ctx.trace_id.clone(),
            ident_hash: ident,
            via: via.filter(|_| identifier.channel() == Channel::Sms),
            locale: Some(self.inner.config.locales.tag(locale).clone()),
        };
        if !deliver {
            // The same work as a real send, and a full queue refuses it alike; nothing is kept.
            self.inner.ports.notifier.rehearse(message).map_err(notify_error)?;
            trail.rehearsed = true;
        } else {
            trail.held = Some(self.inner.ports.notifier.enqueue(message).map_err(notify_error)?);
            if trail.note.is_empty() {
                trail.note = "code queued for delivery";
            }
            self.inner.metrics.code_issued(purpose, identifier.channel(), resend);
        }
        trail.step = Step::Done;
        Ok(SendReceipt {
            channel: identifier.channel(),
            expires_in: now.until(expires_at),
            resend_after: self.inner.config.resend_cooldown,
        })
    }

    /// `POST /v1/register/verify`: activates the account and signs it in. A new account gets
    /// `profile` when the client sent one, else the profile of the registration that issued
    /// the code (see [`Profile`]).
    pub async fn verify_registration(
        &self,
        ctx: &RequestContext,
        identifier: Identifier,
        code: &str,
        profile: Option<Profile>,
    ) -> Result<Grant, EngineError> {
        self.verify(ctx, Api::RegisterVerify, Purpose::Register, identifier, code, profile).await
    }

    /// `POST /v1/login/verify`: signs a verified account in.
    pub async fn verify_login(
        &self,
        ctx: &RequestContext,
        identifier: Identifier,
        code: &str,
    ) -> Result<Grant, EngineError> {
        self.verify(ctx, Api::LoginVerify, Purpose::Login, identifier, code, None).await
    }

    /// Either verify, audited as `api`.
    async fn verify(
        &self,
        ctx: &RequestContext,
        api: Api,
        purpose: Purpose,
        identifier: Identifier,
        code: &str,
        sent: Option<Profile>,
    ) -> Result<Grant, EngineError> {
        let ident = self.identifier_hash(&identifier);
        let mut trail = Trail::new(api, Some(ident));
        let target = Target { identifier: &identifier, ident, purpose, sent };
        let result = self.verify_flow(&mut trail, ctx, target, code).await;
        self.finish(ctx, trail, result).await
    }

    async fn verify_flow(
        &self,
        trail: &mut Trail,
        ctx: &RequestContext,
        target: Target<'_>,
        code: &str,
    ) -> Result<Grant, EngineError> {
        let Target { identifier, ident, purpose, sent } = target;
        let now = self.now();
        trail.step = Step::Limit;
        self.limit(LimitAction::Verify(purpose), ident, None, 0, ctx, now).await?;

        trail.step = Step::Challenge;
        let attempt = self.inner.config.code.normalise_attempt(code);
        let key = ChallengeKey { subject: ident, purpose };
        let (outcome, profile) = self.check_on_owner(ShardCommand::Verify { key, attempt, now }).await?;
        self.inner.metrics.verification(purpose, &outcome);
        match outcome {
            // The limit call above counted this check against the guess budget; a right code
            // clears the count, before the account is read, so with or without an account,
            // and counts for its destination's conversion.
            VerifyOutcome::Verified => {
                let sms = SmsTarget::of(identifier);
                if let Some(target) = sms {
                    self.inner.metrics.sms.code(target.country_code(), CodeEvent::Verified);
                }
                if let Err(e) = self.inner.ports.limiter.code_verified(ident, sms, now).await {
                    tracing::warn!(target: LOG_TARGET, error = %e, "could not record a verified code with the limiter");
                }
            }
            VerifyOutcome::Wrong { attempts_left } => return Err(EngineError::InvalidCode { attempts_left }),
            VerifyOutcome::Blocked => return Err(EngineError::TooManyAttempts),
            VerifyOutcome::Expired => return Err(EngineError::CodeExpired),
            VerifyOutcome::AlreadyUsed => return Err(EngineError::CodeAlreadyUsed),
            VerifyOutcome::NoChallenge => return Err(EngineError::NoPendingCode),
        }

        trail.step = Step::Account;
        let user = match purpose {
            Purpose::Register => self.activate(trail, identifier, ident, sent.map(Box::new).or(profile), now).await?,
            _ => {
                // A verified code without an account is a decoy challenge whose code was guessed.
                let user = self.inner.ports.users.user_by_identifier(&ident).await.map_err(unavailable)?;
                let user = user.ok_or(EngineError::InvalidCode { attempts_left: 0 })?;
                trail.user = Some(user.id);
                if !user.verified {
                    return Err(EngineError::AccountNotVerified);
                }
                trail.note = "session opened";
                Arc::unwrap_or_clone(user)
            }
        };

        trail.step = Step::Session;
        let grant = self.open_session(trail, ctx, user, AuthMethod::Otp, now);
        trail.step = Step::Done;
        Ok(grant)
    }

    /// The account of `ident`, after the same store work whether it exists or not: one read
    /// that finds an account and one that finds none. A store answers a key it holds slower
    /// than one it does not (a block is read and decoded; a filter rules the other out), so
    /// the account's read is paired with a read of an identifier no account has (always the
    /// same, so it is as cached as a number asked for before), and a miss with a read of an
    /// account seen before (`tests/it/timing.rs` measures the difference).
    pub(crate) async fn lookup_user(&self, ident: IdentHash) -> Result<Option<Arc<User>>, EngineError> {
        const NOBODY: IdentHash = IdentHash([0xd5; 16]);
        let users = &self.inner.ports.users;
        let user = users.user_by_identifier(&ident).await.map_err(unavailable)?;
        let decoy = match &user {
            Some(_) => {
                self.inner.known.lock().0 = Some(ident);
                NOBODY
            }
            None => self.inner.known.lock().0.unwrap_or(NOBODY),
        };
        let _ = users.user_by_identifier(&decoy).await.map_err(unavailable)?;
        Ok(user)
    }

    /// The account a registration's verified code signs in to: a verified one as it is; else
    /// created (or, one an older version left unverified, completed) verified, with the
    /// profile sent with this code.
    async fn activate(
        &self,
        trail: &mut Trail,
        identifier: &Identifier,
        ident: IdentHash,
        profile: Option<Box<Profile>>,
        now: Timestamp,
    ) -> Result<User, EngineError> {
        let users = &self.inner.ports.users;
        let existing = users.user_by_identifier(&ident).await.map_err(unavailable)?;
        if let Some(user) = &existing
            && user.verified
        {
            trail.user = Some(user.id);
            trail.note = "session opened";
            return Ok(User::clone(user));
        }
        // Without a profile the code was a decoy's or a resend's with no registration pending:
        // nothing to create, like a wrong code.
        let profile = profile.ok_or(EngineError::InvalidCode { attempts_left: 0 })?;
        let Profile { first_name, last_name, email } = *profile;
        let user = match existing {
            Some(user) => {
                let completed = User {
                    first_name,
                    last_name,
                    email,
                    verified: true,
                    verified_at: Some(now),
                    updated_at: now,
                    ..Arc::unwrap_or_clone(user)
                };
                users.update_user(&completed).await.map_err(unavailable)?;
                completed
            }
            None => {
                let user = User {
                    id: UserId(Uuid::now_v7()),
                    identifier: identifier.clone(),
                    ident_hash: ident,
                    first_name,
                    last_name,
                    email,
                    verified: true,
                    created_at: now,
                    verified_at: Some(now),
                    updated_at: now,
                };
                match users.insert_user(&user).await.map_err(unavailable)? {
                    InsertUser::Inserted => user,
                    // Another node's verification of the same registration won the race.
                    InsertUser::Exists(other) => *other,
                }
            }
        };
        trail.user = Some(user.id);
        trail.note = "account verified; session opened";
        Ok(user)
    }

    /// A new session for `user`, staged on the trail: `finish` stores it with the call's
    /// event, and the grant goes out only once both are durable.
    pub(crate) fn open_session(
        &self,
        trail: &mut Trail,
        ctx: &RequestContext,
        user: User,
        method: AuthMethod,
        now: Timestamp,
    ) -> Grant {
        let id = SessionId(Uuid::now_v7());
        let token = RefreshToken::generate(id);
        let digest = token.digest(&self.inner.keys);
        let expires_at = now.plus(self.inner.config.session_ttl);
        let mut session = Session::new(id, user.id, digest, method, now, expires_at);
        session.client_ip = ctx.client_ip;
        session.user_agent = ctx.user_agent.as_deref().map(str::to_owned);
        trail.session = Some(session.clone());
        Grant { user, session, refresh_token: token.encode(), login_at: now }
    }

    /// `GET /v1/me`: the account behind a (signature-checked) access token, if its session is
    /// still active.
    pub async fn current_user(
        &self,
        ctx: &RequestContext,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<User, EngineError> {
        let mut trail = Trail::new(Api::Me, None);
        trail.user = Some(user_id);
        let result = self.current_user_flow(&mut trail, user_id, session_id).await;
        self.finish(ctx, trail, result).await
    }

    async fn current_user_flow(
        &self,
        trail: &mut Trail,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<User, EngineError> {
        let now = self.now();
        trail.step = Step::Session;
        let session = self.inner.ports.sessions.session(session_id).await.map_err(unavailable)?;
        if !session.is_some_and(|s| s.user_id == user_id && s.is_active(now)) {
            return Err(EngineError::SessionInvalid);
        }
        trail.step = Step::Account;
        let user = self.inner.ports.users.user_by_id(user_id).await.map_err(unavailable)?;
        let user = user.ok_or(EngineError::SessionInvalid)?;
        trail.ident = Some(user.ident_hash);
        trail.step = Step::Done;
        Ok(user)
    }

    /// Records a call that the front end refused before it reached a flow (bad JSON, an
    /// invalid identifier, a bad token), aggregated with its kind (`rules::refusals`). Not
    /// awaited by the caller: nothing was acknowledged.
    pub fn record_rejection(
        &self,
        ctx: &RequestContext,
        api: Api,
        step: Step,
        message: impl Into<Cow<'static, str>>,
        ident: Option<IdentHash>,
    ) {
        let key = RefusalKey::new(api, step, AuditOutcome::Rejected, ctx.client_ip);
        if self.admit_refusal(key) == Admit::Count {
            return;
        }
        let trail = Trail { step, ..Trail::new(api, ident) };
        let event = self.event(ctx, &trail, AuditOutcome::Rejected, message.into());
        self.append_later(vec![event]);
    }

    /// Whether to write a refusal's event; writes the summary of the window it closes.
    fn admit_refusal(&self, key: RefusalKey) -> Admit {
        let (admit, closed) = self.inner.refusals.lock().admit(key, self.now());
        if let Some(summary) = closed {
            self.append_later(vec![summary_event(&summary, self.now())]);
        }
        admit
    }

    /// Writes the summaries of ended refusal windows (`all`: of every window, at shutdown).
    pub async fn flush_refusals(&self, all: bool) {
        let now = self.now();
        let due = match all {
            true => self.inner.refusals.lock().drain(),
            false => self.inner.refusals.lock().due(now),
        };
        for summary in due {
            if let Err(e) = self.inner.ports.audit.append(summary_event(&summary, now)).await {
                tracing::warn!(target: LOG_TARGET, error = %e, "could not record a refusal summary in the audit trail");
            }
        }
    }

    /// Appends events off the request's path (refusals: nothing was acknowledged).
    fn append_later(&self, events: Vec<AuditEvent>) {
        let audit = self.inner.ports.audit.clone();
        tokio::spawn(async move {
            for event in events {
                if let Err(e) = audit.append(event).await {
                    tracing::warn!(target: LOG_TARGET, error = %e, "could not record a refused request in the audit trail");
                }
            }
        });
    }

    /// The locale a message to `to` is written in (`rules::locale`): chosen before anything
    /// is looked up, so it never depends on whether an account exists.
    fn locale(&self, asked: Option<&Locale>, to: &Identifier) -> LocaleId {
        self.inner.config.locales.choose(asked, to)
    }

    /// The segments the SMS of `action` in `locale` costs (0 for no SMS), as the templates
    /// will render it.
    fn segments(&self, action: LimitAction, locale: LocaleId, sms: Option<SmsTarget>) -> u32 {
        let per = self.inner.config.sms_segments.get(locale.0).copied().unwrap_or_default();
        match (action, sms.is_some()) {
            (_, false) => 0,
            (LimitAction::Send(Purpose::Register), true) => per.register,
            (LimitAction::Send(_), true) => per.login,
            (LimitAction::Resend(_), true) => per.resend,
            (LimitAction::Failover(_), true) => per.login,
            (LimitAction::Verify(_) | LimitAction::Challenge, true) => 0,
        }
    }

    /// Asks the limiter whether `action` may go ahead; an SMS send costs `segments`.
    pub(crate) async fn limit(
        &self,
        action: LimitAction,
        ident: IdentHash,
        sms: Option<SmsTarget>,
        segments: u32,
        ctx: &RequestContext,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let req = LimitRequest { action, ident, client_ip: ctx.client_ip, sms, segments, now };
        let started = std::time::Instant::now();
        let decision = self.inner.ports.limiter.check(&req).await;
        self.inner.metrics.limit(action, &decision, started.elapsed());
        match decision {
            Ok(Decision::Allow) => {
                if let (Some(target), true) = (sms, action.sends()) {
                    self.inner.metrics.sms.code(target.country_code(), CodeEvent::Sent);
                }
                Ok(())
            }
            Ok(Decision::Deny { rule: LimitRule::DestinationNotAllowed, .. }) => {
                Err(EngineError::DestinationNotAllowed)
            }
            Ok(Decision::Deny { rule, retry_after }) => {
                if rule == LimitRule::SmsBudget {
                    let until = now.plus(retry_after).as_millis();
                    self.inner.sms_budget_spent_until.fetch_max(until, std::sync::atomic::Ordering::Relaxed);
                }
                Err(EngineError::Limited { rule, retry_after })
            }
            Err(e) => Err(EngineError::Unavailable(e.to_string())),
        }
    }

    /// The gate the dispatcher asks before it sends a code again on another route (delivery
    /// receipts): the limits count that send like any other. Holds the engine weakly: the
    /// dispatcher is one of the engine's ports.
    pub fn failover_gate(&self) -> Arc<dyn FailoverGate> {
        Arc::new(EngineGate(Arc::downgrade(&self.inner)))
    }

    /// The conversion guard's destinations, worst first (`GET /v1/admin/destinations`).
    pub async fn destinations(&self, limit: usize) -> Result<Vec<DestinationState>, EngineError> {
        self.inner.ports.limiter.destinations(self.now(), limit).await.map_err(unavailable)
    }

    /// An operator's change to one destination of the conversion guard, audited (the
    /// destination itself is not written: a prefix is part of phone numbers).
    pub async fn change_destination(
        &self,
        ctx: &RequestContext,
        subject: Subject,
        change: DestinationChange,
    ) -> Result<DestinationState, EngineError> {
        let mut trail = Trail::new(Api::AdminDestination, None);
        trail.step = Step::Limit;
        trail.note = match (change, subject) {
            (DestinationChange::Pin(_), Subject::Country(_)) => "country pinned to a guard mode",
            (DestinationChange::Pin(_), _) => "number prefix pinned to a guard mode",
            (_, Subject::Country(_)) => "country's guard window lifted and pin removed",
            _ => "number prefix's guard window lifted and pin removed",
        };
        let result =
            self.inner.ports.limiter.change_destination(subject, change, self.now()).await.map_err(unavailable);
        if result.is_ok() {
            trail.step = Step::Done;
        }
        self.finish(ctx, trail, result).await
    }

    /// An operator's action the front end carried out (a backup), audited as one event: `Done`
    /// when it succeeded, else the step it failed at. Names no identifier or account.
    pub async fn audit_operation<T>(
        &self,
        ctx: &RequestContext,
        api: Api,
        failed_at: Step,
        note: &'static str,
        result: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut trail = Trail::new(api, None);
        trail.step = if result.is_ok() { Step::Done } else { failed_at };
        trail.note = note;
        self.write_event(ctx, trail, result).await
    }

    /// A key rotation (by an operator, or on schedule), audited under `key_rotation` with
    /// `note` saying which key; nothing of the key is written.
    pub async fn record_key_rotation(
        &self,
        ctx: &RequestContext,
        note: &'static str,
        result: Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut trail = Trail::new(Api::KeyRotation, None);
        trail.step = if result.is_ok() { Step::Done } else { Step::Store };
        trail.note = note;
        self.finish(ctx, trail, result).await
    }

    /// Until when an SMS budget (the total, or a country's) is spent, if a send was refused for
    /// it today: what readiness reports.
    pub fn sms_budget_spent_until(&self) -> Option<Timestamp> {
        let until =
            Timestamp::from_millis(self.inner.sms_budget_spent_until.load(std::sync::atomic::Ordering::Relaxed));
        (until > self.now()).then_some(until)
    }

    /// Stores a sealed code on the node that owns its key; returns its expiry and whether a
    /// registration waits for it.
    pub(crate) async fn issue_on_owner(&self, cmd: ShardCommand) -> Result<(Timestamp, bool), EngineError> {
        match self.on_owner(cmd).await? {
            ShardAnswer::Issued(expires_at, registration) => Ok((expires_at, registration)),
            ShardAnswer::Checked(..) => {
                Err(EngineError::Unavailable("the owner answered an issue with a verdict".into()))
            }
        }
    }

    /// Checks an attempt (a code or a device signature) on the node that owns its key; a
    /// verified registration comes with its profile.
    pub(crate) async fn check_on_owner(
        &self,
        cmd: ShardCommand,
    ) -> Result<(VerifyOutcome, Option<Box<Profile>>), EngineError> {
        match self.on_owner(cmd).await? {
            ShardAnswer::Checked(outcome, profile) => Ok((outcome, profile)),
            ShardAnswer::Issued(..) => {
                Err(EngineError::Unavailable("the owner answered a check with an expiry".into()))
            }
        }
    }

    /// Runs a challenge command where its challenge lives: on a local shard, or (in a
    /// cluster) on the node that owns the key's partition. If the owner left while we asked,
    /// the command goes once more to the key's new owner, as soon as membership names one.
    async fn on_owner(&self, cmd: ShardCommand) -> Result<ShardAnswer, EngineError> {
        if let Some(cluster) = self.inner.cluster.get() {
            let subject = cmd.key().subject;
            for attempt in 0..2 {
                let Route::Remote { owner, gateway } = cluster.route(&subject) else { break };
                match cluster.forward(&owner, &gateway, &cmd).await {
                    Ok(answer) => return Ok(answer),
                    Err(ForwardError::OwnerLeft { .. })
                        if attempt == 0 && cluster.wait_for_new_owner(&subject, &owner, OWNER_HANDOVER).await => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.inner.router.run(cmd).await.map_err(|e: ShardError| EngineError::Unavailable(e.to_string()))
    }

    /// Joins a cluster: from now on, challenge commands run on the owner of their key.
    pub async fn join_cluster(&self, settings: ClusterSettings) -> Result<Cluster, ClusterError> {
        let cluster = Cluster::start(settings, self.inner.router.clone(), self.inner.clock.clone()).await?;
        if self.inner.cluster.set(cluster.clone()).is_err() {
            cluster.stop().await;
            return Err(ClusterError::already_joined());
        }
        Ok(cluster)
    }

    /// The cluster this engine routes through, if it joined one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.get()
    }

    /// Writes the call's audit event and returns its result. A success is returned only once
    /// its event is durable; if the event cannot be written, the call fails with 503.
    pub(crate) async fn finish<T>(
        &self,
        ctx: &RequestContext,
        mut trail: Trail,
        result: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let (held, rehearsed) = (trail.held.take(), trail.rehearsed);
        let result = self.write_event(ctx, trail, result).await;
        // Delivery starts after the event is written (see `Notifier::enqueue`), whatever the
        // event's fate (the message is held; a queued code goes out), and a moment later still:
        // the dispatcher's routing is work that would otherwise run beside this call's answer
        // and make it (a code sent: an account exists) slower than one that sent nothing. The
        // call does not wait; the code leaves `DELIVERY_NOTICE` later, less than a batch waits.
        // A rehearsal queues the same entry, which starts nothing (`flows::notices`).
        if held.is_some() || rehearsed {
            self.inner.notices.push(held);
        }
        result
    }

    async fn write_event<T>(
        &self,
        ctx: &RequestContext,
        trail: Trail,
        result: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if let Err(EngineError::Limited { .. }) = &result {
            // Denials repeat at the client's pace: aggregated like the front end's refusals.
            let key = RefusalKey::new(trail.api, trail.step, AuditOutcome::Limited, ctx.client_ip);
            if self.admit_refusal(key) == Admit::Count {
                return result;
            }
        }
        let (outcome, message) = match &result {
            Ok(_) => (AuditOutcome::Ok, Cow::Borrowed(if trail.note.is_empty() { "ok" } else { trail.note })),
            Err(e @ EngineError::Limited { .. }) => (AuditOutcome::Limited, Cow::Owned(e.to_string())),
            Err(e) if e.is_server_side() => (AuditOutcome::Failed, Cow::Owned(e.to_string())),
            Err(e) => (AuditOutcome::Rejected, Cow::Owned(e.to_string())),
        };
        let event = self.event(ctx, &trail, outcome, message);
        let written = match (&result, trail.session) {
            (Ok(_), Some(session)) => {
                let method = session.method;
                let opened = self.inner.ports.sessions.open_session(session, event).await;
                if opened.is_ok() {
                    self.inner.metrics.tokens_issued(method);
                }
                opened
            }
            _ => self.inner.ports.audit.append(event).await,
        };
        match written {
            Ok(()) => result,
            Err(e) => {
                tracing::error!(target: LOG_TARGET, error = %e, api = trail.api.as_str(), "could not write the call's audit event");
                match result {
                    Ok(_) => Err(unavailable(e)),
                    Err(original) => Err(original),
                }
            }
        }
    }

    /// The call's audit event. Allocates nothing but a formatted message: the trace id and
    /// user agent are shared with the request context.
    fn event(
        &self,
        ctx: &RequestContext,
        trail: &Trail,
        outcome: AuditOutcome,
        message: Cow<'static, str>,
    ) -> AuditEvent {
        AuditEvent {
            at: self.now(),
            trace_id: ctx.trace_id.clone(),
            api: trail.api,
            step: trail.step,
            outcome,
            message,
            client_ip: ctx.client_ip,
            user_agent: ctx.user_agent.clone(),
            ident_hash: trail.ident,
            user_id: trail.user,
        }
    }

    /// Live challenges per shard.
    pub async fn shard_stats(&self) -> Vec<ShardStats> {
        self.inner.router.stats().await
    }

    /// Sets the gauges of live challenges per shard (called periodically, not per request).
    pub async fn refresh_gauges(&self) {
        let stats = self.shard_stats().await;
        let live = stats.iter().map(|s| (s.index, s.challenges));
        self.inner.metrics.challenges(live, stats.iter().map(|s| s.pending).sum());
        crate::metrics::end_budget_days(self.now());
    }

    /// One-time-code counters since the engine started.
    pub fn otp_stats(&self) -> OtpStats {
        self.inner.metrics.otp_stats()
    }

    /// Shard restarts performed by the supervisor since start.
    pub async fn shard_restarts(&self) -> Result<u64, EngineError> {
        match self
            .inner
            .supervisor
            .call(|reply| SupervisorMsg::Restarts { reply }, Some(self.inner.config.call_timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(n)) => Ok(n),
            _ => Err(EngineError::Unavailable("supervisor did not answer".into())),
        }
    }

    /// Makes the shard that owns `identifier` panic (fault injection for tests).
    #[cfg(feature = "testkit")]
    pub fn inject_shard_panic(&self, identifier: &Identifier) -> usize {
        let index = self.inner.router.index_for(self.identifier_hash(identifier).shard_bits());
        if let Some(shard) = self.inner.router.actor(index) {
            let _ = shard.cast(crate::actors::shard::ShardMsg::Panic);
        }
        index
    }
}

/// The audit event that closes a window of aggregated refusals (`rules::refusals`).
fn summary_event(summary: &Summary, now: Timestamp) -> AuditEvent {
    let key = summary.key;
    AuditEvent {
        at: now,
        trace_id: TraceId::from("refusals"),
        api: key.api,
        step: key.step,
        outcome: key.outcome,
        message: Cow::Owned(summary.message()),
        client_ip: key.client,
        user_agent: None,
        ident_hash: None,
        user_id: None,
    }
}

/// [`Engine::failover_gate`].
struct EngineGate(std::sync::Weak<Inner>);

#[async_trait::async_trait]
impl FailoverGate for EngineGate {
    async fn allow(&self, message: &OutboundMessage, now: Timestamp) -> bool {
        let Some(inner) = self.0.upgrade() else { return false };
        let sms = SmsTarget::of(&message.to);
        // Priced in the message's locale, as its first send was.
        let locale = inner.config.locales.choose(message.locale.as_ref(), &message.to);
        let per = inner.config.sms_segments.get(locale.0).copied().unwrap_or_default();
        let segments = match (sms.is_some(), message.resend, message.purpose) {
            (false, ..) => 0,
            (true, true, _) => per.resend,
            (true, false, Purpose::Register) => per.register,
            (true, false, _) => per.login,
        };
        let action = LimitAction::Failover(message.purpose);
        let req = LimitRequest { action, ident: message.ident_hash, client_ip: None, sms, segments, now };
        let started = std::time::Instant::now();
        let decision = inner.ports.limiter.check(&req).await;
        inner.metrics.limit(action, &decision, started.elapsed());
        let allowed = matches!(decision, Ok(Decision::Allow));
        if let (Some(target), true) = (sms, allowed) {
            inner.metrics.sms.code(target.country_code(), CodeEvent::Sent);
        }
        allowed
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(e.to_string())
}
