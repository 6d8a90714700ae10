//! Crypto-shredding of the audit trail's personal fields.
//!
//! An audit event names who it is about by keyed hash only, but it also holds the client's
//! address and user agent, which are personal data. Those two fields are stored sealed
//! (ChaCha20-Poly1305) under a key of the event's *subject*: the identifier hash when the event
//! has one, otherwise the account id. Erasing an account deletes its subjects' keys, so its
//! events stay in the append-only trail, every field readable but those two, which no one can
//! read again. Events with neither (a refusal before any identifier was read) are sealed under
//! an anonymous subject's keys, which no erasure deletes: the same work for every event, so an
//! event's cost does not tell a known device or account from an unknown one.
//!
//! The sealed bytes are `key id (16) ‖ nonce (12) ‖ ciphertext ‖ tag (16)` of the postcard
//! encoding of [`Personal`], with the event's subject as associated data, so a sealed field
//! moved to another subject's event does not open. Where the keys come from: [`KeySource`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use otpd_actors::ports::{AuditEvent, StoreError};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::UserId;
use otpd_actors::rules::keys::IdentHash;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Length of a subject key.
pub const KEY_LEN: usize = 32;
/// Length of a key's id.
pub const KEY_ID_LEN: usize = 16;
/// How long a subject's key seals its events before a new one is drawn.
pub const KEY_LIFETIME: Duration = Duration::from_secs(60);
/// Subjects whose current key a node keeps in memory at most.
const KEYS_KEPT: usize = 100_000;

/// Whose key seals an event's personal fields: a tag byte, then 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(pub [u8; 17]);

impl Subject {
    pub fn identifier(ident: &IdentHash) -> Subject {
        let mut s = [0u8; 17];
        s[0] = b'i';
        s[1..].copy_from_slice(&ident.0);
        Subject(s)
    }

    pub fn account(user: UserId) -> Subject {
        let mut s = [0u8; 17];
        s[0] = b'u';
        s[1..].copy_from_slice(user.0.as_bytes());
        Subject(s)
    }

    /// Events that name neither an identifier nor an account: refusals before either was read.
    /// Their fields are sealed too (the same work as any event's), under keys no erasure deletes.
    pub const ANONYMOUS: Subject = Subject([b'a'; 17]);

    /// The subject of an event: its identifier, else its account, else [`Subject::ANONYMOUS`].
    pub fn of(event: &AuditEvent) -> Subject {
        match (&event.ident_hash, event.user_id) {
            (Some(ident), _) => Subject::identifier(ident),
            (None, Some(user)) => Subject::account(user),
            (None, None) => Subject::ANONYMOUS,
        }
    }

    /// The subjects of an account: what erasing it shreds.
    pub fn of_account(ident: &IdentHash, user: UserId) -> [Subject; 2] {
        [Subject::identifier(ident), Subject::account(user)]
    }
}

/// A subject key, as the store keeps it (`subject ‖ id → key`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SubjectKey {
    pub id: [u8; KEY_ID_LEN],
    pub key: [u8; KEY_LEN],
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectKey").field("id", &crate::secrets::hex_encode(&self.id)).finish_non_exhaustive()
    }
}

/// Where subject keys come from: random keys, each drawn for one subject and used for events
/// within [`KEY_LIFETIME`] (of event time) of the first, kept in memory meanwhile. ScyllaDB's
/// store writes the key beside every event it seals (a blind, idempotent write, no read, no
/// coordination between nodes); the embedded store writes it once, when drawn, in the same
/// commit as the event. Whether a key is drawn depends on the identifier's own events in the
/// last minute, never on whether an account exists, which the resend cooldown tells anyone
/// anyway. Erasing a subject deletes its keys from the store and
/// [`forget`](KeySource::forget)s the current one here, so no later write brings an erased key
/// back. Another node may still hold a key of the subject drawn less than [`KEY_LIFETIME`]
/// ago and write it again with its next event for the subject: its events of that minute
/// would read again; older ones would not.
pub struct KeySource {
    /// Each subject's current key and the event time it seals events until (ms). Subjects
    /// are keyed hashes and server-drawn ids, which no client can pick to collide: a fast
    /// hash is safe here.
    current: Mutex<FxHashMap<Subject, (SubjectKey, u64)>>,
}

