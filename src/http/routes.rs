//! The request path: every request's trace id, client address and metrics, the route table
//! lookup ([`super::table`]), the row's authentication and body, then its handler.
//!
//! Handlers live by subject: [`super::codes`] (sign-up, login, codes, `me`),
//! [`super::account`] (sessions and devices), [`super::ops`] (health, metrics, admin, keys,
//! the document). Every request runs with its `trace_id` in a task-local
//! ([`crate::logging::with_trace_id`]), so every log line it causes names it; its route
//! template, method, status class and latency are counted ([`crate::metrics::HttpMetrics`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
    REFERRER_POLICY, USER_AGENT, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::http::request::Parts;
use otpd_actors::rules::audit::Step;
use otpd_actors::rules::ids::TraceId;
use otpd_actors::{Api, RequestContext};

use super::app::{App, Call, Listener, RequestBody, Resp, bearer};
use super::problem::ApiError;
use super::table::{Auth, Lookup, Route};
use crate::config::IpRange;
use crate::tokens::AccessClaims;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Entry point for every request on the main listener.
pub async fn handle<B: RequestBody>(app: Arc<App>, req: Request<B>, peer: SocketAddr) -> Resp {
    handle_on(app, req, peer, Listener::Main).await
}

/// Entry point for every request on the admin listener.
pub async fn handle_admin<B: RequestBody>(app: Arc<App>, req: Request<B>, peer: SocketAddr) -> Resp {
    handle_on(app, req, peer, Listener::Admin).await
}

async fn handle_on<B: RequestBody>(app: Arc<App>, req: Request<B>, peer: SocketAddr, listener: Listener) -> Resp {
    let (parts, body) = req.into_parts();
    let (lookup, label) =
        super::table::lookup(&parts.method, parts.uri.path(), listener, app.observe.ops_on_public_listener);
    let observed = app.observe.http.begin(&parts.method, label);
    let ctx = RequestContext {
        trace_id: request_id(&parts.headers),
        client_ip: Some(client_ip(&app.trusted_proxies, peer.ip(), &parts.headers)),
        user_agent: user_agent(&parts.headers),
    };
    // Every line logged while the request is handled carries its trace id.
    crate::logging::with_trace_id(ctx.trace_id.clone(), async {
        let page = match (&lookup, listener) {
            (Lookup::NotFound, Listener::Main) if app.signin_page => {
                super::signin::serve(&parts.method, parts.uri.path())
            }
            _ => None,
        };
        let result = match lookup {
            _ if page.is_some() => Ok(page.expect("just checked")),
            Lookup::Found(route, param) => dispatch(&app, &ctx, &parts, listener, body, route, param).await,
            Lookup::MethodNotAllowed(allow) => Err(ApiError::method_not_allowed(allow)),
            Lookup::NotFound => Err(ApiError::not_found()),
        };
        let mut resp = result.unwrap_or_else(|e| e.into_response(&ctx.trace_id));
        decorate(&mut resp, &ctx.trace_id);
        let (route, method, status) = (observed.route(), observed.method(), resp.status().as_u16());
        let took = observed.finish(resp.status());
        tracing::debug!(route, method, status, micros = took.as_micros() as u64, "request answered");
        resp
    })
    .await
}

/// The row's authentication, then its body, then its handler.
async fn dispatch<B: RequestBody>(
    app: &App,
    ctx: &RequestContext,
    parts: &Parts,
    listener: Listener,
    body: B,
    route: &'static Route,
    param: &str,
) -> Result<Resp, ApiError> {
    let claims = match route.auth {
        Auth::None => None,
        Auth::Bearer => Some(authenticate(app, ctx, route.api, parts)?),
        Auth::Admin => {
            check_admin(app, parts)?;
            None
        }
    };
    let body = match route.body {
        Some(schema) => read_body(app, ctx, route.api, parts, body, FORM_BODIES.contains(&schema)).await?,
        None => Bytes::new(),
    };
    let call = Call { ctx, parts, listener, api: route.api, param, body, claims };
    (route.handler)(app, &call).await
}

/// The signature-checked claims of the request's access token; a refused token is audited
/// under `api` at step `token`.
fn authenticate(app: &App, ctx: &RequestContext, api: Option<Api>, parts: &Parts) -> Result<AccessClaims, ApiError> {
    let token = bearer(&parts.headers).ok_or_else(ApiError::missing_token)?;
    app.tokens.verify(token, app.engine.now()).map_err(|e| {
        if let Some(api) = api {
            app.engine.record_rejection(ctx, api, Step::Token, e.to_string(), None);
        }
        ApiError::from(e)
    })
}

/// The admin token, compared in constant time.
fn check_admin(app: &App, parts: &Parts) -> Result<(), ApiError> {
    let token = bearer(&parts.headers).ok_or_else(ApiError::missing_token)?;
    if !app.admin.accepts(token, app.engine.now()) {
        return Err(ApiError::forbidden("the admin token is not valid"));
    }
    Ok(())
}

/// Content type, size limit, time limit: the body of a row that takes one. A refusal is
/// audited under the row's API, at step `parse`.
/// Bodies sent as a form (`application/x-www-form-urlencoded`): Twilio's callbacks.
const FORM_BODIES: &[&str] = &["TwilioStatusCallback"];

