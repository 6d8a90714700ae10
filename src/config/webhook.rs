//! `[webhook]`: a generic HTTP webhook that receives batches as JSON (an operator's own gateway).

use super::value::{Secret, check, http_url, section};

section! {
    /// A generic HTTP webhook that receives batches as JSON (an operator's own gateway).
    pub struct WebhookConfig {
        /// Where batches are POSTed (`http://` or `https://`).
        url: String = String::new(),
        /// Sent as `Authorization: Bearer <token>` when set.
        bearer_token: Option<Secret> = None,
        /// Most messages per POST.
        max_batch: usize = 100,
        /// POSTs in flight at once.
        concurrency: usize = 4,
        /// Key of the HMAC-SHA256 (`X-Otpd-Signature: sha256=<hex>` of the body) the gateway
        /// signs its delivery receipts with (`POST /v1/delivery/webhook/status`); unset: no
        /// receipts.
        receipt_secret: Option<Secret> = None,
    }
}

impl WebhookConfig {
    /// Checked when a route names `webhook`.
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, http_url(&self.url), || format!("webhook.url: required, an http(s) URL; got {:?}", self.url));
        check(errors, (1..=10_000).contains(&self.max_batch), || "webhook.max_batch: must be 1..=10000".into());
        check(errors, self.concurrency >= 1, || "webhook.concurrency: must be at least 1".into());
    }
}
