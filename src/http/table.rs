//! The one route table: every operation of the API as one row of [`ROUTES`].
//!
//! A row says how the operation is routed (method, path template, handler), who may call it
//! ([`Auth`], enforced by the router before the handler runs), where it is served
//! ([`Exposure`]: the public listener, the ops listener, or both), how it is counted (its
//! path is the `route` label of the HTTP metrics, or `other`), which audit API it writes, and
//! how the OpenAPI document describes it (summary, body, replies, problem codes).
//!
//! Everything else is derived from the rows: routing and its `404`/`405` answers (with
//! `Allow` listing the rows' methods), the public/ops split, the metric labels
//! ([`route_labels`]) and the document (`super::openapi`). **Adding an endpoint is one row
//! here plus its handler** (an `async fn(&App, &Call) -> Result<Resp, ApiError>`; its schemas
//! derive `ToSchema` and are listed in `super::openapi`), then `otpd openapi > docs/openapi.json`.
//! Rows of one path stand next to each other; a template has at most one parameter, its last
//! segment (`{id}`), which matches the rest of the path.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use hyper::Method;
use otpd_actors::Api;
use serde_json::{Value, json};

use super::app::{App, Call, Listener, Resp};
use super::problem::{self, ApiError};
use super::{account, backup, codes, ops, receipts};

/// What a handler returns: boxed, so that every row's handler has one type.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Resp, ApiError>> + Send + 'a>>;

/// A row's handler.
pub type Handler = for<'a> fn(&'a App, &'a Call<'a>) -> HandlerFuture<'a>;

/// An `async fn(&App, &Call) -> Result<Resp, ApiError>` as a row's [`Handler`].
macro_rules! handler {
    ($f:path) => {{
        fn boxed<'a>(app: &'a App, call: &'a Call<'a>) -> HandlerFuture<'a> {
            Box::pin($f(app, call))
        }
        boxed as Handler
    }};
}

/// Where an operation is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// The public listener (`http.listen`) only: the API.
    Api,
    /// Both listeners: health (the handler says less on the public one).
    Health,
    /// The ops listener (`admin.listen`), and the public one only with
    /// `admin.ops_on_public_listener`: metrics and the admin API, whose counters tell known
    /// accounts from unknown ones.
    Ops,
}

impl Exposure {
    /// Whether a row of this exposure is served on `listener`.
    pub fn served_on(self, listener: Listener, ops_on_public_listener: bool) -> bool {
        match self {
            Exposure::Api => listener == Listener::Main,
            Exposure::Health => true,
            Exposure::Ops => listener.serves_ops(ops_on_public_listener),
        }
    }
}

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    /// An access token (JWT) from a login.
    Bearer,
    /// The node's admin token.
    Admin,
}

/// A success (or non-problem) reply of an operation.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    pub status: u16,
    pub description: &'static str,
    /// A schema in `components.schemas`; `None` for an empty body.
    pub schema: Option<&'static str>,
    /// Response headers beyond `X-Request-Id` (names in `components.headers`).
    pub headers: &'static [&'static str],
}

/// A query or path parameter.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub location: &'static str,
    pub required: bool,
    pub description: &'static str,
    pub schema: fn() -> Value,
}

/// A link from a reply to another operation: `(name, operationId, parameter, expression)`.
pub type Link = (&'static str, &'static str, &'static str, &'static str);

/// One operation of the API: how it is routed, counted, authorised and documented.
#[derive(Clone, Copy)]
pub struct Route {
    /// Lower-case, as OpenAPI spells it.
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    pub auth: Auth,
    /// The audit trail's name for it; `None` for operations that write no audit event.
    pub api: Option<Api>,
    pub exposure: Exposure,
    /// Counted under its path in the `route` label of the HTTP metrics (`false`: as `other`).
    pub labelled: bool,
    pub handler: Handler,
    pub params: &'static [Param],
    /// The JSON request body's schema, if the operation reads one.
    pub body: Option<&'static str>,
    pub replies: &'static [Reply],
    /// The problem codes the operation can answer (lists concatenated).
    pub problems: &'static [&'static [&'static str]],
    pub links: &'static [Link],
}

impl Route {
    /// Every problem code of the operation, once each, in catalogue order.
    pub fn problem_codes(&self) -> Vec<&'static str> {
        let listed: Vec<&str> = self.problems.iter().flat_map(|l| l.iter().copied()).collect();
        problem::CATALOGUE.iter().map(|k| k.code).filter(|c| listed.contains(c)).collect()
    }
}

/// Refusals of any operation that reads a JSON body.
pub const BODY: &[&str] =
    &["invalid_json", "invalid_request", "request_timeout", "payload_too_large", "unsupported_media_type"];
