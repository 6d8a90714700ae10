//! `[smtp]`: E-mail over SMTP (`delivery.email_provider = "smtp"`).

use super::value::{Secret, check, section};

section! {
    /// E-mail over SMTP (`delivery.email_provider = "smtp"`).
    pub struct SmtpConfig {
        /// The SMTP server (a relay or the provider's submission host).
        host: String = "localhost".into(),
        /// 587 for STARTTLS submission, 465 for implicit TLS.
        port: u16 = 587,
        /// `starttls` (required), `tls` (implicit TLS, usually port 465) or `none` (plain text:
        /// only for a relay on the same host).
        tls: String = "starttls".into(),
        /// Empty: no authentication.
        username: String = String::new(),
        /// Prefer the environment: `OTPD_SMTP__PASSWORD`.
        password: Option<Secret> = None,
        /// The From header and envelope sender.
        from: String = "otpd <no-reply@localhost>".into(),
        /// Most messages per call (one pooled connection).
        max_batch: usize = 20,
        /// Calls (connections) in flight at once.
        concurrency: usize = 4,
    }
}

impl SmtpConfig {
    /// Checked when a route names `smtp`.
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, !self.host.is_empty(), || "smtp.host: required".into());
        check(errors, self.port != 0, || "smtp.port: must not be 0".into());
        check(errors, matches!(self.tls.as_str(), "starttls" | "tls" | "none"), || {
            format!("smtp.tls: must be \"starttls\", \"tls\" or \"none\", got {:?}", self.tls)
        });
        check(errors, self.from.parse::<lettre::message::Mailbox>().is_ok(), || {
            format!("smtp.from: not an address like \"App <no-reply@example.com>\": {:?}", self.from)
        });
        check(errors, self.username.is_empty() == self.password.is_none(), || {
            "smtp: set both smtp.username and smtp.password, or neither".into()
        });
        check(errors, (1..=1000).contains(&self.max_batch), || "smtp.max_batch: must be 1..=1000".into());
        check(errors, self.concurrency >= 1, || "smtp.concurrency: must be at least 1".into());
    }
}
