//! Handlers for sessions and devices: wire types in, engine calls, wire types out.
//!
//! | method and path | handler | auth |
//! | --- | --- | --- |
//! | `POST /v1/token/refresh` | [`refresh`] | refresh token in the body |
//! | `POST /v1/logout` | [`logout`] | Bearer |
//! | `POST /v1/logout/all` | [`logout_all`] | Bearer |
//! | `GET /v1/sessions` | [`sessions`] | Bearer |
//! | `POST /v1/devices` | [`enrol`] | Bearer, fresh login by code |
//! | `GET /v1/devices` | [`devices`] | Bearer |
//! | `DELETE /v1/devices/{id}` | [`revoke`] | Bearer |
//! | `POST /v1/device-login/challenge` | [`challenge`] | none |
//! | `POST /v1/device-login/verify` | [`device_verify`] | signature |

use hyper::header::{HeaderValue, LOCATION};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use otpd_actors::flows::devices::{Bearer, Enrolment};
use otpd_actors::rules::audit::Step;
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::DeviceId;
use otpd_actors::{Api, EngineError, Grant, RequestContext};

use super::problem::ApiError;
use super::routes::{App, RequestBody, Resp, bearer, json, read_json, reject};
use super::wire;
use crate::tokens::AccessClaims;

/// The endpoints of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Refresh,
    Logout,
    LogoutAll,
    Sessions,
    Devices,
    /// `/v1/devices/{id}`; `None` when the id is not a UUID (answered 404).
    Device(Option<DeviceId>),
    DeviceChallenge,
    DeviceVerify,
}

impl Endpoint {
    pub fn of(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/v1/token/refresh" => Endpoint::Refresh,
            "/v1/logout" => Endpoint::Logout,
            "/v1/logout/all" => Endpoint::LogoutAll,
            "/v1/sessions" => Endpoint::Sessions,
            "/v1/devices" => Endpoint::Devices,
            "/v1/device-login/challenge" => Endpoint::DeviceChallenge,
            "/v1/device-login/verify" => Endpoint::DeviceVerify,
            _ => {
                let id = path.strip_prefix("/v1/devices/")?;
                Endpoint::Device(wire::device_id(id).ok())
            }
        })
    }
}

pub async fn handle<B: RequestBody>(
    app: &App,
    ctx: &RequestContext,
    endpoint: Endpoint,
    parts: &Parts,
    body: B,
) -> Result<Resp, ApiError> {
    let m = &parts.method;
    match (endpoint, m) {
        (Endpoint::Refresh, &Method::POST) => refresh(app, ctx, parts, body).await,
        (Endpoint::Logout, &Method::POST) => logout(app, ctx, parts).await,
        (Endpoint::LogoutAll, &Method::POST) => logout_all(app, ctx, parts).await,
        // HEAD like GET, as every other GET endpoint (`routes.rs`) and the document say.
        (Endpoint::Sessions, &Method::GET | &Method::HEAD) => sessions(app, ctx, parts).await,
        (Endpoint::Devices, &Method::POST) => enrol(app, ctx, parts, body).await,
        (Endpoint::Devices, &Method::GET | &Method::HEAD) => devices(app, ctx, parts).await,
        (Endpoint::Device(id), &Method::DELETE) => revoke(app, ctx, parts, id).await,
        (Endpoint::DeviceChallenge, &Method::POST) => challenge(app, ctx, parts, body).await,
        (Endpoint::DeviceVerify, &Method::POST) => device_verify(app, ctx, parts, body).await,
        (Endpoint::Sessions, _) => Err(ApiError::method_not_allowed("GET")),
        (Endpoint::Devices, _) => Err(ApiError::method_not_allowed("GET, POST")),
        (Endpoint::Device(_), _) => Err(ApiError::method_not_allowed("DELETE")),
        _ => Err(ApiError::method_not_allowed("POST")),
    }
}

/// The signature-checked claims of the request's access token.
fn authenticate(app: &App, ctx: &RequestContext, api: Api, parts: &Parts) -> Result<AccessClaims, ApiError> {
    let token = bearer(&parts.headers).ok_or_else(ApiError::missing_token)?;
    app.tokens.verify(token, app.engine.now()).map_err(|e| {
        app.engine.record_rejection(ctx, api, Step::Token, e.to_string(), None);
        ApiError::invalid_token(e.to_string())
    })
}

fn bearer_of(claims: &AccessClaims) -> Bearer {
    Bearer { user: claims.user(), session: claims.session(), issued_at: Timestamp::from_millis(claims.iat * 1000) }
}

