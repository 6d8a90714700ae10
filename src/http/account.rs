//! Handlers of sessions, devices and passkeys: wire types in, engine calls, wire types out. Rows
//! with a Bearer token reach these already authenticated ([`Call::claims`]).

use hyper::StatusCode;
use hyper::header::{HeaderValue, LOCATION};
use otpd_actors::flows::devices::{Bearer, Enrolment};
use otpd_actors::flows::passkeys::PasskeyOptions;
use otpd_actors::rules::audit::Step;
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::{EngineError, Grant};

use super::app::{App, Call, Resp, json};
use super::problem::ApiError;
use super::wire;
use crate::tokens::AccessClaims;

fn bearer_of(claims: &AccessClaims) -> Bearer {
    Bearer { user: claims.user(), session: claims.session(), issued_at: Timestamp::from_millis(claims.iat * 1000) }
}

/// Signs an access token for `grant` (issued at `now`) and renders the token response: the
/// one answer of every sign-in (code, refresh, device).
pub(super) fn tokens(app: &App, call: &Call<'_>, grant: Grant, now: Timestamp) -> Result<Resp, ApiError> {
    let access_token = app.tokens.issue(grant.user.id, grant.session.id, now).map_err(|e| {
        tracing::error!(error = %e, trace_id = %call.ctx.trace_id, "could not sign an access token");
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

/// `POST /v1/token/refresh`.
pub(super) async fn refresh(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::RefreshRequest = call.json(app)?;
    let grant = app.engine.refresh(call.ctx, &req.refresh_token).await?;
    tokens(app, call, grant, app.engine.now())
}

/// `POST /v1/logout`.
pub(super) async fn logout(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let claims = call.claims();
    app.engine.logout(call.ctx, claims.user(), claims.session()).await?;
    Ok(no_content())
}

/// `POST /v1/logout/all`.
pub(super) async fn logout_all(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let claims = call.claims();
    let revoked = app.engine.logout_all(call.ctx, claims.user(), claims.session()).await?;
    Ok(json(StatusCode::OK, &wire::LogoutAllResponse { revoked }))
}

/// `GET /v1/sessions`.
pub(super) async fn sessions(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let claims = call.claims();
    let list = app.engine.active_sessions(call.ctx, claims.user(), claims.session()).await?;
    let sessions = list.iter().map(|s| wire::SessionView::new(s, claims.session())).collect();
    Ok(json(StatusCode::OK, &wire::SessionListResponse { sessions }))
}

/// `GET /v1/me/export`.
pub(super) async fn export(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let export = app.engine.export_account(call.ctx, bearer_of(call.claims())).await?;
    Ok(json(StatusCode::OK, &wire::AccountExportResponse::new(&export, app)))
}

/// `DELETE /v1/me`.
pub(super) async fn erase(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let erased = app.engine.erase_account(call.ctx, bearer_of(call.claims())).await?;
    metrics::counter!(crate::metrics::ACCOUNTS_ERASED, "by" => "user").increment(1);
    Ok(json(StatusCode::OK, &wire::EraseResponse::from(erased)))
}

/// `POST /v1/devices`.
pub(super) async fn enrol(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::EnrolRequest = call.json(app)?;
    let checked = (|| {
        Ok::<_, EngineError>(Enrolment {
            name: wire::device_name(&req.name)?,
            platform: req.platform.into(),
            key: wire::key_input(&req.public_key, &req.jwk)?,
        })
    })();
    let enrolment = checked.map_err(|e| call.reject(app, Step::Validate, e))?;
    let device = app.engine.enrol_device(call.ctx, bearer_of(call.claims()), enrolment).await?;
    let mut resp = json(StatusCode::CREATED, &wire::DeviceView::from(&device));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/devices/{}", device.id)) {
        resp.headers_mut().insert(LOCATION, location);
    }
    Ok(resp)
}

/// `GET /v1/devices`.
pub(super) async fn devices(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let list = app.engine.devices(call.ctx, bearer_of(call.claims())).await?;
    let devices = list.iter().map(wire::DeviceView::from).collect();
    Ok(json(StatusCode::OK, &wire::DeviceListResponse { devices }))
}

/// `DELETE /v1/devices/{id}`: an id that is not a UUID names no device.
pub(super) async fn revoke(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let id = wire::device_id(call.param).map_err(|_| call.reject(app, Step::Validate, EngineError::DeviceNotFound))?;
    app.engine.revoke_device(call.ctx, bearer_of(call.claims()), id).await?;
    Ok(no_content())
}

/// `POST /v1/device-login/challenge`.
pub(super) async fn challenge(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::DeviceChallengeRequest = call.json(app)?;
    let id = wire::device_id(&req.device_id).map_err(|e| call.reject(app, Step::Validate, e))?;
    let c = app.engine.device_challenge(call.ctx, id).await?;
    let body = wire::DeviceChallengeResponse {
        device_id: c.device_id.to_string(),
        nonce: c.nonce.to_hex(),
        audience: c.audience,
        expires_in: c.expires_in.as_secs(),
    };
    Ok(json(StatusCode::OK, &body))
}

/// `POST /v1/device-login/verify`.
pub(super) async fn device_verify(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::DeviceVerifyRequest = call.json(app)?;
    let checked = (|| {
        let id = wire::device_id(&req.device_id)?;
        let nonce = wire::nonce(&req.nonce)?;
        let signature = wire::base64_any("signature", &req.signature, wire::MAX_SIGNATURE_CHARS)?;
        Ok::<_, EngineError>((id, nonce, signature))
    })();
    let (id, nonce, signature) = checked.map_err(|e| call.reject(app, Step::Validate, e))?;
    let grant = app.engine.device_login(call.ctx, id, nonce, &signature).await?;
    let now = grant.login_at;
    tokens(app, call, grant, now)
}

/// `POST /v1/passkeys/options`.
pub(super) async fn passkey_register_options(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let o = app.engine.passkey_register_options(call.ctx, bearer_of(call.claims())).await?;
    options(o)
}

/// `POST /v1/passkeys`.
pub(super) async fn register_passkey(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::PasskeyRegisterRequest = call.json(app)?;
    let checked = (|| Ok::<_, EngineError>((wire::device_name(&req.name)?, wire::credential_json(&req.credential)?)))();
    let (name, credential) = checked.map_err(|e| call.reject(app, Step::Validate, e))?;
    let passkey = app.engine.register_passkey(call.ctx, bearer_of(call.claims()), name, &credential).await?;
    let view = wire::PasskeyView::from(&passkey);
    let location = format!("/v1/passkeys/{}", view.id);
    let mut resp = json(StatusCode::CREATED, &view);
    if let Ok(location) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, location);
    }
    Ok(resp)
}

