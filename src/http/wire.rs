//! The JSON wire types of API v1 and their conversion to and from engine types.
//!
//! Request types refuse unknown fields; every string is bounded before it reaches the engine.
//! Every type derives `utoipa::ToSchema`: its `#[schema(...)]` bounds are what the OpenAPI
//! document (`super::openapi`) publishes, and a test there checks them against the constants
//! the validators below use.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use otpd_actors::actors::dispatch::DispatchStats;
use otpd_actors::metrics::OtpStats;
use otpd_actors::ports::{AuditEvent, AuthMethod, Device, Passkey, Platform, Session, User};
use otpd_actors::rules::challenge::Purpose;
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::device_key::{KeyInput, NONCE_HEX_LEN, Nonce};
use otpd_actors::rules::identifier::Identifier;
use otpd_actors::rules::ids::{DeviceId, SessionId};
use otpd_actors::rules::limits::{DestinationState, GuardMode, Subject};
use otpd_actors::rules::locale::Locale;
use otpd_actors::rules::passkey::CredentialId;
use otpd_actors::{EngineError, SendReceipt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use self::schema as doc;

/// Every platform a device can name, in the order the document lists them.
pub const PLATFORMS: [Platform; 4] = [Platform::Ios, Platform::Android, Platform::Web, Platform::Other];

/// `POST /v1/register`: a phone number or an e-mail address (or both: then the phone number
/// is the identifier and `email` a contact address), and the person's names.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The identifier: E.164 (`+12025550123`; spaces, dashes, dots and brackets allowed) or a
    /// national number in the node's default region.
    #[schema(max_length = 32, examples("+12025550123"))]
    pub phone: Option<String>,
    /// The identifier when there is no `phone`; otherwise a contact address. Lower-cased.
    #[schema(max_length = 254, format = "email", examples("ada@example.com"))]
    pub email: Option<String>,
    /// 1 to 100 characters (surrounding spaces are trimmed), no control characters.
    #[schema(min_length = 1, max_length = 100, examples("Ada"))]
    pub first_name: String,
    /// 1 to 100 characters (surrounding spaces are trimmed), no control characters.
    #[schema(min_length = 1, max_length = 100, examples("Lovelace"))]
    pub last_name: String,
    /// How the code reaches a phone: `sms`, `whatsapp` or `voice`, each only if the operator put
    /// its provider on the SMS route (else 400); absent: the route's order. Ignored for e-mail.
    #[schema(examples("sms"))]
    pub channel: Option<String>,
    /// The language of the message (BCP 47: `es`, `pt-BR`, `zh-Hans-CN`). Without it, the
    /// phone number's country chooses, else the node's default (`delivery.default_locale`).
    /// A tag the node has no templates for falls back to its language (`es-MX` → `es`), then
    /// to the default. The answer is the same whichever is chosen.
    #[schema(max_length = 35, pattern = "^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$", examples("es"))]
    pub locale: Option<String>,
}

/// `POST /v1/login`: exactly one of `phone` and `email`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// E.164 (`+12025550123`) or a national number in the node's default region.
    #[schema(max_length = 32, examples("+12025550123"))]
    pub phone: Option<String>,
    #[schema(max_length = 254, format = "email", examples("ada@example.com"))]
    pub email: Option<String>,
    /// `sms`, `whatsapp` or `voice`, as in `RegisterRequest`.
    #[schema(examples("sms"))]
    pub channel: Option<String>,
    /// The language of the message (BCP 47: `es`, `pt-BR`, `zh-Hans-CN`). Without it, the
    /// phone number's country chooses, else the node's default (`delivery.default_locale`).
    /// A tag the node has no templates for falls back to its language (`es-MX` → `es`), then
    /// to the default. The answer is the same whichever is chosen.
    #[schema(max_length = 35, pattern = "^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$", examples("es"))]
    pub locale: Option<String>,
}

/// `POST /v1/register/verify`, `POST /v1/login/verify`: exactly one of `phone` and `email`,
/// and the code that was sent to it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// E.164 (`+12025550123`) or a national number in the node's default region.
    #[schema(max_length = 32, examples("+12025550123"))]
    pub phone: Option<String>,
    #[schema(max_length = 254, format = "email", examples("ada@example.com"))]
    pub email: Option<String>,
    /// The code as typed: spaces and dashes are ignored, letters are case-insensitive.
    #[schema(min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9 -]+$", examples("725826"))]
    pub code: String,
}

