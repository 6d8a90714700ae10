//! The anti-abuse rules: which checks one request is subject to, and what they mean.
//!
//! Every limiter (implementations of the `ports::Limiter` port: the in-process one and the
//! Redis one) turns a request into the same list of [`Check`]s with [`plan`] and applies the
//! same semantics to it, so the two cannot drift apart; the conformance suite in `testkit`
//! runs against both.
//!
//! # Rules
//!
//! | rule (problem `code`) | counts | keyed by |
//! | --- | --- | --- |
//! | `resend_cooldown` | sends of one purpose | identifier + purpose |
//! | `identifier_send_limit` | sends, every purpose | identifier |
//! | `identifier_login_limit`, `identifier_register_limit` | `/v1/login`, `/v1/register` sends | identifier |
//! | `identifier_resend_limit` | `/v1/otp/resend` sends | identifier |
//! | `identifier_verify_limit` | code checks | identifier |
//! | `ip_send_limit`, `ip_verify_limit` | sends, code checks | client IP (IPv6: its /64) |
//! | `device_challenge_limit` | device-login challenges | device id + client IP (IPv6: its /64) |
//! | `ip_challenge_limit` | device-login challenges | client IP (IPv6: its /64) |
//! | `prefix_send_limit` | SMS sends | first `prefix_digits` digits of the number |
//! | `country_send_limit` | SMS sends | country calling code |
//! | `destination_not_allowed` | — | the SMS allow-list / deny-list |
//!
//! # Semantics of one decision
//!
//! ```text
//! destination lists ── refused ──► Deny(destination_not_allowed)       (nothing recorded)
//!        │ allowed
//!        ▼
//! check every rule:  cooldown live?                      → denies until it ends
//!                    window blocked?                     → denies until the block ends
//!                    window live and count ≥ limit?      → denies until the window ends, or,
//!                                                          with a block, blocks (and denies)
//!                                                          until max(now + block, window end)
//!        │ any denied: Deny(the rule with the longest wait)  (nothing counted)
//!        ▼ none denied
//! record every rule: cooldown ends at now + cooldown; a live window counts one more, else a
//!                    new window opens now with a count of one
//! ```
//!
//! A window opens with its first event (a fixed window per key, not a calendar slot), so a
//! burst at the end of one window and the start of the next can reach `2 × limit − 1` within
//! one window length; a `block` longer than the window is the answer where that matters.
//! "The longest wait" is reported because `Retry-After` must say when a retry can succeed,
//! not merely when the first of several refusals ends.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::rules::challenge::Purpose;
use crate::rules::clock::Timestamp;
use crate::rules::identifier::Identifier;
use crate::rules::keys::IdentHash;

/// What a request wants to do, as far as limits are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitAction {
    /// Issue a code (`/v1/register`, `/v1/login`).
    Send(Purpose),
    /// Issue a new code through `/v1/otp/resend` (shares the cooldown of `Send(purpose)`).
    Resend(Purpose),
    /// Check a code.
    Verify(Purpose),
    /// Issue a device-login challenge (`ident` is the device id scoped by the client address).
    Challenge,
}

impl LimitAction {
    /// Whether the action sends a code.
    pub fn sends(self) -> bool {
        matches!(self, LimitAction::Send(_) | LimitAction::Resend(_))
    }
}

/// Everything a limit can be keyed by.
#[derive(Clone, Copy, Debug)]
pub struct LimitRequest {
    pub action: LimitAction,
    pub ident: IdentHash,
    pub client_ip: Option<IpAddr>,
    /// The SMS recipient, for the number-prefix and country rules (`None` for e-mail).
    pub sms: Option<SmsTarget>,
    pub now: Timestamp,
}

/// An SMS recipient as the limits see it: its country calling code and the digits of its
/// E.164 number (for number-prefix rules and the destination lists). `Debug` shows only the
/// country: a phone number is personal data.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SmsTarget {
    country_code: u16,
    digits: u64,
    len: u8,
}

