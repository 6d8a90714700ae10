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
//! | `identifier_guess_limit` | code checks not followed by a right code (the guess budget, below) | identifier |
//! | `ip_send_limit` | sends | client IP (IPv6: its /56, `ipv6_send_prefix`) |
//! | `ip_verify_limit` | code checks | client IP (IPv6: its /64) |
//! | `device_challenge_limit` | device-login challenges | device id + client IP (IPv6: its /64) |
//! | `ip_challenge_limit` | device-login challenges | client IP (IPv6: its /64) |
//! | `prefix_send_limit` | SMS sends | first `prefix_digits` digits of the number |
//! | `country_send_limit` | SMS sends | country calling code |
//! | `destination_not_allowed` | — | the SMS allow-list / deny-list |
//! | `sms_budget_exhausted` | money SMS sends cost this UTC day (`rules::sms`) | everywhere; country calling code |
//! | `destination_throttled` | SMS sends and verified codes (the conversion guard, below) | number prefix; country calling code |
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
//!
//! # The guess budget (`identifier_guess_limit`)
//!
//! Each code brings `otp.max_attempts` tries, and codes can be re-sent, so the tries per code
//! do not bound how many codes a stranger can guess for one account. The guess budget does,
//! per identifier, across challenges, resends, both purposes (register, login) and client
//! addresses, and (with Redis) across nodes. It is a state machine per identifier, kept in the
//! identifier's limiter entry:
//!
//! ```text
//! state: count, forget_at, blocked_until            (absent = count 0, not blocked)
//!
//! code check (register or login):
//!   now < blocked_until          → refuse identifier_guess_limit, Retry-After = the rest of
//!                                  the block; nothing counted, no code compared
//!   otherwise, if every other rule allows (one decision, like every rule):
//!     count    := (now < forget_at ? count : 0) + 1
//!     forget_at := now + forget_after
//!     count > free → blocked_until := now + min(first_block × 2^(count − free − 1), max_block)
//!   then the code is compared (this check itself is let through)
//! the code was right             → the count and the block are cleared
//! ```
//!
//! A check counts *when it is let through, before its code is compared*, not when the answer
//! turns out wrong: counted afterwards, a burst of concurrent checks would all pass the
//! limiter before the first wrong answer was recorded (two live challenges, register and
//! login, take 10 of them at once after every block). Counted up front, the check that starts
//! a block is recorded in the same atomic step that refuses the next one. So "a guess" is any
//! code check let through that is not followed by a right code: a late or spent code counts
//! too (NIST SP 800-63B counts failed attempts, not wrong digits), and a right code clears all.
//! Device-login signatures are not counted: they cannot be guessed, and that flow has its own
//! per-challenge cap.
//!
//! # The conversion guard (`destination_throttled`)
//!
//! SMS pumping requests codes for numbers nobody answers for: codes sent to a pumped prefix
//! are never verified. The guard counts, per number prefix and per country, the SMS sends it
//! let through and the codes verified for that destination, in a window that opens with the
//! first of either:
//!
//! ```text
//! tripped  := sent ≥ floor  and  ( verified × 100 < sent × min_conversion          (percent)
//!                                or verified × 100 < sent × baseline × collapse / 100 )
//! a send to a destination that is tripped, in its mode (its pin's while pinned, else `mode`):
//!   record   → let through (only counted, and the metric says so)
//!   throttle → one send per `throttle_every` let through, the others refused until then
//!   block    → refused until the window ends
//! a verified code → verified + 1 (so a destination lifts itself as its codes verify)
//! a window ends with sent ≥ floor, not tripped
//!                 → baseline := its conversion (the first time), else halfway to it
//! ```
//!
//! The baseline is the destination's own history: a market that verifies 80 % of its codes is
//! tripped when that falls below 40 % (`collapse` = 50), long before the absolute 20 %, so a
//! pump cannot hide in a big, healthy market's slack. Only windows judged and healthy teach it,
//! so a pump (tripped) or a trickle (below the floor) never lowers it; it is kept `history`
//! after the destination's last window. Operators pin a destination to a mode (a market known
//! to verify poorly, to `record`) or lift it (its window forgotten) through
//! `/v1/admin/destinations`.
//!
//! The floor keeps a small or new market from being judged on its first codes; the prefix
//! floor is low and the country floor high, so one pumped prefix is throttled long before its
//! country is. Sends to identifiers without an account count like the others (their codes are
//! never verified: an attacker cannot make a prefix look healthy by pretending).
//!
//! The block applies before any code is compared and before the account is read, so an
//! identifier without an account is refused exactly like one with. `forget_after` must be
//! long enough that waiting for the count to be forgotten does not pay: [`GuessBudget::attacker`]
//! simulates every such strategy, and `docs/limits.md` prints what each preset allows.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::rules::challenge::Purpose;
use crate::rules::clock::Timestamp;
use crate::rules::identifier::Identifier;
use crate::rules::keys::IdentHash;
use crate::rules::sms::{Money, SpendPolicy, day_end};

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
    /// Send a code again through another route after its delivery failed (delivery receipts):
    /// counted like a send by the identifier's send cap and every SMS destination rule (budget,
    /// guard, prefix and country), not by the cooldown or a client address (nobody asked).
    Failover(Purpose),
}