/// Refusals of a `phone` or `email` field.
pub const IDENTIFIER: &[&str] = &["invalid_phone", "invalid_email"];
/// Limits checked before any code is sent (`429` with `Retry-After`; the destination lists:
/// `403`; a spent SMS budget: `503` with `Retry-After`). Each send also has its own
/// per-identifier rule, listed on its operation.
pub const SEND_LIMITS: &[&str] = &[
    "resend_cooldown",
    "identifier_send_limit",
    "ip_send_limit",
    "prefix_send_limit",
    "country_send_limit",
    "destination_not_allowed",
    "destination_throttled",
    "sms_budget_exhausted",
];
/// Limits checked before a code (or a device signature) is checked.
pub const VERIFY_LIMITS: &[&str] = &["identifier_verify_limit", "ip_verify_limit"];
/// The answers of a wrong, late or spent code.
pub const CODE_ANSWERS: &[&str] =
    &["invalid_code", "code_expired", "code_already_used", "no_pending_code", "too_many_attempts"];
/// Refusals of an access token.
pub const BEARER: &[&str] = &["missing_token", "invalid_token"];
/// A dependency (store, limiter, shard) cannot serve the request now.
pub const UNAVAILABLE: &[&str] = &["unavailable"];
/// The same, for calls that reach a challenge: in a cluster its owner node may not answer.
pub const CHALLENGE_UNAVAILABLE: &[&str] = &["unavailable", "owner_unreachable"];

const SEND_RECEIPT: Reply = Reply {
    status: 202,
    description: "A code is on its way (the same answer whether or not the identifier has an account).",
    schema: Some("SendResponse"),
    headers: &[],
};
const TOKENS: Reply = Reply {
    status: 200,
    description: "Signed in: an access token, a refresh token and the account.",
    schema: Some("TokenResponse"),
    headers: &[],
};
const NO_CONTENT: Reply = Reply { status: 204, description: "Done.", schema: None, headers: &[] };

const PASSKEY_OPTIONS: Reply = Reply {
    status: 200,
    description: "The ceremony's options, with a fresh single-use challenge.",
    schema: Some("PasskeyOptionsResponse"),
    headers: &[],
};

fn passkey_id_schema() -> Value {
    json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{2,1364}$" })
}

fn uuid_schema() -> Value {
    json!({ "type": "string", "format": "uuid", "pattern": UUID_PATTERN })
}

fn string_schema() -> Value {
    json!({ "type": "string" })
}

/// The destination of `/v1/admin/destinations/{destination}`.
const DESTINATION: Param = Param {
    name: "destination",
    location: "path",
    required: true,
    description: "`+` (or `%2B`) and the digits of a number prefix (`limits.prefix_digits` of them) or of a \
        country calling code (1 to 3), as `GET /v1/admin/destinations` lists them.",
    schema: destination_schema,
};

fn destination_schema() -> Value {
    json!({ "type": "string", "pattern": "^(\\+|%2[bB])?[1-9][0-9]{0,14}$" })
}

fn limit_schema() -> Value {
    json!({ "type": "integer", "minimum": 0, "default": 100 })
}

/// The account of `/v1/admin/users/{id}`.
const USER_ID: Param = Param {
    name: "id",
    location: "path",
    required: true,
    description: "The account id (a hyphenated UUID, as tokens' `sub` and the audit trail's `user_id` show it); \
        anything else is `404 account_not_found`.",
    schema: uuid_schema,
};

