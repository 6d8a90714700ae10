//! Delivery receipts: what a provider reports about a message after it took it, and how a
//! report proves it came from the provider.
//!
//! | provider | how it reports | proof |
//! | --- | --- | --- |
//! | Twilio | `StatusCallback`: a form `POST` per state change (`MessageSid`, `MessageStatus`, `ErrorCode`, …) to `twilio.status_callback_url` | `X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the auth token, of the URL followed by every form parameter's name and value, sorted by name |
//! | webhook | a JSON `POST` `{"id": "<delivery id>", "status": "delivered", "error_code": "…"}` | `X-Otpd-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body, keyed with `webhook.receipt_secret` |
//!
//! The signed URL is the one otpd gave Twilio (the setting), not one rebuilt from the request's
//! `Host`: behind a proxy the two differ, and a request's own headers prove nothing.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use otpd_actors::actors::dispatch::ReceiptStatus;

/// Twilio's signature of a callback to `url` with form parameters `params`.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(url.as_bytes());
    for (name, value) in sorted {
        ctx.update(name.as_bytes());
        ctx.update(value.as_bytes());
    }
    STANDARD.encode(ctx.sign().as_ref())
}

/// Whether `header` is Twilio's signature of the callback (compared in constant time).
pub fn twilio_signed(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let want = twilio_signature(auth_token, url, params);
    aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), header.trim().as_bytes()).is_ok()
}

/// The webhook receipt's signature header value of `body`.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `header` is the webhook receipt's signature of `body` (constant time).
pub fn webhook_signed(secret: &str, body: &[u8], header: &str) -> bool {
    let want = webhook_signature(secret, body);
    aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), header.trim().as_bytes()).is_ok()
}

/// A Twilio `MessageStatus` (or a webhook's `status`) as a receipt; `None` for a word that is
/// neither (ignored, not an error: Twilio adds states).
pub fn status_of(word: &str) -> Option<ReceiptStatus> {
    Some(match word {
        // Messages (SMS, WhatsApp).
        "accepted" | "queued" | "scheduled" | "sending" => ReceiptStatus::Accepted,
        "sent" => ReceiptStatus::Sent,
        "delivered" | "read" => ReceiptStatus::Delivered,
        "undelivered" => ReceiptStatus::Undelivered,
        "failed" | "canceled" => ReceiptStatus::Failed,
        // Calls: answered and read out, or not.
        "initiated" | "ringing" | "in-progress" => ReceiptStatus::Sent,
        "completed" => ReceiptStatus::Delivered,
        "busy" | "no-answer" => ReceiptStatus::Undelivered,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Twilio's documented example, its expected value computed independently with Python's
    /// `hmac` (`base64(hmac.new(b"12345", url + "".join(k + p[k] for k in sorted(p)), sha1))`).
    #[test]
    fn twilio_signatures_match_an_independent_computation() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let p = params(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
        ]);
        assert_eq!(twilio_signature("12345", url, &p), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(twilio_signed("12345", url, &p, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        assert!(!twilio_signed("12346", url, &p, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="), "another token");
        assert!(!twilio_signed("12345", "https://mycompany.com/myapp.php", &p, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        let mut changed = p.clone();
        changed[3].1 = "1235".into();
        assert!(!twilio_signed("12345", url, &changed, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="), "a changed value");
        assert!(!twilio_signed("12345", url, &p, ""), "no signature");
    }

    #[test]
    fn webhook_signatures_are_hmac_sha256_of_the_body() {
        // Python: "sha256=" + hmac.new(b"s3cret", b'{"id":"x"}', hashlib.sha256).hexdigest()
        let sig = webhook_signature("s3cret", br#"{"id":"x"}"#);
        assert_eq!(sig, "sha256=9f0beccf514841d21c56dba276089c2345c12d5d2deb19b4d22c873371e5e8b6");
        assert!(webhook_signed("s3cret", br#"{"id":"x"}"#, &sig));
        assert!(!webhook_signed("s3cret", br#"{"id":"y"}"#, &sig));
        assert!(!webhook_signed("other", br#"{"id":"x"}"#, &sig));
    }

    #[test]
    fn twilio_states_map_to_receipts() {
        assert_eq!(status_of("delivered"), Some(ReceiptStatus::Delivered));
        assert_eq!(status_of("undelivered"), Some(ReceiptStatus::Undelivered));
        assert_eq!(status_of("failed"), Some(ReceiptStatus::Failed));
        assert_eq!(status_of("sent"), Some(ReceiptStatus::Sent));
        assert_eq!(status_of("queued"), Some(ReceiptStatus::Accepted));
        assert_eq!(status_of("partially_delivered"), None);
    }
}