/// `POST /v1/register/verify`: a [`VerifyRequest`], and the profile the new account is to have.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterVerifyRequest {
    /// E.164 (`+12025550123`) or a national number in the node's default region.
    #[schema(max_length = 32, examples("+12025550123"))]
    pub phone: Option<String>,
    #[schema(max_length = 254, format = "email", examples("ada@example.com"))]
    pub email: Option<String>,
    /// The code as typed: spaces and dashes are ignored, letters are case-insensitive.
    #[schema(min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9 -]+$", examples("725826"))]
    pub code: String,
    /// The profile of the account this code creates, as the registration sent it. Send it: the
    /// account then has the profile of whoever holds the code, even if a stranger registered
    /// the same number with another profile meanwhile. Without it, the account gets the
    /// profile of the registration that issued the code. Ignored for an existing account.
    pub profile: Option<ProfileWire>,
}

/// The names (and, for a phone registration, contact address) of a new account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Profile)]
pub struct ProfileWire {
    /// 1 to 100 characters (surrounding spaces are trimmed), no control characters.
    #[schema(min_length = 1, max_length = 100, examples("Ada"))]
    pub first_name: String,
    /// 1 to 100 characters (surrounding spaces are trimmed), no control characters.
    #[schema(min_length = 1, max_length = 100, examples("Lovelace"))]
    pub last_name: String,
    /// A contact address (phone registrations only; an e-mail registration's address is its
    /// identifier).
    #[schema(max_length = 254, format = "email", examples("ada@example.com"))]
    pub email: Option<String>,
}

/// `POST /v1/otp/resend`: exactly one of `phone` and `email`, and what the code is for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendRequest {
    /// E.164 (`+12025550123`) or a national number in the node's default region.
    #[schema(max_length = 32, examples("+12025550123"))]
    pub phone: Option<String>,
    #[schema(max_length = 254, format = "email", examples("ada@example.com"))]
    pub email: Option<String>,
    pub purpose: PurposeWire,
    /// `sms`, `whatsapp` or `voice`, as in `RegisterRequest`: a resend can take another way.
    #[schema(examples("voice"))]
    pub channel: Option<String>,
    /// The language of the message (BCP 47: `es`, `pt-BR`, `zh-Hans-CN`). Without it, the
    /// phone number's country chooses, else the node's default (`delivery.default_locale`).
    /// A tag the node has no templates for falls back to its language (`es-MX` → `es`), then
    /// to the default. The answer is the same whichever is chosen.
    #[schema(max_length = 35, pattern = "^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$", examples("es"))]
    pub locale: Option<String>,
}

/// What a code is for.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Purpose)]
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
    if v.is_empty() {
        return Err(EngineError::InvalidInput(format!("{field} must not be empty")));
    }
    // Counted before trimming, so that the bound is exactly the published `maxLength`.
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(EngineError::InvalidInput(format!("{field} must be at most {MAX_NAME_CHARS} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(EngineError::InvalidInput(format!("{field} must not contain control characters")));
    }
    Ok(v.to_owned())
}

/// What `Locale::parse` accepts, as the document publishes it (its length bound is
/// `MAX_LOCALE_LEN`): a language, then subtags of 1 to 8 letters or digits.
pub const LOCALE_PATTERN: &str = "^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$";

/// The optional `locale` field: a well-formed BCP 47 tag (`rules::locale`).
pub fn locale(value: Option<&str>) -> Result<Option<Locale>, EngineError> {
    value.map(|v| Locale::parse(v).map_err(|e| EngineError::InvalidInput(format!("locale {e}")))).transpose()
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
#[derive(Debug, Serialize, ToSchema)]
pub struct SendResponse {
    #[schema(schema_with = doc::send_status)]
    pub status: &'static str,
    /// How the code travels: `sms` to a phone number, `email` to an address.
    #[schema(schema_with = doc::channel)]
    pub channel: &'static str,
    /// Seconds the code stays valid.
    #[schema(examples(300))]
    pub expires_in: u64,
    /// Seconds before another code can be requested for this identifier and purpose.
    #[schema(examples(30))]
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

/// An account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    #[schema(format = "uuid")]
    pub id: String,
    /// E.164.
    #[schema(examples("+12025550123"))]
    pub phone: Option<String>,
    /// The identifier, or the contact address of a phone account.
    #[schema(format = "email")]
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    /// Whether registration was completed with a code.
    pub verified: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
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

/// Answer to a successful login (by code or by device), registration or refresh.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// A JWT (EdDSA by default; see `/.well-known/jwks.json`) with claims `iss`, `aud`, `sub`
    /// (user id), `sid` (session id), `iat`, `exp`, `jti`.
    pub access_token: String,
    #[schema(schema_with = doc::token_type)]
    pub token_type: &'static str,
    /// Seconds the access token stays valid.
    #[schema(examples(900))]
    pub expires_in: u64,
    /// Works once: `POST /v1/token/refresh` exchanges it for a new one.
    #[schema(pattern = "^ort1\\.[0-9a-f]{32}\\.[0-9a-f]{64}$")]
    pub refresh_token: String,
    #[schema(format = "uuid")]
    pub session_id: String,
    /// When this session's login happened.
    #[schema(format = DateTime)]
    pub login_at: String,
    pub user: UserView,
}

/// `GET /v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    /// The session of the access token.
    #[schema(format = "uuid")]
    pub session_id: String,
}

/// One audit event as `GET /v1/admin/audit` and `otpd audit --format json` show it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct AuditView {
    #[schema(format = DateTime)]
    pub at: String,
    /// The `X-Request-Id` of the call.
    pub trace_id: String,
    /// The API call (`register`, `login_verify`, …) or `delivery`.
    pub api: String,
    /// The step the call ended at.
    pub step: String,
    #[schema(schema_with = doc::audit_outcome)]
    pub outcome: String,
    pub message: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Keyed BLAKE3 of the identifier, hex: the identifier itself is never stored.
    pub ident_hash: Option<String>,
    #[schema(format = "uuid")]
    pub user_id: Option<String>,
}

