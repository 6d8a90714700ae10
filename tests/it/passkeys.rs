//! Passkeys over real HTTP, with a software authenticator written here from the WebAuthn
//! specification (CBOR, authenticator data, client data, ECDSA P-256), not from otpd's code or
//! webauthn-rs': registration, discoverable login, and every kind of bad assertion.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use serde_json::{Value, json};

use crate::devices::{delete, post_with_bearer};
use crate::sessions::{access, post_bearer};
use crate::support::*;

/// What the node's default `[passkeys]` accepts.
const ORIGIN: &str = "http://localhost:8080";
const RP_ID: &str = "localhost";

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref().to_vec()
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// CBOR (RFC 8949) of the few shapes WebAuthn needs.
fn cbor_head(major: u8, n: usize, out: &mut Vec<u8>) {
    match n {
        0..=23 => out.push(major << 5 | n as u8),
        24..=255 => out.extend([major << 5 | 24, n as u8]),
        _ => {
            out.push(major << 5 | 25);
            out.extend((n as u16).to_be_bytes());
        }
    }
}

fn cbor_bytes(b: &[u8], out: &mut Vec<u8>) {
    cbor_head(2, b.len(), out);
    out.extend(b);
}

fn cbor_text(t: &str, out: &mut Vec<u8>) {
    cbor_head(3, t.len(), out);
    out.extend(t.as_bytes());
}

fn cbor_int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 { cbor_head(0, i as usize, out) } else { cbor_head(1, (-1 - i) as usize, out) }
}

/// A platform authenticator holding one P-256 passkey.
pub struct Authenticator {
    key: p256::ecdsa::SigningKey,
    pub id: Vec<u8>,
    pub counter: u32,
    /// Sign counts up with each assertion (0 stays 0: a synced passkey).
    pub counting: bool,
    pub user_handle: Vec<u8>,
    pub origin: String,
    pub rp_id: String,
    pub user_verified: bool,
    pub format: &'static str,
}