impl SmsTarget {
    /// The SMS target of a phone identifier; `None` for an e-mail address.
    pub fn of(identifier: &Identifier) -> Option<SmsTarget> {
        match identifier {
            Identifier::Phone { e164, country_code } => Self::from_e164(e164, *country_code),
            Identifier::Email(_) => None,
        }
    }

    /// From `+<digits>` (at most 15 digits, as E.164 allows).
    pub fn from_e164(e164: &str, country_code: u16) -> Option<SmsTarget> {
        let digits = e164.strip_prefix('+')?;
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(SmsTarget { country_code, digits: digits.parse().ok()?, len: digits.len() as u8 })
    }

    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// The first `n` digits of the number, country code included (all of them if `n` is
    /// longer than the number), as a value and a digit count.
    pub fn prefix(&self, n: u8) -> (u64, u8) {
        let n = n.min(self.len);
        (self.digits / 10u64.pow(u32::from(self.len - n)), n)
    }
}

impl fmt::Debug for SmsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmsTarget(+{}…)", self.country_code)
    }
}

/// Which rule refused a request. The name is part of the API (the problem `code`); none of
/// them depends on whether the identifier has an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitRule {
    /// A code was sent for this identifier and purpose too recently.
    ResendCooldown,
    /// Too many codes sent to this identifier within the window.
    IdentifierSends,
    /// Too many login codes sent to this identifier.
    IdentifierLogins,
    /// Too many registration codes sent to this identifier.
    IdentifierRegistrations,
    /// Too many resends to this identifier.
    IdentifierResends,
    /// Too many codes checked for this identifier.
    IdentifierVerifies,
    /// Too many codes sent on behalf of this client IP address (IPv6: its /64).
    IpSends,
    /// Too many codes checked from this client IP address (IPv6: its /64).
    IpVerifies,
    /// Too many codes sent to numbers sharing this number's prefix.
    PrefixSends,
    /// Too many codes sent to this country.
    CountrySends,
    /// Too many device-login challenges for this device from this client address.
    DeviceChallenges,
    /// Too many device-login challenges from this client address (IPv6: its /64).
    IpChallenges,
    /// SMS to this country or number range is not allowed (destination lists).
    DestinationNotAllowed,
}

impl LimitRule {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitRule::ResendCooldown => "resend_cooldown",
            LimitRule::IdentifierSends => "identifier_send_limit",
            LimitRule::IdentifierLogins => "identifier_login_limit",
            LimitRule::IdentifierRegistrations => "identifier_register_limit",
            LimitRule::IdentifierResends => "identifier_resend_limit",
            LimitRule::IdentifierVerifies => "identifier_verify_limit",
            LimitRule::IpSends => "ip_send_limit",
            LimitRule::IpVerifies => "ip_verify_limit",
            LimitRule::PrefixSends => "prefix_send_limit",
            LimitRule::CountrySends => "country_send_limit",
            LimitRule::DeviceChallenges => "device_challenge_limit",
            LimitRule::IpChallenges => "ip_challenge_limit",
            LimitRule::DestinationNotAllowed => "destination_not_allowed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { rule: LimitRule, retry_after: Duration },
}

/// A count within a window that opens with the first event; `limit == 0` turns the rule off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub limit: u32,
    pub window: Duration,
    /// Once the limit is exceeded, refuse for at least this long (zero: until the window ends).
    pub block: Duration,
}

impl Rule {
    pub const OFF: Rule = Rule { limit: 0, window: Duration::ZERO, block: Duration::ZERO };

    pub const fn per(limit: u32, window: Duration) -> Rule {
        Rule { limit, window, block: Duration::ZERO }
    }

    pub const fn blocking(self, block: Duration) -> Rule {
        Rule { block, ..self }
    }

    pub fn is_on(&self) -> bool {
        self.limit > 0 && !self.window.is_zero()
    }
}