impl From<&AuditEvent> for AuditView {
    fn from(e: &AuditEvent) -> Self {
        AuditView {
            at: rfc3339(e.at),
            trace_id: e.trace_id.to_string(),
            api: e.api.as_str().to_owned(),
            step: e.step.as_str().to_owned(),
            outcome: e.outcome.as_str().to_owned(),
            message: e.message.to_string(),
            client_ip: e.client_ip.map(|ip| ip.to_string()),
            user_agent: e.user_agent.as_deref().map(str::to_owned),
            ident_hash: e.ident_hash.map(|h| h.to_hex()),
            user_id: e.user_id.map(|u| u.to_string()),
        }
    }
}

/// Audit events, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditListResponse {
    pub events: Vec<AuditView>,
    /// How long the trail keeps events: older ones are not here because they were deleted.
    pub retention: Option<RetentionView>,
}

/// What the store keeps, and for how long (`[retention]`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RetentionView {
    /// Audit events are deleted this many days after they were written.
    pub audit_days: u64,
    /// Ended sessions are deleted this many days after they ended.
    pub ended_sessions_days: u64,
    /// Revoked devices are deleted this many days after their revocation.
    pub removed_devices_days: u64,
    /// In words, for a person reading an export.
    pub note: String,
}

impl From<&crate::config::RetentionConfig> for RetentionView {
    fn from(r: &crate::config::RetentionConfig) -> Self {
        let days = |d: crate::config::Dur| d.0.as_secs() / 86_400;
        let (audit, sessions, devices) = (days(r.audit), days(r.ended_sessions), days(r.removed_devices));
        RetentionView {
            audit_days: audit,
            ended_sessions_days: sessions,
            removed_devices_days: devices,
            note: format!(
                "audit events are kept {audit} days, ended sessions {sessions} days after they end, removed devices \
                 {devices} days after removal; older records have been deleted"
            ),
        }
    }
}

/// A session as an export shows it: every field the store keeps but the refresh digests.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionExportView {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(schema_with = doc::auth_method)]
    pub method: &'static str,
    #[schema(format = "uuid")]
    pub device_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = DateTime)]
    pub refreshed_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<&'static str>,
    /// Refresh rotations.
    pub generation: u32,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl From<&Session> for SessionExportView {
    fn from(s: &Session) -> Self {
        let view = SessionView::new(s, s.id);
        SessionExportView {
            id: view.id,
            method: view.method,
            device_id: view.device_id,
            created_at: view.created_at,
            expires_at: view.expires_at,
            refreshed_at: view.refreshed_at,
            revoked_at: s.revoked_at.map(rfc3339),
            revoke_reason: s.revoke_reason.map(|r| r.as_str()),
            generation: s.generation,
            client_ip: view.client_ip,
            user_agent: view.user_agent,
        }
    }
}

/// A device as an export shows it, revoked ones included.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceExportView {
    #[serde(flatten)]
    pub device: DeviceView,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

/// `GET /v1/me/export` (and the admin's `GET /v1/admin/users/{id}`): everything the store
/// holds for the account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountExportResponse {
    #[schema(format = DateTime)]
    pub exported_at: String,
    pub user: UserView,
    pub sessions: Vec<SessionExportView>,
    pub devices: Vec<DeviceExportView>,
    pub passkeys: Vec<PasskeyView>,
    /// The audit events under the account's identifier, newest first.
    pub audit_events: Vec<AuditView>,
    /// False when there were more events than an export returns (10,000).
    pub audit_events_complete: bool,
    pub retention: RetentionView,
}

