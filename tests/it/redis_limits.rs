//! Limits on real Redis: the limiter conformance suite, then two otpd nodes sharing one Redis
//! (standalone, and a 3-master Redis Cluster): cross-node cooldowns and limits, one code for
//! concurrent sends, prefix and IP rules, the guess budget, round trips per decision, and Redis
//! failing under a running node (stopped, then paused).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use otpd::config::{Config, Dur, RuleConfig, SmsBudgetConfig};
use otpd::limits::redis::{RedisLimiter, RedisSettings};
use otpd_actors::adapters::limiter::LocalLimiter;
use otpd_actors::ports::Limiter;
use otpd_actors::rules::clock::{ManualClock, Timestamp};
use otpd_actors::testkit;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::redis_server::Redis;
use crate::support::*;

/// Generates one test per scenario and deployment: `standalone::<name>` and `cluster::<name>`.
macro_rules! on_standalone_and_cluster {
    ($($scenario:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(redis) = crate::redis_server::Redis::standalone(stringify!($scenario)).await {
                        super::$scenario(redis).await;
                    }
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(redis) = crate::redis_server::Redis::cluster(stringify!($scenario)).await {
                        super::$scenario(redis).await;
                    }
                }
            )*
        }
    };
}

on_standalone_and_cluster!(
    conformance,
    cooldown_set_on_one_node_holds_on_the_other,
    a_limit_counted_on_both_nodes_trips_at_the_total,
    concurrent_sends_through_both_nodes_deliver_one_code,
    prefix_and_ip_limits_trip_independently_of_identifier_limits,
    a_decision_costs_one_script_call_per_slot_group,
    redis_stopped_mid_test_falls_back_reports_degraded_and_recovers,
    a_redis_that_does_not_answer_times_out_to_the_fallback,
    both_nodes_count_one_guess_budget_and_a_right_code_clears_it_for_both,
    an_sms_budget_spent_through_both_nodes_refuses_sms_until_midnight_utc,
);

fn settings(redis: &Redis, key_prefix: String) -> RedisSettings {
    let mut config = Config::default();
    redis.configure(&mut config);
    let mut s = RedisSettings::from_config(&config.redis).expect("redis is configured");
    s.key_prefix = key_prefix;
    s
}

/// The `testkit` limiter suite against `RedisLimiter`; every decision must come from Redis.
async fn conformance(redis: Redis) {
    let made: Arc<Mutex<Vec<Arc<RedisLimiter>>>> = Arc::default();
    let n = AtomicUsize::new(0);
    testkit::limiter(|policy| {
        let settings = settings(&redis, format!("conformance{}", n.fetch_add(1, Ordering::SeqCst)));
        let made = made.clone();
        async move {
            let local = Arc::new(LocalLimiter::new(policy.clone()));
            let limiter = RedisLimiter::start(settings, policy, [7; 32], local).await.expect("a redis limiter");
            made.lock().push(limiter.clone());
            limiter as Arc<dyn Limiter>
        }
    })
    .await;
    let made = made.lock().clone();
    for limiter in &made {
        let health = limiter.health();
        assert!(!health.is_degraded(), "{health:?}");
        assert_eq!(health.fallback_decisions(), 0, "every decision was made in redis");
        limiter.stop().await;
    }
    let keys = redis.keys();
    assert!(keys.iter().any(|k| k.starts_with("conformance0:{i:")), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("198.51.100") && !k.contains("1202200")), "no IP or prefix in clear");
}

/// Two nodes on one clock and one Redis, healthy.
async fn two_nodes(redis: &Redis, adjust: impl Fn(&mut Config)) -> (TestNode, TestNode) {
    let clock = Arc::new(ManualClock::new(Timestamp::system_now()));
    let config = |c: &mut Config| {
        redis.configure(c);
        adjust(c);
    };
    let a = start_node_on(clock.clone(), config).await;
    let b = start_node_on(clock, config).await;
    for node in [&a, &b] {
        let health = node.node.limiter_health().expect("redis is configured");
        assert!(!health.is_degraded(), "the node reached redis at start: {health:?}");
    }
    (a, b)
}

fn registration(p: &str) -> Value {
    json!({ "phone": p, "first_name": "Cross", "last_name": "Node" })
}

async fn ready(node: &TestNode) -> Reply {
    node.ops_get("/health/ready", None).await
}

