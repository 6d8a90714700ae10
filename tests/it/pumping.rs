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