impl LimitAction {
    /// Whether the action sends a code.
    pub fn sends(self) -> bool {
        matches!(self, LimitAction::Send(_) | LimitAction::Resend(_) | LimitAction::Failover(_))
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
    /// Segments the SMS would take (`rules::sms`), for the spend budget; 0 counts as 1.
    pub segments: u32,
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
    /// The identifier's guess budget is spent: blocked until the block ends.
    IdentifierGuesses,
    /// Too many codes sent on behalf of this client IP address (IPv6: its /56 by default).
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
    /// The day's SMS budget (every SMS together, or this country's) would be overspent.
    SmsBudget,
    /// Codes sent to this number prefix or country are rarely verified (the conversion guard).
    DestinationGuard,
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
            LimitRule::IdentifierGuesses => "identifier_guess_limit",
            LimitRule::IpSends => "ip_send_limit",
            LimitRule::IpVerifies => "ip_verify_limit",
            LimitRule::PrefixSends => "prefix_send_limit",
            LimitRule::CountrySends => "country_send_limit",
            LimitRule::DeviceChallenges => "device_challenge_limit",
            LimitRule::IpChallenges => "ip_challenge_limit",
            LimitRule::DestinationNotAllowed => "destination_not_allowed",
            LimitRule::SmsBudget => "sms_budget_exhausted",
            LimitRule::DestinationGuard => "destination_throttled",
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

/// The guess budget of one identifier (the module doc draws it): `free` counted checks, then
/// each one blocks for `first_block`, doubling up to `max_block`; the count is forgotten
/// `forget_after` after the latest counted check, and cleared by a right code. Off when
/// `first_block` or `forget_after` is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuessBudget {
    pub free: u32,
    pub first_block: Duration,
    pub max_block: Duration,
    pub forget_after: Duration,
}

impl GuessBudget {
    pub const OFF: GuessBudget =
        GuessBudget { free: 0, first_block: Duration::ZERO, max_block: Duration::ZERO, forget_after: Duration::ZERO };

    pub fn is_on(&self) -> bool {
        !self.first_block.is_zero() && !self.forget_after.is_zero()
    }

    /// The block that the `count`-th counted check starts: none up to `free`, then
    /// `first_block × 2^(count − free − 1)`, at most `max_block` (never less than `first_block`).
    pub fn block_after(&self, count: u32) -> Duration {
        if count <= self.free || !self.is_on() {
            return Duration::ZERO;
        }
        let doublings = (count - self.free - 1).min(31);
        self.first_block.saturating_mul(1 << doublings).min(self.max_block.max(self.first_block))
    }

    /// The shortest `forget_after` with which waiting for the count to be forgotten never
    /// lets more guesses through than guessing every `max_block` forever.
    ///
    /// A stranger who guesses `free + 1 + k` times as early as allowed (taking `T(k)`, the sum
    /// of the first `k` blocks) and then waits `forget_after` gets `free + 1 + k` guesses per
    /// `T(k) + forget_after`; guessing forever gets one per `max_block`. The first is never more
    /// when `forget_after ≥ max_block × (free + 1 + k) − T(k)` for every `k`, which grows with
    /// `k` until the blocks reach `max_block` and stays put after.
    pub fn forget_floor(&self) -> Duration {
        if !self.is_on() {
            return Duration::ZERO;
        }
        let longest = self.max_block.max(self.first_block);
        let (mut floor, mut taken) = (Duration::ZERO, Duration::ZERO);
        for k in 0..=64u32 {
            let guesses = self.free.saturating_add(1).saturating_add(k);
            floor = floor.max(longest.saturating_mul(guesses).saturating_sub(taken));
            let block = self.block_after(guesses);
            if block >= longest {
                break;
            }
            taken += block;
        }
        floor
    }

