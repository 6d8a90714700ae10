//! Handlers of the operations endpoints (health, metrics, the admin API) and of the public
//! keys and the API document (which listener serves each is the route table's `Exposure`);
//! and the refresher of the gauges that are sampled rather than counted.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use metrics::gauge;
use otpd_actors::EngineError;
use otpd_actors::actors::dispatch::DispatchHandle;
use otpd_actors::ports::StoreError;
use otpd_actors::rules::audit::Step;
use otpd_actors::rules::breaker::BreakerState;
use otpd_actors::rules::ids::UserId;
use otpd_actors::rules::limits::{DestinationChange, GuardMode, Pin, Subject};
use tokio::task::JoinHandle;

use crate::keyring::{KeyKind, RotateError, Rotated};

use super::app::{App, Call, Resp, bytes_response, json, parse_any_identifier};
use super::problem::ApiError;
use super::wire;

/// `GET /health/live`.
pub(super) async fn live(_: &App, _: &Call<'_>) -> Result<Resp, ApiError> {
    Ok(json(StatusCode::OK, &serde_json::json!({ "status": "live" })))
}

/// `GET /health/ready`: 200 when ready, 503 when not.
///
/// The public listener says only `ready` or `not_ready`: the details name dependencies,
/// members and provider states, which are for operators.
pub(super) async fn ready(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let (ready, body) = readiness(app);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if call.listener.serves_ops(app.observe.ops_on_public_listener) {
        return Ok(json(status, &body));
    }
    Ok(json(status, &serde_json::json!({ "status": if ready { "ready" } else { "not_ready" } })))
}

/// `GET /.well-known/jwks.json`.
pub(super) async fn jwks(app: &App, _: &Call<'_>) -> Result<Resp, ApiError> {
    let mut resp = bytes_response(StatusCode::OK, app.tokens.jwks(app.engine.now()));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(resp)
}

