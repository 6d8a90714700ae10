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
pub mod receipts;
pub mod smtp;
pub mod twilio;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use otpd_actors::actors::dispatch::template::TemplateError;
use otpd_actors::actors::dispatch::{DispatchHandle, ProviderSpec, RouteError, Routes, SendError};
use otpd_actors::ports::AuditLog;
use otpd_actors::rules::clock::Clock;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::{DeliveryConfig, SmtpConfig, TwilioConfig, WebhookConfig};

/// Why the delivery pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("outbox {path}: {error}")]
    Outbox { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Provider(#[from] SetupError),
    #[error("{0}")]
    Templates(#[from] TemplateError),
    #[error("{0}")]
    Routes(#[from] RouteError),
}

/// Why a provider could not be built from its section.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("twilio.auth_token is required")]
    TwilioAuthToken,
    #[error("smtp.from: {0}")]
    SmtpFrom(#[source] lettre::address::AddressError),
    #[error("smtp: {0}")]
    SmtpRelay(#[source] lettre::transport::smtp::Error),
    /// Configuration validation admits none; a `Config` built in code might.
    #[error("unknown provider {0:?}")]
    Unknown(String),
}

/// The provider sections a route may name.
#[derive(Clone, Copy)]
pub struct ProviderSections<'a> {
    pub twilio: &'a TwilioConfig,
    pub webhook: &'a WebhookConfig,
    pub smtp: &'a SmtpConfig,
}

/// Builds every provider some route names and the dispatcher over them. The dispatcher actor
/// itself is started (and supervised) by the engine. [`log_routes`] says what was built.
pub fn start(
    d: &DeliveryConfig,
    sections: ProviderSections<'_>,
    outbox_path: &Path,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditLog>,
) -> Result<DispatchHandle, DeliveryError> {
    let mut providers = Vec::new();
    for name in d.providers_in_use() {
        let spec = match name {
            "outbox" => {
                let outbox = outbox::Outbox::open(outbox_path, clock.clone())
                    .map_err(|error| DeliveryError::Outbox { path: outbox_path.to_owned(), error })?;
                ProviderSpec { provider: outbox, concurrency: 1 }
            }
            "twilio" | "twilio_whatsapp" | "twilio_voice" => {
                let kind = match name {
                    "twilio_whatsapp" => twilio::Kind::WhatsApp,
                    "twilio_voice" => twilio::Kind::Voice,
                    _ => twilio::Kind::Sms,
                };
                ProviderSpec {
                    provider: Arc::new(twilio::Twilio::of(sections.twilio, kind)?),
                    concurrency: sections.twilio.concurrency,
                }
            }
            "webhook" => ProviderSpec {
                provider: Arc::new(webhook::Webhook::new(sections.webhook)?),
                concurrency: sections.webhook.concurrency,
            },
            "smtp" => ProviderSpec {
                provider: Arc::new(smtp::Smtp::new(sections.smtp, d.send_timeout.0)?),
                concurrency: sections.smtp.concurrency,
            },
            other => return Err(SetupError::Unknown(other.to_owned()).into()),
        };
        providers.push(spec);
    }
    let route = |primary: &str, secondary: &str| {
        [primary, secondary].into_iter().filter(|n| !n.is_empty()).map(str::to_owned).collect::<Vec<_>>()
    };
    let sms = d.sms_route().into_iter().map(str::to_owned).collect();
    let routes = Routes { sms, email: route(&d.email_provider, &d.email_secondary) };
    let templates = d.templates()?;
    Ok(DispatchHandle::new(d.dispatch(), providers, &routes, templates, audit, clock)?)
}

/// Logs the routes, and where the development outbox writes when it is in use (after the
/// node's "listening" line, which tools wait for first).
pub fn log_routes(d: &DeliveryConfig, outbox_path: &Path) {
    let join = |a: &str, b: &str| if b.is_empty() { a.to_owned() } else { format!("{a} → {b}") };
    let sms = d.sms_route().join(" → ");
    if d.providers_in_use().contains(&"outbox") {
        tracing::info!(
            outbox = %outbox_path.display(),
            "development outbox: codes are appended to this file as JSON lines"
        );
    }
    tracing::info!(
        sms = %sms,
        email = %join(&d.email_provider, &d.email_secondary),
        "delivery routes (primary → failover)"
    );
}

/// An HTTP client for providers: rustls (no OpenSSL), bounded connect time, no redirects (a
/// redirect would resend credentials somewhere else).
pub(crate) fn http_client() -> Result<reqwest::Client, SetupError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("otpd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(SetupError::HttpClient)
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
