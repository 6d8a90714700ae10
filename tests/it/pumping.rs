//! A simulated SMS-pumping run against a real node, in-process limits and Redis: bots request
//! login codes for many numbers of three premium-rate prefixes, from rotating client addresses
//! (loopback, through a trusted proxy), and never type a code; meanwhile real users in other
//! countries sign in and type theirs. The conversion guard must throttle the pumped prefixes
//! and never refuse a real user. The counts are printed (docs/limits.md quotes them).

use std::time::Duration;

use serde_json::{Value, json};

use crate::redis_server::Redis;
use crate::support::*;

/// Rounds of the run; each is 5 s of the node's clock: 10 minutes in all.
const ROUNDS: u32 = 120;
const ROUND: Duration = Duration::from_secs(5);

/// The three pumped prefixes (+998 90 12…, +998 91 34…, +998 93 56…), each number of them used once.
fn pumped(prefix: usize, n: u32) -> String {
    let head = ["9012", "9134", "9356"][prefix];
    format!("+998{head}{:05}", n)
}

async fn post_from(t: &TestNode, ip: &str, path: &str, body: Value) -> Reply {
    let resp = t.client.post(t.url(path)).header("x-forwarded-for", ip).json(&body).send().await.unwrap();
    into_reply(resp).await
}

struct Counts {
    pumped_through: u32,
    pumped_refused: u32,
    real_through: u32,
    real_refused: u32,
}

async fn run(t: &TestNode) -> Counts {
    let mut c = Counts { pumped_through: 0, pumped_refused: 0, real_through: 0, real_refused: 0 };
    for round in 0..ROUNDS {
        for prefix in 0..3 {
            let n = round * 3 + prefix as u32;
            let ip = format!("127.{}.{}.{}", 1 + n / 65_536, (n / 256) % 256, n % 256);
            let r = post_from(t, &ip, "/v1/login", json!({ "phone": pumped(prefix, n) })).await;
            match (r.status, r.code()) {
                (202, _) => c.pumped_through += 1,
                (429, "destination_throttled") => c.pumped_refused += 1,
                _ => panic!("a pumped send: {}", r.raw),
            }
        }
        // A real user, in +1 or +44, from an address of their own, signs up and types the code.
        let ip = format!("203.0.113.{}", round % 256);
        let number = if round % 2 == 0 { phone(5_000 + round) } else { format!("+4479111{:05}", round) };
        let r =
            post_from(t, &ip, "/v1/register", json!({ "phone": number, "first_name": "R", "last_name": "U" })).await;
        if r.status == 202 {
            c.real_through += 1;
            let code = t.code_for(&number).await;
            let v = post_from(t, &ip, "/v1/register/verify", json!({ "phone": number, "code": code })).await;
            assert_eq!(v.status, 200, "{}", v.raw);
        } else {
            println!("a real sign-up refused: {}", r.raw);
            c.real_refused += 1;
        }
        t.advance(ROUND);
    }
    c
}

/// Limits as shipped, but a spend budget out of the way (this run measures the guard) and the
/// proxy trusted.
fn configure(c: &mut otpd::config::Config) {
    c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    c.limits.sms_budget.daily = Some(100_000.0);
}

async fn pumping_run(name: &str, t: &TestNode) {
    let c = run(t).await;
    let minutes = u32::try_from((ROUND * ROUNDS).as_secs() / 60).unwrap();
    println!(
        "pumping ({name}): {} of {} pumped sends let through, {} refused; real sign-ups: {} through, {} refused",
        c.pumped_through,
        ROUNDS * 3,
        c.pumped_refused,
        c.real_through,
        c.real_refused
    );
    assert_eq!(c.real_refused, 0, "no real user is refused");
    assert_eq!(c.real_through, ROUNDS);
    // Each prefix: its floor of 20, then one send a minute (one more for the minute it trips in).
    let bound = 3 * (20 + minutes + 1);
    assert!(c.pumped_through <= bound, "{} pumped sends went through, more than {bound}", c.pumped_through);
    assert!(c.pumped_through >= 3 * 20, "the floor lets a new destination start: {}", c.pumped_through);
    operator_sees_pins_and_lifts(t).await;
}

async fn ops(t: &TestNode, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
    let trace = format!("{method}-destination");
    let mut req =
        t.client.request(method, t.ops_url(path)).bearer_auth(&t.node.admin_token).header("x-request-id", trace);
    if let Some(body) = body {
        req = req.json(&body);
    }
    into_reply(req.send().await.unwrap()).await
}

