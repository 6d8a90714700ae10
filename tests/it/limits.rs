//! The anti-abuse rules over HTTP on the embedded default (in-process limiter): presets, the
//! per-action rules, the destination lists, and the guess budget against a scripted stranger.
//! The same rules on Redis are in `redis_limits.rs`; every rule's exact semantics are in the
//! conformance suite.

use std::collections::HashSet;
use std::time::Duration;

use otpd::config::Dur;
use otpd_actors::rules::clock::{Clock, Timestamp};
use otpd_actors::rules::limits::Preset;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn the_high_preset_allows_three_login_codes_an_hour() {
    let t = start_node_with(|c| c.limits.preset = Preset::High).await;
    let p = phone(300);
    for i in 0..3 {
        let r = t.post("/v1/login", json!({ "phone": p })).await;
        assert_eq!(r.status, 202, "login {}: {}", i + 1, r.raw);
        t.advance(Duration::from_secs(31));
    }
    // Logins at 0, 31 and 62 s; now 93 s: the hour ends in 3507 s.
    let r = t.post("/v1/login", json!({ "phone": p })).await;
    assert_eq!(
        (r.status, r.code(), r.header("retry-after")),
        (429, "identifier_login_limit", Some("3507")),
        "{}",
        r.raw
    );
    assert_eq!(r.body["retry_after"], 3507);
    // Registration codes are counted apart.
    let r = t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
}

#[tokio::test]
async fn the_high_preset_allows_five_code_checks_an_hour() {
    let t = start_node_with(|c| {
        c.limits.preset = Preset::High;
        // The preset's guess budget (3 free) would block first; this test is about the hourly cap.
        c.limits.identifier_guess.first_block = Some(Dur(Duration::ZERO));
    })
    .await;
    let p = phone(301);
    t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    let code = t.code_for(&p).await;
    for _ in 0..4 {
        assert_eq!(
            t.post("/v1/register/verify", json!({ "phone": p, "code": wrong_code(&code) })).await.code(),
            "invalid_code"
        );
    }
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": wrong_code(&code) })).await;
    assert_eq!(r.code(), "too_many_attempts");
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!((r.status, r.code()), (429, "identifier_verify_limit"), "the sixth check in an hour: {}", r.raw);
    assert_eq!(r.header("retry-after"), Some("3600"));
}

#[tokio::test]
async fn overrides_change_one_rule_and_keep_the_rest_of_the_preset() {
    let t = start_node_with(|c| {
        c.limits.identifier_resend.limit = Some(1);
        c.limits.identifier_resend.block = Some(Dur(Duration::from_secs(7200)));
    })
    .await;
    let p = phone(302);
    t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    t.advance(Duration::from_secs(30));
    let resend = json!({ "phone": p, "purpose": "register" });
    assert_eq!(t.post("/v1/otp/resend", resend.clone()).await.status, 202);
    t.advance(Duration::from_secs(30));
    let r = t.post("/v1/otp/resend", resend.clone()).await;
    assert_eq!(
        (r.status, r.code(), r.header("retry-after")),
        (429, "identifier_resend_limit", Some("7200")),
        "{}",
        r.raw
    );
    // The block outlasts the window (the medium preset's hour).
    t.advance(Duration::from_secs(3600));
    let r = t.post("/v1/otp/resend", resend).await;
    assert_eq!(
        (r.status, r.code(), r.header("retry-after")),
        (429, "identifier_resend_limit", Some("3600")),
        "{}",
        r.raw
    );
}

