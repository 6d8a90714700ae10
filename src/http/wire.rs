//! The JSON wire types of API v1 and their conversion to and from engine types.
//!
//! Request types refuse unknown fields; every string is bounded before it reaches the engine.

use std::time::{Duration, UNIX_EPOCH};

use otpd_actors::challenge::Purpose;
use otpd_actors::clock::Timestamp;
use otpd_actors::identifier::Identifier;
use otpd_actors::ports::{AuditEvent, User};
use otpd_actors::{EngineError, SendReceipt};
use serde::{Deserialize, Serialize};

/// `POST /v1/register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
}

/// `POST /v1/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// `POST /v1/register/verify`, `POST /v1/login/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub code: String,
}

/// `POST /v1/otp/resend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResendRequest {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub purpose: PurposeWire,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurposeWire {
    Register,
    Login,
}

impl From<PurposeWire> for Purpose {
    fn from(p: PurposeWire) -> Purpose {
        match p {
            PurposeWire::Register => Purpose::Register,
            PurposeWire::Login => Purpose::Login,
        }
    }
}

/// The identifier fields of a request, before normalisation.
pub enum RawIdentifier<'a> {
    Phone(&'a str),
    Email(&'a str),
}

/// Exactly one of `phone` and `email` names the account.
pub fn raw_identifier<'a>(
    phone: &'a Option<String>,
    email: &'a Option<String>,
) -> Result<RawIdentifier<'a>, EngineError> {
    match (phone, email) {
        (Some(p), None) => Ok(RawIdentifier::Phone(p)),
        (None, Some(e)) => Ok(RawIdentifier::Email(e)),
        (Some(_), Some(_)) => Err(EngineError::InvalidInput("give either phone or email, not both".into())),
        (None, None) => Err(EngineError::InvalidInput("phone or email is required".into())),
    }
}

/// Longest first or last name accepted (characters).
pub const MAX_NAME_CHARS: usize = 100;
/// Longest code accepted before it reaches the engine (characters).
pub const MAX_CODE_CHARS: usize = 32;

/// A first or last name: trimmed, 1..=100 characters, no control characters.
pub fn name(field: &str, value: &str) -> Result<String, EngineError> {
    let v = value.trim();
    let chars = v.chars().count();
    if chars == 0 {
        return Err(EngineError::InvalidInput(format!("{field} must not be empty")));
    }
    if chars > MAX_NAME_CHARS {
        return Err(EngineError::InvalidInput(format!("{field} must be at most {MAX_NAME_CHARS} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(EngineError::InvalidInput(format!("{field} must not contain control characters")));
    }
    Ok(v.to_owned())
}

/// A code as typed: 1..=32 characters of letters, digits, spaces and dashes.
pub fn code(value: &str) -> Result<&str, EngineError> {
    let ok = !value.trim().is_empty()
        && value.len() <= MAX_CODE_CHARS
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-');
    if ok {
        Ok(value)
    } else {
        Err(EngineError::InvalidInput(format!(
            "code must be 1 to {MAX_CODE_CHARS} letters or digits (spaces and dashes allowed)"
        )))
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.as_millis())).to_string()
}

/// Answer to every send (register, login, resend). Identical for known and unknown accounts.
#[derive(Debug, Serialize)]
pub struct SendResponse {
    pub status: &'static str,
    pub channel: &'static str,
    pub expires_in: u64,
    pub resend_after: u64,
}

impl From<SendReceipt> for SendResponse {
    fn from(r: SendReceipt) -> Self {
        SendResponse {
            status: "pending",
            channel: r.channel.as_str(),
            expires_in: r.expires_in.as_secs(),
            resend_after: r.resend_after.as_secs(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub verified: bool,
    pub created_at: String,
    pub verified_at: Option<String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        let (phone, email) = match &u.identifier {
            Identifier::Phone { e164, .. } => (Some(e164.clone()), u.email.clone()),
            Identifier::Email(e) => (None, Some(e.clone())),
        };
        UserView {
            id: u.id.to_string(),
            phone,
            email,
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            verified: u.verified,
            created_at: rfc3339(u.created_at),
            verified_at: u.verified_at.map(rfc3339),
        }
    }
}

/// Answer to a successful verification.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub session_id: String,
    pub login_at: String,
    pub user: UserView,
}

/// `GET /v1/me`.
#[derive(Debug, Serialize)]
pub struct MeResponse {
    pub user: UserView,
    pub session_id: String,
}

/// One audit event as `GET /v1/admin/audit` and `otpd audit --format json` show it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditView {
    pub at: String,
    pub trace_id: String,
    pub api: String,
    pub step: String,
    pub outcome: String,
    pub message: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub ident_hash: Option<String>,
    pub user_id: Option<String>,
}

impl From<&AuditEvent> for AuditView {
    fn from(e: &AuditEvent) -> Self {
        AuditView {
            at: rfc3339(e.at),
            trace_id: e.trace_id.clone(),
            api: e.api.clone(),
            step: e.step.clone(),
            outcome: e.outcome.as_str().to_owned(),
            message: e.message.clone(),
            client_ip: e.client_ip.map(|ip| ip.to_string()),
            user_agent: e.user_agent.clone(),
            ident_hash: e.ident_hash.map(|h| h.to_hex()),
            user_id: e.user_id.map(|u| u.to_string()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuditListResponse {
    pub events: Vec<AuditView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("first_name", "  Ada ").unwrap(), "Ada");
        assert!(name("first_name", "   ").is_err());
        assert!(name("first_name", &"é".repeat(101)).is_err());
        assert_eq!(name("first_name", &"é".repeat(100)).unwrap().chars().count(), 100);
        assert!(name("last_name", "a\u{0}b").is_err());
    }

    #[test]
    fn codes_are_shape_checked() {
        assert!(code("123456").is_ok());
        assert!(code("12 34-56").is_ok());
        assert!(code("").is_err());
        assert!(code("   ").is_err());
        assert!(code("12345é").is_err());
        assert!(code(&"1".repeat(33)).is_err());
    }

    #[test]
    fn exactly_one_identifier() {
        let p = Some("+12025550123".to_owned());
        let e = Some("a@example.com".to_owned());
        assert!(matches!(raw_identifier(&p, &None), Ok(RawIdentifier::Phone(_))));
        assert!(matches!(raw_identifier(&None, &e), Ok(RawIdentifier::Email(_))));
        assert!(raw_identifier(&p, &e).is_err());
        assert!(raw_identifier(&None, &None).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<LoginRequest>(r#"{"phone":"+1","admin":true}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `admin`"));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(Timestamp::from_millis(1_700_000_000_123)), "2023-11-14T22:13:20.123Z");
    }
}
