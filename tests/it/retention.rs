//! Retention on the embedded store: with short lifetimes and a clock the test sets, the sweep
//! deletes what is past its lifetime — audit events with their index entries and keys, ended
//! sessions, revoked devices — and keeps everything live; on a node, the hourly sweep's work is
//! counted, and the admin view says how long the trail keeps events. (ScyllaDB expires audit
//! events by TTL, set per statement: `src/store/scylla/cql.rs` checks the TTLs; the in-memory
//! CQL server parses TTLs but does not expire rows, so no test here watches one expire.)

use std::time::Duration;

use otpd::config::{Dur, RetentionConfig};
use otpd::store::embedded::{EmbeddedOptions, EmbeddedStore};
use otpd::store::retention::{Swept, sweep};
use otpd_actors::ports::{
    AuditEvent, AuditLog, AuthMethod, Device, DeviceStore, InsertDevice, Platform, RevokeReason, Session, SessionStore,
};
use otpd_actors::rules::audit::{Api, AuditOutcome, Step};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::device_key::{DeviceKey, KeyAlgorithm};
use otpd_actors::rules::ids::{DeviceId, SessionId, UserId};
use otpd_actors::rules::keys::IdentHash;
use uuid::Uuid;

use crate::support::*;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn short() -> RetentionConfig {
    RetentionConfig { audit: Dur(DAY), ended_sessions: Dur(HOUR), removed_devices: Dur(HOUR) }
}

fn event(at: Timestamp, trace: &str, ident: IdentHash) -> AuditEvent {
    AuditEvent {
        at,
        trace_id: trace.into(),
        api: Api::Login,
        step: Step::Done,
        outcome: AuditOutcome::Ok,
        message: "ok".into(),
        client_ip: Some("203.0.113.5".parse().unwrap()),
        user_agent: Some("retention/1".into()),
        ident_hash: Some(ident),
        user_id: None,
    }
}

