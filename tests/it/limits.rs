//! The anti-abuse rules over HTTP on the embedded default (in-process limiter): presets, the
//! per-action rules, the destination lists. The same rules on Redis are in `redis_limits.rs`;
//! every rule's exact semantics are in the conformance suite.

use std::time::Duration;

use otpd::config::Dur;
use otpd_actors::rules::limits::Preset;
use serde_json::json;

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
    // The guess budget (which would block first) is off: this is the check count's test.
    let t = start_node_with(|c| {
        c.limits.preset = Preset::High;
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

/// What `body` answers from `ip` (through the trusted proxy 127.0.0.1).
async fn post_from(t: &TestNode, ip: &str, path: &str, body: serde_json::Value) -> Reply {
    into_reply(t.client.post(t.url(path)).header("x-forwarded-for", ip).json(&body).send().await.unwrap()).await
}

fn retry_after(r: &Reply) -> Duration {
    Duration::from_secs(r.header("retry-after").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{}", r.raw)))
}

/// A stranger guesses one account's codes for a simulated day: both purposes, a new code
/// whenever one burns or a block ends, a new client address for every code, waiting out every
/// refusal exactly. The default guess budget stops them at 18 wrong codes; the owner then
/// signs in with a right one once the current block ends.
#[tokio::test]
async fn a_day_of_guessing_across_resends_purposes_and_addresses_is_stopped_at_the_budget() {
    let t = start_node_with(|c| c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let victim = phone(8801);
    t.signed_up(&victim).await;
    let day = Duration::from_secs(24 * 3600);
    let (mut elapsed, mut wrong, mut blocks, mut round) = (Duration::ZERO, 0, 0, 0u32);
    let wait = |t: &TestNode, d: Duration, elapsed: &mut Duration| {
        t.advance(d);
        *elapsed += d;
    };
    while elapsed < day {
        round += 1;
        let ip = format!("198.51.100.{}", round % 250);
        let (send, path, purpose) = if round % 2 == 0 {
            (("/v1/login", json!({ "phone": victim })), "/v1/login/verify", "login")
        } else {
            let body = json!({ "phone": victim, "first_name": "M", "last_name": "X" });
            (("/v1/register", body), "/v1/register/verify", "register")
        };
        let before = t.messages_for(&victim).len();
        let sent = post_from(&t, &ip, send.0, send.1).await;
        if sent.status == 429 {
            wait(&t, retry_after(&sent), &mut elapsed);
            continue;
        }
        assert_eq!(sent.status, 202, "{}", sent.raw);
        let message = t.wait_for_messages(&victim, before + 1).await[before].clone();
        assert_eq!(message["purpose"], purpose);
        let code = message["code"].as_str().unwrap().to_owned();
        loop {
            let r = post_from(&t, &ip, path, json!({ "phone": victim, "code": wrong_code(&code) })).await;
            match (r.status, r.code()) {
                (400, "invalid_code") => wrong += 1,
                (429, "identifier_guess_limit") => {
                    blocks += 1;
                    wait(&t, retry_after(&r), &mut elapsed);
                    break;
                }
                (429, "too_many_attempts") => break,
                other => panic!("{other:?}: {}", r.raw),
            }
        }
    }
    assert_eq!(wrong, 18, "wrong codes accepted for checking in the day ({blocks} blocks)");

    // The owner, after the current block: a right code signs in (and an unknown number met the
    // same refusal as the account did).
    t.advance(Duration::from_secs(4 * 3600));
    let before = t.messages_for(&victim).len();
    let r = t.post("/v1/login", json!({ "phone": victim })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let code = t.wait_for_messages(&victim, before + 1).await[before]["code"].as_str().unwrap().to_owned();
    let r = t.post("/v1/login/verify", json!({ "phone": victim, "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// A number without an account meets the guess budget exactly like one with.
#[tokio::test]
async fn the_guess_budget_answers_alike_for_an_unknown_number() {
    let t = start_node().await;
    let (known, unknown) = (phone(8811), phone(8812));
    t.signed_up(&known).await;
    t.advance(Duration::from_secs(31));
    let mut answers = Vec::new();
    for p in [&known, &unknown] {
        assert_eq!(t.post("/v1/login", json!({ "phone": p })).await.status, 202);
        for guess in 0..4 {
            let r = t.post("/v1/login/verify", json!({ "phone": p, "code": format!("00000{guess}") })).await;
            assert_eq!(r.code(), "invalid_code", "{}", r.raw);
        }
        t.advance(Duration::from_secs(31));
        assert_eq!(t.post("/v1/login", json!({ "phone": p })).await.status, 202, "a new code");
        let fifth = t.post("/v1/login/verify", json!({ "phone": p, "code": "000007" })).await;
        assert_eq!(fifth.code(), "invalid_code", "{}", fifth.raw);
        let sixth = t.post("/v1/login/verify", json!({ "phone": p, "code": "000009" })).await;
        let seventh = t.post("/v1/login/verify", json!({ "phone": p, "code": "000008" })).await;
        answers.push((
            sixth.status,
            sixth.code().to_owned(),
            seventh.status,
            seventh.code().to_owned(),
            seventh.header("retry-after").map(str::to_owned),
        ));
    }
    assert_eq!(answers[0], (400, "invalid_code".into(), 429, "identifier_guess_limit".into(), Some("60".into())));
    assert_eq!(answers[0], answers[1], "known and unknown alike");
}
