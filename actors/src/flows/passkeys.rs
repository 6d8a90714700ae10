//! Passkeys (WebAuthn): registration beside device keys, and discoverable login.
//!
//! ```text
//! register options (Bearer, fresh OTP login): limiter (per user) → challenge + seal
//!                                    → shard Issue (60 s) → the relying party's options → audit
//! register {name, credential}:       parse → relying party checks (origin, RP id, challenge,
//!                                    user verified, attestation) → shard Redeem (single use)
//!                                    → cap/duplicate check (atomic in the store) → audit
//! login options {}:                  limiter (per client address) → challenge + seal
//!                                    → shard Issue → options → audit
//! login {credential}:                parse → limiter (per credential and address) → passkey
//!                                    lookup (and a decoy) → assertion check under its key or
//!                                    a decoy key → shard Redeem → counter recorded atomically
//!                                    → account → session (method passkey) → audit
//! ```
//!
//! Challenges live in the shards like device-login nonces (purpose `DeviceLogin`, the device
//! lifetime and attempt cap), under a subject made of the challenge itself (and the account, for
//! registration): each stands alone, is single use, and a wrong answer counts against it.
//!
//! # What a stranger learns
//!
//! The login options take nothing but the client's address: they cannot tell accounts apart.
//! A login answers `passkey_invalid` alike for an unknown credential and a wrong signature,
//! after the same work: one store read that finds a passkey and one that finds none, and one
//! assertion check (under a decoy key when the credential is unknown). Only whoever holds a
//! passkey's private key can learn more (`passkey_clone_suspected`).
//!
//! Registration needs a login by code within `passkeys.enrol_max_auth_age`, like a device key.

use std::time::Duration;

use crate::actors::shard::{ChallengeKey, ShardCommand};
use crate::flows::devices::Bearer;
use crate::flows::engine::{Engine, Grant, RequestContext, Trail, unavailable};
use crate::flows::error::EngineError;
use crate::ports::{
    AuthMethod, CeremonyError, CeremonyOptions, CeremonyResponse, InsertPasskey, Passkey, PasskeyHolder, PasskeyUse,
    RevokeReason, User,
};
use crate::rules::audit::{Api, Step};
use crate::rules::challenge::{Purpose, VerifyOutcome};
use crate::rules::code::Sealed;
use crate::rules::device_key::Nonce;
use crate::rules::ids::UserId;
use crate::rules::keys::IdentHash;
use crate::rules::limits::{IpBlock, LimitAction};
use crate::rules::passkey::{CredentialId, PasskeyRef};

/// A ceremony's options, for the browser, and how long its challenge lives.
#[derive(Clone, Debug)]
pub struct PasskeyOptions {
    pub options: CeremonyOptions,
    pub expires_in: Duration,
}

/// Domain tags of the subjects passkey challenges and limits are kept under.
const REGISTER: &[u8] = b"otpd-passkey-register";
const LOGIN: &[u8] = b"otpd-passkey-login";
const SCOPE: &[u8] = b"otpd-passkey-scope";

