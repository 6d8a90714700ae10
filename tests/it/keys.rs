//! Key rotation: the signing key (JWKS, `kid`, expiry of the old key's last token, PyJWT as an
//! independent verifier), the admin token (overlap, then refused), the schedule, a restart,
//! and two nodes sharing one ScyllaDB store (kassandra) picking up each other's rotation.

use std::time::Duration;

use serde_json::{Value, json};

use crate::sessions::{access, refresh, refresh_token};
use crate::support::{TestNode, has_tools, phone, start_node_on, start_node_with};

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    use base64::Engine as _;
    let header = jwt.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn jwks_kids(t: &TestNode) -> (Value, Vec<String>) {
    let r = t.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.status, 200);
    let kids = r.body["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    (r.body, kids)
}

async fn rotate(t: &TestNode, key: &str, token: &str, trace: &str) -> crate::support::Reply {
    let resp = t
        .client
        .post(t.ops_url("/v1/admin/keys/rotate"))
        .bearer_auth(token)
        .header("x-request-id", trace)
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    crate::support::into_reply(resp).await
}

/// PyJWT: for each token, the key of its `kid` from `jwks`, then signature, `aud` and `iss`
/// (time claims are the node's manual clock's, so not PyJWT's to judge). Prints one line per
/// token: `ok <kid> <sub>` or `fail <error>`.
const PYJWT: &str = r#"
import json, sys, jwt
jwks = json.loads(sys.argv[1])
keys = {k["kid"]: k for k in jwks["keys"]}
for token in sys.argv[2:]:
    try:
        kid = jwt.get_unverified_header(token)["kid"]
        if kid not in keys:
            raise Exception("no key " + kid)
        key = jwt.PyJWK.from_dict(keys[kid])
        claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience="otpd", issuer="otpd",
                            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
        print("ok", kid, claims["sub"])
    except Exception as e:
        print("fail", type(e).__name__, e)
"#;

async fn pyjwt(jwks: &Value, tokens: &[&str]) -> Option<Vec<String>> {
    let ready = tokio::process::Command::new("python3").args(["-c", "import jwt, cryptography"]).output().await;
    if !ready.is_ok_and(|o| o.status.success()) {
        println!("SKIPPED the PyJWT part: PyJWT with cryptography is not installed (scripts/test.sh installs it)");
        return None;
    }
    let out = tokio::process::Command::new("python3")
        .args(["-c", PYJWT, &jwks.to_string()])
        .args(tokens)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
}

