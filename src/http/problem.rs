//! RFC 9457 problem details: the one place where failures become HTTP responses.
//!
//! Every error body carries a stable `code` (docs/errors.md) that clients branch on; `title`
//! and `detail` are for humans and may change. `type` is `urn:otpd:problem:<code>`.
//! Server-side failures never expose internal messages: those go to the log with the trace id.
//!
//! Each code is one constant ([`ProblemKind`]: status, title, meaning, headers), listed in
//! [`CATALOGUE`]; every error is built from its constant ([`ApiError::of`]), so a code's status
//! is written once. Every engine, token and wire error reaches HTTP through the `From` impls
//! here. The OpenAPI document (`super::openapi`) and docs/errors.md are built from the
//! catalogue; tests check that every error this module can produce is in it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use otpd_actors::EngineError;
use otpd_actors::ports::CeremonyError;
use otpd_actors::rules::identifier::IdentifierError;
use otpd_actors::rules::limits::LimitRule;
use serde::Serialize;
use utoipa::ToSchema;

use crate::tokens::TokenError;

/// One stable problem `code`: everything about it that does not depend on the request.
#[derive(Debug, Clone, Copy)]
pub struct ProblemKind {
    pub code: &'static str,
    pub status: u16,
    /// The document's `title` (for humans; may change).
    pub title: &'static str,
    /// What it means for the caller; one sentence, for the OpenAPI document and docs/errors.md.
    pub meaning: &'static str,
    /// The response carries `Retry-After` (seconds).
    pub retry_after: bool,
    /// The response carries `WWW-Authenticate` with this challenge.
    pub www_authenticate: Option<&'static str>,
}

const fn kind(code: &'static str, status: u16, title: &'static str, meaning: &'static str) -> ProblemKind {
    ProblemKind { code, status, title, meaning, retry_after: false, www_authenticate: None }
}

const fn retry(code: &'static str, status: u16, title: &'static str, meaning: &'static str) -> ProblemKind {
    ProblemKind { retry_after: true, ..kind(code, status, title, meaning) }
}

pub const INVALID_JSON: ProblemKind =
    kind("invalid_json", 400, "Request body is not valid JSON", "the body is not JSON");
pub const INVALID_REQUEST: ProblemKind = kind(
    "invalid_request",
    400,
    "Request is not acceptable",
    "wrong type, missing or unknown field, or a field out of bounds; `detail` names it",
);
pub const INVALID_PHONE: ProblemKind =
    kind("invalid_phone", 400, "Invalid phone number", "the phone number cannot be an E.164 number");
pub const INVALID_EMAIL: ProblemKind =
    kind("invalid_email", 400, "Invalid e-mail address", "the e-mail address is not acceptable");
pub const INVALID_CODE: ProblemKind =
    kind("invalid_code", 400, "Invalid code", "wrong code; `attempts_left` says how many tries remain");
pub const CODE_EXPIRED: ProblemKind =
    kind("code_expired", 400, "Code expired", "the code's lifetime is over; request a new one");
pub const CODE_ALREADY_USED: ProblemKind = kind("code_already_used", 400, "Code already used", "codes work once");
pub const NO_PENDING_CODE: ProblemKind =
    kind("no_pending_code", 400, "No pending code", "no code was requested for this identifier and purpose");
pub const INVALID_PUBLIC_KEY: ProblemKind = kind(
    "invalid_public_key",
    400,
    "Invalid public key",
    "not an ECDSA P-256 or Ed25519 public key in an accepted form",
);
pub const INVALID_SIGNATURE: ProblemKind = kind(
    "invalid_signature",
    400,
    "Invalid signature",
    "the signature does not verify for this device, nonce and audience; `attempts_left` says how many tries remain",
);
pub const INVALID_CREDENTIAL: ProblemKind = kind(
    "invalid_credential",
    400,
    "Invalid passkey credential",
    "the WebAuthn credential is malformed, or was made for another origin, relying party id, ceremony or challenge",
);
pub const USER_NOT_VERIFIED: ProblemKind = kind(
    "user_not_verified",
    400,
    "User not verified",
    "the authenticator did not verify the person (fingerprint, face or PIN); passkeys require it",
);
pub const UNSUPPORTED_AUTHENTICATOR: ProblemKind = kind(
    "unsupported_authenticator",
    400,
    "Unsupported authenticator",
    "the authenticator's attestation format or key algorithm is not accepted",
);
pub const PASSKEY_INVALID: ProblemKind = kind(
    "passkey_invalid",
    400,
    "Passkey not accepted",
    "unknown passkey, or its signature does not verify for this challenge; `attempts_left` says how many tries remain",
);
pub const CHALLENGE_EXPIRED: ProblemKind =
    kind("challenge_expired", 400, "Challenge expired", "the nonce's lifetime is over; request a new challenge");
