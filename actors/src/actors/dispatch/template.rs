//! Message templates: per locale, one body per purpose (register, login, resend) and an
//! e-mail subject, with the app name and the code's remaining lifetime, plus the lines the
//! phone platforms read an SMS's code from.
//!
//! Placeholders: `{code}`, `{app_name}`, `{lifetime}` (the locale's `lifetime_one` or
//! `lifetime_other`: "1 minute", "5 minutes") and `{minutes}` ("5"); `{{` and `}}` are
//! literal braces. Every body template must contain `{code}`; the two lifetime templates may
//! use only `{minutes}`. Templates are parsed once, at start, so a typo is a configuration
//! error rather than a message with a hole in it.
//!
//! # Locales
//!
//! A node holds one set of templates per locale ([`Locales`]: the catalogue the binary ships
//! in `locales/*.toml`, plus the operator's files) and renders each message in the locale the
//! engine chose for it (`rules::locale`: the request's `locale`, else the number's country,
//! else the default). Plural forms are kept simple: "1" takes `lifetime_one`, every other
//! count `lifetime_other`; a language whose plural depends on more than that (Arabic) words
//! both so that they read right for every count.
//!
//! # The last line of an SMS
//!
//! Two platforms read a code out of an SMS without the person typing it, and each wants its
//! marker at the end:
//!
//! * **WebOTP and iOS/Safari AutoFill** read *origin-bound one-time codes* (WICG, "Origin-bound
//!   one-time codes delivered via SMS"): the message's **last line** must start with
//!   `@host`, one space, `#code`; anything after the code that follows one more space is
//!   ignored ("trailing text in the last line is ignored", kept for future syntax), unless it
//!   starts with `@` (then it is an embedded origin).
//! * **Android's SMS Retriever** hands a message to the app whose 11-character **app hash** it
//!   contains (Google's current rules: at most 140 bytes, one code, the hash included; earlier
//!   versions of the page said the message must *end* with the hash).
//!
//! Both hold when the hash ends the origin line: `@example.com #123456 FA+9qCX9VSu`. The line
//! still starts with the host and the code, the hash is trailing text to WebOTP (it cannot
//! start with `@`: its alphabet is `[A-Za-z0-9+/]`), and it is the last thing in the message,
//! on the last line, for the SMS Retriever under its old and new rules. Put on a line of its
//! own, the hash would move the origin line off the last line and WebOTP would find no code.
//! Without an origin, the hash is the last line alone (Google's example). E-mail carries
//! neither.
//!
//! ```text
//! Your Acme login code is 123456. It expires in 5 minutes. Never share it.
//!
//! @example.com #123456 FA+9qCX9VSu
//! ```
//!
//! The SMS Retriever reads only messages of at most 140 bytes, that is one segment (160
//! GSM-7 characters, or 70 UTF-16 units in UCS-2). The segments each shipped locale takes,
//! with and without these lines, are in the catalogue's module doc (`otpd::config::locales`):
//! the GSM-7 locales fit in one with both lines, the UCS-2 ones do not, and an Android app
//! then needs the SMS User Consent API (which asks the person and needs no hash) instead.

use std::time::Duration;

use crate::ports::OutboundMessage;
use crate::rules::challenge::Purpose;
use crate::rules::clock::Timestamp;
use crate::rules::identifier::Channel;
use crate::rules::locale::{Locale, LocaleId, Locales, LocalesError};
use crate::rules::sms::{SmsSegments, segments};

pub const DEFAULT_REGISTER: &str =
    "Your {app_name} verification code is {code}. It expires in {lifetime}. Never share it.";
pub const DEFAULT_LOGIN: &str = "Your {app_name} login code is {code}. It expires in {lifetime}. Never share it.";
pub const DEFAULT_RESEND: &str =
    "Your new {app_name} code is {code}. It expires in {lifetime}. Earlier codes no longer work. Never share it.";
