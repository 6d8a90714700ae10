//! What every handler works with: the node's [`App`], one request as a [`Call`], and the
//! helpers that turn bodies into wire types and results into responses. Below the route table
//! and the handlers; knows neither.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use otpd_actors::actors::dispatch::DispatchHandle;
use otpd_actors::rules::audit::Step;
use otpd_actors::rules::identifier::Identifier;
use otpd_actors::{Api, Engine, EngineError, RequestContext};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::problem::ApiError;
use super::wire::{self, RawIdentifier};
use crate::config::IpRange;
use crate::tokens::{AccessClaims, TokenService};

/// A named readiness check.
pub type ReadinessCheck = (&'static str, Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

/// A named check of a dependency the node can serve without, less well: `Some(reason)` while
/// degraded. Readiness stays 200 (`"status":"degraded"`), so that an outage of a shared
/// dependency does not take every node out of its load balancer at once.
pub type DegradationCheck = (&'static str, Arc<dyn Fn() -> Option<String> + Send + Sync>);

/// Everything a request handler needs.
pub struct App {
    pub engine: Engine,
    pub tokens: TokenService,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub trusted_proxies: Vec<IpRange>,
    /// The admin tokens accepted now (rotated by `otpd keys rotate --admin-token`).
    pub admin: crate::keyring::AdminTokens,
    /// Where rotated keys are kept, and how they rotate.
    pub keyring: crate::keyring::KeyRing,
    pub readiness: Vec<ReadinessCheck>,
    pub degradations: Vec<DegradationCheck>,
    /// Each delivery provider's circuit breaker, shown by `/health/ready`.
    pub delivery: Option<DispatchHandle>,
    /// Metrics, census and the operations endpoints' settings.
    pub observe: crate::metrics::Observe,
    /// The OpenAPI document `GET /openapi.json` serves, built once (`super::openapi::json`).
    pub document: Bytes,
    /// How delivery-receipt callbacks are checked.
    pub receipt_keys: super::receipts::ReceiptKeys,
    /// Backups of the embedded store (`POST /v1/admin/backup`); `None` on ScyllaDB.
    pub backups: Option<Arc<crate::store::embedded::backup::Backups>>,
    /// Whether the reference sign-in page is served at `/signin` (`passkeys.signin_page`).
    pub signin_page: bool,
}

pub type Resp = Response<Full<Bytes>>;

/// Any request body: hyper's `Incoming` on the wire, `Full<Bytes>` in benchmarks.
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send
{
}

impl<T> RequestBody for T where
    T: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send
{
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `http.listen`: the public API (and the ops routes only with `admin.ops_on_public_listener`).
    Main,
    /// `admin.listen`: only `/metrics`, `/health/*` and `/v1/admin/*`.
    Admin,
}

impl Listener {
    /// Whether this listener serves what is for operators (metrics, the admin API, readiness
    /// details).
    pub fn serves_ops(self, ops_on_public_listener: bool) -> bool {
        self == Listener::Admin || ops_on_public_listener
    }
}

/// One request as its handler sees it, once the router has matched, authenticated and read it.
pub struct Call<'a> {
    pub ctx: &'a RequestContext,
    pub parts: &'a Parts,
    /// The listener the request came in on.
    pub listener: Listener,
    /// The audit trail's name for the operation (the route table's), if it audits.
    pub api: Option<Api>,
    /// The path's parameter (`{id}`); empty when the template has none.
    pub param: &'a str,
    /// The body, when the row takes one (bounded in size and time); else empty.
    pub body: Bytes,
    pub(super) claims: Option<AccessClaims>,
}

impl Call<'_> {
    /// The access token's claims: present on every row with [`Auth::Bearer`], which the router
    /// authenticates before the handler runs.
    pub fn claims(&self) -> &AccessClaims {
        self.claims.as_ref().expect("the router authenticates every Auth::Bearer row, and only those call claims()")
    }

    /// The body as JSON into `T`; a refusal is audited under the row's API, at step `parse`.
    pub fn json<T: DeserializeOwned>(&self, app: &App) -> Result<T, ApiError> {
        decode_json(&self.body).inspect_err(|e| {
            if let Some(api) = self.api {
                app.engine.record_rejection(self.ctx, api, Step::Parse, e.detail.clone(), None);
            }
        })
    }

    /// Records a refusal that happened before the engine (under the row's API), and converts it.
    pub fn reject(&self, app: &App, step: Step, e: EngineError) -> ApiError {
        if let Some(api) = self.api {
            app.engine.record_rejection(self.ctx, api, step, e.to_string(), None);
        }
        ApiError::from(e)
    }
}

