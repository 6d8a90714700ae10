//! Message templates: one per purpose (register, login, resend) and an e-mail subject, with
//! the app name and the code's remaining lifetime, plus an optional origin-bound last line.
//!
//! Placeholders: `{code}`, `{app_name}`, `{lifetime}` ("5 minutes", "1 minute") and
//! `{minutes}` ("5"); `{{` and `}}` are literal braces. Every body template must contain
//! `{code}`. Templates are parsed once, at start, so a typo is a configuration error rather
//! than a message with a hole in it.
//!
//! With an origin configured (`example.com`), SMS bodies end with the line
//! `@example.com #123456`, the format of origin-bound one-time codes that browsers' WebOTP API
//! and Android's SMS Retriever / User Consent read to fill the code in automatically. E-mail
//! bodies do not carry it.

use std::time::Duration;

use crate::ports::OutboundMessage;
use crate::rules::challenge::Purpose;
use crate::rules::clock::Timestamp;
use crate::rules::identifier::Channel;
use crate::rules::sms::{SmsSegments, segments};

pub const DEFAULT_REGISTER: &str =
    "Your {app_name} verification code is {code}. It expires in {lifetime}. Never share it.";
pub const DEFAULT_LOGIN: &str = "Your {app_name} login code is {code}. It expires in {lifetime}. Never share it.";
pub const DEFAULT_RESEND: &str =
    "Your new {app_name} code is {code}. It expires in {lifetime}. Earlier codes no longer work. Never share it.";
pub const DEFAULT_EMAIL_SUBJECT: &str = "Your {app_name} code: {code}";

/// Longest template accepted (an SMS body over 1 600 characters is refused by Twilio).
pub const MAX_TEMPLATE_LEN: usize = 1000;

/// Why a template or the origin was refused; the text names the template
/// (`template_login: must contain {code}`), as configuration errors print it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{name}: {problem}")]
    Template { name: String, problem: TemplateProblem },
    #[error("origin: {0:?} is not a host name like \"example.com\" (no scheme, no path)")]
    Origin(String),
}

/// What is wrong with one template's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateProblem {
    #[error("longer than {MAX_TEMPLATE_LEN} characters")]
    TooLong,
    #[error("unknown placeholder {{{0}}} (known: {{code}}, {{app_name}}, {{lifetime}}, {{minutes}})")]
    UnknownPlaceholder(String),
    #[error("a lone '}}' (write '}}}}' for a literal brace)")]
    LoneBrace,
    #[error("must contain {{code}}")]
    NoCode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Code,
    AppName,
    Lifetime,
    Minutes,
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; the error names the problem (unknown placeholder, unbalanced brace).
    pub fn parse(text: &str) -> Result<Template, TemplateProblem> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateProblem::TooLong);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let part = match name.as_str() {
                        "code" => Part::Code,
                        "app_name" => Part::AppName,
                        "lifetime" => Part::Lifetime,
                        "minutes" => Part::Minutes,
                        _ => return Err(TemplateProblem::UnknownPlaceholder(name)),
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                }
                '}' => return Err(TemplateProblem::LoneBrace),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    fn has_code(&self) -> bool {
        self.parts.contains(&Part::Code)
    }

    fn render_into(&self, out: &mut String, code: &str, app_name: &str, minutes: u64) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Code => out.push_str(code),
                Part::AppName => out.push_str(app_name),
                Part::Lifetime => {
                    out.push_str(&minutes.to_string());
                    out.push_str(if minutes == 1 { " minute" } else { " minutes" });
                }
                Part::Minutes => out.push_str(&minutes.to_string()),
            }
        }
    }
}

/// The texts of the templates, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateTexts {
    pub register: String,
    pub login: String,
    pub resend: String,
    pub email_subject: String,
}

impl Default for TemplateTexts {
    fn default() -> Self {
        TemplateTexts {
            register: DEFAULT_REGISTER.into(),
            login: DEFAULT_LOGIN.into(),
            resend: DEFAULT_RESEND.into(),
            email_subject: DEFAULT_EMAIL_SUBJECT.into(),
        }
    }
}