/// Waits until the node's readiness says `status` (its probe runs every 50 ms).
async fn wait_for_readiness(node: &TestNode, status: &str) -> Reply {
    for _ in 0..600 {
        let r = ready(node).await;
        if r.body["status"] == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("readiness never said {status:?}: {}", ready(node).await.raw);
}

async fn post_from(node: &TestNode, ip: &str, path: &str, body: Value) -> Reply {
    let resp = node.client.post(node.url(path)).header("x-forwarded-for", ip).json(&body).send().await.unwrap();
    into_reply(resp).await
}

async fn cooldown_set_on_one_node_holds_on_the_other(redis: Redis) {
    let (a, b) = two_nodes(&redis, |_| {}).await;
    let p = phone(1);
    assert_eq!(a.post("/v1/register", registration(&p)).await.status, 202);
    let r = b.post("/v1/register", registration(&p)).await;
    assert_eq!((r.status, r.code(), r.header("retry-after")), (429, "resend_cooldown", Some("30")), "{}", r.raw);
    let r = b.post("/v1/otp/resend", json!({ "phone": p, "purpose": "register" })).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "{}", r.raw);
    a.advance(Duration::from_secs(29));
    let r = b.post("/v1/register", registration(&p)).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")), "{}", r.raw);
    a.advance(Duration::from_secs(1));
    assert_eq!(b.post("/v1/register", registration(&p)).await.status, 202, "the cooldown is over on B too");
    assert_eq!(a.wait_for_messages(&p, 1).await.len(), 1);
    assert_eq!(b.wait_for_messages(&p, 1).await.len(), 1);
}

async fn a_limit_counted_on_both_nodes_trips_at_the_total(redis: Redis) {
    let (a, b) = two_nodes(&redis, |_| {}).await;
    // No account: logins answer 202 and send nothing, but the limits apply all the same.
    let p = phone(2);
    for i in 0..5 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = node.post("/v1/login", json!({ "phone": p })).await;
        assert_eq!(r.status, 202, "send {} of 5: {}", i + 1, r.raw);
        a.advance(Duration::from_secs(31));
    }
    // Five sends at 0, 31, …, 124 s; now 155 s: the window (10 min) ends in 445 s, on both nodes.
    for node in [&a, &b] {
        let r = node.post("/v1/login", json!({ "phone": p })).await;
        assert_eq!(
            (r.status, r.code(), r.header("retry-after")),
            (429, "identifier_send_limit", Some("445")),
            "{}",
            r.raw
        );
    }
    a.advance(Duration::from_secs(445));
    assert_eq!(b.post("/v1/login", json!({ "phone": p })).await.status, 202);
}

async fn concurrent_sends_through_both_nodes_deliver_one_code(redis: Redis) {
    let (a, b) = two_nodes(&redis, |_| {}).await;
    let p = phone(3);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (client, url, body) = (node.client.clone(), node.url("/v1/register"), registration(&p));
        tasks.push(tokio::spawn(async move { into_reply(client.post(url).json(&body).send().await.unwrap()).await }));
    }
    let mut accepted = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            202 => accepted += 1,
            429 => assert_eq!(r.code(), "resend_cooldown", "{}", r.raw),
            other => panic!("unexpected {other}: {}", r.raw),
        }
    }
    assert_eq!(accepted, 1, "one of 16 concurrent sends through two nodes is accepted");
    let delivered = || a.messages_for(&p).len() + b.messages_for(&p).len();
    for _ in 0..500 {
        if delivered() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(delivered(), 1, "the two outboxes hold one code between them");
}