/// A destination-list entry that is not a number prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a number prefix (write it like \"+44\" or \"+1876\")")]
pub struct BadNumberPrefix(pub String);

/// A leading part of an E.164 number (country code included), for the destination lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NumberPrefix {
    value: u64,
    len: u8,
}

impl NumberPrefix {
    /// Parses `+44`, `44`, `+1 876`: 1–15 digits, the first not zero.
    pub fn parse(text: &str) -> Result<NumberPrefix, BadNumberPrefix> {
        let digits: String = text.trim().trim_start_matches('+').chars().filter(|c| *c != ' ').collect();
        let ok =
            (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
        match ok {
            true => Ok(NumberPrefix { value: digits.parse().expect("checked digits"), len: digits.len() as u8 }),
            false => Err(BadNumberPrefix(text.to_owned())),
        }
    }

    pub fn matches(&self, target: &SmsTarget) -> bool {
        target.prefix(self.len) == (self.value, self.len)
    }
}

/// A preset: the defaults of every rule in [`LimitPolicy`] but the cooldown and the overall
/// per-identifier send cap, which are OTP rules ([`RESEND_COOLDOWN`], [`SEND_CAP`]; configured
/// in `[otp]`) and the same whatever the preset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Low,
    #[default]
    Medium,
    High,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Minimum time between two codes for one identifier and purpose, unless configured otherwise.
pub const RESEND_COOLDOWN: Duration = Duration::from_secs(30);

/// Codes per identifier, every purpose together, unless configured otherwise.
pub const SEND_CAP: Rule = Rule::per(5, Duration::from_secs(600));

/// Every rule a limiter enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Minimum time between two codes for one identifier and purpose (zero: off).
    pub resend_cooldown: Duration,
    /// Codes per identifier, every purpose together.
    pub identifier_sends: Rule,
    pub identifier_logins: Rule,
    pub identifier_registrations: Rule,
    pub identifier_resends: Rule,
    pub identifier_verifies: Rule,
    pub ip_sends: Rule,
    pub ip_verifies: Rule,
    pub prefix_sends: Rule,
    pub country_sends: Rule,
    /// Device-login challenges per device and client address.
    pub device_challenges: Rule,
    /// Device-login challenges per client address.
    pub ip_challenges: Rule,
    /// Digits of the E.164 number (country code included) that make its prefix.
    pub prefix_digits: u8,
    /// SMS only to numbers matching one of these (empty: everywhere).
    pub sms_allow: Vec<NumberPrefix>,
    /// Never SMS to numbers matching one of these (wins over `sms_allow`).
    pub sms_deny: Vec<NumberPrefix>,
}

/// The default preset with the default OTP rules.
impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            resend_cooldown: RESEND_COOLDOWN,
            identifier_sends: SEND_CAP,
            ..LimitPolicy::preset(Preset::Medium)
        }
    }
}

impl LimitPolicy {
    /// No rule at all: the starting point for tests that look at one rule.
    pub fn off() -> Self {
        LimitPolicy {
            resend_cooldown: Duration::ZERO,
            identifier_sends: Rule::OFF,
            identifier_logins: Rule::OFF,
            identifier_registrations: Rule::OFF,
            identifier_resends: Rule::OFF,
            identifier_verifies: Rule::OFF,
            ip_sends: Rule::OFF,
            ip_verifies: Rule::OFF,
            prefix_sends: Rule::OFF,
            country_sends: Rule::OFF,
            device_challenges: Rule::OFF,
            ip_challenges: Rule::OFF,
            prefix_digits: 7,
            sms_allow: Vec::new(),
            sms_deny: Vec::new(),
        }
    }