pub const DEFAULT_EMAIL_SUBJECT: &str = "Your {app_name} code: {code}";
pub const DEFAULT_LIFETIME_ONE: &str = "{minutes} minute";
pub const DEFAULT_LIFETIME_OTHER: &str = "{minutes} minutes";

/// Longest template accepted (an SMS body over 1 600 characters is refused by Twilio).
pub const MAX_TEMPLATE_LEN: usize = 1000;

/// Length of an Android SMS Retriever app hash.
pub const APP_HASH_LEN: usize = 11;

/// Why a template, the origin or the app hash was refused; the text names the template
/// (`template_login: must contain {code}`), as configuration errors print it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{name}: {problem}")]
    Template { name: String, problem: TemplateProblem },
    #[error("origin: {0:?} is not a host name like \"example.com\" (no scheme, no path)")]
    Origin(String),
    #[error(
        "android_app_hash: must be the {APP_HASH_LEN} characters (letters, digits, '+', '/') of the app's SMS Retriever hash"
    )]
    AppHash,
    #[error("default_locale: {0}")]
    Locales(#[from] LocalesError),
    /// The message catalogue could not be loaded (its files: what the configuration check
    /// reports, each naming its file and template).
    #[error("{0}")]
    Catalogue(String),
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
    #[error("may use only {{minutes}}, and must")]
    LifetimeOnlyMinutes,
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

/// What a template's placeholders stand for in one message.
struct Vars<'a> {
    code: &'a str,
    app_name: &'a str,
    minutes: u64,
    /// The locale's lifetime template for `minutes` (`lifetime_one` or `lifetime_other`).
    lifetime: &'a Template,
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

    /// A lifetime template uses `{minutes}` and no other placeholder.
    fn is_lifetime(&self) -> bool {
        self.parts.contains(&Part::Minutes) && self.parts.iter().all(|p| matches!(p, Part::Text(_) | Part::Minutes))
    }

    fn render_into(&self, out: &mut String, vars: &Vars<'_>) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Code => out.push_str(vars.code),
                Part::AppName => out.push_str(vars.app_name),
                Part::Lifetime => {
                    // A lifetime template holds only text and `{minutes}` (`check_template`).
                    let minutes_only = Vars { lifetime: &Template { parts: Vec::new() }, ..*vars };
                    vars.lifetime.render_into(out, &minutes_only);
                }
                Part::Minutes => out.push_str(&vars.minutes.to_string()),
            }
        }
    }
}

/// The texts of one locale's templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateTexts {
    pub register: String,
    pub login: String,
    pub resend: String,
    pub email_subject: String,
    /// `{lifetime}` when one minute is left ("{minutes} minute").
    pub lifetime_one: String,
    /// `{lifetime}` for any other count ("{minutes} minutes").
    pub lifetime_other: String,
}

impl Default for TemplateTexts {
    /// English.
    fn default() -> Self {
        TemplateTexts {
            register: DEFAULT_REGISTER.into(),
            login: DEFAULT_LOGIN.into(),
            resend: DEFAULT_RESEND.into(),
            email_subject: DEFAULT_EMAIL_SUBJECT.into(),
            lifetime_one: DEFAULT_LIFETIME_ONE.into(),
            lifetime_other: DEFAULT_LIFETIME_OTHER.into(),
        }
    }
}

/// What a template must be: a body needs `{code}`, a lifetime uses only `{minutes}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Body,
    Subject,
    Lifetime,
}

/// One locale's templates, parsed.
#[derive(Clone, Debug)]
struct LocaleTemplates {
    register: Template,
    login: Template,
    resend: Template,
    email_subject: Template,
    lifetime_one: Template,
    lifetime_other: Template,
}