    /// The most a stranger who never has the code can guess over `horizon`, by simulation;
    /// `restart_every` also forgets the count at every multiple of it (in-process limits on a
    /// node restarted that often). `None` when the budget is off (no bound).
    ///
    /// The strategies tried are all that can pay: guess whenever not blocked; or, for each
    /// burst length until the blocks reach `max_block`, guess that many times as early as
    /// allowed and then wait until the count is forgotten (or the node restarts), over and
    /// over. Waiting any other way only loses time: a block depends on nothing but the count.
    /// A longer burst than those tried adds `max_block` per guess, which pays exactly when
    /// guessing forever does, so the two bracket it.
    pub fn attacker(&self, horizon: Duration, restart_every: Option<Duration>) -> Option<AttackerBound> {
        if !self.is_on() {
            return None;
        }
        let mut to_max = 0;
        while self.block_after(self.free + 1 + to_max) < self.max_block && to_max < 32 {
            to_max += 1;
        }
        let strategies = std::iter::once(None).chain((0..=to_max + 1).map(|k| Some(self.free + 1 + k)));
        let day = 24 * 3_600_000;
        let mut worst = AttackerBound { most_in_a_day: 0, total: 0 };
        for rest_at in strategies {
            let times = self.guesses(millis(horizon), restart_every.map(millis), rest_at);
            let mut most = 0;
            let mut end = 0;
            for (start, t) in times.iter().enumerate() {
                while end < times.len() && times[end] < t + day {
                    end += 1;
                }
                most = most.max(end - start);
            }
            worst.most_in_a_day = worst.most_in_a_day.max(most as u32);
            worst.total = worst.total.max(times.len() as u64);
        }
        Some(worst)
    }

    /// The instants (ms from the start) of every counted check of one strategy: rest until
    /// the count is forgotten whenever it reaches `rest_at`, else guess as soon as allowed.
    fn guesses(&self, horizon: u64, restart_every: Option<u64>, rest_at: Option<u32>) -> Vec<u64> {
        let restart = restart_every.filter(|r| *r > 0);
        let epoch = |t: u64| restart.map_or(0, |r| t / r);
        let next_restart = |t: u64| restart.map_or(u64::MAX, |r| (t / r + 1) * r);
        let (mut t, mut count, mut forget_at, mut blocked_until, mut state_epoch) = (0, 0, 0, 0, 0);
        let mut times = Vec::new();
        while t < horizon {
            if epoch(t) != state_epoch {
                (count, forget_at, blocked_until, state_epoch) = (0, 0, 0, epoch(t));
            }
            if t < blocked_until {
                t = blocked_until.min(next_restart(t));
                continue;
            }
            count = if t < forget_at { count + 1 } else { 1 };
            forget_at = t + millis(self.forget_after);
            blocked_until = t + millis(self.block_after(count));
            times.push(t);
            let resume = if rest_at == Some(count) { forget_at.max(blocked_until) } else { blocked_until };
            t = resume.min(next_restart(t));
        }
        times
    }
}

/// What [`GuessBudget::attacker`] finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttackerBound {
    /// Most counted checks within any 24 hours.
    pub most_in_a_day: u32,
    /// Most counted checks over the whole horizon.
    pub total: u64,
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX / 4)) as u64
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

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Minimum time between two codes for one identifier and purpose, unless configured otherwise.
pub const RESEND_COOLDOWN: Duration = Duration::from_secs(30);

/// Codes per identifier, every purpose together, unless configured otherwise.
pub const SEND_CAP: Rule = Rule::per(5, Duration::from_secs(600));

/// What the conversion guard does with a destination it finds tripped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// No counting at all.
    Off,
    /// Counts and reports, never refuses.
    Record,
    /// One send per `throttle_every`.
    #[default]
    Throttle,
    /// No send until the window ends.
    Block,
}

/// The conversion guard (the module doc draws it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConversionGuard {
    pub mode: GuardMode,
    pub window: Duration,
    /// Sends to a number prefix, and to a country, before either is judged.
    pub prefix_floor: u32,
    pub country_floor: u32,
    /// The least share of codes verified, in percent, that keeps a destination untripped.
    pub min_conversion: u32,
    pub throttle_every: Duration,
    /// A destination is tripped too when its conversion falls below this share (percent) of
    /// its own baseline (0: no baseline rule).
    pub collapse: u32,
    /// How long a destination's baseline, and a pin, outlive its last window.
    pub history: Duration,
}

impl ConversionGuard {
    pub const OFF: ConversionGuard = ConversionGuard {
        mode: GuardMode::Off,
        window: Duration::ZERO,
        prefix_floor: 0,
        country_floor: 0,
        min_conversion: 0,
        throttle_every: Duration::ZERO,
        collapse: 0,
        history: Duration::ZERO,
    };

