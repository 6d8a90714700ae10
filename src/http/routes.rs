//! Routing and handlers: wire types in, engine calls, wire types out.
//!
//! | method and path | handler |
//! | --- | --- |
//! | `POST /v1/register` | [`register`] |
//! | `POST /v1/register/verify` | [`verify`] (registration) |
//! | `POST /v1/login` | [`login`] |
//! | `POST /v1/login/verify` | [`verify`] (login) |
//! | `POST /v1/otp/resend` | [`resend`] |
//! | `GET /v1/me` | [`me`] |
//! | sessions (`/v1/token/refresh`, `/v1/logout`, `/v1/logout/all`, `/v1/sessions`) and devices (`/v1/devices…`, `/v1/device-login/…`) | [`super::account`] |
//! | `GET /.well-known/jwks.json` | the token service's JWKS |
//! | `GET /health/live`, `GET /health/ready` | [`readiness`] (checks, and each delivery provider's breaker) |
//! | `GET /metrics` | [`metrics`] (Prometheus text; also on the admin listener) |
//! | `GET /v1/admin/audit` | [`admin_audit`] (admin token) |
//! | `GET /v1/admin/stats` | [`admin_stats`] (admin token) |
//! | `GET /openapi.json` | the API contract ([`super::openapi`]) |
//!
//! Every request runs with its `trace_id` in a task-local ([`crate::logging::with_trace_id`]),
//! so every log line it causes names it; its route template, method, status class and latency are counted
//! ([`crate::metrics::HttpMetrics`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use otpd_actors::actors::dispatch::DispatchHandle;
use otpd_actors::rules::audit::Step;
use otpd_actors::rules::breaker::BreakerState;
use otpd_actors::rules::identifier::Identifier;
use otpd_actors::rules::ids::TraceId;
use otpd_actors::{Api, Engine, EngineError, Registration, RequestContext};
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::problem::ApiError;
use super::wire::{self, RawIdentifier};
use crate::tokens::{TokenError, TokenService};

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
}

pub(super) type Resp = Response<Full<Bytes>>;

/// Any request body: hyper's `Incoming` on the wire, `Full<Bytes>` in benchmarks.
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send
{
}

impl<T> RequestBody for T where
    T: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send
{
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `http.listen`: the API (and `/metrics` unless `admin.metrics_on_main = false`).
    Main,
    /// `admin.listen`: only `/metrics`, `/health/*` and `/v1/admin/*`.
    Admin,
}

/// Entry point for every request on the main listener.
pub async fn handle<B: RequestBody>(app: Arc<App>, req: Request<B>, peer: SocketAddr) -> Resp {
    handle_on(app, req, peer, Listener::Main).await
}

/// Entry point for every request on the admin listener.
pub async fn handle_admin<B: RequestBody>(app: Arc<App>, req: Request<B>, peer: SocketAddr) -> Resp {
    handle_on(app, req, peer, Listener::Admin).await
}

async fn handle_on<B: RequestBody>(app: Arc<App>, req: Request<B>, peer: SocketAddr, listener: Listener) -> Resp {
    let observed = app.observe.http.begin(req.method(), req.uri().path());
    let (parts, body) = req.into_parts();
    let ctx = RequestContext {
        trace_id: request_id(&parts.headers),
        client_ip: Some(client_ip(&app.trusted_proxies, peer.ip(), &parts.headers)),
        user_agent: user_agent(&parts.headers),
    };
    // Every line logged while the request is handled carries its trace id.
    crate::logging::with_trace_id(ctx.trace_id.clone(), async {
        let result = route(&app, &ctx, &parts, body, listener).await;
        let mut resp = result.unwrap_or_else(|e| e.into_response(&ctx.trace_id));
        decorate(&mut resp, &ctx.trace_id);
        let (route, method, status) = (observed.route(), observed.method(), resp.status().as_u16());
        let took = observed.finish(resp.status());
        tracing::debug!(route, method, status, micros = took.as_micros() as u64, "request answered");
        resp
    })
    .await
}

/// The paths the admin listener serves.
fn is_ops_path(path: &str) -> bool {
    matches!(path, "/metrics" | "/health/live" | "/health/ready" | "/v1/admin/audit" | "/v1/admin/stats")
}