/// An identifier from free text: an e-mail address if it has an `@`, else a phone number.
pub fn parse_any_identifier(engine: &Engine, raw: &str) -> Result<Identifier, EngineError> {
    if raw.contains('@') { Ok(engine.normalizer().email(raw)?) } else { Ok(engine.normalizer().phone(raw)?) }
}

/// The identifier of a body's `phone` or `email` (exactly one).
pub fn identify(app: &App, phone: &Option<String>, email: &Option<String>) -> Result<Identifier, EngineError> {
    match wire::raw_identifier(phone, email)? {
        RawIdentifier::Phone(p) => Ok(app.engine.normalizer().phone(p)?),
        RawIdentifier::Email(e) => Ok(app.engine.normalizer().email(e)?),
    }
}

/// A request body into `T`: `invalid_json` when it is not JSON, `invalid_request` when it is
/// JSON of the wrong shape. Public for the fuzz targets (`fuzz/`).
///
/// The refusal's detail names the field and the kind of problem, never a value: serde's own
/// messages quote what was sent (`invalid type: integer `123456``), and the detail is also the
/// audit trail's message (see [`body_refusal`]).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| body_refusal::<T>(bytes, &e))
}

/// Why a body was refused, without any of its values: for a body that is not JSON, where it
/// broke; for JSON of the wrong shape, the field (the path of schema names that led to it) and
/// the category of the problem. The path comes from a second, cold parse that tracks it, so the
/// hot path pays nothing for it.
#[cold]
fn body_refusal<T: DeserializeOwned>(bytes: &[u8], first: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    // serde reports the first problem it meets; a type error early in a body that is not JSON
    // at all should still say "not JSON".
    let syntax = match first.classify() {
        Category::Data => serde_json::from_slice::<serde::de::IgnoredAny>(bytes).err(),
        _ => None,
    };
    if let Some(e) = syntax.as_ref().or((first.classify() != Category::Data).then_some(first)) {
        let what = match e.classify() {
            Category::Eof => "the body ends early",
            Category::Io => "the body could not be read",
            _ => "not JSON",
        };
        return ApiError::invalid_json(format!("{what} (line {}, column {})", e.line(), e.column()));
    }
    let message = first.to_string();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let field = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        // The path of an unknown member ends with the member's name, which the client chose.
        Err(e) => field_path(e.path(), message.starts_with("unknown field")),
        Ok(_) => String::new(),
    };
    let problem = data_problem(&message);
    match field.is_empty() {
        true => ApiError::invalid_request(problem),
        false => ApiError::invalid_request(format!("{field}: {problem}")),
    }
}

