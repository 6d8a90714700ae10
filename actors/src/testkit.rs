//! Conformance suites every adapter runs (feature `testkit`).
//!
//! Each suite takes a fresh, empty implementation and panics with a message naming the broken
//! contract. The embedded store runs them in `tests/`; the ScyllaDB and Redis adapters run the
//! same functions, so "passes the conformance suite" means the same thing for all of them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::clock::Timestamp;
use crate::identifier::Identifier;
use crate::keys::IdentHash;
use crate::ports::{
    AuditEvent, AuditLog, AuditOutcome, AuthMethod, InsertUser, Session, SessionId, SessionStore, User, UserId,
    UserStore,
};

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
    assert_eq!(store.user_by_identifier(&alice.ident_hash).await.unwrap().as_ref(), Some(&alice));
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
    assert_eq!(store.user_by_identifier(&alice.ident_hash).await.unwrap().as_ref(), Some(&verified));
    assert_eq!(store.user_by_id(UserId(Uuid::now_v7())).await.unwrap(), None);
}

/// Sessions: insert and read back; unknown ids read as none.
pub async fn session_store(store: Arc<dyn SessionStore>) {
    let t = Timestamp::from_millis(1_700_000_000_000);
    let s = Session {
        id: SessionId(Uuid::now_v7()),
        user_id: UserId(Uuid::now_v7()),
        refresh_digest: [9; 32],
        method: AuthMethod::Otp,
        created_at: t,
        expires_at: t.plus(Duration::from_secs(3600)),
        revoked_at: None,
    };
    store.insert_session(&s).await.unwrap();
    assert_eq!(store.session(s.id).await.unwrap().as_ref(), Some(&s));
    assert_eq!(store.session(SessionId(Uuid::now_v7())).await.unwrap(), None);
}

fn event(i: u32, trace: &str, ident: Option<IdentHash>) -> AuditEvent {
    AuditEvent {
        at: Timestamp::from_millis(1_700_000_000_000 + u64::from(i)),
        trace_id: trace.into(),
        api: "login".into(),
        step: "done".into(),
        outcome: if i.is_multiple_of(3) { AuditOutcome::Rejected } else { AuditOutcome::Ok },
        message: format!("event {i}"),
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
        user_agent: Some("conformance/1".into()),
        ident_hash: ident,
        user_id: None,
    }
}

/// Audit: appended events come back by identifier and by trace id, newest first, limited.
pub async fn audit_log(log: Arc<dyn AuditLog>) {
    let a = IdentHash([0xaa; 16]);
    let b = IdentHash([0xbb; 16]);
    for i in 0..10 {
        let ident = if i % 2 == 0 { Some(a) } else { Some(b) };
        log.append(event(i, &format!("trace-{}", i / 5), ident)).await.unwrap();
    }
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
    assert_eq!(log.by_trace("trace-x", 10).await.unwrap().len(), 1);
    assert!(log.by_trace("trace-", 10).await.unwrap().is_empty(), "trace ids match exactly, not by prefix");
    assert!(log.by_identifier(&IdentHash([0; 16]), 10).await.unwrap().is_empty());
}