impl LocaleTemplates {
    fn parse(name: &str, texts: &TemplateTexts) -> Result<LocaleTemplates, TemplateError> {
        let t = |field: &str, text: &str, kind| check_template(&format!("{name}{field}"), text, kind);
        Ok(LocaleTemplates {
            register: t("register", &texts.register, Kind::Body)?,
            login: t("login", &texts.login, Kind::Body)?,
            resend: t("resend", &texts.resend, Kind::Body)?,
            email_subject: t("email_subject", &texts.email_subject, Kind::Subject)?,
            lifetime_one: t("lifetime_one", &texts.lifetime_one, Kind::Lifetime)?,
            lifetime_other: t("lifetime_other", &texts.lifetime_other, Kind::Lifetime)?,
        })
    }

    fn body(&self, purpose: Purpose, resend: bool) -> &Template {
        match (resend, purpose) {
            (true, _) => &self.resend,
            (false, Purpose::Register) => &self.register,
            // Device-login nonces go back to the app and are never sent; kept total for safety.
            (false, Purpose::Login | Purpose::DeviceLogin) => &self.login,
        }
    }

    fn lifetime(&self, minutes: u64) -> &Template {
        if minutes == 1 { &self.lifetime_one } else { &self.lifetime_other }
    }
}

/// The lines an SMS ends with, for the platforms that read its code (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmsLines {
    /// Host of the origin-bound line (`@example.com #123456`), lower-cased.
    pub origin: Option<String>,
    /// The Android SMS Retriever app hash (11 characters), last in the message.
    pub app_hash: Option<String>,
}

impl SmsLines {
    /// Checks and normalises an origin and an app hash (either empty: none).
    pub fn new(origin: &str, app_hash: &str) -> Result<SmsLines, TemplateError> {
        let origin = match origin.trim() {
            "" => None,
            o => Some(check_origin(o)?),
        };
        let app_hash = match app_hash.trim() {
            "" => None,
            h => Some(check_app_hash(h)?.to_owned()),
        };
        Ok(SmsLines { origin, app_hash })
    }

    /// Appends the lines to `body`, an SMS carrying `code`.
    fn append(&self, body: &mut String, code: &str) {
        match (&self.origin, &self.app_hash) {
            (Some(origin), hash) => {
                body.push_str("\n\n@");
                body.push_str(origin);
                body.push_str(" #");
                body.push_str(code);
                if let Some(hash) = hash {
                    body.push(' ');
                    body.push_str(hash);
                }
            }
            (None, Some(hash)) => {
                body.push('\n');
                body.push_str(hash);
            }
            (None, None) => {}
        }
    }
}

/// Every template a node renders, parsed, in every locale it has.
#[derive(Clone, Debug)]
pub struct Templates {
    app_name: String,
    locales: Locales,
    /// One set per locale, in the order of `locales`.
    sets: Vec<LocaleTemplates>,
    lines: SmsLines,
}

/// A message's subject and body.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