    pub fn is_on(&self) -> bool {
        self.mode != GuardMode::Off && !self.window.is_zero()
    }

    /// Whether `sent` sends and `verified` verified codes trip a destination of floor `floor`
    /// whose baseline conversion is `baseline` (percent).
    pub fn tripped(&self, floor: u32, sent: u64, verified: u64, baseline: Option<u8>) -> bool {
        let below_least = verified.saturating_mul(100) < sent.saturating_mul(u64::from(self.min_conversion));
        let collapsed = baseline.is_some_and(|b| {
            verified.saturating_mul(10_000) < sent.saturating_mul(u64::from(b) * u64::from(self.collapse))
        });
        sent >= u64::from(floor) && (below_least || collapsed)
    }

    /// The baseline a destination keeps when a window of `sent` sends and `verified` codes
    /// ends: a judged window that was not tripped moves it halfway to its own conversion;
    /// any other leaves it (so a pumped or a quiet window teaches nothing).
    pub fn next_baseline(&self, floor: u32, sent: u64, verified: u64, baseline: Option<u8>) -> Option<u8> {
        if sent < u64::from(floor).max(1) || self.tripped(floor, sent, verified, baseline) {
            return baseline;
        }
        let conversion = (verified.saturating_mul(100) / sent).min(100) as u8;
        Some(baseline.map_or(conversion, |b| ((u16::from(b) + u16::from(conversion)) / 2) as u8))
    }

    /// The floor of a destination: a prefix's or a country's.
    pub fn floor(&self, subject: &Subject) -> u32 {
        match subject {
            Subject::Country(_) => self.country_floor,
            _ => self.prefix_floor,
        }
    }

    /// The mode a destination is judged in: its pin's while the pin lasts, else the guard's.
    pub fn mode_of(&self, pin: Option<Pin>, now: Timestamp) -> GuardMode {
        pin.filter(|p| p.until > now).map_or(self.mode, |p| p.mode)
    }
}

/// An operator's pin of one destination to a guard mode, until a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    pub mode: GuardMode,
    pub until: Timestamp,
}

/// What an operator does to one destination of the conversion guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationChange {
    /// Nothing: reads its state.
    Read,
    /// Forgets its window (sends, verified codes, a throttle's next send) and its pin: judged
    /// afresh from its floor, in the guard's mode. Its baseline stays.
    Lift,
    Pin(Pin),
    /// Removes the pin: the guard's mode applies again.
    Unpin,
}

/// One destination as the conversion guard sees it (`GET /v1/admin/destinations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestinationState {
    /// `Subject::Prefix` or `Subject::Country`.
    pub subject: Subject,
    /// Sends and verified codes in the current window (0 when none is open).
    pub sent: u64,
    pub verified: u64,
    pub window_ends: Option<Timestamp>,
    /// A throttled destination's next send.
    pub next_send: Option<Timestamp>,
    pub baseline: Option<u8>,
    pub pin: Option<Pin>,
    /// Whether its current window trips the guard.
    pub tripped: bool,
    /// What the guard does with it now: its mode, and whether it refuses a send now.
    pub mode: GuardMode,
    pub refusing: bool,
}

impl DestinationState {
    /// The state of `subject` from its stored fields, judged at `now`.
    pub fn judge(
        guard: &ConversionGuard,
        subject: Subject,
        (sent, verified, window_ends, next_send): (u64, u64, Timestamp, Timestamp),
        baseline: Option<u8>,
        pin: Option<Pin>,
        now: Timestamp,
    ) -> DestinationState {
        let live = window_ends > now;
        let (sent, verified) = if live { (sent, verified) } else { (0, 0) };
        let pin = pin.filter(|p| p.until > now);
        let tripped = live && guard.tripped(guard.floor(&subject), sent, verified, baseline);
        let mode = guard.mode_of(pin, now);
        let refusing = tripped
            && match mode {
                GuardMode::Throttle => next_send > now,
                GuardMode::Block => true,
                GuardMode::Record | GuardMode::Off => false,
            };
        DestinationState {
            subject,
            sent,
            verified,
            window_ends: live.then_some(window_ends),
            next_send: (next_send > now).then_some(next_send),
            baseline,
            pin,
            tripped,
            mode,
            refusing,
        }
    }

    /// Worst first: refusing, then tripped, then most codes never verified.
    pub fn badness(&self) -> (bool, bool, u64) {
        (self.refusing, self.tripped, self.sent.saturating_sub(self.verified))
    }
}

