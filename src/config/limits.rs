//! `[limits]`: anti-abuse rate limits. `preset` sets every rule; each rule can be overridden in part,

use std::collections::BTreeMap;
use std::time::Duration;

use otpd_actors::rules::code::{Alphabet, CodePolicy};
use otpd_actors::rules::limits::{
    CONVERSION_GUARD, ConversionGuard, GuardMode, GuessBudget, IPV6_SEND_PREFIX, LimitPolicy, NumberPrefix, Preset,
    Rule,
};
use otpd_actors::rules::sms::{self, DEFAULT_DAILY_BUDGET, MONEY_UNITS, Money, SpendPolicy, format_money};
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
        /// Failed code checks per identifier, across codes and purposes, with blocks that
        /// double (`docs/limits.md`); `first_block = "0s"` turns it off.
        identifier_guess: GuessConfig = GuessConfig::default(),
        /// Codes sent per client IP (IPv6: per `ipv6_send_prefix`, a /56 by default).
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
        /// IPv6 prefix length that `ip_send` counts by (32-64): a home usually gets a /56, so
        /// a rented /48 is 256 send buckets, not 65,536. Code checks count by /64.
        ipv6_send_prefix: u8 = IPV6_SEND_PREFIX,
        /// SMS only to these country codes or number prefixes (`"+1"`, `"+44"`); empty: anywhere.
        sms_allow: Vec<String> = Vec::new(),
        /// Never SMS to these country codes or number prefixes (`"+1876"`); wins over `sms_allow`.
        sms_deny: Vec<String> = Vec::new(),
        /// What SMS may cost per UTC day, in the currency of the price list (USD in the shipped
        /// one): `{ daily, country_daily, countries, prices, default_price }`, each optional;
        /// a send that would overspend is refused with 503 `sms_budget_exhausted` until the day
        /// ends (`docs/limits.md`). `daily = 0` turns the total budget off.
        sms_budget: SmsBudgetConfig = SmsBudgetConfig::default(),
        /// The conversion guard of SMS destinations (`docs/limits.md`): `{ mode, window,
        /// prefix_floor, country_floor, min_conversion, throttle_every, collapse, history }`,
        /// each optional; `mode` is `off`, `record`, `throttle` or `block`. Operators pin or
        /// lift one destination with `/v1/admin/destinations`.
        conversion_guard: ConversionGuardConfig = ConversionGuardConfig::default(),
    }
}

/// `limits.conversion_guard`; what is left out comes from the shipped guard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionGuardConfig {
    pub mode: Option<GuardMode>,
    pub window: Option<Dur>,
    /// Sends to a number prefix before it is judged.
    pub prefix_floor: Option<u32>,
    /// Sends to a country before it is judged.
    pub country_floor: Option<u32>,
    /// The least share of codes verified, in percent (1-100).
    pub min_conversion: Option<u32>,
    /// A throttled destination's one send per this long.
    pub throttle_every: Option<Dur>,
    /// Tripped too below this share (percent) of the destination's own baseline (0: off).
    pub collapse: Option<u32>,
    /// How long a destination's baseline and pin outlive its last window.
    pub history: Option<Dur>,
}

