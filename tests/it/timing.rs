//! Timing side channels: for every request an outsider can make about an identifier, a device
//! id or a passkey, the answer takes as long whether the account (device, passkey) exists or not.
//!
//! Each comparison times two classes of requests on a real node over loopback HTTP, 200 of each
//! (after 20 of each to warm up), in one random interleaved order, so drift and background work
//! (deliveries, store flushes) fall on both classes alike. Both classes have the same history:
//! every number or device of a class is drawn from a pool of its own that was set up the same way
//! before the timing starts, and the limits are off, so no class meets a cooldown the other does
//! not. A permutation test on the difference of the medians (10 000 relabellings) gives the
//! chance of a difference at least as large if the class made none; the test fails below
//! [`ALPHA`]. There is no threshold on time itself: the machine decides how long a request
//! takes, the test only asks whether the class changes it.
//!
//! Everything runs in one test, in a process of its own (`isolated`), so that no other test of
//! this binary competes with one class more than with the other.

use std::time::{Duration, Instant};

use base64::Engine as _;
use otpd::config::{Config, Dur, RuleConfig};
use serde_json::{Value, json};

use crate::devices::{Key, enrol};
use crate::fake_provider::{FakeProvider, Fault};
use crate::passkeys::{Authenticator, login_options};
use crate::sessions::access;
use crate::support::*;

/// Requests per class that are timed.
const N: usize = 200;
/// Requests per class before the timing starts.
const WARM_UP: usize = 20;
/// Relabellings of the permutation test.
const ROUNDS: usize = 10_000;
/// Significance below which a difference fails the test. With a dozen comparisons per run, a
/// node that does equal work fails a run about once in a hundred.
const ALPHA: f64 = 0.001;

/// Every limit off: a request's time must not depend on a cooldown that only one class meets.
fn unlimited(c: &mut Config) {
    c.otp.resend_cooldown = Dur(Duration::ZERO);
    c.otp.max_sends_per_window = 1_000_000;
    let off = RuleConfig { limit: Some(0), ..RuleConfig::default() };
    let l = &mut c.limits;
    l.conversion_guard.mode = Some(otpd_actors::rules::limits::GuardMode::Off);
    for rule in [
        &mut l.identifier_login,
        &mut l.identifier_register,
        &mut l.identifier_resend,
        &mut l.identifier_verify,
        &mut l.ip_send,
        &mut l.ip_verify,
        &mut l.prefix_send,
        &mut l.country_send,
        &mut l.device_challenge,
        &mut l.ip_challenge,
    ] {
        *rule = off;
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[m - 1] + v[m]) / 2.0 } else { v[m] }
}