/// The path of a data error as the schema names it (`jwk.x`, `items[2]`): declared fields only.
/// An unknown member is refused (or skipped) before its value is read, so a data error's path
/// runs through declared fields, except the last segment of an unknown member's own refusal
/// (`unknown`), which is the client's text and is left out.
fn field_path(path: &serde_path_to_error::Path, unknown: bool) -> String {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let keep = if unknown { segments.len().saturating_sub(1) } else { segments.len() };
    let mut out = String::new();
    for segment in &segments[..keep] {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// The category of a serde data error, with what the schema expected but without what was sent.
/// serde's messages have a fixed shape (`invalid type: <what was sent>, expected <what the
/// schema wants>`, `missing field `name``); the schema's half is ours and safe to repeat.
fn data_problem(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let expected = message.rsplit_once(", expected ").map(|(_, e)| e);
    let with_expected = |what: &str| match expected {
        Some(e) => format!("{what}, expected {e}"),
        None => what.to_owned(),
    };
    let named = |what: &str| match message.strip_prefix(what) {
        // A missing or duplicate field is one of the schema's names.
        Some(rest) => format!("{what}{}", rest.split(',').next().unwrap_or("")),
        None => what.to_owned(),
    };
    match message {
        m if m.starts_with("invalid type") => with_expected("wrong type"),
        m if m.starts_with("invalid value") => with_expected("invalid value"),
        m if m.starts_with("invalid length") => with_expected("wrong length"),
        m if m.starts_with("unknown variant") => with_expected("unknown value"),
        m if m.starts_with("unknown field") => with_expected("unknown field"),
        m if m.starts_with("missing field") => named("missing field"),
        m if m.starts_with("duplicate field") => named("duplicate field"),
        _ => "invalid value".to_owned(),
    }
}

/// The token of an `Authorization: Bearer <token>` header. Public for the fuzz targets.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Resp {
    let bytes = serde_json::to_vec(body).expect("response types always serialise");
    bytes_response(status, Bytes::from(bytes))
}

pub fn bytes_response(status: StatusCode, bytes: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    // Sized for this header and the six every answer gets (`routes::decorate`).
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::{DeviceVerifyRequest, EnrolRequest, VerifyRequest};

    /// The detail of refusing `body` as `T`.
    fn detail<T: DeserializeOwned>(body: &str) -> (String, String) {
        let e = decode_json::<T>(body.as_bytes()).err().expect("refused");
        (e.kind.code.to_owned(), e.detail)
    }

    #[test]
    fn a_refusal_names_the_field_and_the_problem_but_no_value() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"phone":"+12025550123","code":123456}"#, "invalid_request", "code: wrong type, expected a string"),
            (r#"{"phone":12025550123,"code":"123456"}"#, "invalid_request", "phone: wrong type"),
            (
                r#"{"phone":"+12025550123","code":"123456","s3cr3t-987654":1}"#,
                "invalid_request",
                "unknown field, expected one of",
            ),
            (r#"{"phone":"+12025550123"}"#, "invalid_request", "missing field `code`"),
            (r#"{"phone":"+12025550123","code":"123456"#, "invalid_json", "the body ends early"),
            (r#"{"phone":"+12025550123" "code":"123456"}"#, "invalid_json", "not JSON (line 1, column"),
        ];
        for (body, code, want) in cases {
            let (got_code, got) = detail::<VerifyRequest>(body);
            assert_eq!(&got_code, code, "{body}");
            assert!(got.contains(want), "{body}: {got}");
            for value in ["123456", "12025550123", "s3cr3t", "987654"] {
                assert!(!got.contains(value), "{body}: the detail {got:?} quotes {value}");
            }
        }
    }

    #[test]
    fn nested_fields_are_named_by_their_path_and_names_of_the_schema_are_kept() {
        let (_, got) = detail::<EnrolRequest>(r#"{"platform":"web","jwk":{"kty":"EC","crv":"P-256","x":7}}"#);
        assert!(got.starts_with("jwk.x: wrong type"), "{got}");
        let (_, got) = detail::<EnrolRequest>(r#"{"platform":"toaster-123456"}"#);
        assert!(got.starts_with("platform: unknown value, expected one of"), "{got}");
        assert!(!got.contains("toaster") && !got.contains("123456"), "{got}");
        let (_, got) = detail::<DeviceVerifyRequest>(r#"{"device_id":"x","nonce":"y"}"#);
        assert!(got.contains("missing field `signature`"), "{got}");
        let (_, got) =
            detail::<DeviceVerifyRequest>(r#"{"device_id":"x","device_id":"y","nonce":"z","signature":"s"}"#);
        assert!(got.contains("duplicate field `device_id`"), "{got}");
    }
}