async fn prefix_and_ip_limits_trip_independently_of_identifier_limits(redis: Redis) {
    let (a, b) = two_nodes(&redis, |c| {
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.limits.prefix_send = RuleConfig { limit: Some(3), window: Some(Dur(Duration::from_secs(3600))), block: None };
        c.limits.ip_send = RuleConfig { limit: Some(4), window: Some(Dur(Duration::from_secs(600))), block: None };
    })
    .await;
    let login = |n: u32| json!({ "phone": phone(n) });
    // phone(n) for n < 10 000 share the prefix +1 202 200; phone(k × 10 000 + n) is in +1 202 2(00+k).
    for i in 0..3 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = post_from(node, &format!("203.0.113.{}", i + 1), "/v1/login", login(100 + i)).await;
        assert_eq!(r.status, 202, "{}", r.raw);
    }
    // The preset blocks a prefix for an hour once it trips.
    let r = post_from(&b, "203.0.113.50", "/v1/login", login(200)).await;
    assert_eq!(
        (r.status, r.code(), r.header("retry-after")),
        (429, "prefix_send_limit", Some("3600")),
        "a fourth number of the prefix, from a fresh IP, with no identifier limit reached: {}",
        r.raw
    );
    let r = post_from(&a, "203.0.113.50", "/v1/login", login(10_000 + 200)).await;
    assert_eq!(r.status, 202, "another prefix is served: {}", r.raw);

    let ip = "198.51.100.7";
    for k in 2..6 {
        let node = if k % 2 == 0 { &a } else { &b };
        let r = post_from(node, ip, "/v1/login", login(k * 10_000 + 1)).await;
        assert_eq!(r.status, 202, "{}", r.raw);
    }
    let r = post_from(&b, ip, "/v1/login", login(6 * 10_000 + 1)).await;
    // The override changed the limit and window; the medium preset's 15-minute block stays.
    assert_eq!((r.status, r.code(), r.header("retry-after")), (429, "ip_send_limit", Some("900")), "{}", r.raw);
    let r = post_from(&a, "198.51.100.8", "/v1/login", login(6 * 10_000 + 1)).await;
    assert_eq!(r.status, 202, "the refusal recorded nothing for that number (no cooldown): {}", r.raw);
}

async fn a_decision_costs_one_script_call_per_slot_group(redis: Redis) {
    let (a, _b) = two_nodes(&redis, |_| {}).await;
    let p = phone(7);
    let cost = |before: u64| redis.calls("evalsha") - before;

    let before = redis.calls("evalsha");
    assert_eq!(a.post("/v1/login", json!({ "phone": p })).await.status, 202);
    let sms_send = cost(before);
    let before = redis.calls("evalsha");
    assert_eq!(a.post("/v1/login", json!({ "email": "rtt@example.com" })).await.status, 202);
    let email_send = cost(before);
    let before = redis.calls("evalsha");
    assert_eq!(a.post("/v1/login/verify", json!({ "phone": p, "code": "000000" })).await.code(), "invalid_code");
    let verify = cost(before);
    let before = redis.calls("evalsha");
    assert_eq!(a.post("/v1/login", json!({ "phone": p })).await.code(), "resend_cooldown");
    let refused = cost(before);

    if redis.cluster {
        // One script per slot group (identifier, IP, prefix, country for the conversion guard
        // and, for the SMS budget of the whole deployment, `{all}`), sent together: one round
        // trip; a refusal by one group takes back what the other four recorded.
        assert_eq!((sms_send, email_send, verify, refused), (5, 2, 2, 9));
    } else {
        assert_eq!((sms_send, email_send, verify, refused), (1, 1, 1, 1), "one script per decision");
    }
}

async fn redis_stopped_mid_test_falls_back_reports_degraded_and_recovers(mut redis: Redis) {
    let (a, b) = two_nodes(&redis, |_| {}).await;
    let r = ready(&a).await;
    assert_eq!(
        (r.status, r.body["status"].as_str(), r.body["checks"]["limiter"]["status"].as_str()),
        (200, Some("ready"), Some("up"))
    );
    let p = phone(4);
    assert_eq!(a.post("/v1/register", registration(&p)).await.status, 202);

    redis.stop();
    // No send passes unchecked: A's in-process limiter remembers what Redis allowed through A.
    let r = a.post("/v1/register", registration(&p)).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "{}", r.raw);
    let r = ready(&a).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("degraded")), "degraded but serving: {}", r.raw);
    assert_eq!(r.body["checks"]["limiter"]["status"], "degraded");
    assert_eq!(r.body["checks"]["store"]["status"], "up");
    // New identifiers are limited in-process.
    let q = phone(5);
    assert_eq!(a.post("/v1/register", registration(&q)).await.status, 202);
    let r = a.post("/v1/register", registration(&q)).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "{}", r.raw);
    // B notices without traffic (its probe).
    wait_for_readiness(&b, "degraded").await;

    redis.restart().await;
    wait_for_readiness(&a, "ready").await;
    wait_for_readiness(&b, "ready").await;
    // Redis decides again: a cooldown set through A holds on B, which never saw this number.
    let s = phone(6);
    assert_eq!(a.post("/v1/register", registration(&s)).await.status, 202);
    let r = b.post("/v1/register", registration(&s)).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "{}", r.raw);
    let health = a.node.limiter_health().unwrap();
    assert!(!health.is_degraded() && health.outages() >= 1 && health.fallback_decisions() >= 3, "{health:?}");
}