impl ConversionGuardConfig {
    pub fn guard(&self) -> ConversionGuard {
        let d = CONVERSION_GUARD;
        ConversionGuard {
            mode: self.mode.unwrap_or(d.mode),
            window: self.window.map_or(d.window, |w| w.0),
            prefix_floor: self.prefix_floor.unwrap_or(d.prefix_floor),
            country_floor: self.country_floor.unwrap_or(d.country_floor),
            min_conversion: self.min_conversion.unwrap_or(d.min_conversion),
            throttle_every: self.throttle_every.map_or(d.throttle_every, |t| t.0),
            collapse: self.collapse.unwrap_or(d.collapse),
            history: self.history.map_or(d.history, |h| h.0),
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        let g = self.guard();
        if g.mode != GuardMode::Off {
            check_guard(errors, !g.window.is_zero(), "window: must be more than zero");
            check_guard(errors, (1..=100).contains(&g.min_conversion), "min_conversion: must be 1-100 (percent)");
            check_guard(errors, g.collapse <= 100, "collapse: must be 0-100 (percent of the baseline)");
            check_guard(
                errors,
                g.prefix_floor > 0 && g.country_floor > 0,
                "prefix_floor, country_floor: must be 1 or more",
            );
            check_guard(
                errors,
                g.mode != GuardMode::Throttle || !g.throttle_every.is_zero(),
                "throttle_every: must be more than zero in mode throttle",
            );
        }
    }
}

fn check_guard(errors: &mut Vec<String>, ok: bool, what: &str) {
    if !ok {
        errors.push(format!("limits.conversion_guard.{what}"));
    }
}

impl super::value::Shown for ConversionGuardConfig {
    fn kind() -> String {
        "conversion guard `{ mode, window, prefix_floor, country_floor, min_conversion, throttle_every, collapse, \
         history }`"
            .into()
    }
    fn shown(&self) -> String {
        let g = CONVERSION_GUARD;
        format!(
            "{{ mode = \"throttle\", window = \"{}\", prefix_floor = {}, country_floor = {}, min_conversion = {}, \
             throttle_every = \"{}\", collapse = {}, history = \"{}\" }}",
            humantime::format_duration(g.window),
            g.prefix_floor,
            g.country_floor,
            g.min_conversion,
            humantime::format_duration(g.throttle_every),
            g.collapse,
            humantime::format_duration(g.history)
        )
    }
}

/// `limits.sms_budget`: amounts in currency (decimals allowed); what is left out has its default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsBudgetConfig {
    /// Every SMS together per UTC day, across all nodes (default 100; 0: off).
    pub daily: Option<f64>,
    /// Each country per UTC day, unless `countries` names it (default 0: off).
    pub country_daily: Option<f64>,
    /// Per-country daily budgets by calling code: `{ "44" = 20, "1" = 50 }`.
    #[serde(default)]
    pub countries: BTreeMap<String, f64>,
    /// Price of one segment by calling code, over the shipped table: `{ "44" = 0.035 }`.
    #[serde(default)]
    pub prices: BTreeMap<String, f64>,
    /// Price of one segment to a country neither table names (default 0.10).
    pub default_price: Option<f64>,
}

impl super::value::Shown for SmsBudgetConfig {
    fn kind() -> String {
        "spend budget `{ daily, country_daily, countries, prices, default_price }`".into()
    }
    fn shown(&self) -> String {
        format!(
            "{{ daily = {}, default_price = {} }}",
            format_money(DEFAULT_DAILY_BUDGET),
            format_money(sms::DEFAULT_PRICE)
        )
    }
}

impl SmsBudgetConfig {
    /// The policy; assumes [`SmsBudgetConfig::validate`] found nothing.
    pub fn policy(&self) -> SpendPolicy {
        let table = |map: &BTreeMap<String, f64>| -> Vec<(u16, Money)> {
            map.iter().filter_map(|(cc, amount)| Some((calling_code(cc)?, to_money(*amount)?))).collect()
        };
        SpendPolicy {
            daily: self.daily.and_then(to_money).unwrap_or(DEFAULT_DAILY_BUDGET),
            country_daily: self.country_daily.and_then(to_money).unwrap_or(0),
            countries: table(&self.countries),
            prices: table(&self.prices),
            default_price: self.default_price.and_then(to_money).unwrap_or(sms::DEFAULT_PRICE),
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        let amounts =
            [("daily", self.daily), ("country_daily", self.country_daily), ("default_price", self.default_price)];
        for (key, amount) in amounts {
            if let Some(a) = amount
                && to_money(a).is_none()
            {
                errors.push(format!("limits.sms_budget.{key}: must be a non-negative amount below 10^9, got {a}"));
            }
        }
        for (key, map) in [("countries", &self.countries), ("prices", &self.prices)] {
            for (cc, amount) in map {
                if calling_code(cc).is_none() {
                    errors.push(format!("limits.sms_budget.{key}: {cc:?} is not a country calling code (1-999)"));
                }
                if to_money(*amount).is_none() {
                    errors.push(format!("limits.sms_budget.{key}.{cc}: must be a non-negative amount below 10^9"));
                }
            }
        }
    }
}

/// A calling code as written in the tables: `"44"` or `"+44"`.
fn calling_code(text: &str) -> Option<u16> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    let code: u16 = digits.parse().ok()?;
    (digits.len() <= 3 && (1..=999).contains(&code) && !digits.starts_with('0')).then_some(code)
}

