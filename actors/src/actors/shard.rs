//! `ShardActor`: owns the challenges of every identifier that hashes to it.
//!
//! One actor per identifier would cost ~10.9 KB and a 33 µs spawn each at a million live
//! challenges; a shard owning a map costs a 57-byte slot (key and [`Challenge`], byte-aligned)
//! plus the map's slack, and a 23-byte heap entry (docs/decisions/2026-11-21-challenges-in-shard-maps.md). Messages
//! for one identifier all go to its shard and are handled one at a time, in arrival order, so
//! every challenge behaves as if it had its own actor: 50 concurrent verifies of one code
//! yield exactly one `Verified`.
//!
//! Memory is reclaimed without scanning the map: every issue pushes `(expires_at, key)` onto a
//! min-heap, and a periodic `Reclaim` pops only the entries whose time (plus a grace period,
//! so a late attempt still reads "expired" rather than "no code") has come. A heap entry made
//! stale by a re-issue is recognised by its deadline and skipped.
//!
//! A registration's profile waits beside its challenge (a side map: only registrations pay
//! for it) until its code verifies, when the verdict hands it to the engine (see
//! [`Profile`]). A resend, which carries no profile, keeps the one of a registration not yet
//! completed; the profile goes when its code verifies or its challenge is reclaimed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rustc_hash::FxHashMap;

use crate::rules::challenge::{
    CODE_LIFETIME, Challenge, MAX_ATTEMPTS, NONCE_LIFETIME, Profile, Purpose, Status, VerifyOutcome,
};
use crate::rules::clock::{Clock, CompactTimestamp, Timestamp};
use crate::rules::code::{Code, Sealed};
use crate::rules::device_key::Nonce;
use crate::rules::keys::{IdentHash, Keys};

/// What a challenge is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChallengeKey {
    pub subject: IdentHash,
    pub purpose: Purpose,
}

/// Live challenges of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub index: usize,
    pub challenges: usize,
    pub pending: usize,
}

pub enum ShardMsg {
    /// Stores a freshly sealed code for `key`, replacing (and so invalidating) any earlier one,
    /// with the registration's profile (`None`: keep the pending one's). Replies with the new
    /// code's expiry and whether a registration (a profile) waits for it.
    Issue {
        key: ChallengeKey,
        sealed: Sealed,
        profile: Option<Box<Profile>>,
        now: Timestamp,
        reply: RpcReplyPort<Issued>,
    },
    /// Checks one attempt against `key`'s challenge; a verified registration hands over its
    /// profile.
    Verify { key: ChallengeKey, attempt: Code, now: Timestamp, reply: RpcReplyPort<Checked> },
    /// Checks one device-login answer against `key`'s challenge: the echoed nonce must open
    /// the seal and `signature_valid` (checked by the engine, off the shard's mailbox) must
    /// hold; anything else counts as one wrong attempt, like a wrong code.
    Redeem {
        key: ChallengeKey,
        nonce: Nonce,
        signature_valid: bool,
        now: Timestamp,
        reply: RpcReplyPort<VerifyOutcome>,
    },
    /// Drops challenges whose lifetime and grace period are over (sent by the shard's timer).
    Reclaim,
    /// Reports the shard's size.
    Stats { reply: RpcReplyPort<ShardStats> },
    /// Panics inside the handler, to prove that supervision restarts the shard.
    #[cfg(feature = "testkit")]
    Panic,
}

// Local only: the cluster feature of ractor asks every message type to say whether it
// can cross nodes; this one never does.
impl ractor::Message for ShardMsg {}

/// A request to the shard that holds a challenge, as data: what [`ShardMsg`] carries without
/// its reply port. The engine runs it on the local shard or, in a cluster, ships it to the
/// node that owns the challenge (the cluster's `wire` module encodes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardCommand {
    Issue { key: ChallengeKey, sealed: Sealed, profile: Option<Box<Profile>>, now: Timestamp },
    Verify { key: ChallengeKey, attempt: Code, now: Timestamp },
    Redeem { key: ChallengeKey, nonce: Nonce, signature_valid: bool, now: Timestamp },
}

