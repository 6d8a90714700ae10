//! Handlers of sign-up and login by code, and of `GET /v1/me`: wire types in, engine calls,
//! wire types out.

use hyper::StatusCode;
use otpd_actors::rules::audit::Step;
use otpd_actors::rules::challenge::Profile;
use otpd_actors::rules::identifier::Via;
use otpd_actors::{Asked, EngineError, Registration};

use super::account::tokens;
use super::app::{App, Call, Resp, identify, json};
use super::problem::ApiError;
use super::wire;

/// The `channel` a send asked for: one of the ways the SMS route has (the same answer whatever
/// the identifier, so it tells nothing about accounts).
fn channel(app: &App, channel: &Option<String>) -> Result<Option<Via>, EngineError> {
    let Some(text) = channel.as_deref() else { return Ok(None) };
    let enabled = app.delivery.as_ref().map(|d| d.vias()).unwrap_or_default();
    let via = Via::parse(text).filter(|v| enabled.contains(v)).ok_or_else(|| {
        let names: Vec<&str> = enabled.iter().map(|v| v.as_str()).collect();
        EngineError::InvalidInput(format!("channel must be one of {names:?} (the ways this node sends codes)"))
    })?;
    Ok(Some(via))
}

/// What a send asked for: its `locale` and `channel`.
fn asked(app: &App, locale: &Option<String>, via: &Option<String>) -> Result<Asked, EngineError> {
    Ok(Asked { locale: wire::locale(locale.as_deref())?, via: channel(app, via)? })
}

/// `POST /v1/register`.
pub(super) async fn register(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::RegisterRequest = call.json(app)?;
    let checked = (|| {
        let first_name = wire::name("first_name", &req.first_name)?;
        let last_name = wire::name("last_name", &req.last_name)?;
        let asked = asked(app, &req.locale, &req.channel)?;
        // With a phone number, `email` is a contact address; without one, it is the identifier.
        let (identifier, email) = match (&req.phone, &req.email) {
            (Some(phone), email) => {
                let contact = email.as_deref().map(|e| app.engine.normalizer().email(e)).transpose()?;
                (app.engine.normalizer().phone(phone)?, contact.map(|c| c.as_str().to_owned()))
            }
            (None, Some(email)) => (app.engine.normalizer().email(email)?, None),
            (None, None) => return Err(EngineError::InvalidInput("phone or email is required".into())),
        };
        Ok(Registration { identifier, first_name, last_name, email, asked })
    })();
    let registration = checked.map_err(|e| call.reject(app, Step::Validate, e))?;
    let receipt = app.engine.register(call.ctx, registration).await?;
    Ok(json(StatusCode::ACCEPTED, &wire::SendResponse::from(receipt)))
}

/// `POST /v1/login`.
pub(super) async fn login(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::LoginRequest = call.json(app)?;
    let checked = identify(app, &req.phone, &req.email).and_then(|id| Ok((id, asked(app, &req.locale, &req.channel)?)));
    let (identifier, asked) = checked.map_err(|e| call.reject(app, Step::Validate, e))?;
    let receipt = app.engine.login(call.ctx, identifier, asked).await?;
    Ok(json(StatusCode::ACCEPTED, &wire::SendResponse::from(receipt)))
}

/// `POST /v1/otp/resend`.
pub(super) async fn resend(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::ResendRequest = call.json(app)?;
    let checked = identify(app, &req.phone, &req.email).and_then(|id| Ok((id, asked(app, &req.locale, &req.channel)?)));
    let (identifier, asked) = checked.map_err(|e| call.reject(app, Step::Validate, e))?;
    let receipt = app.engine.resend(call.ctx, identifier, req.purpose.into(), asked).await?;
    Ok(json(StatusCode::ACCEPTED, &wire::SendResponse::from(receipt)))
}

/// `POST /v1/register/verify`: activates the account and signs in.
pub(super) async fn verify_registration(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::RegisterVerifyRequest = call.json(app)?;
    let checked = (|| {
        let identifier = identify(app, &req.phone, &req.email)?;
        let code = wire::code(&req.code)?;
        let profile = match &req.profile {
            None => None,
            Some(p) => Some(Profile {
                first_name: wire::name("profile.first_name", &p.first_name)?,
                last_name: wire::name("profile.last_name", &p.last_name)?,
                email: p
                    .email
                    .as_deref()
                    .map(|e| app.engine.normalizer().email(e))
                    .transpose()?
                    .map(|e| e.as_str().to_owned()),
            }),
        };
        Ok((identifier, code, profile))
    })();
    let (identifier, code, profile) = checked.map_err(|e| call.reject(app, Step::Validate, e))?;
    let grant = app.engine.verify_registration(call.ctx, identifier, code, profile).await?;
    let login_at = grant.login_at;
    tokens(app, call, grant, login_at)
}

/// `POST /v1/login/verify`.
pub(super) async fn verify_login(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::VerifyRequest = call.json(app)?;
    let checked = identify(app, &req.phone, &req.email).and_then(|id| Ok((id, wire::code(&req.code)?)));
    let (identifier, code) = checked.map_err(|e| call.reject(app, Step::Validate, e))?;
    let grant = app.engine.verify_login(call.ctx, identifier, code).await?;
    let login_at = grant.login_at;
    tokens(app, call, grant, login_at)
}

/// `GET /v1/me`.
pub(super) async fn me(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let claims = call.claims();
    let user = app.engine.current_user(call.ctx, claims.user(), claims.session()).await?;
    Ok(json(
        StatusCode::OK,
        &wire::MeResponse { user: wire::UserView::from(&user), session_id: claims.sid.to_string() },
    ))
}