impl Default for KeySource {
    fn default() -> Self {
        KeySource { current: Mutex::new(FxHashMap::default()) }
    }
}

/// A key for one event, from [`KeySource::draw`].
#[derive(Clone, Copy, Debug)]
pub struct Drawn {
    pub key: SubjectKey,
    /// Every event this key seals was written before this instant: what retention compares.
    pub until: Timestamp,
    /// Drawn for this event: the store has not been given it yet.
    pub fresh: bool,
}

impl KeySource {
    /// The key `subject`'s events are sealed with now (by the system clock).
    pub fn key_for(&self, subject: &Subject) -> SubjectKey {
        self.draw(subject, Timestamp::system_now()).key
    }

    /// The key that seals `subject`'s event written at `at`: the current one while `at` is
    /// within [`KEY_LIFETIME`] of when it was drawn, else a new one.
    pub fn draw(&self, subject: &Subject, at: Timestamp) -> Drawn {
        let at_ms = at.as_millis();
        let mut current = self.current.lock();
        if let Some((key, until)) = current.get(subject)
            && at_ms < *until
        {
            return Drawn { key: *key, until: Timestamp::from_millis(*until), fresh: false };
        }
        if current.len() >= KEYS_KEPT {
            current.retain(|_, (_, until)| at_ms < *until);
            if current.len() >= KEYS_KEPT {
                // Forgetting a key costs a new one: one more row for the subject.
                current.clear();
            }
        }
        // From the thread's CSPRNG (`rand`'s ChaCha12, seeded and reseeded from the OS), like
        // the seal nonces: aws-lc's `RAND_bytes` mixes in RDRAND on every call, which cost
        // ~1.4 % of a verification's CPU on this virtual machine.
        let key = SubjectKey { id: rand::random(), key: rand::random() };
        let until = at_ms.saturating_add(KEY_LIFETIME.as_millis() as u64);
        current.insert(*subject, (key, until));
        Drawn { key, until: Timestamp::from_millis(until), fresh: true }
    }

    /// Drops the subject's current key: its next event gets a new one.
    pub fn forget(&self, subject: &Subject) {
        self.current.lock().remove(subject);
    }
}

/// The personal fields of an event, as sealed.
#[derive(Serialize, Deserialize)]
struct Personal {
    client_ip: Option<IpAddr>,
    user_agent: Option<String>,
}

fn aead(key: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte ChaCha20-Poly1305 key"))
}

/// Takes the personal fields out of `event` and returns them sealed under `key`: `id ‖ nonce ‖
/// ciphertext ‖ tag`. `None` if the event has none, so nothing is sealed.
pub fn seal(event: &mut AuditEvent, subject: &Subject, key: &SubjectKey) -> Option<Vec<u8>> {
    if event.client_ip.is_none() && event.user_agent.is_none() {
        return None;
    }
    let personal =
        Personal { client_ip: event.client_ip.take(), user_agent: event.user_agent.take().map(|u| u.to_string()) };
    // A nonce need not be secret, only never repeat under one key: the thread's CSPRNG
    // (seeded from the OS) draws it without a system call per event.
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut body = postcard::to_stdvec(&personal).expect("postcard encodes an address and a string");
    body.reserve(CHACHA20_POLY1305.tag_len());
    aead(&key.key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&subject.0), &mut body)
        .expect("ChaCha20-Poly1305 seals any length the trail holds");
    let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + body.len());
    out.extend_from_slice(&key.id);
    out.extend_from_slice(&nonce);
    out.extend(body);
    Some(out)
}

/// The id of the key `sealed` was sealed with.
pub fn key_id(sealed: &[u8]) -> Result<[u8; KEY_ID_LEN], StoreError> {
    sealed
        .get(..KEY_ID_LEN)
        .and_then(|id| id.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("sealed audit fields: shorter than a key id".into()))
}

