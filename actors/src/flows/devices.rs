//! Device enrolment and fingerprint (device-key) login.
//!
//! ```text
//! enrol  (Bearer, fresh OTP login):  key parse → cap/duplicate check (atomic in the store) → audit
//! challenge {device_id}:             limiter → device lookup → nonce + seal
//!                                    → shard Issue (DeviceLogin, 60 s) → audit
//! verify {device_id, nonce, sig}:    limiter → device lookup → signature check (here, off the shard)
//!                                    → shard Redeem (nonce must open the seal AND the signature
//!                                      must hold, else one wrong attempt;
//!                                      `max_attempts` of them burn the challenge)
//!                                    → account → session (method device) → audit
//! ```
//!
//! A challenge lives in the same shards as OTP challenges, under [`Purpose::DeviceLogin`] and a
//! subject made of the device id *and its nonce*: each challenge stands alone, so whoever knows
//! a device id can ask for challenges of their own but never replace or burn its owner's. It
//! is single use and has its own lifetime.
//!
//! # What a stranger can do to someone else's device
//!
//! Every limit a request for a device can trigger is counted per device *and client address*
//! (challenges, verifications), beside the per-address limits: a stranger who floods a device
//! id locks out only themselves, and the owner signs in from anywhere else. Live challenges
//! are bounded by the per-address challenge limit times their lifetime.
//!
//! # Device ids cannot be probed
//!
//! `POST /v1/device-login/challenge` answers every well-formed device id the same way: known,
//! unknown, revoked or another user's, the engine does the same work (limiter, lookup, nonce,
//! seal, shard, audit) and returns a nonce of the same shape. Verification does the same work
//! for every device id too: it parses and checks the signature under one P-256 key and one
//! Ed25519 key, the device's own in its algorithm's slot and fixed decoys elsewhere, so an
//! unknown device, a P-256 one and an Ed25519 one cost the same and fail alike
//! (`invalid_signature`, counted). The account is read only after a signature verified. Only a
//! caller whose signature verifies under a revoked device's own key learns `device_revoked`:
//! that is proof of holding the device's private key, the same rule as "not verified" being
//! told only to the holder of the phone.
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
use crate::ports::{AuthMethod, Device, InsertDevice, Platform, RevokeReason, Session};
use crate::rules::audit::{Api, Step};
use crate::rules::challenge::{Purpose, VerifyOutcome};
use crate::rules::clock::Timestamp;
use crate::rules::code::Sealed;
use crate::rules::device_key::{DeviceKey, KeyAlgorithm, KeyInput, Nonce, login_message};
use crate::rules::ids::{DeviceId, SessionId, UserId};
use crate::rules::keys::IdentHash;
use crate::rules::limits::{IpBlock, LimitAction};

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

impl Bearer {
    /// Whether the session was opened by a one-time code, and it and this token were issued
    /// within `max_age` of `now`: what enrolling a key, registering a passkey and erasing the
    /// account ask for, so that a refreshed session or a device login is not enough.
    pub(crate) fn fresh_code_login(&self, session: &Session, now: Timestamp, max_age: Duration) -> bool {
        session.method == AuthMethod::Otp
            && now.since(session.created_at) <= max_age
            && now.since(self.issued_at) <= max_age
    }
}

/// A device-login challenge, as returned to the client.
#[derive(Clone, Debug)]
pub struct DeviceChallenge {
    pub device_id: DeviceId,
    pub nonce: Nonce,
    pub expires_in: Duration,
    pub audience: String,
}

/// The keys a verification checks a signature under where the device has none of that
/// algorithm (all of them for an unknown device), so every verification costs one P-256 and one
/// Ed25519 check. Their private keys are fixed public constants: nobody needs them, since a
/// decoy's verdict is never used.
static DECOYS: LazyLock<(DeviceKey, DeviceKey)> = LazyLock::new(|| {
    use p256::pkcs8::EncodePublicKey;
    let p256 = p256::ecdsa::SigningKey::from_slice(&[0x5a; 32]).expect("a valid P-256 scalar");
    let p256 = p256.verifying_key().to_public_key_der().expect("a P-256 key encodes").into_vec();
    let ed25519 = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]).verifying_key();
    let ed25519 = ed25519.to_public_key_der().expect("an Ed25519 key encodes").into_vec();
    let parse = |der: Vec<u8>| DeviceKey::parse(&KeyInput::SpkiDer(der)).expect("the decoy keys parse");
    (parse(p256), parse(ed25519))
});

