//! `[twilio]`: Twilio Programmable Messaging (`delivery.provider = "twilio"`).

use super::value::{Secret, check, http_url, section};

section! {
    /// Twilio Programmable Messaging (`delivery.provider = "twilio"`).
    pub struct TwilioConfig {
        /// Account SID (`AC…`, 34 characters); part of the API path.
        account_sid: String = String::new(),
        /// The account's auth token, or the secret of `api_key_sid`. Prefer the environment:
        /// `OTPD_TWILIO__AUTH_TOKEN`.
        auth_token: Option<Secret> = None,
        /// An API key (`SK…`) to authenticate with instead of the account SID.
        api_key_sid: String = String::new(),
        /// Sender: a Twilio number in E.164 or an alphanumeric sender id…
        from: String = String::new(),
        /// … or a Messaging Service (`MG…`) that picks the sender.
        messaging_service_sid: String = String::new(),
        /// API base URL (tests point it at a local server).
        base_url: String = "https://api.twilio.com".into(),
        /// Requests in flight at once (Twilio takes one message per request).
        concurrency: usize = 16,
        /// The public URL of this deployment's `POST /v1/delivery/twilio/status`, given to
        /// Twilio as each message's `StatusCallback` (with `?d=<delivery id>`); empty: no
        /// delivery receipts. Callbacks are checked against it with `X-Twilio-Signature`.
        status_callback_url: String = String::new(),
        /// The WhatsApp sender (E.164) of `twilio_whatsapp`; messages go `whatsapp:<number>`.
        whatsapp_from: String = String::new(),
        /// A pre-approved WhatsApp template (`HX…` Content SID) with the code as variable 1:
        /// business-initiated WhatsApp messages must use one. Empty: the SMS body is sent
        /// (only accepted inside a 24-hour session the user opened).
        whatsapp_content_sid: String = String::new(),
        /// The caller id (E.164) of `twilio_voice`, which calls and reads the code out.
        voice_from: String = String::new(),
    }
}

impl TwilioConfig {
    /// Checked when a route names `twilio`.
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, self.account_sid.len() == 34 && self.account_sid.starts_with("AC"), || {
            "twilio.account_sid: must be the account SID (\"AC\" and 32 more characters)".into()
        });
        check(errors, self.auth_token.as_ref().is_some_and(|s| !s.0.is_empty()), || {
            "twilio.auth_token: required (set OTPD_TWILIO__AUTH_TOKEN)".into()
        });
        let sid = &self.api_key_sid;
        check(errors, sid.is_empty() || (sid.len() == 34 && sid.starts_with("SK")), || {
            "twilio.api_key_sid: must be an API key SID (\"SK\" and 32 more characters)".into()
        });
        check(errors, self.from.is_empty() != self.messaging_service_sid.is_empty(), || {
            "twilio: set exactly one of twilio.from and twilio.messaging_service_sid".into()
        });
        let mg = &self.messaging_service_sid;
        check(errors, mg.is_empty() || (mg.len() == 34 && mg.starts_with("MG")), || {
            "twilio.messaging_service_sid: must be a Messaging Service SID (\"MG\" and 32 more characters)".into()
        });
        check(errors, http_url(&self.base_url), || format!("twilio.base_url: not an http(s) URL: {:?}", self.base_url));
        check(errors, self.concurrency >= 1, || "twilio.concurrency: must be at least 1".into());
        let callback = &self.status_callback_url;
        check(errors, callback.is_empty() || (http_url(callback) && !callback.contains('?')), || {
            format!("twilio.status_callback_url: an http(s) URL without a query; got {callback:?}")
        });
    }
}