#[tokio::test]
async fn a_rotated_signing_key_signs_after_activation_and_the_old_one_leaves_after_its_last_token() {
    let t = start_node_with(|_| {}).await;
    let admin = t.node.admin_token.clone();
    let first = t.signed_up(&phone(9101)).await;
    let before = access(&first);
    let (_, kids) = jwks_kids(&t).await;
    let old_kid = kid_of(&before);
    assert_eq!(kids, vec![old_kid.clone()]);

    let r = rotate(&t, "signing", &admin, "rotate-signing-1").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!((r.body["key"].as_str(), r.body["generation"].as_u64()), (Some("signing"), Some(1)));
    let new_kid = r.body["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    // Published at once, newest first; still the old key signs until the activation (5 min).
    let (_, kids) = jwks_kids(&t).await;
    assert_eq!(kids, vec![new_kid.clone(), old_kid.clone()]);
    let r = refresh(&t, &refresh_token(&first)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(kid_of(&access(&r.body)), old_kid, "signed before the activation");

    t.advance(Duration::from_secs(300));
    let r = refresh(&t, &refresh_token(&r.body)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let after = access(&r.body);
    assert_eq!(kid_of(&after), new_kid, "signed after the activation");
    // Both verify: here, and with PyJWT against the served JWKS.
    assert_eq!(t.get("/v1/me", Some(&before)).await.status, 200);
    assert_eq!(t.get("/v1/me", Some(&after)).await.status, 200);
    let (jwks, _) = jwks_kids(&t).await;
    let user = first["user"]["id"].as_str().unwrap();
    if let Some(lines) = pyjwt(&jwks, &[&before, &after]).await {
        assert_eq!(lines, vec![format!("ok {old_kid} {user}"), format!("ok {new_kid} {user}")]);
    }

    // The token signed before the rotation lives its 15 minutes, not a second more.
    t.advance(Duration::from_secs(599));
    assert_eq!(t.get("/v1/me", Some(&before)).await.status, 200, "until its expiry");
    t.advance(Duration::from_secs(1));
    let r = t.get("/v1/me", Some(&before)).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "{}", r.raw);
    assert_eq!(r.body["detail"], "the access token has expired", "{}", r.raw);
    // The old key stays published until the last token it could sign (at the activation) has
    // expired, plus the 60 s margin; then it leaves.
    t.advance(Duration::from_secs(300 + 59));
    assert_eq!(jwks_kids(&t).await.1, vec![new_kid.clone(), old_kid.clone()]);
    t.advance(Duration::from_secs(1));
    let (jwks, kids) = jwks_kids(&t).await;
    assert_eq!(kids, vec![new_kid.clone()]);
    if let Some(lines) = pyjwt(&jwks, &[&before]).await {
        assert!(lines[0].starts_with(&format!("fail Exception no key {old_kid}")), "{lines:?}");
    }

    // Audited, with which key and never the key.
    let r = t.ops_get("/v1/admin/audit?trace_id=rotate-signing-1", Some(&admin)).await;
    let events = r.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", r.raw);
    assert_eq!(events[0]["api"], "key_rotation");
    assert_eq!(events[0]["outcome"], "ok");
    assert_eq!(events[0]["message"], "signing key rotated by an operator");

    // The key file on disk holds no key in clear.
    // The generation is a file of the data directory (what a restart reads), sealed: the
    // PKCS#8 header of an Ed25519 key is not in it.
    let stored = std::fs::read(t.dir.path().join("secrets/keys/signing-00000001.key")).unwrap();
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    let sealed: Vec<u8> = stored["sealed"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
    assert_eq!(sealed.len(), 12 + 83 + 16, "nonce, PKCS#8 v2 of an Ed25519 key (83 bytes), tag");
    assert!(!sealed.windows(5).any(|w| w == [0x30, 0x51, 0x02, 0x01, 0x01]), "PKCS#8 in clear");
    t.node.shutdown().await;
}

#[tokio::test]
async fn a_rotated_admin_token_overlaps_the_old_one_then_the_old_one_is_refused() {
    let t = start_node_with(|c| c.secrets.admin_token_overlap = otpd::config::Dur(Duration::from_secs(3600))).await;
    let old = t.node.admin_token.clone();
    let r = rotate(&t, "admin", &old, "rotate-admin-1").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let new = r.body["admin_token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(r.body["previous_admin_token_until"].is_string(), "{}", r.raw);
    // The node's generated token file holds the newest (what `otpd audit` and `otpd keys` read).
    let file = std::fs::read_to_string(t.dir.path().join("secrets/admin.token")).unwrap();
    assert_eq!(file.trim(), new);
    for token in [&old, &new] {
        assert_eq!(t.ops_get("/v1/admin/stats", Some(token)).await.status, 200, "both during the overlap");
    }
    t.advance(Duration::from_secs(3599));
    assert_eq!(t.ops_get("/v1/admin/stats", Some(&old)).await.status, 200);
    t.advance(Duration::from_secs(1));
    let r = t.ops_get("/v1/admin/stats", Some(&old)).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.raw);
    assert_eq!(t.ops_get("/v1/admin/stats", Some(&new)).await.status, 200);
    // A bad request is a 400 problem, audited as a refusal; an unknown key kind too.
    for body in [json!({ "key": "hash" }), json!({ "key": "signing", "x": 1 }), json!([])] {
        let resp =
            t.client.post(t.ops_url("/v1/admin/keys/rotate")).bearer_auth(&new).json(&body).send().await.unwrap();
        let r = crate::support::into_reply(resp).await;
        assert_eq!(r.status, 400, "{body}: {}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let r = t.ops_get("/v1/admin/audit?trace_id=rotate-admin-1", Some(&new)).await;
    assert_eq!(r.body["events"][0]["message"], "admin token rotated by an operator", "{}", r.raw);
    // The token itself is nowhere in the trail's answer.
    assert!(!r.raw.contains(&new));
    t.node.shutdown().await;
}

#[tokio::test]
async fn the_schedule_rotates_the_signing_key_every_period() {
    let t = start_node_with(|c| {
        c.tokens.rotate_every = otpd::config::Dur(Duration::from_secs(3600));
        c.tokens.keys_poll_interval = otpd::config::Dur(Duration::from_millis(50));
    })
    .await;
    let wait_for = |n: usize| {
        let t = &t;
        async move {
            for _ in 0..200 {
                if jwks_kids(t).await.1.len() == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the JWKS never had {n} keys: {:?}", jwks_kids(t).await.1);
        }
    };
    // Turned on: the first check rotates (generation 0's age is unknown).
    wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jwks_kids(&t).await.1.len(), 2, "not again before the period");
    t.advance(Duration::from_secs(3600));
    // Generation 0 retired long ago (its successor activated over 15 min before): 1 and 2.
    wait_for(2).await;
    let kids = jwks_kids(&t).await.1;
    t.advance(Duration::from_secs(300));
    let token = access(&t.signed_up(&phone(9102)).await);
    assert_eq!(kid_of(&token), kids[0], "the newest signs once active");
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_scylla_store_pick_up_each_others_rotation() {
    crate::scylla::with_kassandra(|cql| async move {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("jwt.pk8");
        {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            std::fs::write(&key_file, der.as_ref()).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        let clock = std::sync::Arc::new(otpd_actors::rules::clock::ManualClock::new(
            otpd_actors::rules::clock::Timestamp::system_now(),
        ));
        let shared = move |c: &mut otpd::config::Config| {
            c.store.kind = "scylla".into();
            c.scylla = crate::scylla::kassandra_config(cql, "otpd_keys");
            c.secrets.hash_key = Some(otpd::config::Secret("ab".repeat(32)));
            c.secrets.admin_token = Some(otpd::config::Secret("an-admin-token-for-both-nodes".into()));
            c.tokens.signing_key_file = Some(key_file.clone());
            c.tokens.keys_poll_interval = otpd::config::Dur(Duration::from_millis(50));
        };
        let a = start_node_on(clock.clone(), shared.clone()).await;
        let b = start_node_on(clock.clone(), shared).await;
        let base_kid = jwks_kids(&a).await.1;
        assert_eq!(base_kid, jwks_kids(&b).await.1, "one configured key");

        let r = rotate(&a, "signing", "an-admin-token-for-both-nodes", "rotate-on-a").await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let new_kid = r.body["kid"].as_str().unwrap().to_owned();
        // B reads the store within its poll interval, without a restart.
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen = jwks_kids(&b).await.1;
            if seen.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(seen, vec![new_kid.clone(), base_kid[0].clone()]);
        // A token B signs after the activation carries the new kid and verifies on A.
        clock.advance(Duration::from_secs(300));
        let tokens = b.signed_up(&phone(9103)).await;
        assert_eq!(kid_of(&access(&tokens)), new_kid);
        assert_eq!(a.get("/v1/me", Some(&access(&tokens))).await.status, 200);

        // An admin token rotated on B is accepted by A.
        let r = rotate(&b, "admin", "an-admin-token-for-both-nodes", "rotate-admin-on-b").await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let new_admin = r.body["admin_token"].as_str().unwrap().to_owned();
        let mut status = 0;
        for _ in 0..200 {
            status = a.ops_get("/v1/admin/stats", Some(&new_admin)).await.status;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(status, 200, "node A never accepted the admin token rotated on B");

        // The vault contract, on the same server (its own keyspace).
        let config = crate::scylla::kassandra_config(cql, "otpd_vault");
        let store = otpd::store::scylla::ScyllaStore::connect(&otpd::store::scylla::ScyllaOptions {
            config,
            session_ttl: Duration::from_secs(3600),
            audit_retention: Duration::from_secs(86_400),
        })
        .await
        .unwrap();
        otpd::keyring::vault_conformance(&*store).await;
        a.node.shutdown().await;
        b.node.shutdown().await;
    })
    .await;
}

/// The real binary: `otpd keys rotate` and `otpd keys rotate --admin-token` against a running
/// node whose ops listener serves HTTPS (the chain file carries its private CA), then a second
/// rotation with the admin token the node rewrote into its data directory.
#[tokio::test]
async fn the_keys_command_rotates_through_the_ops_listener_over_https() {
    if !has_tools("the_keys_command_rotates_through_the_ops_listener_over_https", &["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (cert, key) = crate::support::test_cert(dir.path(), "ca", "ops");
    let chain = dir.path().join("ops-chain.pem");
    let mut pem = std::fs::read(&cert).unwrap();
    pem.extend(std::fs::read(dir.path().join("ca.pem")).unwrap());
    std::fs::write(&chain, pem).unwrap();
    let (http, ops) = (crate::support::reserved_port(), crate::support::reserved_port());
    let env = [
        ("OTPD_NODE__DATA_DIR", data.display().to_string()),
        ("OTPD_HTTP__LISTEN", format!("127.0.0.1:{http}")),
        ("OTPD_ADMIN__LISTEN", format!("127.0.0.1:{ops}")),
        ("OTPD_ADMIN__TLS_CERT_FILE", chain.display().to_string()),
        ("OTPD_ADMIN__TLS_KEY_FILE", key.display().to_string()),
        ("OTPD_TOKENS__KEY_ACTIVATION_DELAY", "0s".into()),
        ("OTPD_NODE__LOG_LEVEL", "warn".into()),
    ];
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .envs(env.clone())
        .env_remove("OTPD_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let jwks = format!("http://127.0.0.1:{http}/.well-known/jwks.json");
    let mut up = false;
    for _ in 0..500 {
        if client.get(&jwks).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "otpd did not start");
    let keys = |args: &'static [&'static str]| {
        let env = env.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
                .arg("keys")
                .args(args)
                .envs(env)
                .env_remove("OTPD_CONFIG")
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (ok, out, err) = keys(&["rotate"]).await;
    assert!(ok && out.starts_with("signing key generation 1 (kid "), "{out}{err}");
    let body: Value = client.get(&jwks).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["keys"].as_array().unwrap().len(), 2, "{body}");
    let (ok, out, err) = keys(&["rotate", "--admin-token"]).await;
    assert!(ok && out.starts_with("admin token generation 1: "), "{out}{err}");
    let token = out.lines().next().unwrap().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(std::fs::read_to_string(data.join("secrets/admin.token")).unwrap().trim(), token);
    // The command reads the rewritten token file: a second rotation works.
    let (ok, out, err) = keys(&["rotate"]).await;
    assert!(ok && out.starts_with("signing key generation 2 (kid "), "{out}{err}");
    node.kill().unwrap();
    node.wait().unwrap();
}