impl AccountExportResponse {
    pub fn new(e: &otpd_actors::flows::data::AccountExport, app: &super::app::App) -> Self {
        AccountExportResponse {
            exported_at: rfc3339(app.engine.now()),
            user: UserView::from(&e.user),
            sessions: e.sessions.iter().map(SessionExportView::from).collect(),
            devices: e
                .devices
                .iter()
                .map(|d| DeviceExportView { device: DeviceView::from(d), revoked_at: d.revoked_at.map(rfc3339) })
                .collect(),
            passkeys: e.passkeys.iter().map(PasskeyView::from).collect(),
            audit_events: e.events.iter().map(AuditView::from).collect(),
            audit_events_complete: e.events_complete,
            retention: RetentionView::from(&app.observe.retention),
        }
    }
}

impl From<otpd_actors::ports::Erased> for EraseResponse {
    fn from(e: otpd_actors::ports::Erased) -> Self {
        EraseResponse { erased: true, sessions: e.sessions, devices: e.devices, passkeys: e.passkeys }
    }
}

/// Answer to `DELETE /v1/me` (and the admin's `DELETE /v1/admin/users/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EraseResponse {
    /// Always true: the account is gone.
    pub erased: bool,
    /// Sessions deleted (their tokens stopped working).
    pub sessions: usize,
    /// Devices deleted.
    pub devices: usize,
    /// Passkeys deleted.
    pub passkeys: usize,
}

/// `POST /v1/token/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token of the last token response (any other answers 401).
    #[schema(pattern = "^ort1\\.[0-9a-f]{32}\\.[0-9a-f]{64}$")]
    pub refresh_token: String,
}

/// `POST /v1/devices`: exactly one of `public_key` (SPKI PEM, or SPKI DER in base64) and `jwk`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// 1 to 64 characters (surrounding spaces are trimmed), no control characters.
    #[schema(min_length = 1, max_length = 64, examples("Ada's iPhone"))]
    pub name: String,
    pub platform: PlatformWire,
    /// An ECDSA P-256 or Ed25519 public key: SubjectPublicKeyInfo as PEM
    /// (`-----BEGIN PUBLIC KEY-----`) or as DER in base64 (standard or URL-safe, padding
    /// optional).
    #[schema(max_length = 2048, examples(doc::example_spki))]
    pub public_key: Option<String>,
    pub jwk: Option<JwkWire>,
}

/// A public JWK: `{"kty":"EC","crv":"P-256","x","y"}` or `{"kty":"OKP","crv":"Ed25519","x"}`.
/// Other members (`kid`, `alg`, `use`, `key_ops`, `ext`, … as WebCrypto exports them) are
/// ignored; the private member `d` is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Jwk)]
pub struct JwkWire {
    #[schema(max_length = 32, examples("EC"))]
    pub kty: String,
    #[schema(max_length = 32, examples("P-256"))]
    pub crv: String,
    /// base64url (padding optional).
    #[schema(max_length = 128)]
    pub x: String,
    /// base64url (padding optional); P-256 only.
    #[schema(max_length = 128)]
    pub y: Option<String>,
    /// Never send a private key: any value but `null` is refused.
    #[schema(schema_with = doc::forbidden_member)]
    pub d: Option<serde::de::IgnoredAny>,
}

/// The kind of device.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Platform)]
pub enum PlatformWire {
    Ios,
    Android,
    Web,
    Other,
}

impl From<PlatformWire> for Platform {
    fn from(p: PlatformWire) -> Platform {
        match p {
            PlatformWire::Ios => Platform::Ios,
            PlatformWire::Android => Platform::Android,
            PlatformWire::Web => Platform::Web,
            PlatformWire::Other => Platform::Other,
        }
    }
}

/// `POST /v1/device-login/challenge`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceChallengeRequest {
    /// The id enrolment returned (lower- or upper-case, hyphenated).
    #[schema(
        format = "uuid",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub device_id: String,
}

/// `POST /v1/device-login/verify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceVerifyRequest {
    #[schema(
        format = "uuid",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub device_id: String,
    /// The challenge's nonce, as returned.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub nonce: String,
    /// The device's signature of the login message, base64 (standard or URL-safe, padding
    /// optional): ECDSA P-256 as ASN.1 DER or raw `r‖s`, or Ed25519.
    #[schema(max_length = 512)]
    pub signature: String,
}

/// Longest device name (characters).
pub const MAX_DEVICE_NAME_CHARS: usize = 64;
/// Longest `public_key` text accepted (PEM or base64 DER of a P-256/Ed25519 SPKI is < 200).
pub const MAX_PUBLIC_KEY_CHARS: usize = 2048;
/// Longest `signature` text accepted (a DER P-256 signature is at most 72 bytes).
pub const MAX_SIGNATURE_CHARS: usize = 512;