/// A hyphenated UUID, either case: what `wire::device_id` accepts.
pub const UUID_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Every operation of API v1, in the order the document lists them.
pub static ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/v1/register",
        id: "register",
        tag: "codes",
        summary: "Create an account and send a registration code",
        description: "Creates an unverified account (or updates an unverified one) and sends a code to the \
            identifier. For an identifier that already has a verified account the answer is the same, and \
            the code signs its owner in (unless `otp.reveal_accounts` is on: then `409 account_exists`).",
        auth: Auth::None,
        api: Some(Api::Register),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(codes::register),
        params: &[],
        body: Some("RegisterRequest"),
        replies: &[SEND_RECEIPT],
        problems: &[
            BODY,
            IDENTIFIER,
            SEND_LIMITS,
            &["identifier_register_limit", "account_exists", "delivery_busy"],
            CHALLENGE_UNAVAILABLE,
        ],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/register/verify",
        id: "verifyRegistration",
        tag: "codes",
        summary: "Verify a registration code: activate the account and sign in",
        description: "A wrong code counts against the code (`attempts_left`); the fifth wrong one burns it.",
        auth: Auth::None,
        api: Some(Api::RegisterVerify),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(codes::verify_registration),
        params: &[],
        body: Some("RegisterVerifyRequest"),
        replies: &[TOKENS],
        problems: &[BODY, IDENTIFIER, VERIFY_LIMITS, &["identifier_guess_limit"], CODE_ANSWERS, CHALLENGE_UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/login",
        id: "login",
        tag: "codes",
        summary: "Send a login code",
        description: "For an identifier without an account the answer is the same and nothing is sent (unless \
            `otp.reveal_accounts` is on: then `404 account_not_found` or `403 account_not_verified`).",
        auth: Auth::None,
        api: Some(Api::Login),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(codes::login),
        params: &[],
        body: Some("LoginRequest"),
        replies: &[SEND_RECEIPT],
        problems: &[
            BODY,
            IDENTIFIER,
            SEND_LIMITS,
            &["identifier_login_limit", "account_not_found", "account_not_verified", "delivery_busy"],
            CHALLENGE_UNAVAILABLE,
        ],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/login/verify",
        id: "verifyLogin",
        tag: "codes",
        summary: "Verify a login code and sign in",
        description: "A wrong code counts against the code (`attempts_left`); the fifth wrong one burns it. \
            A right code for an account that never finished registration answers `403 account_not_verified`.",
        auth: Auth::None,
        api: Some(Api::LoginVerify),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(codes::verify_login),
        params: &[],
        body: Some("VerifyRequest"),
        replies: &[TOKENS],
        problems: &[
            BODY,
            IDENTIFIER,
            VERIFY_LIMITS,
            &["identifier_guess_limit"],
            CODE_ANSWERS,
            &["account_not_verified"],
            CHALLENGE_UNAVAILABLE,
        ],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/otp/resend",
        id: "resendCode",
        tag: "codes",
        summary: "Send a new code; the previous one stops working",
        description: "Subject to the same cooldown and send cap as the first send.",
        auth: Auth::None,
        api: Some(Api::OtpResend),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(codes::resend),
        params: &[],
        body: Some("ResendRequest"),
        replies: &[SEND_RECEIPT],
        problems: &[
            BODY,
            IDENTIFIER,
            SEND_LIMITS,
            &[
                "identifier_resend_limit",
                "account_not_found",
                "account_not_verified",
                "account_exists",
                "delivery_busy",
            ],
            CHALLENGE_UNAVAILABLE,
        ],
        links: &[],
    },
    Route {
        method: "get",
        path: "/v1/me",
        id: "getMe",
        tag: "sessions",
        summary: "The signed-in account",
        description: "",
        auth: Auth::Bearer,
        api: Some(Api::Me),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(codes::me),
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The account and the session of the token.",
            schema: Some("MeResponse"),
            headers: &[],
        }],
        problems: &[BEARER, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "delete",
        path: "/v1/me",
        id: "eraseMe",
        tag: "sessions",
        summary: "Erase the signed-in account",
        description: "Needs an access token from a login **by code** within `devices.enrol_max_auth_age`. \
            Deletes the account with its sessions (every token stops working) and devices, and destroys the keys \
            of the personal fields (client address, user agent) of the audit events about it: the trail keeps the \
            events, those fields unreadable (GDPR art. 17). No request body.",
        auth: Auth::Bearer,
        api: Some(Api::AccountErase),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::erase),
        params: &[],
        body: None,
        replies: &[Reply { status: 200, description: "Erased.", schema: Some("EraseResponse"), headers: &[] }],
        problems: &[BEARER, &["fresh_login_required"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "get",
        path: "/v1/me/export",
        id: "exportMe",
        tag: "sessions",
        summary: "Everything the store holds for the signed-in account",
        description: "The account, every session (ended ones until `retention.ended_sessions`), every device \
            (removed ones until `retention.removed_devices`) and the audit events under the account's identifier \
            (newest first, at most 10,000), as one JSON document: what a person may ask to see (GDPR art. 15).",
        auth: Auth::Bearer,
        api: Some(Api::AccountExport),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::export),
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The account's data.",
            schema: Some("AccountExportResponse"),
            headers: &[],
        }],
        problems: &[BEARER, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/token/refresh",
        id: "refreshToken",
        tag: "sessions",
        summary: "Exchange a refresh token for new tokens",
        description: "The refresh token works once: the answer carries a new one. Presenting one that was \
            already rotated away revokes the whole session (`401 refresh_token_reused`), so serialise \
            refreshes in your app.",
        auth: Auth::None,
        api: Some(Api::TokenRefresh),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::refresh),
        params: &[],
        body: Some("RefreshRequest"),
        replies: &[TOKENS],
        problems: &[BODY, &["invalid_refresh_token", "refresh_token_reused"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/logout",
        id: "logout",
        tag: "sessions",
        summary: "Revoke the token's session",
        description: "Its access and refresh tokens stop working at once. No request body.",
        auth: Auth::Bearer,
        api: Some(Api::Logout),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::logout),
        params: &[],
        body: None,
        replies: &[NO_CONTENT],
        problems: &[BEARER, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/logout/all",
        id: "logoutAll",
        tag: "sessions",
        summary: "Revoke every session of the account",
        description: "No request body.",
        auth: Auth::Bearer,
        api: Some(Api::LogoutAll),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::logout_all),
        params: &[],
        body: None,
        replies: &[Reply { status: 200, description: "Revoked.", schema: Some("LogoutAllResponse"), headers: &[] }],
        problems: &[BEARER, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "get",
        path: "/v1/sessions",
        id: "listSessions",
        tag: "sessions",
        summary: "The account's active sessions, newest first",
        description: "",
        auth: Auth::Bearer,
        api: Some(Api::Sessions),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::sessions),
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "Active sessions.",
            schema: Some("SessionListResponse"),
            headers: &[],
        }],
        problems: &[BEARER, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/devices",
        id: "enrolDevice",
        tag: "devices",
        summary: "Enrol a device key for fingerprint login",
        description: "Needs an access token from a login **by code** within `devices.enrol_max_auth_age` \
            (5 minutes); a refreshed token or a device login does not count. Keys: ECDSA P-256 or Ed25519, \
            as SPKI (PEM or base64 DER) in `public_key`, or as a public JWK in `jwk` — exactly one of them.",
        auth: Auth::Bearer,
        api: Some(Api::DeviceEnrol),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::enrol),
        params: &[],
        body: Some("EnrolRequest"),
        replies: &[Reply { status: 201, description: "Enrolled.", schema: Some("Device"), headers: &["Location"] }],
        problems: &[
            BEARER,
            BODY,
            &["invalid_public_key", "fresh_login_required", "device_limit", "device_exists"],
            UNAVAILABLE,
        ],
        links: &[("revoke", "revokeDevice", "id", "$response.body#/id")],
    },
    Route {
        method: "get",
        path: "/v1/devices",
        id: "listDevices",
        tag: "devices",
        summary: "The account's active devices",
        description: "",
        auth: Auth::Bearer,
        api: Some(Api::DeviceList),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::devices),
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "Active devices.",
            schema: Some("DeviceListResponse"),
            headers: &[],
        }],
        problems: &[BEARER, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "delete",
        path: "/v1/devices/{id}",
        id: "revokeDevice",
        tag: "devices",
        summary: "Remove a device",
        description: "The sessions it opened are revoked with it.",
        auth: Auth::Bearer,
        api: Some(Api::DeviceRevoke),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::revoke),
        params: &[Param {
            name: "id",
            location: "path",
            required: true,
            description: "The device id (a hyphenated UUID); anything else is `404 device_not_found`.",
            schema: uuid_schema,
        }],
        body: None,
        replies: &[NO_CONTENT],
        problems: &[BEARER, &["device_not_found"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/device-login/challenge",
        id: "deviceChallenge",
        tag: "devices",
        summary: "Ask for a nonce to sign",
        description: "Answered the same way for any device id, known or not. A new challenge replaces the \
            previous one. The device signs `otpd-device-login-v1\\n<audience>\\n<device_id>\\n<nonce>` (no \
            trailing newline).",
        auth: Auth::None,
        api: Some(Api::DeviceChallenge),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::challenge),
        params: &[],
        body: Some("DeviceChallengeRequest"),
        replies: &[Reply {
            status: 200,
            description: "A nonce, valid `devices.challenge_lifetime` (60 s), single use.",
            schema: Some("DeviceChallengeResponse"),
            headers: &[],
        }],
        problems: &[BODY, &["device_challenge_limit", "ip_challenge_limit"], CHALLENGE_UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/device-login/verify",
        id: "deviceLogin",
        tag: "devices",
        summary: "Sign in with a device's signature of the nonce",
        description: "A wrong signature counts like a wrong code (`attempts_left`); the fifth burns the \
            challenge. A removed device is told `403 device_revoked` only when its signature is valid.",
        auth: Auth::None,
        api: Some(Api::DeviceVerify),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::device_verify),
        params: &[],
        body: Some("DeviceVerifyRequest"),
        replies: &[TOKENS],
        problems: &[
            BODY,
            VERIFY_LIMITS,
            &[
                "invalid_signature",
                "challenge_expired",
                "challenge_already_used",
                "no_pending_challenge",
                "too_many_attempts",
                "device_revoked",
            ],
            CHALLENGE_UNAVAILABLE,
        ],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/passkeys/options",
        id: "passkeyRegisterOptions",
        tag: "passkeys",
        summary: "Options to create a passkey",
        description: "Needs an access token from a login **by code** within `passkeys.enrol_max_auth_age` \
            (5 minutes), like a device. Pass `options` to `navigator.credentials.create()` after decoding its \
            base64url fields; the challenge works once, for `devices.challenge_lifetime` (60 s).",
        auth: Auth::Bearer,
        api: Some(Api::PasskeyRegisterOptions),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::passkey_register_options),
        params: &[],
        body: None,
        replies: &[PASSKEY_OPTIONS],
        problems: &[
            BEARER,
            &["fresh_login_required", "device_challenge_limit", "ip_challenge_limit"],
            CHALLENGE_UNAVAILABLE,
        ],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/passkeys",
        id: "registerPasskey",
        tag: "passkeys",
        summary: "Register the passkey the browser created",
        description: "The relying party checks the origin (`passkeys.origins`), the RP id, the challenge, that the \
            authenticator verified the person, and the attestation (`none`, `packed` and other verifiable \
            formats; others are `unsupported_authenticator`).",
        auth: Auth::Bearer,
        api: Some(Api::PasskeyRegister),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::register_passkey),
        params: &[],
        body: Some("PasskeyRegisterRequest"),
        replies: &[Reply { status: 201, description: "Registered.", schema: Some("Passkey"), headers: &["Location"] }],
        problems: &[
            BEARER,
            BODY,
            &[
                "fresh_login_required",
                "invalid_credential",
                "user_not_verified",
                "unsupported_authenticator",
                "passkey_clone_suspected",
                "passkey_invalid",
                "challenge_expired",
                "challenge_already_used",
                "no_pending_challenge",
                "too_many_attempts",
                "passkey_limit",
                "passkey_exists",
            ],
            CHALLENGE_UNAVAILABLE,
        ],
        links: &[("delete", "deletePasskey", "id", "$response.body#/id")],
    },
    Route {
        method: "get",
        path: "/v1/passkeys",
        id: "listPasskeys",
        tag: "passkeys",
        summary: "The account's passkeys",
        description: "",
        auth: Auth::Bearer,
        api: Some(Api::PasskeyList),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::passkeys),
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "Passkeys, oldest first.",
            schema: Some("PasskeyListResponse"),
            headers: &[],
        }],
        problems: &[BEARER, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "delete",
        path: "/v1/passkeys/{id}",
        id: "deletePasskey",
        tag: "passkeys",
        summary: "Delete a passkey",
        description: "Nothing of it is kept, and the sessions it opened end (revoked as `passkey_deleted`), as \
            when a device is revoked. Sessions opened by passkeys before otpd recorded which passkey opened a \
            session stay until they end or are logged out.",
        auth: Auth::Bearer,
        api: Some(Api::PasskeyDelete),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::delete_passkey),
        params: &[Param {
            name: "id",
            location: "path",
            required: true,
            description: "The credential id, base64url without padding; anything else is `404 passkey_not_found`.",
            schema: passkey_id_schema,
        }],
        body: None,
        replies: &[NO_CONTENT],
        problems: &[BEARER, &["passkey_not_found"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/passkey-login/options",
        id: "passkeyLoginOptions",
        tag: "passkeys",
        summary: "Options to sign in with a passkey",
        description: "No identifier: the authenticator offers the passkeys it holds for this site (discoverable \
            credentials, conditional UI). The same answer for everyone.",
        auth: Auth::None,
        api: Some(Api::PasskeyLoginOptions),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::passkey_login_options),
        params: &[],
        body: None,
        replies: &[PASSKEY_OPTIONS],
        problems: &[&["device_challenge_limit", "ip_challenge_limit"], CHALLENGE_UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/passkey-login/verify",
        id: "passkeyLogin",
        tag: "passkeys",
        summary: "Sign in with a passkey's assertion",
        description: "An unknown passkey and a wrong signature answer alike (`passkey_invalid`, counted like a \
            wrong code). A signature counter that did not grow is refused as a possible clone and audited.",
        auth: Auth::None,
        api: Some(Api::PasskeyLogin),
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(account::passkey_login),
        params: &[],
        body: Some("PasskeyLoginRequest"),
        replies: &[TOKENS],
        problems: &[
            BODY,
            VERIFY_LIMITS,
            &[
                "invalid_credential",
                "user_not_verified",
                "unsupported_authenticator",
                "passkey_invalid",
                "passkey_clone_suspected",
                "challenge_expired",
                "challenge_already_used",
                "no_pending_challenge",
                "too_many_attempts",
            ],
            CHALLENGE_UNAVAILABLE,
        ],
        links: &[],
    },
    Route {
        method: "get",
        path: "/.well-known/jwks.json",
        id: "getJwks",
        tag: "keys",
        summary: "The public keys that verify access tokens",
        description: "Match a token's `kid` header. Empty with `tokens.algorithm = \"HS256\"` (a shared \
            secret is never published).",
        auth: Auth::None,
        api: None,
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(ops::jwks),
        params: &[],
        body: None,
        replies: &[Reply { status: 200, description: "A JWK set.", schema: Some("Jwks"), headers: &["Cache-Control"] }],
        problems: &[],
        links: &[],
    },
    Route {
        method: "get",
        path: "/health/live",
        id: "live",
        tag: "health",
        summary: "Liveness",
        description: "",
        auth: Auth::None,
        api: None,
        exposure: Exposure::Health,
        labelled: true,
        handler: handler!(ops::live),
        params: &[],
        body: None,
        replies: &[Reply { status: 200, description: "The process serves.", schema: Some("Live"), headers: &[] }],
        problems: &[],
        links: &[],
    },
    Route {
        method: "get",
        path: "/health/ready",
        id: "ready",
        tag: "health",
        summary: "Readiness, per dependency and per delivery provider",
        description: "",
        auth: Auth::None,
        api: None,
        exposure: Exposure::Health,
        labelled: true,
        handler: handler!(ops::ready),
        params: &[],
        body: None,
        replies: &[
            Reply { status: 200, description: "Ready.", schema: Some("Readiness"), headers: &[] },
            Reply {
                status: 503,
                description: "Not ready: a check is down (see `checks`).",
                schema: Some("Readiness"),
                headers: &[],
            },
        ],
        problems: &[],
        links: &[],
    },
    Route {
        method: "get",
        path: "/v1/admin/audit",
        id: "adminAudit",
        tag: "admin",
        summary: "Audit events of one identifier or one trace id, newest first",
        description: "Give exactly one of `identifier` and `trace_id`. Used by `otpd audit` while the node runs.",
        auth: Auth::Admin,
        api: None,
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::admin_audit),
        params: &[
            Param {
                name: "identifier",
                location: "query",
                required: false,
                description: "A phone number or an e-mail address (anything with an `@`).",
                schema: string_schema,
            },
            Param {
                name: "trace_id",
                location: "query",
                required: false,
                description: "A trace id: the `X-Request-Id` of a response.",
                schema: string_schema,
            },
            Param {
                name: "limit",
                location: "query",
                required: false,
                description: "At most this many events (taken as 1 to 10000).",
                schema: limit_schema,
            },
        ],
        body: None,
        replies: &[Reply { status: 200, description: "Events.", schema: Some("AuditListResponse"), headers: &[] }],
        problems: &[&["invalid_request"], IDENTIFIER, &["missing_token", "forbidden"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "get",
        path: "/v1/admin/stats",
        id: "adminStats",
        tag: "admin",
        summary: "Accounts, sessions and one-time-code counters",
        description: "Users, verified users and active sessions as the store counts them (`null` just after \
            start, while it counts), and the node's code, challenge and delivery counters since start.",
        auth: Auth::Admin,
        api: None,
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::admin_stats),
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The counters.",
            schema: Some("AdminStatsResponse"),
            headers: &[],
        }],
        problems: &[&["invalid_request", "missing_token", "forbidden"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/admin/backup",
        id: "adminBackup",
        tag: "admin",
        summary: "Back up the embedded store while the node serves",
        description: "Copies every keyspace of one snapshot of the store, and `<data_dir>/secrets/`, into `dir` \
            (created; it must not exist), writes a manifest (per keyspace a count and a BLAKE3 digest, per file \
            its digest), reads the copy back and answers only once it matches. Runs off the store's commit path. \
            Used by `otpd backup`; `otpd restore` builds a data directory from the result (docs/OPERATIONS.md). \
            One backup at a time per node. Audited.",
        auth: Auth::Admin,
        api: Some(Api::AdminBackup),
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(backup::admin_backup),
        params: &[],
        body: Some("BackupRequest"),
        replies: &[Reply {
            status: 200,
            description: "Written and verified.",
            schema: Some("BackupResponse"),
            headers: &[],
        }],
        problems: &[
            &["missing_token", "forbidden", "backup_target_exists", "backup_running", "backup_not_supported"],
            BODY,
            UNAVAILABLE,
        ],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/delivery/twilio/status",
        id: "twilioStatusCallback",
        tag: "delivery",
        summary: "Twilio's delivery receipts (StatusCallback)",
        description: "Called by Twilio, not by apps: `twilio.status_callback_url` must be this endpoint's public \
            URL. Signed with `X-Twilio-Signature`; a report for no message otpd watches is answered the same way \
            and ignored. 404 when no callback URL is configured.",
        auth: Auth::None,
        api: None,
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(receipts::twilio_status),
        params: &[],
        body: Some("TwilioStatusCallback"),
        replies: &[NO_CONTENT],
        problems: &[&["invalid_callback_signature", "not_found"], BODY],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/delivery/webhook/status",
        id: "webhookStatusCallback",
        tag: "delivery",
        summary: "A webhook gateway's delivery receipts",
        description: "Called by the operator's gateway: `{\"id\", \"status\", \"error_code\"}`, signed with \
            `X-Otpd-Signature: sha256=<hex HMAC-SHA256 of the body keyed with webhook.receipt_secret>`. 404 when \
            no secret is configured.",
        auth: Auth::None,
        api: None,
        exposure: Exposure::Api,
        labelled: true,
        handler: handler!(receipts::webhook_status),
        params: &[],
        body: Some("WebhookReceipt"),
        replies: &[NO_CONTENT],
        problems: &[&["invalid_callback_signature", "not_found"], BODY],
        links: &[],
    },
    Route {
        method: "get",
        path: "/v1/admin/users/{id}",
        id: "adminExportUser",
        tag: "admin",
        summary: "Everything the store holds for an account",
        description: "What `GET /v1/me/export` returns, for a request that reached the operator by another \
            channel (find the account id with `otpd audit <identifier>`). Audited.",
        auth: Auth::Admin,
        api: Some(Api::AdminAccountExport),
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::admin_export_user),
        params: &[USER_ID],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The account's data.",
            schema: Some("AccountExportResponse"),
            headers: &[],
        }],
        problems: &[&["missing_token", "forbidden", "account_not_found"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "delete",
        path: "/v1/admin/users/{id}",
        id: "adminEraseUser",
        tag: "admin",
        summary: "Erase an account",
        description: "What `DELETE /v1/me` does, without the fresh login: the admin token is the authority. \
            Audited.",
        auth: Auth::Admin,
        api: Some(Api::AdminAccountErase),
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::admin_erase_user),
        params: &[USER_ID],
        body: None,
        replies: &[Reply { status: 200, description: "Erased.", schema: Some("EraseResponse"), headers: &[] }],
        problems: &[&["missing_token", "forbidden", "account_not_found"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "get",
        path: "/v1/admin/destinations",
        id: "adminDestinations",
        tag: "admin",
        summary: "The SMS conversion guard's destinations, worst first",
        description: "Number prefixes and countries this node has sent codes to in the guard's history \
            (docs/limits.md), with their window's sends and verified codes (shared by every node with Redis: \
            a destination only other nodes sent to is listed by them), baseline, mode and pin.",
        auth: Auth::Admin,
        api: None,
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::admin_destinations),
        params: &[Param {
            name: "limit",
            location: "query",
            required: false,
            description: "At most this many destinations (taken as 1 to 1000; default 100).",
            schema: limit_schema,
        }],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "Destinations.",
            schema: Some("DestinationListResponse"),
            headers: &[],
        }],
        problems: &[&["invalid_request", "missing_token", "forbidden"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "put",
        path: "/v1/admin/destinations/{destination}",
        id: "pinDestination",
        tag: "admin",
        summary: "Pin a destination to a guard mode for a while",
        description: "The mode the guard judges it in when it trips: `record` exempts a market known to \
            verify poorly; `block` refuses a tripped one until its window ends instead of throttling it. \
            Every node sees the pin with Redis (only this node without). Audited.",
        auth: Auth::Admin,
        api: Some(Api::AdminDestination),
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::pin_destination),
        params: &[DESTINATION],
        body: Some("PinDestinationRequest"),
        replies: &[Reply { status: 200, description: "Pinned.", schema: Some("DestinationView"), headers: &[] }],
        problems: &[&["missing_token", "forbidden"], BODY, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "delete",
        path: "/v1/admin/destinations/{destination}",
        id: "liftDestination",
        tag: "admin",
        summary: "Lift a destination: its window forgotten, its pin removed",
        description: "The guard judges it afresh from its floor; its baseline stays. Audited.",
        auth: Auth::Admin,
        api: Some(Api::AdminDestination),
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::lift_destination),
        params: &[DESTINATION],
        body: None,
        replies: &[Reply { status: 200, description: "Lifted.", schema: Some("DestinationView"), headers: &[] }],
        problems: &[&["invalid_request", "missing_token", "forbidden"], UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "post",
        path: "/v1/admin/keys/rotate",
        id: "rotateKey",
        tag: "admin",
        summary: "Rotate the signing key or the admin token",
        description: "Makes a new generation of the key, stored where every node reads it (each picks it up \
            within `tokens.keys_poll_interval`). A signing key is in the JWKS at once and signs from \
            `activates_at` (`tokens.key_activation_delay`); the previous one stays in the JWKS until every token \
            it signed has expired. A new admin token is answered here once; the previous one is accepted for \
            `secrets.admin_token_overlap` more. Audited (`key_rotation`). `otpd keys rotate` calls this.",
        auth: Auth::Admin,
        api: Some(Api::KeyRotation),
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::rotate_key),
        params: &[],
        body: Some("RotateKeyRequest"),
        replies: &[Reply { status: 200, description: "Rotated.", schema: Some("RotateKeyResponse"), headers: &[] }],
        problems: &[&["missing_token", "forbidden"], BODY, UNAVAILABLE],
        links: &[],
    },
    Route {
        method: "get",
        path: "/metrics",
        id: "getMetrics",
        tag: "meta",
        summary: "Prometheus metrics",
        description: "The text exposition of every `otpd_*` metric (catalogue in docs/metrics.md). With \
            the default configuration only the ops listener (`admin.listen`) serves it; the public one answers `404`.",
        auth: Auth::None,
        api: None,
        exposure: Exposure::Ops,
        labelled: true,
        handler: handler!(ops::metrics),
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "Prometheus text format 0.0.4.",
            schema: Some("PrometheusExposition"),
            headers: &[],
        }],
        problems: &[],
        links: &[],
    },
    Route {
        method: "get",
        path: "/openapi.json",
        id: "getOpenApi",
        tag: "meta",
        summary: "This document",
        description: "",
        auth: Auth::None,
        api: None,
        exposure: Exposure::Api,
        labelled: false,
        handler: handler!(ops::openapi),
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The OpenAPI 3.1 document of this API.",
            schema: Some("OpenApiDocument"),
            headers: &[],
        }],
        problems: &[],
        links: &[],
    },
];