/// The shipped conversion guard: judged per hour, from 20 sends to a prefix and 200 to a
/// country; tripped below 20 % verified (a healthy OTP flow verifies well over half its
/// codes) or below half its own baseline; then one send a minute. Baselines and pins are
/// kept a week after a destination's last window.
pub const CONVERSION_GUARD: ConversionGuard = ConversionGuard {
    mode: GuardMode::Throttle,
    window: HOUR,
    prefix_floor: 20,
    country_floor: 200,
    min_conversion: 20,
    throttle_every: MINUTE,
    collapse: 50,
    history: Duration::from_secs(7 * 24 * 3600),
};

/// The default preset's guess budget: 6 checks at once, then blocks of 1, 2, 4 … minutes up
/// to 4 hours: at most 18 counted checks in any 24 hours, 6 a day when it goes on. The count is
/// kept 3 days (not 1) so that waiting for it to be forgotten never beats that (the floor,
/// [`GuessBudget::forget_floor`], is 51 h 45 min): with 24 hours, bursts of 13 checks every
/// 26 hours would give ~12 a day.
pub const GUESS_BUDGET: GuessBudget = GuessBudget {
    free: 5,
    first_block: MINUTE,
    max_block: Duration::from_secs(4 * 3600),
    forget_after: Duration::from_secs(72 * 3600),
};

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
    /// Failed code checks per identifier, with escalating blocks (register and login).
    pub identifier_guesses: GuessBudget,
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
    /// What SMS may cost per UTC day, in total and per country.
    pub sms_budget: SpendPolicy,
    /// The IPv6 prefix length `ip_sends` counts by ([`IPV6_SEND_PREFIX`]).
    pub ipv6_send_prefix: u8,
    /// The conversion guard of SMS destinations.
    pub conversion_guard: ConversionGuard,
}

/// The default preset with the default OTP rules.
impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            resend_cooldown: RESEND_COOLDOWN,
            identifier_sends: SEND_CAP,
            sms_budget: SpendPolicy::default(),
            conversion_guard: CONVERSION_GUARD,
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
            identifier_guesses: GuessBudget::OFF,
            ip_sends: Rule::OFF,
            ip_verifies: Rule::OFF,
            prefix_sends: Rule::OFF,
            country_sends: Rule::OFF,
            device_challenges: Rule::OFF,
            ip_challenges: Rule::OFF,
            prefix_digits: 7,
            sms_allow: Vec::new(),
            sms_deny: Vec::new(),
            sms_budget: SpendPolicy::OFF,
            ipv6_send_prefix: IPV6_SEND_PREFIX,
            conversion_guard: ConversionGuard::OFF,
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
                identifier_guesses: GuessBudget {
                    free: 10,
                    first_block: 30 * SECOND,
                    max_block: HOUR,
                    forget_after: 24 * HOUR,
                },
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
                identifier_guesses: GUESS_BUDGET,
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
                identifier_guesses: GuessBudget {
                    free: 3,
                    first_block: 5 * MINUTE,
                    max_block: 24 * HOUR,
                    forget_after: 14 * 24 * HOUR,
                },
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
/// nothing; sends count IPv6 by a wider block ([`LimitPolicy::ipv6_send_prefix`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock(pub [u8; 16]);

/// The IPv6 prefix length sends are counted by, unless configured otherwise: a home is
/// usually delegated a /56 (RFC 6177), and an attacker who rents a /48 gets 256 buckets of it
/// to send from instead of 65,536 /64s. Code checks and device challenges stay per /64.
pub const IPV6_SEND_PREFIX: u8 = 56;

impl IpBlock {
    /// `ip`'s block, IPv6 by its /64.
    pub fn of(ip: IpAddr) -> IpBlock {
        IpBlock::within(ip, 64)
    }