async fn read_body<B: RequestBody>(
    app: &App,
    ctx: &RequestContext,
    api: Option<Api>,
    parts: &Parts,
    body: B,
    form: bool,
) -> Result<Bytes, ApiError> {
    let result = collect_body(app, parts, body, form).await;
    if let (Err(e), Some(api)) = (&result, api) {
        app.engine.record_rejection(ctx, api, Step::Parse, e.detail.clone(), None);
    }
    result
}

async fn collect_body<B: RequestBody>(app: &App, parts: &Parts, body: B, form: bool) -> Result<Bytes, ApiError> {
    let wanted = if form { "application/x-www-form-urlencoded" } else { "application/json" };
    if !has_content_type(&parts.headers, wanted) {
        return Err(ApiError::unsupported_media_type(wanted));
    }
    let limit = app.max_body_bytes;
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let collected = tokio::time::timeout(app.request_timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::request_timeout())?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::payload_too_large(limit)),
        Err(e) => Err(ApiError::invalid_request(format!("could not read the request body: {e}"))),
    }
}

fn has_content_type(headers: &HeaderMap, wanted: &str) -> bool {
    let Some(v) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(wanted)
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
/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` hop outside the trusted ranges (each proxy appends who connected to it, so
/// only hops right of the first untrusted one were written by proxies). A hop that does not
/// parse ends the walk at the nearest trusted hop: skipping it would let a client-written
/// value further left win. IPv4-mapped IPv6 addresses are taken as IPv4.
fn client_ip(trusted: &[IpRange], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    let mut nearest = peer.to_canonical();
    if !is_trusted(nearest) {
        return nearest;
    }
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else { return nearest };
        for hop in text.rsplit(',') {
            let hop = hop.trim();
            let parsed = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()));
            let Some(ip) = parsed.map(|ip| ip.to_canonical()) else { return nearest };
            if !is_trusted(ip) {
                return ip;
            }
            nearest = ip;
        }
    }
    nearest
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

/// Headers every response carries.
fn decorate(resp: &mut Resp, trace_id: &str) {
    let h = resp.headers_mut();
    // Room for the headers below at once (a no-op for `app::bytes_response`'s answers): growing
    // the map one insert at a time reallocated it twice per answer (~2 % of a send's CPU).
    h.reserve(6);
    // Standard names (constants): a `&str` name was parsed and hashed as a custom one per insert.
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(CONTENT_SECURITY_POLICY) {
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    }
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let lb = ip("10.0.0.1");
        let trusted = ranges(&["10.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.1")]);
        assert_eq!(client_ip(&[], lb, &h), lb);
        assert_eq!(client_ip(&trusted, lb, &h), ip("203.0.113.9"));
        assert_eq!(client_ip(&trusted, lb, &headers(&[])), lb);
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(client_ip(&trusted, lb, &spoofed), ip("198.51.100.7"));
    }

    #[test]
    fn proxies_are_ranges_and_mapped_addresses_are_their_ipv4_selves() {
        let trusted = ranges(&["10.0.0.0/8", "2001:db8::/32"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 10.1.2.3, 2001:db8::5")]);
        assert_eq!(client_ip(&trusted, ip("10.9.9.9"), &h), ip("198.51.100.7"), "every hop of a range is trusted");
        assert_eq!(client_ip(&trusted, ip("::ffff:10.0.0.1"), &h), ip("198.51.100.7"), "a dual-stack socket's peer");
        let mapped = headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &mapped), ip("198.51.100.7"), "one bucket per client");
        assert_eq!(client_ip(&trusted, ip("::ffff:203.0.113.1"), &h), ip("203.0.113.1"), "an untrusted peer");
        let ported = headers(&[("x-forwarded-for", "198.51.100.7:5123, [2001:db8::9]:443")]);
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &ported), ip("198.51.100.7"));
    }

    #[test]
    fn an_unparseable_hop_never_lets_a_value_left_of_it_win() {
        let trusted = ranges(&["10.0.0.0/8"]);
        for xff in ["1.1.1.1, garbage, 10.0.0.2", "1.1.1.1, , 10.0.0.2", "1.1.1.1,unknown,10.0.0.2"] {
            let h = headers(&[("x-forwarded-for", xff)]);
            assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &h), ip("10.0.0.2"), "{xff}");
        }
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "nonsense")]);
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn ranges_parse_and_refuse_what_is_not_one() {
        assert_eq!(format!("{:?}", "10.1.2.3/8".parse::<IpRange>().unwrap()), "10.0.0.0/8");
        assert_eq!(format!("{:?}", "::ffff:10.0.0.0/104".parse::<IpRange>().unwrap()), "10.0.0.0/8");
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("host.example/8".parse::<IpRange>().is_err());
        assert!("0.0.0.0/0".parse::<IpRange>().unwrap().contains(ip("203.0.113.1")));
        assert!(!"0.0.0.0/0".parse::<IpRange>().unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn json_content_type_is_matched_on_its_essence() {
        let json = |h: &[(&str, &str)]| has_content_type(&headers(h), "application/json");
        assert!(json(&[("content-type", "application/json")]));
        assert!(json(&[("content-type", "Application/JSON; charset=utf-8")]));
        assert!(!json(&[("content-type", "text/plain")]));
        assert!(!json(&[("content-type", "application/jsonp")]));
        assert!(!json(&[]));
        let form = |h: &[(&str, &str)]| has_content_type(&headers(h), "application/x-www-form-urlencoded");
        assert!(form(&[("content-type", "application/x-www-form-urlencoded; charset=utf-8")]));
        assert!(!form(&[("content-type", "application/json")]));
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