/// Whether `signature` verifies under the device's key, after the same work whatever the device
/// (see the module doc): one P-256 and one Ed25519 key parsed and checked.
fn signature_holds(device: Option<&Device>, message: &[u8], signature: &[u8]) -> Result<bool, EngineError> {
    let (decoy_p256, decoy_ed25519) = &*DECOYS;
    let own = device.map(|d| (&d.key, d.key.algorithm));
    let (p256, ed25519) = match own {
        Some((key, KeyAlgorithm::Es256)) => (key, decoy_ed25519),
        Some((key, KeyAlgorithm::Ed25519)) => (decoy_p256, key),
        None => (decoy_p256, decoy_ed25519),
    };
    let p256_holds = p256.verifier().map_err(unavailable)?.verify(message, signature);
    let ed25519_holds = ed25519.verifier().map_err(unavailable)?.verify(message, signature);
    Ok(match own {
        Some((_, KeyAlgorithm::Es256)) => p256_holds,
        Some((_, KeyAlgorithm::Ed25519)) => ed25519_holds,
        None => false,
    })
}

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
        if !bearer.fresh_code_login(&session, now, max_age) {
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
                .revoke_user_sessions(bearer.user, Some(id.0), RevokeReason::DeviceRevoked, now)
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
            trail.step = Step::Limit;
            let scoped = self.scoped_device_subject(device_id, ctx);
            self.limit(LimitAction::Challenge, scoped, None, 0, ctx, now).await?;
            trail.step = Step::Device;
            let device = self.lookup_device(device_id).await?;
            note_device(&mut trail, device.as_ref(), self);
            trail.step = Step::Challenge;
            let nonce = Nonce::generate();
            let sealed = Sealed::seal_secret(&self.inner.keys, nonce.as_bytes());
            let key =
                ChallengeKey { subject: self.challenge_subject(device_id, &nonce), purpose: Purpose::DeviceLogin };
            let (expires_at, _) = self.issue_on_owner(ShardCommand::Issue { key, sealed, profile: None, now }).await?;
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
        trail.step = Step::Limit;
        let scoped = self.scoped_device_subject(device_id, ctx);
        self.limit(LimitAction::Verify(Purpose::DeviceLogin), scoped, None, 0, ctx, now).await?;

        trail.step = Step::Device;
        let device = self.lookup_device(device_id).await?;
        note_device(trail, device.as_ref(), self);

        trail.step = Step::Signature;
        let message = login_message(&self.inner.config.devices.audience, &device_id.0, &nonce);
        let signature_valid = signature_holds(device.as_ref(), &message, signature)?;

        trail.step = Step::Challenge;
        let key = ChallengeKey { subject: self.challenge_subject(device_id, &nonce), purpose: Purpose::DeviceLogin };
        let (outcome, _) = self.check_on_owner(ShardCommand::Redeem { key, nonce, signature_valid, now }).await?;
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
        trail.ident = Some(user.ident_hash);
        trail.step = Step::Session;
        let grant = self.open_session(trail, ctx, user, AuthMethod::Device(device.id), now);
        trail.note = "session opened by device key";
        trail.step = Step::Done;
        Ok(grant)
    }

    /// The device `id`, after one read that finds a device and one that finds none, whichever
    /// it is (see `Engine::lookup_user`).
    async fn lookup_device(&self, id: DeviceId) -> Result<Option<Device>, EngineError> {
        let devices = &self.inner.ports.devices;
        let device = devices.device(id).await.map_err(unavailable)?;
        let decoy = match &device {
            Some(_) => {
                self.inner.known.lock().1 = Some(id);
                DeviceId(Uuid::from_bytes(rand::random()))
            }
            None => self.inner.known.lock().1.unwrap_or(DeviceId(Uuid::from_bytes(rand::random()))),
        };
        let _ = devices.device(decoy).await.map_err(unavailable)?;
        Ok(device)
    }

    /// The subject of one challenge: the device id and its nonce, so that challenges of one
    /// device never replace each other (see the module doc).
    fn challenge_subject(&self, device_id: DeviceId, nonce: &Nonce) -> IdentHash {
        let mut material = [0u8; 16 + 32];
        material[..16].copy_from_slice(device_id.0.as_bytes());
        material[16..].copy_from_slice(&nonce.as_bytes()[..32]);
        self.inner.keys.device_subject(&material)
    }

    /// What the limits count a device request under: the device id and the client's address
    /// (IPv6 by /64), so that nobody's flood locks the device's owner out (see the module doc).
    fn scoped_device_subject(&self, device_id: DeviceId, ctx: &RequestContext) -> IdentHash {
        let mut material = [0u8; 16 + 16];
        material[..16].copy_from_slice(device_id.0.as_bytes());
        if let Some(ip) = ctx.client_ip {
            material[16..].copy_from_slice(&IpBlock::of(ip).0);
        }
        self.inner.keys.device_subject(&material)
    }
}

/// Files the event under the device's owner (its user id; the identifier is added only after a
/// signature verified, when the account is read anyway: reading it for every request would be
/// work that only known devices cost).
fn note_device(trail: &mut Trail, device: Option<&Device>, engine: &Engine) {
    let Some(device) = device else {
        trail.note = "unknown device; decoy";
        engine.inner.metrics.enumeration_safe(trail.api);
        return;
    };
    trail.user = Some(device.user_id);
    if !device.is_active() {
        trail.note = "revoked device";
    }
}