    /// `ip`'s block, IPv6 by its first `v6_bits` bits (at most 64; a /64's bytes are those of
    /// [`IpBlock::of`]).
    pub fn within(ip: IpAddr, v6_bits: u8) -> IpBlock {
        let mut bytes = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                bytes[0] = 4;
                bytes[1..5].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => return IpBlock::of(IpAddr::V4(v4)),
                None => {
                    let bits = v6_bits.min(64);
                    let head = u64::from_be_bytes(v6.octets()[..8].try_into().expect("8 bytes"));
                    let mask = if bits == 0 { 0 } else { u64::MAX << (64 - u32::from(bits)) };
                    bytes[0] = 6;
                    bytes[1..9].copy_from_slice(&(head & mask).to_be_bytes());
                    if bits < 64 {
                        bytes[9] = bits;
                    }
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
    /// Every request alike (the SMS budget of the whole deployment).
    Everywhere,
}

impl Subject {
    /// A destination as operators write it: `+` and the digits of a prefix, or of a calling
    /// code (`None` for subjects that are not destinations).
    pub fn destination(&self) -> Option<String> {
        match *self {
            Subject::Prefix(value, len) => Some(format!("+{value:0width$}", width = usize::from(len))),
            Subject::Country(code) => Some(format!("+{code}")),
            _ => None,
        }
    }
}

/// Which keys may be decided together: in Redis Cluster a decision spans one hash slot per
/// group it touches (see `src/limits/redis.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Identifier,
    Ip,
    Prefix,
    Country,
    Everywhere,
}

impl Subject {
    pub fn group(&self) -> Group {
        match self {
            Subject::IdentPurpose(..) | Subject::Ident(_) => Group::Identifier,
            Subject::Ip(_) => Group::Ip,
            Subject::Prefix(..) => Group::Prefix,
            Subject::Country(_) => Group::Country,
            Subject::Everywhere => Group::Everywhere,
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
    /// Denies while blocked; records one counted check, which may start a block (the guess
    /// budget, see the module doc).
    Guesses(GuessBudget),
    /// Denies when the day's spend plus `cost` would pass `budget`; records `cost`.
    Spend(Spend),
    /// The conversion guard of one destination, with its floor: denies as its mode says when
    /// tripped; records one send.
    Conversion(ConversionGuard, u32),
}

/// A spend check: a window that ends at `ends_at` (the end of the UTC day) and counts money.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spend {
    pub budget: Money,
    pub cost: Money,
    pub ends_at: Timestamp,
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
        LimitAction::Send(purpose) | LimitAction::Resend(purpose) | LimitAction::Failover(purpose) => {
            if let Some(target) = &req.sms
                && !policy.destination_allowed(target)
            {
                return Err(Decision::Deny { rule: LimitRule::DestinationNotAllowed, retry_after: Duration::ZERO });
            }
            window(LimitRule::IdentifierSends, Subject::Ident(ident), policy.identifier_sends);
            match req.action {
                LimitAction::Failover(_) => {}
                LimitAction::Resend(_) => {
                    window(LimitRule::IdentifierResends, Subject::Ident(ident), policy.identifier_resends)
                }
                _ if purpose == Purpose::Login => {
                    window(LimitRule::IdentifierLogins, Subject::Ident(ident), policy.identifier_logins)
                }
                _ => window(LimitRule::IdentifierRegistrations, Subject::Ident(ident), policy.identifier_registrations),
            }
            if let Some(ip) = req.client_ip {
                let block = IpBlock::within(ip, policy.ipv6_send_prefix);
                window(LimitRule::IpSends, Subject::Ip(block), policy.ip_sends);
            }
            if let Some(target) = &req.sms {
                let (value, len) = target.prefix(policy.prefix_digits);
                window(LimitRule::PrefixSends, Subject::Prefix(value, len), policy.prefix_sends);
                window(LimitRule::CountrySends, Subject::Country(target.country_code()), policy.country_sends);
                let spend = &policy.sms_budget;
                let cost = spend.cost(target.country_code(), req.segments);
                let ends_at = day_end(req.now);
                let budgets = [
                    (Subject::Everywhere, spend.daily),
                    (Subject::Country(target.country_code()), spend.country_budget(target.country_code())),
                ];
                for (subject, budget) in budgets.into_iter().filter(|(_, b)| *b > 0) {
                    let kind = CheckKind::Spend(Spend { budget, cost, ends_at });
                    checks.push(Check { rule: LimitRule::SmsBudget, subject, kind });
                }
                checks.extend(guard_checks(policy, target));
            }
            if !policy.resend_cooldown.is_zero() && !matches!(req.action, LimitAction::Failover(_)) {
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
        LimitAction::Verify(purpose) => {
            window(LimitRule::IdentifierVerifies, Subject::Ident(ident), policy.identifier_verifies);
            if let Some(ip) = req.client_ip {
                window(LimitRule::IpVerifies, Subject::Ip(IpBlock::of(ip)), policy.ip_verifies);
            }
            // Device-login signatures cannot be guessed, and that flow never clears the count.
            if policy.identifier_guesses.is_on() && purpose != Purpose::DeviceLogin {
                let kind = CheckKind::Guesses(policy.identifier_guesses);
                checks.insert(0, Check { rule: LimitRule::IdentifierGuesses, subject: Subject::Ident(ident), kind });
            }
        }
    }
    Ok(checks)
}

/// The conversion guard's checks of an SMS destination: its prefix, then its country.
pub fn guard_checks(policy: &LimitPolicy, target: &SmsTarget) -> impl Iterator<Item = Check> + use<> {
    let guard = policy.conversion_guard;
    let (value, len) = target.prefix(policy.prefix_digits);
    [(Subject::Prefix(value, len), guard.prefix_floor), (Subject::Country(target.country_code()), guard.country_floor)]
        .into_iter()
        .filter(move |_| guard.is_on())
        .map(move |(subject, floor)| Check {
            rule: LimitRule::DestinationGuard,
            subject,
            kind: CheckKind::Conversion(guard, floor),
        })
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
    use crate::rules::sms::DEFAULT_DAILY_BUDGET;

    fn req(action: LimitAction, sms: Option<&str>) -> LimitRequest {
        LimitRequest {
            action,
            ident: IdentHash([1; 16]),
            client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            sms: sms.map(|n| SmsTarget::from_e164(n, if n.starts_with("+44") { 44 } else { 1 }).unwrap()),
            segments: 1,
            now: Timestamp::from_millis(0),
        }
    }

    fn rules(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().map(|c| c.rule.as_str()).collect()
    }

    #[test]
    fn a_login_send_is_checked_by_cooldown_identifier_ip_prefix_and_budget_rules() {
        let p = LimitPolicy::default();
        let checks = plan(&p, &req(LimitAction::Send(Purpose::Login), Some("+12022001234"))).unwrap();
        assert_eq!(
            rules(&checks),
            [
                "resend_cooldown",
                "identifier_send_limit",
                "identifier_login_limit",
                "ip_send_limit",
                "prefix_send_limit",
                "sms_budget_exhausted",
                "destination_throttled",
                "destination_throttled"
            ]
        );
        assert_eq!((checks[6].subject, checks[7].subject), (Subject::Prefix(1_202_200, 7), Subject::Country(1)));
        assert_eq!(checks[4].subject, Subject::Prefix(1_202_200, 7));
        // The default: a total budget only, priced from the shipped table, until midnight UTC.
        let budget = Spend { budget: DEFAULT_DAILY_BUDGET, cost: 100, ends_at: Timestamp::from_millis(86_400_000) };
        assert_eq!((checks[5].subject, checks[5].kind), (Subject::Everywhere, CheckKind::Spend(budget)));
        let per_country = LimitPolicy { sms_budget: SpendPolicy { country_daily: 7, ..SpendPolicy::OFF }, ..p.clone() };
        let uk = plan(&per_country, &req(LimitAction::Send(Purpose::Login), Some("+447911123456"))).unwrap();
        assert_eq!(uk.last().map(|c| c.subject), Some(Subject::Country(44)), "per country, without a total");
        let resend = plan(&p, &req(LimitAction::Resend(Purpose::Register), None)).unwrap();
        assert_eq!(
            rules(&resend),
            ["resend_cooldown", "identifier_send_limit", "identifier_resend_limit", "ip_send_limit"]
        );
        assert_eq!(resend[0].subject, Subject::IdentPurpose(IdentHash([1; 16]), Purpose::Register));
        let verify = plan(&p, &req(LimitAction::Verify(Purpose::Login), Some("+12022001234"))).unwrap();
        assert_eq!(rules(&verify), ["identifier_guess_limit", "identifier_verify_limit", "ip_verify_limit"]);
        assert_eq!(verify[0].subject, Subject::Ident(IdentHash([1; 16])), "one budget for every purpose");
        let device = plan(&p, &req(LimitAction::Verify(Purpose::DeviceLogin), None)).unwrap();
        assert_eq!(rules(&device), ["identifier_verify_limit", "ip_verify_limit"], "signatures are not guesses");
    }

    #[test]
    fn blocks_start_after_the_free_checks_and_double_up_to_the_cap() {
        let b = GUESS_BUDGET;
        let minutes: Vec<u64> = (1..=16).map(|n| b.block_after(n).as_secs() / 60).collect();
        assert_eq!(minutes, [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 240, 240, 240]);
        assert_eq!(b.block_after(u32::MAX), Duration::from_secs(4 * 3600), "no overflow");
        assert_eq!(GuessBudget::OFF.block_after(100), Duration::ZERO);
        let odd = GuessBudget { max_block: Duration::ZERO, ..b };
        assert_eq!(odd.block_after(6), MINUTE, "a cap below the first block never turns blocks off");
    }

    /// The numbers `docs/limits.md` and issue 15 quote, for the default preset.
    #[test]
    fn the_default_budget_allows_18_guesses_a_day_and_6_a_day_after() {
        let year = Duration::from_secs(365 * 24 * 3600);
        let with_redis = GUESS_BUDGET.attacker(year, None).unwrap();
        assert_eq!(with_redis.most_in_a_day, 18);
        // 6 at once, 8 more by minute 255, then one every 4 hours for the rest of the year.
        let steady = 6 + 8 + (525_600 - 255 - 1) / 240;
        assert_eq!(with_redis.total, steady);
        let restarted_daily = GUESS_BUDGET.attacker(year, Some(Duration::from_secs(24 * 3600))).unwrap();
        assert_eq!(restarted_daily, AttackerBound { most_in_a_day: 18, total: 18 * 365 });
        // Forgetting after 24 h instead of 3 days would let bursts of 13 every 1 567 minutes win.
        let forgetful = GuessBudget { forget_after: Duration::from_secs(24 * 3600), ..GUESS_BUDGET };
        let bursts = forgetful.attacker(year, None).unwrap();
        assert_eq!(bursts.most_in_a_day, 18);
        assert!(bursts.total > 4_300 && bursts.total > 2 * with_redis.total - 200, "{bursts:?}");
        assert_eq!(GuessBudget::OFF.attacker(year, None), None);
    }

    #[test]
    fn below_the_forget_floor_waiting_pays_and_above_it_does_not() {
        let year = Duration::from_secs(365 * 24 * 3600);
        assert_eq!(GUESS_BUDGET.forget_floor(), Duration::from_secs(3105 * 60), "240 × 14 − 255 minutes");
        for preset in [Preset::Low, Preset::Medium, Preset::High] {
            let b = LimitPolicy::preset(preset).identifier_guesses;
            let floor = b.forget_floor();
            assert!(b.forget_after >= floor, "{preset:?}: {:?} < {floor:?}", b.forget_after);
            // Guessing every max_block after the first blocks: what the floor promises.
            let forever = b.attacker(year, None).unwrap().total;
            let at_floor = GuessBudget { forget_after: floor, ..b }.attacker(year, None).unwrap().total;
            assert_eq!(at_floor, forever, "{preset:?}: at the floor, waiting does not pay");
            // (A little below, the gain is a fraction of a guess per cycle: a year shows a fifth.)
            let below = GuessBudget { forget_after: floor * 4 / 5, ..b }.attacker(year, None).unwrap().total;
            assert!(below > forever, "{preset:?}: a fifth below the floor, it does ({below} > {forever})");
        }
        assert_eq!(GuessBudget::OFF.forget_floor(), Duration::ZERO);
    }

    #[test]
    fn every_preset_budget_is_tighter_than_the_looser_one() {
        let year = Duration::from_secs(365 * 24 * 3600);
        let bound = |p| LimitPolicy::preset(p).identifier_guesses.attacker(year, None).unwrap();
        let (low, medium, high) = (bound(Preset::Low), bound(Preset::Medium), bound(Preset::High));
        assert!(high.total < medium.total && medium.total < low.total, "{high:?} {medium:?} {low:?}");
        assert!(high.most_in_a_day < medium.most_in_a_day && medium.most_in_a_day < low.most_in_a_day);
        assert!(medium.most_in_a_day <= 20, "issue 15: at most 20 a day in the default preset");
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
    fn sends_count_ipv6_by_its_56_and_checks_by_its_64() {
        let a: Ipv6Addr = "2001:db8:1:200::1".parse().unwrap();
        let same_56: Ipv6Addr = "2001:db8:1:2ff:ffff::9".parse().unwrap();
        let next_56: Ipv6Addr = "2001:db8:1:300::1".parse().unwrap();
        let at = |ip: Ipv6Addr, bits| IpBlock::within(ip.into(), bits);
        assert_eq!(at(a, 56), at(same_56, 56));
        assert_ne!(at(a, 56), at(next_56, 56));
        assert_ne!(at(a, 64), at(same_56, 64), "another /64");
        assert_ne!(at(a, 56), at(a, 64), "a /56 is never taken for the /64 it starts with");
        assert_eq!(at(a, 64), IpBlock::of(a.into()));
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(IpBlock::within(v4, 56), IpBlock::of(v4), "IPv4 is whole");
        let p = LimitPolicy { ip_sends: Rule::per(1, HOUR), ip_verifies: Rule::per(1, HOUR), ..LimitPolicy::off() };
        let from = |action, ip: Ipv6Addr| {
            let r = LimitRequest { client_ip: Some(ip.into()), ..req(action, None) };
            plan(&p, &r).unwrap()[0].subject
        };
        let send = LimitAction::Send(Purpose::Login);
        let verify = LimitAction::Verify(Purpose::Login);
        assert_eq!(from(send, a), from(send, same_56));
        assert_ne!(from(verify, a), from(verify, same_56));
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