pub const CHALLENGE_ALREADY_USED: ProblemKind =
    kind("challenge_already_used", 400, "Challenge already used", "nonces work once");
pub const NO_PENDING_CHALLENGE: ProblemKind =
    kind("no_pending_challenge", 400, "No pending challenge", "no challenge was requested for this device");
pub const MISSING_TOKEN: ProblemKind = ProblemKind {
    www_authenticate: Some(r#"Bearer realm="otpd""#),
    ..kind("missing_token", 401, "Authentication required", "no `Authorization: Bearer` token")
};
pub const INVALID_TOKEN: ProblemKind = ProblemKind {
    www_authenticate: Some(r#"Bearer realm="otpd", error="invalid_token""#),
    ..kind(
        "invalid_token",
        401,
        "Invalid access token",
        "bad, expired or revoked token (a logged-out or revoked session included)",
    )
};
pub const INVALID_REFRESH_TOKEN: ProblemKind = kind(
    "invalid_refresh_token",
    401,
    "Invalid refresh token",
    "malformed, unknown, expired or revoked refresh token; log in again",
);
pub const REFRESH_TOKEN_REUSED: ProblemKind = kind(
    "refresh_token_reused",
    401,
    "Refresh token reused",
    "this refresh token was already rotated away: the session is now revoked; log in again",
);
pub const FORBIDDEN: ProblemKind = kind("forbidden", 403, "Forbidden", "the admin token is not valid");
pub const INVALID_CALLBACK_SIGNATURE: ProblemKind = kind(
    "invalid_callback_signature",
    403,
    "Invalid callback signature",
    "a delivery callback without the provider's valid signature (`X-Twilio-Signature`, `X-Otpd-Signature`)",
);
pub const DESTINATION_NOT_ALLOWED: ProblemKind = kind(
    "destination_not_allowed",
    403,
    "Destination not allowed",
    "SMS to this country or number range is not allowed (`limits.sms_allow`/`sms_deny`)",
);
pub const ACCOUNT_NOT_VERIFIED: ProblemKind =
    kind("account_not_verified", 403, "Account not verified", "the account never finished registration");
pub const FRESH_LOGIN_REQUIRED: ProblemKind = kind(
    "fresh_login_required",
    403,
    "Fresh login required",
    "enrolling a device or a passkey, or erasing the account, needs a login by code within `devices.enrol_max_auth_age` (`passkeys.enrol_max_auth_age` for a passkey)",
);
pub const PASSKEY_CLONE_SUSPECTED: ProblemKind = kind(
    "passkey_clone_suspected",
    403,
    "Passkey refused",
    "the passkey's signature counter went backwards: it may have been cloned; sign in by code",
);
pub const DEVICE_REVOKED: ProblemKind =
    kind("device_revoked", 403, "Device revoked", "the signature is right but the device was removed; enrol it again");
pub const ACCOUNT_NOT_FOUND: ProblemKind = kind(
    "account_not_found",
    404,
    "Account not found",
    "no account for this identifier (only with `otp.reveal_accounts = true`)",
);
pub const NOT_FOUND: ProblemKind = kind("not_found", 404, "Not found", "no such endpoint");
pub const DEVICE_NOT_FOUND: ProblemKind =
    kind("device_not_found", 404, "Device not found", "no such device on this account");
pub const PASSKEY_NOT_FOUND: ProblemKind =
    kind("passkey_not_found", 404, "Passkey not found", "no such passkey on this account");
pub const METHOD_NOT_ALLOWED: ProblemKind =
    kind("method_not_allowed", 405, "Method not allowed", "the endpoint does not take this method; see `Allow`");
pub const REQUEST_TIMEOUT: ProblemKind =
    kind("request_timeout", 408, "Request timed out", "the body arrived too slowly");
pub const ACCOUNT_EXISTS: ProblemKind = kind(
    "account_exists",
    409,
    "Account exists",
    "the identifier has an account (only with `otp.reveal_accounts = true`)",
);
pub const DEVICE_LIMIT: ProblemKind =
    kind("device_limit", 409, "Too many devices", "the account has `devices.max_per_user` devices; remove one first");
pub const DEVICE_EXISTS: ProblemKind =
    kind("device_exists", 409, "Device already enrolled", "this public key is already enrolled for the account");
pub const BACKUP_TARGET_EXISTS: ProblemKind = kind(
    "backup_target_exists",
    409,
    "Backup directory exists",
    "a backup is written into a new directory only; name one that does not exist yet",
);
pub const BACKUP_RUNNING: ProblemKind =
    kind("backup_running", 409, "A backup is running", "this node is writing another backup; try again when it ends");
pub const BACKUP_NOT_SUPPORTED: ProblemKind = kind(
    "backup_not_supported",
    409,
    "Store not backed up by otpd",
    "the node's store is ScyllaDB, which is backed up with `nodetool snapshot` (docs/OPERATIONS.md)",
);
pub const PASSKEY_LIMIT: ProblemKind = kind(
    "passkey_limit",
    409,
    "Too many passkeys",
    "the account has `passkeys.max_per_user` passkeys; remove one first",
);
pub const PASSKEY_EXISTS: ProblemKind =
    kind("passkey_exists", 409, "Passkey already registered", "this credential is registered already");
pub const PAYLOAD_TOO_LARGE: ProblemKind =
    kind("payload_too_large", 413, "Request body too large", "body over `http.max_body_bytes`");
pub const UNSUPPORTED_MEDIA_TYPE: ProblemKind =
    kind("unsupported_media_type", 415, "Unsupported media type", "the body must be sent as `application/json`");
pub const RESEND_COOLDOWN: ProblemKind = retry(
    "resend_cooldown",
    429,
    "Too many requests",
    "a code was sent for this identifier and purpose too recently; see `Retry-After`",
);
pub const IDENTIFIER_SEND_LIMIT: ProblemKind = retry(
    "identifier_send_limit",
    429,
    "Too many requests",
    "too many codes for this identifier in the window; see `Retry-After`",
);
pub const IDENTIFIER_LOGIN_LIMIT: ProblemKind = retry(
    "identifier_login_limit",
    429,
    "Too many requests",
    "too many login codes for this identifier (`[limits]`); see `Retry-After`",
);
pub const IDENTIFIER_REGISTER_LIMIT: ProblemKind = retry(
    "identifier_register_limit",
    429,
    "Too many requests",
    "too many registration codes for this identifier (`[limits]`); see `Retry-After`",
);
pub const IDENTIFIER_RESEND_LIMIT: ProblemKind = retry(
    "identifier_resend_limit",
    429,
    "Too many requests",
    "too many resends for this identifier (`[limits]`); see `Retry-After`",
);
pub const IDENTIFIER_VERIFY_LIMIT: ProblemKind = retry(
    "identifier_verify_limit",
    429,
    "Too many requests",
    "too many code checks for this identifier or device; see `Retry-After`",
);
pub const IDENTIFIER_GUESS_LIMIT: ProblemKind = retry(
    "identifier_guess_limit",
    429,
    "Too many requests",
    "too many failed code checks for this identifier: blocked for a while, longer each time; see `Retry-After`",
);
pub const IP_SEND_LIMIT: ProblemKind = retry(
    "ip_send_limit",
    429,
    "Too many requests",
    "too many codes requested from this client address; see `Retry-After`",
);
pub const IP_VERIFY_LIMIT: ProblemKind = retry(
    "ip_verify_limit",
    429,
    "Too many requests",
    "too many code checks from this client address; see `Retry-After`",
);
pub const DEVICE_CHALLENGE_LIMIT: ProblemKind = retry(
    "device_challenge_limit",
    429,
    "Too many requests",
    "too many device-login challenges for this device from this client address; see `Retry-After`",
);
pub const IP_CHALLENGE_LIMIT: ProblemKind = retry(
    "ip_challenge_limit",
    429,
    "Too many requests",
    "too many device-login challenges from this client address; see `Retry-After`",
);
pub const PREFIX_SEND_LIMIT: ProblemKind = retry(
    "prefix_send_limit",
    429,
    "Too many requests",
    "too many codes to numbers sharing this number's prefix; see `Retry-After`",
);
pub const COUNTRY_SEND_LIMIT: ProblemKind =
    retry("country_send_limit", 429, "Too many requests", "too many codes to this country; see `Retry-After`");
pub const TOO_MANY_ATTEMPTS: ProblemKind = kind(
    "too_many_attempts",
    429,
    "Too many wrong codes",
    "too many wrong codes (or signatures) burned this code (or challenge); request a new one",
);
pub const INTERNAL: ProblemKind =
    kind("internal", 500, "Internal error", "a bug: never expected; report it with the `trace_id`");
pub const DESTINATION_THROTTLED: ProblemKind = retry(
    "destination_throttled",
    429,
    "Too many requests",
    "codes sent to this number range (or country) are rarely verified, which is what SMS fraud looks like: sends to it are throttled; see `Retry-After`",
);
pub const SMS_BUDGET_EXHAUSTED: ProblemKind = retry(
    "sms_budget_exhausted",
    503,
    "SMS budget spent",
    "today's SMS budget (in total, or for this country) is spent: no SMS until the UTC day ends (`Retry-After`); e-mail and device login still work",
);
pub const DELIVERY_BUSY: ProblemKind =
    retry("delivery_busy", 503, "Delivery queue full", "the delivery queue is full; retry after `Retry-After`");
pub const UNAVAILABLE: ProblemKind = retry(
    "unavailable",
    503,
    "Service unavailable",
    "a dependency cannot serve the request now; retry after `Retry-After`",
);
pub const OWNER_UNREACHABLE: ProblemKind = retry(
    "owner_unreachable",
    503,
    "Owner node unreachable",
    "in a cluster, the node that holds this identifier's codes did not answer in time; retry after `Retry-After`",
);

/// Every problem `code` the API can answer. Adding a code: its constant above and a row here,
/// then the operations that can answer it in the route table (`super::table`), then
/// `otpd openapi > docs/openapi.json`.
pub const CATALOGUE: &[ProblemKind] = &[
    INVALID_JSON,
    INVALID_REQUEST,
    INVALID_PHONE,
    INVALID_EMAIL,
    INVALID_CODE,
    CODE_EXPIRED,
    CODE_ALREADY_USED,
    NO_PENDING_CODE,
    INVALID_PUBLIC_KEY,
    INVALID_SIGNATURE,
    INVALID_CREDENTIAL,
    USER_NOT_VERIFIED,
    UNSUPPORTED_AUTHENTICATOR,
    PASSKEY_INVALID,
    CHALLENGE_EXPIRED,
    CHALLENGE_ALREADY_USED,
    NO_PENDING_CHALLENGE,
    MISSING_TOKEN,
    INVALID_TOKEN,
    INVALID_REFRESH_TOKEN,
    REFRESH_TOKEN_REUSED,
    FORBIDDEN,
    INVALID_CALLBACK_SIGNATURE,
    DESTINATION_NOT_ALLOWED,
    ACCOUNT_NOT_VERIFIED,
    FRESH_LOGIN_REQUIRED,
    PASSKEY_CLONE_SUSPECTED,
    DEVICE_REVOKED,
    ACCOUNT_NOT_FOUND,
    NOT_FOUND,
    DEVICE_NOT_FOUND,
    PASSKEY_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REQUEST_TIMEOUT,
    ACCOUNT_EXISTS,
    DEVICE_LIMIT,
    DEVICE_EXISTS,
    BACKUP_TARGET_EXISTS,
    BACKUP_RUNNING,
    BACKUP_NOT_SUPPORTED,
    PASSKEY_LIMIT,
    PASSKEY_EXISTS,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    RESEND_COOLDOWN,
    IDENTIFIER_SEND_LIMIT,
    IDENTIFIER_LOGIN_LIMIT,
    IDENTIFIER_REGISTER_LIMIT,
    IDENTIFIER_RESEND_LIMIT,
    IDENTIFIER_VERIFY_LIMIT,
    IDENTIFIER_GUESS_LIMIT,
    IP_SEND_LIMIT,
    IP_VERIFY_LIMIT,
    DEVICE_CHALLENGE_LIMIT,
    IP_CHALLENGE_LIMIT,
    PREFIX_SEND_LIMIT,
    COUNTRY_SEND_LIMIT,
    TOO_MANY_ATTEMPTS,
    INTERNAL,
    SMS_BUDGET_EXHAUSTED,
    DESTINATION_THROTTLED,
    DELIVERY_BUSY,
    UNAVAILABLE,
    OWNER_UNREACHABLE,
];

/// The catalogue entry of `code`.
pub fn kind_of(code: &str) -> Option<&'static ProblemKind> {
    CATALOGUE.iter().find(|k| k.code == code)
}

/// The problem document (RFC 9457) of every error response, `application/problem+json`.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    /// `urn:otpd:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:otpd:problem:[a-z_]+$")]
    kind: String,
    /// For humans; may change.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// For humans; may change.
    detail: &'a str,
    /// Stable: what clients branch on.
    code: &'a str,
    /// The request's `X-Request-Id`: the trace id in the audit trail.
    trace_id: &'a str,
    /// Wrong codes or signatures left before the code or challenge is burned.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_left: Option<u8>,
    /// The `Retry-After` header's seconds, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    retry_after: Option<u64>,
}

