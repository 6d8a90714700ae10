//! The challenge state machine: one per (identifier, purpose), pure and clock-driven.
//!
//! ```text
//!             issue (new code, new salt, attempts = 0)
//!   ┌──────────────────────────────────────────────────────────────┐
//!   │                                                              │
//!   ▼          right code, before expiry                           │
//! Pending ───────────────────────────────────► Verified (single use:│
//!   │  │                                        every later attempt │
//!   │  │ wrong code: attempts += 1              is refused)         │
//!   │  └──► attempts == max ──► Blocked (burned: even the right     │
//!   │                           code is refused)                    │
//!   │ now >= expires_at                                             │
//!   └──────────────────────────► Expired                            │
//!                                                                   │
//!   any state ──────────── resend / new send ───────────────────────┘
//! ```
//!
//! Re-issuing replaces the sealed code, so the previous code stops working at once. Whether a
//! new code may be issued (cooldown, caps) is decided *before* issue by the limiter, not here.
//! Expiry is evaluated lazily against the caller's `now`; the shard reclaims the memory later.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rules::clock::{CompactTimestamp, Timestamp};
use crate::rules::code::{Code, Sealed};
use crate::rules::keys::Keys;

/// Wrong answers (typed codes, or device-login signatures) that burn a challenge, unless the
/// configuration says otherwise (`otp.max_attempts`). The one place this default is written.
pub const MAX_ATTEMPTS: u8 = 5;

/// How long a one-time code works unless configured otherwise.
pub const CODE_LIFETIME: Duration = Duration::from_secs(300);

/// The range a code's configured lifetime must fall in: long enough to type it, short
/// enough that a code read off a lost phone is soon worthless (NIST SP 800-63B).
pub const CODE_LIFETIME_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(10)..=Duration::from_secs(600);

/// How long a device-login nonce works unless configured otherwise: a signature is made by the
/// device in a moment, so a short life costs nothing and narrows replay.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(60);

/// What a code was sent for. A login code cannot complete a registration, and vice versa.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Purpose {
    Register = 1,
    Login = 2,
    /// A device-login nonce (fingerprint login): keyed by the device, not by an identifier;
    /// answered with a signature instead of a typed code, and never delivered by a notifier.
    DeviceLogin = 3,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::Login => "login",
            Purpose::DeviceLogin => "device_login",
        }
    }
}

/// The four statuses of the state machine in the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Pending,
    Verified,
    Expired,
    Blocked,
}

/// What a registration's code activates: the profile sent with the request that issued it.
/// The account is created (or, for one an older version left unverified, completed) with it
/// when the code verifies, so a stranger who registers the same number later cannot change
/// the profile the owner's code activates: their registration comes with a code of its own.
#[derive(Clone, PartialEq, Eq)]
pub struct Profile {
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
}

impl std::fmt::Debug for Profile {
    /// Personal data: only its shape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Profile(…, email: {})", self.email.is_some())
    }
}

/// Result of one verification attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The code was right; the challenge is now consumed.
    Verified,
    /// Wrong code; `attempts_left` more tries before the challenge burns.
    Wrong { attempts_left: u8 },
    /// The challenge burned on this or an earlier attempt; no code can verify it.
    Blocked,
    /// The code's lifetime is over.
    Expired,
    /// The code was already used once.
    AlreadyUsed,
    /// No code was issued for this identifier and purpose (or it was reclaimed long ago).
    NoChallenge,
}

/// One issued code and its progress. 40 bytes, byte-aligned (so the shard map pads nothing
/// beside its 17-byte key); the shard map holds a million of these.
#[derive(Clone, Copy, Debug)]
pub struct Challenge {
    sealed: Sealed,
    expires_at: CompactTimestamp,
    attempts: u8,
    status: Status,
}

impl Challenge {
    pub fn issue(sealed: Sealed, now: Timestamp, lifetime: Duration) -> Self {
        Challenge { sealed, expires_at: now.plus(lifetime).into(), attempts: 0, status: Status::Pending }
    }

    pub fn expires_at(&self) -> Timestamp {
        self.expires_at.get()
    }

    pub fn attempts(&self) -> u8 {
        self.attempts
    }

    /// The status as of `now` (a pending challenge past its lifetime reads as expired).
    pub fn status(&self, now: Timestamp) -> Status {
        match self.status {
            Status::Pending if now >= self.expires_at() => Status::Expired,
            s => s,
        }
    }

