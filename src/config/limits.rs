//! `[limits]`: anti-abuse rate limits. `preset` sets every rule; each rule can be overridden in part,

use otpd_actors::rules::limits::{LimitPolicy, NumberPrefix, Preset, Rule};
use serde::Deserialize;

use super::otp::OtpConfig;
use super::value::{Dur, Shown, section};

section! {
    /// Anti-abuse rate limits. `preset` sets every rule; each rule can be overridden in part,
    /// e.g. `ip_send = { limit = 50, block = "1h" }`; `limit = 0` turns a rule off.
    pub struct LimitsConfig {
        /// `low`, `medium` or `high`.
        preset: Preset = Preset::Medium,
        /// `/v1/login` codes per identifier.
        identifier_login: RuleConfig = RuleConfig::default(),
        /// `/v1/register` codes per identifier.
        identifier_register: RuleConfig = RuleConfig::default(),
        /// `/v1/otp/resend` codes per identifier.
        identifier_resend: RuleConfig = RuleConfig::default(),
        /// Code checks per identifier.
        identifier_verify: RuleConfig = RuleConfig::default(),
        /// Codes sent per client IP (IPv6: per /64).
        ip_send: RuleConfig = RuleConfig::default(),
        /// Code checks per client IP (IPv6: per /64).
        ip_verify: RuleConfig = RuleConfig::default(),
        /// SMS per number prefix (the first `prefix_digits` digits).
        prefix_send: RuleConfig = RuleConfig::default(),
        /// SMS per country calling code.
        country_send: RuleConfig = RuleConfig::default(),
        /// Device-login challenges per device and client IP (a stranger's flood never locks
        /// the owner out elsewhere).
        device_challenge: RuleConfig = RuleConfig::default(),
        /// Device-login challenges per client IP (IPv6: per /64).
        ip_challenge: RuleConfig = RuleConfig::default(),
        /// Digits of an E.164 number, country code included, that make its prefix.
        prefix_digits: u8 = 7,
        /// SMS only to these country codes or number prefixes (`"+1"`, `"+44"`); empty: anywhere.
        sms_allow: Vec<String> = Vec::new(),
        /// Never SMS to these country codes or number prefixes (`"+1876"`); wins over `sms_allow`.
        sms_deny: Vec<String> = Vec::new(),
    }
}

/// Overrides of one rate-limit rule; what is left out comes from the preset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Events allowed per window; 0 turns the rule off.
    pub limit: Option<u32>,
    pub window: Option<Dur>,
    /// Once the limit is exceeded, refuse for at least this long ("0s": until the window ends).
    pub block: Option<Dur>,
}

impl RuleConfig {
    /// A preset's rule with the configured parts replaced.
    pub fn over(&self, preset: Rule) -> Rule {
        Rule {
            limit: self.limit.unwrap_or(preset.limit),
            window: self.window.map_or(preset.window, |d| d.0),
            block: self.block.map_or(preset.block, |d| d.0),
        }
    }
}

/// A rule as the presets page writes it: `100 / 10m, block 15m`, or `off`.
fn describe(rule: Rule) -> String {
    if !rule.is_on() {
        return "off".into();
    }
    let mut out = format!("{} / {}", rule.limit, humantime::format_duration(rule.window));
    if !rule.block.is_zero() {
        out.push_str(&format!(", block {}", humantime::format_duration(rule.block)));
    }
    out
}

impl super::value::Shown for RuleConfig {
    fn kind() -> String {
        "rule `{ limit, window, block }`".into()
    }
    fn shown(&self) -> String {
        "from `preset`".into()
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if !(2..=15).contains(&self.prefix_digits) {
            errors.push(format!("limits.prefix_digits: must be 2..=15, got {}", self.prefix_digits));
        }
        for (key, list) in [("sms_allow", &self.sms_allow), ("sms_deny", &self.sms_deny)] {
            for entry in list {
                if let Err(e) = NumberPrefix::parse(entry) {
                    errors.push(format!("limits.{key}: {e}"));
                }
            }
        }
        for (key, rule) in self.rules(&LimitPolicy::preset(self.preset)) {
            if rule.limit > 0 && rule.window.is_zero() {
                errors.push(format!("limits.{key}.window: must be set (more than zero) while the rule is on"));
            }
        }
    }