#[tokio::test]
async fn sms_destination_lists_refuse_with_403_and_send_nothing() {
    let t = start_node_with(|c| {
        c.limits.sms_allow = vec!["+1".into(), "+44".into()];
        c.limits.sms_deny = vec!["+1 876".into()];
    })
    .await;
    for (number, why) in [("+33612345678", "not on the allow-list"), ("+18765550123", "on the deny-list")] {
        let r = t.post("/v1/register", json!({ "phone": number, "first_name": "A", "last_name": "B" })).await;
        assert_eq!((r.status, r.code()), (403, "destination_not_allowed"), "{why}: {}", r.raw);
        assert_eq!(r.header("retry-after"), None, "retrying will not help");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let r = t.post("/v1/login", json!({ "phone": "+33612345678" })).await;
    assert_eq!((r.status, r.code()), (403, "destination_not_allowed"), "logins too, account or not");
    assert_eq!(
        t.post("/v1/register", json!({ "phone": phone(303), "first_name": "A", "last_name": "B" })).await.status,
        202
    );
    assert_eq!(t.post("/v1/login", json!({ "email": "someone@example.com" })).await.status, 202, "e-mail is not SMS");
    t.wait_for_messages(&phone(303), 1).await;
    let outbox = std::fs::read_to_string(t.outbox_path()).unwrap();
    assert!(!outbox.contains("33612345678") && !outbox.contains("18765550123"), "nothing was sent to a refused number");
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// What a stranger got out of a day of guessing.
struct Attack {
    /// When each check the limits let through was answered (its code compared, or found
    /// missing, late or burned).
    guesses: Vec<Timestamp>,
    /// The first refusal by the guess budget.
    first_refusal: Reply,
}

async fn post_from(t: &TestNode, ip: &str, path: &str, body: Value) -> Reply {
    let resp = t.client.post(t.url(path)).header("x-forwarded-for", ip).json(&body).send().await.unwrap();
    into_reply(resp).await
}

/// A stranger guessing codes for `p` for `length` of simulated time, as fast as the limits
/// allow: before every guess it asks for a fresh login code and, if `p` is `known`, a
/// registration code (for a number without an account that would create one), each request
/// from a new address; it guesses register and login codes in turn, never one that was sent,
/// and when refused it waits exactly the `Retry-After`. It stops at the first refusal whose
/// wait reaches past `length`, so the identifier is still blocked when it returns.
async fn attack(t: &TestNode, p: &str, known: bool, length: Duration) -> Attack {
    let end = t.clock.now().plus(length);
    let (mut guesses, mut first_refusal, mut sent) = (Vec::new(), None, HashSet::new());
    let (mut n, mut next_guess, mut messages) = (0u32, 0u32, t.messages_for(p).len());
    loop {
        n += 1;
        let ip = |k: u32| {
            let a = n * 3 + k;
            format!("10.{}.{}.{}", (a >> 16) & 255, (a >> 8) & 255, a & 255)
        };
        let mut sends = vec![("/v1/login", json!({ "phone": p }))];
        if known {
            sends.push(("/v1/register", json!({ "phone": p, "first_name": "Eve", "last_name": "Stranger" })));
        }
        for (k, (path, body)) in sends.into_iter().enumerate() {
            let r = post_from(t, &ip(k as u32), path, body).await;
            assert!(r.status == 202 || r.status == 429, "{path}: {}", r.raw);
            // Each code accepted for an account is delivered; none for a number without one.
            messages += usize::from(known && r.status == 202);
        }
        // Every code sent so far, so that no guess is right by chance.
        let delivered = t.wait_for_messages(p, messages).await;
        sent.extend(delivered.iter().filter_map(|m| m["code"].as_str().map(str::to_owned)));
        let guess = loop {
            let candidate = format!("{next_guess:06}");
            next_guess += 1;
            if !sent.contains(&candidate) {
                break candidate;
            }
        };
        let path = if n % 2 == 0 { "/v1/register/verify" } else { "/v1/login/verify" };
        let r = post_from(t, &ip(2), path, json!({ "phone": p, "code": guess })).await;
        match (r.status, r.code()) {
            (400, "invalid_code" | "no_pending_code" | "code_expired" | "code_already_used")
            | (429, "too_many_attempts") => guesses.push(t.clock.now()),
            (429, rule) => {
                assert_eq!(rule, "identifier_guess_limit", "the guess budget is what stops a stranger: {}", r.raw);
                let wait: u64 = r.header("retry-after").expect("a Retry-After").parse().unwrap();
                assert_eq!(r.body["retry_after"], wait, "{}", r.raw);
                let last = t.clock.now().plus(Duration::from_secs(wait)) >= end;
                first_refusal.get_or_insert(r);
                if last {
                    break;
                }
                t.advance(Duration::from_secs(wait));
            }
            _ => panic!("a stranger's guess was answered {}: {}", r.status, r.raw),
        }
    }
    Attack { guesses, first_refusal: first_refusal.expect("the stranger was refused") }
}

/// Most of `times` within any 24 hours.
fn most_in_a_day(times: &[Timestamp]) -> usize {
    (0..times.len()).map(|i| times[i..].iter().take_while(|t| **t < times[i].plus(DAY)).count()).max().unwrap_or(0)
}

/// A problem body without what differs between any two requests.
fn problem(r: &Reply) -> Value {
    let mut body = r.body.clone();
    body.as_object_mut().expect("a problem document").remove("trace_id");
    body
}

#[tokio::test]
async fn a_stranger_guessing_across_resends_purposes_and_addresses_is_stopped_at_the_budget() {
    let t = start_node_with(|c| c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let owner = phone(310);
    t.signed_up(&owner).await;
    t.advance(Duration::from_secs(60));

    let known = attack(&t, &owner, true, DAY).await;
    // 6 at once, then one when each block (1, 2, 4 … minutes, at most 4 hours) ends.
    let most = most_in_a_day(&known.guesses);
    assert!(most <= 20, "issue 15: at most 20 in any 24 hours, got {most}");
    assert_eq!(known.guesses.len(), 18, "the default budget's day (docs/limits.md)");
    let r = &known.first_refusal;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("60")), "the seventh check waits a minute: {}", r.raw);
    assert!(known.guesses.len() > 2 * 5, "more than two codes' attempts: the stranger needed new codes");

    // The owner, meanwhile (after the cooldown of the stranger's latest code request):
    // refused while blocked, signed in when the block is over.
    t.advance(Duration::from_secs(30));
    let before = t.messages_for(&owner).len();
    assert_eq!(t.post("/v1/login", json!({ "phone": owner })).await.status, 202);
    let code = t.wait_for_messages(&owner, before + 1).await[before]["code"].as_str().unwrap().to_owned();
    let r = t.post("/v1/login/verify", json!({ "phone": owner, "code": code })).await;
    assert_eq!((r.status, r.code()), (429, "identifier_guess_limit"), "the right code waits too: {}", r.raw);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(wait, 4 * 3600 - 30, "the stranger's latest guess started the longest block, and no longer one");
    t.advance(Duration::from_secs(wait));
    let before = t.messages_for(&owner).len();
    assert_eq!(t.post("/v1/login", json!({ "phone": owner })).await.status, 202, "that code has expired: a new one");
    let code = t.wait_for_messages(&owner, before + 1).await[before]["code"].as_str().unwrap().to_owned();
    let r = t.post("/v1/login/verify", json!({ "phone": owner, "code": code })).await;
    assert_eq!(r.status, 200, "after the block, the owner's code signs in: {}", r.raw);

    // The right code cleared the count: five free wrong codes, a sixth that starts a 1-minute
    // block (not 4 hours, as the stranger's count would have).
    t.advance(Duration::from_secs(30));
    let before = t.messages_for(&owner).len();
    assert_eq!(t.post("/v1/login", json!({ "phone": owner })).await.status, 202);
    let typo = wrong_code(t.wait_for_messages(&owner, before + 1).await[before]["code"].as_str().unwrap());
    for i in 0..4 {
        let r = t.post("/v1/login/verify", json!({ "phone": owner, "code": typo })).await;
        assert_eq!(r.code(), "invalid_code", "typo {i}: {}", r.raw);
    }
    let r = t.post("/v1/login/verify", json!({ "phone": owner, "code": typo })).await;
    assert_eq!(r.code(), "too_many_attempts", "{}", r.raw);
    let r = t.post("/v1/register/verify", json!({ "phone": owner, "code": typo })).await;
    assert_eq!(r.status, 400, "the sixth check is let through (the stranger's register code expired): {}", r.raw);
    let r = t.post("/v1/login/verify", json!({ "phone": owner, "code": typo })).await;
    assert_eq!((r.code(), r.header("retry-after")), ("identifier_guess_limit", Some("60")), "{}", r.raw);

    // A number without an account: the same day, the same refusal, byte for byte but the trace id.
    let nobody = phone(311);
    let unknown = attack(&t, &nobody, false, DAY).await;
    assert_eq!(unknown.guesses.len(), known.guesses.len(), "no account, the same budget");
    let offsets = |a: &Attack| a.guesses.iter().map(|g| a.guesses[0].until(*g)).collect::<Vec<_>>();
    assert_eq!(offsets(&unknown), offsets(&known), "at the same moments");
    let (a, b) = (&known.first_refusal, &unknown.first_refusal);
    assert_eq!((a.status, a.header("retry-after")), (b.status, b.header("retry-after")));
    assert_eq!(problem(a), problem(b), "{} vs {}", a.raw, b.raw);
    assert!(t.messages_for(&nobody).is_empty(), "nothing was ever sent to the number without an account");
}