    /// The shipped presets (`docs/limits.md` is generated from them), with the OTP rules
    /// (cooldown, overall send cap) off: those come from `[otp]`, not from a preset. The
    /// country rule is off in every preset: any fixed number is either no protection for a
    /// small app or an outage for a large one in its home market; the destination lists and
    /// the prefix rule are the default defence against SMS pumping.
    pub fn preset(preset: Preset) -> Self {
        let base = LimitPolicy::off();
        match preset {
            Preset::Low => LimitPolicy {
                identifier_logins: Rule::per(20, HOUR),
                identifier_registrations: Rule::per(10, HOUR),
                identifier_resends: Rule::per(10, HOUR),
                identifier_verifies: Rule::per(100, HOUR),
                ip_sends: Rule::per(500, 10 * MINUTE),
                ip_verifies: Rule::per(1000, 10 * MINUTE),
                prefix_sends: Rule::per(1000, HOUR),
                device_challenges: Rule::per(60, 10 * MINUTE),
                ip_challenges: Rule::per(600, 10 * MINUTE),
                ..base
            },
            Preset::Medium => LimitPolicy {
                identifier_logins: Rule::per(10, HOUR),
                identifier_registrations: Rule::per(5, HOUR),
                identifier_resends: Rule::per(5, HOUR),
                identifier_verifies: Rule::per(60, HOUR),
                ip_sends: Rule::per(100, 10 * MINUTE).blocking(15 * MINUTE),
                ip_verifies: Rule::per(300, 10 * MINUTE).blocking(15 * MINUTE),
                prefix_sends: Rule::per(300, HOUR).blocking(HOUR),
                device_challenges: Rule::per(20, 10 * MINUTE),
                ip_challenges: Rule::per(120, 10 * MINUTE).blocking(15 * MINUTE),
                ..base
            },
            Preset::High => LimitPolicy {
                identifier_logins: Rule::per(3, HOUR),
                identifier_registrations: Rule::per(2, HOUR),
                identifier_resends: Rule::per(2, HOUR),
                identifier_verifies: Rule::per(5, HOUR),
                ip_sends: Rule::per(30, 10 * MINUTE).blocking(HOUR),
                ip_verifies: Rule::per(60, 10 * MINUTE).blocking(HOUR),
                prefix_sends: Rule::per(100, HOUR).blocking(6 * HOUR),
                device_challenges: Rule::per(10, 10 * MINUTE),
                ip_challenges: Rule::per(30, 10 * MINUTE).blocking(HOUR),
                ..base
            },
        }
    }

    fn destination_allowed(&self, target: &SmsTarget) -> bool {
        if self.sms_deny.iter().any(|p| p.matches(target)) {
            return false;
        }
        self.sms_allow.is_empty() || self.sms_allow.iter().any(|p| p.matches(target))
    }
}

/// A client address as limits count it: IPv4 as is (IPv4-mapped IPv6 included), IPv6 by its
/// /64, the block one subscriber is usually given, so rotating addresses inside it gains
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock(pub [u8; 16]);

impl IpBlock {
    pub fn of(ip: IpAddr) -> IpBlock {
        let mut bytes = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                bytes[0] = 4;
                bytes[1..5].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => return IpBlock::of(IpAddr::V4(v4)),
                None => {
                    bytes[0] = 6;
                    bytes[1..9].copy_from_slice(&v6.octets()[..8]);
                }
            },
        }
        IpBlock(bytes)
    }
}

/// What a counter or a cooldown is kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// One identifier and purpose (the cooldown).
    IdentPurpose(IdentHash, Purpose),
    Ident(IdentHash),
    Ip(IpBlock),
    /// A number prefix: its value and digit count.
    Prefix(u64, u8),
    Country(u16),
}

/// Which keys may be decided together: in Redis Cluster a decision spans one hash slot per
/// group it touches (see `src/limits/redis.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Identifier,
    Ip,
    Prefix,
    Country,
}

impl Subject {
    pub fn group(&self) -> Group {
        match self {
            Subject::IdentPurpose(..) | Subject::Ident(_) => Group::Identifier,
            Subject::Ip(_) => Group::Ip,
            Subject::Prefix(..) => Group::Prefix,
            Subject::Country(_) => Group::Country,
        }
    }
}