impl Templates {
    /// Parses and checks every template of every locale of `catalogue`; an error names the
    /// locale and the template (`fr.login: …`). `default` must be one of the locales.
    pub fn new(
        app_name: &str,
        catalogue: &[(Locale, TemplateTexts)],
        default: &Locale,
        lines: SmsLines,
    ) -> Result<Templates, TemplateError> {
        let locales = Locales::new(catalogue.iter().map(|(l, _)| l.clone()).collect(), default)?;
        let sets = catalogue
            .iter()
            .map(|(locale, texts)| LocaleTemplates::parse(&format!("{locale}."), texts))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Templates { app_name: app_name.to_owned(), locales, sets, lines })
    }

    /// English alone, with `texts` and an origin line when `origin` is given.
    pub fn english(app_name: &str, texts: &TemplateTexts, origin: Option<&str>) -> Result<Templates, TemplateError> {
        let en = Locale::parse("en").expect("\"en\" is a tag");
        let lines = SmsLines::new(origin.unwrap_or(""), "")?;
        Templates::new(app_name, &[(en.clone(), texts.clone())], &en, lines)
    }

    /// The shipped English templates, no origin line.
    pub fn defaults(app_name: &str) -> Templates {
        Templates::english(app_name, &TemplateTexts::default(), None).expect("the default templates parse")
    }

    pub fn origin(&self) -> Option<&str> {
        self.lines.origin.as_deref()
    }

    /// The locales there are templates for, and the default.
    pub fn locales(&self) -> &Locales {
        &self.locales
    }

    /// Renders `message` as of `now` (the lifetime shown is what is left, rounded up to whole
    /// minutes, at least one), in the message's locale when there are templates for it (else
    /// as `Locales::choose` falls back).
    pub fn render(&self, message: &OutboundMessage, now: Timestamp) -> Rendered {
        let minutes = now.until(message.expires_at).as_secs().div_ceil(60).max(1);
        let code = message.code.expose();
        let set = &self.sets[self.locales.choose(message.locale.as_ref(), &message.to).0];
        let vars = Vars { code, app_name: &self.app_name, minutes, lifetime: set.lifetime(minutes) };
        let body = self.body(set.body(message.purpose, message.resend), &vars, message.to.channel());
        let mut subject = String::new();
        if message.to.channel() == Channel::Email {
            set.email_subject.render_into(&mut subject, &vars);
        }
        Rendered { subject, body }
    }

    fn body(&self, template: &Template, vars: &Vars<'_>, channel: Channel) -> String {
        let mut body = String::with_capacity(160);
        template.render_into(&mut body, vars);
        if channel == Channel::Sms {
            self.lines.append(&mut body, vars.code);
        }
        body
    }

    /// The SMS body of `purpose` (a resend when `resend`) in `locale`, with a code of
    /// `code_length` characters (every code alphabet is GSM-7) and `minutes` left.
    pub fn sms_body(
        &self,
        locale: LocaleId,
        purpose: Purpose,
        resend: bool,
        code_length: usize,
        minutes: u64,
    ) -> String {
        let set = &self.sets[locale.0];
        let code = "0".repeat(code_length);
        let vars = Vars { code: &code, app_name: &self.app_name, minutes, lifetime: set.lifetime(minutes) };
        self.body(set.body(purpose, resend), &vars, Channel::Sms)
    }

    /// The most segments each kind of SMS takes in each locale (`rules::sms`), in the order
    /// of [`Templates::locales`]: its body rendered with a code of `code_length` characters,
    /// with the whole `lifetime` and with one minute left (whichever plural form is longer).
    pub fn sms_segments(&self, code_length: usize, lifetime: Duration) -> Vec<SmsSegments> {
        let minutes = lifetime.as_secs().div_ceil(60).max(1);
        let count = |id, purpose, resend| {
            [minutes, 1].map(|m| segments(&self.sms_body(id, purpose, resend, code_length, m)).count).into_iter().max()
        };
        self.locales
            .tags()
            .map(|(id, _)| SmsSegments {
                register: count(id, Purpose::Register, false).unwrap_or(1),
                login: count(id, Purpose::Login, false).unwrap_or(1),
                resend: count(id, Purpose::Login, true).unwrap_or(1),
            })
            .collect()
    }
}