/// Every template a node renders, parsed.
#[derive(Clone, Debug)]
pub struct Templates {
    app_name: String,
    register: Template,
    login: Template,
    resend: Template,
    email_subject: Template,
    origin: Option<String>,
}

/// A message's subject and body.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

impl Templates {
    /// Parses and checks every template; the error names the template (`template_login: …`).
    pub fn new(app_name: &str, texts: &TemplateTexts, origin: Option<&str>) -> Result<Templates, TemplateError> {
        let origin = match origin.map(str::trim).filter(|o| !o.is_empty()) {
            Some(o) => Some(check_origin(o)?),
            None => None,
        };
        Ok(Templates {
            app_name: app_name.to_owned(),
            register: check_template("template_register", &texts.register, true)?,
            login: check_template("template_login", &texts.login, true)?,
            resend: check_template("template_resend", &texts.resend, true)?,
            email_subject: check_template("email_subject", &texts.email_subject, false)?,
            origin,
        })
    }

    /// The shipped templates, no origin line.
    pub fn defaults(app_name: &str) -> Templates {
        Templates::new(app_name, &TemplateTexts::default(), None).expect("the default templates parse")
    }

    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// Renders `message` as of `now` (the lifetime shown is what is left, rounded up to whole
    /// minutes, at least one).
    pub fn render(&self, message: &OutboundMessage, now: Timestamp) -> Rendered {
        let minutes = now.until(message.expires_at).as_secs().div_ceil(60).max(1);
        let code = message.code.expose();
        let template = match (message.resend, message.purpose) {
            (true, _) => &self.resend,
            (false, Purpose::Register) => &self.register,
            // Device-login nonces go back to the app and are never sent; kept total for safety.
            (false, Purpose::Login | Purpose::DeviceLogin) => &self.login,
        };
        let body = self.body(template, code, minutes, message.to.channel());
        let mut subject = String::new();
        if message.to.channel() == Channel::Email {
            self.email_subject.render_into(&mut subject, code, &self.app_name, minutes);
        }
        Rendered { subject, body }
    }
}

impl Templates {
    fn body(&self, template: &Template, code: &str, minutes: u64, channel: Channel) -> String {
        let mut body = String::with_capacity(160);
        template.render_into(&mut body, code, &self.app_name, minutes);
        if let (Some(origin), Channel::Sms) = (&self.origin, channel) {
            body.push_str("\n\n@");
            body.push_str(origin);
            body.push_str(" #");
            body.push_str(code);
        }
        body
    }

    /// The most segments each kind of SMS takes (`rules::sms`): its body rendered with a code
    /// of `code_length` characters (every code alphabet is GSM-7) and the whole `lifetime`, the
    /// longest it gets.
    pub fn sms_segments(&self, code_length: usize, lifetime: Duration) -> SmsSegments {
        let code = "0".repeat(code_length);
        let minutes = lifetime.as_secs().div_ceil(60).max(1);
        let count = |t: &Template| segments(&self.body(t, &code, minutes, Channel::Sms)).count;
        SmsSegments { register: count(&self.register), login: count(&self.login), resend: count(&self.resend) }
    }
}

/// Parses one template; a body (`needs_code`) must contain `{code}`. The error starts with
/// `name`.
pub fn check_template(name: &str, text: &str, needs_code: bool) -> Result<Template, TemplateError> {
    let named = |problem| TemplateError::Template { name: name.to_owned(), problem };
    let t = Template::parse(text).map_err(named)?;
    if needs_code && !t.has_code() { Err(named(TemplateProblem::NoCode)) } else { Ok(t) }
}

