//! `[otp]`: the one-time-code rules.

use otpd_actors::rules::challenge::{CODE_LIFETIME, CODE_LIFETIME_RANGE, MAX_ATTEMPTS};
use otpd_actors::rules::code::{Alphabet, CodePolicy, DEFAULT_CODE_LENGTH};
use otpd_actors::rules::limits::{RESEND_COOLDOWN, SEND_CAP};

use super::value::{Dur, check, section};

section! {
    /// The one-time-code rules.
    pub struct OtpConfig {
        /// Characters per code, up to 10, with at least 10^6 possible codes: numeric 6..=10,
        /// alphanumeric 5..=10.
        code_length: u8 = DEFAULT_CODE_LENGTH,
        /// `numeric` or `alphanumeric`.
        alphabet: Alphabet = Alphabet::Numeric,
        /// How long a code works (at most 10 minutes).
        lifetime: Dur = Dur(CODE_LIFETIME),
        /// Wrong codes before a challenge burns.
        max_attempts: u8 = MAX_ATTEMPTS,
        /// Minimum time between two codes for one identifier and purpose.
        resend_cooldown: Dur = Dur(RESEND_COOLDOWN),
        /// Window of the per-identifier send cap.
        send_window: Dur = Dur(SEND_CAP.window),
        /// Codes per identifier per window.
        max_sends_per_window: u32 = SEND_CAP.limit,
        /// Answer 404 (login) / 409 (register) for unknown / existing accounts instead of
        /// enumeration-safe answers. Off by default.
        reveal_accounts: bool = false,
        /// Accounts never verified are deleted this long after they were created (`0s`: kept).
        /// This version creates an account only when its code verifies; older ones created
        /// it at registration, so numbers nobody owns left records.
        unverified_account_ttl: Dur = Dur(UNVERIFIED_ACCOUNT_TTL),
    }
}

/// How long an account never verified is kept, unless configured otherwise.
pub const UNVERIFIED_ACCOUNT_TTL: std::time::Duration = std::time::Duration::from_secs(3 * 24 * 3600);

impl OtpConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        // The engine's own rule (`CodePolicy::new`), so the two cannot disagree.
        if let Err(e) = CodePolicy::new(self.code_length, self.alphabet) {
            errors.push(format!("otp.code_length: {e}"));
        }
        check(errors, CODE_LIFETIME_RANGE.contains(&self.lifetime.0), || {
            format!("otp.lifetime: must be between 10s and 10m, got {:?}", self.lifetime)
        });
        check(errors, (1..=20).contains(&self.max_attempts), || {
            format!("otp.max_attempts: must be 1..=20, got {}", self.max_attempts)
        });
        check(errors, self.max_sends_per_window >= 1, || "otp.max_sends_per_window: must be at least 1".into());
        check(errors, !self.send_window.0.is_zero(), || "otp.send_window: must be more than zero".into());
    }
}
