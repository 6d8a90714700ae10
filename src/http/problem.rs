//! RFC 9457 problem details: the one place where failures become HTTP responses.
//!
//! Every error body carries a stable `code` (documented in the README) that clients branch
//! on; `title` and `detail` are for humans and may change. `type` is `urn:otpd:problem:<code>`.
//! Server-side failures never expose internal messages: those go to the log with the trace id.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use otpd_actors::EngineError;
use otpd_actors::identifier::IdentifierError;
use serde::Serialize;

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
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: String,
            title: &'a str,
            status: u16,
            detail: &'a str,
            code: &'a str,
            trace_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            attempts_left: Option<u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_after: Option<u64>,
        }
        let retry_secs = self.retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
        let body = Body {
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
            EngineError::Limited { rule, retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(S::TOO_MANY_REQUESTS, rule.as_str(), "Too many requests", detail)
            },
            EngineError::DestinationNotAllowed => {
                ApiError::new(S::FORBIDDEN, "destination_not_allowed", "Destination not allowed", detail)
            }
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_actors::ports::LimitRule;

    #[test]
    fn limits_carry_retry_after_rounded_up() {
        let e: ApiError =
            EngineError::Limited { rule: LimitRule::ResendCooldown, retry_after: Duration::from_millis(20_100) }.into();
        let r = e.into_response("t1");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "21");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn unavailable_hides_the_internal_message() {
        let e: ApiError = EngineError::Unavailable("store: disk on fire at /secret/path".into()).into();
        assert!(!e.detail.contains("secret"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
