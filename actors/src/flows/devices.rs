//! Device enrolment and fingerprint (device-key) login.
//!
//! ```text
//! enrol  (Bearer, fresh OTP login):  key parse → cap/duplicate check (atomic in the store) → audit
//! challenge {device_id}:             device lookup → nonce + seal → shard Issue (DeviceLogin, 60 s) → audit
//! verify {device_id, nonce, sig}:    limiter → device lookup → signature check (here, off the shard)
//!                                    → shard Redeem (nonce must open the seal AND the signature
//!                                      must hold, else one wrong attempt;
//!                                      `max_attempts` of them burn the challenge)
//!                                    → account → session (method device) → audit
//! ```
//!
//! The challenge of a device lives in the same shards as OTP challenges, under the subject
//! `Keys::device_subject(device id)` and [`Purpose::DeviceLogin`]; it is single use, has its own
//! lifetime, and a new challenge for the same device replaces the previous one.
//!
//! # Device ids cannot be probed
//!
//! `POST /v1/device-login/challenge` answers every well-formed device id the same way: known,
//! unknown, revoked or another user's, the engine does the same work (lookup, nonce, seal,
//! shard, audit) and returns a nonce of the same shape. At verification an unknown device's
//! signature is checked against a fixed decoy P-256 key, so it costs the same time and fails
//! like a wrong signature (`invalid_signature`, counted). Only a caller whose signature
//! verifies under a revoked device's own key learns `device_revoked`: that is proof of holding
//! the device's private key, the same rule as "not verified" being told only to the holder of
//! the phone.
//!
//! # Enrolment needs a fresh login by code
//!
//! A device key is a long-lived credential, so enrolling one needs more than any valid access
//! token: the token's `iat` and its session's login must both be within
//! `devices.enrol_max_auth_age` (default 5 minutes), and the session must have been opened by
//! a one-time code, not by another device or an old session kept alive by refreshes.

use std::sync::LazyLock;
use std::time::Duration;

use uuid::Uuid;

use crate::actors::shard::{ChallengeKey, ShardCommand};
use crate::flows::engine::{Engine, Grant, RequestContext, Trail, unavailable};
use crate::flows::error::EngineError;
use crate::ports::{AuthMethod, Device, InsertDevice, Platform, RevokeReason};
use crate::rules::audit::{Api, Step};
use crate::rules::challenge::{Purpose, VerifyOutcome};
use crate::rules::clock::Timestamp;
use crate::rules::code::Sealed;
use crate::rules::device_key::{DeviceKey, KeyInput, Nonce, Verifier, login_message};
use crate::rules::ids::{DeviceId, SessionId, UserId};
use crate::rules::limits::LimitAction;

/// What a client asks to enrol.
#[derive(Clone, Debug)]
pub struct Enrolment {
    pub name: String,
    pub platform: Platform,
    pub key: KeyInput,
}

/// The caller of an authenticated endpoint, as its (signature-checked) access token says.
#[derive(Clone, Copy, Debug)]
pub struct Bearer {
    pub user: UserId,
    pub session: SessionId,
    /// The token's `iat`.
    pub issued_at: Timestamp,
}

/// A device-login challenge, as returned to the client.
#[derive(Clone, Debug)]
pub struct DeviceChallenge {
    pub device_id: DeviceId,
    pub nonce: Nonce,
    pub expires_in: Duration,
    pub audience: String,
}

/// Checks signatures of unknown devices so they cost what a real check costs. Its private key
/// is a fixed public constant: nobody needs it, since a decoy check is never allowed to pass.
static DECOY_KEY: LazyLock<Verifier> = LazyLock::new(|| {
    let sk = p256::ecdsa::SigningKey::from_slice(&[0x5a; 32]).expect("a valid P-256 scalar");
    Verifier::P256(*sk.verifying_key())
});

impl Engine {
    /// `POST /v1/devices`: enrols a public key for the caller's account.
    pub async fn enrol_device(
        &self,
        ctx: &RequestContext,
        bearer: Bearer,
        enrolment: Enrolment,
    ) -> Result<Device, EngineError> {
        let mut trail = Trail::new(Api::DeviceEnrol, None);
        let result = self.enrol_flow(&mut trail, bearer, enrolment).await;
        self.finish(ctx, trail, result).await
    }