/// `GET /v1/passkeys`.
pub(super) async fn passkeys(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let list = app.engine.passkeys(call.ctx, bearer_of(call.claims())).await?;
    let passkeys = list.iter().map(wire::PasskeyView::from).collect();
    Ok(json(StatusCode::OK, &wire::PasskeyListResponse { passkeys }))
}

/// `DELETE /v1/passkeys/{id}`: an id that is not base64url names no passkey.
pub(super) async fn delete_passkey(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let id = wire::passkey_id(call.param).map_err(|e| call.reject(app, Step::Validate, e))?;
    app.engine.delete_passkey(call.ctx, bearer_of(call.claims()), id).await?;
    Ok(no_content())
}

/// `POST /v1/passkey-login/options`.
pub(super) async fn passkey_login_options(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let o = app.engine.passkey_login_options(call.ctx).await?;
    options(o)
}

/// `POST /v1/passkey-login/verify`.
pub(super) async fn passkey_login(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::PasskeyLoginRequest = call.json(app)?;
    let credential = wire::credential_json(&req.credential).map_err(|e| call.reject(app, Step::Validate, e))?;
    let grant = app.engine.passkey_login(call.ctx, &credential).await?;
    let now = grant.login_at;
    tokens(app, call, grant, now)
}

fn options(o: PasskeyOptions) -> Result<Resp, ApiError> {
    // The relying party writes its options with serde_json: they always read back.
    let options = serde_json::from_str(&o.options.0)
        .map_err(|e| ApiError::from(EngineError::Unavailable(format!("passkey options are not JSON: {e}"))))?;
    Ok(json(StatusCode::OK, &wire::PasskeyOptionsResponse { options, expires_in: o.expires_in.as_secs() }))
}

fn no_content() -> Resp {
    let mut resp = Resp::new(Default::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}