async fn route<B: RequestBody>(
    app: &App,
    ctx: &RequestContext,
    parts: &Parts,
    body: B,
    listener: Listener,
) -> Result<Resp, ApiError> {
    let path = parts.uri.path();
    if listener == Listener::Admin && !is_ops_path(path) {
        return Err(ApiError::not_found());
    }
    let post_api = match path {
        "/v1/register" => Some(Api::Register),
        "/v1/register/verify" => Some(Api::RegisterVerify),
        "/v1/login" => Some(Api::Login),
        "/v1/login/verify" => Some(Api::LoginVerify),
        "/v1/otp/resend" => Some(Api::OtpResend),
        _ => None,
    };
    if let Some(api) = post_api {
        if parts.method != Method::POST {
            return Err(ApiError::method_not_allowed("POST"));
        }
        return match api {
            Api::Register => register(app, ctx, parts, body).await,
            Api::Login => login(app, ctx, parts, body).await,
            Api::OtpResend => resend(app, ctx, parts, body).await,
            _ => verify(app, ctx, api, parts, body).await,
        };
    }
    if let Some(endpoint) = super::account::Endpoint::of(path) {
        return super::account::handle(app, ctx, endpoint, parts, body).await;
    }
    let get_only = |parts: &Parts| {
        if parts.method == Method::GET || parts.method == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed("GET"))
        }
    };
    match path {
        "/v1/me" => {
            get_only(parts)?;
            me(app, ctx, parts).await
        }
        "/.well-known/jwks.json" => {
            get_only(parts)?;
            let mut resp = bytes_response(StatusCode::OK, app.tokens.jwks());
            resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            Ok(resp)
        }
        "/health/live" => {
            get_only(parts)?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "status": "live" })))
        }
        "/health/ready" => {
            get_only(parts)?;
            let (ready, body) = readiness(app);
            Ok(json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body))
        }
        "/metrics" if listener == Listener::Admin || app.observe.metrics_on_main => {
            get_only(parts)?;
            metrics(app)
        }
        "/v1/admin/audit" => {
            get_only(parts)?;
            admin_audit(app, parts).await
        }
        "/v1/admin/stats" => {
            get_only(parts)?;
            admin_stats(app, parts).await
        }
        "/openapi.json" => {
            get_only(parts)?;
            Ok(bytes_response(StatusCode::OK, super::openapi::json()))
        }
        _ => Err(ApiError::not_found()),
    }
}

async fn register<B: RequestBody>(app: &App, ctx: &RequestContext, parts: &Parts, body: B) -> Result<Resp, ApiError> {
    let api = Api::Register;
    let req: wire::RegisterRequest = read_json(app, ctx, api, parts, body).await?;
    let checked = (|| {
        let first_name = wire::name("first_name", &req.first_name)?;
        let last_name = wire::name("last_name", &req.last_name)?;
        // With a phone number, `email` is a contact address; without one, it is the identifier.
        let (identifier, email) = match (&req.phone, &req.email) {
            (Some(phone), email) => {
                let contact = email.as_deref().map(|e| app.engine.normalizer().email(e)).transpose()?;
                (app.engine.normalizer().phone(phone)?, contact.map(|c| c.as_str().to_owned()))
            }
            (None, Some(email)) => (app.engine.normalizer().email(email)?, None),
            (None, None) => return Err(EngineError::InvalidInput("phone or email is required".into())),
        };
        Ok(Registration { identifier, first_name, last_name, email })
    })();
    let registration = checked.map_err(|e| reject(app, ctx, api, Step::Validate, e))?;
    let receipt = app.engine.register(ctx, registration).await?;
    Ok(json(StatusCode::ACCEPTED, &wire::SendResponse::from(receipt)))
}

async fn login<B: RequestBody>(app: &App, ctx: &RequestContext, parts: &Parts, body: B) -> Result<Resp, ApiError> {
    let api = Api::Login;
    let req: wire::LoginRequest = read_json(app, ctx, api, parts, body).await?;
    let identifier = identify(app, &req.phone, &req.email).map_err(|e| reject(app, ctx, api, Step::Validate, e))?;
    let receipt = app.engine.login(ctx, identifier).await?;
    Ok(json(StatusCode::ACCEPTED, &wire::SendResponse::from(receipt)))
}

async fn resend<B: RequestBody>(app: &App, ctx: &RequestContext, parts: &Parts, body: B) -> Result<Resp, ApiError> {
    let api = Api::OtpResend;
    let req: wire::ResendRequest = read_json(app, ctx, api, parts, body).await?;
    let identifier = identify(app, &req.phone, &req.email).map_err(|e| reject(app, ctx, api, Step::Validate, e))?;
    let receipt = app.engine.resend(ctx, identifier, req.purpose.into()).await?;
    Ok(json(StatusCode::ACCEPTED, &wire::SendResponse::from(receipt)))
}

