//! The bytes on disk: keyspaces, keys and record encodings.
//!
//! | keyspace | key | value |
//! | --- | --- | --- |
//! | `users` | user id (16 B) | record |
//! | `users_by_ident` | identifier hash (16 B) | user id |
//! | `sessions` | session id (16 B) | record (format 2; format 1 from before refresh rotation is read and upgraded on its next write) |
//! | `sessions_by_user` | user id ‖ session id (32 B) | empty |
//! | `devices` | device id (16 B) | record |
//! | `devices_by_user` | user id ‖ device id (32 B) | empty |
//! | `passkeys` | credential id (1..=1023 B) | record |
//! | `passkeys_by_user` | user id ‖ created at (ms, u64 BE) ‖ credential id | empty |
//! | `audit`, `audit_by_ident`, `audit_by_trace` | (empty) | where audit events were kept before the trail (`super::trail`); a store that still has some moves them there on open |
//! | `subject_keys` | subject (17 B) ‖ key id (16 B) | key (32 B) ‖ the event time before which it sealed every event (ms, u64 BE) |
//!
//! Audit records (in the trail's segments) are `encode_audit_into`'s bytes: format 2, personal
//! fields sealed (`store::shred`); format 1 is read.
//!
//! Records are postcard-encoded behind a one-byte format version, so a format can change
//! without a migration: the reader knows each version it was ever written in. The golden
//! test below pins today's bytes, so a change of a record type that would make stored data
//! unreadable fails here first.

use fjall::{Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace};
use otpd_actors::ports::{AuditEvent, AuthMethod, Passkey, Session, StoreError};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::{SessionId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::shred::{self, KEY_ID_LEN, KEY_LEN, Subject};

/// The keyspaces, opened once and shared by the writer and the readers.
#[derive(Clone)]
pub(super) struct Spaces {
    pub users: SingleWriterTxKeyspace,
    pub users_by_ident: SingleWriterTxKeyspace,
    pub sessions: SingleWriterTxKeyspace,
    pub sessions_by_user: SingleWriterTxKeyspace,
    pub devices: SingleWriterTxKeyspace,
    pub devices_by_user: SingleWriterTxKeyspace,
    pub passkeys: SingleWriterTxKeyspace,
    pub passkeys_by_user: SingleWriterTxKeyspace,
    pub audit: SingleWriterTxKeyspace,
    pub audit_by_ident: SingleWriterTxKeyspace,
    pub audit_by_trace: SingleWriterTxKeyspace,
    pub subject_keys: SingleWriterTxKeyspace,
}

impl Spaces {
    pub fn open(db: &SingleWriterTxDatabase, memtable_bytes: usize) -> Result<Self, StoreError> {
        let options = || fjall::KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes.max(1 << 20) as u64);
        let ks = |name: &str| db.keyspace(name, options).map_err(unavailable);
        Ok(Spaces {
            users: ks("users")?,
            users_by_ident: ks("users_by_ident")?,
            sessions: ks("sessions")?,
            sessions_by_user: ks("sessions_by_user")?,
            devices: ks("devices")?,
            devices_by_user: ks("devices_by_user")?,
            passkeys: ks("passkeys")?,
            passkeys_by_user: ks("passkeys_by_user")?,
            audit: ks("audit")?,
            audit_by_ident: ks("audit_by_ident")?,
            audit_by_trace: ks("audit_by_trace")?,
            subject_keys: ks("subject_keys")?,
        })
    }
}

/// Version byte in front of every record.
const RECORD_V1: u8 = 1;
/// Sessions since refresh rotation (more fields than format 1).
const SESSION_V2: u8 = 2;
/// Audit events since crypto-shredding: the event without its personal fields, then the
/// sealed fields (empty if there were none).
const AUDIT_V2: u8 = 2;

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    versioned(RECORD_V1, value)
}

/// `version` then `value`, encoded in place into one buffer sized for a typical record (a
/// second buffer and its growth were ~2 % of a verification's CPU).
fn versioned<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    out.push(version);
    postcard::to_extend(value, out).map_err(corrupt)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((v, _)) => Err(corrupt(format!("unknown record version {v}"))),
        None => Err(corrupt("empty record")),
    }
}

/// Sessions are written in format 2; format 1 (before refresh rotation) is still read.
pub(super) fn encode_session(session: &Session) -> Result<Vec<u8>, StoreError> {
    versioned(SESSION_V2, session)
}

