//! Conformance suites every adapter runs (feature `testkit`).
//!
//! Each suite takes a fresh, empty implementation and panics with a message naming the broken
//! contract. The embedded store runs them in `tests/`; the ScyllaDB and Redis adapters run the
//! same functions, so "passes the conformance suite" means the same thing for all of them.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::ports::{
    AuditEvent, AuditLog, AuthMethod, Census, CensusSource, Device, DeviceStore, InsertDevice, InsertPasskey,
    InsertUser, Limiter, Passkey, PasskeyStore, PasskeyUse, Platform, RETIRED_REFRESH_DIGESTS, RevokeReason, Rotation,
    Session, SessionStore, User, UserStore,
};
use crate::rules::audit::{Api, AuditOutcome, Step};
use crate::rules::challenge::Purpose;
use crate::rules::clock::Timestamp;
use crate::rules::device_key::{DeviceKey, KeyAlgorithm};
use crate::rules::identifier::Identifier;
use crate::rules::ids::{DeviceId, SessionId, UserId};
use crate::rules::keys::IdentHash;
use crate::rules::limits::{ConversionGuard, DestinationChange, GuardMode, Pin, Subject};
use crate::rules::limits::{
    Decision, GuessBudget, LimitAction, LimitPolicy, LimitRequest, LimitRule, NumberPrefix, Rule, SmsTarget,
};
use crate::rules::passkey::{CredentialId, PasskeyRef};
use crate::rules::sms::SpendPolicy;

fn user(n: u8, at: Timestamp) -> User {
    User {
        id: UserId(Uuid::now_v7()),
        identifier: Identifier::Phone { e164: format!("+1202555{n:04}"), country_code: 1 },
        ident_hash: IdentHash([n; 16]),
        first_name: format!("First{n}"),
        last_name: "Tester".into(),
        email: n.is_multiple_of(2).then(|| format!("user{n}@example.com")),
        verified: false,
        created_at: at,
        verified_at: None,
        updated_at: at,
    }
}

/// Users: insert, unique identifier under concurrency, both lookups, update.
pub async fn user_store(store: Arc<dyn UserStore>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let alice = user(1, t);
    assert_eq!(store.user_by_identifier(&alice.ident_hash).await.unwrap(), None, "empty store finds nobody");
    assert_eq!(store.insert_user(&alice).await.unwrap(), InsertUser::Inserted);
    assert_eq!(store.user_by_identifier(&alice.ident_hash).await.unwrap().as_deref(), Some(&alice));
    assert_eq!(store.user_by_id(alice.id).await.unwrap().as_ref(), Some(&alice));

    // A second account for the same identifier is refused and the first one returned.
    let mut imposter = user(1, t);
    imposter.first_name = "Mallory".into();
    match store.insert_user(&imposter).await.unwrap() {
        InsertUser::Exists(existing) => assert_eq!(*existing, alice, "insert_user returns the existing account"),
        InsertUser::Inserted => panic!("insert_user accepted a duplicate identifier"),
    }
    assert_eq!(store.user_by_id(imposter.id).await.unwrap(), None, "the refused account was not stored");

    // Concurrent inserts for one identifier: exactly one wins.
    let racers: Vec<User> = (0..16).map(|_| user(2, t)).collect();
    let mut handles = Vec::new();
    for u in racers.clone() {
        let store = store.clone();
        handles.push(tokio::spawn(async move { store.insert_user(&u).await.unwrap() }));
    }
    let mut inserted = 0;
    for h in handles {
        if h.await.unwrap() == InsertUser::Inserted {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1, "exactly one concurrent insert for an identifier succeeds");
    let winner = store.user_by_identifier(&IdentHash([2; 16])).await.unwrap().unwrap();
    assert!(racers.iter().any(|r| r.id == winner.id));

    // Update replaces the record; lookups by both keys see it.
    let mut verified = alice.clone();
    verified.verified = true;
    verified.verified_at = Some(t.plus(Duration::from_secs(5)));
    verified.first_name = "Alicia".into();
    store.update_user(&verified).await.unwrap();
    assert_eq!(store.user_by_id(alice.id).await.unwrap().as_ref(), Some(&verified));
    assert_eq!(store.user_by_identifier(&alice.ident_hash).await.unwrap().as_deref(), Some(&verified));
    assert_eq!(store.user_by_id(UserId(Uuid::now_v7())).await.unwrap(), None);
}

/// The purge of accounts never verified: those created before the cut-off go; a younger one
/// and a verified one stay; the identifier is free again.
pub async fn user_purge(store: Arc<dyn UserStore>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let hour = Duration::from_secs(3600);
    let winner = user(2, t);
    let verified = User { verified: true, verified_at: Some(t), ..user(1, t) };
    for u in [&winner, &verified] {
        assert_eq!(store.insert_user(u).await.unwrap(), InsertUser::Inserted);
    }
    let old = user(3, t);
    let young = user(4, t.plus(hour * 2));
    let kept = User { verified: true, verified_at: Some(t), ..user(5, t) };
    for u in [&old, &young, &kept] {
        assert_eq!(store.insert_user(u).await.unwrap(), InsertUser::Inserted);
    }
    assert_eq!(store.purge_unverified(t.plus(hour), 100).await.unwrap(), 2, "the old unverified ones");
    for gone in [&old, &winner] {
        assert_eq!(store.user_by_identifier(&gone.ident_hash).await.unwrap(), None, "purged");
        assert_eq!(store.user_by_id(gone.id).await.unwrap(), None, "purged, by id too");
    }
    for stays in [&young, &kept, &verified] {
        assert_eq!(store.user_by_id(stays.id).await.unwrap().as_ref(), Some(stays), "kept");
    }
    assert_eq!(store.purge_unverified(t.plus(hour), 100).await.unwrap(), 0, "nothing left to purge");
    assert_eq!(store.insert_user(&user(3, t)).await.unwrap(), InsertUser::Inserted, "the identifier is free");
}

fn session(user: UserId, digest: u8, method: AuthMethod, at: Timestamp) -> Session {
    Session::new(SessionId(Uuid::now_v7()), user, [digest; 32], method, at, at.plus(Duration::from_secs(3600)))
}

/// Sessions: insert and read back; refresh rotation as a compare-and-swap with reuse
/// detection; revocation of one, of a device's, of all of a user's sessions; listing.
pub async fn session_store(store: Arc<dyn SessionStore>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let later = move |s: u64| t.plus(Duration::from_secs(s));
    let user = UserId(Uuid::now_v7());
    let mut s = session(user, 9, AuthMethod::Otp, t);
    s.client_ip = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
    s.user_agent = Some("conformance/1".into());
    store.insert_session(&s).await.unwrap();
    assert_eq!(store.session(s.id).await.unwrap().as_ref(), Some(&s), "sessions round-trip unchanged");
    assert_eq!(store.session(SessionId(Uuid::now_v7())).await.unwrap(), None);

    // Rotation: the current digest is replaced and retired.
    let rotated = match store.rotate_refresh(s.id, &[9; 32], &[10; 32], later(1)).await.unwrap() {
        Rotation::Rotated(r) => *r,
        other => panic!("rotating with the current digest must rotate, got {other:?}"),
    };
    assert_eq!((rotated.refresh_digest, rotated.generation, rotated.refreshed_at), ([10; 32], 1, Some(later(1))));
    assert_eq!(rotated.retired_digests, vec![[9; 16]]);
    assert_eq!(store.session(s.id).await.unwrap().as_ref(), Some(&rotated), "the rotation is stored");
    // A digest never issued changes nothing.
    assert_eq!(store.rotate_refresh(s.id, &[77; 32], &[78; 32], later(2)).await.unwrap(), Rotation::Mismatch);
    assert_eq!(store.session(s.id).await.unwrap().as_ref(), Some(&rotated), "a mismatch writes nothing");
    // The retired digest again: reuse, and the session is revoked.
    match store.rotate_refresh(s.id, &[9; 32], &[11; 32], later(3)).await.unwrap() {
        Rotation::Reused(r) => {
            assert_eq!((r.revoked_at, r.revoke_reason), (Some(later(3)), Some(RevokeReason::RefreshTokenReuse)));
        }
        other => panic!("a retired digest must read as reuse, got {other:?}"),
    }
    let stored = store.session(s.id).await.unwrap().unwrap();
    assert_eq!(stored.revoke_reason, Some(RevokeReason::RefreshTokenReuse), "the reuse revocation is stored");
    assert_eq!(stored.refresh_digest, [10; 32], "reuse does not rotate");
    // Nothing works on a revoked session, not even its current digest.
    assert_eq!(store.rotate_refresh(s.id, &[10; 32], &[12; 32], later(4)).await.unwrap(), Rotation::Inactive);
    assert_eq!(
        store.rotate_refresh(SessionId(Uuid::now_v7()), &[1; 32], &[2; 32], t).await.unwrap(),
        Rotation::Inactive
    );
    let short = session(user, 20, AuthMethod::Otp, t);
    store.insert_session(&short).await.unwrap();
    assert_eq!(
        store.rotate_refresh(short.id, &[20; 32], &[21; 32], later(3600)).await.unwrap(),
        Rotation::Inactive,
        "an expired session cannot be refreshed"
    );

    // Concurrent rotations presenting one digest: exactly one wins, the others see reuse.
    let raced = session(user, 30, AuthMethod::Otp, t);
    store.insert_session(&raced).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        let id = raced.id;
        handles.push(tokio::spawn(async move { store.rotate_refresh(id, &[30; 32], &[100 + i; 32], later(1)).await }));
    }
    let (mut rotated, mut reused) = (0, 0);
    for h in handles {
        match h.await.unwrap().unwrap() {
            Rotation::Rotated(_) => rotated += 1,
            Rotation::Reused(_) => reused += 1,
            Rotation::Inactive => {}
            Rotation::Mismatch => panic!("a digest that was current is never a mismatch"),
        }
    }
    assert_eq!(rotated, 1, "exactly one concurrent rotation wins");
    assert!(reused >= 1, "the first loser detects reuse");
    assert!(store.session(raced.id).await.unwrap().unwrap().revoked_at.is_some());

    // The retired list is bounded: a digest older than it reads as never issued.
    let long = session(user, 0, AuthMethod::Otp, t);
    store.insert_session(&long).await.unwrap();
    let rounds = RETIRED_REFRESH_DIGESTS as u8 + 8;
    for i in 0..rounds {
        let r = store.rotate_refresh(long.id, &[i; 32], &[i + 1; 32], later(u64::from(i) + 1)).await.unwrap();
        assert!(matches!(r, Rotation::Rotated(_)), "rotation {i}: {r:?}");
    }
    let stored = store.session(long.id).await.unwrap().unwrap();
    assert_eq!(stored.retired_digests.len(), RETIRED_REFRESH_DIGESTS);
    assert_eq!(stored.generation, u32::from(rounds));
    assert_eq!(store.rotate_refresh(long.id, &[0; 32], &[200; 32], later(100)).await.unwrap(), Rotation::Mismatch);
    assert!(matches!(
        store.rotate_refresh(long.id, &[rounds - 1; 32], &[200; 32], later(100)).await.unwrap(),
        Rotation::Reused(_)
    ));

    // Revocation of one session is idempotent.
    let one = session(user, 40, AuthMethod::Otp, t);
    store.insert_session(&one).await.unwrap();
    assert!(store.revoke_session(one.id, RevokeReason::Logout, later(1)).await.unwrap());
    assert!(!store.revoke_session(one.id, RevokeReason::Logout, later(2)).await.unwrap());
    assert!(!store.revoke_session(SessionId(Uuid::now_v7()), RevokeReason::Logout, later(2)).await.unwrap());
    let stored = store.session(one.id).await.unwrap().unwrap();
    assert_eq!((stored.revoked_at, stored.revoke_reason), (Some(later(1)), Some(RevokeReason::Logout)));

    // A device's sessions, a passkey's, then all of a user's; other users are untouched.
    let owner = UserId(Uuid::now_v7());
    let (d1, d2) = (DeviceId(Uuid::now_v7()), DeviceId(Uuid::now_v7()));
    let (p1, p2) = (PasskeyRef::of(&CredentialId(vec![1; 16])), PasskeyRef::of(&CredentialId(vec![2; 16])));
    let by_code = session(owner, 50, AuthMethod::Otp, t);
    let by_d1 = session(owner, 51, AuthMethod::Device(d1), t);
    let by_d2 = session(owner, 52, AuthMethod::Device(d2), t);
    let bystander = session(UserId(Uuid::now_v7()), 53, AuthMethod::Otp, t);
    let by_p1 = session(owner, 54, AuthMethod::Passkey(p1), t);
    let by_p2 = session(owner, 55, AuthMethod::Passkey(p2), t);
    for s in [&by_code, &by_d1, &by_d2, &bystander, &by_p1, &by_p2] {
        store.insert_session(s).await.unwrap();
    }
    assert_eq!(store.session(by_p1.id).await.unwrap().unwrap().method, AuthMethod::Passkey(p1), "the passkey is kept");
    let n = store.revoke_user_sessions(owner, Some(d1.0), RevokeReason::DeviceRevoked, later(1)).await.unwrap();
    assert_eq!(n, 1, "only the sessions opened by the device");
    assert!(store.session(by_d1.id).await.unwrap().unwrap().revoked_at.is_some());
    assert!(store.session(by_d2.id).await.unwrap().unwrap().revoked_at.is_none());
    let n = store.revoke_user_sessions(owner, Some(p1.0), RevokeReason::PasskeyDeleted, later(1)).await.unwrap();
    assert_eq!(n, 1, "only the sessions opened by the passkey");
    let ended = store.session(by_p1.id).await.unwrap().unwrap();
    assert_eq!((ended.revoked_at, ended.revoke_reason), (Some(later(1)), Some(RevokeReason::PasskeyDeleted)));
    assert!(store.session(by_p2.id).await.unwrap().unwrap().revoked_at.is_none());
    let n = store.revoke_user_sessions(owner, None, RevokeReason::LogoutAll, later(2)).await.unwrap();
    assert_eq!(n, 3, "the remaining active sessions");
    assert_eq!(store.revoke_user_sessions(owner, None, RevokeReason::LogoutAll, later(3)).await.unwrap(), 0);
    assert!(store.session(bystander.id).await.unwrap().unwrap().is_active(later(3)), "other users untouched");

    let listed: Vec<SessionId> = store.sessions_of_user(owner).await.unwrap().iter().map(|s| s.id).collect();
    let mut expected = vec![by_code.id, by_d1.id, by_d2.id, by_p1.id, by_p2.id];
    expected.sort();
    assert_eq!(listed, expected, "every session of the user, in id (creation) order");
    assert_eq!(store.sessions_of_user(bystander.user_id).await.unwrap().len(), 1);
    assert!(store.sessions_of_user(UserId(Uuid::now_v7())).await.unwrap().is_empty());
}

