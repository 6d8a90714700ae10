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
    let t = start_node_with(|c| c.limits.preset = Preset::High).await;
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