pub(super) fn decode_session(bytes: &[u8]) -> Result<Session, StoreError> {
    /// The session record of format 1.
    #[derive(serde::Deserialize)]
    struct SessionV1 {
        id: SessionId,
        user_id: UserId,
        refresh_digest: [u8; 32],
        method: AuthMethod,
        created_at: Timestamp,
        expires_at: Timestamp,
        revoked_at: Option<Timestamp>,
    }
    match bytes.split_first() {
        Some((&SESSION_V2, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&RECORD_V1, rest)) => {
            let v1: SessionV1 = postcard::from_bytes(rest).map_err(corrupt)?;
            let mut s = Session::new(v1.id, v1.user_id, v1.refresh_digest, v1.method, v1.created_at, v1.expires_at);
            s.revoked_at = v1.revoked_at;
            Ok(s)
        }
        Some((v, _)) => Err(corrupt(format!("unknown session record version {v}"))),
        None => Err(corrupt("empty record")),
    }
}

/// An audit event in format 2: the event (personal fields taken out), then `sealed`.
#[cfg(test)]
pub(super) fn encode_audit(event: &AuditEvent, sealed: Option<&[u8]>) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    encode_audit_into(event, sealed, &mut out)?;
    Ok(out)
}

/// An audit event in format 2 (the event, personal fields taken out, then `sealed`), appended to
/// `out`: the trail's batch buffer.
pub(super) fn encode_audit_into(
    event: &AuditEvent,
    sealed: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    out.push(AUDIT_V2);
    postcard::to_io(event, &mut *out).map_err(corrupt)?;
    out.extend_from_slice(sealed.unwrap_or_default());
    Ok(())
}

/// An audit event as stored and its sealed personal fields (`None`: none, or format 1, whose
/// fields are in clear).
pub(super) fn decode_audit(bytes: &[u8]) -> Result<(AuditEvent, Option<&[u8]>), StoreError> {
    match bytes.split_first() {
        Some((&AUDIT_V2, rest)) => {
            let (event, sealed) = postcard::take_from_bytes(rest).map_err(corrupt)?;
            Ok((event, (!sealed.is_empty()).then_some(sealed)))
        }
        Some((&RECORD_V1, _)) => Ok((decode(bytes)?, None)),
        Some((v, _)) => Err(corrupt(format!("unknown audit record version {v}"))),
        None => Err(corrupt("empty record")),
    }
}

/// The key of a subject key: the subject, then the key's id.
pub(super) fn subject_key_key(subject: &Subject, id: &[u8; KEY_ID_LEN]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..17].copy_from_slice(&subject.0);
    k[17..].copy_from_slice(id);
    k
}

/// A subject key's value: the key, then when it last sealed an event (for retention).
pub(super) fn subject_key_value(key: &[u8; KEY_LEN], at: Timestamp) -> [u8; 40] {
    let mut v = [0u8; 40];
    v[..32].copy_from_slice(key);
    v[32..].copy_from_slice(&at.as_millis().to_be_bytes());
    v
}

/// The key and its last use, from a stored value.
pub(super) fn parse_subject_key(value: &[u8]) -> Result<([u8; KEY_LEN], Timestamp), StoreError> {
    let key = value.get(..32).and_then(|k| k.try_into().ok()).ok_or_else(|| corrupt("subject key is not 40 bytes"))?;
    let at = value.get(32..40).and_then(|t| t.try_into().ok()).ok_or_else(|| corrupt("subject key is not 40 bytes"))?;
    Ok((key, Timestamp::from_millis(u64::from_be_bytes(at))))
}

/// Reads an audit record back into an event, opening its sealed fields with the subject's
/// key if the store still has it (an erased account's fields stay empty).
pub(super) fn read_event(r: &impl Readable, sp: &Spaces, bytes: &[u8]) -> Result<AuditEvent, StoreError> {
    let (mut event, sealed) = decode_audit(bytes)?;
    if let Some(sealed) = sealed {
        let subject = Subject::of(&event);
        let id = shred::key_id(sealed)?;
        let key = r.get(&sp.subject_keys, subject_key_key(&subject, &id)).map_err(unavailable)?;
        let key = key.map(|v| parse_subject_key(&v)).transpose()?.map(|(k, _)| k);
        shred::open(&mut event, &subject, key.as_ref(), sealed)?;
    }
    Ok(event)
}

/// The key of an index entry that pairs two ids (`sessions_by_user`, `devices_by_user`).
pub(super) fn pair_key(a: &[u8; 16], b: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(a);
    k[16..].copy_from_slice(b);
    k
}

