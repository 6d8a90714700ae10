//! The delivery-receipt callbacks: `POST /v1/delivery/twilio/status` (Twilio's
//! `StatusCallback`) and `POST /v1/delivery/webhook/status` (the webhook gateway's). Each
//! proves its origin with the provider's signature (`crate::delivery::receipts`); an unsigned
//! or mis-signed one is refused with 403 `invalid_callback_signature` and counted. An authentic report
//! about no watched message (unknown, expired, already final) is answered like any other: the
//! answer never tells a caller what otpd knows.

use hyper::StatusCode;
use otpd_actors::actors::dispatch::ReceiptStatus;
use serde::Deserialize;
use uuid::Uuid;

use super::app::{App, Call, Resp, bytes_response};
use super::problem::{ApiError, INVALID_CALLBACK_SIGNATURE};
use crate::delivery::receipts::{status_of, twilio_signed, webhook_signed};

/// How otpd checks the callbacks: set from `[twilio]` and `[webhook]`.
#[derive(Clone, Debug, Default)]
pub struct ReceiptKeys {
    /// `twilio.status_callback_url` and the auth token.
    pub twilio: Option<(String, String)>,
    /// `webhook.receipt_secret`.
    pub webhook: Option<String>,
}

impl ReceiptKeys {
    /// Registers the refusal counters of the configured callbacks at zero.
    pub fn register_metrics(&self) {
        let providers = [("twilio", self.twilio.is_some()), ("webhook", self.webhook.is_some())];
        for (provider, _) in providers.into_iter().filter(|(_, on)| *on) {
            for reason in ["missing", "mismatch"] {
                metrics::counter!(crate::metrics::CALLBACKS_REFUSED, "provider" => provider, "reason" => reason)
                    .increment(0);
            }
        }
    }
}

/// `POST /v1/delivery/twilio/status`.
pub(super) async fn twilio_status(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let Some((url, token)) = &app.receipt_keys.twilio else { return Err(ApiError::not_found()) };
    let params: Vec<(String, String)> = form_urlencoded::parse(&call.body).into_owned().collect();
    let query = call.parts.uri.query().unwrap_or("");
    // Twilio signs the URL it was given, query included: the setting and the query it called.
    let signed_url = if query.is_empty() { url.clone() } else { format!("{url}?{query}") };
    let header = call.parts.headers.get("x-twilio-signature").and_then(|v| v.to_str().ok());
    match header {
        None => return Err(refused("twilio", "missing")),
        Some(h) if !twilio_signed(token, &signed_url, &params, h) => return Err(refused("twilio", "mismatch")),
        Some(_) => {}
    }
    let delivery = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "d").and_then(|(_, v)| v.parse().ok());
    let value = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let status = value("MessageStatus").or(value("CallStatus")).and_then(status_of);
    let error = value("ErrorCode").and_then(|c| c.parse().ok());
    report(app, "twilio", delivery, status, error).await
}

/// A webhook gateway's receipt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    /// The `id` of the message in the batch otpd sent.
    pub id: String,
    /// `accepted`, `sent`, `delivered`, `undelivered` or `failed`.
    pub status: String,
    /// The gateway's or carrier's error code, when it has one.
    pub error_code: Option<u32>,
}

/// `POST /v1/delivery/webhook/status`.
pub(super) async fn webhook_status(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let Some(secret) = &app.receipt_keys.webhook else { return Err(ApiError::not_found()) };
    let header = call.parts.headers.get("x-otpd-signature").and_then(|v| v.to_str().ok());
    match header {
        None => return Err(refused("webhook", "missing")),
        Some(h) if !webhook_signed(secret, &call.body, h) => return Err(refused("webhook", "mismatch")),
        Some(_) => {}
    }
    let receipt: WebhookReceipt = call.json(app)?;
    report(app, "webhook", receipt.id.parse().ok(), status_of(&receipt.status), receipt.error_code).await
}

async fn report(
    app: &App,
    provider: &str,
    delivery: Option<Uuid>,
    status: Option<ReceiptStatus>,
    error: Option<u32>,
) -> Result<Resp, ApiError> {
    if let (Some(d), Some(status), Some(delivery)) = (delivery, status, &app.delivery) {
        delivery.receipt(provider, d, status, error).await;
    }
    Ok(bytes_response(StatusCode::NO_CONTENT, bytes::Bytes::new()))
}

fn refused(provider: &'static str, reason: &'static str) -> ApiError {
    metrics::counter!(crate::metrics::CALLBACKS_REFUSED, "provider" => provider, "reason" => reason).increment(1);
    ApiError::of(&INVALID_CALLBACK_SIGNATURE, format!("the callback's signature is {reason}"))
}