/// A device name: trimmed, 1..=64 characters (counted before trimming), no control characters.
pub fn device_name(value: &str) -> Result<String, EngineError> {
    let v = value.trim();
    if v.is_empty() || value.chars().count() > MAX_DEVICE_NAME_CHARS || v.chars().any(char::is_control) {
        return Err(EngineError::InvalidInput(format!(
            "name must be 1 to {MAX_DEVICE_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(v.to_owned())
}

/// A device id: a hyphenated UUID (as enrolment returns it; either case).
pub fn device_id(value: &str) -> Result<DeviceId, EngineError> {
    // Only the hyphenated form: the one the API returns and the document's `pattern` describes.
    let parsed = (value.len() == 36).then(|| uuid::Uuid::parse_str(value).ok()).flatten();
    parsed.map(DeviceId).ok_or_else(|| EngineError::InvalidInput("device_id must be a device id (a UUID)".into()))
}

/// A nonce as the challenge returned it.
pub fn nonce(value: &str) -> Result<Nonce, EngineError> {
    Nonce::parse(value).ok_or_else(|| {
        EngineError::InvalidInput(format!("nonce must be the {NONCE_HEX_LEN} hex characters the challenge returned"))
    })
}

/// Base64 in either alphabet (standard or URL-safe), padding optional, whitespace ignored.
pub fn base64_any(field: &str, value: &str, max_chars: usize) -> Result<Vec<u8>, EngineError> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let bad = || EngineError::InvalidInput(format!("{field} must be base64 (standard or URL-safe)"));
    if value.len() > max_chars {
        return Err(EngineError::InvalidInput(format!("{field} must be at most {max_chars} characters")));
    }
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(bad());
    }
    let engine = if compact.contains(['-', '_']) { &URL_SAFE } else { &STANDARD };
    engine.decode(compact.as_bytes()).map_err(|_| bad())
}

/// The key of an enrolment request, out of its transport encoding.
pub fn key_input(public_key: &Option<String>, jwk: &Option<JwkWire>) -> Result<KeyInput, EngineError> {
    match (public_key, jwk) {
        (Some(text), None) => {
            if text.trim_start().starts_with("-----BEGIN") {
                if text.len() > MAX_PUBLIC_KEY_CHARS {
                    return Err(EngineError::InvalidInput(format!(
                        "public_key must be at most {MAX_PUBLIC_KEY_CHARS} characters"
                    )));
                }
                Ok(KeyInput::SpkiPem(text.trim().to_owned()))
            } else {
                Ok(KeyInput::SpkiDer(base64_any("public_key", text, MAX_PUBLIC_KEY_CHARS)?))
            }
        }
        (None, Some(jwk)) => {
            if jwk.d.is_some() {
                return Err(EngineError::InvalidInput(
                    "jwk must be a public key: never send the private member d".into(),
                ));
            }
            let short = |s: &str| s.len() <= 32;
            if !short(&jwk.kty) || !short(&jwk.crv) {
                return Err(EngineError::InvalidInput("jwk: kty and crv are short names".into()));
            }
            Ok(KeyInput::Jwk {
                kty: jwk.kty.clone(),
                crv: jwk.crv.clone(),
                x: base64_any("jwk.x", &jwk.x, 128)?,
                y: jwk.y.as_deref().map(|y| base64_any("jwk.y", y, 128)).transpose()?,
            })
        }
        (Some(_), Some(_)) => Err(EngineError::InvalidInput("give either public_key or jwk, not both".into())),
        (None, None) => Err(EngineError::InvalidInput("public_key or jwk is required".into())),
    }
}

/// An enrolled device as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Device)]
pub struct DeviceView {
    #[schema(format = "uuid")]
    pub id: String,
    pub name: String,
    #[schema(schema_with = doc::platform)]
    pub platform: &'static str,
    /// The JOSE name of the key's algorithm.
    #[schema(schema_with = doc::key_algorithm)]
    pub algorithm: &'static str,
    /// SHA-256 of the key's SPKI DER, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub key_fingerprint: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        DeviceView {
            id: d.id.to_string(),
            name: d.name.clone(),
            platform: d.platform.as_str(),
            algorithm: d.key.algorithm.as_str(),
            key_fingerprint: d.key.fingerprint(),
            created_at: rfc3339(d.created_at),
        }
    }
}

/// `POST /v1/passkeys`: the credential `navigator.credentials.create()` made, as JSON
/// (`PublicKeyCredential.toJSON()`: base64url without padding for the binary fields).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyRegisterRequest {
    /// 1 to 64 characters (surrounding spaces are trimmed), no control characters.
    #[schema(min_length = 1, max_length = 64, examples("Ada's laptop"))]
    pub name: String,
    /// `{id, rawId, type: "public-key", response: {clientDataJSON, attestationObject,
    /// transports?}, clientExtensionResults?, authenticatorAttachment?}`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// `POST /v1/passkey-login/verify`: the assertion `navigator.credentials.get()` made, as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLoginRequest {
    /// `{id, rawId, type: "public-key", response: {clientDataJSON, authenticatorData,
    /// signature, userHandle}, clientExtensionResults?, authenticatorAttachment?}`.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// The options of a WebAuthn ceremony, for the browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyOptionsResponse {
    /// What `navigator.credentials.create()` or `.get()` takes once its base64url fields are
    /// decoded: `{publicKey: {...}}` (and `mediation` for a login).
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// Seconds the challenge works (single use).
    pub expires_in: u64,
}