/// A failed request, ready to be rendered: its catalogue entry and what this request adds.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: &'static ProblemKind,
    /// The kind's title, unless one error of the kind words it differently.
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<Duration>,
    pub attempts_left: Option<u8>,
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// An error of `kind`: status, code, title and authentication challenge come from it.
    pub fn of(kind: &'static ProblemKind, detail: impl Into<String>) -> Self {
        ApiError { kind, title: kind.title, detail: detail.into(), retry_after: None, attempts_left: None, allow: None }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.status).expect("catalogue statuses are valid (a test checks each)")
    }

    pub fn code(&self) -> &'static str {
        self.kind.code
    }

    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Self::of(&INVALID_JSON, detail)
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::of(&INVALID_REQUEST, detail)
    }

    pub fn unsupported_media_type(wanted: &str) -> Self {
        Self::of(&UNSUPPORTED_MEDIA_TYPE, format!("send the body as {wanted}"))
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::of(&PAYLOAD_TOO_LARGE, format!("the body must be at most {limit} bytes"))
    }

    pub fn request_timeout() -> Self {
        Self::of(&REQUEST_TIMEOUT, "the request body arrived too slowly")
    }

    pub fn not_found() -> Self {
        Self::of(&NOT_FOUND, "no such endpoint")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError { allow: Some(allow), ..Self::of(&METHOD_NOT_ALLOWED, format!("this endpoint accepts {allow}")) }
    }

    pub fn missing_token() -> Self {
        Self::of(&MISSING_TOKEN, "send Authorization: Bearer <access token>")
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::of(&FORBIDDEN, detail)
    }

    pub fn internal() -> Self {
        Self::of(&INTERNAL, "an unexpected error occurred; it has been logged")
    }

    /// Renders the problem document.
    pub fn into_response(self, trace_id: &str) -> Response<Full<Bytes>> {
        let retry_secs = self.retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
        let body = ProblemBody {
            kind: format!("urn:otpd:problem:{}", self.kind.code),
            title: self.title,
            status: self.kind.status,
            detail: &self.detail,
            code: self.kind.code,
            trace_id,
            attempts_left: self.attempts_left,
            retry_after: retry_secs,
        };
        let json = serde_json::to_vec(&body).expect("a problem document always serialises");
        let mut resp = Response::new(Full::new(Bytes::from(json)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_secs {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            h.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(challenge) = self.kind.www_authenticate {
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        resp
    }
}

/// The kind of each engine outcome.
fn kind_of_error(e: &EngineError) -> &'static ProblemKind {
    match e {
        EngineError::Identifier(IdentifierError::Email(_)) => &INVALID_EMAIL,
        EngineError::Identifier(_) => &INVALID_PHONE,
        EngineError::InvalidInput(_) => &INVALID_REQUEST,
        // A destination list is a policy, not a rate: retrying cannot help, whichever way the
        // refusal reached here.
        EngineError::Limited { rule: LimitRule::DestinationNotAllowed, .. } | EngineError::DestinationNotAllowed => {
            &DESTINATION_NOT_ALLOWED
        }
        EngineError::Limited { rule, .. } => limit_kind(*rule),
        EngineError::InvalidCode { .. } => &INVALID_CODE,
        EngineError::CodeExpired => &CODE_EXPIRED,
        EngineError::TooManyAttempts | EngineError::ChallengeBurned => &TOO_MANY_ATTEMPTS,
        EngineError::CodeAlreadyUsed => &CODE_ALREADY_USED,
        EngineError::NoPendingCode => &NO_PENDING_CODE,
        EngineError::AccountNotVerified => &ACCOUNT_NOT_VERIFIED,
        EngineError::AccountNotFound => &ACCOUNT_NOT_FOUND,
        EngineError::AccountExists => &ACCOUNT_EXISTS,
        EngineError::SessionInvalid => &INVALID_TOKEN,
        EngineError::InvalidRefreshToken => &INVALID_REFRESH_TOKEN,
        EngineError::RefreshTokenReused => &REFRESH_TOKEN_REUSED,
        EngineError::FreshLoginRequired { .. } => &FRESH_LOGIN_REQUIRED,
        EngineError::InvalidPublicKey(_) => &INVALID_PUBLIC_KEY,
        EngineError::DeviceLimit { .. } => &DEVICE_LIMIT,
        EngineError::DeviceExists => &DEVICE_EXISTS,
        EngineError::DeviceNotFound => &DEVICE_NOT_FOUND,
        EngineError::InvalidSignature { .. } => &INVALID_SIGNATURE,
        EngineError::ChallengeExpired => &CHALLENGE_EXPIRED,
        EngineError::ChallengeAlreadyUsed => &CHALLENGE_ALREADY_USED,
        EngineError::NoPendingChallenge => &NO_PENDING_CHALLENGE,
        EngineError::DeviceRevoked => &DEVICE_REVOKED,
        EngineError::PasskeyFreshLoginRequired { .. } => &FRESH_LOGIN_REQUIRED,
        EngineError::PasskeyRefused(CeremonyError::UserNotVerified) => &USER_NOT_VERIFIED,
        EngineError::PasskeyRefused(CeremonyError::Unsupported(_)) => &UNSUPPORTED_AUTHENTICATOR,
        EngineError::PasskeyRefused(CeremonyError::CounterRegressed) | EngineError::PasskeyCloneSuspected => {
            &PASSKEY_CLONE_SUSPECTED
        }
        EngineError::PasskeyRefused(CeremonyError::Malformed(_) | CeremonyError::Invalid(_)) => &INVALID_CREDENTIAL,
        EngineError::PasskeyLimit { .. } => &PASSKEY_LIMIT,
        EngineError::PasskeyExists => &PASSKEY_EXISTS,
        EngineError::PasskeyNotFound => &PASSKEY_NOT_FOUND,
        EngineError::PasskeyInvalid { .. } => &PASSKEY_INVALID,
        EngineError::DeliveryBusy => &DELIVERY_BUSY,
        EngineError::Unavailable(_) => &UNAVAILABLE,
        EngineError::OwnerUnreachable(_) => &OWNER_UNREACHABLE,
    }
}

/// The kind of each rate-limit rule; its code is the rule's name (a test checks each).
fn limit_kind(rule: LimitRule) -> &'static ProblemKind {
    match rule {
        LimitRule::ResendCooldown => &RESEND_COOLDOWN,
        LimitRule::IdentifierSends => &IDENTIFIER_SEND_LIMIT,
        LimitRule::IdentifierLogins => &IDENTIFIER_LOGIN_LIMIT,
        LimitRule::IdentifierRegistrations => &IDENTIFIER_REGISTER_LIMIT,
        LimitRule::IdentifierResends => &IDENTIFIER_RESEND_LIMIT,
        LimitRule::IdentifierVerifies => &IDENTIFIER_VERIFY_LIMIT,
        LimitRule::IdentifierGuesses => &IDENTIFIER_GUESS_LIMIT,
        LimitRule::IpSends => &IP_SEND_LIMIT,
        LimitRule::IpVerifies => &IP_VERIFY_LIMIT,
        LimitRule::PrefixSends => &PREFIX_SEND_LIMIT,
        LimitRule::CountrySends => &COUNTRY_SEND_LIMIT,
        LimitRule::DeviceChallenges => &DEVICE_CHALLENGE_LIMIT,
        LimitRule::IpChallenges => &IP_CHALLENGE_LIMIT,
        LimitRule::DestinationNotAllowed => &DESTINATION_NOT_ALLOWED,
        LimitRule::SmsBudget => &SMS_BUDGET_EXHAUSTED,
        LimitRule::DestinationGuard => &DESTINATION_THROTTLED,
    }
}

/// The one mapping from engine outcomes to HTTP.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let kind = kind_of_error(&e);
        let mut out = match &e {
            // Server-side failures never expose internal messages: those go to the log.
            EngineError::Unavailable(internal) => {
                tracing::error!(error = %internal, "request failed on a dependency");
                ApiError::of(kind, "a dependency of the service is unavailable; retry shortly")
            }
            EngineError::OwnerUnreachable(internal) => {
                tracing::warn!(error = %internal, "the owner of an identifier did not answer");
                ApiError::of(kind, "the node that holds this identifier's codes did not answer; retry shortly")
            }
            _ => ApiError::of(kind, e.to_string()),
        };
        match e {
            EngineError::Limited { retry_after, .. } if kind.retry_after => out.retry_after = Some(retry_after),
            EngineError::DeliveryBusy | EngineError::Unavailable(_) | EngineError::OwnerUnreachable(_) => {
                out.retry_after = Some(Duration::from_secs(1));
            }
            EngineError::InvalidCode { attempts_left }
            | EngineError::InvalidSignature { attempts_left }
            | EngineError::PasskeyInvalid { attempts_left } => {
                out.attempts_left = Some(attempts_left);
            }
            EngineError::ChallengeBurned => out.title = "Too many wrong signatures",
            _ => {}
        }
        out
    }
}