fn device(user: UserId, key: u8, at: Timestamp) -> Device {
    Device {
        id: DeviceId(Uuid::now_v7()),
        user_id: user,
        name: format!("phone {key}"),
        platform: Platform::Ios,
        // The store treats keys as opaque bytes; they need not parse.
        key: DeviceKey { algorithm: KeyAlgorithm::Es256, spki_der: vec![key; 91] },
        created_at: at,
        revoked_at: None,
    }
}

/// Devices: insert with an atomic per-user cap and duplicate-key check, lookups, listing,
/// revocation scoped to the owner.
pub async fn device_store(store: Arc<dyn DeviceStore>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let user = UserId(Uuid::now_v7());
    let other = UserId(Uuid::now_v7());
    let a = device(user, 1, t);
    assert_eq!(store.insert_device(&a, 3).await.unwrap(), InsertDevice::Inserted);
    assert_eq!(store.device(a.id).await.unwrap().as_ref(), Some(&a), "devices round-trip unchanged");
    assert_eq!(store.device(DeviceId(Uuid::now_v7())).await.unwrap(), None);

    assert_eq!(store.insert_device(&device(user, 1, t), 3).await.unwrap(), InsertDevice::DuplicateKey(a.id));
    let theirs = device(other, 1, t);
    assert_eq!(store.insert_device(&theirs, 3).await.unwrap(), InsertDevice::Inserted, "keys are per user");

    let (b, c) = (device(user, 2, t), device(user, 3, t));
    assert_eq!(store.insert_device(&b, 3).await.unwrap(), InsertDevice::Inserted);
    assert_eq!(store.insert_device(&c, 3).await.unwrap(), InsertDevice::Inserted);
    let d = device(user, 4, t);
    assert_eq!(store.insert_device(&d, 3).await.unwrap(), InsertDevice::LimitReached { max: 3 });
    assert_eq!(store.device(d.id).await.unwrap(), None, "a refused device is not stored");

    // Revocation: only by the owner, idempotent, and it frees a place.
    assert_eq!(store.revoke_device(other, b.id, t).await.unwrap(), None, "another user cannot revoke it");
    assert_eq!(store.revoke_device(user, DeviceId(Uuid::now_v7()), t).await.unwrap(), None);
    let revoked = store.revoke_device(user, b.id, t.plus(Duration::from_secs(5))).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(t.plus(Duration::from_secs(5))));
    let again = store.revoke_device(user, b.id, t.plus(Duration::from_secs(9))).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(t.plus(Duration::from_secs(5))), "revoking twice keeps the first time");
    assert_eq!(store.device(b.id).await.unwrap().unwrap().revoked_at, Some(t.plus(Duration::from_secs(5))));
    assert_eq!(store.insert_device(&d, 3).await.unwrap(), InsertDevice::Inserted, "a revoked device frees a place");

    let mut ids: Vec<DeviceId> = vec![a.id, b.id, c.id, d.id];
    ids.sort();
    let listed: Vec<DeviceId> = store.devices_of_user(user).await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(listed, ids, "every device, revoked ones included, in id (creation) order");
    assert_eq!(store.devices_of_user(other).await.unwrap(), vec![theirs]);

    // The cap holds under concurrency.
    let racer = UserId(Uuid::now_v7());
    let mut handles = Vec::new();
    for k in 0..10u8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move { store.insert_device(&device(racer, 50 + k, t), 2).await.unwrap() }));
    }
    let mut inserted = 0;
    for h in handles {
        match h.await.unwrap() {
            InsertDevice::Inserted => inserted += 1,
            InsertDevice::LimitReached { max } => assert_eq!(max, 2),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(inserted, 2, "exactly the cap of concurrent enrolments succeed");
    assert_eq!(store.devices_of_user(racer).await.unwrap().len(), 2);
}

fn passkey(user: UserId, n: u8, at: Timestamp) -> Passkey {
    Passkey {
        id: CredentialId(vec![n; 16 + usize::from(n % 7)]),
        user_id: user,
        name: format!("key {n}"),
        credential: vec![n; 40],
        sign_count: 0,
        backup_eligible: n.is_multiple_of(2),
        backup_state: false,
        created_at: at,
        last_used_at: None,
    }
}

/// Passkeys: insert with a per-user cap and unique credential ids (also under concurrency),
/// lookups, the counter rule of `record_passkey_use` (one of two racing uses), and deletion
/// that keeps nothing.
pub async fn passkey_store(store: Arc<dyn PasskeyStore>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let user = UserId(Uuid::now_v7());
    let other = UserId(Uuid::now_v7());
    let a = passkey(user, 1, t);
    assert_eq!(store.insert_passkey(&a, 3).await.unwrap(), InsertPasskey::Inserted);
    assert_eq!(store.passkey(&a.id).await.unwrap().as_ref(), Some(&a), "passkeys round-trip unchanged");
    assert_eq!(store.passkey(&CredentialId(vec![0xee; 32])).await.unwrap(), None);
    let mut taken = passkey(other, 1, t);
    taken.name = "same credential id, another user".into();
    assert_eq!(store.insert_passkey(&taken, 3).await.unwrap(), InsertPasskey::Exists, "a credential id is unique");
    assert_eq!(store.passkey(&a.id).await.unwrap().unwrap().user_id, user, "the first registration stays");

    let (b, c) = (passkey(user, 2, t.plus(Duration::from_secs(1))), passkey(user, 3, t.plus(Duration::from_secs(2))));
    assert_eq!(store.insert_passkey(&b, 3).await.unwrap(), InsertPasskey::Inserted);
    assert_eq!(store.insert_passkey(&c, 3).await.unwrap(), InsertPasskey::Inserted);
    let d = passkey(user, 4, t.plus(Duration::from_secs(3)));
    assert_eq!(store.insert_passkey(&d, 3).await.unwrap(), InsertPasskey::LimitReached { max: 3 });
    assert_eq!(store.passkey(&d.id).await.unwrap(), None, "a refused passkey is not stored");
    let theirs = passkey(other, 9, t);
    assert_eq!(store.insert_passkey(&theirs, 3).await.unwrap(), InsertPasskey::Inserted);
    let names = |v: Vec<Passkey>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(store.passkeys_of_user(user).await.unwrap()), ["key 1", "key 2", "key 3"], "oldest first");

    // The counter: a use that does not grow a counting authenticator's counter is refused.
    let mut used = b.clone();
    used.sign_count = 5;
    used.backup_state = true;
    used.credential = vec![7; 41];
    let at = t.plus(Duration::from_secs(60));
    assert_eq!(store.record_passkey_use(&used, at).await.unwrap(), PasskeyUse::Recorded);
    let read = store.passkey(&b.id).await.unwrap().unwrap();
    assert_eq!((read.sign_count, read.backup_state, read.last_used_at), (5, true, Some(at)));
    assert_eq!(read.credential, vec![7; 41], "the relying party's record is updated");
    assert_eq!(store.record_passkey_use(&used, at).await.unwrap(), PasskeyUse::Regressed { stored: 5 });
    used.sign_count = 3;
    assert_eq!(store.record_passkey_use(&used, at).await.unwrap(), PasskeyUse::Regressed { stored: 5 });
    assert_eq!(store.passkey(&b.id).await.unwrap().unwrap().sign_count, 5, "a refused use changes nothing");
    let mut zero = a.clone();
    assert_eq!(store.record_passkey_use(&zero, at).await.unwrap(), PasskeyUse::Recorded, "0 after 0: no counter");
    assert_eq!(store.record_passkey_use(&zero, at).await.unwrap(), PasskeyUse::Recorded);
    zero.id = CredentialId(vec![0xdd; 20]);
    assert_eq!(store.record_passkey_use(&zero, at).await.unwrap(), PasskeyUse::Missing);

    // Of concurrent uses with one counter, one is recorded.
    let mut racing = c.clone();
    racing.sign_count = 9;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (store, racing) = (store.clone(), racing.clone());
        handles.push(tokio::spawn(async move { store.record_passkey_use(&racing, at).await.unwrap() }));
    }
    let mut recorded = 0;
    for h in handles {
        match h.await.unwrap() {
            PasskeyUse::Recorded => recorded += 1,
            PasskeyUse::Regressed { stored } => assert_eq!(stored, 9),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(recorded, 1, "one of the racing uses with one counter is recorded");

    // Deletion: only by the owner, and nothing of it stays.
    assert!(!store.delete_passkey(other, &b.id).await.unwrap(), "another user cannot delete it");
    assert!(store.delete_passkey(user, &b.id).await.unwrap());
    assert!(!store.delete_passkey(user, &b.id).await.unwrap(), "deleted means gone");
    assert_eq!(store.passkey(&b.id).await.unwrap(), None);
    assert_eq!(names(store.passkeys_of_user(user).await.unwrap()), ["key 1", "key 3"]);
    assert_eq!(store.insert_passkey(&d, 3).await.unwrap(), InsertPasskey::Inserted, "a deletion frees a place");
    let mut again = b.clone();
    again.user_id = other;
    assert_eq!(store.insert_passkey(&again, 3).await.unwrap(), InsertPasskey::Inserted, "its id is free again");
    assert!(store.delete_passkey(other, &again.id).await.unwrap());

    // Erasure: every passkey of one user, nobody else's.
    assert_eq!(store.delete_user_passkeys(user).await.unwrap(), 3);
    assert!(store.passkeys_of_user(user).await.unwrap().is_empty());
    for p in [&a, &c, &d] {
        assert_eq!(store.passkey(&p.id).await.unwrap(), None);
    }
    assert_eq!(store.delete_user_passkeys(user).await.unwrap(), 0);
    assert_eq!(store.passkeys_of_user(other).await.unwrap(), vec![theirs]);

    // The cap holds under concurrency.
    let racer = UserId(Uuid::now_v7());
    let mut handles = Vec::new();
    for k in 0..10u8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move { store.insert_passkey(&passkey(racer, 50 + k, t), 2).await.unwrap() }));
    }
    let mut inserted = 0;
    for h in handles {
        match h.await.unwrap() {
            InsertPasskey::Inserted => inserted += 1,
            InsertPasskey::LimitReached { max } => assert_eq!(max, 2),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(inserted, 2, "exactly the cap of concurrent registrations succeed");
    assert_eq!(store.passkeys_of_user(racer).await.unwrap().len(), 2);
}

fn event(i: u32, trace: &str, ident: Option<IdentHash>) -> AuditEvent {
    AuditEvent {
        at: Timestamp::from_millis(1_700_000_000_000 + u64::from(i)),
        trace_id: trace.into(),
        api: Api::Login,
        step: Step::Done,
        outcome: if i.is_multiple_of(3) { AuditOutcome::Rejected } else { AuditOutcome::Ok },
        message: format!("event {i}").into(),
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
        user_agent: Some("conformance/1".into()),
        ident_hash: ident,
        user_id: None,
    }
}

/// Audit: appended events (one by one, and several at once) come back by identifier and by
/// trace id, newest first, limited.
pub async fn audit_log(log: Arc<dyn AuditLog>) {
    let a = IdentHash([0xaa; 16]);
    let b = IdentHash([0xbb; 16]);
    let numbered = |i: u32| event(i, &format!("trace-{}", i / 5), Some(if i.is_multiple_of(2) { a } else { b }));
    for i in 0..6 {
        log.append(numbered(i)).await.unwrap();
    }
    log.append_all((6..10).map(numbered).collect()).await.unwrap();
    log.append(event(10, "trace-x", None)).await.unwrap();

    let for_a = log.by_identifier(&a, 100).await.unwrap();
    assert_eq!(for_a.len(), 5, "every event of identifier a");
    assert!(for_a.iter().all(|e| e.ident_hash == Some(a)));
    let times: Vec<u64> = for_a.iter().map(|e| e.at.as_millis()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    assert_eq!(for_a[0], event(8, "trace-1", Some(a)), "events round-trip unchanged");

    assert_eq!(log.by_identifier(&b, 2).await.unwrap().len(), 2, "limit is honoured");
    let trace0 = log.by_trace("trace-0", 100).await.unwrap();
    assert_eq!(trace0.len(), 5);
    assert!(trace0.iter().all(|e| e.trace_id == "trace-0"));
    assert_eq!(log.by_trace("trace-1", 100).await.unwrap(), (5..10).rev().map(numbered).collect::<Vec<_>>());
    assert_eq!(log.by_trace("trace-x", 10).await.unwrap().len(), 1);
    assert!(log.by_trace("trace-", 10).await.unwrap().is_empty(), "trace ids match exactly, not by prefix");
    assert!(log.by_identifier(&IdentHash([0; 16]), 10).await.unwrap().is_empty());
}

/// Opening a session: the session and its event are both there afterwards, the event by
/// identifier and by trace id; and with several opened at once, every one is.
pub async fn open_session<S: SessionStore + AuditLog>(store: Arc<S>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let ident = IdentHash([0x5e; 16]);
    let user = UserId(Uuid::now_v7());
    let mut opening = |n: u8| {
        let s = session(user, n, AuthMethod::Otp, t);
        let mut e = event(u32::from(n), &format!("open-{n}"), Some(ident));
        e.user_id = Some(user);
        e.message = "session opened".into();
        (s, e)
    };
    let (s, e) = opening(1);
    store.open_session(s.clone(), e.clone()).await.unwrap();
    assert_eq!(store.session(s.id).await.unwrap().as_ref(), Some(&s));
    assert_eq!(store.by_trace("open-1", 10).await.unwrap(), vec![e]);

    let many: Vec<_> = (2..34).map(&mut opening).collect();
    let mut writes = tokio::task::JoinSet::new();
    for (s, e) in &many {
        let (store, s, e) = (store.clone(), s.clone(), e.clone());
        writes.spawn(async move { store.open_session(s, e).await });
    }
    while let Some(r) = writes.join_next().await {
        r.unwrap().unwrap();
    }
    for (s, e) in &many {
        assert_eq!(store.session(s.id).await.unwrap().as_ref(), Some(s));
        assert_eq!(store.by_trace(&e.trace_id, 10).await.unwrap(), vec![e.clone()]);
    }
    assert_eq!(store.by_identifier(&ident, 100).await.unwrap().len(), 33);
    assert_eq!(store.sessions_of_user(user).await.unwrap().len(), 33);
}

/// Erasure: the account, its sessions and devices go, by every lookup; its audit events stay
/// (the trail is append-only) with their personal fields unreadable, someone else's keep
/// theirs; a second erasure finds nothing; the identifier can be claimed again.
pub async fn erasure<S: UserStore + SessionStore + DeviceStore + AuditLog>(store: Arc<S>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let alice = User { verified: true, verified_at: Some(t), ..user(31, t) };
    let bob = User { verified: true, verified_at: Some(t), ..user(32, t) };
    for u in [&alice, &bob] {
        assert_eq!(store.insert_user(u).await.unwrap(), InsertUser::Inserted);
    }
    let mut by_code = session(alice.id, 1, AuthMethod::Otp, t);
    by_code.client_ip = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 31)));
    by_code.user_agent = Some("erasure/1".into());
    let phone = device(alice.id, 31, t);
    let by_device = session(alice.id, 2, AuthMethod::Device(phone.id), t);
    let bobs = session(bob.id, 3, AuthMethod::Otp, t);
    for s in [&by_code, &by_device, &bobs] {
        store.insert_session(s).await.unwrap();
    }
    assert_eq!(store.insert_device(&phone, 3).await.unwrap(), InsertDevice::Inserted);
    let mut hers = event(1, "erasure-a", Some(alice.ident_hash));
    hers.user_id = Some(alice.id);
    let mut by_account = event(2, "erasure-b", None);
    by_account.user_id = Some(alice.id);
    let his = event(3, "erasure-c", Some(bob.ident_hash));
    for e in [&hers, &by_account, &his] {
        store.append(e.clone()).await.unwrap();
    }
    assert_eq!(store.by_trace("erasure-b", 10).await.unwrap(), vec![by_account.clone()], "sealed fields open");

    let erased = store.erase_user(alice.id).await.unwrap().expect("the account existed");
    assert_eq!((erased.sessions, erased.devices), (2, 1), "{erased:?}");
    assert!(erased.audit_keys > 0, "{erased:?}");
    assert_eq!(store.user_by_id(alice.id).await.unwrap(), None);
    assert_eq!(store.user_by_identifier(&alice.ident_hash).await.unwrap(), None);
    assert!(store.sessions_of_user(alice.id).await.unwrap().is_empty());
    for s in [&by_code, &by_device] {
        assert_eq!(store.session(s.id).await.unwrap(), None, "sessions are deleted, not only revoked");
    }
    assert!(store.devices_of_user(alice.id).await.unwrap().is_empty());
    assert_eq!(store.device(phone.id).await.unwrap(), None);

    let anonymised = |e: &AuditEvent| AuditEvent { client_ip: None, user_agent: None, ..e.clone() };
    assert_eq!(
        store.by_identifier(&alice.ident_hash, 10).await.unwrap(),
        vec![anonymised(&hers)],
        "the event stays, its address and user agent unreadable"
    );
    assert_eq!(store.by_trace("erasure-b", 10).await.unwrap(), vec![anonymised(&by_account)]);
    assert_eq!(store.by_identifier(&bob.ident_hash, 10).await.unwrap(), vec![his], "someone else's keep theirs");
    assert_eq!(store.user_by_id(bob.id).await.unwrap().as_ref(), Some(&bob));
    assert_eq!(store.session(bobs.id).await.unwrap().as_ref(), Some(&bobs));

    assert_eq!(store.erase_user(alice.id).await.unwrap(), None, "nothing left to erase");
    let again = user(31, t);
    assert_eq!(store.insert_user(&again).await.unwrap(), InsertUser::Inserted, "the identifier is free");
}