/// Every second half of the keys of `index` that start with `prefix`, in key order.
pub(super) fn ids_with_prefix(
    r: &impl Readable,
    index: &SingleWriterTxKeyspace,
    prefix: &[u8; 16],
) -> Result<Vec<[u8; 16]>, StoreError> {
    let mut out = Vec::new();
    for guard in r.prefix(index, prefix) {
        let key = guard.key().map_err(unavailable)?;
        out.push(key.get(16..32).and_then(|k| k.try_into().ok()).ok_or_else(|| corrupt("index key is not 32 bytes"))?);
    }
    Ok(out)
}

/// The key of a passkey's entry in `passkeys_by_user`: oldest first within a user.
pub(super) fn passkey_index_key(passkey: &Passkey) -> Vec<u8> {
    let mut k = Vec::with_capacity(24 + passkey.id.0.len());
    k.extend_from_slice(passkey.user_id.0.as_bytes());
    k.extend_from_slice(&passkey.created_at.as_millis().to_be_bytes());
    k.extend_from_slice(&passkey.id.0);
    k
}

/// Every passkey of `user`, oldest first.
pub(super) fn passkeys_of(r: &impl Readable, sp: &Spaces, user: &UserId) -> Result<Vec<Passkey>, StoreError> {
    let mut out = Vec::new();
    for guard in r.prefix(&sp.passkeys_by_user, user.0.as_bytes()) {
        let key = guard.key().map_err(unavailable)?;
        let id = key.get(24..).filter(|id| !id.is_empty()).ok_or_else(|| corrupt("passkey index key too short"))?;
        let bytes =
            r.get(&sp.passkeys, id).map_err(unavailable)?.ok_or_else(|| corrupt("index names a missing passkey"))?;
        out.push(decode(&bytes)?);
    }
    Ok(out)
}

/// The records that `index` names under `prefix` (`sessions_by_user` → `sessions`, …), in
/// key order, each read with `decode`; an index entry without its record is corruption.
pub(super) fn indexed<T>(
    r: &impl Readable,
    index: &SingleWriterTxKeyspace,
    records: &SingleWriterTxKeyspace,
    prefix: &[u8; 16],
    what: &str,
    decode: impl Fn(&[u8]) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for id in ids_with_prefix(r, index, prefix)? {
        let bytes =
            r.get(records, id).map_err(unavailable)?.ok_or_else(|| corrupt(format!("index names a missing {what}")))?;
        out.push(decode(&bytes)?);
    }
    Ok(out)
}

/// The trace id's prefix in the audit trail's index.
pub(super) fn trace_prefix(trace_id: &str) -> [u8; 16] {
    blake3::hash(trace_id.as_bytes()).as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

pub(super) fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    key.try_into().map(u64::from_be_bytes).map_err(|_| corrupt("audit key is not 8 bytes"))
}

#[cfg(test)]
mod tests {
    use otpd_actors::ports::{Device, Platform, RevokeReason, User};
    use otpd_actors::rules::audit::{Api, AuditOutcome, Step};
    use otpd_actors::rules::device_key::{DeviceKey, KeyAlgorithm};
    use otpd_actors::rules::identifier::Identifier;
    use otpd_actors::rules::ids::DeviceId;
    use otpd_actors::rules::keys::IdentHash;
    use otpd_actors::rules::passkey::{CredentialId, PasskeyRef};

    use super::*;

    #[test]
    fn records_carry_a_version() {
        let bytes = encode(&42u32).unwrap();
        assert_eq!(bytes[0], RECORD_V1);
        assert_eq!(decode::<u32>(&bytes).unwrap(), 42);
        assert!(matches!(decode::<u32>(&[9, 1]), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode::<u32>(&[]), Err(StoreError::Corrupt(_))));
    }