/// A refused access token (bad, expired, or signed by another key).
impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::of(&INVALID_TOKEN, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_actors::rules::limits::LimitRule;

    #[test]
    fn limits_carry_retry_after_rounded_up() {
        let e: ApiError =
            EngineError::Limited { rule: LimitRule::ResendCooldown, retry_after: Duration::from_millis(20_100) }.into();
        let r = e.into_response("t1");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "21");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    }

    /// Every `EngineError` variant (and every `LimitRule`). `variant` has no wildcard, so a new
    /// variant stops this compiling until it gets an index, and the test fails until an
    /// instance of it is listed: no error can reach a client without a catalogue row.
    fn every_engine_error() -> Vec<EngineError> {
        use otpd_actors::rules::identifier::IdentifierError as I;
        fn variant(e: &EngineError) -> usize {
            match e {
                EngineError::Identifier(_) => 0,
                EngineError::InvalidInput(_) => 1,
                EngineError::Limited { rule, .. } => match rule {
                    LimitRule::ResendCooldown => 2,
                    LimitRule::IdentifierSends => 3,
                    LimitRule::IdentifierLogins => 28,
                    LimitRule::IdentifierRegistrations => 29,
                    LimitRule::IdentifierResends => 30,
                    LimitRule::IdentifierVerifies => 31,
                    LimitRule::IdentifierGuesses => 39,
                    LimitRule::IpSends => 32,
                    LimitRule::IpVerifies => 33,
                    LimitRule::PrefixSends => 34,
                    LimitRule::CountrySends => 35,
                    LimitRule::DestinationNotAllowed => 36,
                    LimitRule::DeviceChallenges => 37,
                    LimitRule::IpChallenges => 38,
                    LimitRule::SmsBudget => 40,
                    LimitRule::DestinationGuard => 41,
                },
                EngineError::InvalidCode { .. } => 4,
                EngineError::CodeExpired => 5,
                EngineError::TooManyAttempts => 6,
                EngineError::CodeAlreadyUsed => 7,
                EngineError::NoPendingCode => 8,
                EngineError::AccountNotVerified => 9,
                EngineError::AccountNotFound => 10,
                EngineError::AccountExists => 11,
                EngineError::SessionInvalid => 12,
                EngineError::InvalidRefreshToken => 13,
                EngineError::RefreshTokenReused => 14,
                EngineError::FreshLoginRequired { .. } => 15,
                EngineError::InvalidPublicKey(_) => 16,
                EngineError::DeviceLimit { .. } => 17,
                EngineError::DeviceExists => 18,
                EngineError::DeviceNotFound => 19,
                EngineError::InvalidSignature { .. } => 20,
                EngineError::ChallengeExpired => 21,
                EngineError::ChallengeAlreadyUsed => 22,
                EngineError::NoPendingChallenge => 23,
                EngineError::ChallengeBurned => 24,
                EngineError::DeviceRevoked => 25,
                EngineError::DeliveryBusy => 26,
                EngineError::Unavailable(_) => 27,
                EngineError::DestinationNotAllowed => 37,
                EngineError::OwnerUnreachable(_) => 38,
                EngineError::PasskeyFreshLoginRequired { .. } => 42,
                EngineError::PasskeyRefused(_) => 43,
                EngineError::PasskeyLimit { .. } => 44,
                EngineError::PasskeyExists => 45,
                EngineError::PasskeyNotFound => 46,
                EngineError::PasskeyInvalid { .. } => 47,
                EngineError::PasskeyCloneSuspected => 48,
            }
        }
        const VARIANTS: usize = 49;
        let second = Duration::from_secs(1);
        let all = vec![
            EngineError::Identifier(I::PhoneShape("empty")),
            EngineError::Identifier(I::PhoneInvalid),
            EngineError::Identifier(I::PhoneNoRegion),
            EngineError::Identifier(I::Email("empty")),
            EngineError::InvalidInput("x".into()),
            EngineError::Limited { rule: LimitRule::ResendCooldown, retry_after: second },
            EngineError::Limited { rule: LimitRule::IdentifierSends, retry_after: second },
            EngineError::Limited { rule: LimitRule::IdentifierLogins, retry_after: second },
            EngineError::Limited { rule: LimitRule::IdentifierRegistrations, retry_after: second },
            EngineError::Limited { rule: LimitRule::IdentifierResends, retry_after: second },
            EngineError::Limited { rule: LimitRule::IdentifierVerifies, retry_after: second },
            EngineError::Limited { rule: LimitRule::IdentifierGuesses, retry_after: second },
            EngineError::Limited { rule: LimitRule::IpSends, retry_after: second },
            EngineError::Limited { rule: LimitRule::IpVerifies, retry_after: second },
            EngineError::Limited { rule: LimitRule::PrefixSends, retry_after: second },
            EngineError::Limited { rule: LimitRule::CountrySends, retry_after: second },
            EngineError::Limited { rule: LimitRule::DestinationNotAllowed, retry_after: second },
            EngineError::Limited { rule: LimitRule::DeviceChallenges, retry_after: second },
            EngineError::Limited { rule: LimitRule::IpChallenges, retry_after: second },
            EngineError::Limited { rule: LimitRule::SmsBudget, retry_after: second },
            EngineError::Limited { rule: LimitRule::DestinationGuard, retry_after: second },
            EngineError::DestinationNotAllowed,
            EngineError::InvalidCode { attempts_left: 3 },
            EngineError::CodeExpired,
            EngineError::TooManyAttempts,
            EngineError::CodeAlreadyUsed,
            EngineError::NoPendingCode,
            EngineError::AccountNotVerified,
            EngineError::AccountNotFound,
            EngineError::AccountExists,
            EngineError::SessionInvalid,
            EngineError::InvalidRefreshToken,
            EngineError::RefreshTokenReused,
            EngineError::FreshLoginRequired { max_age: second },
            EngineError::InvalidPublicKey("x".into()),
            EngineError::DeviceLimit { max: 5 },
            EngineError::DeviceExists,
            EngineError::DeviceNotFound,
            EngineError::InvalidSignature { attempts_left: 3 },
            EngineError::ChallengeExpired,
            EngineError::ChallengeAlreadyUsed,
            EngineError::NoPendingChallenge,
            EngineError::ChallengeBurned,
            EngineError::DeviceRevoked,
            EngineError::PasskeyFreshLoginRequired { max_age: second },
            EngineError::PasskeyRefused(CeremonyError::Malformed("x".into())),
            EngineError::PasskeyRefused(CeremonyError::Invalid("x")),
            EngineError::PasskeyRefused(CeremonyError::UserNotVerified),
            EngineError::PasskeyRefused(CeremonyError::Unsupported("x")),
            EngineError::PasskeyRefused(CeremonyError::CounterRegressed),
            EngineError::PasskeyLimit { max: 10 },
            EngineError::PasskeyExists,
            EngineError::PasskeyNotFound,
            EngineError::PasskeyInvalid { attempts_left: 3 },
            EngineError::PasskeyCloneSuspected,
            EngineError::DeliveryBusy,
            EngineError::Unavailable("x".into()),
            EngineError::OwnerUnreachable("x".into()),
        ];
        let mut seen = [false; VARIANTS];
        for e in &all {
            seen[variant(e)] = true;
        }
        let missing: Vec<usize> = (0..VARIANTS).filter(|&i| !seen[i]).collect();
        assert!(missing.is_empty(), "list an instance of variant(s) {missing:?} above");
        all
    }

    fn assert_catalogued(e: &ApiError) {
        let kind = kind_of(e.code()).unwrap_or_else(|| panic!("{} is not in CATALOGUE", e.code()));
        assert_eq!(kind.status, e.status().as_u16(), "{}", e.code());
        assert_eq!(kind.retry_after, e.retry_after.is_some(), "{}: Retry-After", e.code());
        let r = e.clone().into_response("t");
        assert_eq!(kind.www_authenticate.is_some(), r.headers().contains_key(WWW_AUTHENTICATE), "{}", e.code());
    }

    #[test]
    fn every_error_is_in_the_catalogue_with_its_status_and_headers() {
        for e in every_engine_error() {
            assert_catalogued(&ApiError::from(e));
        }
        for e in [
            ApiError::invalid_json("x"),
            ApiError::invalid_request("x"),
            ApiError::unsupported_media_type("application/json"),
            ApiError::payload_too_large(1),
            ApiError::request_timeout(),
            ApiError::not_found(),
            ApiError::method_not_allowed("GET"),
            ApiError::missing_token(),
            ApiError::from(TokenError::Invalid),
            ApiError::forbidden("x"),
            ApiError::internal(),
        ] {
            assert_catalogued(&e);
        }
    }

    #[test]
    fn each_limit_rule_answers_under_its_own_name() {
        for e in every_engine_error() {
            if let EngineError::Limited { rule, .. } = e {
                assert_eq!(limit_kind(rule).code, rule.as_str());
            }
        }
    }

    #[test]
    fn catalogue_codes_are_unique_and_well_formed() {
        let mut codes: Vec<&str> = CATALOGUE.iter().map(|k| k.code).collect();
        codes.sort_unstable();
        let before = codes.len();
        codes.dedup();
        assert_eq!(before, codes.len(), "a code is listed twice");
        for k in CATALOGUE {
            assert!(k.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", k.code);
            assert!(StatusCode::from_u16(k.status).is_ok_and(|s| s.is_client_error() || s.is_server_error()));
        }
    }

    #[test]
    fn unavailable_hides_the_internal_message() {
        let e: ApiError = EngineError::Unavailable("store: disk on fire at /secret/path".into()).into();
        assert!(!e.detail.contains("secret"));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