/// `GET /openapi.json`.
pub(super) async fn openapi(app: &App, _: &Call<'_>) -> Result<Resp, ApiError> {
    Ok(bytes_response(StatusCode::OK, app.document.clone()))
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
pub(super) async fn admin_audit(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let parts = call.parts;
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
    let body = wire::AuditListResponse {
        events: events.iter().map(wire::AuditView::from).collect(),
        retention: Some(wire::RetentionView::from(&app.observe.retention)),
    };
    Ok(json(StatusCode::OK, &body))
}

/// `GET /metrics`: the Prometheus text exposition.
pub(super) async fn metrics(app: &App, _: &Call<'_>) -> Result<Resp, ApiError> {
    let handle = app.observe.prometheus.as_ref().ok_or_else(|| {
        ApiError::from(EngineError::Unavailable("another metrics recorder is installed in this process".into()))
    })?;
    let mut resp = bytes_response(StatusCode::OK, Bytes::from(handle.render()));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(resp)
}

/// `GET /v1/admin/stats`: users, sessions, one-time codes, challenges and delivery since start.
pub(super) async fn admin_stats(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let parts = call.parts;
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

/// `GET /v1/admin/destinations?limit=…`: the conversion guard's destinations, worst first.
pub(super) async fn admin_destinations(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let mut limit = 100usize;
    for (k, v) in form_urlencoded::parse(call.parts.uri.query().unwrap_or("").as_bytes()) {
        match &*k {
            "limit" => limit = v.parse().map_err(|_| ApiError::invalid_request("limit must be a number"))?,
            other => return Err(ApiError::invalid_request(format!("unknown query parameter {other:?}"))),
        }
    }
    let list = app.engine.destinations(limit.clamp(1, 1_000)).await?;
    let body = wire::DestinationListResponse {
        at: wire::rfc3339(app.engine.now()),
        destinations: list.iter().map(wire::DestinationView::from).collect(),
    };
    Ok(json(StatusCode::OK, &body))
}

/// `PUT /v1/admin/destinations/{destination}`: pins a destination to a mode, for a while.
pub(super) async fn pin_destination(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let subject = destination(app, call.param)?;
    let req: wire::PinDestinationRequest = call.json(app)?;
    let mode = match req.mode.as_str() {
        "record" => GuardMode::Record,
        "throttle" => GuardMode::Throttle,
        "block" => GuardMode::Block,
        _ => return Err(ApiError::invalid_request("mode must be record, throttle or block")),
    };
    let how_long = humantime::parse_duration(req.r#for.trim())
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_PIN)
        .ok_or_else(|| ApiError::invalid_request("for must be a duration such as 24h, at most 90 days"))?;
    let pin = Pin { mode, until: app.engine.now().plus(how_long) };
    let state = app.engine.change_destination(call.ctx, subject, DestinationChange::Pin(pin)).await?;
    Ok(json(StatusCode::OK, &wire::DestinationView::from(&state)))
}

/// `DELETE /v1/admin/destinations/{destination}`: lifts a destination (its window forgotten,
/// its pin removed).
pub(super) async fn lift_destination(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let subject = destination(app, call.param)?;
    let state = app.engine.change_destination(call.ctx, subject, DestinationChange::Lift).await?;
    Ok(json(StatusCode::OK, &wire::DestinationView::from(&state)))
}

/// `GET /v1/admin/users/{id}`: the account's export.
pub(super) async fn admin_export_user(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let id = user_id(app, call)?;
    let export = app.engine.admin_export_account(call.ctx, id).await?;
    Ok(json(StatusCode::OK, &wire::AccountExportResponse::new(&export, app)))
}

/// `DELETE /v1/admin/users/{id}`.
pub(super) async fn admin_erase_user(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let id = user_id(app, call)?;
    let erased = app.engine.admin_erase_account(call.ctx, id).await?;
    metrics::counter!(crate::metrics::ACCOUNTS_ERASED, "by" => "admin").increment(1);
    Ok(json(StatusCode::OK, &wire::EraseResponse::from(erased)))
}

/// The account id of the path: a hyphenated UUID, or the account is not found.
fn user_id(app: &App, call: &Call<'_>) -> Result<UserId, ApiError> {
    let parsed = (call.param.len() == 36).then(|| uuid::Uuid::parse_str(call.param).ok()).flatten();
    parsed.map(UserId).ok_or_else(|| call.reject(app, Step::Validate, EngineError::AccountNotFound))
}

/// The longest pin.
const MAX_PIN: Duration = Duration::from_secs(90 * 24 * 3600);

/// A destination of the path: `+` (or `%2B`, or nothing) and digits: a number prefix when it
/// has `limits.prefix_digits` digits, else a country calling code of 1 to 3 digits.
fn destination(app: &App, raw: &str) -> Result<Subject, ApiError> {
    let digits = ["%2B", "%2b", "+"].iter().find_map(|p| raw.strip_prefix(p)).unwrap_or(raw);
    let prefix_digits = usize::from(app.observe.prefix_digits);
    let well_formed = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    match digits.len() {
        n if well_formed && n == prefix_digits => {
            Ok(Subject::Prefix(digits.parse().expect("checked digits"), app.observe.prefix_digits))
        }
        1..=3 if well_formed => Ok(Subject::Country(digits.parse().expect("checked digits"))),
        _ => Err(ApiError::invalid_request(format!(
            "a destination is + and the {prefix_digits} digits of a number prefix or the 1 to 3 of a calling code"
        ))),
    }
}

/// Sets the census gauges; `Ok(None)` while the store is still counting.
async fn refresh_census(app: &App) -> Result<(), StoreError> {
    let Some(census) = &app.observe.census else { return Ok(()) };
    if let Some(c) = census.census(app.engine.now()).await? {
        gauge!(crate::metrics::USERS).set(c.users as f64);
        gauge!(crate::metrics::USERS_VERIFIED).set(c.verified_users as f64);
        gauge!(crate::metrics::SESSIONS_ACTIVE).set(c.active_sessions as f64);
    }
    Ok(())
}

/// Samples every gauge that is not counted on the way: users and sessions, live challenges,
/// breaker states, readiness.
pub async fn refresh(app: &App) {
    app.engine.refresh_gauges().await;
    if let Some(delivery) = &app.delivery {
        delivery.refresh_gauges();
    }
    if let Err(e) = refresh_census(app).await {
        tracing::warn!(error = %e, "could not count users and sessions for the gauges");
    }
    let _ = readiness(app);
}

/// Runs [`refresh`] every `every`, and drains histogram samples into their buckets every
/// [`crate::metrics::DRAIN_INTERVAL`], until the app is dropped (the node stopped).
pub fn spawn_refresher(app: &Arc<App>, every: Duration) -> JoinHandle<()> {
    let weak: Weak<App> = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut gauges = tokio::time::interval(every);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = tokio::time::interval(crate::metrics::DRAIN_INTERVAL);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let gauges_due = tokio::select! {
                _ = gauges.tick() => true,
                _ = drain.tick() => false,
            };
            let Some(app) = weak.upgrade() else { break };
            if gauges_due {
                refresh(&app).await;
            } else if let Some(handle) = &app.observe.prometheus {
                handle.run_upkeep();
            }
        }
    })
}

