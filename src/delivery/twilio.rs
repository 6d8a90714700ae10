//! Twilio Programmable Messaging over its REST API.
//!
//! One message per request: `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with HTTP basic auth (account SID, or an API key SID, and its secret) and a form body of
//! `To`, `From` or `MessagingServiceSid`, and `Body`. Twilio answers `201` with the message
//! resource, or an error document `{"code": 21211, "message": "…", "more_info": "…",
//! "status": 400}`.
//!
//! How answers map ([`classify`]):
//!
//! | answer | outcome | why |
//! | --- | --- | --- |
//! | 2xx | delivered (to Twilio) | |
//! | 429, 5xx; error 20429, 20500, 20503 | retryable, after `Retry-After` if given | Twilio is busy or failing |
//! | 401, 403, 404; errors 20003, 20404, 21212, 21606, 21659 | retryable | the account or sender is misconfigured: no message can pass, so it counts against the breaker and a secondary can take over |
//! | any other 4xx (21211 invalid `To`, 21610 unsubscribed, 21614 not a mobile, …) | permanent | this recipient cannot be reached this way |
//! | no answer (refused, reset, timeout) | retryable | |
//!
//! A reset or timeout after Twilio received the request can mean the SMS was sent anyway, so
//! delivery is at least once. The auth token never appears in `Debug`, logs or errors, and
//! Twilio's `message` text (which can quote the number) is not logged: errors carry the status,
//! the error code and the documentation link.

use std::fmt;

use async_trait::async_trait;
use otpd_actors::actors::dispatch::{Delivery, Provider, SendError, SendResult};
use otpd_actors::rules::identifier::Via;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::{SetupError, http_client, read_capped, retry_after, transport_error};
use crate::config::TwilioConfig;

/// What a Twilio provider sends: a text message, a WhatsApp message, or a voice call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sms,
    WhatsApp,
    Voice,
}

pub struct Twilio {
    kind: Kind,
    client: reqwest::Client,
    /// `Messages.json`, or `Calls.json` for voice.
    messages_url: String,
    /// `whatsapp_content_sid`.
    content_sid: Option<String>,
    user: String,
    secret: String,
    sender: Sender,
    /// `twilio.status_callback_url`: each message's `StatusCallback`, with `?d=<delivery id>`.
    status_callback: Option<String>,
}

enum Sender {
    From(String),
    Service(String),
}

