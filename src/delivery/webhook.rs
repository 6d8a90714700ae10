//! A generic HTTP webhook: batches POSTed as JSON to an operator's own gateway.
//!
//! Request (`content-type: application/json`, `Authorization: Bearer <token>` when
//! `webhook.bearer_token` is set):
//!
//! ```json
//! {"messages": [{"id": "5f0c…", "channel": "sms", "to": "+12025550123", "subject": "",
//!                "body": "Your otpd login code is 123456. …", "purpose": "login", "resend": false,
//!                "expires_at": "2026-01-01T12:05:00.000Z", "trace_id": "…", "attempt": 1}]}
//! ```
//!
//! `id` is stable across retries and providers, so the gateway can drop duplicates.
//!
//! Answer: any 2xx accepts the whole batch, unless its body says otherwise per message:
//! `{"results": [{"id": "5f0c…", "status": "accepted" | "rejected" | "retry"}]}` (messages not
//! listed are accepted). 408, 425, 429 and 5xx are retryable (honouring `Retry-After`), as are
//! 401, 403 and 404 (the hook or its token is misconfigured: the breaker opens and a secondary
//! takes over); any other 4xx refuses the batch for good.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use otpd_actors::actors::dispatch::{Delivery, Provider, SendError, SendResult};
use serde::{Deserialize, Serialize};

use super::{SetupError, http_client, read_capped, retry_after, transport_error};
use crate::config::WebhookConfig;
use crate::http::wire::rfc3339;

pub struct Webhook {
    client: reqwest::Client,
    url: String,
    bearer: Option<String>,
    max_batch: usize,
    /// Whether the gateway signs delivery receipts (`webhook.receipt_secret`).
    receipts: bool,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).field("max_batch", &self.max_batch).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    messages: Vec<Item<'a>>,
}

#[derive(Serialize)]
struct Item<'a> {
    id: String,
    channel: &'a str,
    to: &'a str,
    subject: &'a str,
    body: &'a str,
    purpose: &'a str,
    resend: bool,
    expires_at: String,
    trace_id: &'a str,
    attempt: u32,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<ItemResult>,
}

#[derive(Deserialize)]
struct ItemResult {
    id: String,
    status: String,
}

impl Webhook {
    pub fn new(config: &WebhookConfig) -> Result<Webhook, SetupError> {
        Ok(Webhook {
            client: http_client()?,
            url: config.url.clone(),
            bearer: config.bearer_token.as_ref().map(|s| s.0.clone()),
            max_batch: config.max_batch.max(1),
            receipts: config.receipt_secret.is_some(),
        })
    }

    async fn post(&self, batch: &[Delivery]) -> Result<Vec<SendResult>, SendError> {
        let payload = Payload {
            messages: batch
                .iter()
                .map(|d| Item {
                    id: d.id.to_string(),
                    channel: d.message.to.channel().as_str(),
                    to: d.message.to.as_str(),
                    subject: &d.subject,
                    body: &d.body,
                    purpose: d.message.purpose.as_str(),
                    resend: d.message.resend,
                    expires_at: rfc3339(d.message.expires_at),
                    trace_id: &d.message.trace_id,
                    attempt: d.attempt,
                })
                .collect(),
        };
        let mut req = self.client.post(&self.url).json(&payload);
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| transport_error("webhook", &e))?;
        let status = resp.status();
        if !status.is_success() {
            let reason = format!("webhook: HTTP {}", status.as_u16());
            let retryable = matches!(status.as_u16(), 401 | 403 | 404 | 408 | 425 | 429) || status.is_server_error();
            return Err(if retryable {
                SendError::Retryable { retry_after: retry_after(resp.headers()), reason }
            } else {
                SendError::Permanent { reason }
            });
        }
        let body = read_capped(resp, 1024 * 1024).await;
        Ok(verdicts(&body, batch.iter().map(|d| d.id.to_string())))
    }
}

/// Per-message results of a 2xx answer: `{"results": [{"id", "status"}]}` where status is
/// `rejected` or `retry`; anything else (or no such document) accepts.
fn verdicts(body: &[u8], ids: impl Iterator<Item = String>) -> Vec<SendResult> {
    let verdicts: HashMap<String, String> = serde_json::from_slice::<Answer>(body)
        .map(|a| a.results.into_iter().map(|r| (r.id, r.status)).collect())
        .unwrap_or_default();
    ids.map(|id| match verdicts.get(&id).map(String::as_str) {
        Some("rejected") => Err(SendError::permanent("webhook: rejected by the gateway")),
        Some("retry") => Err(SendError::retryable("webhook: the gateway asked for a retry")),
        _ => Ok(()),
    })
    .collect()
}

#[async_trait]
impl Provider for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn receipts(&self) -> bool {
        self.receipts
    }

    async fn send(&self, batch: &[Delivery]) -> Vec<SendResult> {
        match self.post(batch).await {
            Ok(results) => results,
            Err(e) => vec![Err(e); batch.len()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2xx_answer_can_refuse_or_defer_single_messages() {
        let ids = || ["a", "b", "c", "d"].into_iter().map(String::from);
        let body = br#"{"results":[{"id":"b","status":"rejected"},{"id":"c","status":"retry"},{"id":"d","status":"accepted"}]}"#;
        let r = verdicts(body, ids());
        assert_eq!(r[0], Ok(()), "not listed: accepted");
        assert!(matches!(&r[1], Err(SendError::Permanent { .. })));
        assert!(matches!(&r[2], Err(SendError::Retryable { .. })));
        assert_eq!(r[3], Ok(()));
        assert!(verdicts(b"", ids()).iter().all(Result::is_ok), "an empty body accepts all");
        assert!(verdicts(b"not json", ids()).iter().all(Result::is_ok));
    }
}