    async fn enrol_flow(&self, trail: &mut Trail, bearer: Bearer, enrolment: Enrolment) -> Result<Device, EngineError> {
        let now = self.now();
        let (user, session) = self.authenticate(trail, bearer.user, bearer.session).await?;
        trail.step = Step::Freshness;
        let policy = &self.inner.config.devices;
        let max_age = policy.enrol_max_auth_age;
        let fresh = session.method == AuthMethod::Otp
            && now.since(session.created_at) <= max_age
            && now.since(bearer.issued_at) <= max_age;
        if !fresh {
            return Err(EngineError::FreshLoginRequired { max_age });
        }
        trail.step = Step::Key;
        let key = DeviceKey::parse(&enrolment.key).map_err(|e| EngineError::InvalidPublicKey(e.0))?;
        trail.step = Step::Store;
        let device = Device {
            id: DeviceId(Uuid::now_v7()),
            user_id: user.id,
            name: enrolment.name,
            platform: enrolment.platform,
            key,
            created_at: now,
            revoked_at: None,
        };
        let devices = &self.inner.ports.devices;
        match devices.insert_device(&device, policy.max_per_user).await.map_err(unavailable)? {
            InsertDevice::Inserted => {}
            InsertDevice::LimitReached { max } => return Err(EngineError::DeviceLimit { max }),
            InsertDevice::DuplicateKey(_) => return Err(EngineError::DeviceExists),
        }
        trail.note = "device enrolled";
        trail.step = Step::Done;
        Ok(device)
    }

