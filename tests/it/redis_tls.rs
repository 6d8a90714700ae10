//! Limits on a real `redis-server` that speaks TLS only (`rediss://`): two nodes share a
//! cooldown through it, a node that does not trust its CA degrades and says why, and mutual
//! TLS presents the client certificate, whose key must be its owner's only.
//!
//! The server has no plain-text port (`--port 0`), so every decision Redis makes here came
//! over TLS. Certificates are made by `openssl` for each test (`support::test_cert`).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use otpd::config::Config;
use otpd_actors::rules::clock::{ManualClock, Timestamp};
use serde_json::{Value, json};

use crate::redis_server::Redis;
use crate::support::*;

fn registration(p: &str) -> Value {
    json!({ "phone": p, "first_name": "Tls", "last_name": "Node" })
}

/// Waits (its probe runs every 50 ms) until the node's limiter is degraded for a reason that
/// contains `needle` (the TLS error rustls reported); returns the reason.
async fn degraded_because(node: &TestNode, needle: &str) -> String {
    let health = node.node.limiter_health().expect("redis is configured");
    for _ in 0..200 {
        if let Some(reason) = health.reason().filter(|r| r.contains(needle)) {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the limiter never said {needle:?}: {health:?}, reason {:?}", health.reason());
}

fn healthy(node: &TestNode) {
    let health = node.node.limiter_health().expect("redis is configured");
    assert!(!health.is_degraded(), "the node reached redis over TLS at start: {:?}", health.reason());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_cooldown_through_redis_over_tls() {
    let test = "redis_tls::two_nodes_share_a_cooldown_through_redis_over_tls";
    let Some(redis) = Redis::standalone_tls(test, false).await else { return };
    let clock = Arc::new(ManualClock::new(Timestamp::system_now()));
    let a = start_node_on(clock.clone(), |c| redis.configure(c)).await;
    let b = start_node_on(clock, |c| redis.configure(c)).await;
    healthy(&a);
    healthy(&b);

    let p = phone(1);
    assert_eq!(a.post("/v1/register", registration(&p)).await.status, 202);
    let r = b.post("/v1/register", registration(&p)).await;
    assert_eq!((r.status, r.code(), r.header("retry-after")), (429, "resend_cooldown", Some("30")), "{}", r.raw);
    a.advance(Duration::from_secs(30));
    assert_eq!(b.post("/v1/register", registration(&p)).await.status, 202, "the cooldown is over on B too");
    assert_eq!(redis.calls("evalsha"), 3, "every decision was made in redis, over TLS (it has no other port)");
    for node in [&a, &b] {
        assert_eq!(node.node.limiter_health().unwrap().fallback_decisions(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_trust_the_servers_ca_degrades_and_says_why() {
    let test = "redis_tls::a_node_that_does_not_trust_the_servers_ca_degrades_and_says_why";
    let Some(redis) = Redis::standalone_tls(test, false).await else { return };
    // No redis.tls_ca_file: the system's roots, which never signed the test CA.
    let t = start_node_with(|c| {
        redis.configure(c);
        c.redis.tls_ca_file = None;
    })
    .await;
    let reason = degraded_because(&t, "InvalidCertificate(UnknownIssuer)").await;
    assert!(reason.contains("cannot connect"), "{reason}");

    // Limits still hold, in-process, and nothing reached Redis.
    let p = phone(2);
    assert_eq!(t.post("/v1/login", json!({ "phone": p })).await.status, 202);
    let r = t.post("/v1/login", json!({ "phone": p })).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "{}", r.raw);
    assert_eq!(redis.calls("evalsha"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_sends_the_client_certificate_whose_key_must_be_private() {
    let test = "redis_tls::mutual_tls_sends_the_client_certificate_whose_key_must_be_private";
    let Some(redis) = Redis::standalone_tls(test, true).await else { return };

    let with_cert = start_node_with(|c| redis.configure(c)).await;
    healthy(&with_cert);
    assert_eq!(with_cert.post("/v1/login", json!({ "phone": phone(3) })).await.status, 202);
    assert_eq!(redis.calls("evalsha"), 1, "decided in redis");

    // The server asks for a certificate; a node without one is turned away.
    let without = start_node_with(|c| {
        redis.configure(c);
        c.redis.tls_cert_file = None;
        c.redis.tls_key_file = None;
    })
    .await;
    let reason = degraded_because(&without, "CertificateRequired").await;
    assert!(reason.contains("cannot connect"), "{reason}");

    // A client key other users can read stops the start, naming the file and the fix.
    let tls = redis.tls.clone().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("client.key");
    std::fs::copy(&tls.client.1, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config: Config = test_config(data.path());
    redis.configure(&mut config);
    config.redis.tls_key_file = Some(key.clone());
    let clock = Arc::new(ManualClock::new(Timestamp::system_now()));
    let e = otpd::server::start(config, clock).await.err().expect("the start is refused");
    let text = e.to_string();
    for needle in ["redis TLS", &format!("{}: mode 0644", key.display()), &format!("chmod 600 {}", key.display())] {
        assert!(text.contains(needle), "missing {needle:?} in: {text}");
    }
}
