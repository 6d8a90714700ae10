//! RFC 9457 problem details: the one place where failures become HTTP responses.
//!
//! Every error body carries a stable `code` (documented in the README) that clients branch
//! on; `title` and `detail` are for humans and may change. `type` is `urn:otpd:problem:<code>`.
//! Server-side failures never expose internal messages: those go to the log with the trace id.
//!
//! [`CATALOGUE`] lists every code with its status and meaning: the OpenAPI document
//! (`super::openapi`) is built from it, and tests check that every error this module can
//! produce is in it, with the same status and headers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use otpd_actors::EngineError;
use otpd_actors::rules::identifier::IdentifierError;
use otpd_actors::rules::limits::LimitRule;
use serde::Serialize;
use utoipa::ToSchema;

/// One stable problem `code`, as the API contract describes it.
#[derive(Debug, Clone, Copy)]
pub struct ProblemKind {
    pub code: &'static str,
    pub status: u16,
    /// What it means for the caller; one sentence, for the document and the README.
    pub meaning: &'static str,
    /// The response carries `Retry-After` (seconds).
    pub retry_after: bool,
    /// The response carries `WWW-Authenticate`.
    pub www_authenticate: bool,
}

const fn kind(code: &'static str, status: u16, meaning: &'static str) -> ProblemKind {
    ProblemKind { code, status, meaning, retry_after: false, www_authenticate: false }
}

const fn retry(code: &'static str, status: u16, meaning: &'static str) -> ProblemKind {
    ProblemKind { retry_after: true, ..kind(code, status, meaning) }
}

const fn challenge(code: &'static str, status: u16, meaning: &'static str) -> ProblemKind {
    ProblemKind { www_authenticate: true, ..kind(code, status, meaning) }
}