/// How a check decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Denies while a cooldown recorded earlier is running; records a new one.
    Cooldown(Duration),
    /// Denies at the limit (or while blocked); records one event.
    Window(Rule),
}

/// One rule applied to one subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    pub rule: LimitRule,
    pub subject: Subject,
    pub kind: CheckKind,
}

/// The checks `req` is subject to, in the order ties are broken; or an immediate decision
/// that needs no state (the destination lists).
pub fn plan(policy: &LimitPolicy, req: &LimitRequest) -> Result<Vec<Check>, Decision> {
    let mut checks = Vec::with_capacity(8);
    let ident = req.ident;
    let mut window = |rule: LimitRule, subject: Subject, spec: Rule| {
        if spec.is_on() {
            checks.push(Check { rule, subject, kind: CheckKind::Window(spec) });
        }
    };
    match req.action {
        LimitAction::Send(purpose) | LimitAction::Resend(purpose) => {
            if let Some(target) = &req.sms
                && !policy.destination_allowed(target)
            {
                return Err(Decision::Deny { rule: LimitRule::DestinationNotAllowed, retry_after: Duration::ZERO });
            }
            window(LimitRule::IdentifierSends, Subject::Ident(ident), policy.identifier_sends);
            match req.action {
                LimitAction::Resend(_) => {
                    window(LimitRule::IdentifierResends, Subject::Ident(ident), policy.identifier_resends)
                }
                _ if purpose == Purpose::Login => {
                    window(LimitRule::IdentifierLogins, Subject::Ident(ident), policy.identifier_logins)
                }
                _ => window(LimitRule::IdentifierRegistrations, Subject::Ident(ident), policy.identifier_registrations),
            }
            if let Some(ip) = req.client_ip {
                window(LimitRule::IpSends, Subject::Ip(IpBlock::of(ip)), policy.ip_sends);
            }
            if let Some(target) = &req.sms {
                let (value, len) = target.prefix(policy.prefix_digits);
                window(LimitRule::PrefixSends, Subject::Prefix(value, len), policy.prefix_sends);
                window(LimitRule::CountrySends, Subject::Country(target.country_code()), policy.country_sends);
            }
            if !policy.resend_cooldown.is_zero() {
                let cooldown = Check {
                    rule: LimitRule::ResendCooldown,
                    subject: Subject::IdentPurpose(ident, purpose),
                    kind: CheckKind::Cooldown(policy.resend_cooldown),
                };
                checks.insert(0, cooldown);
            }
        }
        LimitAction::Challenge => {
            window(LimitRule::DeviceChallenges, Subject::Ident(ident), policy.device_challenges);
            if let Some(ip) = req.client_ip {
                window(LimitRule::IpChallenges, Subject::Ip(IpBlock::of(ip)), policy.ip_challenges);
            }
        }
        LimitAction::Verify(_) => {
            window(LimitRule::IdentifierVerifies, Subject::Ident(ident), policy.identifier_verifies);
            if let Some(ip) = req.client_ip {
                window(LimitRule::IpVerifies, Subject::Ip(IpBlock::of(ip)), policy.ip_verifies);
            }
        }
    }
    Ok(checks)
}