/// After the run: the admin API lists the three pumped prefixes first, refusing; a pin to
/// `record` lets one through; a lift judges it afresh; both are audited.
async fn operator_sees_pins_and_lifts(t: &TestNode) {
    let list = ops(t, reqwest::Method::GET, "/v1/admin/destinations?limit=5", None).await;
    assert_eq!(list.status, 200, "{}", list.raw);
    let rows = list.body["destinations"].as_array().expect("a list");
    let first: Vec<&str> = rows.iter().take(3).map(|d| d["destination"].as_str().unwrap()).collect();
    for head in ["+9989012", "+9989134", "+9989356"] {
        assert!(first.contains(&head), "{head} among the worst three: {}", list.raw);
    }
    for row in &rows[..3] {
        assert_eq!((row["scope"].as_str(), row["tripped"].as_bool()), (Some("prefix"), Some(true)), "{row}");
        assert_eq!(row["verified"], 0, "{row}");
        assert_eq!(row["mode"], "throttle", "{row}");
    }
    assert!(!list.raw.contains("+998901200"), "no whole number is listed: {}", list.raw);

    // Pinned to record: the next pumped send goes through (an operator's exemption).
    let refused = post_from(t, "127.200.0.1", "/v1/login", json!({ "phone": pumped(0, 90_000) })).await;
    assert_eq!(refused.code(), "destination_throttled", "{}", refused.raw);
    let pin = json!({ "mode": "record", "for": "1h" });
    let pinned = ops(t, reqwest::Method::PUT, "/v1/admin/destinations/%2B9989012", Some(pin)).await;
    assert_eq!(pinned.status, 200, "{}", pinned.raw);
    assert_eq!((pinned.body["mode"].as_str(), pinned.body["refusing"].as_bool()), (Some("record"), Some(false)));
    let through = post_from(t, "127.200.0.2", "/v1/login", json!({ "phone": pumped(0, 90_001) })).await;
    assert_eq!(through.status, 202, "pinned to record: {}", through.raw);

    // Lifted: pin removed, window forgotten: judged afresh from its floor.
    let lifted = ops(t, reqwest::Method::DELETE, "/v1/admin/destinations/+9989012", None).await;
    assert_eq!(lifted.status, 200, "{}", lifted.raw);
    assert_eq!(
        (lifted.body["sent"].as_u64(), lifted.body["pinned_until"].is_null()),
        (Some(0), true),
        "{}",
        lifted.raw
    );
    let after = post_from(t, "127.200.0.3", "/v1/login", json!({ "phone": pumped(0, 90_002) })).await;
    assert_eq!(after.status, 202, "lifted: {}", after.raw);

    // Bad input is a 400 problem; nothing changes.
    for (method, path, body) in [
        (reqwest::Method::DELETE, "/v1/admin/destinations/+99890", None),
        (reqwest::Method::DELETE, "/v1/admin/destinations/+0998901", None),
        (reqwest::Method::PUT, "/v1/admin/destinations/+9989012", Some(json!({ "mode": "off", "for": "1h" }))),
        (reqwest::Method::PUT, "/v1/admin/destinations/+9989012", Some(json!({ "mode": "block", "for": "1y" }))),
        (reqwest::Method::PUT, "/v1/admin/destinations/+9989012", Some(json!({ "mode": "block" }))),
    ] {
        let r = ops(t, method, path, body).await;
        assert_eq!(r.status, 400, "{path}: {}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"), "{}", r.raw);
    }

    // The pin and the lift are audited (before they answered), without the prefix.
    for trace in ["PUT-destination", "DELETE-destination"] {
        let events = t.node.engine.audit_log().by_trace(trace, 10).await.unwrap();
        let done: Vec<_> = events.iter().filter(|e| e.api == "admin_destination" && e.step == "done").collect();
        assert_eq!(done.len(), 1, "{trace}: {events:?}");
        assert!(events.iter().all(|e| !e.message.contains("9989012")), "no prefix in the trail: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pumping_run_is_throttled_and_real_users_are_not() {
    let t = start_node_with(configure).await;
    pumping_run("in-process limits", &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pumping_run_is_throttled_and_real_users_are_not_with_redis() {
    let Some(redis) = Redis::standalone("pumping::a_pumping_run_is_throttled_and_real_users_are_not_with_redis").await
    else {
        return;
    };
    let t = start_node_with(|c| {
        configure(c);
        redis.configure(c);
    })
    .await;
    pumping_run("redis", &t).await;
}