/// Every problem `code` the API can answer. Adding a code: a row here, then the operations
/// that can answer it in `super::openapi`, then `otpd openapi > docs/openapi.json`.
pub const CATALOGUE: &[ProblemKind] = &[
    kind("invalid_json", 400, "the body is not JSON"),
    kind("invalid_request", 400, "wrong type, missing or unknown field, or a field out of bounds; `detail` names it"),
    kind("invalid_phone", 400, "the phone number cannot be an E.164 number"),
    kind("invalid_email", 400, "the e-mail address is not acceptable"),
    kind("invalid_code", 400, "wrong code; `attempts_left` says how many tries remain"),
    kind("code_expired", 400, "the code's lifetime is over; request a new one"),
    kind("code_already_used", 400, "codes work once"),
    kind("no_pending_code", 400, "no code was requested for this identifier and purpose"),
    kind("invalid_public_key", 400, "not an ECDSA P-256 or Ed25519 public key in an accepted form"),
    kind(
        "invalid_signature",
        400,
        "the signature does not verify for this device, nonce and audience; `attempts_left` says how many tries remain",
    ),
    kind("challenge_expired", 400, "the nonce's lifetime is over; request a new challenge"),
    kind("challenge_already_used", 400, "nonces work once"),
    kind("no_pending_challenge", 400, "no challenge was requested for this device"),
    challenge("missing_token", 401, "no `Authorization: Bearer` token"),
    challenge("invalid_token", 401, "bad, expired or revoked token (a logged-out or revoked session included)"),
    kind("invalid_refresh_token", 401, "malformed, unknown, expired or revoked refresh token; log in again"),
    kind(
        "refresh_token_reused",
        401,
        "this refresh token was already rotated away: the session is now revoked; log in again",
    ),
    kind("forbidden", 403, "the admin token is not valid"),
    kind(
        "destination_not_allowed",
        403,
        "SMS to this country or number range is not allowed (`limits.sms_allow`/`sms_deny`)",
    ),
    kind("account_not_verified", 403, "the account never finished registration"),
    kind("fresh_login_required", 403, "enrolling a device needs a login by code within `devices.enrol_max_auth_age`"),
    kind("device_revoked", 403, "the signature is right but the device was removed; enrol it again"),
    kind("account_not_found", 404, "no account for this identifier (only with `otp.reveal_accounts = true`)"),
    kind("not_found", 404, "no such endpoint"),
    kind("device_not_found", 404, "no such device on this account"),
    kind("method_not_allowed", 405, "the endpoint does not take this method; see `Allow`"),
    kind("request_timeout", 408, "the body arrived too slowly"),
    kind("account_exists", 409, "the identifier has an account (only with `otp.reveal_accounts = true`)"),
    kind("device_limit", 409, "the account has `devices.max_per_user` devices; remove one first"),
    kind("device_exists", 409, "this public key is already enrolled for the account"),
    kind("payload_too_large", 413, "body over `http.max_body_bytes`"),
    kind("unsupported_media_type", 415, "the body must be sent as `application/json`"),
    retry("resend_cooldown", 429, "a code was sent for this identifier and purpose too recently; see `Retry-After`"),
    retry("identifier_send_limit", 429, "too many codes for this identifier in the window; see `Retry-After`"),
    retry("identifier_login_limit", 429, "too many login codes for this identifier (`[limits]`); see `Retry-After`"),
    retry(
        "identifier_register_limit",
        429,
        "too many registration codes for this identifier (`[limits]`); see `Retry-After`",
    ),
    retry("identifier_resend_limit", 429, "too many resends for this identifier (`[limits]`); see `Retry-After`"),
    retry("identifier_verify_limit", 429, "too many code checks for this identifier or device; see `Retry-After`"),
    retry("ip_send_limit", 429, "too many codes requested from this client address; see `Retry-After`"),
    retry("ip_verify_limit", 429, "too many code checks from this client address; see `Retry-After`"),
    retry("prefix_send_limit", 429, "too many codes to numbers sharing this number's prefix; see `Retry-After`"),
    retry("country_send_limit", 429, "too many codes to this country; see `Retry-After`"),
    kind(
        "too_many_attempts",
        429,
        "too many wrong codes (or signatures) burned this code (or challenge); request a new one",
    ),
    kind("internal", 500, "a bug: never expected; report it with the `trace_id`"),
    retry("delivery_busy", 503, "the delivery queue is full; retry after `Retry-After`"),
    retry("unavailable", 503, "a dependency cannot serve the request now; retry after `Retry-After`"),
    retry(
        "owner_unreachable",
        503,
        "in a cluster, the node that holds this identifier's codes did not answer in time; retry after `Retry-After`",
    ),
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

/// A failed request, ready to be rendered.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<Duration>,
    pub attempts_left: Option<u8>,
    pub allow: Option<&'static str>,
    pub www_authenticate: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            title,
            detail: detail.into(),
            retry_after: None,
            attempts_left: None,
            allow: None,
            www_authenticate: None,
        }
    }

    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", "Request body is not valid JSON", detail)
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", "Request is not acceptable", detail)
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as application/json",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request body too large",
            format!("the body must be at most {limit} bytes"),
        )
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "Request timed out",
            "the request body arrived too slowly",
        )
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", "no such endpoint")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                format!("this endpoint accepts {allow}"),
            )
        }
    }

    pub fn missing_token() -> Self {
        ApiError {
            www_authenticate: Some(r#"Bearer realm="otpd""#),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "Authentication required",
                "send Authorization: Bearer <access token>",
            )
        }
    }

    pub fn invalid_token(detail: impl Into<String>) -> Self {
        ApiError {
            www_authenticate: Some(r#"Bearer realm="otpd", error="invalid_token""#),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", "Invalid access token", detail)
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an unexpected error occurred; it has been logged",
        )
    }

    /// Renders the problem document.
    pub fn into_response(self, trace_id: &str) -> Response<Full<Bytes>> {
        let retry_secs = self.retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
        let body = ProblemBody {
            kind: format!("urn:otpd:problem:{}", self.code),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            trace_id,
            attempts_left: self.attempts_left,
            retry_after: retry_secs,
        };
        let json = serde_json::to_vec(&body).expect("a problem document always serialises");
        let mut resp = Response::new(Full::new(Bytes::from(json)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_secs {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            h.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(challenge) = self.www_authenticate {
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        resp
    }
}

/// The one mapping from engine outcomes to HTTP.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use StatusCode as S;
        let detail = e.to_string();
        match e {
            EngineError::Identifier(IdentifierError::Email(_)) => {
                ApiError::new(S::BAD_REQUEST, "invalid_email", "Invalid e-mail address", detail)
            }
            EngineError::Identifier(_) => {
                ApiError::new(S::BAD_REQUEST, "invalid_phone", "Invalid phone number", detail)
            }
            EngineError::InvalidInput(_) => ApiError::invalid_request(detail),
            // A destination list is a policy, not a rate: retrying cannot help, whichever way
            // the refusal reached here.
            EngineError::Limited { rule: LimitRule::DestinationNotAllowed, .. }
            | EngineError::DestinationNotAllowed => {
                ApiError::new(S::FORBIDDEN, "destination_not_allowed", "Destination not allowed", detail)
            }
            EngineError::Limited { rule, retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(S::TOO_MANY_REQUESTS, rule.as_str(), "Too many requests", detail)
            },
            EngineError::InvalidCode { attempts_left } => ApiError {
                attempts_left: Some(attempts_left),
                ..ApiError::new(S::BAD_REQUEST, "invalid_code", "Invalid code", detail)
            },
            EngineError::CodeExpired => ApiError::new(S::BAD_REQUEST, "code_expired", "Code expired", detail),
            EngineError::TooManyAttempts => {
                ApiError::new(S::TOO_MANY_REQUESTS, "too_many_attempts", "Too many wrong codes", detail)
            }
            EngineError::CodeAlreadyUsed => {
                ApiError::new(S::BAD_REQUEST, "code_already_used", "Code already used", detail)
            }
            EngineError::NoPendingCode => ApiError::new(S::BAD_REQUEST, "no_pending_code", "No pending code", detail),
            EngineError::AccountNotVerified => {
                ApiError::new(S::FORBIDDEN, "account_not_verified", "Account not verified", detail)
            }
            EngineError::AccountNotFound => {
                ApiError::new(S::NOT_FOUND, "account_not_found", "Account not found", detail)
            }
            EngineError::AccountExists => ApiError::new(S::CONFLICT, "account_exists", "Account exists", detail),
            EngineError::SessionInvalid => ApiError::invalid_token(detail),
            EngineError::InvalidRefreshToken => {
                ApiError::new(S::UNAUTHORIZED, "invalid_refresh_token", "Invalid refresh token", detail)
            }
            EngineError::RefreshTokenReused => {
                ApiError::new(S::UNAUTHORIZED, "refresh_token_reused", "Refresh token reused", detail)
            }
            EngineError::FreshLoginRequired { .. } => {
                ApiError::new(S::FORBIDDEN, "fresh_login_required", "Fresh login required", detail)
            }
            EngineError::InvalidPublicKey(_) => {
                ApiError::new(S::BAD_REQUEST, "invalid_public_key", "Invalid public key", detail)
            }
            EngineError::DeviceLimit { .. } => ApiError::new(S::CONFLICT, "device_limit", "Too many devices", detail),
            EngineError::DeviceExists => ApiError::new(S::CONFLICT, "device_exists", "Device already enrolled", detail),
            EngineError::DeviceNotFound => ApiError::new(S::NOT_FOUND, "device_not_found", "Device not found", detail),
            EngineError::InvalidSignature { attempts_left } => ApiError {
                attempts_left: Some(attempts_left),
                ..ApiError::new(S::BAD_REQUEST, "invalid_signature", "Invalid signature", detail)
            },
            EngineError::ChallengeExpired => {
                ApiError::new(S::BAD_REQUEST, "challenge_expired", "Challenge expired", detail)
            }
            EngineError::ChallengeAlreadyUsed => {
                ApiError::new(S::BAD_REQUEST, "challenge_already_used", "Challenge already used", detail)
            }
            EngineError::NoPendingChallenge => {
                ApiError::new(S::BAD_REQUEST, "no_pending_challenge", "No pending challenge", detail)
            }
            EngineError::ChallengeBurned => {
                ApiError::new(S::TOO_MANY_REQUESTS, "too_many_attempts", "Too many wrong signatures", detail)
            }
            EngineError::DeviceRevoked => ApiError::new(S::FORBIDDEN, "device_revoked", "Device revoked", detail),
            EngineError::DeliveryBusy => ApiError {
                retry_after: Some(Duration::from_secs(1)),
                ..ApiError::new(S::SERVICE_UNAVAILABLE, "delivery_busy", "Delivery queue full", detail)
            },
            EngineError::Unavailable(internal) => {
                tracing::error!(error = %internal, "request failed on a dependency");
                ApiError {
                    retry_after: Some(Duration::from_secs(1)),
                    ..ApiError::new(
                        S::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "Service unavailable",
                        "a dependency of the service is unavailable; retry shortly",
                    )
                }
            }
            EngineError::OwnerUnreachable(internal) => {
                tracing::warn!(error = %internal, "the owner of an identifier did not answer");
                ApiError {
                    retry_after: Some(Duration::from_secs(1)),
                    ..ApiError::new(
                        S::SERVICE_UNAVAILABLE,
                        "owner_unreachable",
                        "Owner node unreachable",
                        "the node that holds this identifier's codes did not answer; retry shortly",
                    )
                }
            }
        }
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
                    LimitRule::IpSends => 32,
                    LimitRule::IpVerifies => 33,
                    LimitRule::PrefixSends => 34,
                    LimitRule::CountrySends => 35,
                    LimitRule::DestinationNotAllowed => 36,
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
            }
        }
        const VARIANTS: usize = 39;
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
            EngineError::Limited { rule: LimitRule::IpSends, retry_after: second },
            EngineError::Limited { rule: LimitRule::IpVerifies, retry_after: second },
            EngineError::Limited { rule: LimitRule::PrefixSends, retry_after: second },
            EngineError::Limited { rule: LimitRule::CountrySends, retry_after: second },
            EngineError::Limited { rule: LimitRule::DestinationNotAllowed, retry_after: second },
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
        let kind = kind_of(e.code).unwrap_or_else(|| panic!("{} is not in CATALOGUE", e.code));
        assert_eq!(kind.status, e.status.as_u16(), "{}", e.code);
        assert_eq!(kind.retry_after, e.retry_after.is_some(), "{}: Retry-After", e.code);
        assert_eq!(kind.www_authenticate, e.www_authenticate.is_some(), "{}: WWW-Authenticate", e.code);
    }

    #[test]
    fn every_error_is_in_the_catalogue_with_its_status_and_headers() {
        for e in every_engine_error() {
            assert_catalogued(&ApiError::from(e));
        }
        for e in [
            ApiError::invalid_json("x"),
            ApiError::invalid_request("x"),
            ApiError::unsupported_media_type(),
            ApiError::payload_too_large(1),
            ApiError::request_timeout(),
            ApiError::not_found(),
            ApiError::method_not_allowed("GET"),
            ApiError::missing_token(),
            ApiError::invalid_token("x"),
            ApiError::forbidden("x"),
            ApiError::internal(),
        ] {
            assert_catalogued(&e);
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
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