/// The census of a store that may still be counting what it held when it opened.
pub async fn settled_census<S: CensusSource + ?Sized>(store: &S, now: Timestamp) -> Census {
    for _ in 0..1000 {
        if let Some(c) = store.census(now).await.unwrap() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the census never finished counting");
}

/// Census: users, verified users and active sessions follow inserts, verification,
/// revocations and expiry (within a minute), for a fresh, empty store. `now` only moves
/// forward, as a clock does.
pub async fn census<S: UserStore + SessionStore + CensusSource>(store: Arc<S>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let later = move |s: u64| t.plus(Duration::from_secs(s));
    assert_eq!(settled_census(&*store, t).await, Census::default(), "an empty store counts nothing");

    let users: Vec<User> = (101..104).map(|n| user(n, t)).collect();
    for u in &users {
        assert_eq!(store.insert_user(u).await.unwrap(), InsertUser::Inserted);
    }
    assert_eq!(store.insert_user(&user(101, t)).await.unwrap(), InsertUser::Exists(Box::new(users[0].clone())));
    let mut verified = users[1].clone();
    verified.verified = true;
    store.update_user(&verified).await.unwrap();
    verified.first_name = "Renamed".into();
    store.update_user(&verified).await.unwrap();
    let c = store.census(t).await.unwrap().unwrap();
    assert_eq!((c.users, c.verified_users), (3, 1), "a duplicate and a second update count nothing");

    // Three sessions: two expire after an hour, one after two hours.
    let (a, b) = (users[0].id, users[1].id);
    let s1 = session(a, 31, AuthMethod::Otp, t);
    let mut s2 = session(a, 32, AuthMethod::Otp, t);
    s2.expires_at = later(7200);
    let s3 = session(b, 33, AuthMethod::Otp, t);
    for s in [&s1, &s2, &s3] {
        store.insert_session(s).await.unwrap();
    }
    assert_eq!(store.census(later(1)).await.unwrap().unwrap().active_sessions, 3);
    assert!(matches!(store.rotate_refresh(s2.id, &[32; 32], &[34; 32], later(2)).await.unwrap(), Rotation::Rotated(_)));
    assert_eq!(store.census(later(2)).await.unwrap().unwrap().active_sessions, 3, "a rotation keeps the session");
    assert!(store.revoke_session(s1.id, RevokeReason::Logout, later(3)).await.unwrap());
    assert!(!store.revoke_session(s1.id, RevokeReason::Logout, later(4)).await.unwrap());
    assert_eq!(store.census(later(4)).await.unwrap().unwrap().active_sessions, 2, "a revocation counts once");
    assert_eq!(store.revoke_user_sessions(b, None, RevokeReason::LogoutAll, later(5)).await.unwrap(), 1);
    assert_eq!(store.census(later(5)).await.unwrap().unwrap().active_sessions, 1);
    // s2 expires at two hours: counted a minute before, not a minute after.
    assert_eq!(store.census(later(7200 - 60)).await.unwrap().unwrap().active_sessions, 1);
    let c = store.census(later(7200 + 60)).await.unwrap().unwrap();
    assert_eq!(c, Census { users: 3, verified_users: 1, active_sessions: 0 }, "expiry needs no write");

    // A reused refresh token revokes its session.
    let s4 = session(b, 40, AuthMethod::Otp, later(7300));
    store.insert_session(&s4).await.unwrap();
    assert!(matches!(
        store.rotate_refresh(s4.id, &[40; 32], &[41; 32], later(7301)).await.unwrap(),
        Rotation::Rotated(_)
    ));
    assert_eq!(store.census(later(7301)).await.unwrap().unwrap().active_sessions, 1);
    assert!(matches!(
        store.rotate_refresh(s4.id, &[40; 32], &[42; 32], later(7302)).await.unwrap(),
        Rotation::Reused(_)
    ));
    assert_eq!(store.census(later(7302)).await.unwrap().unwrap().active_sessions, 0);
}

// ---------------------------------------------------------------------------------------------
// Limiters
// ---------------------------------------------------------------------------------------------

/// Limiters: every rule of `crate::rules::limits` with its exact `Retry-After`, blocks, the
/// destination lists, all-or-nothing recording across rules, atomicity under concurrency, and
/// the guess budget (escalating blocks, clearing, forgetting, one budget for both purposes).
///
/// `make(policy)` returns a fresh, empty limiter enforcing `policy`. Time is only ever the
/// request's `now`, so an implementation whose store expires keys on its own clock must still
/// decide by `now` (the suite jumps minutes and hours ahead in microseconds).
pub async fn limiter<F, Fut>(make: F)
where
    F: Fn(LimitPolicy) -> Fut,
    Fut: Future<Output = Arc<dyn Limiter>>,
{
    limiter_cooldown(make(cooldown_policy()).await).await;
    limiter_identifier_window(
        make(LimitPolicy { identifier_sends: Rule::per(3, MIN * 10), ..LimitPolicy::off() }).await,
    )
    .await;
    limiter_per_action(
        make(LimitPolicy {
            identifier_logins: Rule::per(2, HOUR),
            identifier_registrations: Rule::per(1, HOUR),
            identifier_resends: Rule::per(1, HOUR),
            identifier_verifies: Rule::per(3, HOUR),
            ..LimitPolicy::off()
        })
        .await,
    )
    .await;
    limiter_client_ip(
        make(LimitPolicy {
            ip_sends: Rule::per(2, MIN * 10),
            ip_verifies: Rule::per(3, MIN * 10),
            ..LimitPolicy::off()
        })
        .await,
    )
    .await;
    limiter_device_challenges(
        make(LimitPolicy {
            device_challenges: Rule::per(2, MIN * 10),
            ip_challenges: Rule::per(3, MIN * 10),
            ip_sends: Rule::per(1, MIN * 10),
            ..LimitPolicy::off()
        })
        .await,
    )
    .await;
    limiter_blocks(
        make(LimitPolicy { ip_sends: Rule::per(2, MIN).blocking(MIN * 10), ..LimitPolicy::off() }).await,
        make(LimitPolicy { ip_sends: Rule::per(2, MIN).blocking(SEC * 5), ..LimitPolicy::off() }).await,
    )
    .await;
    limiter_prefix_and_country(
        make(LimitPolicy {
            prefix_sends: Rule::per(2, HOUR),
            country_sends: Rule::per(3, HOUR),
            prefix_digits: 7,
            ..LimitPolicy::off()
        })
        .await,
    )
    .await;
    limiter_destination_lists(
        make(LimitPolicy {
            country_sends: Rule::per(1, HOUR),
            sms_allow: vec![NumberPrefix::parse("+1").unwrap(), NumberPrefix::parse("+44").unwrap()],
            sms_deny: vec![NumberPrefix::parse("+1876").unwrap()],
            ..LimitPolicy::off()
        })
        .await,
    )
    .await;
    limiter_sms_budget(
        make(LimitPolicy {
            sms_budget: SpendPolicy {
                daily: 1_000,
                country_daily: 0,
                countries: vec![(44, 300)],
                prices: vec![(1, 100), (44, 100)],
                default_price: 500,
            },
            ..LimitPolicy::off()
        })
        .await,
    )
    .await;
    let guard = |mode| ConversionGuard {
        mode,
        window: HOUR,
        prefix_floor: 4,
        country_floor: 8,
        min_conversion: 50,
        throttle_every: MIN,
        collapse: 0,
        history: HOUR * 24,
    };
    limiter_conversion_guard(
        make(LimitPolicy { conversion_guard: guard(GuardMode::Throttle), ..LimitPolicy::off() }).await,
        make(LimitPolicy { conversion_guard: guard(GuardMode::Block), ..LimitPolicy::off() }).await,
        make(LimitPolicy { conversion_guard: guard(GuardMode::Record), ..LimitPolicy::off() }).await,
    )
    .await;
    let history = ConversionGuard {
        mode: GuardMode::Throttle,
        window: HOUR,
        prefix_floor: 4,
        country_floor: 1_000,
        min_conversion: 20,
        throttle_every: MIN,
        collapse: 50,
        history: HOUR * 24,
    };
    limiter_guard_history_and_pins(
        make(LimitPolicy { conversion_guard: history, prefix_digits: 7, ..LimitPolicy::off() }).await,
    )
    .await;
    limiter_all_or_nothing(make(LimitPolicy { ip_sends: Rule::per(2, MIN * 10), ..cooldown_policy() }).await).await;
    limiter_longest_wait(make(LimitPolicy { identifier_sends: Rule::per(1, MIN * 10), ..cooldown_policy() }).await)
        .await;
    limiter_concurrency(
        make(cooldown_policy()).await,
        make(LimitPolicy { ip_sends: Rule::per(5, MIN * 10), ..LimitPolicy::off() }).await,
    )
    .await;
    limiter_guess_budget(make(guess_policy()).await).await;
    limiter_guess_budget_all_or_nothing(
        make(LimitPolicy { ip_verifies: Rule::per(1, MIN * 10), ..guess_policy() }).await,
    )
    .await;
    limiter_guess_budget_concurrency(make(guess_policy()).await).await;
}

/// Two free checks, then blocks of 10, 20, 40, 40 … seconds; forgotten 10 minutes after the
/// latest counted check.
fn guess_policy() -> LimitPolicy {
    LimitPolicy {
        identifier_guesses: GuessBudget { free: 2, first_block: SEC * 10, max_block: SEC * 40, forget_after: MIN * 10 },
        ..LimitPolicy::off()
    }
}

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const T0: u64 = 1_700_000_000_000;

fn cooldown_policy() -> LimitPolicy {
    LimitPolicy { resend_cooldown: SEC * 30, ..LimitPolicy::off() }
}

/// A request `ms` milliseconds after the suite's epoch, from no IP, for no SMS number.
fn lreq(action: LimitAction, ident: u8, ms: u64) -> LimitRequest {
    LimitRequest {
        action,
        ident: IdentHash([ident; 16]),
        client_ip: None,
        sms: None,
        segments: 0,
        now: Timestamp::from_millis(T0 + ms),
    }
}

fn from_ip(mut r: LimitRequest, ip: &str) -> LimitRequest {
    r.client_ip = Some(ip.parse().expect("a test IP address"));
    r
}

fn to_number(mut r: LimitRequest, e164: &str, country_code: u16) -> LimitRequest {
    r.sms = Some(SmsTarget::from_e164(e164, country_code).expect("a test number"));
    r
}

fn deny(rule: LimitRule, wait: Duration) -> Decision {
    Decision::Deny { rule, retry_after: wait }
}

const LOGIN: LimitAction = LimitAction::Send(Purpose::Login);
const REGISTER: LimitAction = LimitAction::Send(Purpose::Register);
const RESEND_LOGIN: LimitAction = LimitAction::Resend(Purpose::Login);
const VERIFY_LOGIN: LimitAction = LimitAction::Verify(Purpose::Login);

async fn expect(l: &Arc<dyn Limiter>, req: LimitRequest, want: Decision, what: &str) {
    let got = l.check(&req).await.unwrap_or_else(|e| panic!("{what}: the limiter failed: {e}"));
    assert_eq!(got, want, "{what}");
}

async fn limiter_cooldown(l: Arc<dyn Limiter>) {
    let s = 1000;
    expect(&l, lreq(LOGIN, 1, 0), Decision::Allow, "first login code").await;
    expect(&l, lreq(LOGIN, 1, 10 * s), deny(LimitRule::ResendCooldown, SEC * 20), "second login code 10 s later").await;
    expect(
        &l,
        lreq(RESEND_LOGIN, 1, 10 * s),
        deny(LimitRule::ResendCooldown, SEC * 20),
        "a resend shares the cooldown",
    )
    .await;
    expect(&l, lreq(REGISTER, 1, 10 * s), Decision::Allow, "the cooldown is per purpose").await;
    expect(&l, lreq(LOGIN, 2, 10 * s), Decision::Allow, "the cooldown is per identifier").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 10 * s), Decision::Allow, "checking a code is never cooled down").await;
    expect(&l, lreq(LOGIN, 1, 30 * s - 1), deny(LimitRule::ResendCooldown, Duration::from_millis(1)), "1 ms left")
        .await;
    expect(&l, lreq(LOGIN, 1, 30 * s), Decision::Allow, "the cooldown ends after exactly 30 s").await;
    expect(&l, lreq(RESEND_LOGIN, 1, 31 * s), deny(LimitRule::ResendCooldown, SEC * 29), "and restarts with the send")
        .await;
}

