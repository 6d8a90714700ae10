//! Delivery adapters: the providers behind the engine's dispatcher
//! ([`otpd_actors::actors::dispatch`]), and [`start`], which builds the pipeline from `[delivery]`.
//!
//! | provider | channel | batches | module |
//! | --- | --- | --- | --- |
//! | `outbox` | SMS and e-mail | yes (one write + flush per batch) | [`outbox`] |
//! | `twilio` | SMS | no (one REST call per message) | [`twilio`] |
//! | `webhook` | SMS and e-mail | yes (one JSON POST per batch) | [`webhook`] |
//! | `smtp` | e-mail | yes (one pooled connection per batch) | [`smtp`] |
//!
//! Adapters turn a provider's answer into [`SendError::Retryable`] (the provider failed: rate
//! limit, 5xx, timeout, lost connection, rejected credentials) or [`SendError::Permanent`] (the
//! message can never be delivered there). Their error reasons carry status and error codes
//! only: a provider's free text can echo the recipient, and credentials are never formatted.

pub mod outbox;
pub mod smtp;
pub mod twilio;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otpd_actors::actors::dispatch::{DispatchConfig, DispatchHandle, ProviderSpec, Routes, SendError};
use otpd_actors::ports::AuditLog;
use otpd_actors::rules::backoff::Backoff;
use otpd_actors::rules::breaker::BreakerConfig;
use otpd_actors::rules::clock::Clock;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::Config;

/// Why the delivery pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("outbox {path}: {error}")]
    Outbox { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

/// Builds every provider some route names and the dispatcher over them. The dispatcher actor
/// itself is started (and supervised) by the engine. [`log_routes`] says what was built.
pub fn start(
    config: &Config,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditLog>,
) -> Result<DispatchHandle, DeliveryError> {
    let d = &config.delivery;
    let mut providers = Vec::new();
    for name in config.providers_in_use() {
        let spec = match name {
            "outbox" => {
                let path = config.outbox_path();
                let outbox = outbox::Outbox::open(&path, clock.clone())
                    .map_err(|error| DeliveryError::Outbox { path: path.clone(), error })?;
                ProviderSpec { provider: outbox, concurrency: 1 }
            }
            "twilio" => ProviderSpec {
                provider: Arc::new(twilio::Twilio::new(&config.twilio).map_err(DeliveryError::Setup)?),
                concurrency: config.twilio.concurrency,
            },
            "webhook" => ProviderSpec {
                provider: Arc::new(webhook::Webhook::new(&config.webhook).map_err(DeliveryError::Setup)?),
                concurrency: config.webhook.concurrency,
            },
            "smtp" => ProviderSpec {
                provider: Arc::new(smtp::Smtp::new(&config.smtp, d.send_timeout.0).map_err(DeliveryError::Setup)?),
                concurrency: config.smtp.concurrency,
            },
            other => return Err(DeliveryError::Setup(format!("unknown provider {other:?}"))),
        };
        providers.push(spec);
    }
    let route = |primary: &str, secondary: &str| {
        [primary, secondary].into_iter().filter(|n| !n.is_empty()).map(str::to_owned).collect::<Vec<_>>()
    };
    let routes = Routes { sms: route(&d.provider, &d.secondary), email: route(&d.email_provider, &d.email_secondary) };
    let dispatch = DispatchConfig {
        queue_capacity: d.queue_capacity,
        batch_max_size: d.batch_max_size,
        batch_max_age: d.batch_max_age.0,
        max_attempts: d.max_attempts,
        backoff: Backoff { base: d.backoff_base.0, max: d.backoff_max.0 },
        breaker: BreakerConfig { failures: d.breaker_failures, open_for: d.breaker_open_for.0 },
        send_timeout: d.send_timeout.0,
    };
    let templates = config.templates().map_err(DeliveryError::Setup)?;
    DispatchHandle::new(dispatch, providers, &routes, templates, audit, clock)
        .map_err(|e| DeliveryError::Setup(e.to_string()))
}

/// Logs the routes, and where the development outbox writes when it is in use (after the
/// node's "listening" line, which tools wait for first).
pub fn log_routes(config: &Config) {
    let d = &config.delivery;
    let join = |a: &str, b: &str| if b.is_empty() { a.to_owned() } else { format!("{a} → {b}") };
    if config.providers_in_use().contains(&"outbox") {
        tracing::info!(
            outbox = %config.outbox_path().display(),
            "development outbox: codes are appended to this file as JSON lines"
        );
    }
    tracing::info!(
        sms = %join(&d.provider, &d.secondary),
        email = %join(&d.email_provider, &d.email_secondary),
        "delivery routes (primary → failover)"
    );
}

/// An HTTP client for providers: rustls (no OpenSSL), bounded connect time, no redirects (a
/// redirect would resend credentials somewhere else).
pub(crate) fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// A transport failure (no HTTP answer) as a retryable error, without the URL (it can hold an
/// account id) or anything else from the request.
pub(crate) fn transport_error(provider: &str, e: &reqwest::Error) -> SendError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the connection failed"
    };
    SendError::retryable(format!("{provider}: {what}"))
}

/// Reads at most `limit` bytes of a response body (error documents are small; a provider
/// cannot make us buffer megabytes).
pub(crate) async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: retry now");
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