/// Signs an access token for `grant` (issued at `now`) and renders the token response.
fn tokens(app: &App, ctx: &RequestContext, grant: Grant, now: Timestamp) -> Result<Resp, ApiError> {
    let access_token = app.tokens.issue(grant.user.id, grant.session.id, now).map_err(|e| {
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

async fn refresh<B: RequestBody>(app: &App, ctx: &RequestContext, parts: &Parts, body: B) -> Result<Resp, ApiError> {
    let req: wire::RefreshRequest = read_json(app, ctx, Api::TokenRefresh, parts, body).await?;
    let grant = app.engine.refresh(ctx, &req.refresh_token).await?;
    tokens(app, ctx, grant, app.engine.now())
}

async fn logout(app: &App, ctx: &RequestContext, parts: &Parts) -> Result<Resp, ApiError> {
    let claims = authenticate(app, ctx, Api::Logout, parts)?;
    app.engine.logout(ctx, claims.user(), claims.session()).await?;
    Ok(no_content())
}

async fn logout_all(app: &App, ctx: &RequestContext, parts: &Parts) -> Result<Resp, ApiError> {
    let claims = authenticate(app, ctx, Api::LogoutAll, parts)?;
    let revoked = app.engine.logout_all(ctx, claims.user(), claims.session()).await?;
    Ok(json(StatusCode::OK, &wire::LogoutAllResponse { revoked }))
}

async fn sessions(app: &App, ctx: &RequestContext, parts: &Parts) -> Result<Resp, ApiError> {
    let claims = authenticate(app, ctx, Api::Sessions, parts)?;
    let list = app.engine.active_sessions(ctx, claims.user(), claims.session()).await?;
    let sessions = list.iter().map(|s| wire::SessionView::new(s, claims.session())).collect();
    Ok(json(StatusCode::OK, &wire::SessionListResponse { sessions }))
}

async fn enrol<B: RequestBody>(app: &App, ctx: &RequestContext, parts: &Parts, body: B) -> Result<Resp, ApiError> {
    let api = Api::DeviceEnrol;
    let claims = authenticate(app, ctx, api, parts)?;
    let req: wire::EnrolRequest = read_json(app, ctx, api, parts, body).await?;
    let checked = (|| {
        Ok::<_, EngineError>(Enrolment {
            name: wire::device_name(&req.name)?,
            platform: req.platform.into(),
            key: wire::key_input(&req.public_key, &req.jwk)?,
        })
    })();
    let enrolment = checked.map_err(|e| reject(app, ctx, api, Step::Validate, e))?;
    let device = app.engine.enrol_device(ctx, bearer_of(&claims), enrolment).await?;
    let mut resp = json(StatusCode::CREATED, &wire::DeviceView::from(&device));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/devices/{}", device.id)) {
        resp.headers_mut().insert(LOCATION, location);
    }
    Ok(resp)
}

async fn devices(app: &App, ctx: &RequestContext, parts: &Parts) -> Result<Resp, ApiError> {
    let claims = authenticate(app, ctx, Api::DeviceList, parts)?;
    let list = app.engine.devices(ctx, bearer_of(&claims)).await?;
    let devices = list.iter().map(wire::DeviceView::from).collect();
    Ok(json(StatusCode::OK, &wire::DeviceListResponse { devices }))
}

async fn revoke(app: &App, ctx: &RequestContext, parts: &Parts, id: Option<DeviceId>) -> Result<Resp, ApiError> {
    let api = Api::DeviceRevoke;
    let claims = authenticate(app, ctx, api, parts)?;
    let id = id.ok_or_else(|| reject(app, ctx, api, Step::Validate, EngineError::DeviceNotFound))?;
    app.engine.revoke_device(ctx, bearer_of(&claims), id).await?;
    Ok(no_content())
}

async fn challenge<B: RequestBody>(app: &App, ctx: &RequestContext, parts: &Parts, body: B) -> Result<Resp, ApiError> {
    let api = Api::DeviceChallenge;
    let req: wire::DeviceChallengeRequest = read_json(app, ctx, api, parts, body).await?;
    let id = wire::device_id(&req.device_id).map_err(|e| reject(app, ctx, api, Step::Validate, e))?;
    let c = app.engine.device_challenge(ctx, id).await?;
    let body = wire::DeviceChallengeResponse {
        device_id: c.device_id.to_string(),
        nonce: c.nonce.to_hex(),
        audience: c.audience,
        expires_in: c.expires_in.as_secs(),
    };
    Ok(json(StatusCode::OK, &body))
}

async fn device_verify<B: RequestBody>(
    app: &App,
    ctx: &RequestContext,
    parts: &Parts,
    body: B,
) -> Result<Resp, ApiError> {
    let api = Api::DeviceVerify;
    let req: wire::DeviceVerifyRequest = read_json(app, ctx, api, parts, body).await?;
    let checked = (|| {
        let id = wire::device_id(&req.device_id)?;
        let nonce = wire::nonce(&req.nonce)?;
        let signature = wire::base64_any("signature", &req.signature, wire::MAX_SIGNATURE_CHARS)?;
        Ok::<_, EngineError>((id, nonce, signature))
    })();
    let (id, nonce, signature) = checked.map_err(|e| reject(app, ctx, api, Step::Validate, e))?;
    let grant = app.engine.device_login(ctx, id, nonce, &signature).await?;
    let now = grant.login_at;
    tokens(app, ctx, grant, now)
}

fn no_content() -> Resp {
    let mut resp = Resp::new(Default::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}