/// `POST /v1/admin/keys/rotate`: a new generation of the signing key or the admin token,
/// stored where every node reads it; audited (which key, never the key).
pub(super) async fn rotate_key(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: wire::RotateKeyRequest = call.json(app)?;
    let (kind, note) = match req.key.as_str() {
        "signing" => (KeyKind::Signing, "signing key rotated by an operator"),
        "admin" => (KeyKind::Admin, "admin token rotated by an operator"),
        _ => return Err(ApiError::invalid_request("key must be signing or admin")),
    };
    let rotated = app.keyring.rotate(kind, app.engine.now(), &app.tokens, &app.admin).await;
    let audited = match &rotated {
        Ok(_) => Ok(()),
        Err(RotateError::NotRotatable) => Err(EngineError::InvalidInput(RotateError::NotRotatable.to_string())),
        Err(e) => Err(EngineError::Unavailable(e.to_string())),
    };
    app.engine.record_key_rotation(call.ctx, note, audited).await?;
    let rotated = rotated.map_err(|e| ApiError::invalid_request(e.to_string()))?;
    Ok(json(StatusCode::OK, &rotated_view(&rotated)))
}

fn rotated_view(r: &Rotated) -> wire::RotateKeyResponse {
    wire::RotateKeyResponse {
        key: r.kind.as_str(),
        generation: r.generation,
        activates_at: wire::rfc3339(r.activates_at),
        kid: r.kid.clone(),
        admin_token: r.admin_token.clone(),
        previous_admin_token_until: r.previous_until.map(wire::rfc3339),
    }
}

/// Reads the rotated keys every `every` (a rotation on another node arrives within it) and
/// rotates the signing key when `tokens.rotate_every` says so; ends once the app is dropped.
pub fn spawn_key_poller(app: &Arc<App>, every: Duration) -> JoinHandle<()> {
    let weak: Weak<App> = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(app) = weak.upgrade() else { break };
            if let Err(e) = app.keyring.refresh(&app.tokens, &app.admin).await {
                tracing::warn!(error = %e, "could not read the rotated keys; trying again");
                continue;
            }
            match app.keyring.due(app.engine.now()).await {
                Ok(true) => scheduled_rotation(&app).await,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not read the rotated keys; trying again"),
            }
        }
    })
}

async fn scheduled_rotation(app: &App) {
    let ctx = otpd_actors::RequestContext {
        trace_id: otpd_actors::rules::ids::TraceId::from(
            format!("key-schedule-{}", uuid::Uuid::now_v7().simple()).as_str(),
        ),
        client_ip: None,
        user_agent: None,
    };
    let rotated = app.keyring.rotate(KeyKind::Signing, app.engine.now(), &app.tokens, &app.admin).await;
    match &rotated {
        Ok(r) => tracing::info!(
            generation = r.generation,
            kid = r.kid.as_deref().unwrap_or(""),
            "signing key rotated on schedule"
        ),
        Err(e) => tracing::warn!(error = %e, "scheduled signing key rotation failed; trying again"),
    }
    let audited = rotated.map(|_| ()).map_err(|e| EngineError::Unavailable(e.to_string()));
    let _ = app.engine.record_key_rotation(&ctx, "signing key rotated on schedule", audited).await;
}