/// The rows of one path, next to each other in [`ROUTES`], as the router reads them.
struct PathGroup {
    /// The template up to its parameter (all of it when it has none).
    prefix: &'static str,
    /// Whether the template ends in a parameter (which takes the rest of the path).
    param: bool,
    rows: Vec<(Method, &'static Route)>,
    /// `Allow` of a `405`: the rows' methods, sorted.
    allow: String,
    /// Index into [`route_labels`].
    label: usize,
}

struct Table {
    groups: Vec<PathGroup>,
    labels: Vec<&'static str>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let mut groups: Vec<PathGroup> = Vec::new();
    let mut labels = vec!["other"];
    for route in ROUTES {
        let method = Method::from_bytes(route.method.to_ascii_uppercase().as_bytes()).expect("rows name real methods");
        if let Some(group) = groups.last_mut().filter(|g| g.rows[0].1.path == route.path) {
            group.rows.push((method, route));
            continue;
        }
        let (prefix, param) = match route.path.find('{') {
            Some(at) => (&route.path[..at], true),
            None => (route.path, false),
        };
        let label = if route.labelled {
            labels.push(route.path);
            labels.len() - 1
        } else {
            0
        };
        groups.push(PathGroup { prefix, param, rows: vec![(method, route)], allow: String::new(), label });
    }
    for group in &mut groups {
        let mut methods: Vec<&str> = group.rows.iter().map(|(m, _)| m.as_str()).collect();
        methods.sort_unstable();
        group.allow = methods.join(", ");
    }
    Table { groups, labels }
});

