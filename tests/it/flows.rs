//! The OTP lifecycle over real HTTP: every flow and every rule of the backbone issue.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn register_verify_login_me_resend() {
    let t = start_node().await;
    let p = phone(1);

    // Register: 202 with the receipt, code in the outbox.
    let r = t.post("/v1/register", json!({ "phone": "+1 (202) 200-0001", "first_name": "Ada", "last_name": "Lovelace", "email": "Ada@Example.com" })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    assert_eq!(r.body, json!({ "status": "pending", "channel": "sms", "expires_in": 300, "resend_after": 30 }));
    let code = t.code_for(&p).await;
    assert_eq!(code.len(), 6);
    let msg = &t.messages_for(&p)[0];
    assert_eq!(msg["purpose"], "register");
    assert!(msg["body"].as_str().unwrap().contains(&code));

    // Verify: tokens, user, login_at.
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["user"]["phone"], p.as_str());
    assert_eq!(r.body["user"]["email"], "ada@example.com");
    assert_eq!(r.body["user"]["verified"], true);
    assert!(r.body["refresh_token"].as_str().unwrap().starts_with("ort1."));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Login: request a code, verify it, receive tokens and login_at.
    t.advance(Duration::from_secs(1));
    let r = t.post("/v1/login", json!({ "phone": p })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let code = t.wait_for_messages(&p, 2).await[1]["code"].as_str().unwrap().to_owned();
    let r = t.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let login_at = r.body["login_at"].as_str().unwrap();
    assert!(login_at.ends_with('Z') && login_at.len() == 24, "{login_at}");
    let access = r.body["access_token"].as_str().unwrap().to_owned();

    // Me.
    let r = t.get("/v1/me", Some(&access)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["user"]["first_name"], "Ada");
    assert_eq!(r.body["user"]["phone"], p.as_str());

    // Resend after the cooldown: new code, the old one stops working.
    t.advance(Duration::from_secs(5));
    let r = t.post("/v1/login", json!({ "phone": p })).await;
    assert_eq!(r.status, 429, "a second send inside the cooldown is refused");
    assert_eq!(r.code(), "resend_cooldown");
    assert_eq!(r.header("retry-after"), Some("25"));
    t.advance(Duration::from_secs(25));
    assert_eq!(t.post("/v1/login", json!({ "phone": p })).await.status, 202);
    let old = t.wait_for_messages(&p, 3).await[2]["code"].as_str().unwrap().to_owned();
    t.advance(Duration::from_secs(30));
    let r = t.post("/v1/otp/resend", json!({ "phone": p, "purpose": "login" })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let messages = t.wait_for_messages(&p, 4).await;
    assert_eq!(messages[3]["resend"], true);
    let new = messages[3]["code"].as_str().unwrap().to_owned();
    if old != new {
        let r = t.post("/v1/login/verify", json!({ "phone": p, "code": old })).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.code(), "invalid_code");
    }
    let r = t.post("/v1/login/verify", json!({ "phone": p, "code": new })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

#[tokio::test]
async fn email_identifiers_work_the_same_way() {
    let t = start_node().await;
    let r = t
        .post("/v1/register", json!({ "email": " Grace@Example.ORG ", "first_name": "Grace", "last_name": "Hopper" }))
        .await;
    assert_eq!(r.status, 202, "{}", r.raw);
    assert_eq!(r.body["channel"], "email");
    let code = t.code_for("grace@example.org").await;
    let r = t.post("/v1/register/verify", json!({ "email": "GRACE@example.org", "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["user"]["email"], "grace@example.org");
    assert_eq!(r.body["user"]["phone"], json!(null));
}

#[tokio::test]
async fn a_used_code_never_verifies_again() {
    let t = start_node().await;
    let p = phone(2);
    t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    let code = t.code_for(&p).await;
    assert_eq!(t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await.status, 200);
    for _ in 0..3 {
        let r = t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.code(), "code_already_used");
    }
}

#[tokio::test]
async fn the_sixth_attempt_is_refused_even_with_the_right_code() {
    let t = start_node().await;
    let p = phone(3);
    t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    let code = t.code_for(&p).await;
    let bad = wrong_code(&code);
    for left in (1..=4).rev() {
        let r = t.post("/v1/register/verify", json!({ "phone": p, "code": bad })).await;
        assert_eq!(r.status, 400, "{}", r.raw);
        assert_eq!(r.code(), "invalid_code");
        assert_eq!(r.body["attempts_left"], left);
    }
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": bad })).await;
    assert_eq!((r.status, r.code()), (429, "too_many_attempts"), "the fifth wrong code burns the challenge");
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!((r.status, r.code()), (429, "too_many_attempts"), "the right code no longer works");

    // A new code (after the cooldown) starts a fresh challenge; it is checked once the
    // one-minute block of the guess budget (started by the sixth check) is over.
    t.advance(Duration::from_secs(30));
    assert_eq!(t.post("/v1/otp/resend", json!({ "phone": p, "purpose": "register" })).await.status, 202);
    let fresh = t.wait_for_messages(&p, 2).await[1]["code"].as_str().unwrap().to_owned();
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": fresh })).await;
    assert_eq!((r.status, r.code(), r.header("retry-after")), (429, "identifier_guess_limit", Some("30")), "{}", r.raw);
    t.advance(Duration::from_secs(30));
    assert_eq!(t.post("/v1/register/verify", json!({ "phone": p, "code": fresh })).await.status, 200);
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let t = start_node().await;
    let p = phone(4);
    t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    let code = t.code_for(&p).await;
    t.advance(Duration::from_secs(299));
    t.advance(Duration::from_millis(999));
    // Still inside the lifetime: a wrong code is merely wrong...
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": wrong_code(&code) })).await;
    assert_eq!(r.code(), "invalid_code");
    // ...and one millisecond later the right one has expired.
    t.advance(Duration::from_millis(1));
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!((r.status, r.code()), (400, "code_expired"), "{}", r.raw);
}

#[tokio::test]
async fn codes_are_bound_to_their_purpose() {
    let t = start_node().await;
    let p = phone(5);
    t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    let code = t.code_for(&p).await;
    let r = t.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!((r.status, r.code()), (400, "no_pending_code"), "a registration code cannot log in");
    assert_eq!(t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await.status, 200);
}

#[tokio::test]
async fn fifty_concurrent_verifies_of_one_code_yield_one_success() {
    let t = start_node().await;
    let p = phone(6);
    t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    let code = t.code_for(&p).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = t.client.clone();
        let url = t.url("/v1/register/verify");
        let body = json!({ "phone": p, "code": code });
        tasks.push(tokio::spawn(async move { into_reply(client.post(url).json(&body).send().await.unwrap()).await }));
    }
    let mut ok = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            200 => ok += 1,
            400 => assert_eq!(r.code(), "code_already_used", "{}", r.raw),
            // Checks beyond the guess budget's free ones, until the right code clears it.
            429 => assert_eq!(r.code(), "identifier_guess_limit", "{}", r.raw),
            other => panic!("unexpected status {other}: {}", r.raw),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn unknown_identifier_login_is_indistinguishable_from_a_known_one() {
    let t = start_node().await;
    let known = phone(7);
    let unknown = phone(8);
    t.signed_up(&known).await;
    t.advance(Duration::from_secs(60));

    let a = t.post("/v1/login", json!({ "phone": known })).await;
    let b = t.post("/v1/login", json!({ "phone": unknown })).await;
    assert_eq!(a.status, b.status);
    assert_eq!(a.raw, b.raw, "same body byte for byte");
    let names = |r: &Reply| {
        let mut n: Vec<String> = r.headers.keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&a), names(&b), "same headers");
    for h in ["content-type", "content-length", "cache-control"] {
        assert_eq!(a.header(h), b.header(h), "{h}");
    }
    // The limits behave the same too: an immediate second send is refused for both.
    let a2 = t.post("/v1/login", json!({ "phone": known })).await;
    let b2 = t.post("/v1/login", json!({ "phone": unknown })).await;
    assert_eq!((a2.status, a2.code(), a2.header("retry-after")), (b2.status, b2.code(), b2.header("retry-after")));
    // And a wrong code reads the same.
    let a3 = t.post("/v1/login/verify", json!({ "phone": known, "code": "000000" })).await;
    let b3 = t.post("/v1/login/verify", json!({ "phone": unknown, "code": "000000" })).await;
    assert_eq!((a3.status, a3.code()), (b3.status, b3.code()));
    // Only the known account was sent a code (delivery is asynchronous: wait for the
    // dispatcher to finish with what it accepted).
    assert_eq!(t.wait_for_messages(&known, 2).await.len(), 2);
    assert_eq!(t.node.delivery.stats().accepted, 2, "nothing was queued for the unknown identifier");
    assert!(t.messages_for(&unknown).is_empty());
}

#[tokio::test]
async fn registering_a_verified_identifier_again_answers_like_a_new_one_and_signs_in() {
    let t = start_node().await;
    let p = phone(9);
    let first = t.signed_up(&p).await;
    t.advance(Duration::from_secs(60));
    let r = t.post("/v1/register", json!({ "phone": p, "first_name": "Someone", "last_name": "Else" })).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body, json!({ "status": "pending", "channel": "sms", "expires_in": 300, "resend_after": 30 }));
    let code = t.wait_for_messages(&p, 2).await[1]["code"].as_str().unwrap().to_owned();
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["user"]["id"], first["user"]["id"], "the same account");
    assert_eq!(r.body["user"]["first_name"], "Test", "profile untouched");
}

#[tokio::test]
async fn a_registration_is_no_account_until_its_code_verifies() {
    let t = start_node().await;
    let p = phone(10);
    t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    let code = t.code_for(&p).await;
    let r = t.post("/v1/login", json!({ "phone": p })).await;
    assert_eq!(r.status, 202, "the send answers like any other");
    let r = t.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!((r.status, r.code()), (400, "invalid_code"), "no account, so no login code: {}", r.raw);
    assert_eq!(t.messages_for(&p).len(), 1, "no login code was sent");
    // The registration is still pending: its code completes it.
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!((r.status, r.body["user"]["first_name"].as_str()), (200, Some("A")), "{}", r.raw);
}

/// A stranger registers the owner's number with another profile: the owner's first code
/// stops working, and whatever code the owner then uses, the profile the owner's app sends
/// with it is the one the account gets.
#[tokio::test]
async fn a_strangers_registration_cannot_choose_the_owners_profile() {
    let t = start_node().await;
    let p = phone(14);
    let owner = json!({ "phone": p, "first_name": "Owner", "last_name": "Real", "email": "owner@example.com" });
    assert_eq!(t.post("/v1/register", owner).await.status, 202);
    let first = t.code_for(&p).await;
    t.advance(Duration::from_secs(31));
    let stranger = json!({ "phone": p, "first_name": "Mallory", "last_name": "X", "email": "mallory@example.com" });
    assert_eq!(t.post("/v1/register", stranger).await.status, 202);
    let second = t.wait_for_messages(&p, 2).await[1]["code"].as_str().unwrap().to_owned();
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": first })).await;
    assert_eq!(r.code(), "invalid_code", "the stranger's registration replaced the owner's code");
    let profile = json!({ "first_name": "Owner", "last_name": "Real", "email": "owner@example.com" });
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": second, "profile": profile })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        (r.body["user"]["first_name"].as_str(), r.body["user"]["email"].as_str()),
        (Some("Owner"), Some("owner@example.com"))
    );
    // Without a profile in the verification, a code activates the profile of the registration
    // that issued it (here: the second number's own).
    let q = phone(15);
    t.post("/v1/register", json!({ "phone": q, "first_name": "Quinn", "last_name": "Q" })).await;
    let code = t.code_for(&q).await;
    let r = t.post("/v1/register/verify", json!({ "phone": q, "code": code })).await;
    assert_eq!(r.body["user"]["first_name"], "Quinn");
}