impl Authenticator {
    pub fn new() -> Self {
        Authenticator {
            key: p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()).expect("a valid scalar"),
            id: rand::random::<[u8; 32]>().to_vec(),
            counter: 0,
            counting: true,
            user_handle: Vec::new(),
            origin: ORIGIN.into(),
            rp_id: RP_ID.into(),
            user_verified: true,
            format: "none",
        }
    }

    fn flags(&self, attested: bool) -> u8 {
        let mut f = 0x01; // user present
        if self.user_verified {
            f |= 0x04;
        }
        if attested {
            f |= 0x40;
        }
        f
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({ "type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false })
            .to_string()
            .into_bytes()
    }

    /// `navigator.credentials.create(options)`, as `PublicKeyCredential.toJSON()` writes it.
    pub fn create(&mut self, options: &Value) -> Value {
        let public_key = &options["publicKey"];
        let challenge = public_key["challenge"].as_str().expect("a challenge");
        self.user_handle = URL_SAFE_NO_PAD.decode(public_key["user"]["id"].as_str().expect("a user id")).unwrap();
        let client_data = self.client_data("webauthn.create", challenge);
        let point = self.key.verifying_key().to_sec1_point(false);
        let mut cose = vec![0xa5];
        for (k, v) in [(1, 2), (3, -7), (-1, 1)] {
            cbor_int(k, &mut cose);
            cbor_int(v, &mut cose);
        }
        cbor_int(-2, &mut cose);
        cbor_bytes(point.x().unwrap(), &mut cose);
        cbor_int(-3, &mut cose);
        cbor_bytes(point.y().unwrap(), &mut cose);
        let mut auth_data = sha256(self.rp_id.as_bytes());
        auth_data.push(self.flags(true));
        auth_data.extend(self.counter.to_be_bytes());
        auth_data.extend([0u8; 16]);
        auth_data.extend((self.id.len() as u16).to_be_bytes());
        auth_data.extend(&self.id);
        auth_data.extend(cose);
        let mut attestation = vec![0xa3];
        cbor_text("fmt", &mut attestation);
        cbor_text(self.format, &mut attestation);
        cbor_text("attStmt", &mut attestation);
        attestation.push(0xa0);
        cbor_text("authData", &mut attestation);
        cbor_bytes(&auth_data, &mut attestation);
        json!({
            "id": b64(&self.id), "rawId": b64(&self.id), "type": "public-key",
            "response": { "clientDataJSON": b64(&client_data), "attestationObject": b64(&attestation),
                          "transports": ["internal"] },
            "clientExtensionResults": {}, "authenticatorAttachment": "platform",
        })
    }

    /// `navigator.credentials.get(options)` with this passkey.
    pub fn get(&mut self, options: &Value) -> Value {
        let challenge = options["publicKey"]["challenge"].as_str().expect("a challenge").to_owned();
        self.assert(&challenge)
    }

    /// An assertion over `challenge` (base64url) as it stands.
    pub fn assert(&mut self, challenge: &str) -> Value {
        if self.counting {
            self.counter += 1;
        }
        let client_data = self.client_data("webauthn.get", challenge);
        let mut auth_data = sha256(self.rp_id.as_bytes());
        auth_data.push(self.flags(false));
        auth_data.extend(self.counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend(sha256(&client_data));
        let signature: p256::ecdsa::Signature = self.key.sign(&signed);
        json!({
            "id": b64(&self.id), "rawId": b64(&self.id), "type": "public-key",
            "response": { "clientDataJSON": b64(&client_data), "authenticatorData": b64(&auth_data),
                          "signature": b64(signature.to_der().as_bytes()), "userHandle": b64(&self.user_handle) },
            "clientExtensionResults": {},
        })
    }
}

async fn register_options(t: &TestNode, bearer: &str) -> Reply {
    post_bearer(t, "/v1/passkeys/options", bearer).await
}

/// Registers `authenticator`'s passkey for the account of `bearer`.
pub async fn register(t: &TestNode, bearer: &str, authenticator: &mut Authenticator) -> Reply {
    let r = register_options(t, bearer).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let credential = authenticator.create(&r.body["options"]);
    post_with_bearer(t, "/v1/passkeys", bearer, json!({ "name": "Test laptop", "credential": credential })).await
}

pub async fn login_options(t: &TestNode) -> Value {
    let r = t.post("/v1/passkey-login/options", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body["options"].clone()
}

async fn login_with(t: &TestNode, credential: Value, trace: &str) -> Reply {
    let req = t.client.post(t.url("/v1/passkey-login/verify")).header("x-request-id", trace);
    into_reply(req.json(&json!({ "credential": credential })).send().await.unwrap()).await
}

/// The audit events of one trace id: (api, step, outcome, message).
async fn trail(t: &TestNode, trace: &str) -> Vec<(String, String, String, String)> {
    let events = t.node.engine.audit_log().by_trace(trace, 10).await.unwrap();
    events
        .iter()
        .map(|e| (e.api.as_str().into(), e.step.as_str().into(), e.outcome.as_str().into(), e.message.to_string()))
        .collect()
}

#[tokio::test]
async fn a_passkey_registers_and_signs_in_without_an_identifier() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(300)).await;
    let bearer = access(&tokens);
    let mut authenticator = Authenticator::new();

    let r = register_options(&t, &bearer).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let public_key = &r.body["options"]["publicKey"];
    assert_eq!(public_key["rp"]["id"], RP_ID);
    assert_eq!(public_key["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(public_key["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(public_key["user"]["name"], phone(300));
    assert_eq!(r.body["expires_in"], 60);
    let credential = authenticator.create(&r.body["options"]);
    let r =
        post_with_bearer(&t, "/v1/passkeys", &bearer, json!({ "name": " Ada's laptop ", "credential": credential }))
            .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    assert_eq!(r.body["name"], "Ada's laptop");
    assert_eq!(r.body["id"], b64(&authenticator.id));
    assert_eq!(r.header("location"), Some(format!("/v1/passkeys/{}", b64(&authenticator.id)).as_str()));
    assert_eq!(
        authenticator.user_handle,
        uuid::Uuid::parse_str(tokens["user"]["id"].as_str().unwrap()).unwrap().as_bytes()
    );

    // The same challenge does not register twice.
    let again = post_with_bearer(&t, "/v1/passkeys", &bearer, json!({ "name": "x", "credential": credential })).await;
    assert_eq!((again.status, again.code()), (400, "challenge_already_used"), "{}", again.raw);

    // Login options take nothing and name nobody: no credential list, the same shape for all.
    let options = login_options(&t).await;
    assert!(options["publicKey"].get("allowCredentials").is_none_or(|a| a.as_array().unwrap().is_empty()), "{options}");
    assert_eq!(options["publicKey"]["userVerification"], "required");
    let r = login_with(&t, authenticator.get(&options), "pk-login").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["user"]["id"], tokens["user"]["id"]);
    let passkey_bearer = access(&r.body);
    let sessions = t.get("/v1/sessions", Some(&passkey_bearer)).await;
    let current = sessions.body["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap().clone();
    assert_eq!(current["method"], "passkey");
    assert_eq!(trail(&t, "pk-login").await[0].0, "passkey_login");
    assert_eq!(trail(&t, "pk-login").await[0].2, "ok");

    let list = t.get("/v1/passkeys", Some(&bearer)).await;
    let listed = &list.body["passkeys"].as_array().unwrap()[0];
    assert_eq!(listed["name"], "Ada's laptop");
    assert!(listed["last_used_at"].is_string(), "{listed}");

    // A session opened by a passkey cannot register another one (like a device session).
    let r = register_options(&t, &passkey_bearer).await;
    assert_eq!((r.status, r.code()), (403, "fresh_login_required"), "{}", r.raw);
}

#[tokio::test]
async fn registration_needs_a_fresh_login_by_code_and_respects_the_cap() {
    let t = start_node_with(|c| c.passkeys.max_per_user = 1).await;
    let tokens = t.signed_up(&phone(301)).await;
    let bearer = access(&tokens);
    assert_eq!(register(&t, &bearer, &mut Authenticator::new()).await.status, 201);
    let r = register(&t, &bearer, &mut Authenticator::new()).await;
    assert_eq!((r.status, r.code()), (409, "passkey_limit"), "{}", r.raw);
    t.advance(Duration::from_secs(301));
    let r = register_options(&t, &bearer).await;
    assert_eq!((r.status, r.code()), (403, "fresh_login_required"), "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = post_bearer(&t, "/v1/passkeys/options", "not-a-token").await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "{}", r.raw);
}

/// Malformed, replayed, cross-origin, wrong-RP-id, wrong-challenge, unverified,
/// counter-regressing and unsupported answers: each a 4xx problem document, each audited.
#[tokio::test]
async fn bad_credentials_are_refused_with_a_problem_and_audited() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(302)).await;
    let bearer = access(&tokens);
    let mut authenticator = Authenticator::new();
    assert_eq!(register(&t, &bearer, &mut authenticator).await.status, 201);

    let mut cases: Vec<(&str, Value, u16, &str)> = Vec::new();
    cases.push(("pk-malformed", json!({ "id": "x" }), 400, "invalid_credential"));
    let mut mangled = authenticator.get(&login_options(&t).await);
    mangled["response"]["authenticatorData"] = json!("AAAA");
    cases.push(("pk-short-data", mangled, 400, "invalid_credential"));
    let options = login_options(&t).await;
    let good = authenticator.get(&options);
    assert_eq!(login_with(&t, good.clone(), "pk-first").await.status, 200);
    cases.push(("pk-replayed", good, 400, "challenge_already_used"));

    let mut foreign = Authenticator { origin: "https://evil.example".into(), ..clone_of(&authenticator) };
    cases.push(("pk-cross-origin", foreign.get(&login_options(&t).await), 400, "passkey_invalid"));
    foreign = Authenticator { rp_id: "evil.example".into(), ..clone_of(&authenticator) };
    cases.push(("pk-wrong-rp-id", foreign.get(&login_options(&t).await), 400, "passkey_invalid"));
    cases.push(("pk-wrong-challenge", authenticator.assert(&b64(&[7; 32])), 400, "no_pending_challenge"));
    cases.push(("pk-short-challenge", authenticator.assert(&b64(&[7; 8])), 400, "invalid_credential"));
    foreign = Authenticator { user_verified: false, ..clone_of(&authenticator) };
    cases.push(("pk-unverified", foreign.get(&login_options(&t).await), 400, "user_not_verified"));
    let stranger = Authenticator::new().get(&login_options(&t).await);
    cases.push(("pk-unknown", stranger, 400, "passkey_invalid"));
    // A clone: the same key, its counter behind the original's.
    let mut clone = clone_of(&authenticator);
    authenticator.counter += 10;
    assert_eq!(login_with(&t, authenticator.get(&login_options(&t).await), "pk-ahead").await.status, 200);
    cases.push(("pk-clone", clone.get(&login_options(&t).await), 403, "passkey_clone_suspected"));

    for (trace, credential, status, code) in cases {
        let r = login_with(&t, credential, trace).await;
        assert_eq!((r.status, r.code()), (status, code), "{trace}: {}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"), "{trace}");
        let events = trail(&t, trace).await;
        assert_eq!(events.len(), 1, "{trace}: one audit event: {events:?}");
        assert_eq!((events[0].0.as_str(), events[0].2.as_str()), ("passkey_login", "rejected"), "{trace}");
        if trace == "pk-clone" {
            assert!(events[0].3.contains("cloned"), "the clone is named in the trail: {events:?}");
        }
    }
    let r = login_with(&t, json!("not an object"), "pk-not-object").await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.raw);
    let r = t.post("/v1/passkey-login/verify", json!({ "credential": {}, "extra": 1 })).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "unknown fields are refused: {}", r.raw);

    // Unsupported attestation formats at registration: a clear code, not a 500.
    let mut odd = Authenticator { format: "x-unknown-format", ..Authenticator::new() };
    let r = register(&t, &bearer, &mut odd).await;
    assert_eq!((r.status, r.code()), (400, "unsupported_authenticator"), "{}", r.raw);
    let mut elsewhere = Authenticator { origin: "https://evil.example".into(), ..Authenticator::new() };
    let r = register(&t, &bearer, &mut elsewhere).await;
    assert_eq!((r.status, r.code()), (400, "invalid_credential"), "{}", r.raw);
    let r = post_with_bearer(&t, "/v1/passkeys", &bearer, json!({ "name": "x", "credential": {} })).await;
    assert_eq!((r.status, r.code()), (400, "invalid_credential"), "{}", r.raw);
}