/// An origin for the WebOTP line: a host name (`example.com`, `login.example.co.uk`) with an
/// optional port, no scheme or path. Returns it lower-cased.
pub fn check_origin(origin: &str) -> Result<String, TemplateError> {
    let lower = origin.to_ascii_lowercase();
    let (host, port) = match lower.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (lower.as_str(), None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host_ok = host.len() <= 253 && host.split('.').all(label_ok);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok { Ok(lower) } else { Err(TemplateError::Origin(origin.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::code::{Alphabet, CodePolicy};
    use crate::rules::identifier::Identifier;
    use crate::rules::keys::IdentHash;
    use std::time::Duration;

    fn message(to: Identifier, purpose: Purpose, resend: bool) -> (OutboundMessage, String) {
        let code = CodePolicy::new(6, Alphabet::Numeric).unwrap().generate();
        let text = code.expose().to_owned();
        let m = OutboundMessage {
            to,
            purpose,
            resend,
            code,
            expires_at: Timestamp::from_millis(300_000),
            trace_id: "t".into(),
            ident_hash: IdentHash([1; 16]),
            via: None,
        };
        (m, text)
    }

    fn phone() -> Identifier {
        Identifier::Phone { e164: "+12025550123".into(), country_code: 1 }
    }

    #[test]
    fn each_purpose_has_its_text_with_app_name_and_lifetime() {
        let t = Templates::defaults("Acme");
        let now = Timestamp::from_millis(0);
        let (m, code) = message(phone(), Purpose::Register, false);
        let r = t.render(&m, now);
        assert_eq!(r.body, format!("Your Acme verification code is {code}. It expires in 5 minutes. Never share it."));
        assert!(r.subject.is_empty(), "SMS has no subject");
        let (m, code) = message(phone(), Purpose::Login, false);
        assert!(t.render(&m, now).body.starts_with(&format!("Your Acme login code is {code}.")));
        let (m, code) = message(phone(), Purpose::Login, true);
        let body = t.render(&m, Timestamp::from_millis(250_000)).body;
        assert!(body.starts_with(&format!("Your new Acme code is {code}. It expires in 1 minute.")), "{body}");
    }

    #[test]
    fn origin_line_is_the_last_line_of_sms_only() {
        let t = Templates::new("Acme", &TemplateTexts::default(), Some("Example.COM")).unwrap();
        let (m, code) = message(phone(), Purpose::Login, false);
        let body = t.render(&m, Timestamp::from_millis(0)).body;
        assert_eq!(body.lines().last().unwrap(), format!("@example.com #{code}"));
        assert!(body.contains("\n\n@example.com"), "an empty line before the origin line");
        let (m, code) = message(Identifier::Email("ada@example.org".into()), Purpose::Login, false);
        let r = t.render(&m, Timestamp::from_millis(0));
        assert!(!r.body.contains('@'), "{}", r.body);
        assert_eq!(r.subject, format!("Your Acme code: {code}"));
    }

    #[test]
    fn custom_templates_and_escapes() {
        let texts = TemplateTexts {
            login: "{{{app_name}}} {code} valid {minutes} min ({lifetime})".into(),
            ..TemplateTexts::default()
        };
        let t = Templates::new("X", &texts, None).unwrap();
        let (mut m, code) = message(phone(), Purpose::Login, false);
        m.expires_at = Timestamp::from_millis(0).plus(Duration::from_secs(120));
        assert_eq!(t.render(&m, Timestamp::from_millis(0)).body, format!("{{X}} {code} valid 2 min (2 minutes)"));
    }

    #[test]
    fn bad_templates_are_named() {
        let bad = |texts: TemplateTexts| Templates::new("X", &texts, None).unwrap_err().to_string();
        let e = bad(TemplateTexts { login: "no code here".into(), ..Default::default() });
        assert_eq!(e, "template_login: must contain {code}");
        let e = bad(TemplateTexts { register: "{code} {nope}".into(), ..Default::default() });
        assert!(e.starts_with("template_register: unknown placeholder {nope}"), "{e}");
        let e = bad(TemplateTexts { resend: "{code} }".into(), ..Default::default() });
        assert!(e.starts_with("template_resend: a lone '}'"), "{e}");
        for origin in ["https://example.com", "example.com/x", "exa mple.com", "-a.com", "a.com:0", "a..com"] {
            assert!(Templates::new("X", &TemplateTexts::default(), Some(origin)).is_err(), "{origin}");
        }
        assert!(Templates::new("X", &TemplateTexts::default(), Some("localhost:8443")).is_ok());
    }
}
