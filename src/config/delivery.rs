//! `[delivery]`: where codes go, and how the dispatcher gets them there.

use std::path::{Path, PathBuf};

use otpd_actors::actors::dispatch::DispatchConfig;
use otpd_actors::actors::dispatch::template::{self, Kind};
use otpd_actors::rules::backoff::Backoff;
use otpd_actors::rules::breaker::BreakerConfig;
use otpd_actors::rules::locale::Locale;

use super::locales;
use super::value::{Dur, check, section};

section! {
    /// Where codes go, and how the dispatcher gets them there.
    pub struct DeliveryConfig {
        /// SMS provider: `outbox` (development: JSON lines in a file), `twilio` or `webhook`.
        provider: String = "outbox".into(),
        /// Name in the messages ("Your <app_name> login code is …").
        app_name: String = "otpd".into(),
        /// Default: `<data_dir>/outbox.jsonl`.
        outbox_path: Option<PathBuf> = None,
        /// Messages accepted and not yet delivered (or given up) before sends are refused (503).
        queue_capacity: usize = DispatchConfig::DEFAULT.queue_capacity,
        /// SMS failover when the primary's circuit breaker is open (or a code it took is
        /// reported undelivered): `""` (none), or any SMS provider.
        secondary: String = String::new(),
        /// More providers of the SMS route after `secondary`, in order: typically the other
        /// channels, `["twilio_whatsapp", "twilio_voice"]`. A request's `channel` may start the
        /// route at one of them.
        fallback: Vec<String> = Vec::new(),
        /// E-mail provider: `outbox`, `smtp` or `webhook`.
        email_provider: String = "outbox".into(),
        /// E-mail failover: `""` (none), `smtp`, `webhook` or `outbox`.
        email_secondary: String = String::new(),
        /// A provider call carries at most this many messages (1 turns batching off)…
        batch_max_size: usize = DispatchConfig::DEFAULT.batch_max_size,
        /// … and leaves once its oldest message has waited this long.
        batch_max_age: Dur = Dur(DispatchConfig::DEFAULT.batch_max_age),
        /// Attempts per message, every provider together.
        max_attempts: u32 = DispatchConfig::DEFAULT.max_attempts,
        /// Ceiling of the first retry's delay (full jitter; doubles per attempt).
        backoff_base: Dur = Dur(Backoff::DEFAULT.base),
        /// Largest backoff ceiling (a provider's Retry-After may ask for more).
        backoff_max: Dur = Dur(Backoff::DEFAULT.max),
        /// Longest a provider call may take before it counts as a failure.
        send_timeout: Dur = Dur(DispatchConfig::DEFAULT.send_timeout),
        /// With a provider that reports delivery receipts (`twilio.status_callback_url`,
        /// `webhook.receipt_secret`): a message not reported delivered within this long is
        /// sent again through the next provider of its route (`0s`: only when reported
        /// undelivered or failed).
        receipt_timeout: Dur = Dur(DispatchConfig::DEFAULT.receipt_timeout),
        /// Consecutive failed calls that open a provider's circuit breaker.
        breaker_failures: u32 = BreakerConfig::DEFAULT.failures,
        /// How long an open breaker sends the provider's traffic elsewhere before a probe.
        breaker_open_for: Dur = Dur(BreakerConfig::DEFAULT.open_for),
        /// Host for the origin-bound last line of SMS (`@example.com #123456`, read by WebOTP
        /// and iOS AutoFill); empty: no such line.
        origin: String = String::new(),
        /// The Android app's SMS Retriever hash (11 characters of `[A-Za-z0-9+/]`), put last in
        /// every SMS (after the origin line's code); empty: none.
        android_app_hash: String = String::new(),
        /// Locale of messages when the request names none the templates have and the number's
        /// country does not choose one (a shipped locale or one of `locales_dir`).
        default_locale: String = "en".into(),
        /// Directory of `<tag>.toml` message files that add locales or override shipped ones
        /// (docs/USING.md); unset: the shipped locales only.
        locales_dir: Option<PathBuf> = None,
        /// English body of a registration code (placeholders: {code}, {app_name}, {lifetime},
        /// {minutes}); unset: the shipped text (`locales/en.toml`).
        template_register: Option<String> = None,
        /// English body of a login code; unset: the shipped text.
        template_login: Option<String> = None,
        /// English body of a resent code (either purpose); unset: the shipped text.
        template_resend: Option<String> = None,
        /// English subject of a code sent by e-mail; unset: the shipped text.
        email_subject: Option<String> = None,
    }
}

/// What `delivery.provider` accepts.
pub const SMS_PROVIDERS: &[&str] = &["outbox", "twilio", "twilio_whatsapp", "twilio_voice", "webhook"];
/// What `delivery.email_provider` accepts.
pub const EMAIL_PROVIDERS: &[&str] = &["outbox", "smtp", "webhook"];

