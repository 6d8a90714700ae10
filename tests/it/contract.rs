//! The API contract: the served OpenAPI document is the committed one, and it describes the
//! router exactly (every documented operation is routed; every other method answers 405 with
//! an `Allow` header naming the documented ones). schemathesis checks the rest against a
//! running node (`scripts/contract.sh`).

use otpd::http::openapi;
use otpd::http::table::{Exposure, ROUTES};
use reqwest::Method;

use crate::support::*;

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let t = start_node().await;
    let resp = t.client.get(t.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served = resp.bytes().await.unwrap();
    assert_eq!(&served[..], &openapi::json()[..]);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let committed = std::fs::read(path).expect("docs/openapi.json is committed");
    assert!(
        served[..] == committed[..],
        "docs/openapi.json is not the document the node serves: regenerate it with \
         `cargo run -- openapi > docs/openapi.json` and commit it"
    );
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "00000000-0000-0000-0000-000000000000")
}

/// A path's URL on the listener that serves it: the ops routes on the ops listener, the rest
/// on the public one.
fn url_of(t: &TestNode, path: &str) -> String {
    let ops = ROUTES.iter().any(|r| r.path == path && r.exposure == Exposure::Ops);
    if ops { t.ops_url(&concrete(path)) } else { t.url(&concrete(path)) }
}

/// Every documented operation reaches its handler and answers one of its documented statuses
/// (without credentials or a body: a refusal, but the operation's own).
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let t = start_node().await;
    for op in ROUTES {
        let method = Method::from_bytes(op.method.to_uppercase().as_bytes()).unwrap();
        let r = into_reply(t.client.request(method.clone(), url_of(&t, op.path)).send().await.unwrap()).await;
        assert!(!["not_found", "method_not_allowed"].contains(&r.code()), "{} {}: {}", op.method, op.path, r.raw);
        let mut documented: Vec<u16> = op.replies.iter().map(|r| r.status).collect();
        documented.extend(op.problem_codes().iter().filter_map(|c| otpd::http::problem::kind_of(c)).map(|k| k.status));
        assert!(documented.contains(&r.status), "{} {} answered {}: {}", op.method, op.path, r.status, r.raw);
        assert!(r.header("x-request-id").is_some());
        if op.method == "get" {
            let head = t.client.head(url_of(&t, op.path)).send().await.unwrap();
            assert_eq!(head.status().as_u16(), r.status, "HEAD {} answers like GET", op.path);
        }
        if op.exposure == Exposure::Ops {
            let public = into_reply(t.client.request(method, t.url(&concrete(op.path))).send().await.unwrap()).await;
            assert_eq!(
                (public.status, public.code()),
                (404, "not_found"),
                "{} {} on the public listener",
                op.method,
                op.path
            );
        }
    }
}

/// Any other method answers 405 with `Allow` listing exactly the documented methods; any other
/// path answers 404.
#[tokio::test]
async fn undocumented_methods_and_paths_are_refused() {
    let t = start_node().await;
    let mut paths: Vec<&str> = ROUTES.iter().map(|o| o.path).collect();
    paths.dedup();
    for path in paths {
        let mut allowed: Vec<String> =
            ROUTES.iter().filter(|o| o.path == path).map(|o| o.method.to_uppercase()).collect();
        allowed.sort();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if allowed.iter().any(|m| m == method) {
                continue;
            }
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let r = into_reply(t.client.request(m, url_of(&t, path)).send().await.unwrap()).await;
            assert_eq!((r.status, r.code()), (405, "method_not_allowed"), "{method} {path}: {}", r.raw);
            let mut allow: Vec<String> =
                r.header("allow").unwrap_or_default().split(',').map(|m| m.trim().to_owned()).collect();
            allow.sort();
            assert_eq!(allow, allowed, "Allow of {path}");
        }
    }
    for path in ["/", "/v1", "/v1/unknown", "/v2/login", "/openapi.yaml", "/health"] {
        let r = t.get(path, None).await;
        assert_eq!((r.status, r.code()), (404, "not_found"), "{path}");
    }
}

#[test]
fn the_committed_reference_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api-reference.md");
    let committed = std::fs::read_to_string(path).expect("docs/api-reference.md is committed");
    assert!(
        committed == openapi::markdown(),
        "docs/api-reference.md is out of date: regenerate it with \
         `cargo run -- openapi --markdown > docs/api-reference.md` and commit it"
    );
}

/// The error page names every problem code a client can meet.
#[test]
fn the_errors_page_lists_every_problem_code() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.md")).unwrap();
    for kind in otpd::http::problem::CATALOGUE.iter().filter(|k| k.code != "internal") {
        let prefix = format!("| {} | ", kind.status);
        let code = format!("`{}`", kind.code);
        let listed =
            readme.lines().any(|l| l.starts_with(&prefix) && l.split('|').nth(2).is_some_and(|c| c.contains(&code)));
        assert!(listed, "docs/errors.md lacks `{}` under {}", kind.code, kind.status);
    }
}

/// The `authorization` fuzz target starts from a token its fixed key signed
/// (`fuzz/seeds/make_seeds.py`): it must verify, or the fuzzer never reaches the claims.
#[test]
fn the_fuzz_seed_token_verifies() {
    use otpd::secrets::SigningKey;
    use otpd::tokens::TokenService;
    use otpd_actors::rules::clock::Timestamp;
    let mut pkcs8 =
        vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    pkcs8.extend_from_slice(&[7; 32]);
    let service = TokenService::new(&SigningKey::Ed25519(pkcs8), &otpd::config::Config::default().tokens).unwrap();
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/authorization/valid_bearer"))
        .expect("the seed is committed");
    let token = seed.strip_prefix("Bearer ").unwrap();
    let claims = service.verify(token, Timestamp::from_millis(1_700_000_000_000)).expect("the seed token verifies");
    assert_eq!(claims.iat, 1_700_000_000);
}