impl Engine {
    /// `POST /v1/passkeys/options`: a registration challenge and the options for
    /// `navigator.credentials.create()`.
    pub async fn passkey_register_options(
        &self,
        ctx: &RequestContext,
        bearer: Bearer,
    ) -> Result<PasskeyOptions, EngineError> {
        let mut trail = Trail::new(Api::PasskeyRegisterOptions, None);
        let result = async {
            let now = self.now();
            let user = self.fresh_user(&mut trail, bearer).await?;
            trail.step = Step::Limit;
            let scoped = self.passkey_subject(SCOPE, user.id.0.as_bytes(), &[]);
            self.limit(LimitAction::Challenge, scoped, None, 0, ctx, now).await?;
            trail.step = Step::List;
            let exclude = self.passkey_ids(user.id).await?;
            trail.step = Step::Challenge;
            let challenge = Nonce::generate();
            let expires_at = self.issue_passkey_challenge(REGISTER, user.id.0.as_bytes(), &challenge).await?;
            let options = self
                .inner
                .ports
                .relying_party
                .registration_options(challenge.as_bytes(), &holder(&user), &exclude)
                .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            trail.step = Step::Done;
            Ok(PasskeyOptions { options, expires_in: now.until(expires_at) })
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `POST /v1/passkeys`: registers the credential the browser made for the caller's last
    /// registration challenge.
    pub async fn register_passkey(
        &self,
        ctx: &RequestContext,
        bearer: Bearer,
        name: String,
        credential: &str,
    ) -> Result<Passkey, EngineError> {
        let mut trail = Trail::new(Api::PasskeyRegister, None);
        let result = self.register_passkey_flow(&mut trail, bearer, name, credential).await;
        self.finish(ctx, trail, result).await
    }

    async fn register_passkey_flow(
        &self,
        trail: &mut Trail,
        bearer: Bearer,
        name: String,
        credential: &str,
    ) -> Result<Passkey, EngineError> {
        let now = self.now();
        let user = self.fresh_user(trail, bearer).await?;
        trail.step = Step::Key;
        let rp = &self.inner.ports.relying_party;
        let response = rp.read_registration(credential).map_err(EngineError::PasskeyRefused)?;
        let exclude = self.passkey_ids(user.id).await?;
        trail.step = Step::Signature;
        let verdict = rp.finish_registration(&response, &response.challenge, &holder(&user), &exclude);
        trail.step = Step::Challenge;
        let outcome = self.redeem_passkey_challenge(REGISTER, user.id.0.as_bytes(), &response, verdict.is_ok()).await?;
        let made = match (outcome, verdict) {
            (VerifyOutcome::Verified, Ok(made)) => made,
            (VerifyOutcome::Wrong { .. }, Err(e)) | (VerifyOutcome::Verified, Err(e)) => {
                return Err(EngineError::PasskeyRefused(e));
            }
            (outcome, _) => return Err(challenge_error(outcome)),
        };
        trail.step = Step::Store;
        let passkey = Passkey {
            id: made.id,
            user_id: user.id,
            name,
            credential: made.credential,
            sign_count: made.sign_count,
            backup_eligible: made.backup_eligible,
            backup_state: made.backup_state,
            created_at: now,
            last_used_at: None,
        };
        let max = self.inner.config.passkeys.max_per_user;
        match self.inner.ports.passkeys.insert_passkey(&passkey, max).await.map_err(unavailable)? {
            InsertPasskey::Inserted => {}
            InsertPasskey::LimitReached { max } => return Err(EngineError::PasskeyLimit { max }),
            InsertPasskey::Exists => return Err(EngineError::PasskeyExists),
        }
        trail.note = "passkey registered";
        trail.step = Step::Done;
        Ok(passkey)
    }

    /// `GET /v1/passkeys`: the account's passkeys, oldest first.
    pub async fn passkeys(&self, ctx: &RequestContext, bearer: Bearer) -> Result<Vec<Passkey>, EngineError> {
        let mut trail = Trail::new(Api::PasskeyList, None);
        let result = async {
            self.authenticate(&mut trail, bearer.user, bearer.session).await?;
            trail.step = Step::List;
            let all = self.inner.ports.passkeys.passkeys_of_user(bearer.user).await.map_err(unavailable)?;
            trail.step = Step::Done;
            Ok(all)
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `DELETE /v1/passkeys/{id}`: deletes one of the caller's passkeys (nothing of it is
    /// kept) and ends the sessions it opened, as revoking a device does. Another account's
    /// passkey reads as not found.
    pub async fn delete_passkey(
        &self,
        ctx: &RequestContext,
        bearer: Bearer,
        id: CredentialId,
    ) -> Result<(), EngineError> {
        let mut trail = Trail::new(Api::PasskeyDelete, None);
        let result = async {
            self.authenticate(&mut trail, bearer.user, bearer.session).await?;
            trail.step = Step::Revoke;
            let deleted = self.inner.ports.passkeys.delete_passkey(bearer.user, &id).await.map_err(unavailable)?;
            if !deleted {
                return Err(EngineError::PasskeyNotFound);
            }
            trail.step = Step::Sessions;
            let (opener, reason, now) = (PasskeyRef::of(&id).0, RevokeReason::PasskeyDeleted, self.now());
            let sessions = &self.inner.ports.sessions;
            let n = sessions.revoke_user_sessions(bearer.user, Some(opener), reason, now).await.map_err(unavailable)?;
            self.inner.metrics.sessions_revoked(reason, n);
            trail.note = "passkey deleted with its sessions";
            trail.step = Step::Done;
            Ok(())
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `POST /v1/passkey-login/options`: a login challenge and the options for
    /// `navigator.credentials.get()`, the same for everyone (no identifier is asked).
    pub async fn passkey_login_options(&self, ctx: &RequestContext) -> Result<PasskeyOptions, EngineError> {
        let mut trail = Trail::new(Api::PasskeyLoginOptions, None);
        let result = async {
            let now = self.now();
            trail.step = Step::Limit;
            let scoped = self.passkey_subject(SCOPE, LOGIN, &client_block(ctx));
            self.limit(LimitAction::Challenge, scoped, None, 0, ctx, now).await?;
            trail.step = Step::Challenge;
            let challenge = Nonce::generate();
            let expires_at = self.issue_passkey_challenge(LOGIN, &[], &challenge).await?;
            let options = self
                .inner
                .ports
                .relying_party
                .login_options(challenge.as_bytes())
                .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            trail.step = Step::Done;
            Ok(PasskeyOptions { options, expires_in: now.until(expires_at) })
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `POST /v1/passkey-login/verify`: checks the assertion and signs its account in.
    pub async fn passkey_login(&self, ctx: &RequestContext, credential: &str) -> Result<Grant, EngineError> {
        let mut trail = Trail::new(Api::PasskeyLogin, None);
        let result = self.passkey_login_flow(&mut trail, ctx, credential).await;
        self.finish(ctx, trail, result).await
    }

    async fn passkey_login_flow(
        &self,
        trail: &mut Trail,
        ctx: &RequestContext,
        credential: &str,
    ) -> Result<Grant, EngineError> {
        let now = self.now();
        let rp = &self.inner.ports.relying_party;
        trail.step = Step::Key;
        let response = rp.read_assertion(credential).map_err(EngineError::PasskeyRefused)?;

        trail.step = Step::Limit;
        let scoped = self.passkey_subject(SCOPE, response.credential_id.as_bytes(), &client_block(ctx));
        self.limit(LimitAction::Verify(Purpose::DeviceLogin), scoped, None, 0, ctx, now).await?;

        trail.step = Step::Passkey;
        let passkey = self.lookup_passkey(&response.credential_id).await?;
        match &passkey {
            Some(p) => trail.user = Some(p.user_id),
            None => {
                trail.note = "unknown passkey; decoy";
                self.inner.metrics.enumeration_safe(trail.api);
            }
        }

        trail.step = Step::Signature;
        let verdict = rp.finish_assertion(&response, &response.challenge, passkey.as_ref());
        // The account the authenticator names must be the passkey's own.
        let verdict = match (verdict, &passkey, &response.user_handle) {
            (Ok(_), Some(p), Some(handle)) if handle.as_slice() != p.user_id.0.as_bytes() => {
                Err(CeremonyError::Invalid("the user handle names another account"))
            }
            (verdict, ..) => verdict,
        };

        trail.step = Step::Challenge;
        let outcome = self.redeem_passkey_challenge(LOGIN, &[], &response, verdict.is_ok()).await?;
        let used = match (outcome, verdict) {
            (VerifyOutcome::Verified, Ok(used)) => used,
            (outcome @ (VerifyOutcome::Wrong { .. } | VerifyOutcome::Verified), Err(e)) => {
                let attempts_left = match outcome {
                    VerifyOutcome::Wrong { attempts_left } => attempts_left,
                    _ => 0,
                };
                return Err(match e {
                    CeremonyError::CounterRegressed => {
                        trail.note = "passkey counter went backwards: possible clone; refused";
                        EngineError::PasskeyCloneSuspected
                    }
                    CeremonyError::Invalid(_) => EngineError::PasskeyInvalid { attempts_left },
                    other => EngineError::PasskeyRefused(other),
                });
            }
            (outcome, _) => return Err(challenge_error(outcome)),
        };
        // Only a registered passkey's valid assertion reaches here.
        let mut passkey = passkey.ok_or(EngineError::PasskeyInvalid { attempts_left: 0 })?;

        trail.step = Step::Counter;
        passkey.credential = used.credential;
        passkey.sign_count = used.sign_count;
        passkey.backup_state = used.backup_state;
        passkey.backup_eligible = used.backup_eligible;
        match self.inner.ports.passkeys.record_passkey_use(&passkey, now).await.map_err(unavailable)? {
            PasskeyUse::Recorded => {}
            PasskeyUse::Regressed { .. } => {
                trail.note = "passkey counter went backwards: possible clone; refused";
                return Err(EngineError::PasskeyCloneSuspected);
            }
            PasskeyUse::Missing => return Err(EngineError::PasskeyInvalid { attempts_left: 0 }),
        }

        trail.step = Step::Account;
        let user = self.inner.ports.users.user_by_id(passkey.user_id).await.map_err(unavailable)?;
        let user = user.filter(|u| u.verified).ok_or(EngineError::PasskeyInvalid { attempts_left: 0 })?;
        trail.ident = Some(user.ident_hash);
        trail.step = Step::Session;
        let method = AuthMethod::Passkey(PasskeyRef::of(&passkey.id));
        let grant = self.open_session(trail, ctx, user, method, now);
        trail.note = "session opened by passkey";
        trail.step = Step::Done;
        Ok(grant)
    }

    /// The caller's account, if its session was opened by a code recently enough to register
    /// a passkey (see the module doc).
    async fn fresh_user(&self, trail: &mut Trail, bearer: Bearer) -> Result<User, EngineError> {
        let now = self.now();
        let (user, session) = self.authenticate(trail, bearer.user, bearer.session).await?;
        trail.step = Step::Freshness;
        let max_age = self.inner.config.passkeys.enrol_max_auth_age;
        if !bearer.fresh_code_login(&session, now, max_age) {
            return Err(EngineError::PasskeyFreshLoginRequired { max_age });
        }
        Ok(user)
    }

    async fn passkey_ids(&self, user: UserId) -> Result<Vec<CredentialId>, EngineError> {
        let all = self.inner.ports.passkeys.passkeys_of_user(user).await.map_err(unavailable)?;
        Ok(all.into_iter().map(|p| p.id).collect())
    }

    async fn issue_passkey_challenge(
        &self,
        tag: &[u8],
        owner: &[u8],
        challenge: &Nonce,
    ) -> Result<crate::rules::clock::Timestamp, EngineError> {
        let sealed = Sealed::seal_secret(&self.inner.keys, challenge.as_bytes());
        let key = ChallengeKey {
            subject: self.passkey_subject(tag, owner, challenge.as_bytes()),
            purpose: Purpose::DeviceLogin,
        };
        let (expires_at, _) =
            self.issue_on_owner(ShardCommand::Issue { key, sealed, profile: None, now: self.now() }).await?;
        Ok(expires_at)
    }

    async fn redeem_passkey_challenge(
        &self,
        tag: &[u8],
        owner: &[u8],
        response: &CeremonyResponse,
        signature_valid: bool,
    ) -> Result<VerifyOutcome, EngineError> {
        let key = ChallengeKey {
            subject: self.passkey_subject(tag, owner, &response.challenge),
            purpose: Purpose::DeviceLogin,
        };
        let nonce = Nonce::from_bytes(response.challenge);
        let (outcome, _) =
            self.check_on_owner(ShardCommand::Redeem { key, nonce, signature_valid, now: self.now() }).await?;
        Ok(outcome)
    }

    /// The passkey `id`, after one read that finds a passkey and one that finds none,
    /// whichever it is (see `Engine::lookup_user`).
    async fn lookup_passkey(&self, id: &CredentialId) -> Result<Option<Passkey>, EngineError> {
        let store = &self.inner.ports.passkeys;
        let passkey = store.passkey(id).await.map_err(unavailable)?;
        let random = || CredentialId(rand::random::<[u8; 32]>().to_vec());
        let decoy = match &passkey {
            Some(_) => {
                *self.inner.known_passkey.lock() = Some(id.clone());
                random()
            }
            None => self.inner.known_passkey.lock().clone().unwrap_or_else(random),
        };
        let _ = store.passkey(&decoy).await.map_err(unavailable)?;
        Ok(passkey)
    }

    /// A keyed digest of a tag and the parts that make a passkey subject (challenge, limits).
    fn passkey_subject(&self, tag: &[u8], owner: &[u8], rest: &[u8]) -> IdentHash {
        let mut material = Vec::with_capacity(tag.len() + 2 + owner.len() + rest.len());
        material.extend_from_slice(tag);
        material.extend_from_slice(&(owner.len() as u16).to_be_bytes());
        material.extend_from_slice(owner);
        material.extend_from_slice(rest);
        self.inner.keys.device_subject(&material)
    }
}

/// The account's name in the authenticator's list: its identifier as it signed up.
fn holder(user: &User) -> PasskeyHolder {
    let name = user.identifier.as_str().to_owned();
    let display = format!("{} {}", user.first_name, user.last_name).trim().to_owned();
    PasskeyHolder { user: user.id, display_name: if display.is_empty() { name.clone() } else { display }, name }
}

/// The client's address block (IPv6 by /64), or nothing.
fn client_block(ctx: &RequestContext) -> [u8; 16] {
    ctx.client_ip.map(|ip| IpBlock::of(ip).0).unwrap_or_default()
}

/// The error of a challenge that was not there to verify against.
fn challenge_error(outcome: VerifyOutcome) -> EngineError {
    match outcome {
        VerifyOutcome::Blocked => EngineError::ChallengeBurned,
        VerifyOutcome::Expired => EngineError::ChallengeExpired,
        VerifyOutcome::AlreadyUsed => EngineError::ChallengeAlreadyUsed,
        VerifyOutcome::Wrong { attempts_left } => EngineError::PasskeyInvalid { attempts_left },
        VerifyOutcome::NoChallenge | VerifyOutcome::Verified => EngineError::NoPendingChallenge,
    }
}