/// Of several refusals, the one to report: the longest wait; on a tie, the earliest check.
pub fn strongest(denials: impl IntoIterator<Item = (LimitRule, Duration)>) -> Option<Decision> {
    let mut best: Option<(LimitRule, Duration)> = None;
    for (rule, wait) in denials {
        if best.is_none_or(|(_, w)| wait > w) {
            best = Some((rule, wait));
        }
    }
    best.map(|(rule, retry_after)| Decision::Deny { rule, retry_after })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::rules::clock::Timestamp;

    fn req(action: LimitAction, sms: Option<&str>) -> LimitRequest {
        LimitRequest {
            action,
            ident: IdentHash([1; 16]),
            client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            sms: sms.map(|n| SmsTarget::from_e164(n, if n.starts_with("+44") { 44 } else { 1 }).unwrap()),
            now: Timestamp::from_millis(0),
        }
    }

    fn rules(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().map(|c| c.rule.as_str()).collect()
    }

    #[test]
    fn a_login_send_is_checked_by_cooldown_identifier_ip_and_prefix_rules() {
        let p = LimitPolicy::default();
        let checks = plan(&p, &req(LimitAction::Send(Purpose::Login), Some("+12022001234"))).unwrap();
        assert_eq!(
            rules(&checks),
            [
                "resend_cooldown",
                "identifier_send_limit",
                "identifier_login_limit",
                "ip_send_limit",
                "prefix_send_limit"
            ]
        );
        assert_eq!(checks[4].subject, Subject::Prefix(1_202_200, 7));
        let resend = plan(&p, &req(LimitAction::Resend(Purpose::Register), None)).unwrap();
        assert_eq!(
            rules(&resend),
            ["resend_cooldown", "identifier_send_limit", "identifier_resend_limit", "ip_send_limit"]
        );
        assert_eq!(resend[0].subject, Subject::IdentPurpose(IdentHash([1; 16]), Purpose::Register));
        let verify = plan(&p, &req(LimitAction::Verify(Purpose::Login), Some("+12022001234"))).unwrap();
        assert_eq!(rules(&verify), ["identifier_verify_limit", "ip_verify_limit"]);
    }

    #[test]
    fn destination_lists_match_prefixes_and_deny_wins() {
        let p = LimitPolicy {
            sms_allow: vec![NumberPrefix::parse("+1").unwrap(), NumberPrefix::parse("44").unwrap()],
            sms_deny: vec![NumberPrefix::parse("+1 876").unwrap()],
            ..LimitPolicy::default()
        };
        let refused = Err(Decision::Deny { rule: LimitRule::DestinationNotAllowed, retry_after: Duration::ZERO });
        let send = |n: &str, cc: u16| {
            let mut r = req(LimitAction::Send(Purpose::Login), None);
            r.sms = SmsTarget::from_e164(n, cc);
            plan(&p, &r).map(|_| ())
        };
        assert_eq!(send("+12022001234", 1), Ok(()));
        assert_eq!(send("+447911123456", 44), Ok(()));
        assert_eq!(send("+18765550123", 1), refused);
        assert_eq!(send("+33612345678", 33), refused);
        assert!(NumberPrefix::parse("+0").is_err() && NumberPrefix::parse("").is_err());
        assert!(NumberPrefix::parse("+44x").is_err() && NumberPrefix::parse("1234567890123456").is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpBlock::of(a.into()), IpBlock::of(b.into()));
        assert_ne!(IpBlock::of(a.into()), IpBlock::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(IpBlock::of(mapped.into()), IpBlock::of(Ipv4Addr::new(192, 0, 2, 7).into()));
    }

    #[test]
    fn prefixes_cut_the_number_and_never_overflow() {
        let t = SmsTarget::from_e164("+447911123456", 44).unwrap();
        assert_eq!(t.prefix(4), (4479, 4));
        assert_eq!(t.prefix(15), (447_911_123_456, 12));
        assert!(format!("{t:?}").contains("+44") && !format!("{t:?}").contains("7911"));
        assert!(SmsTarget::from_e164("+1234567890123456", 1).is_none());
    }

    #[test]
    fn the_longest_wait_is_reported() {
        let d = strongest([
            (LimitRule::ResendCooldown, Duration::from_secs(20)),
            (LimitRule::IdentifierSends, Duration::from_secs(400)),
            (LimitRule::IpSends, Duration::from_secs(400)),
        ]);
        assert_eq!(d, Some(Decision::Deny { rule: LimitRule::IdentifierSends, retry_after: Duration::from_secs(400) }));
        assert_eq!(strongest([]), None);
    }
}