async fn verify<B: RequestBody>(
    app: &App,
    ctx: &RequestContext,
    api: Api,
    parts: &Parts,
    body: B,
) -> Result<Resp, ApiError> {
    let req: wire::VerifyRequest = read_json(app, ctx, api, parts, body).await?;
    let checked = identify(app, &req.phone, &req.email).and_then(|id| Ok((id, wire::code(&req.code)?)));
    let (identifier, code) = checked.map_err(|e| reject(app, ctx, api, Step::Validate, e))?;
    let grant = match api {
        Api::RegisterVerify => app.engine.verify_registration(ctx, identifier, code).await?,
        _ => app.engine.verify_login(ctx, identifier, code).await?,
    };
    let access_token = app.tokens.issue(grant.user.id, grant.session.id, grant.login_at).map_err(|e| {
        tracing::error!(error = %e, trace_id = %ctx.trace_id, "could not sign an access token");
        ApiError::internal()
    })?;
    let body = wire::TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: app.tokens.access_ttl().as_secs(),
        refresh_token: grant.refresh_token,
        session_id: grant.session.id.to_string(),
        login_at: wire::rfc3339(grant.login_at),
        user: wire::UserView::from(&grant.user),
    };
    Ok(json(StatusCode::OK, &body))
}

async fn me(app: &App, ctx: &RequestContext, parts: &Parts) -> Result<Resp, ApiError> {
    let token = bearer(&parts.headers).ok_or_else(ApiError::missing_token)?;
    let claims = app.tokens.verify(token, app.engine.now()).map_err(|e| {
        app.engine.record_rejection(ctx, Api::Me, Step::Token, e.to_string(), None);
        match e {
            TokenError::Expired | TokenError::Invalid => ApiError::invalid_token(e.to_string()),
        }
    })?;
    let user = app.engine.current_user(ctx, claims.user(), claims.session()).await?;
    Ok(json(
        StatusCode::OK,
        &wire::MeResponse { user: wire::UserView::from(&user), session_id: claims.sid.to_string() },
    ))
}

/// Runs every readiness check and reads each provider's breaker; sets `otpd_ready` and
/// `otpd_dependency_up`. Ready means every check passes: the store answers a read, the
/// limiter answers, and each channel has a provider whose breaker is not open (one provider
/// down with a working failover is shown `down` under `providers` but does not make the node
/// unready).
pub fn readiness(app: &App) -> (bool, serde_json::Value) {
    let mut all_ok = true;
    let mut checks = serde_json::Map::new();
    for (name, check) in &app.readiness {
        let started = std::time::Instant::now();
        let result = check();
        all_ok &= result.is_ok();
        metrics::gauge!(crate::metrics::DEPENDENCY_UP, "dependency" => *name).set(if result.is_ok() {
            1.0
        } else {
            0.0
        });
        let mut entry = serde_json::json!({
            "status": if result.is_ok() { "up" } else { "down" },
            "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
        });
        if let Err(e) = result {
            entry["error"] = serde_json::Value::String(e);
        }
        checks.insert((*name).to_owned(), entry);
    }
    let mut degraded = false;
    for (name, check) in &app.degradations {
        let entry = match check() {
            None => serde_json::json!({ "status": "up" }),
            Some(reason) => {
                degraded = true;
                serde_json::json!({ "status": "degraded", "error": reason })
            }
        };
        checks.insert((*name).to_owned(), entry);
    }
    metrics::gauge!(crate::metrics::READY).set(if all_ok { 1.0 } else { 0.0 });
    let summary = match (all_ok, degraded) {
        (false, _) => "not_ready",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    let mut body = serde_json::json!({ "status": summary, "checks": checks });
    if let Some(delivery) = &app.delivery {
        body["providers"] = providers(delivery);
    }
    if let Some(cluster) = app.engine.cluster() {
        let status = cluster.status();
        body["cluster"] = serde_json::json!({
            "node": status.node,
            "members": status.members,
            "partitions": otpd_actors::actors::cluster::ring::PARTITIONS,
            "partitions_owned": status.partitions_owned,
        });
    }
    (all_ok, body)
}

/// `{"twilio": {"status": "down", "breaker": "open", "routes": ["sms:primary"],
/// "consecutive_failures": 5, "retry_in_ms": 12000, "in_flight": 0, "latency_ms": 431.5}, …}`;
/// `latency_ms` is the provider's latest call (`null` before the first).
fn providers(delivery: &DispatchHandle) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for p in delivery.health() {
        let routes: Vec<String> = p
            .routes
            .iter()
            .map(|(channel, rank)| format!("{}:{}", channel.as_str(), if *rank == 0 { "primary" } else { "secondary" }))
            .collect();
        let mut entry = serde_json::json!({
            "status": if p.breaker == BreakerState::Open { "down" } else { "up" },
            "latency_ms": p.last_call.map(|d| d.as_secs_f64() * 1000.0),
            "breaker": p.breaker.as_str(),
            "routes": routes,
            "consecutive_failures": p.consecutive_failures,
            "in_flight": p.in_flight,
        });
        if let Some(wait) = p.retry_in {
            entry["retry_in_ms"] = serde_json::Value::from(wait.as_millis() as u64);
        }
        out.insert(p.name, entry);
    }
    serde_json::Value::Object(out)
}

