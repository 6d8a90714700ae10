//! The engine's error type: every way an API call can end other than success.
//!
//! The front end maps each variant to an HTTP status and a stable problem `code` in exactly
//! one function (`otpd::http::problem`); the engine itself knows nothing of HTTP.

use std::time::Duration;

use crate::actors::cluster::ForwardError;
use crate::ports::CeremonyError;
use crate::rules::identifier::IdentifierError;
use crate::rules::limits::LimitRule;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
    /// A field other than the identifier is unacceptable; the message names it.
    #[error("{0}")]
    InvalidInput(String),
    #[error("too many requests ({})", rule.as_str())]
    Limited { rule: LimitRule, retry_after: Duration },
    /// The SMS destination lists refuse this number's country or range.
    #[error("codes are not sent by SMS to this country or number range")]
    DestinationNotAllowed,
    #[error("the code is not correct")]
    InvalidCode { attempts_left: u8 },
    #[error("the code has expired; request a new one")]
    CodeExpired,
    #[error("too many wrong codes; request a new one")]
    TooManyAttempts,
    #[error("the code was already used")]
    CodeAlreadyUsed,
    #[error("no code is pending for this identifier; request one first")]
    NoPendingCode,
    #[error("the account is not verified; complete the registration first")]
    AccountNotVerified,
    /// Only when the operator opted in to revealing which identifiers have accounts.
    #[error("no account exists for this identifier")]
    AccountNotFound,
    /// Only when the operator opted in to revealing which identifiers have accounts.
    #[error("an account already exists for this identifier")]
    AccountExists,
    #[error("the session is not valid (expired, revoked or unknown)")]
    SessionInvalid,
    #[error("the refresh token is not valid (malformed, expired, revoked or unknown)")]
    InvalidRefreshToken,
    #[error("this refresh token was already used; the session has been revoked, log in again")]
    RefreshTokenReused,
    #[error("this needs a login by one-time code within the last {}s; log in again", max_age.as_secs())]
    FreshLoginRequired { max_age: Duration },
    #[error("the public key is not acceptable: {0}")]
    InvalidPublicKey(String),
    #[error("the account already has the maximum of {max} devices; remove one first")]
    DeviceLimit { max: usize },
    #[error("this public key is already enrolled for the account")]
    DeviceExists,
    #[error("no such device")]
    DeviceNotFound,
    #[error("the signature is not valid for this challenge and device")]
    InvalidSignature { attempts_left: u8 },
    #[error("the challenge has expired; request a new one")]
    ChallengeExpired,
    #[error("the challenge was already used")]
    ChallengeAlreadyUsed,
    #[error("no challenge is pending for this device; request one first")]
    NoPendingChallenge,
    #[error("too many wrong signatures; request a new challenge")]
    ChallengeBurned,
    #[error("this device was removed from the account; enrol it again after a login by code")]
    DeviceRevoked,
    #[error("registering a passkey needs a login by one-time code within the last {}s; log in again", max_age.as_secs())]
    PasskeyFreshLoginRequired { max_age: Duration },
    #[error("the passkey was not accepted: {0}")]
    PasskeyRefused(CeremonyError),
    #[error("the account already has the maximum of {max} passkeys; remove one first")]
    PasskeyLimit { max: usize },
    #[error("this passkey is already registered")]
    PasskeyExists,
    #[error("no such passkey")]
    PasskeyNotFound,
    #[error("the passkey did not sign in: unknown credential, or its signature does not verify")]
    PasskeyInvalid { attempts_left: u8 },
    #[error("the passkey's signature counter went backwards: refused as a possibly cloned authenticator")]
    PasskeyCloneSuspected,
    #[error("the code could not be queued for delivery; try again shortly")]
    DeliveryBusy,
    /// A dependency (store, limiter, shard) cannot serve the request now. The message is for
    /// operators; callers see a generic 503.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// In a cluster: the node that holds the identifier's challenges did not answer in time
    /// (or left and no other node has taken over yet). The message is for operators.
    #[error("the node that owns this identifier cannot be reached: {0}")]
    OwnerUnreachable(String),
}

impl EngineError {
    /// Whether the failure is the service's fault rather than the caller's.
    pub fn is_server_side(&self) -> bool {
        matches!(self, EngineError::Unavailable(_) | EngineError::OwnerUnreachable(_) | EngineError::DeliveryBusy)
    }
}

/// A forwarded challenge command that got no answer: an owner that cannot be reached (timed
/// out, or left and no other node took over in time) is `OwnerUnreachable`; an owner that
/// answered with its own failure is `Unavailable`. Both are the service's fault (503).
impl From<ForwardError> for EngineError {
    fn from(e: ForwardError) -> Self {
        if e.is_unreachable() {
            EngineError::OwnerUnreachable(e.to_string())
        } else {
            EngineError::Unavailable(e.to_string())
        }
    }
}
