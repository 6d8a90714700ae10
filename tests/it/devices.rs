//! Device enrolment and fingerprint (device-key) login over real HTTP, with P-256 and Ed25519
//! keys generated here and messages built from the description in docs/USING.md, not the engine's code.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{Value, json};

use crate::sessions::{access, post_bearer, refresh, refresh_token};
use crate::support::*;

/// A device key held by the test (the "phone").
pub enum Key {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl Key {
    pub fn p256() -> Key {
        Key::P256(p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()).expect("a valid scalar"))
    }

    pub fn ed25519() -> Key {
        Key::Ed25519(ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// SubjectPublicKeyInfo DER, base64 (standard alphabet, as iOS and Android export it).
    pub fn spki_base64(&self) -> String {
        let der = match self {
            Key::P256(k) => k.verifying_key().to_public_key_der().unwrap(),
            Key::Ed25519(k) => ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(&k.verifying_key()).unwrap(),
        };
        STANDARD.encode(der.as_bytes())
    }

    pub fn jwk(&self) -> Value {
        match self {
            Key::P256(k) => {
                let point = k.verifying_key().to_sec1_point(false);
                json!({ "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()), "ext": true, "key_ops": ["verify"] })
            }
            Key::Ed25519(k) => {
                json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(k.verifying_key().to_bytes()) })
            }
        }
    }

    /// The signature as a phone sends it: DER for P-256, 64 raw bytes for Ed25519; base64.
    pub fn sign(&self, message: &[u8]) -> String {
        match self {
            Key::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                STANDARD.encode(sig.to_der().as_bytes())
            }
            Key::Ed25519(k) => STANDARD.encode(ed25519_dalek::Signer::sign(k, message).to_bytes()),
        }
    }

    /// P-256 only: the raw `r ‖ s` form, base64url (JOSE, WebCrypto).
    pub fn sign_raw(&self, message: &[u8]) -> String {
        let Key::P256(k) = self else { panic!("raw signatures are a P-256 matter") };
        let sig: p256::ecdsa::Signature = k.sign(message);
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    }
}

/// The message as docs/USING.md describes it: prefix, audience, device id, nonce, joined by LF.
pub fn message(audience: &str, device_id: &str, nonce: &str) -> Vec<u8> {
    format!("otpd-device-login-v1\n{audience}\n{device_id}\n{nonce}").into_bytes()
}

pub async fn post_with_bearer(t: &TestNode, path: &str, bearer: &str, body: Value) -> Reply {
    into_reply(t.client.post(t.url(path)).bearer_auth(bearer).json(&body).send().await.unwrap()).await
}

pub async fn delete(t: &TestNode, path: &str, bearer: &str) -> Reply {
    into_reply(t.client.delete(t.url(path)).bearer_auth(bearer).send().await.unwrap()).await
}

/// Enrols `key` with its SPKI; returns the device id.
pub async fn enrol(t: &TestNode, bearer: &str, key: &Key) -> String {
    let body = json!({ "name": "Test phone", "platform": "ios", "public_key": key.spki_base64() });
    let r = post_with_bearer(t, "/v1/devices", bearer, body).await;
    assert_eq!(r.status, 201, "{}", r.raw);
    r.body["id"].as_str().unwrap().to_owned()
}

/// A challenge for `device_id`: (nonce, audience).
pub async fn challenge(t: &TestNode, device_id: &str) -> (String, String) {
    let r = t.post("/v1/device-login/challenge", json!({ "device_id": device_id })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    (r.body["nonce"].as_str().unwrap().to_owned(), r.body["audience"].as_str().unwrap().to_owned())
}

pub async fn verify(t: &TestNode, device_id: &str, nonce: &str, signature: &str) -> Reply {
    t.post("/v1/device-login/verify", json!({ "device_id": device_id, "nonce": nonce, "signature": signature })).await
}

/// Challenge, sign with `key`, verify.
pub async fn device_login(t: &TestNode, device_id: &str, key: &Key) -> Reply {
    let (nonce, aud) = challenge(t, device_id).await;
    verify(t, device_id, &nonce, &key.sign(&message(&aud, device_id, &nonce))).await
}

#[tokio::test]
async fn a_p256_device_enrols_and_logs_in_with_der_and_raw_signatures() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(200)).await;
    let key = Key::p256();
    let r = post_with_bearer(
        &t,
        "/v1/devices",
        &access(&tokens),
        json!({ "name": "  Ada's iPhone ", "platform": "ios", "public_key": key.spki_base64() }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), Some(format!("/v1/devices/{id}").as_str()));
    assert_eq!((r.body["name"].as_str(), r.body["platform"].as_str()), (Some("Ada's iPhone"), Some("ios")));
    assert_eq!(r.body["algorithm"], "ES256");
    let der = STANDARD.decode(key.spki_base64()).unwrap();
    let fingerprint: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(r.body["key_fingerprint"], fingerprint.as_str(), "SHA-256 of the SPKI DER");