async fn a_redis_that_does_not_answer_times_out_to_the_fallback(redis: Redis) {
    let (a, b) = two_nodes(&redis, |c| c.redis.timeout = Dur(Duration::from_millis(300))).await;
    let p = phone(8);
    assert_eq!(a.post("/v1/register", registration(&p)).await.status, 202);

    redis.pause(true);
    let r = a.post("/v1/register", registration(&p)).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "decided in-process after the timeout: {}", r.raw);
    assert_eq!(ready(&a).await.body["status"], "degraded");
    let q = phone(9);
    assert_eq!(a.post("/v1/login", json!({ "phone": q })).await.status, 202);
    let r = a.post("/v1/login", json!({ "phone": q })).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "{}", r.raw);

    redis.pause(false);
    wait_for_readiness(&a, "ready").await;
    wait_for_readiness(&b, "ready").await;
    // What Redis held before the pause is still there.
    let r = b.post("/v1/register", registration(&p)).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_degraded_without_redis_and_switches_when_it_answers() {
    let test = "a_node_starts_degraded_without_redis_and_switches_when_it_answers";
    if !Redis::installed(test) {
        return;
    }
    let port = Redis::free_port();
    let t = start_node_with(|c| {
        c.redis.url = otpd::config::RedisUrl(format!("redis://127.0.0.1:{port}"));
        c.redis.probe_interval = Dur(Duration::from_millis(50));
    })
    .await;
    let r = ready(&t).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("degraded")), "{}", r.raw);
    assert!(r.body["checks"]["limiter"]["error"].as_str().unwrap().contains("cannot connect"), "{}", r.raw);
    let p = phone(10);
    assert_eq!(t.post("/v1/login", json!({ "phone": p })).await.status, 202);
    let r = t.post("/v1/login", json!({ "phone": p })).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "limited in-process meanwhile: {}", r.raw);

    let redis = Redis::standalone_at(port).await;
    wait_for_readiness(&t, "ready").await;
    assert_eq!(t.post("/v1/login", json!({ "phone": phone(11) })).await.status, 202);
    assert_eq!(redis.calls("evalsha"), 1, "decided in redis once it answered");
}

/// Whether a code check was let through by the limits (its code compared, or found missing,
/// late or burned).
fn let_through(r: &Reply) -> bool {
    matches!(r.code(), "invalid_code" | "no_pending_code" | "code_expired" | "too_many_attempts")
}

async fn both_nodes_count_one_guess_budget_and_a_right_code_clears_it_for_both(redis: Redis) {
    let (a, b) = two_nodes(&redis, |_| {}).await;
    let p = phone(12);
    a.signed_up(&p).await;
    a.advance(Duration::from_secs(30));
    // Each node has its own store and challenges (these two are not a cluster; the account
    // is on A), the budget is in Redis: checks through A (which holds a login code) and B
    // (which knows no account) count alike.
    assert_eq!(a.post("/v1/login", json!({ "phone": p })).await.status, 202);
    let typo = wrong_code(a.wait_for_messages(&p, 2).await[1]["code"].as_str().unwrap());
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = node.post("/v1/login/verify", json!({ "phone": p, "code": typo })).await;
        assert!(let_through(&r), "check {} of 6 free: {}", i + 1, r.raw);
    }
    for node in [&a, &b] {
        let r = node.post("/v1/register/verify", json!({ "phone": p, "code": typo })).await;
        assert_eq!(
            (r.status, r.code(), r.header("retry-after")),
            (429, "identifier_guess_limit", Some("60")),
            "blocked on both nodes: {}",
            r.raw
        );
    }

    // After the block: a new code through A, a seventh check through B (it starts a 2-minute
    // block), then the right code through A.
    a.advance(Duration::from_secs(60));
    assert_eq!(a.post("/v1/login", json!({ "phone": p })).await.status, 202);
    let code = a.wait_for_messages(&p, 3).await[2]["code"].as_str().unwrap().to_owned();
    let r = b.post("/v1/login/verify", json!({ "phone": p, "code": typo })).await;
    assert!(let_through(&r), "the seventh check: {}", r.raw);
    let r = a.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!((r.code(), r.header("retry-after")), ("identifier_guess_limit", Some("120")), "{}", r.raw);
    a.advance(Duration::from_secs(120));
    let (evalsha, hdel) = (redis.calls("evalsha"), redis.calls("hdel"));
    let r = a.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    // The decision's groups (identifier, IP), then the clearing HDEL and the conversion
    // guard's verified code (its groups: prefix, country), sent together.
    let (decision, verified) = if redis.cluster { (2, 2) } else { (1, 1) };
    assert_eq!(
        (redis.calls("evalsha") - evalsha, redis.calls("hdel") - hdel),
        (decision + verified, 1),
        "a right code costs its decision (one script per slot group), one HDEL and the guard's count"
    );
    // Cleared in Redis, so for B too: six free checks again, then a first block of a minute.
    for i in 0..6 {
        let r = b.post("/v1/login/verify", json!({ "phone": p, "code": typo })).await;
        assert!(let_through(&r), "check {} after the right code: {}", i + 1, r.raw);
    }
    let r = b.post("/v1/login/verify", json!({ "phone": p, "code": typo })).await;
    assert_eq!((r.code(), r.header("retry-after")), ("identifier_guess_limit", Some("60")), "{}", r.raw);
}