/// A registered passkey as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Passkey)]
pub struct PasskeyView {
    /// The credential id, base64url without padding.
    #[schema(pattern = "^[A-Za-z0-9_-]{2,1364}$")]
    pub id: String,
    pub name: String,
    /// Whether the passkey may be synced to other devices, and whether it is.
    pub backup_eligible: bool,
    pub backup_state: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
}

impl From<&Passkey> for PasskeyView {
    fn from(p: &Passkey) -> Self {
        PasskeyView {
            id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&p.id.0),
            name: p.name.clone(),
            backup_eligible: p.backup_eligible,
            backup_state: p.backup_state,
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(rfc3339),
        }
    }
}

/// The account's passkeys.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyListResponse {
    pub passkeys: Vec<PasskeyView>,
}

/// A passkey id from a path: base64url without padding, 1..=1023 bytes.
pub fn passkey_id(value: &str) -> Result<CredentialId, EngineError> {
    let bytes = (value.len() <= 1364)
        .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok())
        .flatten()
        .and_then(CredentialId::new);
    bytes.ok_or(EngineError::PasskeyNotFound)
}

/// A credential the client sent, as the JSON text the relying party reads.
pub fn credential_json(value: &serde_json::Value) -> Result<String, EngineError> {
    if !value.is_object() {
        return Err(EngineError::InvalidInput("credential must be a JSON object".into()));
    }
    Ok(value.to_string())
}

/// The account's active devices.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceListResponse {
    pub devices: Vec<DeviceView>,
}

/// Answer to `POST /v1/device-login/challenge`; the same shape for every device id.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceChallengeResponse {
    /// Lower-case, hyphenated: as it goes into the signed message.
    #[schema(format = "uuid")]
    pub device_id: String,
    /// 64 lower-case hex characters, single use.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub nonce: String,
    /// The node's `tokens.audience`, the second line of the signed message.
    pub audience: String,
    /// Seconds the nonce stays valid.
    #[schema(examples(60))]
    pub expires_in: u64,
}

/// One session as `GET /v1/sessions` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    #[schema(format = "uuid")]
    pub id: String,
    /// How the session was opened: a code (`otp`), a device key (`device`) or a passkey (`passkey`).
    #[schema(schema_with = doc::auth_method)]
    pub method: &'static str,
    /// The device of a `device` session.
    #[schema(format = "uuid")]
    pub device_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Absolute: refreshing does not extend it.
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = DateTime)]
    pub refreshed_at: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Whether this is the session of the access token that asked.
    pub current: bool,
}

impl SessionView {
    pub fn new(s: &Session, current: SessionId) -> Self {
        SessionView {
            id: s.id.to_string(),
            method: s.method.as_str(),
            device_id: match s.method {
                AuthMethod::Device(d) => Some(d.to_string()),
                AuthMethod::Otp | AuthMethod::PasskeyUnnamed | AuthMethod::Passkey(_) => None,
            },
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            refreshed_at: s.refreshed_at.map(rfc3339),
            client_ip: s.client_ip.map(|ip| ip.to_string()),
            user_agent: s.user_agent.clone(),
            current: s.id == current,
        }
    }
}

/// Active sessions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionListResponse {
    pub sessions: Vec<SessionView>,
}

/// Answer to `POST /v1/logout/all`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogoutAllResponse {
    /// How many sessions were revoked (the caller's included).
    pub revoked: usize,
}

/// `GET /v1/admin/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminStatsResponse {
    /// When the stats were taken (the node's clock).
    pub at: String,
    pub uptime_s: u64,
    /// `null` while the store is still counting (just after start).
    pub users: Option<UserCounts>,
    pub sessions: Option<SessionCounts>,
    pub otp: OtpCounts,
    pub challenges: ChallengeCounts,
    pub delivery: Option<DeliveryCounts>,
}

/// `GET /v1/admin/destinations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationListResponse {
    /// When they were read (the node's clock).
    pub at: String,
    /// Worst first: refusing, then tripped, then most codes never verified.
    pub destinations: Vec<DestinationView>,
}