impl fmt::Debug for Twilio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Twilio")
            .field("messages_url", &self.messages_url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Twilio's error document.
#[derive(Debug, Default, Deserialize)]
pub struct TwilioError {
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub more_info: Option<String>,
}

/// Error codes that mean "this account or sender cannot send", not "this recipient".
const ACCOUNT_ERRORS: &[u32] = &[20003, 20404, 21212, 21606, 21659];
/// Error codes that mean "busy, try later".
const BUSY_ERRORS: &[u32] = &[20429, 20500, 20503];

impl Twilio {
    pub fn new(config: &TwilioConfig) -> Result<Twilio, SetupError> {
        Twilio::of(config, Kind::Sms)
    }

    /// A provider of `kind`: WhatsApp sends from `whatsapp:<whatsapp_from>`, voice calls from
    /// `voice_from` through the Calls API.
    pub fn of(config: &TwilioConfig, kind: Kind) -> Result<Twilio, SetupError> {
        let secret = config.auth_token.as_ref().map(|s| s.0.clone()).ok_or(SetupError::TwilioAuthToken)?;
        let user = if config.api_key_sid.is_empty() { config.account_sid.clone() } else { config.api_key_sid.clone() };
        let sender = match kind {
            Kind::WhatsApp => Sender::From(format!("whatsapp:{}", config.whatsapp_from)),
            Kind::Voice => Sender::From(config.voice_from.clone()),
            Kind::Sms if config.messaging_service_sid.is_empty() => Sender::From(config.from.clone()),
            Kind::Sms => Sender::Service(config.messaging_service_sid.clone()),
        };
        let resource = if kind == Kind::Voice { "Calls" } else { "Messages" };
        Ok(Twilio {
            kind,
            client: http_client()?,
            messages_url: format!(
                "{}/2010-04-01/Accounts/{}/{resource}.json",
                config.base_url.trim_end_matches('/'),
                config.account_sid
            ),
            content_sid: Some(config.whatsapp_content_sid.clone()).filter(|s| !s.is_empty() && kind == Kind::WhatsApp),
            user,
            secret,
            sender,
            status_callback: Some(config.status_callback_url.clone()).filter(|u| !u.is_empty()),
        })
    }

    async fn send_one(&self, d: &Delivery) -> SendResult {
        let (sender_key, sender) = match &self.sender {
            Sender::From(n) => ("From", n),
            Sender::Service(s) => ("MessagingServiceSid", s),
        };
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            match self.kind {
                Kind::WhatsApp => form.append_pair("To", &format!("whatsapp:{}", d.message.to.as_str())),
                Kind::Sms | Kind::Voice => form.append_pair("To", d.message.to.as_str()),
            };
            form.append_pair(sender_key, sender);
            match (self.kind, &self.content_sid) {
                (Kind::Voice, _) => form.append_pair("Twiml", &twiml(d.message.code.expose())),
                (Kind::WhatsApp, Some(sid)) => form
                    .append_pair("ContentSid", sid)
                    .append_pair("ContentVariables", &serde_json::json!({ "1": d.message.code.expose() }).to_string()),
                _ => form.append_pair("Body", &d.body),
            };
            if let Some(url) = &self.status_callback {
                form.append_pair("StatusCallback", &format!("{url}?d={}", d.id));
            }
            form.finish()
        };
        let resp = self
            .client
            .post(&self.messages_url)
            .basic_auth(&self.user, Some(&self.secret))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
            .body(form)
            .send()
            .await
            .map_err(|e| transport_error("twilio", &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let wait = retry_after(resp.headers());
        let body = read_capped(resp, 64 * 1024).await;
        let error: TwilioError = serde_json::from_slice(&body).unwrap_or_default();
        Err(classify(status, &error, wait))
    }
}

/// The TwiML of a voice call that reads `code` out character by character, twice, with a
/// pause between (a code is digits or letters: nothing in it needs XML escaping, and it is
/// checked to be so).
pub fn twiml(code: &str) -> String {
    let spoken: Vec<String> = code.chars().filter(char::is_ascii_alphanumeric).map(String::from).collect();
    let spoken = spoken.join(", ");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Your verification code is: {spoken}.</Say>\
         <Pause length=\"1\"/><Say>Again: {spoken}.</Say></Response>"
    )
}

/// Maps a non-2xx answer to retryable or permanent (see the module doc).
pub fn classify(status: StatusCode, error: &TwilioError, retry_after: Option<std::time::Duration>) -> SendError {
    let mut reason = format!("twilio: HTTP {}", status.as_u16());
    if let Some(code) = error.code {
        reason.push_str(&format!(", error {code}"));
    }
    // The documentation link is safe to keep; Twilio's message text is not (it can quote the
    // recipient).
    if let Some(link) = error.more_info.as_deref().filter(|l| l.starts_with("https://www.twilio.com/docs/errors/")) {
        reason.push_str(&format!(" ({link})"));
    }
    let code = error.code.unwrap_or(0);
    let busy = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() || BUSY_ERRORS.contains(&code);
    let account = matches!(status.as_u16(), 401 | 403 | 404) || ACCOUNT_ERRORS.contains(&code);
    if busy {
        SendError::Retryable { retry_after, reason }
    } else if account {
        reason.push_str(" (account or sender misconfigured)");
        SendError::Retryable { retry_after, reason }
    } else {
        SendError::Permanent { reason }
    }
}

#[async_trait]
impl Provider for Twilio {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Sms => "twilio",
            Kind::WhatsApp => "twilio_whatsapp",
            Kind::Voice => "twilio_voice",
        }
    }

    fn via(&self) -> Via {
        match self.kind {
            Kind::Sms => Via::Sms,
            Kind::WhatsApp => Via::WhatsApp,
            Kind::Voice => Via::Voice,
        }
    }

    fn receipts(&self) -> bool {
        self.status_callback.is_some()
    }

    async fn send(&self, batch: &[Delivery]) -> Vec<SendResult> {
        let mut out = Vec::with_capacity(batch.len());
        for d in batch {
            out.push(self.send_one(d).await);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn err(json: &str) -> TwilioError {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn answers_map_to_retryable_or_permanent() {
        let invalid_to = err(
            r#"{"code":21211,"message":"The 'To' number +15005550001 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
        );
        let e = classify(StatusCode::BAD_REQUEST, &invalid_to, None);
        assert_eq!(e, SendError::permanent("twilio: HTTP 400, error 21211 (https://www.twilio.com/docs/errors/21211)"));
        assert!(!e.reason().contains("+1500"), "Twilio's message text (with the number) is not kept");

        let wait = Some(Duration::from_secs(3));
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &err(r#"{"code":20429,"message":"Too Many Requests"}"#), wait);
        assert_eq!(e, SendError::Retryable { retry_after: wait, reason: "twilio: HTTP 429, error 20429".into() });
        assert!(classify(StatusCode::SERVICE_UNAVAILABLE, &TwilioError::default(), None).is_retryable());
        assert!(classify(StatusCode::INTERNAL_SERVER_ERROR, &TwilioError::default(), None).is_retryable());

        let auth = classify(StatusCode::UNAUTHORIZED, &err(r#"{"code":20003,"message":"Authenticate"}"#), None);
        assert!(auth.is_retryable() && auth.reason().ends_with("(account or sender misconfigured)"), "{auth:?}");
        assert!(classify(StatusCode::BAD_REQUEST, &err(r#"{"code":21606}"#), None).is_retryable(), "bad From");
        assert!(!classify(StatusCode::BAD_REQUEST, &err(r#"{"code":21610}"#), None).is_retryable(), "unsubscribed");
        assert!(!classify(StatusCode::BAD_REQUEST, &TwilioError::default(), None).is_retryable());
        let odd = classify(StatusCode::BAD_REQUEST, &err(r#"{"code":1,"more_info":"http://evil/+15551234567"}"#), None);
        assert_eq!(odd.reason(), "twilio: HTTP 400, error 1", "only Twilio's own documentation links are kept");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let config = TwilioConfig {
            account_sid: format!("AC{}", "0".repeat(32)),
            auth_token: Some(crate::config::Secret("tok-very-secret".into())),
            from: "+15005550006".into(),
            ..TwilioConfig::default()
        };
        let t = Twilio::new(&config).unwrap();
        assert!(!format!("{t:?}").contains("tok-very-secret"));
    }
}
