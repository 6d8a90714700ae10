//! Hostile and malformed requests: each gets a 4xx problem+json, never a 5xx or a crash.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn assert_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    assert_eq!(r.code(), code, "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.body["status"], status);
    assert_eq!(r.body["type"], format!("urn:otpd:problem:{code}"));
    assert!(r.body["title"].is_string() && r.body["detail"].is_string() && r.body["trace_id"].is_string());
}

fn assert_security_headers(r: &Reply) {
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(r.header("content-security-policy").unwrap().contains("default-src 'none'"));
    assert!(r.header("x-request-id").is_some());
}

async fn raw_post(t: &TestNode, path: &str, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> Reply {
    let mut req = t.client.post(t.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    into_reply(req.send().await.unwrap()).await
}

#[tokio::test]
async fn malformed_json_wrong_types_missing_and_extra_fields() {
    let t = start_node().await;
    let json_ct = Some("application/json");
    for body in ["", "{", "not json", "[1,2", "{\"phone\": \"+12025550123\",}", "\u{0}\u{1}"] {
        let r = raw_post(&t, "/v1/login", json_ct, body).await;
        assert_problem(&r, 400, "invalid_json");
    }
    let cases = [
        ("/v1/login", json!({ "phone": 12025550123u64 })),
        ("/v1/login", json!({ "phone": ["+12025550123"] })),
        ("/v1/login", json!([])),
        ("/v1/login", json!("phone")),
        ("/v1/login", json!({ "phone": "+12025550123", "admin": true })),
        ("/v1/register", json!({ "phone": "+12025550123" })),
        ("/v1/register", json!({ "phone": "+12025550123", "first_name": 1, "last_name": "x" })),
        ("/v1/login/verify", json!({ "phone": "+12025550123" })),
        ("/v1/login/verify", json!({ "phone": "+12025550123", "code": 123456 })),
        ("/v1/otp/resend", json!({ "phone": "+12025550123", "purpose": "reset" })),
        ("/v1/otp/resend", json!({ "phone": "+12025550123" })),
    ];
    for (path, body) in cases {
        let r = t.post(path, body.clone()).await;
        assert_problem(&r, 400, "invalid_request");
        assert!(!r.body["detail"].as_str().unwrap().is_empty(), "{path} {body}");
    }
}

/// A malformed request's refusal names the field and the problem; neither the answer nor the
/// audit trail (through the admin API and in the store's files) holds a value it carried.
#[tokio::test]
async fn refusals_and_their_audit_events_hold_no_input_value() {
    // Every refusal written (not aggregated), so that every one is searched.
    let t = start_node_with(|c| c.engine.audit_refusal_window = otpd::config::Dur(Duration::ZERO)).await;
    let (code, digits, email) = ("918273", "12025550177", "leak.918273@example.com");
    let bodies = [
        format!(r#"{{"phone":"+{digits}","code":{code}}}"#),
        format!(r#"{{"phone":{digits}}}"#),
        format!(r#"{{"email":["{email}"]}}"#),
        format!(r#"{{"phone":"+{digits}","code":"{code}","x{code}":"{email}"}}"#),
        format!(r#"{{"phone":"+{digits}","code":"{code}""#),
        format!(r#"{{"phone":"+{digits}" "code":"{code}"}}"#),
        format!(r#"{{"purpose":"{code}","phone":"+{digits}"}}"#),
    ];
    let paths = [
        "/v1/login/verify",
        "/v1/login",
        "/v1/login",
        "/v1/login/verify",
        "/v1/login/verify",
        "/v1/login",
        "/v1/otp/resend",
    ];
    for (i, (path, body)) in paths.iter().zip(&bodies).enumerate() {
        let r = t
            .client
            .post(t.url(path))
            .header("content-type", "application/json")
            .header("x-request-id", format!("leak-{i}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let r = into_reply(r).await;
        assert_eq!(r.status, 400, "{body}: {}", r.raw);
        for value in [code, digits, email] {
            assert!(!r.raw.contains(value), "{body}: the answer quotes {value}: {}", r.raw);
        }
    }
    let mut trail = String::new();
    for i in 0..bodies.len() {
        let url = format!("/v1/admin/audit?trace_id=leak-{i}");
        // A refusal's event is written after its answer (`Engine::record_rejection` appends
        // later, off the request): wait for it, at most 5 s.
        let mut r = t.ops_get(&url, Some(&t.node.admin_token)).await;
        for _ in 0..100 {
            if r.body["events"].as_array().is_some_and(|e| !e.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            r = t.ops_get(&url, Some(&t.node.admin_token)).await;
        }
        assert_eq!(r.body["events"].as_array().map(Vec::len), Some(1), "leak-{i} is audited once: {}", r.raw);
        assert_eq!(r.body["events"][0]["step"], "parse");
        trail.push_str(&r.raw);
    }
    for value in [code, digits, email] {
        assert!(!trail.contains(value), "the audit trail quotes {value}: {trail}");
    }
    t.node.shutdown().await;
    for file in crate::flows::files_under(&t.dir.path().join("store")) {
        let bytes = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        for value in [code, digits, email] {
            assert!(!bytes.contains(value), "{} holds {value}", file.display());
        }
    }
}

#[tokio::test]
async fn field_rules_are_explained() {
    let t = start_node().await;
    let cases = [
        ("/v1/login", json!({}), "invalid_request", "phone or email is required"),
        ("/v1/login", json!({ "phone": "+12025550123", "email": "a@example.com" }), "invalid_request", "not both"),
        (
            "/v1/register",
            json!({ "phone": "+12025550123", "first_name": " ", "last_name": "x" }),
            "invalid_request",
            "first_name",
        ),
        (
            "/v1/register",
            json!({ "phone": "+12025550123", "first_name": "x", "last_name": "y".repeat(101) }),
            "invalid_request",
            "last_name",
        ),
        ("/v1/login/verify", json!({ "phone": "+12025550123", "code": "12345é" }), "invalid_request", "code"),
        ("/v1/login/verify", json!({ "phone": "+12025550123", "code": "1".repeat(33) }), "invalid_request", "code"),
    ];
    for (path, body, code, needle) in cases {
        let r = t.post(path, body).await;
        assert_problem(&r, 400, code);
        assert!(r.body["detail"].as_str().unwrap().contains(needle), "{}", r.raw);
    }
}

#[tokio::test]
async fn invalid_phone_numbers_and_emails() {
    let t = start_node().await;
    for phone in
        ["", "abc", "+1", "+12025550123456789", "+0123456789", "+15555550100", "12", "☎️ 555", &"9".repeat(1000)]
    {
        let r = t.post("/v1/login", json!({ "phone": phone })).await;
        assert_problem(&r, 400, "invalid_phone");
    }
    for email in
        ["", "plain", "a@", "@b.com", "a@localhost", "a b@c.com", "\"q\"@c.com", &format!("{}@x.com", "a".repeat(300))]
    {
        let r = t.post("/v1/login", json!({ "email": email })).await;
        assert_problem(&r, 400, "invalid_email");
    }
}

#[tokio::test]
async fn wrong_content_type_oversized_bodies_unknown_paths_and_methods() {
    let t = start_node().await;
    let body = json!({ "phone": "+12025550123" }).to_string();
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx")] {
        let r = raw_post(&t, "/v1/login", ct, body.clone()).await;
        assert_problem(&r, 415, "unsupported_media_type");
    }

    // Over the 16 KiB default, with and without a Content-Length.
    let big = json!({ "phone": "+12025550123", "pad": "x".repeat(17 * 1024) }).to_string();
    let r = raw_post(&t, "/v1/login", Some("application/json"), big.clone()).await;
    assert_problem(&r, 413, "payload_too_large");
    // Chunked, so the limit is found while reading rather than from the header.
    let mut req = String::from(
        "POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for chunk in big.as_bytes().chunks(1000) {
        req.push_str(&format!("{:x}\r\n{}\r\n", chunk.len(), String::from_utf8_lossy(chunk)));
    }
    req.push_str("0\r\n\r\n");
    let head = raw_exchange(&t, req.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");

    let r = t.get("/v1/nothing-here", None).await;
    assert_problem(&r, 404, "not_found");
    assert_security_headers(&r);
    let r = t.get("/v1/login", None).await;
    assert_problem(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = into_reply(t.client.put(t.url("/v1/me")).send().await.unwrap()).await;
    assert_problem(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("DELETE, GET"));
    let r = into_reply(t.client.put(t.url("/v1/register")).json(&json!({})).send().await.unwrap()).await;
    assert_problem(&r, 405, "method_not_allowed");
}

/// Writes raw bytes and returns what the server answers (up to 8 KiB, 5 s).
async fn raw_exchange(t: &TestNode, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(t.node.addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.ok().and_then(|r| r.ok()).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let t = start_node().await;
    let ok = t.post("/v1/login", json!({ "phone": phone(500) })).await;
    assert_eq!(ok.status, 202);
    assert_security_headers(&ok);
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    let err = t.post("/v1/login", json!({ "phone": "bad" })).await;
    assert_security_headers(&err);
    let live = t.get("/health/live", None).await;
    assert_eq!(live.status, 200);
    assert_security_headers(&live);
}

#[tokio::test]
async fn garbage_on_the_socket_does_not_hurt_the_node() {
    let t = start_node().await;
    let junk: [&[u8]; 5] = [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: \xff\xfe\r\n\r\n",
    ];
    for bytes in junk {
        let head = raw_exchange(&t, bytes).await;
        assert!(!head.starts_with("HTTP/1.1 5"), "server error for {bytes:?}: {head}");
    }
    // A client that connects and says nothing is dropped after the header timeout; meanwhile
    // the node serves others.
    let _idle = tokio::net::TcpStream::connect(t.node.addr).await.unwrap();
    let r = t.post("/v1/login", json!({ "phone": phone(501) })).await;
    assert_eq!(r.status, 202);
    assert_eq!(t.get("/health/live", None).await.status, 200);
}

/// A flood of refusals from one client costs two audit writes per kind and window: the first
/// refusal, then one summary with the count.
#[tokio::test]
async fn a_flood_of_refusals_is_aggregated_in_the_audit_trail() {
    let t = start_node().await;
    let send = |i: usize, body: String| {
        let req = t
            .client
            .post(t.url("/v1/login"))
            .header("content-type", "application/json")
            .header("x-request-id", format!("flood-{i}"))
            .body(body);
        async move { into_reply(req.send().await.unwrap()).await }
    };
    for i in 0..300 {
        assert_eq!(send(i, "{not json".into()).await.status, 400);
    }
    // Rate-limit denials too: one number, again and again, inside its cooldown.
    let p = phone(9911);
    for i in 300..400 {
        let r = send(i, format!(r#"{{"phone":"{p}"}}"#)).await;
        assert_eq!(r.status, if i == 300 { 202 } else { 429 }, "{}", r.raw);
    }
    let log = t.node.engine.audit_log();
    let mut written = Vec::new();
    for i in 0..400 {
        let events = log.by_trace(&format!("flood-{i}"), 10).await.unwrap();
        if !events.is_empty() {
            written.push(i);
        }
    }
    assert_eq!(written, vec![0, 300, 301], "the first of each kind (and the one login that was served)");
    // The window ends: one summary per kind, with its count.
    t.advance(Duration::from_secs(61));
    let mut summaries = Vec::new();
    for _ in 0..300 {
        summaries = log.by_trace("refusals", 10).await.unwrap();
        if summaries.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen: Vec<(String, String, String)> =
        summaries.iter().map(|e| (e.step.as_str().into(), e.outcome.as_str().into(), e.message.to_string())).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "limit".into(),
                "limited".into(),
                "98 more refused like this from this client in the window of the first".into()
            ),
            (
                "parse".into(),
                "rejected".into(),
                "299 more refused like this from this client in the window of the first".into()
            ),
        ]
    );
    assert!(summaries.iter().all(|e| e.client_ip == Some("127.0.0.1".parse().unwrap()) && e.ident_hash.is_none()));
}
