//! What every handler works with: the node's [`App`], one request as a [`Call`], and the
//! helpers that turn bodies into wire types and results into responses. Below the route table
//! and the handlers; knows neither.

use std::net::IpAddr;
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
    pub trusted_proxies: Vec<IpAddr>,
    pub admin_token: String,
    pub readiness: Vec<ReadinessCheck>,
    pub degradations: Vec<DegradationCheck>,
    /// Each delivery provider's circuit breaker, shown by `/health/ready`.
    pub delivery: Option<DispatchHandle>,
    /// Metrics, census and the operations endpoints' settings.
    pub observe: crate::metrics::Observe,
    /// The OpenAPI document `GET /openapi.json` serves, built once (`super::openapi::json`).
    pub document: Bytes,
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
    /// `http.listen`: the API (and `/metrics` unless `admin.metrics_on_main = false`).
    Main,
    /// `admin.listen`: only `/metrics`, `/health/*` and `/v1/admin/*`.
    Admin,
}

/// One request as its handler sees it, once the router has matched, authenticated and read it.
pub struct Call<'a> {
    pub ctx: &'a RequestContext,
    pub parts: &'a Parts,
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
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        // serde reports the first problem it meets; a type error early in a body that is not
        // JSON at all should still say "not JSON", so check the syntax on this (cold) path.
        serde_json::error::Category::Data => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => ApiError::invalid_request(e.to_string()),
            Err(syntax) => ApiError::invalid_json(syntax.to_string()),
        },
        _ => ApiError::invalid_json(e.to_string()),
    })
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
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