async fn limiter_identifier_window(l: Arc<dyn Limiter>) {
    let s = 1000;
    expect(&l, lreq(LOGIN, 1, 0), Decision::Allow, "send 1").await;
    expect(&l, lreq(RESEND_LOGIN, 1, 60 * s), Decision::Allow, "send 2 (a resend counts)").await;
    expect(&l, lreq(REGISTER, 1, 120 * s), Decision::Allow, "send 3 (every purpose counts)").await;
    expect(&l, lreq(LOGIN, 1, 180 * s), deny(LimitRule::IdentifierSends, SEC * 420), "send 4 waits for the window")
        .await;
    for i in 0..20 {
        let got = l.check(&lreq(LOGIN, 1, (181 + i) * s)).await.unwrap();
        assert!(matches!(got, Decision::Deny { rule: LimitRule::IdentifierSends, .. }), "refused again: {got:?}");
    }
    expect(&l, lreq(VERIFY_LOGIN, 1, 200 * s), Decision::Allow, "checking a code is not a send").await;
    expect(&l, lreq(LOGIN, 1, 600 * s), Decision::Allow, "the window ends 10 minutes after its first send").await;
    expect(&l, lreq(LOGIN, 1, 601 * s), Decision::Allow, "refusals were not counted").await;
    expect(&l, lreq(LOGIN, 1, 602 * s), Decision::Allow, "three in the new window").await;
    expect(&l, lreq(LOGIN, 1, 603 * s), deny(LimitRule::IdentifierSends, SEC * 597), "the new window opened at 600 s")
        .await;
    expect(&l, lreq(LOGIN, 2, 603 * s), Decision::Allow, "another identifier has its own window").await;
}