fn device(user: UserId, key: u8, at: Timestamp) -> Device {
    Device {
        id: DeviceId(Uuid::now_v7()),
        user_id: user,
        name: format!("phone {key}"),
        platform: Platform::Android,
        key: DeviceKey { algorithm: KeyAlgorithm::Es256, spki_der: vec![key; 91] },
        created_at: at,
        revoked_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_what_is_past_its_lifetime_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store"), EmbeddedOptions::default()).unwrap();
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let at = |d: Duration| t0.plus(d);
    let (old_ident, new_ident) = (IdentHash([1; 16]), IdentHash([2; 16]));

    // 2,500 old events (more than one sweep step), under two identifiers; 3 recent ones.
    let appends = (0..2_500u64).map(|i| {
        let store = store.clone();
        let ident = if i % 2 == 0 { old_ident } else { new_ident };
        async move { store.append(event(t0.plus(Duration::from_millis(i)), &format!("old-{}", i % 7), ident)).await }
    });
    for r in futures::future::join_all(appends).await {
        r.unwrap();
    }
    for i in 0..3 {
        store.append(event(at(DAY * 2 + HOUR * i), "recent", new_ident)).await.unwrap();
    }

    // Sessions: one revoked at t0, one expired at t0 + 1h, one live for 30 days.
    let user = UserId(Uuid::now_v7());
    let session = |digest: u8, expires: Timestamp| {
        Session::new(SessionId(Uuid::now_v7()), user, [digest; 32], AuthMethod::Otp, t0, expires)
    };
    let (revoked, expired, live) = (session(1, at(DAY * 30)), session(2, at(HOUR)), session(3, at(DAY * 30)));
    for s in [&revoked, &expired, &live] {
        store.insert_session(s).await.unwrap();
    }
    assert!(store.revoke_session(revoked.id, RevokeReason::Logout, t0).await.unwrap());
    // Devices: one revoked at t0, one active.
    let (gone, kept) = (device(user, 1, t0), device(user, 2, t0));
    for d in [&gone, &kept] {
        assert_eq!(store.insert_device(d, 5).await.unwrap(), InsertDevice::Inserted);
    }
    store.revoke_device(user, gone.id, t0).await.unwrap();

    // Within every lifetime, nothing goes.
    assert_eq!(sweep(&store, at(Duration::from_secs(30 * 60)), &short()).await, Swept::default());

    let now = at(DAY * 2 + HOUR * 3);
    let swept = sweep(&store, now, &short()).await;
    assert_eq!((swept.audit_events, swept.sessions, swept.devices), (2_500, 2, 1), "{swept:?}");
    // A key seals a subject's events within a minute (of event time) of its first: both
    // identifiers' keys of the old events go; the key drawn for the recent events stays.
    assert_eq!(swept.subject_keys, 2, "{swept:?}");

    // What is left: the recent events, by both indexes, still readable (their keys stay).
    assert!(store.by_identifier(&old_ident, 10_000).await.unwrap().is_empty());
    let recent = store.by_identifier(&new_ident, 10_000).await.unwrap();
    assert_eq!(recent.len(), 3, "{recent:?}");
    assert!(recent.iter().all(|e| e.user_agent.as_deref() == Some("retention/1")), "{recent:?}");
    for trace in 0..7 {
        assert!(store.by_trace(&format!("old-{trace}"), 10).await.unwrap().is_empty());
    }
    assert_eq!(store.by_trace("recent", 10).await.unwrap().len(), 3);
    assert_eq!(store.oldest_event().unwrap(), Some(at(DAY * 2)));

    for s in [&revoked, &expired] {
        assert_eq!(store.session(s.id).await.unwrap(), None, "ended more than an hour ago");
    }
    assert_eq!(store.session(live.id).await.unwrap().as_ref(), Some(&live));
    assert_eq!(store.sessions_of_user(user).await.unwrap(), vec![live.clone()], "the index entries went too");
    assert_eq!(store.device(gone.id).await.unwrap(), None);
    assert_eq!(store.devices_of_user(user).await.unwrap(), vec![kept.clone()]);

    assert_eq!(sweep(&store, now, &short()).await, Swept::default(), "a second sweep finds nothing");
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sweeps_counts_and_says_what_its_trail_keeps() {
    let t = start_node_with(|c| c.retention = short()).await;
    let tokens = t.signed_up("+12025550191").await;
    let token = tokens["access_token"].as_str().unwrap();
    let r = into_reply(t.client.post(t.url("/v1/logout")).bearer_auth(token).send().await.unwrap()).await;
    assert_eq!(r.status, 204, "{}", r.raw);

    t.advance(DAY + HOUR);
    // The recorder is the process's: other tests' nodes count into it too, so compare growth.
    let counted = |kind: &'static str| {
        let t = &t;
        async move { scrape(&t.client, &t.ops_url("/metrics")).await.sum("otpd_retention_removed_total", &[("kind", kind)]) }
    };
    let (sessions_before, events_before) = (counted("session").await, counted("audit_event").await);
    let swept = t.node.sweep_retention(&short()).await;
    assert_eq!(swept.sessions, 1, "the logged-out session: {swept:?}");
    assert!(swept.audit_events >= 3, "register, its verify and delivery, the logout: {swept:?}");
    assert!(counted("session").await - sessions_before >= 1.0);
    assert!(counted("audit_event").await - events_before >= swept.audit_events as f64);

    let audit = t.ops_get("/v1/admin/audit?identifier=%2B12025550191", Some(&t.node.admin_token)).await;
    assert_eq!(audit.status, 200, "{}", audit.raw);
    assert_eq!(audit.body["events"], serde_json::json!([]), "every event was older than a day");
    assert_eq!(audit.body["retention"]["audit_days"], serde_json::json!(1));
    assert!(audit.body["retention"]["note"].as_str().unwrap().contains("older records have been deleted"));
    t.node.shutdown().await;
}
