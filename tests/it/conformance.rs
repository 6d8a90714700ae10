//! The embedded store and the in-process limiter against the conformance suites every adapter
//! must pass (the Redis limiter runs the same limiter suite in `redis_limits.rs`).

use otpd::store::embedded::{EmbeddedOptions, EmbeddedStore};
use std::sync::Arc;

use otpd_actors::testkit;

fn store() -> (tempfile::TempDir, std::sync::Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store"), EmbeddedOptions::default()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn embedded_user_store() {
    let (_dir, s) = store();
    testkit::user_store(s).await;
    let (_dir, s) = store();
    testkit::user_purge(s).await;
}

#[tokio::test]
async fn embedded_session_store() {
    let (_dir, s) = store();
    testkit::session_store(s).await;
    let (_dir, s) = store();
    testkit::open_session(s).await;
}

#[tokio::test]
async fn embedded_device_store() {
    let (_dir, s) = store();
    testkit::device_store(s).await;
}

#[tokio::test]
async fn embedded_passkey_store() {
    let (_dir, s) = store();
    testkit::passkey_store(s).await;
}

#[tokio::test]
async fn embedded_audit_log() {
    let (_dir, s) = store();
    testkit::audit_log(s).await;
}

#[tokio::test]
async fn embedded_erasure() {
    let (_dir, s) = store();
    testkit::erasure(s).await;
}

#[tokio::test]
async fn embedded_census() {
    let (_dir, s) = store();
    testkit::census(s).await;
}

/// The timing wrapper the node puts around its store passes every suite too.
#[tokio::test]
async fn metered_embedded_store() {
    use otpd_actors::adapters::metered::MeteredStore;
    let metered = |s| Arc::new(MeteredStore::new("embedded", s));
    let (_d1, s) = store();
    testkit::user_store(metered(s)).await;
    let (_d2, s) = store();
    testkit::session_store(metered(s)).await;
    let (_d7, s) = store();
    testkit::open_session(metered(s)).await;
    let (_d3, s) = store();
    testkit::device_store(metered(s)).await;
    let (_d6, s) = store();
    testkit::passkey_store(metered(s)).await;
    let (_d4, s) = store();
    testkit::audit_log(metered(s)).await;
    let (_d5, s) = store();
    testkit::census(metered(s)).await;
}

/// On open, the census counts what the store already holds (users, verified, sessions that
/// are neither revoked nor expired), then follows new writes.
#[tokio::test]
async fn embedded_census_counts_what_a_reopened_store_holds() {
    use otpd_actors::ports::{Census, CensusSource, SessionStore};
    use otpd_actors::rules::clock::Timestamp;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let t = Timestamp::from_millis(1_700_000_000_000);
    {
        let s = EmbeddedStore::open(&path, EmbeddedOptions::default()).unwrap();
        testkit::census(s.clone()).await;
        s.close();
    }
    let s = EmbeddedStore::open(&path, EmbeddedOptions::default()).unwrap();
    let at = |secs| t.plus(std::time::Duration::from_secs(secs));
    let c = testkit::settled_census(&*s, at(7400)).await;
    assert_eq!(
        c,
        Census { users: 3, verified_users: 1, active_sessions: 0 },
        "the suite left three users, one verified"
    );
    // A session written before the reopen that is still active counts after it.
    let sessions = s.sessions_of_user(otpd_actors::rules::ids::UserId(uuid_of_user(&s).await)).await.unwrap();
    assert!(sessions.iter().all(|x| !x.is_active(at(7400))));
    let mut fresh = sessions[0].clone();
    fresh.id = otpd_actors::rules::ids::SessionId(uuid::Uuid::now_v7());
    fresh.revoked_at = None;
    fresh.revoke_reason = None;
    fresh.expires_at = at(90_000);
    s.insert_session(&fresh).await.unwrap();
    s.close();
    drop(s);
    let s = EmbeddedStore::open(&path, EmbeddedOptions::default()).unwrap();
    assert_eq!(testkit::settled_census(&*s, at(7500)).await.active_sessions, 1);
    assert_eq!(s.census(at(90_060)).await.unwrap().unwrap().active_sessions, 0);
}

/// The id of the first account the census suite created (identifier hash 101…).
async fn uuid_of_user(s: &EmbeddedStore) -> uuid::Uuid {
    use otpd_actors::ports::UserStore;
    s.user_by_identifier(&otpd_actors::rules::keys::IdentHash([101; 16])).await.unwrap().unwrap().id.0
}

#[tokio::test]
async fn embedded_store_reopens_with_its_data_and_continues_the_audit_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let s = EmbeddedStore::open(&path, EmbeddedOptions::default()).unwrap();
        testkit::audit_log(s.clone()).await;
        s.close();
    }
    let s = EmbeddedStore::open(&path, EmbeddedOptions::default()).unwrap();
    use otpd_actors::ports::AuditLog;
    let before = s.by_identifier(&otpd_actors::rules::keys::IdentHash([0xaa; 16]), 100).await.unwrap();
    assert_eq!(before.len(), 5, "events survive a reopen");
    // Appending after a reopen must not overwrite earlier events.
    let mut e = before[0].clone();
    e.message = "after reopen".into();
    s.append(e).await.unwrap();
    let after = s.by_identifier(&otpd_actors::rules::keys::IdentHash([0xaa; 16]), 100).await.unwrap();
    assert_eq!(after.len(), 6);
    assert_eq!(after[0].message, "after reopen");
}

#[tokio::test]
async fn in_process_limiter() {
    use otpd_actors::adapters::limiter::LocalLimiter;
    use otpd_actors::ports::Limiter;
    testkit::limiter(
        |policy| async move { std::sync::Arc::new(LocalLimiter::new(policy)) as std::sync::Arc<dyn Limiter> },
    )
    .await;
}