async fn limiter_per_action(l: Arc<dyn Limiter>) {
    let s = 1000;
    expect(&l, lreq(LOGIN, 1, 0), Decision::Allow, "login 1").await;
    expect(&l, lreq(LOGIN, 1, s), Decision::Allow, "login 2").await;
    expect(&l, lreq(LOGIN, 1, 2 * s), deny(LimitRule::IdentifierLogins, SEC * 3598), "login 3 of 2 per hour").await;
    expect(&l, lreq(REGISTER, 1, 3 * s), Decision::Allow, "registrations count apart from logins").await;
    expect(&l, lreq(REGISTER, 1, 4 * s), deny(LimitRule::IdentifierRegistrations, SEC * 3599), "registration 2 of 1")
        .await;
    expect(&l, lreq(RESEND_LOGIN, 1, 5 * s), Decision::Allow, "resends count apart from logins").await;
    expect(
        &l,
        lreq(LimitAction::Resend(Purpose::Register), 1, 6 * s),
        deny(LimitRule::IdentifierResends, SEC * 3599),
        "resend 2 of 1 (every purpose)",
    )
    .await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 7 * s), Decision::Allow, "verify 1").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 8 * s), Decision::Allow, "verify 2").await;
    expect(&l, lreq(LimitAction::Verify(Purpose::Register), 1, 9 * s), Decision::Allow, "verify 3 (every purpose)")
        .await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 10 * s), deny(LimitRule::IdentifierVerifies, SEC * 3597), "verify 4 of 3").await;
    expect(&l, lreq(LOGIN, 2, 10 * s), Decision::Allow, "another identifier, login").await;
    expect(&l, lreq(VERIFY_LOGIN, 2, 10 * s), Decision::Allow, "another identifier, verify").await;
}