/// A verdict, with the profile of a registration whose code verified.
pub type Checked = (VerifyOutcome, Option<Box<Profile>>);

/// A new code's expiry, and whether a registration waits for it (a resend of a registration
/// whose account does not exist yet is delivered only then).
pub type Issued = (Timestamp, bool);

/// What a [`ShardCommand`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardAnswer {
    /// The new code's expiry and whether a registration waits for it (answer to `Issue`).
    Issued(Timestamp, bool),
    /// The attempt's outcome (answer to `Verify` and `Redeem`), and a verified registration's
    /// profile.
    Checked(VerifyOutcome, Option<Box<Profile>>),
}

impl ShardCommand {
    pub fn key(&self) -> &ChallengeKey {
        match self {
            ShardCommand::Issue { key, .. } | ShardCommand::Verify { key, .. } | ShardCommand::Redeem { key, .. } => {
                key
            }
        }
    }
}

/// Fixed configuration shared by every shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Lifetime of a one-time code (register, login).
    pub lifetime: Duration,
    /// Lifetime of a device-login nonce.
    pub device_lifetime: Duration,
    pub max_attempts: u8,
    /// How long an expired challenge is kept so that a late attempt reads "expired".
    pub grace: Duration,
    /// How often the shard reclaims.
    pub reclaim_every: Duration,
    /// Most heap entries popped per `Reclaim`; the rest wait for the next one, so a mass expiry
    /// never stalls the shard's mailbox.
    pub reclaim_batch: usize,
}

impl ShardConfig {
    /// The shipped defaults (`[otp]`, `[devices]` and `[engine]` start from these).
    pub const DEFAULT: ShardConfig = ShardConfig {
        lifetime: CODE_LIFETIME,
        device_lifetime: NONCE_LIFETIME,
        max_attempts: MAX_ATTEMPTS,
        grace: Duration::from_secs(60),
        reclaim_every: Duration::from_secs(1),
        reclaim_batch: 20_000,
    };
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig::DEFAULT
    }
}

impl ShardConfig {
    /// How long a challenge issued for `purpose` lives.
    pub fn lifetime_of(&self, purpose: Purpose) -> Duration {
        match purpose {
            Purpose::Register | Purpose::Login => self.lifetime,
            Purpose::DeviceLogin => self.device_lifetime,
        }
    }
}

/// The actor: fixed configuration and shared keys. Cloned for every (re)spawn.
#[derive(Clone)]
pub struct ShardActor {
    pub config: ShardConfig,
    pub keys: Arc<Keys>,
    pub clock: Arc<dyn Clock>,
}

/// What a shard changes.
pub struct ShardState {
    index: usize,
    challenges: FxHashMap<ChallengeKey, Challenge>,
    /// The profiles of pending registrations, by their challenge's key.
    profiles: FxHashMap<ChallengeKey, Box<Profile>>,
    /// Each issue's deadline (23 bytes: compact, byte-aligned).
    expiries: BinaryHeap<Reverse<(CompactTimestamp, ChallengeKey)>>,
}

impl ShardState {
    fn new(index: usize) -> Self {
        ShardState {
            index,
            challenges: FxHashMap::default(),
            profiles: FxHashMap::default(),
            expiries: BinaryHeap::new(),
        }
    }
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    /// The shard's index in the router.
    type Arguments = usize;

    async fn pre_start(&self, myself: ActorRef<ShardMsg>, index: usize) -> Result<ShardState, ActorProcessingErr> {
        myself.send_interval(self.config.reclaim_every, || ShardMsg::Reclaim);
        Ok(ShardState::new(index))
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Issue { key, sealed, profile, now, reply } => {
                let _ = reply.send(self.issue_with(state, key, sealed, profile, now));
            }
            ShardMsg::Verify { key, attempt, now, reply } => {
                let _ = reply.send(self.verify(state, key, &attempt, now));
            }
            ShardMsg::Redeem { key, nonce, signature_valid, now, reply } => {
                let _ = reply.send(self.redeem(state, key, &nonce, signature_valid, now));
            }
            ShardMsg::Reclaim => {
                if self.reclaim(state, self.clock.now()) {
                    // More is due: continue after the messages already waiting.
                    let _ = myself.cast(ShardMsg::Reclaim);
                }
            }
            ShardMsg::Stats { reply } => {
                let _ = reply.send(self.stats(state));
            }
            #[cfg(feature = "testkit")]
            ShardMsg::Panic => panic!("shard {} asked to panic (fault injection)", state.index),
        }
        Ok(())
    }
}