    let (nonce, aud) = challenge(&t, &id).await;
    assert_eq!(aud, "otpd");
    assert_eq!(nonce.len(), 64);
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let r = verify(&t, &id, &nonce, &key.sign(&message(&aud, &id, &nonce))).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["user"]["id"], tokens["user"]["id"]);
    assert_ne!(r.body["session_id"], tokens["session_id"], "a new session");
    let device_tokens = r.body.clone();
    let me = t.get("/v1/me", Some(&access(&device_tokens))).await;
    assert_eq!(me.status, 200, "{}", me.raw);

    let sessions = t.get("/v1/sessions", Some(&access(&device_tokens))).await.body;
    let current = sessions["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap().clone();
    assert_eq!((current["method"].as_str(), current["device_id"].as_str()), (Some("device"), Some(id.as_str())));

    // Raw r ‖ s (JOSE / WebCrypto form) is accepted too; so is the refresh of a device session.
    let (nonce, aud) = challenge(&t, &id).await;
    let r = verify(&t, &id, &nonce, &key.sign_raw(&message(&aud, &id, &nonce))).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(refresh(&t, &refresh_token(&r.body)).await.status, 200);

    let list = t.get("/v1/devices", Some(&access(&tokens))).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["devices"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["devices"][0]["id"], id.as_str());
}

