//! Sessions over real HTTP: refresh rotation, reuse detection, logout, logout-all, listing,
//! and access tokens checked by an independent JWT library against the JWKS.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Logs `phone` (already signed up) in again by code; returns the token response.
pub async fn login_again(t: &TestNode, phone: &str) -> Value {
    t.advance(Duration::from_secs(31));
    let before = t.messages_for(phone).len();
    let r = t.post("/v1/login", json!({ "phone": phone })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let code = t.wait_for_messages(phone, before + 1).await[before]["code"].as_str().unwrap().to_owned();
    let r = t.post("/v1/login/verify", json!({ "phone": phone, "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body
}

pub fn access(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_owned()
}

pub fn refresh_token(tokens: &Value) -> String {
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

pub async fn refresh(t: &TestNode, token: &str) -> Reply {
    t.post("/v1/token/refresh", json!({ "refresh_token": token })).await
}

pub async fn post_bearer(t: &TestNode, path: &str, bearer: &str) -> Reply {
    into_reply(t.client.post(t.url(path)).bearer_auth(bearer).send().await.unwrap()).await
}

#[tokio::test]
async fn refresh_rotates_and_a_rotated_token_revokes_the_session() {
    let t = start_node().await;
    let first = t.signed_up(&phone(100)).await;
    t.advance(Duration::from_secs(60));

    let r = refresh(&t, &refresh_token(&first)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let second = r.body.clone();
    assert_eq!(second["session_id"], first["session_id"], "the same session");
    assert_eq!(second["login_at"], first["login_at"], "login_at is the login, not the refresh");
    assert_eq!(second["user"], first["user"]);
    assert_ne!(refresh_token(&second), refresh_token(&first));
    assert_ne!(access(&second), access(&first));
    assert_eq!(t.get("/v1/me", Some(&access(&second))).await.status, 200);

    // The new refresh token works once more...
    let r = refresh(&t, &refresh_token(&second)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let third = r.body.clone();

    // ...and presenting an already-rotated one is reuse: the whole session is revoked.
    let r = refresh(&t, &refresh_token(&first)).await;
    assert_eq!((r.status, r.code()), (401, "refresh_token_reused"), "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = refresh(&t, &refresh_token(&third)).await;
    assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"), "the current token died with the session");
    for tokens in [&first, &second, &third] {
        let r = t.get("/v1/me", Some(&access(tokens))).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "access tokens of a revoked session are refused");
    }
}

#[tokio::test]
async fn a_token_never_issued_is_refused_without_harming_the_session() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(101)).await;
    let real = refresh_token(&tokens);
    // Same session id, another secret: well formed, never valid.
    let forged = format!("{}{}", &real[..37], "0".repeat(64));
    assert_ne!(forged, real);
    let r = refresh(&t, &forged).await;
    assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"), "{}", r.raw);
    for junk in ["", "garbage", "ort1.", &real.to_uppercase(), &"x".repeat(5000)] {
        let r = refresh(&t, junk).await;
        assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"), "{junk:?}: {}", r.raw);
    }
    let r = t.post("/v1/token/refresh", json!({ "token": real })).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert_eq!(t.get("/v1/me", Some(&access(&tokens))).await.status, 200, "the session is untouched");
    assert_eq!(refresh(&t, &real).await.status, 200, "and its real token still works");
}

#[tokio::test]
async fn two_concurrent_refreshes_with_one_token_one_wins_and_the_session_is_revoked() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(102)).await;
    let token = refresh_token(&tokens);
    let (a, b) = tokio::join!(refresh(&t, &token), refresh(&t, &token));
    let mut statuses = [(a.status, a.code().to_owned()), (b.status, b.code().to_owned())];
    statuses.sort();
    assert_eq!(statuses, [(200, String::new()), (401, "refresh_token_reused".to_owned())], "{} {}", a.raw, b.raw);
    let winner = if a.status == 200 { &a } else { &b };
    let r = refresh(&t, &refresh_token(&winner.body)).await;
    assert_eq!(r.code(), "invalid_refresh_token", "the loser's reuse revoked the session, winner included");
    assert_eq!(t.get("/v1/me", Some(&access(&winner.body))).await.status, 401);
}

#[tokio::test]
async fn an_expired_session_cannot_be_refreshed() {
    let t = start_node_with(|c| c.tokens.session_ttl = otpd::config::Dur(Duration::from_secs(3600))).await;
    let tokens = t.signed_up(&phone(103)).await;
    t.advance(Duration::from_secs(3599));
    let r = refresh(&t, &refresh_token(&tokens)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    t.advance(Duration::from_secs(1));
    let r = refresh(&t, &refresh_token(&r.body)).await;
    assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"), "sessions end at session_ttl, refreshed or not");
}

#[tokio::test]
async fn logout_ends_only_the_current_session() {
    let t = start_node().await;
    let p = phone(104);
    let a = t.signed_up(&p).await;
    let b = login_again(&t, &p).await;
    assert_eq!(t.get("/v1/me", Some(&access(&a))).await.status, 200);

    let r = post_bearer(&t, "/v1/logout", &access(&a)).await;
    assert_eq!(r.status, 204, "{}", r.raw);
    assert!(r.raw.is_empty());
    let r = t.get("/v1/me", Some(&access(&a))).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "within the access token's lifetime");
    assert_eq!(refresh(&t, &refresh_token(&a)).await.code(), "invalid_refresh_token");
    assert_eq!(t.get("/v1/me", Some(&access(&b))).await.status, 200, "the other session lives on");
    let r = post_bearer(&t, "/v1/logout", &access(&a)).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "logging out twice");

    let r = into_reply(t.client.post(t.url("/v1/logout")).send().await.unwrap()).await;
    assert_eq!((r.status, r.code()), (401, "missing_token"));
    let r = into_reply(t.client.get(t.url("/v1/logout")).send().await.unwrap()).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_account_and_no_other() {
    let t = start_node().await;
    let p = phone(105);
    let a = t.signed_up(&p).await;
    let b = login_again(&t, &p).await;
    let c = login_again(&t, &p).await;
    let bystander = t.signed_up(&phone(106)).await;

    let r = post_bearer(&t, "/v1/logout/all", &access(&b)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body, json!({ "revoked": 3 }));
    for tokens in [&a, &b, &c] {
        assert_eq!(t.get("/v1/me", Some(&access(tokens))).await.status, 401);
        assert_eq!(refresh(&t, &refresh_token(tokens)).await.status, 401);
    }
    assert_eq!(t.get("/v1/me", Some(&access(&bystander))).await.status, 200);
}

#[tokio::test]
async fn sessions_lists_the_active_sessions_and_marks_the_current_one() {
    let t = start_node().await;
    let p = phone(107);
    let a = t.signed_up(&p).await;
    let b = login_again(&t, &p).await;
    let r = t.get("/v1/sessions", Some(&access(&b))).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let list = r.body["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], b["session_id"], "newest first");
    assert_eq!((list[0]["current"].as_bool(), list[1]["current"].as_bool()), (Some(true), Some(false)));
    assert_eq!(list[1]["id"], a["session_id"]);
    assert_eq!(list[0]["method"], "otp");
    assert_eq!(list[0]["client_ip"], "127.0.0.1");
    assert!(list[0]["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(list[0]["refreshed_at"], Value::Null);

    post_bearer(&t, "/v1/logout", &access(&a)).await;
    let r = t.get("/v1/sessions", Some(&access(&b))).await;
    assert_eq!(r.body["sessions"].as_array().unwrap().len(), 1);
    let r = refresh(&t, &refresh_token(&b)).await;
    let r = t.get("/v1/sessions", Some(&access(&r.body))).await;
    assert!(r.body["sessions"][0]["refreshed_at"].is_string());
    assert_eq!(t.get("/v1/sessions", None).await.code(), "missing_token");
}

#[tokio::test]
async fn access_tokens_verify_with_an_independent_jwt_library_against_the_jwks() {
    use jwt_compact::alg::Ed25519;
    use jwt_compact::jwk::JsonWebKey;
    use jwt_compact::{AlgorithmExt, UntrustedToken};

    #[derive(serde::Deserialize)]
    struct Claims {
        iss: String,
        aud: String,
        sub: String,
        sid: String,
    }

    let t = start_node().await;
    let tokens = t.signed_up(&phone(108)).await;
    let jwks = t.get("/.well-known/jwks.json", None).await.body;
    let jwk: JsonWebKey<'_> = serde_json::from_value(jwks["keys"][0].clone()).expect("the JWKS key is a JWK");
    type EdKey = <Ed25519 as jwt_compact::Algorithm>::VerifyingKey;
    let key = EdKey::try_from(&jwk).expect("an Ed25519 public key");
    let refreshed = refresh(&t, &refresh_token(&tokens)).await.body;

    for tokens in [&tokens, &refreshed] {
        let untrusted = UntrustedToken::new(tokens["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(untrusted.algorithm(), "EdDSA");
        assert_eq!(untrusted.header().key_id.as_deref(), jwks["keys"][0]["kid"].as_str());
        let token = Ed25519.validator::<Claims>(&key).validate(&untrusted).expect("the signature verifies");
        let claims = token.claims();
        let c = &claims.custom;
        assert_eq!((c.iss.as_str(), c.aud.as_str()), ("otpd", "otpd"));
        assert_eq!(c.sub, tokens["user"]["id"].as_str().unwrap());
        assert_eq!(c.sid, tokens["session_id"].as_str().unwrap());
        assert!(claims.expiration.is_some() && claims.issued_at.is_some());
    }

    // A token from another node (another key) does not verify with this JWKS.
    let other = start_node().await;
    let foreign = other.signed_up(&phone(109)).await;
    let untrusted = UntrustedToken::new(foreign["access_token"].as_str().unwrap()).unwrap();
    assert!(Ed25519.validator::<Claims>(&key).validate(&untrusted).is_err());
}