#[tokio::test]
async fn reveal_mode_answers_404_409_and_403_up_front() {
    let t = start_node_with(|c| c.otp.reveal_accounts = true).await;
    let r = t.post("/v1/login", json!({ "phone": phone(11) })).await;
    assert_eq!((r.status, r.code()), (404, "account_not_found"));
    let p = phone(12);
    t.signed_up(&p).await;
    t.advance(Duration::from_secs(60));
    let r = t.post("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B" })).await;
    assert_eq!((r.status, r.code()), (409, "account_exists"));
    let q = phone(13);
    t.post("/v1/register", json!({ "phone": q, "first_name": "A", "last_name": "B" })).await;
    let r = t.post("/v1/login", json!({ "phone": q })).await;
    assert_eq!((r.status, r.code()), (404, "account_not_found"), "a registration is no account until verified");
}

#[tokio::test]
async fn the_send_cap_holds_per_identifier() {
    let t = start_node().await;
    let p = phone(14);
    t.signed_up(&p).await;
    // One send used by the registration; four more fit in the 10-minute window.
    for _ in 0..4 {
        t.advance(Duration::from_secs(31));
        assert_eq!(t.post("/v1/login", json!({ "phone": p })).await.status, 202);
    }
    t.advance(Duration::from_secs(31));
    let r = t.post("/v1/login", json!({ "phone": p })).await;
    assert_eq!((r.status, r.code()), (429, "identifier_send_limit"), "{}", r.raw);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 600, "{retry}");
    t.advance(Duration::from_secs(retry));
    assert_eq!(t.post("/v1/login", json!({ "phone": p })).await.status, 202);
}