fn clone_of(a: &Authenticator) -> Authenticator {
    Authenticator {
        key: a.key.clone(),
        id: a.id.clone(),
        counter: a.counter,
        counting: a.counting,
        user_handle: a.user_handle.clone(),
        origin: a.origin.clone(),
        rp_id: a.rp_id.clone(),
        user_verified: a.user_verified,
        format: a.format,
    }
}

#[tokio::test]
async fn a_login_challenge_expires_and_works_once() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(303)).await;
    let mut authenticator = Authenticator::new();
    assert_eq!(register(&t, &access(&tokens), &mut authenticator).await.status, 201);
    let options = login_options(&t).await;
    t.advance(Duration::from_secs(61));
    let r = login_with(&t, authenticator.get(&options), "pk-late").await;
    assert_eq!((r.status, r.code()), (400, "challenge_expired"), "{}", r.raw);
    // A synced passkey counts nothing: 0 after 0 is fine.
    let mut synced = Authenticator { counting: false, ..Authenticator::new() };
    let tokens = t.signed_up(&phone(304)).await;
    assert_eq!(register(&t, &access(&tokens), &mut synced).await.status, 201);
    for trace in ["pk-synced-1", "pk-synced-2"] {
        let r = login_with(&t, synced.get(&login_options(&t).await), trace).await;
        assert_eq!(r.status, 200, "{}", r.raw);
    }
}