/// A configured amount of currency in [`Money`] units (rounded to the nearest unit).
fn to_money(amount: f64) -> Option<Money> {
    (amount.is_finite() && (0.0..1e9).contains(&amount)).then(|| (amount * MONEY_UNITS as f64).round() as Money)
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

/// Overrides of the guess budget; what is left out comes from the preset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuessConfig {
    /// Counted checks before the first block.
    pub free: Option<u32>,
    /// The first block; "0s" turns the budget off.
    pub first_block: Option<Dur>,
    /// The longest block.
    pub max_block: Option<Dur>,
    /// The count is forgotten this long after the latest counted check.
    pub forget_after: Option<Dur>,
}

impl GuessConfig {
    /// A preset's budget with the configured parts replaced.
    pub fn over(&self, preset: GuessBudget) -> GuessBudget {
        GuessBudget {
            free: self.free.unwrap_or(preset.free),
            first_block: self.first_block.map_or(preset.first_block, |d| d.0),
            max_block: self.max_block.map_or(preset.max_block, |d| d.0),
            forget_after: self.forget_after.map_or(preset.forget_after, |d| d.0),
        }
    }
}

impl super::value::Shown for GuessConfig {
    fn kind() -> String {
        "guess budget `{ free, first_block, max_block, forget_after }`".into()
    }
    fn shown(&self) -> String {
        "from `preset`".into()
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
        if !(32..=64).contains(&self.ipv6_send_prefix) {
            errors.push(format!("limits.ipv6_send_prefix: must be 32..=64, got {}", self.ipv6_send_prefix));
        }
        if !(2..=15).contains(&self.prefix_digits) {
            errors.push(format!("limits.prefix_digits: must be 2..=15, got {}", self.prefix_digits));
        }
        self.sms_budget.validate(errors);
        self.conversion_guard.validate(errors);
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
        // A count forgotten sooner than the floor lets a stranger who waits for it guess more
        // than one who never stops (and one forgotten during a block hands the free checks back).
        let b = self.identifier_guess.over(LimitPolicy::preset(self.preset).identifier_guesses);
        if b.is_on() && b.first_block > b.max_block {
            errors.push("limits.identifier_guess: first_block must not be longer than max_block".into());
        }
        if b.is_on() && b.forget_after < b.forget_floor() {
            errors.push(format!(
                "limits.identifier_guess.forget_after: must be at least {} with these blocks (or waiting for \
                 the count to be forgotten lets more guesses through than guessing every max_block), got {}",
                humantime::format_duration(b.forget_floor()),
                humantime::format_duration(b.forget_after),
            ));
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
        out.push_str(&guess_budget_markdown(&presets));
        out.push_str(&spend_markdown());
        out.push_str(&guard_markdown());
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
            identifier_guesses: self.identifier_guess.over(LimitPolicy::preset(self.preset).identifier_guesses),
            prefix_digits: self.prefix_digits,
            sms_allow: prefixes(&self.sms_allow),
            sms_deny: prefixes(&self.sms_deny),
            sms_budget: self.sms_budget.policy(),
            ipv6_send_prefix: self.ipv6_send_prefix,
            conversion_guard: self.conversion_guard.guard(),
        }
    }
}