    /// Applies one attempt. `max_attempts` wrong codes burn the challenge; the comparison runs
    /// only on a pending, unexpired challenge, so a burned one answers without the key.
    pub fn verify(&mut self, keys: &Keys, attempt: &Code, now: Timestamp, max_attempts: u8) -> VerifyOutcome {
        self.attempt(|sealed| sealed.opens_with(keys, attempt), now, max_attempts)
    }

    /// Applies one attempt of any kind: `opens` says whether the attempt answers the sealed
    /// secret (a typed code, or a device-login nonce together with its signature check). The
    /// rules (single use, expiry, `max_attempts` wrong answers burn) are the same for all.
    pub fn attempt(&mut self, opens: impl FnOnce(&Sealed) -> bool, now: Timestamp, max_attempts: u8) -> VerifyOutcome {
        match self.status(now) {
            Status::Verified => return VerifyOutcome::AlreadyUsed,
            Status::Blocked => return VerifyOutcome::Blocked,
            Status::Expired => {
                self.status = Status::Expired;
                return VerifyOutcome::Expired;
            }
            Status::Pending => {}
        }
        if opens(&self.sealed) {
            self.status = Status::Verified;
            return VerifyOutcome::Verified;
        }
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts >= max_attempts {
            self.status = Status::Blocked;
            return VerifyOutcome::Blocked;
        }
        VerifyOutcome::Wrong { attempts_left: max_attempts - self.attempts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::code::{Alphabet, CodePolicy};

    const LIFE: Duration = Duration::from_secs(300);

    fn setup() -> (Keys, CodePolicy, Code, Challenge, Timestamp) {
        let keys = Keys::from_master(&[1; 32]);
        let policy = CodePolicy::new(6, Alphabet::Numeric).unwrap();
        let code = policy.generate();
        let now = Timestamp::from_millis(1_000_000);
        let ch = Challenge::issue(Sealed::seal(&keys, &code), now, LIFE);
        (keys, policy, code, ch, now)
    }

    fn wrong(policy: &CodePolicy, code: &Code) -> Code {
        let s: String = code.expose().chars().map(|c| if c == '9' { '0' } else { ((c as u8) + 1) as char }).collect();
        policy.normalise_attempt(&s)
    }

    #[test]
    fn right_code_verifies_once() {
        let (keys, _, code, mut ch, now) = setup();
        assert_eq!(ch.verify(&keys, &code, now, 5), VerifyOutcome::Verified);
        assert_eq!(ch.status(now), Status::Verified);
        assert_eq!(ch.verify(&keys, &code, now, 5), VerifyOutcome::AlreadyUsed);
    }

    #[test]
    fn fifth_wrong_attempt_burns_and_sixth_right_one_is_refused() {
        let (keys, policy, code, mut ch, now) = setup();
        let bad = wrong(&policy, &code);
        for left in (1..5).rev() {
            assert_eq!(ch.verify(&keys, &bad, now, 5), VerifyOutcome::Wrong { attempts_left: left });
        }
        assert_eq!(ch.verify(&keys, &bad, now, 5), VerifyOutcome::Blocked);
        assert_eq!(ch.status(now), Status::Blocked);
        assert_eq!(ch.verify(&keys, &code, now, 5), VerifyOutcome::Blocked);
    }

    #[test]
    fn expiry_is_exact_to_the_millisecond() {
        let (keys, _, code, ch, now) = setup();
        let mut before = ch;
        assert_eq!(before.verify(&keys, &code, now.plus(LIFE - Duration::from_millis(1)), 5), VerifyOutcome::Verified);
        let mut at = ch;
        assert_eq!(at.verify(&keys, &code, now.plus(LIFE), 5), VerifyOutcome::Expired);
        assert_eq!(at.status(now), Status::Expired, "expiry sticks once observed");
    }

    #[test]
    fn reissue_invalidates_the_old_code() {
        let (keys, policy, old, _, now) = setup();
        let new = policy.generate();
        let mut ch = Challenge::issue(Sealed::seal(&keys, &new), now, LIFE);
        if old != new {
            assert!(matches!(ch.verify(&keys, &old, now, 5), VerifyOutcome::Wrong { .. }));
        }
        assert_eq!(ch.verify(&keys, &new, now, 5), VerifyOutcome::Verified);
    }

    #[test]
    fn challenge_stays_small() {
        assert_eq!(std::mem::size_of::<Challenge>(), 40);
        assert_eq!(std::mem::align_of::<Challenge>(), 1, "no padding beside the shard map's key");
    }
}