/// Budgets of 0.05 in total and 0.03 for +1, at 0.01 a segment: three +1 codes, then two +44
/// ones, spend everything; both nodes count into one Redis.
async fn an_sms_budget_spent_through_both_nodes_refuses_sms_until_midnight_utc(redis: Redis) {
    let (a, b) = two_nodes(&redis, |c| {
        c.limits.sms_budget = SmsBudgetConfig {
            daily: Some(0.05),
            countries: [("1".to_owned(), 0.03)].into(),
            prices: [("1".to_owned(), 0.01), ("+44".to_owned(), 0.01)].into(),
            ..SmsBudgetConfig::default()
        };
    })
    .await;
    let node = |i: u32| if i.is_multiple_of(2) { &a } else { &b };
    let refused_until_midnight = |r: &Reply, what: &str| {
        let now = a.now().as_millis();
        let left = (86_400_000 - now % 86_400_000).div_ceil(1000).to_string();
        assert_eq!(
            (r.status, r.code(), r.header("retry-after")),
            (503, "sms_budget_exhausted", Some(left.as_str())),
            "{what}: {}",
            r.raw
        );
    };
    for i in 0..3 {
        let r = node(i).post("/v1/login", json!({ "phone": phone(300 + i) })).await;
        assert_eq!(r.status, 202, "+1 code {} of 3: {}", i + 1, r.raw);
    }
    let r = b.post("/v1/register", registration(&phone(310))).await;
    refused_until_midnight(&r, "a fourth +1 code, through the other node");
    let uk = ["+447911123401", "+447911123402", "+447911123403"];
    for (i, number) in uk.iter().take(2).enumerate() {
        let r = node(i as u32).post("/v1/login", json!({ "phone": number })).await;
        assert_eq!(r.status, 202, "+44 is not +1: {}", r.raw);
    }
    let r = a.post("/v1/login", json!({ "phone": uk[2] })).await;
    refused_until_midnight(&r, "the total is spent");
    let r = b.post("/v1/login", json!({ "email": "budget@example.com" })).await;
    assert_eq!(r.status, 202, "e-mail is not SMS: {}", r.raw);
    let r = ready(&b).await;
    assert_eq!(r.status, 200, "a spent budget leaves the node ready: {}", r.raw);
    assert_eq!(r.body["checks"]["sms_budget"]["status"], "degraded", "{}", r.raw);

    // Midnight UTC: both budgets start again.
    let now = a.now().as_millis();
    a.advance(Duration::from_millis(86_400_000 - now % 86_400_000));
    for (i, number) in [phone(310), uk[2].to_owned()].iter().enumerate() {
        let r = node(i as u32).post("/v1/login", json!({ "phone": number })).await;
        assert_eq!(r.status, 202, "a new day: {}", r.raw);
    }
    assert_eq!(ready(&a).await.body["checks"]["sms_budget"]["status"], "up");
}