async fn limiter_client_ip(l: Arc<dyn Limiter>) {
    let s = 1000;
    let a = "198.51.100.1";
    expect(&l, from_ip(lreq(LOGIN, 1, 0), a), Decision::Allow, "IP a, identifier 1").await;
    expect(&l, from_ip(lreq(REGISTER, 2, s), a), Decision::Allow, "IP a, identifier 2").await;
    expect(&l, from_ip(lreq(LOGIN, 3, 2 * s), a), deny(LimitRule::IpSends, SEC * 598), "IP a, a third identifier")
        .await;
    expect(&l, from_ip(lreq(LOGIN, 3, 2 * s), "198.51.100.2"), Decision::Allow, "another IP").await;
    expect(&l, lreq(LOGIN, 3, 2 * s), Decision::Allow, "no known IP: the IP rule does not apply").await;
    expect(
        &l,
        from_ip(lreq(LOGIN, 4, 3 * s), "::ffff:198.51.100.1"),
        deny(LimitRule::IpSends, SEC * 597),
        "IPv4-mapped IPv6 is the IPv4 address",
    )
    .await;
    expect(&l, from_ip(lreq(LOGIN, 4, 3 * s), "2001:db8::1"), Decision::Allow, "IPv6 /56, send 1").await;
    expect(&l, from_ip(lreq(LOGIN, 5, 3 * s), "2001:db8:0:1::2"), Decision::Allow, "IPv6 /56, send 2").await;
    expect(
        &l,
        from_ip(lreq(LOGIN, 6, 3 * s), "2001:db8:0:ff:ffff:1:2:3"),
        deny(LimitRule::IpSends, SEC * 600),
        "sends from the /64s of one /56 count together",
    )
    .await;
    expect(&l, from_ip(lreq(LOGIN, 6, 3 * s), "2001:db8:0:100::1"), Decision::Allow, "another /56").await;
    for (i, ip) in ["2001:db8::1", "2001:db8::2", "2001:db8::3"].into_iter().enumerate() {
        expect(&l, from_ip(lreq(VERIFY_LOGIN, 20 + i as u8, 3 * s), ip), Decision::Allow, "checks of one /64").await;
    }
    expect(&l, from_ip(lreq(VERIFY_LOGIN, 23, 3 * s), "2001:db8::4"), deny(LimitRule::IpVerifies, SEC * 600), "4 of 3")
        .await;
    expect(&l, from_ip(lreq(VERIFY_LOGIN, 24, 3 * s), "2001:db8:0:1::1"), Decision::Allow, "checks: another /64").await;
    for i in 0..3 {
        expect(&l, from_ip(lreq(VERIFY_LOGIN, 10 + i, 4 * s), a), Decision::Allow, "verifies count apart").await;
    }
    expect(&l, from_ip(lreq(VERIFY_LOGIN, 13, 4 * s), a), deny(LimitRule::IpVerifies, SEC * 600), "verify 4 of 3")
        .await;
}

/// Device-login challenges: per scoped device and per address, apart from code sends.
async fn limiter_device_challenges(l: Arc<dyn Limiter>) {
    let (a, b) = ("203.0.113.9", "198.51.100.7");
    let challenge = |device: u8, ip: &str| from_ip(lreq(LimitAction::Challenge, device, 1000), ip);
    expect(&l, challenge(1, a), Decision::Allow, "challenge 1 for device 1").await;
    expect(&l, challenge(1, a), Decision::Allow, "challenge 2 for device 1").await;
    expect(&l, challenge(1, a), deny(LimitRule::DeviceChallenges, SEC * 600), "challenge 3 for device 1").await;
    expect(&l, challenge(2, a), Decision::Allow, "another device, same address (3 of 3)").await;
    expect(&l, challenge(3, a), deny(LimitRule::IpChallenges, SEC * 600), "the address's 4th").await;
    expect(&l, challenge(4, b), Decision::Allow, "another address").await;
    expect(&l, from_ip(lreq(LOGIN, 9, 1000), a), Decision::Allow, "challenges do not spend the address's sends").await;
}

async fn limiter_blocks(long: Arc<dyn Limiter>, short: Arc<dyn Limiter>) {
    let s = 1000;
    let a = "203.0.113.9";
    for l in [&long, &short] {
        expect(l, from_ip(lreq(LOGIN, 1, 0), a), Decision::Allow, "send 1").await;
        expect(l, from_ip(lreq(LOGIN, 2, 0), a), Decision::Allow, "send 2").await;
    }
    expect(&long, from_ip(lreq(LOGIN, 3, 10 * s), a), deny(LimitRule::IpSends, MIN * 10), "tripping blocks 10 min")
        .await;
    expect(&long, from_ip(lreq(LOGIN, 4, 70 * s), a), deny(LimitRule::IpSends, SEC * 540), "blocked past the window")
        .await;
    expect(&long, from_ip(lreq(LOGIN, 4, 609 * s), a), deny(LimitRule::IpSends, SEC), "1 s of block left").await;
    expect(&long, from_ip(lreq(LOGIN, 4, 610 * s), a), Decision::Allow, "the block is over").await;
    expect(&long, from_ip(lreq(LOGIN, 5, 610 * s), "203.0.113.10"), Decision::Allow, "other IPs were never blocked")
        .await;
    expect(
        &short,
        from_ip(lreq(LOGIN, 3, 10 * s), a),
        deny(LimitRule::IpSends, SEC * 50),
        "a block shorter than the window never shortens it",
    )
    .await;
    expect(&short, from_ip(lreq(LOGIN, 3, 60 * s), a), Decision::Allow, "the window is over").await;
}

async fn limiter_prefix_and_country(l: Arc<dyn Limiter>) {
    let s = 1000;
    expect(&l, to_number(lreq(LOGIN, 1, 0), "+12022001111", 1), Decision::Allow, "prefix 1202200, send 1").await;
    expect(&l, to_number(lreq(LOGIN, 2, s), "+12022002222", 1), Decision::Allow, "prefix 1202200, send 2").await;
    expect(
        &l,
        to_number(lreq(LOGIN, 3, 2 * s), "+12022003333", 1),
        deny(LimitRule::PrefixSends, SEC * 3598),
        "a third number of the prefix",
    )
    .await;
    expect(&l, to_number(lreq(LOGIN, 3, 2 * s), "+12022011111", 1), Decision::Allow, "another prefix").await;
    expect(
        &l,
        to_number(lreq(LOGIN, 4, 3 * s), "+12022021111", 1),
        deny(LimitRule::CountrySends, SEC * 3597),
        "a fourth +1 number trips the country rule",
    )
    .await;
    expect(&l, to_number(lreq(LOGIN, 5, 3 * s), "+447911123456", 44), Decision::Allow, "another country").await;
    expect(&l, lreq(LOGIN, 6, 3 * s), Decision::Allow, "e-mail has no prefix or country").await;
}