/// Puts the fields `sealed` holds back into `event`. With no key (the account was erased) the
/// fields stay empty; bytes that do not open under the key are corruption.
pub fn open(
    event: &mut AuditEvent,
    subject: &Subject,
    key: Option<&[u8; KEY_LEN]>,
    sealed: &[u8],
) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("sealed audit fields: {what}"));
    if sealed.len() < KEY_ID_LEN + NONCE_LEN {
        return Err(corrupt("shorter than a key id and a nonce"));
    }
    let Some(key) = key else { return Ok(()) };
    let (nonce, body) = sealed[KEY_ID_LEN..].split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt("bad nonce"))?;
    let mut body = body.to_vec();
    let plain = aead(key)
        .open_in_place(nonce, Aad::from(&subject.0), &mut body)
        .map_err(|_| corrupt("do not open under the subject's key"))?;
    let personal: Personal = postcard::from_bytes(plain).map_err(|_| corrupt("not the personal fields"))?;
    event.client_ip = personal.client_ip;
    event.user_agent = personal.user_agent.map(Arc::from);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use otpd_actors::rules::audit::{Api, AuditOutcome, Step};
    use otpd_actors::rules::clock::Timestamp;

    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            at: Timestamp::from_millis(1),
            trace_id: "t".into(),
            api: Api::Login,
            step: Step::Done,
            outcome: AuditOutcome::Ok,
            message: Cow::Borrowed("ok"),
            client_ip: Some("203.0.113.9".parse().unwrap()),
            user_agent: Some("Shredder/1.0".into()),
            ident_hash: Some(IdentHash([3; 16])),
            user_id: None,
        }
    }

    #[test]
    fn sealed_fields_open_under_their_key_and_subject_only() {
        let keys = KeySource::default();
        let mut e = event();
        let subject = Subject::of(&e);
        let key = keys.key_for(&subject);
        assert_eq!(keys.key_for(&subject), key, "one key per subject while it lives");
        assert_ne!(keys.key_for(&Subject::identifier(&IdentHash([4; 16]))).key, key.key);
        assert_ne!(KeySource::default().key_for(&subject).id, key.id, "each node draws its own");
        keys.forget(&subject);
        assert_ne!(keys.key_for(&subject), key, "a forgotten key is never drawn again");
        let sealed = seal(&mut e, &subject, &key).unwrap();
        assert_eq!(key_id(&sealed).unwrap(), key.id);
        assert_eq!((e.client_ip, e.user_agent.clone()), (None, None), "taken out of the event");
        assert!(!sealed.windows(12).any(|w| w == b"Shredder/1.0"), "not in clear");

        let mut read = e.clone();
        open(&mut read, &subject, Some(&key.key), &sealed).unwrap();
        assert_eq!(read, event());

        let mut erased = e.clone();
        open(&mut erased, &subject, None, &sealed).unwrap();
        assert_eq!((erased.client_ip, erased.user_agent), (None, None), "no key: nothing to read");

        let other = Subject::identifier(&IdentHash([4; 16]));
        assert!(open(&mut e.clone(), &other, Some(&key.key), &sealed).is_err(), "another subject's event");
        assert!(open(&mut e.clone(), &subject, Some(&[7; KEY_LEN]), &sealed).is_err(), "another key");
        assert!(open(&mut e.clone(), &subject, Some(&key.key), &sealed[..20]).is_err(), "truncated");
    }

    #[test]
    fn an_event_without_personal_fields_seals_nothing() {
        let mut e = event();
        e.client_ip = None;
        e.user_agent = None;
        let subject = Subject::of(&e);
        assert!(seal(&mut e, &subject, &KeySource::default().key_for(&subject)).is_none());
        let mut anon = event();
        anon.ident_hash = None;
        assert_eq!(Subject::of(&anon), Subject::ANONYMOUS);
        anon.user_id = Some(UserId(uuid::Uuid::from_u128(5)));
        assert_eq!(Subject::of(&anon).0[0], b'u');
    }
}