#[tokio::test]
async fn deleting_a_passkey_keeps_nothing_and_it_signs_in_no_more() {
    let t = start_node().await;
    let tokens = t.signed_up(&phone(305)).await;
    let bearer = access(&tokens);
    let other = access(&t.signed_up(&phone(306)).await);
    let mut authenticator = Authenticator::new();
    assert_eq!(register(&t, &bearer, &mut authenticator).await.status, 201);
    let path = format!("/v1/passkeys/{}", b64(&authenticator.id));
    let r = delete(&t, &path, &other).await;
    assert_eq!((r.status, r.code()), (404, "passkey_not_found"), "another account's passkey is not found");
    let r = delete(&t, "/v1/passkeys/!!notbase64", &bearer).await;
    assert_eq!((r.status, r.code()), (404, "passkey_not_found"), "{}", r.raw);
    assert_eq!(delete(&t, &path, &bearer).await.status, 204);
    assert_eq!(delete(&t, &path, &bearer).await.status, 404);
    assert_eq!(t.get("/v1/passkeys", Some(&bearer)).await.body["passkeys"], json!([]));
    let id = otpd_actors::rules::passkey::CredentialId(authenticator.id.clone());
    assert_eq!(t.node.engine.passkey_store().passkey(&id).await.unwrap(), None, "nothing of it is stored");
    let r = login_with(&t, authenticator.get(&login_options(&t).await), "pk-deleted").await;
    assert_eq!((r.status, r.code()), (400, "passkey_invalid"), "{}", r.raw);
    // Registered again after deletion: the credential id is free.
    assert_eq!(register(&t, &bearer, &mut authenticator).await.status, 201);
}