/// A daily budget of 1 000 in total and 300 for +44, at 100 a segment (500 elsewhere).
async fn limiter_sms_budget(l: Arc<dyn Limiter>) {
    // T0 is 1 h 46 min 40 s before a UTC midnight.
    let day_left = |ms: u64| Duration::from_millis(6_400_000 - ms);
    let sms = |ident: u8, ms: u64, e164: &str, cc: u16, segments: u32| {
        let mut r = to_number(lreq(LOGIN, ident, ms), e164, cc);
        r.segments = segments;
        r
    };
    let uk = |i: u8, ms: u64, segments: u32| sms(i, ms, "+447911123456", 44, segments);
    let us = |i: u8, ms: u64| sms(i, ms, "+12022001111", 1, 1);
    expect(&l, uk(1, 0, 2), Decision::Allow, "+44, two segments: 200 of its 300").await;
    expect(&l, uk(2, 1000, 2), deny(LimitRule::SmsBudget, day_left(1000)), "+44 would reach 400: until midnight").await;
    expect(&l, uk(3, 2000, 1), Decision::Allow, "one segment fits exactly: the refusal counted nothing").await;
    for i in 0..7 {
        expect(&l, us(10 + i, 3000), Decision::Allow, "+1 sends up to the total of 1 000").await;
    }
    expect(&l, us(20, 4000), deny(LimitRule::SmsBudget, day_left(4000)), "the total is spent").await;
    expect(&l, lreq(LOGIN, 21, 4000), Decision::Allow, "e-mail costs nothing").await;
    expect(&l, lreq(VERIFY_LOGIN, 22, 4000), Decision::Allow, "checking a code costs nothing").await;
    expect(&l, sms(23, 6_400_000, "+998901234567", 998, 1), Decision::Allow, "a new day: priced at the default").await;
    expect(&l, sms(24, 6_400_001, "+998901234567", 998, 1), Decision::Allow, "1 000 of 1 000").await;
    expect(
        &l,
        sms(25, 6_400_002, "+998901234567", 998, 1),
        deny(LimitRule::SmsBudget, Duration::from_millis(86_400_000 - 2)),
        "spent again, until the next midnight",
    )
    .await;
}

/// The guard judges a prefix from its fourth send and a country from its eighth; below 50 %
/// verified, a throttled destination gets one send a minute, a blocked one none until the
/// hour ends, a recorded one everything.
async fn limiter_conversion_guard(throttle: Arc<dyn Limiter>, block: Arc<dyn Limiter>, record: Arc<dyn Limiter>) {
    let s = 1000;
    let to = |ident: u8, ms: u64, e164: &str| to_number(lreq(LOGIN, ident, ms), e164, 1);
    let a = |i: u8| format!("+1202200{:04}", 1000 + u32::from(i));
    let verified = |l: &Arc<dyn Limiter>, ident: u8, ms: u64, e164: String| {
        let l = l.clone();
        async move {
            let target = SmsTarget::from_e164(&e164, 1).expect("a test number");
            l.code_verified(IdentHash([ident; 16]), Some(target), Timestamp::from_millis(T0 + ms))
                .await
                .expect("the limiter counts a verified code");
        }
    };
    let guarded = |wait: Duration| deny(LimitRule::DestinationGuard, wait);
    for l in [&throttle, &block, &record] {
        for i in 0..4 {
            expect(l, to(i, u64::from(i) * s, &a(i)), Decision::Allow, "below the floor: not judged").await;
        }
    }
    expect(&throttle, to(4, 4 * s, &a(4)), guarded(SEC * 59), "tripped: the next send a minute after the last").await;
    expect(&block, to(4, 4 * s, &a(4)), guarded(HOUR - SEC * 4), "tripped: blocked until the hour ends").await;
    expect(&record, to(4, 4 * s, &a(4)), Decision::Allow, "recorded only").await;
    expect(&throttle, to(5, 4 * s, "+12022011111"), Decision::Allow, "another prefix, its country below its floor")
        .await;
    // Two of the four codes verified: 50 %, untripped; the next send trips it again.
    for ident in [0, 1] {
        verified(&throttle, ident, 5 * s, a(ident)).await;
        verified(&block, ident, 5 * s, a(ident)).await;
    }
    expect(&throttle, to(6, 6 * s, &a(6)), Decision::Allow, "verified codes lift the throttle").await;
    expect(&throttle, to(7, 7 * s, &a(7)), guarded(SEC * 59), "2 of 5 verified: throttled again").await;
    expect(&throttle, to(7, 66 * s, &a(7)), Decision::Allow, "a minute later: one send").await;
    expect(&throttle, to(8, 67 * s, &a(8)), guarded(SEC * 59), "and then the next minute").await;
    expect(&block, to(6, 6 * s, &a(6)), Decision::Allow, "verified codes lift the block").await;
    expect(&throttle, to(9, 3600 * s + 1, &a(9)), Decision::Allow, "a new hour: judged afresh").await;
    expect(&block, to(9, 3600 * s + 1, &a(9)), Decision::Allow, "a new hour").await;
}

/// A destination is judged against its own baseline too, and an operator's pin or lift
/// changes what the guard does with it (the guard above, `collapse` 50 %).
async fn limiter_guard_history_and_pins(l: Arc<dyn Limiter>) {
    let s = 1000;
    let h = 3600 * s;
    let (a, b) = ("+1202200", "+1303300");
    let number = |prefix: &str, i: u8| format!("{prefix}{:04}", 1000 + u32::from(i));
    let send = |prefix: &str, ident: u8, ms: u64| to_number(lreq(LOGIN, ident, ms), &number(prefix, ident), 1);
    let verified = |prefix: &'static str, ident: u8, ms: u64| {
        let l = l.clone();
        async move {
            let target = SmsTarget::from_e164(&number(prefix, ident), 1).expect("a test number");
            l.code_verified(IdentHash([ident; 16]), Some(target), Timestamp::from_millis(T0 + ms))
                .await
                .expect("the limiter counts a verified code");
        }
    };
    let at = |ms: u64| Timestamp::from_millis(T0 + ms);
    let subject_a = Subject::Prefix(1_202_200, 7);
    // Hour one: prefix a verifies 8 of its 10 codes; b has no history.
    for i in 0..10 {
        expect(&l, send(a, i, u64::from(i) * s), Decision::Allow, "a healthy hour").await;
        if i < 8 {
            verified(a, i, u64::from(i) * s + 500).await;
        }
    }
    let read = l.change_destination(subject_a, DestinationChange::Read, at(30 * s)).await.expect("read");
    assert_eq!((read.sent, read.verified, read.baseline, read.tripped), (10, 8, None, false), "{read:?}");
    // Hour two, both prefixes alike: three sends, one verified, a fourth: 1 of 4 is 25 %,
    // above the 20 % floor but below half of a's 80 %.
    for (prefix, base) in [(a, 20u8), (b, 40)] {
        for i in 0..3 {
            expect(&l, send(prefix, base + i, h + u64::from(i) * s), Decision::Allow, "below the floor").await;
        }
        verified(prefix, base, h + 4 * s).await;
        expect(&l, send(prefix, base + 3, h + 5 * s), Decision::Allow, "the fourth send").await;
    }
    let read = l.change_destination(subject_a, DestinationChange::Read, at(h + 6 * s)).await.expect("read");
    assert_eq!((read.baseline, read.tripped, read.refusing), (Some(80), true, true), "{read:?}");
    let guarded = |wait: Duration| deny(LimitRule::DestinationGuard, wait);
    expect(&l, send(a, 24, h + 6 * s), guarded(SEC * 59), "a collapsed against its own 80 %: throttled").await;
    expect(&l, send(b, 44, h + 6 * s), Decision::Allow, "b, at 25 % with no history, is not").await;

    // An operator pins a to record: let through, still counted; unpinned, throttled again.
    let pin = Pin { mode: GuardMode::Record, until: at(h + 600 * s) };
    let pinned = l.change_destination(subject_a, DestinationChange::Pin(pin), at(h + 7 * s)).await.expect("pin");
    assert_eq!((pinned.mode, pinned.refusing, pinned.pin), (GuardMode::Record, false, Some(pin)), "{pinned:?}");
    expect(&l, send(a, 25, h + 8 * s), Decision::Allow, "pinned to record").await;
    l.change_destination(subject_a, DestinationChange::Unpin, at(h + 9 * s)).await.expect("unpin");
    expect(&l, send(a, 26, h + 9 * s), guarded(SEC * 56), "unpinned: the throttle's next send").await;
    // A pin to block refuses a tripped destination until its window ends.
    let block = Pin { mode: GuardMode::Block, until: at(h + 600 * s) };
    l.change_destination(subject_a, DestinationChange::Pin(block), at(h + 10 * s)).await.expect("pin");
    expect(&l, send(a, 27, h + 70 * s), guarded(HOUR - SEC * 70), "pinned to block").await;

    // The list: a first (refusing), b and their country too.
    let list = l.destinations(at(h + 71 * s), 10).await.expect("the list");
    let listed: Vec<Subject> = list.iter().map(|d| d.subject).collect();
    assert_eq!(listed[0], subject_a, "{list:?}");
    assert!(listed.contains(&Subject::Prefix(1_303_300, 7)) && listed.contains(&Subject::Country(1)), "{list:?}");
    assert_eq!(list[0].sent, 5, "the pinned-record send counted, the refused ones not: {:?}", list[0]);

    // Lifted: the window forgotten and the pin removed; the baseline stays.
    l.change_destination(subject_a, DestinationChange::Unpin, at(h + 72 * s)).await.expect("unpin");
    let lifted = l.change_destination(subject_a, DestinationChange::Lift, at(h + 72 * s)).await.expect("lift");
    assert_eq!((lifted.sent, lifted.tripped, lifted.pin, lifted.baseline), (0, false, None, Some(80)), "{lifted:?}");
    expect(&l, send(a, 28, h + 73 * s), Decision::Allow, "lifted: judged afresh").await;
}