#[tokio::test]
async fn ed25519_devices_enrol_as_spki_pem_or_jwk_and_log_in() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(201)).await;
    let (a, b) = (Key::ed25519(), Key::ed25519());
    let Key::Ed25519(sk) = &a else { unreachable!() };
    let pem =
        ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(&sk.verifying_key(), Default::default()).unwrap();
    let r = post_with_bearer(
        &t,
        "/v1/devices",
        &access(&tokens),
        json!({ "name": "Pixel", "platform": "android", "public_key": pem }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    assert_eq!(r.body["algorithm"], "EdDSA");
    let id_a = r.body["id"].as_str().unwrap().to_owned();
    let r = post_with_bearer(
        &t,
        "/v1/devices",
        &access(&tokens),
        json!({ "name": "Browser", "platform": "web", "jwk": b.jwk() }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let id_b = r.body["id"].as_str().unwrap().to_owned();

    for (id, key) in [(&id_a, &a), (&id_b, &b)] {
        let r = device_login(&t, id, key).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(t.get("/v1/me", Some(&access(&r.body))).await.status, 200);
    }
    // A P-256 key enrolled as a JWK works the same way.
    let c = Key::p256();
    let r = post_with_bearer(
        &t,
        "/v1/devices",
        &access(&tokens),
        json!({ "name": "Mac", "platform": "other", "jwk": c.jwk() }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let id_c = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(device_login(&t, &id_c, &c).await.status, 200);
}

#[tokio::test]
async fn wrong_key_tampered_nonce_other_audience_and_five_wrong_signatures() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(202)).await;
    let key = Key::p256();
    let id = enrol(&t, &access(&tokens), &key).await;
    let (nonce, aud) = challenge(&t, &id).await;

    // Another key signing the right message.
    let r = verify(&t, &id, &nonce, &Key::p256().sign(&message(&aud, &id, &nonce))).await;
    assert_eq!((r.status, r.code()), (400, "invalid_signature"), "{}", r.raw);
    assert_eq!(r.body["attempts_left"], 4);
    // The right key over a tampered nonce (which is also what is presented): no challenge has
    // that nonce, so nothing is counted against the real one.
    let mut tampered = nonce.clone().into_bytes();
    tampered[10] = if tampered[10] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let r = verify(&t, &id, &tampered, &key.sign(&message(&aud, &id, &tampered))).await;
    assert_eq!((r.status, r.code()), (400, "no_pending_challenge"), "{}", r.raw);
    // The right key over the right nonce for another audience.
    let r = verify(&t, &id, &nonce, &key.sign(&message("elsewhere", &id, &nonce))).await;
    assert_eq!((r.code(), r.body["attempts_left"].as_u64()), ("invalid_signature", Some(3)));
    // Garbage that is valid base64.
    let r = verify(&t, &id, &nonce, &STANDARD.encode([0u8; 64])).await;
    assert_eq!((r.code(), r.body["attempts_left"].as_u64()), ("invalid_signature", Some(2)));
    let r = verify(&t, &id, &nonce, &STANDARD.encode([1u8; 64])).await;
    assert_eq!((r.code(), r.body["attempts_left"].as_u64()), ("invalid_signature", Some(1)));
    let r = verify(&t, &id, &nonce, &Key::p256().sign(&message(&aud, &id, &nonce))).await;
    assert_eq!((r.status, r.code()), (429, "too_many_attempts"), "the fifth wrong signature burns the challenge");
    let r = verify(&t, &id, &nonce, &key.sign(&message(&aud, &id, &nonce))).await;
    assert_eq!((r.status, r.code()), (429, "too_many_attempts"), "even the right signature is refused now");

    // Challenges stand alone: a later one does not replace an earlier one, each opens once.
    let (old, _) = challenge(&t, &id).await;
    let (new, _) = challenge(&t, &id).await;
    let r = verify(&t, &id, &new, &key.sign(&message(&aud, &id, &new))).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = verify(&t, &id, &old, &key.sign(&message(&aud, &id, &old))).await;
    assert_eq!(r.status, 200, "the earlier challenge still opens: {}", r.raw);
}

/// A stranger who knows a device id floods it from one address: they are refused after their
/// limit, the live challenges and the audit trail stay bounded, and the owner, elsewhere,
/// signs in all the while.
#[tokio::test]
async fn a_challenge_flood_is_bounded_and_never_locks_the_owner_out() {
    let t = start_node_with(|c| c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let tokens = t.signed_up(&phone(215)).await;
    let key = Key::ed25519();
    let id = enrol(&t, &access(&tokens), &key).await;
    let from = |ip: &'static str, trace: String, body: Value| {
        let req = t
            .client
            .post(t.url("/v1/device-login/challenge"))
            .header("x-forwarded-for", ip)
            .header("x-request-id", trace)
            .json(&body);
        async move { into_reply(req.send().await.unwrap()).await }
    };
    let live = || async { t.node.engine.shard_stats().await.iter().map(|s| s.challenges).sum::<usize>() };
    let before = live().await;

    // The owner's device id, from the stranger's address: the per-device rule (Medium: 20 per
    // 10 minutes for one device and one address) refuses the 21st.
    let mut codes = Vec::new();
    for i in 0..30 {
        let r = from("203.0.113.9", format!("flood-dev-{i}"), json!({ "device_id": id })).await;
        codes.push(r.code().to_owned());
    }
    assert_eq!(codes.iter().filter(|c| c.is_empty()).count(), 20, "{codes:?}");
    assert!(codes[20..].iter().all(|c| c == "device_challenge_limit"), "{codes:?}");
    // Random device ids from one address: the per-address rule (120 per 10 minutes) refuses the
    // rest, whatever ids they name.
    let mut refused = 0;
    for i in 0..500 {
        let r = from("203.0.113.9", format!("flood-ip-{i}"), json!({ "device_id": uuid::Uuid::now_v7() })).await;
        match r.status {
            200 => {}
            429 => {
                assert_eq!(r.code(), "ip_challenge_limit");
                refused += 1;
            }
            other => panic!("{other}: {}", r.raw),
        }
    }
    assert_eq!(refused, 500 - (120 - 20), "the address's 120 challenges, then refusals");
    assert_eq!(live().await - before, 120, "live challenges: what the limit let through, no more");

    // The owner, from another address, gets a challenge and signs in.
    let r = from("198.51.100.7", "owner".into(), json!({ "device_id": id })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let (nonce, aud) = (r.body["nonce"].as_str().unwrap().to_owned(), r.body["audience"].as_str().unwrap().to_owned());
    let signed = verify(&t, &id, &nonce, &key.sign(&message(&aud, &id, &nonce))).await;
    assert_eq!(signed.status, 200, "{}", signed.raw);

    // The trail: one event per challenge served, one for the first refusal of each kind.
    let log = t.node.engine.audit_log();
    let mut written = 0;
    for trace in (0..30).map(|i| format!("flood-dev-{i}")).chain((0..500).map(|i| format!("flood-ip-{i}"))) {
        written += log.by_trace(&trace, 10).await.unwrap().len();
    }
    // (Refusals aggregate by API, step and outcome: both rules' denials are one kind.)
    assert_eq!(written, 120 + 1, "120 challenges and the first refusal");
}

#[tokio::test]
async fn expired_and_reused_nonces_are_refused() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(203)).await;
    let key = Key::ed25519();
    let id = enrol(&t, &access(&tokens), &key).await;

    let (nonce, aud) = challenge(&t, &id).await;
    let sig = key.sign(&message(&aud, &id, &nonce));
    t.advance(Duration::from_millis(59_999));
    let r = verify(&t, &id, &nonce, &sig).await;
    assert_eq!(r.status, 200, "valid until its 60th second: {}", r.raw);
    let r = verify(&t, &id, &nonce, &sig).await;
    assert_eq!((r.status, r.code()), (400, "challenge_already_used"), "single use");

    let (nonce, aud) = challenge(&t, &id).await;
    let sig = key.sign(&message(&aud, &id, &nonce));
    t.advance(Duration::from_secs(60));
    let r = verify(&t, &id, &nonce, &sig).await;
    assert_eq!((r.status, r.code()), (400, "challenge_expired"), "{}", r.raw);
}

#[tokio::test]
async fn a_revoked_device_cannot_log_in_and_its_sessions_end() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(204)).await;
    let key = Key::p256();
    let id = enrol(&t, &access(&tokens), &key).await;
    let session = device_login(&t, &id, &key).await;
    assert_eq!(session.status, 200);

    let r = delete(&t, &format!("/v1/devices/{id}"), &access(&tokens)).await;
    assert_eq!(r.status, 204, "{}", r.raw);
    assert_eq!(delete(&t, &format!("/v1/devices/{id}"), &access(&tokens)).await.status, 204, "idempotent");
    assert!(t.get("/v1/devices", Some(&access(&tokens))).await.body["devices"].as_array().unwrap().is_empty());
    assert_eq!(t.get("/v1/me", Some(&access(&session.body))).await.status, 401, "its session was revoked");
    assert_eq!(refresh(&t, &refresh_token(&session.body)).await.status, 401);
    assert_eq!(t.get("/v1/me", Some(&access(&tokens))).await.status, 200, "the OTP session is not the device's");

    // The holder of the key learns the device was removed; nobody else does.
    let r = device_login(&t, &id, &key).await;
    assert_eq!((r.status, r.code()), (403, "device_revoked"), "{}", r.raw);
    let r = device_login(&t, &id, &Key::p256()).await;
    assert_eq!((r.status, r.code()), (400, "invalid_signature"), "{}", r.raw);
}