/// Every value the `route` label of the HTTP metrics takes: `other` first, then each
/// labelled path template.
pub fn route_labels() -> &'static [&'static str] {
    &TABLE.labels
}

/// What the router makes of a request.
pub enum Lookup<'p> {
    /// The row to run, and the path's parameter (empty when the template has none).
    Found(&'static Route, &'p str),
    /// The path is served here, not with this method: `Allow`.
    MethodNotAllowed(&'static str),
    NotFound,
}

/// The row for `method` and `path` on `listener`, and the path's metric label (whatever the
/// method or listener: a refusal counts under the path it was for).
pub fn lookup<'p>(method: &Method, path: &'p str, listener: Listener, ops_on_public: bool) -> (Lookup<'p>, usize) {
    let table: &'static Table = &TABLE;
    let found = table.groups.iter().find_map(|g| match g.param {
        false => (path == g.prefix).then_some((g, "")),
        true => path.strip_prefix(g.prefix).map(|rest| (g, rest)),
    });
    let Some((group, param)) = found else { return (Lookup::NotFound, 0) };
    let served = |r: &Route| r.exposure.served_on(listener, ops_on_public);
    if !group.rows.iter().any(|(_, r)| served(r)) {
        return (Lookup::NotFound, group.label);
    }
    // `GET` rows answer `HEAD` too.
    let wanted = if method == Method::HEAD { &Method::GET } else { method };
    let lookup = match group.rows.iter().find(|(m, r)| m == wanted && served(r)) {
        Some((_, route)) => Lookup::Found(route, param),
        None => Lookup::MethodNotAllowed(&group.allow),
    };
    (lookup, group.label)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `route` label the router gives a path.
    fn route_index(path: &str) -> usize {
        lookup(&Method::GET, path, Listener::Main, true).1
    }

    #[test]
    fn routes_are_templates_and_everything_else_is_other() {
        assert_eq!(route_labels()[route_index("/v1/login")], "/v1/login");
        assert_eq!(route_labels()[route_index("/v1/devices/0192f0c4-1c7e-7f00-8000-000000000000")], "/v1/devices/{id}");
        assert_eq!(route_labels()[route_index("/v1/devices/+12025550123")], "/v1/devices/{id}");
        assert_eq!(route_labels()[route_index("/v1/devices")], "/v1/devices");
        assert_eq!(route_labels()[route_index("/+12025550123")], "other");
        assert_eq!(route_labels()[route_index("/v1/login/")], "other");
        assert_eq!(route_labels()[13], "/v1/devices/{id}");
    }

    /// A request path for `template`, its parameter filled in.
    fn concrete(template: &str) -> String {
        template.replace("{id}", "0192f0c4-1c7e-7f00-8000-000000000000")
    }

    #[test]
    fn every_row_is_routed_to_itself_where_it_is_served() {
        for route in ROUTES {
            let method = Method::from_bytes(route.method.to_ascii_uppercase().as_bytes()).unwrap();
            for (listener, ops_on_public) in
                [(Listener::Main, true), (Listener::Main, false), (Listener::Admin, true), (Listener::Admin, false)]
            {
                let served = route.exposure.served_on(listener, ops_on_public);
                let path = concrete(route.path);
                let (found, _) = lookup(&method, &path, listener, ops_on_public);
                match found {
                    Lookup::Found(r, _) => assert!(served && std::ptr::eq(r, route), "{} {}", route.method, route.path),
                    Lookup::NotFound => assert!(!served, "{} {} on {listener:?}", route.method, route.path),
                    Lookup::MethodNotAllowed(_) => panic!("{} {} is not allowed", route.method, route.path),
                }
            }
        }
    }

    #[test]
    fn rows_of_a_path_stand_together_and_share_their_exposure() {
        let mut seen: Vec<&str> = Vec::new();
        for pair in ROUTES.windows(2) {
            if pair[0].path != pair[1].path {
                assert!(!seen.contains(&pair[1].path), "{} is split in the table", pair[1].path);
                seen.push(pair[0].path);
            } else {
                assert_eq!(pair[0].exposure, pair[1].exposure, "{}", pair[0].path);
            }
        }
    }

    #[test]
    fn other_methods_are_refused_with_allow_and_other_paths_are_not_found() {
        let (found, label) = lookup(&Method::PUT, "/v1/devices", Listener::Main, true);
        assert!(matches!(found, Lookup::MethodNotAllowed("GET, POST")));
        assert_eq!(route_labels()[label], "/v1/devices");
        let (found, _) = lookup(&Method::HEAD, "/v1/sessions", Listener::Main, true);
        assert!(matches!(found, Lookup::Found(r, "") if r.path == "/v1/sessions"), "HEAD is answered like GET");
        let (found, label) = lookup(&Method::GET, "/v1/login/", Listener::Main, true);
        assert!(matches!(found, Lookup::NotFound));
        assert_eq!(route_labels()[label], "other");
        let (found, _) = lookup(&Method::DELETE, "/v1/devices/not-a-uuid", Listener::Main, true);
        assert!(matches!(found, Lookup::Found(_, "not-a-uuid")), "the handler answers for a bad id");
        let (found, label) = lookup(&Method::GET, "/openapi.json", Listener::Main, true);
        assert!(matches!(found, Lookup::Found(..)));
        assert_eq!(route_labels()[label], "other", "the document is counted as other");
    }
}