impl ShardActor {
    #[cfg(test)]
    fn issue(&self, state: &mut ShardState, key: ChallengeKey, sealed: Sealed, now: Timestamp) -> Timestamp {
        self.issue_with(state, key, sealed, None, now).0
    }

    fn issue_with(
        &self,
        state: &mut ShardState,
        key: ChallengeKey,
        sealed: Sealed,
        profile: Option<Box<Profile>>,
        now: Timestamp,
    ) -> Issued {
        let challenge = Challenge::issue(sealed, now, self.config.lifetime_of(key.purpose));
        let expires_at = challenge.expires_at();
        let replaced = state.challenges.insert(key, challenge);
        match profile {
            Some(profile) => {
                state.profiles.insert(key, profile);
            }
            // A resend keeps the profile of a registration not yet completed (its code pending,
            // burned or expired but not yet reclaimed); a completed one's is gone already.
            None if replaced.is_some_and(|c| c.status(now) != Status::Verified) => {}
            None => {
                state.profiles.remove(&key);
            }
        }
        state.expiries.push(Reverse((expires_at.into(), key)));
        (expires_at, state.profiles.contains_key(&key))
    }

    fn verify(&self, state: &mut ShardState, key: ChallengeKey, attempt: &Code, now: Timestamp) -> Checked {
        let outcome = match state.challenges.get_mut(&key) {
            Some(challenge) => challenge.verify(&self.keys, attempt, now, self.config.max_attempts),
            None => VerifyOutcome::NoChallenge,
        };
        let profile = if outcome == VerifyOutcome::Verified { state.profiles.remove(&key) } else { None };
        (outcome, profile)
    }

    fn redeem(
        &self,
        state: &mut ShardState,
        key: ChallengeKey,
        nonce: &Nonce,
        signature_valid: bool,
        now: Timestamp,
    ) -> VerifyOutcome {
        let Some(challenge) = state.challenges.get_mut(&key) else {
            return VerifyOutcome::NoChallenge;
        };
        // Both checks always run: the seal comparison is constant-time whatever the signature said.
        let opens = |sealed: &Sealed| sealed.opens_with_secret(&self.keys, nonce.as_bytes()) & signature_valid;
        challenge.attempt(opens, now, self.config.max_attempts)
    }

    /// Pops due heap entries; returns whether more are due than one batch could take.
    fn reclaim(&self, state: &mut ShardState, now: Timestamp) -> bool {
        for _ in 0..self.config.reclaim_batch {
            let Some(Reverse((deadline, key))) = state.expiries.peek().copied() else {
                break;
            };
            let deadline = deadline.get();
            if deadline.plus(self.config.grace) > now {
                break;
            }
            state.expiries.pop();
            // A re-issued challenge has a later deadline and its own heap entry.
            if state.challenges.get(&key).is_some_and(|c| c.expires_at() == deadline) {
                state.challenges.remove(&key);
                state.profiles.remove(&key);
            }
        }
        let more = state.expiries.peek().is_some_and(|Reverse((d, _))| d.get().plus(self.config.grace) <= now);
        if !more {
            shrink_if_sparse(&mut state.challenges);
            shrink_if_sparse(&mut state.profiles);
            if state.expiries.capacity() > 4 * state.expiries.len().max(1024) {
                state.expiries.shrink_to_fit();
            }
        }
        more
    }

    fn stats(&self, state: &ShardState) -> ShardStats {
        let now = self.clock.now();
        ShardStats {
            index: state.index,
            challenges: state.challenges.len(),
            pending: state.challenges.values().filter(|c| c.status(now) == Status::Pending).count(),
        }
    }
}