#[tokio::test]
async fn another_users_device_cannot_be_used_listed_or_removed() {
    let t = start_node().await;
    let alice = t.signed_up(&phone(205)).await;
    let bob = t.signed_up(&phone(206)).await;
    let (alice_key, bob_key) = (Key::p256(), Key::p256());
    let alice_device = enrol(&t, &access(&alice), &alice_key).await;
    let bob_device = enrol(&t, &access(&bob), &bob_key).await;

    // Bob's key cannot sign for Alice's device.
    let r = device_login(&t, &alice_device, &bob_key).await;
    assert_eq!(r.code(), "invalid_signature", "{}", r.raw);
    // A nonce issued for Alice's device does not open Bob's, even signed by Bob's key.
    let (nonce, aud) = challenge(&t, &alice_device).await;
    let r = verify(&t, &bob_device, &nonce, &bob_key.sign(&message(&aud, &bob_device, &nonce))).await;
    assert_eq!(r.code(), "no_pending_challenge", "{}", r.raw);
    // Bob neither sees nor removes it.
    let list = t.get("/v1/devices", Some(&access(&bob))).await.body;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    assert_eq!(list["devices"][0]["id"], bob_device.as_str());
    let r = delete(&t, &format!("/v1/devices/{alice_device}"), &access(&bob)).await;
    assert_eq!((r.status, r.code()), (404, "device_not_found"));
    // Alice's device still works, and signs Alice in, not Bob.
    let r = device_login(&t, &alice_device, &alice_key).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["user"]["id"], alice["user"]["id"]);
}