/// Deleting a passkey ends the sessions it opened, as revoking a device does, and no other:
/// not another passkey's, not the one by code that asked.
#[tokio::test]
async fn deleting_a_passkey_ends_the_sessions_it_opened() {
    let t = start_node().await;
    let by_code = access(&t.signed_up(&phone(307)).await);
    let (mut lost, mut kept) = (Authenticator::new(), Authenticator::new());
    assert_eq!(register(&t, &by_code, &mut lost).await.status, 201);
    assert_eq!(register(&t, &by_code, &mut kept).await.status, 201);
    let by_lost = login_with(&t, lost.get(&login_options(&t).await), "pk-lost").await;
    let by_kept = login_with(&t, kept.get(&login_options(&t).await), "pk-kept").await;
    assert_eq!((by_lost.status, by_kept.status), (200, 200), "{} {}", by_lost.raw, by_kept.raw);
    let listed = t.get("/v1/sessions", Some(&by_code)).await;
    assert_eq!(listed.body["sessions"].as_array().unwrap().len(), 3, "{}", listed.raw);

    let path = format!("/v1/passkeys/{}", b64(&lost.id));
    let r = delete(&t, &path, &by_code).await;
    assert_eq!(r.status, 204, "{}", r.raw);
    assert_eq!(t.get("/v1/me", Some(&access(&by_lost.body))).await.status, 401, "its session ended");
    let r = crate::sessions::refresh(&t, &crate::sessions::refresh_token(&by_lost.body)).await;
    assert_eq!(r.status, 401, "and cannot be refreshed: {}", r.raw);
    assert_eq!(t.get("/v1/me", Some(&access(&by_kept.body))).await.status, 200, "another passkey's session");
    assert_eq!(t.get("/v1/me", Some(&by_code)).await.status, 200, "the session by code");
    let listed = t.get("/v1/sessions", Some(&by_code)).await;
    assert_eq!(listed.body["sessions"].as_array().unwrap().len(), 2, "{}", listed.raw);
}