/// One destination of the conversion guard (docs/limits.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationView {
    /// `+` and the digits of a number prefix (`limits.prefix_digits` long) or of a country
    /// calling code.
    #[schema(examples("+4477009"))]
    pub destination: String,
    #[schema(examples("prefix"))]
    pub scope: &'static str,
    /// SMS sends let through and codes verified in the current window.
    pub sent: u64,
    pub verified: u64,
    /// `verified / sent` in percent; `null` before the first send of a window.
    pub conversion: Option<u64>,
    /// The destination's own conversion of past healthy windows, in percent; `null` until one.
    pub baseline: Option<u8>,
    /// Whether the current window trips the guard.
    pub tripped: bool,
    /// The mode it is judged in: `off`, `record`, `throttle` or `block` (its pin's while pinned).
    #[schema(examples("throttle"))]
    pub mode: &'static str,
    /// Whether a send to it is refused now.
    pub refusing: bool,
    pub window_ends_at: Option<String>,
    /// A throttled destination's next send.
    pub next_send_at: Option<String>,
    pub pinned_until: Option<String>,
}

impl From<&DestinationState> for DestinationView {
    fn from(d: &DestinationState) -> Self {
        DestinationView {
            destination: d.subject.destination().unwrap_or_default(),
            scope: if matches!(d.subject, Subject::Country(_)) { "country" } else { "prefix" },
            sent: d.sent,
            verified: d.verified,
            conversion: (d.sent > 0).then(|| d.verified.saturating_mul(100) / d.sent),
            baseline: d.baseline,
            tripped: d.tripped,
            mode: guard_mode_name(d.mode),
            refusing: d.refusing,
            window_ends_at: d.window_ends.map(rfc3339),
            next_send_at: d.next_send.map(rfc3339),
            pinned_until: d.pin.map(|p| rfc3339(p.until)),
        }
    }
}

pub fn guard_mode_name(mode: GuardMode) -> &'static str {
    match mode {
        GuardMode::Off => "off",
        GuardMode::Record => "record",
        GuardMode::Throttle => "throttle",
        GuardMode::Block => "block",
    }
}

/// `PUT /v1/admin/destinations/{destination}`: pins it to a mode.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinDestinationRequest {
    /// `record` (never refused; for a market known to verify poorly), `throttle` or `block`.
    #[schema(examples("record"))]
    pub mode: String,
    /// How long the pin lasts (`30m`, `24h`, `7d`; at most 90 days).
    #[schema(examples("24h"))]
    pub r#for: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCounts {
    pub total: u64,
    pub verified: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCounts {
    pub active: u64,
}

/// One-time-code counters since the node started.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtpCounts {
    /// purpose → channel → codes handed to delivery.
    pub issued: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    pub resends: BTreeMap<&'static str, u64>,
    /// purpose → verdict → count.
    pub verifications: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    pub enumeration_safe_responses: BTreeMap<&'static str, u64>,
}