#[tokio::test]
async fn unknown_device_ids_answer_like_known_ones() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(207)).await;
    let key = Key::p256();
    let known = enrol(&t, &access(&tokens), &key).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let a = t.post("/v1/device-login/challenge", json!({ "device_id": known })).await;
    let b = t.post("/v1/device-login/challenge", json!({ "device_id": unknown })).await;
    assert_eq!((a.status, b.status), (200, 200));
    let shape = |r: &Reply| {
        let mut keys: Vec<String> = r.body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (keys, r.body["nonce"].as_str().unwrap().len(), r.body["expires_in"].clone(), r.raw.len())
    };
    assert_eq!(shape(&a), shape(&b), "same fields, sizes and lifetime");
    // Whoever signs for an unknown device reads a wrong signature, counted like any other.
    let nonce = b.body["nonce"].as_str().unwrap();
    let r = verify(&t, &unknown, nonce, &key.sign(&message("otpd", &unknown, nonce))).await;
    assert_eq!((r.status, r.code(), r.body["attempts_left"].as_u64()), (400, "invalid_signature", Some(4)));
}

#[tokio::test]
async fn enrolment_needs_a_fresh_login_by_code() {
    let t = start_node().await;
    let p = phone(208);
    let tokens = t.signed_up(&p).await;
    let body = |key: &Key| json!({ "name": "Phone", "platform": "ios", "public_key": key.spki_base64() });

    let r = into_reply(t.client.post(t.url("/v1/devices")).json(&body(&Key::p256())).send().await.unwrap()).await;
    assert_eq!((r.status, r.code()), (401, "missing_token"));

    t.advance(Duration::from_secs(301));
    let r = post_with_bearer(&t, "/v1/devices", &access(&tokens), body(&Key::p256())).await;
    assert_eq!((r.status, r.code()), (403, "fresh_login_required"), "{}", r.raw);
    // A refresh gives a new access token but not a new login.
    let refreshed = refresh(&t, &refresh_token(&tokens)).await.body;
    let r = post_with_bearer(&t, "/v1/devices", &access(&refreshed), body(&Key::p256())).await;
    assert_eq!((r.status, r.code()), (403, "fresh_login_required"), "{}", r.raw);

    // A new login by code allows it; a login by device does not.
    let fresh = crate::sessions::login_again(&t, &p).await;
    let key = Key::p256();
    let id = enrol(&t, &access(&fresh), &key).await;
    let by_device = device_login(&t, &id, &key).await.body;
    let r = post_with_bearer(&t, "/v1/devices", &access(&by_device), body(&Key::p256())).await;
    assert_eq!((r.status, r.code()), (403, "fresh_login_required"), "{}", r.raw);
}

