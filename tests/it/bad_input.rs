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
    let r = into_reply(t.client.delete(t.url("/v1/me")).send().await.unwrap()).await;
    assert_problem(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
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