impl DeliveryConfig {
    /// The `[delivery]` rules (the provider sections in use are checked by `Config`).
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        let choice = |errors: &mut Vec<String>, key: &str, value: &str, allowed: &[&str]| {
            check(errors, allowed.contains(&value), || {
                let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                format!("delivery.{key}: must be one of {}, got {value:?}", list.join(", "))
            });
        };
        choice(errors, "provider", &self.provider, SMS_PROVIDERS);
        if !self.secondary.is_empty() {
            choice(errors, "secondary", &self.secondary, SMS_PROVIDERS);
        }
        for name in &self.fallback {
            choice(errors, "fallback", name, SMS_PROVIDERS);
        }
        let route = self.sms_route();
        check(errors, (1..route.len()).all(|i| !route[..i].contains(&route[i])), || {
            format!("delivery: the SMS route names a provider twice: {route:?}")
        });
        check(errors, self.secondary != self.provider, || {
            "delivery.secondary: must differ from delivery.provider".into()
        });
        choice(errors, "email_provider", &self.email_provider, EMAIL_PROVIDERS);
        choice(errors, "email_secondary", &self.email_secondary, &["", "outbox", "smtp", "webhook"]);
        check(errors, self.email_secondary != self.email_provider, || {
            "delivery.email_secondary: must differ from delivery.email_provider".into()
        });
        check(errors, self.queue_capacity >= 1, || "delivery.queue_capacity: must be at least 1".into());
        check(errors, (1..=10_000).contains(&self.batch_max_size), || {
            format!("delivery.batch_max_size: must be 1..=10000, got {}", self.batch_max_size)
        });
        check(errors, (1..=20).contains(&self.max_attempts), || {
            format!("delivery.max_attempts: must be 1..=20, got {}", self.max_attempts)
        });
        check(errors, !self.backoff_base.0.is_zero(), || "delivery.backoff_base: must be more than zero".into());
        check(errors, self.backoff_max.0 >= self.backoff_base.0, || {
            "delivery.backoff_max: must be at least delivery.backoff_base".into()
        });
        check(errors, !self.send_timeout.0.is_zero(), || "delivery.send_timeout: must be more than zero".into());
        check(errors, self.breaker_failures >= 1, || "delivery.breaker_failures: must be at least 1".into());
        check(errors, !self.breaker_open_for.0.is_zero(), || {
            "delivery.breaker_open_for: must be more than zero".into()
        });
        let templates = [
            ("template_register", &self.template_register, Kind::Body),
            ("template_login", &self.template_login, Kind::Body),
            ("template_resend", &self.template_resend, Kind::Body),
            ("email_subject", &self.email_subject, Kind::Subject),
        ];
        for (name, text, kind) in templates {
            if let Some(text) = text
                && let Err(e) = template::check_template(name, text, kind)
            {
                errors.push(format!("delivery.{e}"));
            }
        }
        if let Err(e) = template::SmsLines::new(&self.origin, &self.android_app_hash) {
            errors.push(format!("delivery.{e}"));
        }
        check(errors, !self.app_name.trim().is_empty(), || "delivery.app_name: must not be empty".into());
        match (self.catalogue(), Locale::parse(&self.default_locale)) {
            (Err(problems), _) => errors.extend(problems),
            (Ok(_), Err(e)) => errors.push(format!("delivery.default_locale: {e}, got {:?}", self.default_locale)),
            (Ok(catalogue), Ok(default)) => check(errors, catalogue.iter().any(|(l, _)| *l == default), || {
                let tags: Vec<String> = catalogue.iter().map(|(l, _)| l.to_string()).collect();
                format!("delivery.default_locale: no templates for {default:?} (there are: {})", tags.join(", "))
            }),
        }
    }

    /// The catalogue of message texts: shipped, `locales_dir`, then the `template_*` keys.
    fn catalogue(&self) -> Result<Vec<(Locale, template::TemplateTexts)>, Vec<String>> {
        let english = locales::EnglishOverrides {
            register: self.template_register.as_deref(),
            login: self.template_login.as_deref(),
            resend: self.template_resend.as_deref(),
            email_subject: self.email_subject.as_deref(),
        };
        locales::load(self.locales_dir.as_deref(), &english)
    }

    /// The message templates of every locale, parsed.
    pub fn templates(&self) -> Result<template::Templates, template::TemplateError> {
        let catalogue = self.catalogue().map_err(|problems| template::TemplateError::Catalogue(problems.join("; ")))?;
        let default = Locale::parse(&self.default_locale)
            .map_err(|e| template::TemplateError::Catalogue(format!("default_locale: {e}")))?;
        let lines = template::SmsLines::new(&self.origin, &self.android_app_hash)?;
        template::Templates::new(&self.app_name, &catalogue, &default, lines)
    }

    /// The SMS route, primary first.
    pub fn sms_route(&self) -> Vec<&str> {
        let mut route = vec![self.provider.as_str()];
        route.extend([self.secondary.as_str()].into_iter().filter(|s| !s.is_empty()));
        route.extend(self.fallback.iter().map(String::as_str));
        route
    }

    /// Every provider some route names, once each.
    pub fn providers_in_use(&self) -> Vec<&str> {
        let mut used: Vec<&str> = Vec::new();
        let route = self.sms_route();
        for name in route.into_iter().chain([self.email_provider.as_str(), self.email_secondary.as_str()]) {
            if !name.is_empty() && !used.contains(&name) {
                used.push(name);
            }
        }
        used
    }

    /// The development outbox file: `outbox_path`, or `outbox.jsonl` in the data directory.
    pub fn outbox_path(&self, data_dir: &Path) -> PathBuf {
        self.outbox_path.clone().unwrap_or_else(|| data_dir.join("outbox.jsonl"))
    }

    /// The dispatcher's limits, retries and breakers.
    pub fn dispatch(&self) -> DispatchConfig {
        DispatchConfig {
            queue_capacity: self.queue_capacity,
            batch_max_size: self.batch_max_size,
            batch_max_age: self.batch_max_age.0,
            max_attempts: self.max_attempts,
            backoff: Backoff { base: self.backoff_base.0, max: self.backoff_max.0 },
            breaker: BreakerConfig { failures: self.breaker_failures, open_for: self.breaker_open_for.0 },
            send_timeout: self.send_timeout.0,
            receipt_timeout: self.receipt_timeout.0,
        }
    }
}