/// Gives memory back after a peak (a burst of a million sends that then expire).
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut FxHashMap<K, V>) {
    if map.capacity() > 4 * map.len().max(1024) {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::clock::ManualClock;
    use crate::rules::code::{Alphabet, CodePolicy};

    fn actor(clock: Arc<ManualClock>) -> ShardActor {
        ShardActor { config: ShardConfig::default(), keys: Arc::new(Keys::from_master(&[5; 32])), clock }
    }

    fn key(b: u8) -> ChallengeKey {
        ChallengeKey { subject: IdentHash([b; 16]), purpose: Purpose::Login }
    }

    #[test]
    fn reclaim_respects_reissue_and_grace() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let a = actor(clock.clone());
        let mut s = ShardState::new(0);
        let policy = CodePolicy::new(6, Alphabet::Numeric).unwrap();
        let seal = || Sealed::seal(&a.keys, &policy.generate());
        a.issue(&mut s, key(1), seal(), Timestamp::from_millis(0));
        a.issue(&mut s, key(2), seal(), Timestamp::from_millis(0));
        // key(1) re-issued at 100 s: its first heap entry becomes stale.
        a.issue(&mut s, key(1), seal(), Timestamp::from_millis(100_000));
        assert_eq!(s.expiries.len(), 3);

        // At 300 s both first codes expired, but the grace period keeps them.
        assert!(!a.reclaim(&mut s, Timestamp::from_millis(300_000)));
        assert_eq!(s.challenges.len(), 2);
        // At 360 s key(2) goes; key(1)'s stale entry is popped without removing the new code.
        a.reclaim(&mut s, Timestamp::from_millis(360_000));
        assert_eq!(s.challenges.len(), 1);
        assert!(s.challenges.contains_key(&key(1)));
        assert_eq!(s.expiries.len(), 1);
        a.reclaim(&mut s, Timestamp::from_millis(460_000));
        assert!(s.challenges.is_empty() && s.expiries.is_empty());
    }

    #[test]
    fn a_live_challenge_takes_57_bytes_in_its_map_and_23_in_the_heap() {
        assert_eq!(std::mem::size_of::<(ChallengeKey, Challenge)>(), 57);
        assert_eq!(std::mem::size_of::<Reverse<(CompactTimestamp, ChallengeKey)>>(), 23);
    }

    #[test]
    fn reclaim_is_batched() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let mut a = actor(clock);
        a.config.reclaim_batch = 10;
        let mut s = ShardState::new(0);
        let policy = CodePolicy::new(6, Alphabet::Numeric).unwrap();
        for b in 0..25u8 {
            a.issue(&mut s, key(b), Sealed::seal(&a.keys, &policy.generate()), Timestamp::from_millis(0));
        }
        let later = Timestamp::from_millis(1_000_000);
        assert!(a.reclaim(&mut s, later));
        assert!(a.reclaim(&mut s, later));
        assert!(!a.reclaim(&mut s, later));
        assert!(s.challenges.is_empty());
    }

    #[test]
    fn device_challenges_have_their_own_lifetime_and_need_both_nonce_and_signature() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let a = actor(clock);
        let mut s = ShardState::new(0);
        let key = ChallengeKey { subject: IdentHash([7; 16]), purpose: Purpose::DeviceLogin };
        let nonce = Nonce::generate();
        let issue = |s: &mut ShardState, at: u64| {
            a.issue(s, key, Sealed::seal_secret(&a.keys, nonce.as_bytes()), Timestamp::from_millis(at))
        };
        assert_eq!(issue(&mut s, 0), Timestamp::from_millis(60_000), "60 s, not the 5 min of codes");
        let at = Timestamp::from_millis(1_000);
        assert_eq!(a.redeem(&mut s, key, &Nonce::generate(), true, at), VerifyOutcome::Wrong { attempts_left: 4 });
        assert_eq!(a.redeem(&mut s, key, &nonce, false, at), VerifyOutcome::Wrong { attempts_left: 3 });
        assert_eq!(a.redeem(&mut s, key, &nonce, true, at), VerifyOutcome::Verified);
        assert_eq!(a.redeem(&mut s, key, &nonce, true, at), VerifyOutcome::AlreadyUsed);

        issue(&mut s, 0);
        for _ in 0..4 {
            assert!(matches!(a.redeem(&mut s, key, &nonce, false, at), VerifyOutcome::Wrong { .. }));
        }
        assert_eq!(a.redeem(&mut s, key, &nonce, false, at), VerifyOutcome::Blocked, "five wrong signatures burn it");
        assert_eq!(a.redeem(&mut s, key, &nonce, true, at), VerifyOutcome::Blocked);

        issue(&mut s, 0);
        assert_eq!(a.redeem(&mut s, key, &nonce, true, Timestamp::from_millis(60_000)), VerifyOutcome::Expired);
        let login = ChallengeKey { subject: IdentHash([7; 16]), purpose: Purpose::Login };
        assert_eq!(a.redeem(&mut s, login, &nonce, true, at), VerifyOutcome::NoChallenge, "bound to its purpose");
    }

    #[test]
    fn verify_unknown_key_is_no_challenge() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let a = actor(clock);
        let mut s = ShardState::new(0);
        let code = CodePolicy::new(6, Alphabet::Numeric).unwrap().generate();
        assert_eq!(a.verify(&mut s, key(9), &code, Timestamp::from_millis(0)), (VerifyOutcome::NoChallenge, None));
    }

    #[test]
    fn a_registration_hands_over_the_profile_sent_with_its_code() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let a = actor(clock);
        let mut s = ShardState::new(0);
        let policy = CodePolicy::new(6, Alphabet::Numeric).unwrap();
        let reg = ChallengeKey { subject: IdentHash([3; 16]), purpose: Purpose::Register };
        let profile =
            |name: &str| Some(Box::new(Profile { first_name: name.into(), last_name: "L".into(), email: None }));
        let at = |ms| Timestamp::from_millis(ms);
        let owners = policy.generate();
        a.issue_with(&mut s, reg, Sealed::seal(&a.keys, &owners), profile("Owner"), at(0));
        // A stranger registers the same number: a code of their own, with their profile.
        let strangers = policy.generate();
        a.issue_with(&mut s, reg, Sealed::seal(&a.keys, &strangers), profile("Stranger"), at(30_000));
        assert!(matches!(a.verify(&mut s, reg, &owners, at(31_000)).0, VerifyOutcome::Wrong { .. }));
        // The owner asks for a resend (no profile): the pending profile stays with the new code.
        let resent = policy.generate();
        a.issue_with(&mut s, reg, Sealed::seal(&a.keys, &resent), None, at(62_000));
        assert_eq!(a.verify(&mut s, reg, &resent, at(63_000)), (VerifyOutcome::Verified, profile("Stranger")));
        assert_eq!(a.verify(&mut s, reg, &resent, at(63_000)), (VerifyOutcome::AlreadyUsed, None), "handed over once");
        // A resend after the registration was completed carries no profile.
        a.issue_with(&mut s, reg, Sealed::seal(&a.keys, &owners), None, at(64_000));
        assert_eq!(a.verify(&mut s, reg, &owners, at(65_000)), (VerifyOutcome::Verified, None));
        // One after its code was burned or expired (not yet reclaimed) keeps it.
        let (burned, again) = (policy.generate(), policy.generate());
        a.issue_with(&mut s, reg, Sealed::seal(&a.keys, &burned), profile("Again"), at(66_000));
        for _ in 0..5 {
            a.verify(&mut s, reg, &owners, at(66_500));
        }
        assert_eq!(a.verify(&mut s, reg, &burned, at(66_600)).0, VerifyOutcome::Blocked);
        a.issue_with(&mut s, reg, Sealed::seal(&a.keys, &again), None, at(67_000));
        assert_eq!(a.verify(&mut s, reg, &again, at(68_000)), (VerifyOutcome::Verified, profile("Again")));
        a.issue_with(&mut s, reg, Sealed::seal(&a.keys, &owners), profile("Late"), at(70_000));
        a.reclaim(&mut s, at(10_000_000));
        assert!(s.challenges.is_empty() && s.profiles.is_empty(), "reclaimed together");
    }
}