/// `GET /v1/admin/audit?identifier=…|trace_id=…&limit=…` for `otpd audit` while the node runs.
async fn admin_audit(app: &App, parts: &Parts) -> Result<Resp, ApiError> {
    check_admin(app, parts)?;
    let mut identifier = None;
    let mut trace_id = None;
    let mut limit = 100usize;
    for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        match &*k {
            "identifier" => identifier = Some(v.into_owned()),
            "trace_id" => trace_id = Some(v.into_owned()),
            "limit" => limit = v.parse().map_err(|_| ApiError::invalid_request("limit must be a number"))?,
            other => return Err(ApiError::invalid_request(format!("unknown query parameter {other:?}"))),
        }
    }
    let limit = limit.clamp(1, 10_000);
    let log = app.engine.audit_log();
    let events = match (identifier, trace_id) {
        (Some(raw), None) => {
            let id = parse_any_identifier(&app.engine, &raw).map_err(ApiError::from)?;
            log.by_identifier(&app.engine.identifier_hash(&id), limit).await
        }
        (None, Some(trace)) => log.by_trace(&trace, limit).await,
        _ => return Err(ApiError::invalid_request("give exactly one of identifier and trace_id")),
    }
    .map_err(|e| ApiError::from(EngineError::Unavailable(e.to_string())))?;
    let body = wire::AuditListResponse { events: events.iter().map(wire::AuditView::from).collect() };
    Ok(json(StatusCode::OK, &body))
}

/// The admin token, compared in constant time.
fn check_admin(app: &App, parts: &Parts) -> Result<(), ApiError> {
    let token = bearer(&parts.headers).ok_or_else(ApiError::missing_token)?;
    if !bool::from(token.as_bytes().ct_eq(app.admin_token.as_bytes())) {
        return Err(ApiError::forbidden("the admin token is not valid"));
    }
    Ok(())
}

/// `GET /metrics`: the Prometheus text exposition.
fn metrics(app: &App) -> Result<Resp, ApiError> {
    let handle = app.observe.prometheus.as_ref().ok_or_else(|| {
        ApiError::from(EngineError::Unavailable("another metrics recorder is installed in this process".into()))
    })?;
    let mut resp = bytes_response(StatusCode::OK, Bytes::from(handle.render()));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(resp)
}

/// `GET /v1/admin/stats`: users, sessions, one-time codes, challenges and delivery since start.
async fn admin_stats(app: &App, parts: &Parts) -> Result<Resp, ApiError> {
    check_admin(app, parts)?;
    if let Some((k, _)) = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).next() {
        return Err(ApiError::invalid_request(format!("unknown query parameter {k:?}")));
    }
    let now = app.engine.now();
    let census = match &app.observe.census {
        Some(c) => c.census(now).await.map_err(|e| ApiError::from(EngineError::Unavailable(e.to_string())))?,
        None => None,
    };
    let shards = app.engine.shard_stats().await;
    let body = wire::AdminStatsResponse {
        at: wire::rfc3339(now),
        uptime_s: now.since(app.observe.started_at).as_secs(),
        users: census.map(|c| wire::UserCounts { total: c.users, verified: c.verified_users }),
        sessions: census.map(|c| wire::SessionCounts { active: c.active_sessions }),
        otp: app.engine.otp_stats().into(),
        challenges: wire::ChallengeCounts {
            shards: shards.len(),
            live: shards.iter().map(|s| s.challenges).sum(),
            pending: shards.iter().map(|s| s.pending).sum(),
            shard_restarts: app.engine.shard_restarts().await.ok(),
        },
        delivery: app.delivery.as_ref().map(|d| d.stats().into()),
    };
    Ok(json(StatusCode::OK, &body))
}

/// An identifier from free text: an e-mail address if it has an `@`, else a phone number.
pub fn parse_any_identifier(engine: &Engine, raw: &str) -> Result<Identifier, EngineError> {
    if raw.contains('@') { Ok(engine.normalizer().email(raw)?) } else { Ok(engine.normalizer().phone(raw)?) }
}