impl From<OtpStats> for OtpCounts {
    fn from(s: OtpStats) -> Self {
        OtpCounts {
            issued: s.issued,
            resends: s.resends,
            verifications: s.verifications,
            enumeration_safe_responses: s.enumeration_safe,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeCounts {
    pub shards: usize,
    /// Held in memory (pending, answered or expired awaiting reclaim).
    pub live: usize,
    pub pending: usize,
    /// `null` if the supervisor did not answer in time.
    pub shard_restarts: Option<u64>,
}

/// The dispatcher's counters since start.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryCounts {
    pub accepted: u64,
    pub refused: u64,
    pub delivered: u64,
    pub given_up: u64,
    pub expired: u64,
    pub attempts: u64,
    pub retries: u64,
    pub failovers: u64,
    pub queued: usize,
    pub restarts: u64,
    pub providers: BTreeMap<String, ProviderCounts>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderCounts {
    pub calls: u64,
    pub messages: u64,
    pub delivered: u64,
    pub failed: u64,
    pub rejected: u64,
    pub breaker_opened: u64,
}

impl From<DispatchStats> for DeliveryCounts {
    fn from(s: DispatchStats) -> Self {
        DeliveryCounts {
            accepted: s.accepted,
            refused: s.refused,
            delivered: s.delivered,
            given_up: s.given_up,
            expired: s.expired,
            attempts: s.attempts,
            retries: s.retries,
            failovers: s.failovers,
            queued: s.queued,
            restarts: s.restarts,
            providers: s
                .providers
                .into_iter()
                .map(|p| {
                    let counts = ProviderCounts {
                        calls: p.calls,
                        messages: p.messages,
                        delivered: p.delivered,
                        failed: p.failed,
                        rejected: p.rejected,
                        breaker_opened: p.breaker_opened,
                    };
                    (p.name, counts)
                })
                .collect(),
        }
    }
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
    fn base64_in_either_alphabet_with_or_without_padding() {
        let bytes = [0xfb, 0xff, 0x01];
        for text in ["+/8B", "-_8B", "+/8B\n", " -_8B "] {
            assert_eq!(base64_any("f", text, 100).unwrap(), bytes, "{text:?}");
        }
        assert_eq!(base64_any("f", "QQ", 100).unwrap(), b"A");
        assert_eq!(base64_any("f", "QQ==", 100).unwrap(), b"A");
        for bad in ["", "   ", "*!", "+/-_", "QQ=Q"] {
            assert!(base64_any("f", bad, 100).is_err(), "{bad:?}");
        }
        assert!(base64_any("f", &"A".repeat(101), 100).is_err());
    }

    #[test]
    fn device_fields_are_checked() {
        assert!(device_id("01890a5d-ac96-774b-bcce-b302099a8057").is_ok());
        assert!(device_id("nope").is_err());
        assert!(device_id(&"0".repeat(1000)).is_err());
        assert_eq!(device_name("  Ada's iPhone ").unwrap(), "Ada's iPhone");
        assert!(device_name("").is_err());
        assert!(device_name(&"x".repeat(65)).is_err());
        assert!(device_name("a\u{7}").is_err());
        assert!(nonce(&"a".repeat(64)).is_ok());
        assert!(nonce("abc").is_err());
        assert!(key_input(&None, &None).is_err());
        let jwk = || Some(JwkWire { kty: "OKP".into(), crv: "Ed25519".into(), x: "AA".into(), y: None, d: None });
        assert!(key_input(&Some("AA".into()), &jwk()).is_err());
        assert!(matches!(key_input(&None, &jwk()), Ok(KeyInput::Jwk { .. })));
        assert!(matches!(key_input(&Some("-----BEGIN PUBLIC KEY-----".into()), &None), Ok(KeyInput::SpkiPem(_))));
        let with_d: JwkWire =
            serde_json::from_str(r#"{"kty":"OKP","crv":"Ed25519","x":"AA","d":"AA","ext":true}"#).unwrap();
        assert!(key_input(&None, &Some(with_d)).is_err(), "a private key is refused");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(Timestamp::from_millis(1_700_000_000_123)), "2023-11-14T22:13:20.123Z");
    }
}

/// Schema helpers for `#[schema(schema_with = …)]` in the wire types: enums whose values come
/// from the engine's own spellings.
pub mod schema {
    use otpd_actors::ports::{AuthMethod, Platform};
    use otpd_actors::rules::audit::AuditOutcome;
    use otpd_actors::rules::device_key::KeyAlgorithm;
    use otpd_actors::rules::identifier::Channel;
    use otpd_actors::rules::ids::DeviceId;
    use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

    /// A real P-256 public key (SPKI DER, base64), so that generated requests can enrol one.
    pub const EXAMPLE_SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfguw1pGn7KfAqTEASqLZY6d7OPqBsBHPIBOBAVDghkZpaiq8ymwtILhXjc9FLrHK2uPoTJUaLQkXxSsh4jodNQ==";

    pub fn example_spki() -> &'static str {
        EXAMPLE_SPKI
    }

    fn one_of<const N: usize>(values: [&'static str; N]) -> Object {
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values)).build()
    }

    pub fn send_status() -> Object {
        one_of(["pending"])
    }

    pub fn channel() -> Object {
        one_of([Channel::Sms, Channel::Email].map(Channel::as_str))
    }

    pub fn token_type() -> Object {
        one_of(["Bearer"])
    }

    pub fn platform() -> Object {
        one_of(super::PLATFORMS.map(Platform::as_str))
    }

    pub fn key_algorithm() -> Object {
        one_of([KeyAlgorithm::Es256, KeyAlgorithm::Ed25519].map(KeyAlgorithm::as_str))
    }

    pub fn auth_method() -> Object {
        one_of(
            [AuthMethod::Otp, AuthMethod::Device(DeviceId(uuid::Uuid::nil())), AuthMethod::PasskeyUnnamed]
                .map(AuthMethod::as_str),
        )
    }

    pub fn audit_outcome() -> Object {
        use AuditOutcome as O;
        one_of([O::Ok, O::Rejected, O::Limited, O::Failed].map(O::as_str))
    }

    /// A member that may only be absent or `null`.
    pub fn forbidden_member() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Null)
            .description(Some("Never send a private key: any value but null is refused."))
            .build()
    }
}

/// `POST /v1/admin/keys/rotate`: makes a new generation of a key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// `signing` (the access-token signing key) or `admin` (the admin token).
    #[schema(examples("signing"))]
    pub key: String,
}

/// What a rotation made. The new admin token is shown here once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotateKeyResponse {
    #[schema(examples("signing"))]
    pub key: &'static str,
    /// The new generation (the configured or first generated key is 0).
    pub generation: u32,
    /// When a signing key starts signing (it is in the JWKS already); an admin token: now.
    pub activates_at: String,
    /// The new signing key's `kid` (RFC 7638 thumbprint).
    pub kid: Option<String>,
    /// The new admin token.
    pub admin_token: Option<String>,
    /// Until when the previous admin token is still accepted.
    pub previous_admin_token_until: Option<String>,
}