async fn limiter_destination_lists(l: Arc<dyn Limiter>) {
    let refused = deny(LimitRule::DestinationNotAllowed, Duration::ZERO);
    expect(&l, to_number(lreq(LOGIN, 1, 0), "+33612345678", 33), refused, "not on the allow-list").await;
    expect(&l, to_number(lreq(LOGIN, 2, 0), "+18765550123", 1), refused, "on the deny-list").await;
    expect(&l, to_number(lreq(LOGIN, 3, 0), "+12022001234", 1), Decision::Allow, "allowed; refusals counted nothing")
        .await;
    expect(&l, to_number(lreq(LOGIN, 4, 0), "+447911123456", 44), Decision::Allow, "allowed").await;
    expect(&l, lreq(LOGIN, 5, 0), Decision::Allow, "e-mail is not SMS").await;
}

async fn limiter_all_or_nothing(l: Arc<dyn Limiter>) {
    let s = 1000;
    let (a, b) = ("192.0.2.1", "192.0.2.2");
    expect(&l, from_ip(lreq(LOGIN, 1, 0), a), Decision::Allow, "identifier 1").await;
    expect(&l, from_ip(lreq(LOGIN, 1, s), a), deny(LimitRule::ResendCooldown, SEC * 29), "cooled down").await;
    expect(&l, from_ip(lreq(LOGIN, 2, 2 * s), a), Decision::Allow, "the cooled-down request did not count for the IP")
        .await;
    expect(&l, from_ip(lreq(LOGIN, 3, 3 * s), a), deny(LimitRule::IpSends, SEC * 597), "the IP is at its limit").await;
    expect(
        &l,
        from_ip(lreq(LOGIN, 3, 4 * s), b),
        Decision::Allow,
        "the IP refusal recorded no cooldown for identifier 3",
    )
    .await;
}

async fn limiter_longest_wait(l: Arc<dyn Limiter>) {
    let s = 1000;
    expect(&l, lreq(LOGIN, 1, 0), Decision::Allow, "send 1").await;
    expect(
        &l,
        lreq(LOGIN, 1, 5 * s),
        deny(LimitRule::IdentifierSends, SEC * 595),
        "cooldown (25 s) and cap (595 s) both refuse: the longer wait is reported",
    )
    .await;
    expect(&l, lreq(LOGIN, 1, 600 * s), Decision::Allow, "after the longer wait").await;
}

async fn limiter_concurrency(one_identifier: Arc<dyn Limiter>, one_ip: Arc<dyn Limiter>) {
    let run = |l: Arc<dyn Limiter>, reqs: Vec<LimitRequest>| async move {
        let handles: Vec<_> = reqs
            .into_iter()
            .map(|r| {
                let l = l.clone();
                tokio::spawn(async move { l.check(&r).await.expect("the limiter answers") })
            })
            .collect();
        let mut allowed = 0;
        for h in handles {
            if h.await.expect("no panic") == Decision::Allow {
                allowed += 1;
            }
        }
        allowed
    };
    let same = (0..32).map(|_| lreq(LOGIN, 1, 0)).collect();
    assert_eq!(run(one_identifier, same).await, 1, "32 concurrent sends for one identifier: one code");
    let spread = (0..32).map(|i| from_ip(lreq(LOGIN, i, 0), "192.0.2.77")).collect();
    assert_eq!(run(one_ip, spread).await, 5, "32 concurrent sends from one IP with a limit of 5");
}

const VERIFY_REGISTER: LimitAction = LimitAction::Verify(Purpose::Register);
const GUESSED: LimitRule = LimitRule::IdentifierGuesses;

async fn clear(l: &Arc<dyn Limiter>, ident: u8) {
    l.code_verified(IdentHash([ident; 16]), None, Timestamp::from_millis(T0))
        .await
        .expect("the limiter clears a guess count");
}

async fn limiter_guess_budget(l: Arc<dyn Limiter>) {
    let s = 1000;
    expect(&l, lreq(VERIFY_LOGIN, 1, 0), Decision::Allow, "check 1 is free").await;
    expect(&l, lreq(VERIFY_REGISTER, 1, s), Decision::Allow, "check 2 is free (every purpose counts)").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 2 * s), Decision::Allow, "check 3 is let through and starts a block").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 3 * s), deny(GUESSED, SEC * 9), "blocked 10 s from check 3").await;
    expect(&l, lreq(VERIFY_REGISTER, 1, 3 * s), deny(GUESSED, SEC * 9), "for both purposes").await;
    for i in 0..20 {
        let got = l.check(&lreq(VERIFY_LOGIN, 1, 4 * s + i)).await.unwrap();
        assert!(matches!(got, Decision::Deny { rule: GUESSED, .. }), "refusals are not counted: {got:?}");
    }
    expect(&l, lreq(VERIFY_LOGIN, 2, 3 * s), Decision::Allow, "another identifier has its own budget").await;
    expect(&l, lreq(LOGIN, 1, 3 * s), Decision::Allow, "sending a code is not a guess").await;
    expect(&l, lreq(LimitAction::Verify(Purpose::DeviceLogin), 1, 3 * s), Decision::Allow, "nor is a signature").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 12 * s - 1), deny(GUESSED, Duration::from_millis(1)), "1 ms of block left").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 12 * s), Decision::Allow, "check 4 when the block ends: the next is 20 s").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 13 * s), deny(GUESSED, SEC * 19), "doubled").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 32 * s), Decision::Allow, "check 5: 40 s").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 33 * s), deny(GUESSED, SEC * 39), "doubled again").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 72 * s), Decision::Allow, "check 6: capped at 40 s").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 73 * s), deny(GUESSED, SEC * 39), "the longest block, not 80 s").await;

    clear(&l, 1).await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 74 * s), Decision::Allow, "a right code lifted the block").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 75 * s), Decision::Allow, "and the count: two free checks again").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 76 * s), Decision::Allow, "the third starts a block").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 77 * s), deny(GUESSED, SEC * 9), "of 10 s: the escalation started over").await;
    clear(&l, 9).await;

    // The count is kept 10 minutes after the latest counted check (76 s), blocks or not.
    expect(&l, lreq(VERIFY_LOGIN, 1, 675 * s), Decision::Allow, "check 4, 1 s before it is forgotten").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 676 * s), deny(GUESSED, SEC * 19), "blocks 20 s: it was remembered").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 1275 * s), Decision::Allow, "forgotten 10 minutes after check 4: check 1").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 1276 * s), Decision::Allow, "check 2").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 1277 * s), Decision::Allow, "check 3").await;
    expect(&l, lreq(VERIFY_LOGIN, 1, 1278 * s), deny(GUESSED, SEC * 9), "a first block again").await;
}

async fn limiter_guess_budget_all_or_nothing(l: Arc<dyn Limiter>) {
    let s = 1000;
    let check = |ip: &str, ms: u64| from_ip(lreq(VERIFY_LOGIN, 5, ms), ip);
    expect(&l, check("192.0.2.1", 0), Decision::Allow, "check 1 from a").await;
    expect(&l, check("192.0.2.2", s), Decision::Allow, "check 2 from b").await;
    expect(&l, check("192.0.2.1", 2 * s), deny(LimitRule::IpVerifies, SEC * 598), "a is at its own limit").await;
    expect(&l, check("192.0.2.3", 3 * s), Decision::Allow, "the IP refusal neither counted nor blocked").await;
    expect(&l, check("192.0.2.4", 4 * s), deny(GUESSED, SEC * 9), "check 3 started the block").await;
}

async fn limiter_guess_budget_concurrency(l: Arc<dyn Limiter>) {
    let handles: Vec<_> = (0..32u8)
        .map(|i| {
            let (l, action) = (l.clone(), if i % 2 == 0 { VERIFY_LOGIN } else { VERIFY_REGISTER });
            tokio::spawn(async move { l.check(&from_ip(lreq(action, 6, 0), &format!("198.51.100.{i}"))).await })
        })
        .collect();
    let mut allowed = 0;
    for h in handles {
        match h.await.expect("no panic").expect("the limiter answers") {
            Decision::Allow => allowed += 1,
            Decision::Deny { rule, .. } => assert_eq!(rule, GUESSED),
        }
    }
    assert_eq!(allowed, 3, "32 concurrent checks with two free: the third is let through and blocks the rest");
}