#[tokio::test]
async fn me_refuses_missing_bad_and_expired_tokens() {
    let t = start_node().await;
    let r = t.get("/v1/me", None).await;
    assert_eq!((r.status, r.code()), (401, "missing_token"));
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = t.get("/v1/me", Some("not-a-jwt")).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));

    let tokens = t.signed_up(&phone(15)).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(t.get("/v1/me", Some(access)).await.status, 200);
    let mut tampered = access.to_owned();
    tampered.pop();
    tampered.push(if access.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(t.get("/v1/me", Some(&tampered)).await.status, 401);
    t.advance(Duration::from_secs(900));
    let r = t.get("/v1/me", Some(access)).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "expired after access_ttl");
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let t = start_node().await;
    let r = t.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.status, 200);
    let key = &r.body["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    let tokens = t.signed_up(&phone(16)).await;
    let header = tokens["access_token"].as_str().unwrap().split('.').next().unwrap().to_owned();
    use base64::Engine as _;
    let header: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["kid"], key["kid"]);
    assert_eq!(header["alg"], "EdDSA");
}

#[tokio::test]
async fn every_call_is_audited_without_codes_or_identifiers_in_clear() {
    let t = start_node().await;
    let p = phone(17);
    let r = t
        .client
        .post(t.url("/v1/register"))
        .header("x-request-id", "trace-audit-1")
        .header("user-agent", "audit-test/1.0")
        .json(&json!({ "phone": p, "first_name": "A", "last_name": "B" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-audit-1", "the caller's request id is echoed");
    let code = t.code_for(&p).await;
    t.post("/v1/register/verify", json!({ "phone": p, "code": wrong_code(&code) })).await;
    t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
    let garbage = t
        .client
        .post(t.url("/v1/login"))
        .header("x-request-id", "trace-audit-garbage")
        .json(&json!({ "phone": "garbage" }))
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);

    let log = t.node.engine.audit_log();
    // The call's own event, and (its own event, same trace id) the delivery of its code.
    let by_trace = log.by_trace("trace-audit-1", 10).await.unwrap();
    let calls: Vec<_> = by_trace.iter().filter(|e| e.api != "delivery").collect();
    assert_eq!(calls.len(), 1);
    let e = calls[0];
    assert_eq!((e.api.as_str(), e.step.as_str(), e.outcome.as_str()), ("register", "done", "ok"));
    assert_eq!(e.user_agent.as_deref(), Some("audit-test/1.0"));
    assert_eq!(e.client_ip, Some("127.0.0.1".parse().unwrap()));
    let ident = t.node.engine.identifier_hash(&t.node.engine.normalizer().phone(&p).unwrap());
    assert_eq!(e.ident_hash, Some(ident));

    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = log.by_trace("trace-audit-1", 10).await.unwrap();
        delivered.retain(|e| e.api == "delivery");
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(delivered.len(), 1, "one delivery outcome for the one code sent");
    assert_eq!((delivered[0].step.as_str(), delivered[0].outcome.as_str()), ("delivered", "ok"));
    assert_eq!(delivered[0].ident_hash, Some(ident));

    let events = log.by_identifier(&ident, 10).await.unwrap();
    let apis: Vec<(&str, &str)> =
        events.iter().filter(|e| e.api != "delivery").map(|e| (e.api.as_str(), e.outcome.as_str())).collect();
    assert_eq!(apis, vec![("register_verify", "ok"), ("register_verify", "rejected"), ("register", "ok")]);

    // A request refused before the engine is recorded too, without holding up its answer.
    let mut rejected = Vec::new();
    for _ in 0..200 {
        rejected = log.by_trace("trace-audit-garbage", 10).await.unwrap();
        if !rejected.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rejected.len(), 1, "the rejected login is in the trail");
    assert_eq!(
        (rejected[0].api.as_str(), rejected[0].step.as_str(), rejected[0].outcome.as_str()),
        ("login", "validate", "rejected")
    );

    // Neither the code nor the phone number appears in any audit event, and the code appears
    // nowhere in the store file (the phone number does, once, in the account record).
    let trail = format!("{events:?}{rejected:?}");
    assert!(!trail.contains(p.trim_start_matches('+')) && !trail.contains(&code));
    for file in files_under(&t.dir.path().join("store")) {
        let bytes = std::fs::read(&file).unwrap();
        let haystack = String::from_utf8_lossy(&bytes).replace(&p, "");
        assert!(!haystack.contains(&code), "a code is in the store file {}", file.display());
    }
}

/// Every file below `dir`.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}