    /// Each configurable rule by its key: the preset's, with this section's overrides.
    fn rules(&self, preset: &LimitPolicy) -> [(&'static str, Rule); 10] {
        [
            ("identifier_login", self.identifier_login.over(preset.identifier_logins)),
            ("identifier_register", self.identifier_register.over(preset.identifier_registrations)),
            ("identifier_resend", self.identifier_resend.over(preset.identifier_resends)),
            ("identifier_verify", self.identifier_verify.over(preset.identifier_verifies)),
            ("ip_send", self.ip_send.over(preset.ip_sends)),
            ("ip_verify", self.ip_verify.over(preset.ip_verifies)),
            ("prefix_send", self.prefix_send.over(preset.prefix_sends)),
            ("country_send", self.country_send.over(preset.country_sends)),
            ("device_challenge", self.device_challenge.over(preset.device_challenges)),
            ("ip_challenge", self.ip_challenge.over(preset.ip_challenges)),
        ]
    }

    /// `docs/limits.md`: each rule of each preset, read from the presets themselves.
    pub fn presets_markdown() -> String {
        let presets = [Preset::Low, Preset::Medium, Preset::High].map(|p| (p, LimitPolicy::preset(p)));
        let defaults = LimitsConfig::default();
        let docs = LimitsConfig::reference();
        let mut out = String::from(
            "# Rate-limit presets\n\n<!-- Generated from the presets in actors/src/rules/limits.rs by \
             `OTPD_BLESS=1 cargo test --test it reference`; do not edit. -->\n\n\
             On top of the cooldown and the overall send cap of `[otp]`, every send and every code check \
             passes the rules of `[limits]`. Each rule is a count in a window that opens with its first event, \
             optionally with a block: once the limit is exceeded, refuse for at least that long. A refused \
             request counts nowhere. `limits.preset` picks every rule's default; each rule can be overridden \
             in part (`ip_send = { limit = 50, block = \"1h\" }`; `limit = 0` turns it off). Every \
             key is in [configuration.md](configuration.md#limits).\n\n",
        );
        out.push_str("| rule (`[limits]` key) | counts |");
        for (preset, _) in &presets {
            let name = preset.shown().trim_matches('"').to_owned();
            let default = if *preset == defaults.preset { " (default)" } else { "" };
            out.push_str(&format!(" `{name}`{default} |"));
        }
        out.push_str("\n| --- | --- | --- | --- | --- |\n");
        for (i, (key, _)) in defaults.rules(&LimitPolicy::off()).iter().enumerate() {
            let meaning = docs.iter().find(|d| d.key == *key).map_or("", |d| d.doc.as_str());
            out.push_str(&format!("| `{key}` | {meaning} |"));
            for (_, policy) in &presets {
                out.push_str(&format!(" {} |", describe(defaults.rules(policy)[i].1)));
            }
            out.push('\n');
        }
        let cap = Rule::per(OtpConfig::default().max_sends_per_window, OtpConfig::default().send_window.0);
        out.push_str(&format!(
            "\nThe same in every preset, from `[otp]`: a cooldown of {} per identifier and purpose \
             (`otp.resend_cooldown`), and {} codes per identifier, every purpose together \
             (`otp.max_sends_per_window`, `otp.send_window`).\n",
            humantime::format_duration(OtpConfig::default().resend_cooldown.0),
            describe(cap),
        ));
        out
    }

    /// The effective rules: `[otp]` gives the cooldown and the overall send cap, this section
    /// the preset and its overrides. Assumes a validated configuration.
    pub fn policy(&self, otp: &OtpConfig) -> LimitPolicy {
        let [login, register, resend, verify, ip_send, ip_verify, prefix, country, device_challenge, ip_challenge] =
            self.rules(&LimitPolicy::preset(self.preset)).map(|(_, rule)| rule);
        let prefixes = |list: &[String]| list.iter().filter_map(|p| NumberPrefix::parse(p).ok()).collect();
        LimitPolicy {
            resend_cooldown: otp.resend_cooldown.0,
            identifier_sends: Rule::per(otp.max_sends_per_window, otp.send_window.0),
            identifier_logins: login,
            identifier_registrations: register,
            identifier_resends: resend,
            identifier_verifies: verify,
            ip_sends: ip_send,
            ip_verifies: ip_verify,
            prefix_sends: prefix,
            country_sends: country,
            device_challenges: device_challenge,
            ip_challenges: ip_challenge,
            prefix_digits: self.prefix_digits,
            sms_allow: prefixes(&self.sms_allow),
            sms_deny: prefixes(&self.sms_deny),
        }
    }
}