    /// One record of each kind, every optional field set.
    fn samples() -> (User, Session, Device, AuditEvent) {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let uid = UserId(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));
        let user = User {
            id: uid,
            identifier: Identifier::Phone { e164: "+12025550123".into(), country_code: 1 },
            ident_hash: IdentHash([7; 16]),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: Some("ada@example.com".into()),
            verified: true,
            created_at: at,
            verified_at: Some(at),
            updated_at: at,
        };
        let expires = Timestamp::from_millis(1_702_592_000_000);
        let mut session = Session::new(SessionId(uuid::Uuid::from_u128(2)), uid, [9; 32], AuthMethod::Otp, at, expires);
        session.generation = 2;
        session.refreshed_at = Some(at);
        session.retired_digests = vec![[1; 16], [2; 16]];
        session.client_ip = Some("203.0.113.7".parse().unwrap());
        session.user_agent = Some("curl/8".into());
        session.revoked_at = Some(at);
        session.revoke_reason = Some(RevokeReason::RefreshTokenReuse);
        let device = Device {
            id: DeviceId(uuid::Uuid::from_u128(3)),
            user_id: uid,
            name: "Ada's phone".into(),
            platform: Platform::Ios,
            key: DeviceKey { algorithm: KeyAlgorithm::Es256, spki_der: vec![0x30, 0x59, 0x01] },
            created_at: at,
            revoked_at: None,
        };
        let event = AuditEvent {
            at,
            trace_id: "trace-1".into(),
            api: Api::LoginVerify,
            step: Step::Done,
            outcome: AuditOutcome::Ok,
            message: "signed in".into(),
            client_ip: Some("2001:db8::1".parse().unwrap()),
            user_agent: Some("curl/8".into()),
            ident_hash: Some(IdentHash([7; 16])),
            user_id: Some(uid),
        };
        (user, session, device, event)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    // The bytes the store wrote for `samples()` before this module was split out of one file
    // (and before the audit trail's `api`/`step` became enums): stores written then must
    // still read.
    const USER: &str = "011001900000000070008000000000000001000c2b3132303235353530313233010707070707070707070707070707070703416461084c6f76656c616365010f616461406578616d706c652e636f6d0180d095ffbc310180d095ffbc3180d095ffbc31";
    const SESSION: &str = "021000000000000000000000000000000002100190000000007000800000000000000109090909090909090909090909090909090909090909090909090909090909090080d095ffbc3180e090d3c6310180d095ffbc310102020180d095ffbc310201010101010101010101010101010101020202020202020202020202020202020100cb00710701066375726c2f38";
    const DEVICE: &str = "01100000000000000000000000000000000310019000000000700080000000000000010b41646127732070686f6e6500000330590180d095ffbc3100";
    const AUDIT: &str = "0180d095ffbc310774726163652d310c6c6f67696e5f76657269667904646f6e6500097369676e656420696e010120010db800000000000000000000000101066375726c2f380107070707070707070707070707070707011001900000000070008000000000000001";

    #[test]
    fn stored_records_keep_their_bytes() {
        let (user, session, device, event) = samples();
        assert_eq!(hex(&encode(&user).unwrap()), USER);
        assert_eq!(hex(&encode_session(&session).unwrap()), SESSION);
        assert_eq!(hex(&encode(&device).unwrap()), DEVICE);
        assert_eq!(hex(&encode(&event).unwrap()), AUDIT);
        assert_eq!(decode::<User>(&unhex(USER)).unwrap(), user);
        assert_eq!(decode_session(&unhex(SESSION)).unwrap(), session);
        assert_eq!(decode::<Device>(&unhex(DEVICE)).unwrap(), device);
        let read: AuditEvent = decode(&unhex(AUDIT)).unwrap();
        assert_eq!((read.api, read.step, read.outcome), (event.api, event.step, event.outcome));
        assert_eq!((read.trace_id, read.message, read.client_ip), (event.trace_id, event.message, event.client_ip));
        assert_eq!(
            (read.user_agent, read.ident_hash, read.user_id),
            (event.user_agent, event.ident_hash, Some(user.id))
        );
    }

    #[test]
    fn a_passkey_session_names_its_passkey_and_older_ones_read_as_unnamed() {
        let (_, mut session, _, _) = samples();
        // Format 2: version, session id and user id (each a length and 16 bytes), the refresh
        // digest (32 bytes), then the method's variant.
        const METHOD_AT: usize = 1 + 17 + 17 + 32;
        let passkey = PasskeyRef::of(&CredentialId(vec![5; 32]));
        session.method = AuthMethod::Passkey(passkey);
        let bytes = encode_session(&session).unwrap();
        assert_eq!(bytes[METHOD_AT], 3);
        assert_eq!(&bytes[METHOD_AT + 1..METHOD_AT + 18], [&[16u8][..], passkey.0.as_bytes()].concat());
        assert_eq!(decode_session(&bytes).unwrap(), session);
        // A passkey login stored before sessions named their passkey (variant 2, no payload).
        let mut old = unhex(SESSION);
        assert_eq!(old[METHOD_AT], 0, "the sample session was opened by a code");
        old[METHOD_AT] = 2;
        assert_eq!(decode_session(&old).unwrap().method, AuthMethod::PasskeyUnnamed);
    }
}