/// The conversion guard's part of `docs/limits.md`, from the shipped guard.
fn guard_markdown() -> String {
    let g = CONVERSION_GUARD;
    format!(
        "\n## The conversion guard (`conversion_guard`)\n\n\
         Codes sent to numbers nobody answers for are never verified: that is what SMS pumping looks like. \
         Per number prefix (`prefix_digits`) and per country calling code, the guard counts the SMS sends the \
         limits let through and the codes verified for that destination, in a window of {window} that opens \
         with the first of either. A destination is *tripped* once it has at least its floor of sends \
         ({pf} for a prefix, {cf} for a country) and fewer than {min} % of them verified, or fewer than \
         {collapse} % of its own *baseline*: the conversion of its past windows that were judged and not \
         tripped (the first sets it, each next one moves it halfway), kept {history} after its last \
         window. So a market that verifies 80 % is tripped below 40 %, and a pump cannot hide in a big \
         market's slack; a pumped or quiet window never lowers the baseline. A send to a \
         tripped destination is, by `mode`: let through and only counted (`record`), let through once per \
         `throttle_every` ({every}) and otherwise refused with 429 `destination_throttled` and \
         `Retry-After` (`throttle`, the default), or refused until the window ends (`block`); `off` counts \
         nothing. Codes verified later lift it again; other destinations are never affected. With Redis \
         the counts are shared by every node; a verified code costs one more script call (sent with the \
         guess budget's `HDEL`).\n\n\
         The floor keeps a new or small market from being judged on its first codes, and is lower for a \
         prefix than for a country, so one pumped prefix is throttled long before its country. Sends to \
         numbers without an account count like any other: their codes are never verified, so pretending \
         cannot make a prefix look healthy. A legitimate burst of more than {pf} codes to one prefix \
         before any is typed (a launch, a campaign in one town) is throttled until codes come back: raise \
         `prefix_floor` for it. For a new market nothing is needed; for one whose codes are legitimately \
         rarely typed (a test range), pin it to `record` and watch `otpd_sms_codes_total` (the \
         dashboard's conversion panel and the alert `OtpdSmsConversionCollapse`).\n\n\
         On the ops listener, `GET /v1/admin/destinations` lists the destinations a node has sent to in \
         the guard's history, worst first, with their window's counts (shared with Redis), baseline, mode \
         and pin. `PUT /v1/admin/destinations/+<digits>` with `{{\"mode\": \"record\", \"for\": \"7d\"}}` \
         pins one (a number prefix of `prefix_digits` digits, or a calling code) to the mode it is judged \
         in when it trips; `DELETE` lifts it: its window is forgotten and its pin removed. Both are \
         audited (`admin_destination`). With Redis a pin holds on every node; without, on the node \
         called.\n",
        window = humantime::format_duration(g.window),
        pf = g.prefix_floor,
        cf = g.country_floor,
        min = g.min_conversion,
        every = humantime::format_duration(g.throttle_every),
        collapse = g.collapse,
        history = humantime::format_duration(g.history),
    )
}

/// The SMS spend budget's part of `docs/limits.md`: the rule, the defaults and the shipped prices.
fn spend_markdown() -> String {
    let mut out = format!(
        "\n## The SMS spend budget (`sms_budget`)\n\n\
         SMS cost money; a bot that requests codes for premium-rate numbers (SMS pumping) spends it. Every \
         SMS send costs its segments (`rules::sms`: 160 GSM-7 characters or 70 UCS-2 units in one, 153 or 67 \
         per part of a longer body; each template of each locale is measured once at start with the longest \
         code and lifetime, and a send is charged in the locale it is written in) times the price of a segment to its country calling code. Per UTC day, the limiter adds \
         what each send costs to the total (`daily`, default {daily}) and to its country's budget \
         (`country_daily` for every country, or `countries` for some; off by default); a send whose cost \
         would take either past its budget is refused with 503 `sms_budget_exhausted` and `Retry-After` \
         until midnight UTC, and counts nowhere. E-mail, code checks and device login never count. With \
         Redis the budgets are shared by every node (one hash per scope, in the same script as the other \
         rules); without it, each node counts its own.\n\n\
         A send is counted whether or not an account stands behind the number (a send without one costs \
         nothing, but a budget that counted only real sends would, once spent, refuse known numbers and \
         accept unknown ones). So the budget is a fuse: when it blows, SMS stops for everyone until \
         midnight, which is the point (a pumping run ends there), and the alerts at 80 % and 100 % \
         (`deploy/prometheus/alerts.yml`) call an operator before it does. Size `daily` at a few times a \
         normal day's spend; for a new market, add its price to `prices` and a `countries` budget.\n\n\
         Prices of one segment (shipped; `prices` overrides any, `default_price` = {default} for the rest; \
         in USD, the order of magnitude of public list prices in late 2025, rounded up: a rough guide, never a quote; set your contract's):\n\n\
         | calling code | price |\n| --- | --- |\n",
        daily = sms::format_money(DEFAULT_DAILY_BUDGET),
        default = sms::format_money(sms::DEFAULT_PRICE),
    );
    for (code, price) in sms::SHIPPED_PRICES {
        out.push_str(&format!("| +{code} | {} |\n", sms::format_money(*price)));
    }
    out
}

