//! The embedded store and the in-process limiter against the conformance suites every adapter
//! must pass (the Redis limiter runs the same limiter suite in `redis_limits.rs`).

use otpd::store::embedded::{EmbeddedOptions, EmbeddedStore};
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
}

#[tokio::test]
async fn embedded_session_store() {
    let (_dir, s) = store();
    testkit::session_store(s).await;
}

#[tokio::test]
async fn embedded_device_store() {
    let (_dir, s) = store();
    testkit::device_store(s).await;
}

#[tokio::test]
async fn embedded_audit_log() {
    let (_dir, s) = store();
    testkit::audit_log(s).await;
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
    let before = s.by_identifier(&otpd_actors::keys::IdentHash([0xaa; 16]), 100).await.unwrap();
    assert_eq!(before.len(), 5, "events survive a reopen");
    // Appending after a reopen must not overwrite earlier events.
    let mut e = before[0].clone();
    e.message = "after reopen".into();
    s.append(e).await.unwrap();
    let after = s.by_identifier(&otpd_actors::keys::IdentHash([0xaa; 16]), 100).await.unwrap();
    assert_eq!(after.len(), 6);
    assert_eq!(after[0].message, "after reopen");
}

#[tokio::test]
async fn in_process_limiter() {
    use otpd_actors::limiter::LocalLimiter;
    use otpd_actors::ports::Limiter;
    testkit::limiter(
        |policy| async move { std::sync::Arc::new(LocalLimiter::new(policy)) as std::sync::Arc<dyn Limiter> },
    )
    .await;
}