/// Parses one template of `kind`. The error starts with `name`.
pub fn check_template(name: &str, text: &str, kind: Kind) -> Result<Template, TemplateError> {
    let named = |problem| TemplateError::Template { name: name.to_owned(), problem };
    let t = Template::parse(text).map_err(named)?;
    match kind {
        Kind::Body if !t.has_code() => Err(named(TemplateProblem::NoCode)),
        Kind::Lifetime if !t.is_lifetime() => Err(named(TemplateProblem::LifetimeOnlyMinutes)),
        _ => Ok(t),
    }
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

/// An Android SMS Retriever app hash: 11 characters of the base64 alphabet (`[A-Za-z0-9+/]`;
/// Google computes it as the first 11 characters of the base64 of a SHA-256). Case matters.
pub fn check_app_hash(hash: &str) -> Result<&str, TemplateError> {
    let ok = hash.len() == APP_HASH_LEN && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok { Ok(hash) } else { Err(TemplateError::AppHash) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::code::{Alphabet, CodePolicy};
    use crate::rules::identifier::Identifier;
    use crate::rules::keys::IdentHash;
    use crate::rules::sms::{Encoding, Segments};
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
            locale: None,
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
        let t = Templates::english("Acme", &TemplateTexts::default(), Some("Example.COM")).unwrap();
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
        let t = Templates::english("X", &texts, None).unwrap();
        let (mut m, code) = message(phone(), Purpose::Login, false);
        m.expires_at = Timestamp::from_millis(0).plus(Duration::from_secs(120));
        assert_eq!(t.render(&m, Timestamp::from_millis(0)).body, format!("{{X}} {code} valid 2 min (2 minutes)"));
    }

    #[test]
    fn bad_templates_are_named() {
        let bad = |texts: TemplateTexts| Templates::english("X", &texts, None).unwrap_err().to_string();
        let e = bad(TemplateTexts { login: "no code here".into(), ..Default::default() });
        assert_eq!(e, "en.login: must contain {code}");
        let e = bad(TemplateTexts { register: "{code} {nope}".into(), ..Default::default() });
        assert!(e.starts_with("en.register: unknown placeholder {nope}"), "{e}");
        let e = bad(TemplateTexts { resend: "{code} }".into(), ..Default::default() });
        assert!(e.starts_with("en.resend: a lone '}'"), "{e}");
        for origin in ["https://example.com", "example.com/x", "exa mple.com", "-a.com", "a.com:0", "a..com"] {
            assert!(Templates::english("X", &TemplateTexts::default(), Some(origin)).is_err(), "{origin}");
        }
        assert!(Templates::english("X", &TemplateTexts::default(), Some("localhost:8443")).is_ok());
    }

    /// The parser of the WICG's "Origin-bound one-time codes delivered via SMS" (§ Parsing),
    /// step by step: the top-level host and the code of the message's last line, or `None`.
    fn parse_origin_bound(message: &str) -> Option<(String, String)> {
        let normalized = message.replace("\r\n", "\n").replace('\r', "\n");
        let line: Vec<char> = normalized.split('\n').next_back()?.chars().collect();
        let mut position = 0;
        let marked = |position: &mut usize, marker: char| -> Option<String> {
            if line.get(*position) != Some(&marker) {
                return None;
            }
            *position += 1;
            let start = *position;
            while line.get(*position).is_some_and(|c| !c.is_ascii_whitespace()) {
                *position += 1;
            }
            let token: String = line[start..*position].iter().collect();
            (!token.is_empty()).then_some(token)
        };
        let host = marked(&mut position, '@')?;
        if line.get(position) != Some(&' ') {
            return None;
        }
        position += 1;
        let code = marked(&mut position, '#')?;
        Some((host, code))
    }

    const HASH: &str = "FA+9qCX9VSu";

    fn with_lines(origin: &str, hash: &str) -> Templates {
        let en = Locale::parse("en").unwrap();
        let lines = SmsLines::new(origin, hash).unwrap();
        Templates::new("Acme", &[(en.clone(), TemplateTexts::default())], &en, lines).unwrap()
    }

    #[test]
    fn the_app_hash_ends_the_origin_line_which_webotp_still_parses() {
        let t = with_lines("login.example.com", HASH);
        for (purpose, resend) in [(Purpose::Register, false), (Purpose::Login, false), (Purpose::Login, true)] {
            let (m, code) = message(phone(), purpose, resend);
            let body = t.render(&m, Timestamp::from_millis(0)).body;
            // SMS Retriever: the 11-character hash is in the message, last, on the last line.
            let last = body.lines().last().unwrap();
            assert_eq!(last, format!("@login.example.com #{code} {HASH}"));
            assert!(body.ends_with(&format!(" {HASH}")), "{body}");
            assert_eq!(last.rsplit(' ').next().unwrap().len(), APP_HASH_LEN);
            assert!(segments(&body).count == 1 && segments(&body).units <= 160, "140 bytes at most: {body}");
            // WebOTP / AutoFill: the last line is still an origin-bound code; the hash is
            // trailing text, which the format ignores.
            assert_eq!(parse_origin_bound(&body), Some(("login.example.com".into(), code)), "{body}");
        }
        let (m, _) = message(Identifier::Email("ada@example.org".into()), Purpose::Login, false);
        let r = t.render(&m, Timestamp::from_millis(0));
        assert!(!r.body.contains(HASH) && !r.body.contains('@'), "e-mail carries neither line: {}", r.body);
    }

    #[test]
    fn without_an_origin_the_app_hash_is_the_last_line_alone() {
        let t = with_lines("", HASH);
        let (m, code) = message(phone(), Purpose::Login, false);
        let body = t.render(&m, Timestamp::from_millis(0)).body;
        assert_eq!(body.lines().last(), Some(HASH));
        assert!(body.starts_with(&format!("Your Acme login code is {code}.")), "{body}");
        assert_eq!(parse_origin_bound(&body), None, "no origin, no origin-bound code");
        let plain = with_lines("", "");
        let (m, _) = message(phone(), Purpose::Login, false);
        assert!(!plain.render(&m, Timestamp::from_millis(0)).body.contains('\n'), "no lines at all");
    }

    #[test]
    fn the_origin_bound_parser_follows_the_spec() {
        let ok = |m: &str| parse_origin_bound(m).map(|(h, c)| format!("{h} {c}"));
        assert_eq!(ok("747723 is your code.\n\n@example.com #747723").as_deref(), Some("example.com 747723"));
        assert_eq!(ok("x\n@example.com #747723 @ecommerce.example $future").as_deref(), Some("example.com 747723"));
        assert_eq!(ok("@example.com #747723\nFA+9qCX9VSu"), None, "a line after the origin line hides it");
        assert_eq!(ok("something @example.com #747723"), None);
        assert_eq!(ok("@example.com code #747723"), None);
        assert_eq!(ok("@example.com  #747723"), None, "exactly one space");
    }

    #[test]
    fn app_hashes_are_checked() {
        assert_eq!(check_app_hash(HASH), Ok(HASH));
        assert!(check_app_hash("abcdefghij0").is_ok());
        for bad in ["FA+9qCX9VS", "FA+9qCX9VSuX", "FA-9qCX9VSu", "FA+9qCX9VS=", "FA+9q X9VSu", "FA+9qCX9VSé"] {
            assert_eq!(check_app_hash(bad), Err(TemplateError::AppHash), "{bad:?}");
        }
        assert_eq!(
            SmsLines::new(" example.com ", " ").unwrap(),
            SmsLines { origin: Some("example.com".into()), app_hash: None }
        );
    }

    fn spanish() -> TemplateTexts {
        TemplateTexts {
            register: "Registro {app_name}: {code} ({lifetime})".into(),
            login: "Acceso {app_name}: {code} ({lifetime})".into(),
            resend: "Nueva {app_name}: {code} ({lifetime})".into(),
            email_subject: "Clave {app_name}: {code}".into(),
            lifetime_one: "{minutes} minuto".into(),
            lifetime_other: "{minutes} minutos".into(),
        }
    }

    fn en_es(default: &str) -> Templates {
        let [en, es] = ["en", "es"].map(|t| Locale::parse(t).unwrap());
        let catalogue = [(en, TemplateTexts::default()), (es, spanish())];
        Templates::new("Acme", &catalogue, &Locale::parse(default).unwrap(), SmsLines::default()).unwrap()
    }

    #[test]
    fn a_message_is_rendered_in_its_locale_with_its_plural_words() {
        let t = en_es("en");
        let now = Timestamp::from_millis(0);
        let (mut m, code) = message(phone(), Purpose::Login, false);
        m.locale = Some(Locale::parse("es-MX").unwrap());
        assert_eq!(t.render(&m, now).body, format!("Acceso Acme: {code} (5 minutos)"), "es-MX → es");
        assert_eq!(t.render(&m, Timestamp::from_millis(250_000)).body, format!("Acceso Acme: {code} (1 minuto)"));
        m.locale = Some(Locale::parse("it").unwrap());
        assert!(t.render(&m, now).body.starts_with("Your Acme login code"), "no Italian: the default");
        m.locale = None;
        m.to = Identifier::Phone { e164: "+34612345678".into(), country_code: 34 };
        assert_eq!(t.render(&m, now).body, format!("Acceso Acme: {code} (5 minutos)"), "+34, nothing asked: Spanish");
        let (mut m, code) = message(Identifier::Email("ana@example.es".into()), Purpose::Register, false);
        assert_eq!(en_es("es").render(&m, now).subject, format!("Clave Acme: {code}"), "e-mail: the default");
        m.locale = Some(Locale::parse("en").unwrap());
        assert_eq!(en_es("es").render(&m, now).subject, format!("Your Acme code: {code}"));
    }

    #[test]
    fn lifetime_templates_use_minutes_and_nothing_else() {
        for (text, ok) in
            [("{minutes} min", true), ("{minutes}", true), ("minutes", false), ("{code} {minutes}", false)]
        {
            let texts = TemplateTexts { lifetime_other: text.into(), ..TemplateTexts::default() };
            let r = Templates::english("X", &texts, None);
            assert_eq!(r.is_ok(), ok, "{text}: {:?}", r.err());
        }
        let texts = TemplateTexts { lifetime_one: "{lifetime}".into(), ..TemplateTexts::default() };
        let e = Templates::english("X", &texts, None).unwrap_err().to_string();
        assert_eq!(e, "en.lifetime_one: may use only {minutes}, and must");
        let [en, fr] = ["en", "fr"].map(|t| Locale::parse(t).unwrap());
        let e = Templates::new("X", &[(en, TemplateTexts::default())], &fr, SmsLines::default()).unwrap_err();
        assert!(matches!(e, TemplateError::Locales(_)), "the default must have templates: {e}");
    }

    #[test]
    fn segments_are_counted_per_locale() {
        let [en, hi] = ["en", "hi"].map(|t| Locale::parse(t).unwrap());
        let hindi = TemplateTexts {
            register: "{app_name} सत्यापन कोड: {code}। {lifetime} तक मान्य। इसे किसी से साझा न करें।".into(),
            login: "{app_name} लॉगिन कोड: {code}। {lifetime} तक मान्य। इसे किसी से साझा न करें।".into(),
            resend: "{app_name} का नया कोड: {code}। {lifetime} तक मान्य। पुराने कोड अब मान्य नहीं। इसे किसी से साझा न करें।"
                .into(),
            email_subject: "{app_name} कोड: {code}".into(),
            lifetime_one: "{minutes} मिनट".into(),
            lifetime_other: "{minutes} मिनट".into(),
        };
        let catalogue = [(en.clone(), TemplateTexts::default()), (hi, hindi)];
        let plain = Templates::new("Acme", &catalogue, &en, SmsLines::default()).unwrap();
        let lined = Templates::new("Acme", &catalogue, &en, SmsLines::new("example.com", HASH).unwrap()).unwrap();
        let five = Duration::from_secs(300);
        let login = plain.sms_body(LocaleId(1), Purpose::Login, false, 6, 5);
        assert_eq!(segments(&login), Segments { encoding: Encoding::Ucs2, units: 65, count: 1 }, "{login}");
        let per = plain.sms_segments(6, five);
        assert_eq!(per.len(), 2, "one entry per locale, in the catalogue's order");
        assert_eq!(per[0], SmsSegments { register: 1, login: 1, resend: 1 }, "English is GSM-7");
        assert_eq!(per[1], SmsSegments { register: 1, login: 1, resend: 2 }, "Hindi: UCS-2, 70 units a segment");
        let per = lined.sms_segments(6, five);
        assert_eq!(per[0], SmsSegments { register: 1, login: 1, resend: 1 }, "160 septets hold the lines");
        assert_eq!(per[1], SmsSegments { register: 2, login: 2, resend: 2 }, "the 34 units of the lines");
    }
}