fn identify(app: &App, phone: &Option<String>, email: &Option<String>) -> Result<Identifier, EngineError> {
    match wire::raw_identifier(phone, email)? {
        RawIdentifier::Phone(p) => Ok(app.engine.normalizer().phone(p)?),
        RawIdentifier::Email(e) => Ok(app.engine.normalizer().email(e)?),
    }
}

/// Records a refusal that happened before the engine, and converts it.
pub(super) fn reject(app: &App, ctx: &RequestContext, api: Api, step: Step, e: EngineError) -> ApiError {
    app.engine.record_rejection(ctx, api, step, e.to_string(), None);
    ApiError::from(e)
}

/// Content type, size limit, time limit, then JSON into `T`.
pub(super) async fn read_json<T: DeserializeOwned, B: RequestBody>(
    app: &App,
    ctx: &RequestContext,
    api: Api,
    parts: &Parts,
    body: B,
) -> Result<T, ApiError> {
    let result = read_json_inner(app, parts, body).await;
    if let Err(e) = &result {
        app.engine.record_rejection(ctx, api, Step::Parse, e.detail.clone(), None);
    }
    result
}

async fn read_json_inner<T: DeserializeOwned, B: RequestBody>(
    app: &App,
    parts: &Parts,
    body: B,
) -> Result<T, ApiError> {
    if !is_json(&parts.headers) {
        return Err(ApiError::unsupported_media_type());
    }
    let limit = app.max_body_bytes;
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let collected = tokio::time::timeout(app.request_timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::request_timeout())?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(ApiError::payload_too_large(limit)),
        Err(e) => return Err(ApiError::invalid_request(format!("could not read the request body: {e}"))),
    };
    decode_json(&bytes)
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

fn is_json(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The token of an `Authorization: Bearer <token>` header. Public for the fuzz targets.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The caller's `X-Request-Id` if it is a sane token (1–128 of `[A-Za-z0-9._:-]`), else a new
/// one, so the trace id in the audit trail can never carry arbitrary text.
fn request_id(headers: &HeaderMap) -> TraceId {
    let given = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|v| {
        (1..=128).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    });
    match given {
        Some(v) => TraceId::from(v),
        None => TraceId::from(&*uuid::Uuid::new_v4().simple().encode_lower(&mut uuid::Uuid::encode_buffer())),
    }
}

/// The socket peer, or, when the peer is a trusted proxy, the nearest untrusted address of
/// `X-Forwarded-For` (read from the right, as each proxy appends).
fn client_ip(trusted: &[IpAddr], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    let hops: Vec<IpAddr> = hops.filter_map(|h| h.trim().parse().ok()).collect();
    hops.into_iter().rev().find(|ip| !trusted.contains(ip)).unwrap_or(peer)
}

fn user_agent(headers: &HeaderMap) -> Option<Arc<str>> {
    let raw = headers.get(USER_AGENT)?;
    let text = String::from_utf8_lossy(raw.as_bytes());
    let mut end = text.len().min(256);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(Arc::from(&text[..end]))
}

pub(super) fn json<T: Serialize>(status: StatusCode, body: &T) -> Resp {
    let bytes = serde_json::to_vec(body).expect("response types always serialise");
    bytes_response(status, Bytes::from(bytes))
}

fn bytes_response(status: StatusCode, bytes: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Headers every response carries.
fn decorate(resp: &mut Resp, trace_id: &str) {
    let h = resp.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        h.insert(X_REQUEST_ID.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(request_id(&headers(&[("x-request-id", "abc-123.x:y_z")])), "abc-123.x:y_z");
        assert_ne!(request_id(&headers(&[("x-request-id", "has space")])), "has space");
        assert_eq!(request_id(&headers(&[("x-request-id", &"a".repeat(129))])).len(), 32);
        assert_eq!(request_id(&headers(&[])).len(), 32);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let lb: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.1")]);
        assert_eq!(client_ip(&[], lb, &h), lb);
        assert_eq!(client_ip(&[lb], lb, &h), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&[lb], lb, &headers(&[])), lb);
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(client_ip(&[lb], lb, &spoofed), "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn json_content_type_is_matched_on_its_essence() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[("content-type", "Application/JSON; charset=utf-8")])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[("content-type", "application/jsonp")])));
        assert!(!is_json(&headers(&[])));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(bearer(&headers(&[("authorization", "bearer  abc ")])), Some("abc"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[])), None);
    }

    #[test]
    fn user_agents_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let ua = user_agent(&headers(&[("user-agent", &long)])).unwrap();
        assert!(ua.len() <= 256);
    }
}