/// Fisher–Yates with the thread's random source.
fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = (rand::random::<u64>() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// The chance, if the labels did not matter, of a difference of medians at least as large.
fn permutation_p(a: &[f64], b: &[f64]) -> f64 {
    let observed = (median(a) - median(b)).abs();
    let mut pool: Vec<f64> = a.iter().chain(b).copied().collect();
    let mut extreme = 0usize;
    for _ in 0..ROUNDS {
        shuffle(&mut pool);
        let (x, y) = pool.split_at(a.len());
        if (median(x) - median(y)).abs() >= observed {
            extreme += 1;
        }
    }
    (extreme + 1) as f64 / (ROUNDS + 1) as f64
}

/// One comparison's figures.
struct Compared {
    name: String,
    a: f64,
    b: f64,
    p: f64,
}

/// Times `WARM_UP + N` requests of each class in one random order; `run(class, i)` makes the
/// `i`-th request of class `class` (0 or 1) and checks its answer.
async fn compare<F, Fut>(name: &str, mut run: F) -> Compared
where
    F: FnMut(usize, usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut order: Vec<(usize, usize)> = (0..WARM_UP + N).flat_map(|i| [(0, i), (1, i)]).collect();
    shuffle(&mut order[2 * WARM_UP..]);
    let mut times = [Vec::with_capacity(N), Vec::with_capacity(N)];
    for (class, i) in order {
        let started = Instant::now();
        run(class, i).await;
        if i >= WARM_UP {
            times[class].push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    let [a, b] = times;
    let c = Compared { name: name.to_owned(), a: median(&a), b: median(&b), p: permutation_p(&a, &b) };
    println!("timing {:<48} median {:>8.0} µs vs {:>8.0} µs   p = {:.4}", c.name, c.a, c.b, c.p);
    c
}

/// `POST path body`, expecting `status`.
async fn expect(t: &TestNode, path: &str, body: Value, status: u16) {
    let r = t.post(path, body).await;
    assert_eq!(r.status, status, "{path}: {}", r.raw);
}

fn registration(p: &str) -> Value {
    json!({ "phone": p, "first_name": "Time", "last_name": "Keeper" })
}

/// A pool of `n` numbers starting at `base`.
fn pool(base: u32, n: usize) -> Vec<String> {
    (0..n as u32).map(|i| phone(base + i)).collect()
}

#[tokio::test]
async fn every_branch_an_outsider_can_reach_takes_the_same_time() {
    if !isolated("timing::every_branch_an_outsider_can_reach_takes_the_same_time") {
        return;
    }
    let t = start_node_with(unlimited).await;
    let verified = pool(610_000, 20);
    let unverified = pool(620_000, 20);
    let unknown = pool(630_000, 20);
    let fresh = pool(640_000, 2 * (WARM_UP + N));
    let mut bearer = String::new();
    for p in &verified {
        bearer = access(&t.signed_up(p).await);
    }
    // A passkey of the last account, registered while its login by code is fresh.
    let mut passkey = Authenticator::new();
    let r = crate::passkeys::register(&t, &bearer, &mut passkey).await;
    assert_eq!(r.status, 201, "{}", r.raw);
    for p in &unverified {
        expect(&t, "/v1/register", registration(p), 202).await;
    }
    // Every number of every class has been seen before, as the accounts' numbers were: the
    // node's caches (phone-number verdicts) must not tell a number it saw from one it did not.
    for p in unknown.iter().chain(&fresh) {
        expect(&t, "/v1/login", json!({ "phone": p }), 202).await;
    }
    let pick = |pool: &[String], i: usize| pool[i % pool.len()].clone();
    let mut results = Vec::new();

    results.push(
        compare("login: verified account vs no account", |class, i| {
            let p = pick(if class == 0 { &verified } else { &unknown }, i);
            let t = &t;
            async move { expect(t, "/v1/login", json!({ "phone": p }), 202).await }
        })
        .await,
    );
    results.push(
        compare("login: unverified account vs no account", |class, i| {
            let p = pick(if class == 0 { &unverified } else { &unknown }, i);
            let t = &t;
            async move { expect(t, "/v1/login", json!({ "phone": p }), 202).await }
        })
        .await,
    );
    results.push(
        compare("resend: verified account vs no account", |class, i| {
            let p = pick(if class == 0 { &verified } else { &unknown }, i);
            let t = &t;
            async move { expect(t, "/v1/otp/resend", json!({ "phone": p, "purpose": "login" }), 202).await }
        })
        .await,
    );
    results.push(
        compare("register: verified account vs new number", |class, i| {
            let p = if class == 0 { pick(&verified, i) } else { fresh[i].clone() };
            let t = &t;
            async move { expect(t, "/v1/register", registration(&p), 202).await }
        })
        .await,
    );
    results.push(
        compare("register: unverified account vs new number", |class, i| {
            let p = if class == 0 { pick(&unverified, i) } else { fresh[WARM_UP + N + i].clone() };
            let t = &t;
            async move { expect(t, "/v1/register", registration(&p), 202).await }
        })
        .await,
    );

    // Devices: a P-256 one and an Ed25519 one of the last verified account, and ids nobody
    // enrolled.
    let keys = [Key::p256(), Key::ed25519()];
    let mut devices = Vec::new();
    for key in &keys {
        devices.push(enrol(&t, &bearer, key).await);
    }
    let strangers: Vec<String> = (0..20).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (k, kind) in ["P-256", "Ed25519"].iter().enumerate() {
        let known = devices[k].clone();
        results.push(
            compare(&format!("device challenge: {kind} device vs unknown id"), |class, i| {
                let id = if class == 0 { known.clone() } else { pick(&strangers, i) };
                let t = &t;
                async move { expect(t, "/v1/device-login/challenge", json!({ "device_id": id }), 200).await }
            })
            .await,
        );
        // Verification with a signature that verifies under no key: what a stranger can send.
        // The challenge is fetched first, untimed.
        let bogus = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        let mut nonces = [Vec::new(), Vec::new()];
        for i in 0..WARM_UP + N {
            for (class, id) in [(0, known.clone()), (1, pick(&strangers, i))] {
                let r = t.post("/v1/device-login/challenge", json!({ "device_id": id })).await;
                nonces[class].push((id, r.body["nonce"].as_str().unwrap().to_owned()));
            }
        }
        results.push(
            compare(&format!("device verify: {kind} device vs unknown id"), |class, i| {
                let (id, nonce) = nonces[class][i].clone();
                let body = json!({ "device_id": id, "nonce": nonce, "signature": bogus });
                let t = &t;
                async move {
                    let r = t.post("/v1/device-login/verify", body).await;
                    assert_eq!((r.status, r.code()), (400, "invalid_signature"), "{}", r.raw);
                }
            })
            .await,
        );
    }

    // Passkey login with what a stranger can send: a registered credential id signed by another
    // key, or an id nobody registered (checked under the decoy key). Both are `passkey_invalid`.
    // Each assertion answers a challenge of its own, fetched and signed first, untimed.
    let mut assertions = [Vec::new(), Vec::new()];
    for _ in 0..WARM_UP + N {
        for (class, made) in assertions.iter_mut().enumerate() {
            let mut stranger = Authenticator::new();
            stranger.user_handle =
                if class == 0 { passkey.user_handle.clone() } else { rand::random::<[u8; 16]>().to_vec() };
            if class == 0 {
                stranger.id = passkey.id.clone();
            }
            made.push(stranger.get(&login_options(&t).await));
        }
    }
    results.push(
        compare("passkey login: registered id, wrong key vs unknown id", |class, i| {
            let credential = assertions[class][i].clone();
            let t = &t;
            async move {
                let r = t.post("/v1/passkey-login/verify", json!({ "credential": credential })).await;
                assert_eq!((r.status, r.code()), (400, "passkey_invalid"), "{}", r.raw);
            }
        })
        .await,
    );
    t.node.shutdown().await;

    // A full delivery queue: the refusal of a real send and of a pretended one.
    let fake = FakeProvider::start().await;
    let t = start_node_with(|c| {
        unlimited(c);
        c.delivery.provider = "twilio".into();
        crate::delivery::use_twilio(c, &fake);
        c.delivery.queue_capacity = 1;
    })
    .await;
    let known = pool(650_000, 20);
    for (n, p) in known.iter().enumerate() {
        expect(&t, "/v1/register", registration(p), 202).await;
        let sent = fake.wait_requests(n + 1).await;
        let code = crate::delivery::code_in(&sent[n].form("Body").expect("an SMS body"));
        expect(&t, "/v1/register/verify", json!({ "phone": p, "code": code }), 200).await;
    }
    // One message held in flight fills the queue of one.
    fake.always(Some(Fault::Hold));
    expect(&t, "/v1/login", json!({ "phone": known[0] }), 202).await;
    fake.wait_requests(known.len() + 1).await;
    results.push(
        compare("login, queue full: verified account vs no account", |class, i| {
            let p = pick(if class == 0 { &known } else { &unknown }, i);
            let t = &t;
            async move {
                let r = t.post("/v1/login", json!({ "phone": p })).await;
                assert_eq!((r.status, r.code()), (503, "delivery_busy"), "{}", r.raw);
            }
        })
        .await,
    );
    fake.release(1);

    let failed: Vec<&Compared> = results.iter().filter(|c| c.p < ALPHA).collect();
    assert!(
        failed.is_empty(),
        "these branches take measurably different times (p < {ALPHA}):\n{}",
        failed
            .iter()
            .map(|c| format!("  {}: {:.0} µs vs {:.0} µs, p = {:.4}", c.name, c.a, c.b, c.p))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