    /// `GET /v1/devices`: the account's active devices, oldest first.
    pub async fn devices(&self, ctx: &RequestContext, bearer: Bearer) -> Result<Vec<Device>, EngineError> {
        let mut trail = Trail::new(Api::DeviceList, None);
        let result = async {
            self.authenticate(&mut trail, bearer.user, bearer.session).await?;
            trail.step = Step::List;
            let all = self.inner.ports.devices.devices_of_user(bearer.user).await.map_err(unavailable)?;
            trail.step = Step::Done;
            Ok(all.into_iter().filter(Device::is_active).collect())
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `DELETE /v1/devices/{id}`: revokes one of the caller's devices and every session it
    /// opened. Repeating it is harmless; another account's device reads as not found.
    pub async fn revoke_device(&self, ctx: &RequestContext, bearer: Bearer, id: DeviceId) -> Result<(), EngineError> {
        let mut trail = Trail::new(Api::DeviceRevoke, None);
        let result = async {
            let now = self.now();
            self.authenticate(&mut trail, bearer.user, bearer.session).await?;
            trail.step = Step::Revoke;
            let devices = &self.inner.ports.devices;
            devices
                .revoke_device(bearer.user, id, now)
                .await
                .map_err(unavailable)?
                .ok_or(EngineError::DeviceNotFound)?;
            trail.step = Step::Sessions;
            let sessions = &self.inner.ports.sessions;
            let n = sessions
                .revoke_user_sessions(bearer.user, Some(id), RevokeReason::DeviceRevoked, now)
                .await
                .map_err(unavailable)?;
            self.inner.metrics.sessions_revoked(RevokeReason::DeviceRevoked, n);
            trail.note = "device revoked with its sessions";
            trail.step = Step::Done;
            Ok(())
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `POST /v1/device-login/challenge`: a fresh single-use nonce for `device_id`. Answers
    /// the same for every device id (see the module doc).
    pub async fn device_challenge(
        &self,
        ctx: &RequestContext,
        device_id: DeviceId,
    ) -> Result<DeviceChallenge, EngineError> {
        let mut trail = Trail::new(Api::DeviceChallenge, None);
        let result = async {
            let now = self.now();
            trail.step = Step::Device;
            let device = self.inner.ports.devices.device(device_id).await.map_err(unavailable)?;
            self.note_device(&mut trail, device.as_ref()).await;
            trail.step = Step::Challenge;
            let nonce = Nonce::generate();
            let sealed = Sealed::seal_secret(&self.inner.keys, nonce.as_bytes());
            let subject = self.inner.keys.device_subject(device_id.0.as_bytes());
            let key = ChallengeKey { subject, purpose: Purpose::DeviceLogin };
            let expires_at = self.issue_on_owner(ShardCommand::Issue { key, sealed, now }).await?;
            trail.step = Step::Done;
            Ok(DeviceChallenge {
                device_id,
                nonce,
                expires_in: now.until(expires_at),
                audience: self.inner.config.devices.audience.clone(),
            })
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `POST /v1/device-login/verify`: checks the signature over the challenge and signs the
    /// device's account in.
    pub async fn device_login(
        &self,
        ctx: &RequestContext,
        device_id: DeviceId,
        nonce: Nonce,
        signature: &[u8],
    ) -> Result<Grant, EngineError> {
        let mut trail = Trail::new(Api::DeviceVerify, None);
        let result = self.device_login_flow(&mut trail, ctx, device_id, nonce, signature).await;
        self.finish(ctx, trail, result).await
    }

    async fn device_login_flow(
        &self,
        trail: &mut Trail,
        ctx: &RequestContext,
        device_id: DeviceId,
        nonce: Nonce,
        signature: &[u8],
    ) -> Result<Grant, EngineError> {
        let now = self.now();
        let subject = self.inner.keys.device_subject(device_id.0.as_bytes());
        trail.step = Step::Limit;
        self.limit(LimitAction::Verify(Purpose::DeviceLogin), subject, None, ctx, now).await?;

        trail.step = Step::Device;
        let device = self.inner.ports.devices.device(device_id).await.map_err(unavailable)?;
        self.note_device(trail, device.as_ref()).await;

        trail.step = Step::Signature;
        let message = login_message(&self.inner.config.devices.audience, &device_id.0, &nonce);
        let signature_valid = match &device {
            Some(d) => d.key.verifier().map_err(unavailable)?.verify(&message, signature),
            None => {
                // Same cost as a real check; never allowed to pass.
                let _ = DECOY_KEY.verify(&message, signature);
                false
            }
        };

        trail.step = Step::Challenge;
        let key = ChallengeKey { subject, purpose: Purpose::DeviceLogin };
        let outcome = self.check_on_owner(ShardCommand::Redeem { key, nonce, signature_valid, now }).await?;
        self.inner.metrics.device_login(&outcome);
        match outcome {
            VerifyOutcome::Verified => {}
            VerifyOutcome::Wrong { attempts_left } => return Err(EngineError::InvalidSignature { attempts_left }),
            VerifyOutcome::Blocked => return Err(EngineError::ChallengeBurned),
            VerifyOutcome::Expired => return Err(EngineError::ChallengeExpired),
            VerifyOutcome::AlreadyUsed => return Err(EngineError::ChallengeAlreadyUsed),
            VerifyOutcome::NoChallenge => return Err(EngineError::NoPendingChallenge),
        }
        // Only a real device's valid signature reaches here.
        let device = device.ok_or(EngineError::InvalidSignature { attempts_left: 0 })?;
        if !device.is_active() {
            return Err(EngineError::DeviceRevoked);
        }

        trail.step = Step::Account;
        let user = self.inner.ports.users.user_by_id(device.user_id).await.map_err(unavailable)?;
        let user = user.filter(|u| u.verified).ok_or(EngineError::DeviceRevoked)?;
        trail.step = Step::Session;
        let grant = self.open_session(ctx, user, AuthMethod::Device(device.id), now).await?;
        trail.note = "session opened by device key";
        trail.step = Step::Done;
        Ok(grant)
    }

    /// Files the event under the device owner's identifier (when the device exists), so
    /// `otpd audit --identifier` shows device logins next to code logins.
    async fn note_device(&self, trail: &mut Trail, device: Option<&Device>) {
        let Some(device) = device else {
            trail.note = "unknown device; decoy";
            self.inner.metrics.enumeration_safe(trail.api);
            return;
        };
        trail.user = Some(device.user_id);
        if let Ok(Some(user)) = self.inner.ports.users.user_by_id(device.user_id).await {
            trail.ident = Some(user.ident_hash);
        }
        if !device.is_active() {
            trail.note = "revoked device";
        }
    }
}