#[tokio::test]
async fn the_device_cap_duplicates_and_bad_keys() {
    let t = start_node_with(|c| c.devices.max_per_user = 2).await;
    let tokens = t.signed_up(&phone(209)).await;
    let bearer = access(&tokens);
    let key = Key::p256();
    let first = enrol(&t, &bearer, &key).await;
    let body = |k: &Key| json!({ "name": "Phone", "platform": "ios", "public_key": k.spki_base64() });
    let r = post_with_bearer(&t, "/v1/devices", &bearer, body(&key)).await;
    assert_eq!((r.status, r.code()), (409, "device_exists"));
    enrol(&t, &bearer, &Key::ed25519()).await;
    let r = post_with_bearer(&t, "/v1/devices", &bearer, body(&Key::p256())).await;
    assert_eq!((r.status, r.code()), (409, "device_limit"), "{}", r.raw);
    assert_eq!(delete(&t, &format!("/v1/devices/{first}"), &bearer).await.status, 204);
    enrol(&t, &bearer, &Key::p256()).await;

    let secp256k1_spki = "MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEB3O8gPyX7mRRiQ9Q8VjKTvpzkWx58BCy9WKUiY5mmVuUGEYStJcBhAFpE1uwTz6fnj3MyGZaVHHP8aXlyrSOGg==";
    let bad_keys = [
        json!({ "public_key": "AAAA" }),
        json!({ "public_key": secp256k1_spki }),
        json!({ "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----" }),
        json!({ "jwk": { "kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA" } }),
        json!({ "jwk": { "kty": "RSA", "crv": "", "x": "AQAB" } }),
    ];
    for extra in bad_keys {
        let mut body = json!({ "name": "Phone", "platform": "ios" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let r = post_with_bearer(&t, "/v1/devices", &bearer, body.clone()).await;
        assert_eq!((r.status, r.code()), (400, "invalid_public_key"), "{body}: {}", r.raw);
    }
}

#[tokio::test]
async fn malformed_device_requests_are_4xx_problems() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(210)).await;
    let bearer = access(&tokens);
    let id = enrol(&t, &bearer, &Key::p256()).await;
    let nonce = "a".repeat(64);
    let cases = [
        ("/v1/device-login/challenge", json!({})),
        ("/v1/device-login/challenge", json!({ "device_id": "not-a-uuid" })),
        ("/v1/device-login/challenge", json!({ "device_id": 42 })),
        ("/v1/device-login/challenge", json!({ "device_id": id, "extra": 1 })),
        ("/v1/device-login/verify", json!({ "device_id": id, "nonce": "abc", "signature": "AAAA" })),
        ("/v1/device-login/verify", json!({ "device_id": id, "nonce": "z".repeat(64), "signature": "AAAA" })),
        ("/v1/device-login/verify", json!({ "device_id": id, "nonce": nonce, "signature": "not base64!" })),
        ("/v1/device-login/verify", json!({ "device_id": id, "nonce": nonce, "signature": "A".repeat(600) })),
        ("/v1/device-login/verify", json!({ "device_id": id, "nonce": nonce })),
        ("/v1/token/refresh", json!({ "refresh_token": 1 })),
    ];
    for (path, body) in cases {
        let r = t.post(path, body.clone()).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{path} {body}: {}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let enrol_cases = [
        json!({ "name": "", "platform": "ios", "public_key": "AAAA" }),
        json!({ "name": "x".repeat(65), "platform": "ios", "public_key": "AAAA" }),
        json!({ "name": "Phone", "platform": "nokia", "public_key": "AAAA" }),
        json!({ "name": "Phone", "platform": "ios" }),
        json!({ "name": "Phone", "platform": "ios", "public_key": "AAAA", "jwk": { "kty": "OKP", "crv": "Ed25519", "x": "AA" } }),
        json!({ "name": "Phone", "platform": "ios", "jwk": { "kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA" } }),
        json!({ "name": "Phone", "platform": "ios", "public_key": "A".repeat(3000) }),
    ];
    for body in enrol_cases {
        let r = post_with_bearer(&t, "/v1/devices", &bearer, body.clone()).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{body}: {}", r.raw);
    }
    let r = delete(&t, "/v1/devices/not-a-uuid", &bearer).await;
    assert_eq!((r.status, r.code()), (404, "device_not_found"));
    let r = into_reply(t.client.put(t.url("/v1/devices")).bearer_auth(&bearer).send().await.unwrap()).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
    let r = post_bearer(&t, "/v1/sessions", &bearer).await;
    assert_eq!(r.status, 405);
    let r = t.get("/v1/devices", Some("not-a-jwt")).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
}

#[tokio::test]
async fn every_device_step_is_audited_under_the_owner() {
    let t = start_node().await;
    let p = phone(211);
    let tokens = t.signed_up(&p).await;
    let key = Key::p256();
    let id = enrol(&t, &access(&tokens), &key).await;
    let traced = |path: &'static str, trace: &'static str, body: Value| {
        let req = t.client.post(t.url(path)).header("x-request-id", trace).json(&body);
        async move { into_reply(req.send().await.unwrap()).await }
    };
    let r = traced("/v1/device-login/challenge", "dev-challenge", json!({ "device_id": id })).await;
    let (nonce, aud) = (r.body["nonce"].as_str().unwrap().to_owned(), r.body["audience"].as_str().unwrap().to_owned());
    let wrong = Key::p256().sign(&message(&aud, &id, &nonce));
    traced("/v1/device-login/verify", "dev-wrong", json!({ "device_id": id, "nonce": nonce, "signature": wrong }))
        .await;
    verify(&t, &id, &nonce, &key.sign(&message(&aud, &id, &nonce))).await;
    t.get("/v1/devices", Some(&access(&tokens))).await;
    delete(&t, &format!("/v1/devices/{id}"), &access(&tokens)).await;

    // Under the identifier: every step of the signed-in owner. Before a signature verified the
    // account is not read (reading it only for known devices would tell them apart by time),
    // so a challenge and a refused signature are filed under the device's owner, by user id.
    let log = t.node.engine.audit_log();
    let ident = t.node.engine.identifier_hash(&t.node.engine.normalizer().phone(&p).unwrap());
    let events = log.by_identifier(&ident, 20).await.unwrap();
    let steps: Vec<(&str, &str, &str)> =
        events.iter().map(|e| (e.api.as_str(), e.step.as_str(), e.outcome.as_str())).collect();
    assert_eq!(
        &steps[..4],
        &[
            ("device_revoke", "done", "ok"),
            ("device_list", "done", "ok"),
            ("device_verify", "done", "ok"),
            ("device_enrol", "done", "ok"),
        ],
        "{steps:?}"
    );
    let mut before = log.by_trace("dev-challenge", 5).await.unwrap();
    before.extend(log.by_trace("dev-wrong", 5).await.unwrap());
    let steps: Vec<(&str, &str, &str)> =
        before.iter().map(|e| (e.api.as_str(), e.step.as_str(), e.outcome.as_str())).collect();
    assert_eq!(steps, [("device_challenge", "done", "ok"), ("device_verify", "challenge", "rejected")]);
    let user = tokens["user"]["id"].as_str().unwrap();
    let all = events[..4].iter().chain(&before);
    assert!(all.clone().all(|e| e.user_id.map(|u| u.to_string()).as_deref() == Some(user)));
    assert!(!format!("{events:?}{before:?}").contains(&nonce), "nonces are not written to the trail");
}