/// The guess budget's part of `docs/limits.md`: the rule, each preset's values, and what
/// [`GuessBudget::attacker`] finds an attacker can do with them, in a year, with Redis and with
/// in-process limits on a node restarted daily.
fn guess_budget_markdown(presets: &[(Preset, LimitPolicy); 3]) -> String {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let year = 365 * DAY;
    let space = CodePolicy::new(6, Alphabet::Numeric).expect("6 digits are allowed").code_space();
    let chance = |n: u64| 1.0 - (1.0 - 1.0 / space as f64).powf(n as f64);
    let mut out = String::from(
        "\n## The guess budget (`identifier_guess`)\n\n\
         Each code brings `otp.max_attempts` tries, and codes can be sent again, so the tries per code do not \
         bound how many codes a stranger can try for one account. The guess budget does: per identifier, across \
         codes, resends, both purposes (register and login) and client addresses, and across nodes with Redis. \
         Every code check that the limits let through counts *before* its code is compared (so concurrent \
         checks cannot slip past the first block); a right code clears the count. Once the count exceeds `free`, \
         each counted check blocks code checks for that identifier for `first_block × 2^(count − free − 1)`, at \
         most `max_block`; the count is forgotten `forget_after` after the latest counted check. While blocked, a \
         check is refused with `429 identifier_guess_limit` and `Retry-After` before any code is compared, the \
         same for an identifier with or without an account. Device-login signatures are not counted.\n\n\
         | | `low` | `medium` (default) | `high` |\n| --- | --- | --- | --- |\n",
    );
    let budgets = presets.each_ref().map(|(_, p)| p.identifier_guesses);
    let row = |name: &str, cell: &dyn Fn(&GuessBudget) -> String| {
        let cells: Vec<String> = budgets.iter().map(cell).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    let d = |d: Duration| humantime::format_duration(d).to_string();
    out.push_str(&row("`free`", &|b| b.free.to_string()));
    out.push_str(&row("`first_block`", &|b| d(b.first_block)));
    out.push_str(&row("`max_block`", &|b| d(b.max_block)));
    out.push_str(&row("`forget_after`", &|b| d(b.forget_after)));
    out.push_str(&row("shortest `forget_after` allowed with these blocks", &|b| d(b.forget_floor())));
    let bound = |b: &GuessBudget, restart: Option<Duration>| b.attacker(year, restart).expect("every preset has one");
    out.push_str(&row("most failed checks in any 24 h", &|b| bound(b, None).most_in_a_day.to_string()));
    out.push_str(&row("most in a year, with Redis (or one node that keeps running)", &|b| {
        bound(b, None).total.to_string()
    }));
    out.push_str(&row("chance to guess a 6-digit code in a year, with Redis", &|b| {
        format!("{:.2} %", 100.0 * chance(bound(b, None).total))
    }));
    out.push_str(&row("most in a year, in-process limits, node restarted daily", &|b| {
        bound(b, Some(DAY)).total.to_string()
    }));
    out.push_str(&row("chance in a year, in-process limits, node restarted daily", &|b| {
        format!("{:.2} %", 100.0 * chance(bound(b, Some(DAY)).total))
    }));
    out.push_str(
        "\nThe attacker of these rows never has the code and guesses as fast as the budget allows, from any \
         number of addresses, trying every strategy that can pay (guess whenever not blocked, or guess in bursts \
         and wait for the count to be forgotten); each guess at a fresh 6-digit code wins with chance 10⁻⁶, so \
         the chance in a year is 1 − (1 − 10⁻⁶)^N for N guesses. The other rules only lower N (each code's \
         `otp.max_attempts`, the send caps, `identifier_verify`). With in-process limits a restart forgets every \
         count, so the rows assume the attacker starts over after a daily restart; each node counts on its own, \
         so a deployment of n nodes without Redis (or while Redis is away) allows up to n times as many.\n\n\
         While a stranger guesses, the account's owner is refused code checks whenever the identifier is \
         blocked: at most `max_block` at a time, after which the first check (the owner's or the stranger's) \
         goes through, and a right code clears the count and the block. Sessions already open, refreshing them, \
         and device login are not affected. Nothing locks an account for good: a stranger could otherwise lock \
         out any owner whose number they know.\n\n\
         `forget_after` must be long enough that waiting for the count to be forgotten never beats guessing \
         every `max_block` (configuration refuses less: the floor is `max_block × (free + 1 + k) − T(k)` at its \
         largest, `T(k)` being the time the first `k` blocks take). In the default preset it is 3 days: with \
         24 hours, bursts of 13 guesses every 26 hours would allow about 12 a day instead of 6.\n",
    );
    out
}
