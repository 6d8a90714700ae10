//! What SREs see: `/metrics`, readiness, the admin stats, the logs, and the `deploy/` files.
//!
//! Tests that read metric values run in a process of their own ([`isolated`]): the metrics
//! recorder is process-wide, and other tests' nodes would add to the numbers. Prometheus's
//! own tools (`promtool`, the `prometheus` server, Debian's `prometheus` package that
//! `scripts/test.sh` installs) check the exposition, the rules and the scrape config, and a
//! real Prometheus scrapes a running otpd; without them those tests say they skipped and why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use otpd::config::Dur;
use serde_json::{Value, json};

use crate::delivery::{code_in, use_twilio, use_webhook};
use crate::devices::{self, Key};
use crate::fake_provider::{FakeProvider, Fault};
use crate::sessions::{access, post_bearer, refresh, refresh_token};
use crate::support::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Scrapes a node's ops listener.
struct Scraper {
    client: reqwest::Client,
    url: String,
}

impl Scraper {
    fn of(t: &TestNode) -> Scraper {
        Scraper { client: reqwest::Client::new(), url: t.ops_url("/metrics") }
    }

    async fn scrape(&self) -> Exposition {
        scrape(&self.client, &self.url).await
    }

    /// Scrapes until `done` holds (gauges are sampled every `admin.refresh_interval`, and
    /// deliveries finish after the request); at most 10 s.
    async fn settle(&self, what: &str, done: impl Fn(&Exposition) -> bool) -> Exposition {
        for _ in 0..500 {
            let e = self.scrape().await;
            if done(&e) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let e = self.scrape().await;
        let otpd: Vec<&str> = e.text.lines().filter(|l| l.starts_with("otpd_") && !l.contains("_bucket")).collect();
        panic!("never saw {what}; last exposition:\n{}", otpd.join("\n"));
    }
}

/// The newest code Twilio (the fake) was asked to send to `to`, waiting for the `n`-th
/// message to that number.
async fn sms_code(twilio: &FakeProvider, to: &str, n: usize) -> String {
    for _ in 0..500 {
        let bodies: Vec<String> = twilio
            .requests()
            .iter()
            .filter(|r| r.form("To").as_deref() == Some(to))
            .filter_map(|r| r.form("Body"))
            .collect();
        if bodies.len() >= n {
            return code_in(&bodies[n - 1]);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no message {n} to {to}");
}

fn register_body(phone: &str) -> Value {
    json!({ "phone": phone, "first_name": "Ada", "last_name": "Lovelace" })
}

#[tokio::test]
async fn every_metric_family_appears_after_the_traffic_that_produces_it() {
    if !isolated("observability::every_metric_family_appears_after_the_traffic_that_produces_it") {
        return;
    }
    let twilio = FakeProvider::start().await;
    let hook = FakeProvider::start().await;
    // The first message is reported delivered (Twilio calls back); no timeout failovers.
    twilio.receipts(
        crate::delivery::TOKEN,
        [Some(crate::fake_provider::Receipt { status: "delivered", error_code: None })],
    );
    let port = reserved_port();
    let t = start_node_with(|c| {
        use_twilio(c, &twilio);
        use_webhook(c, &hook);
        c.http.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.twilio.status_callback_url = format!("http://127.0.0.1:{port}/v1/delivery/twilio/status");
        c.delivery.receipt_timeout = Dur(Duration::ZERO);
        c.delivery.secondary = "webhook".into();
        c.delivery.breaker_failures = 2;
        c.delivery.breaker_open_for = Dur(Duration::from_secs(600));
        c.engine.shards = 8;
        c.admin.refresh_interval = Dur(Duration::from_millis(20));
        // Nine code checks below, none blocked: this test counts verdicts, not the guess budget.
        c.limits.identifier_guess.free = Some(10);
    })
    .await;
    let m = Scraper::of(&t);

    // At start: the node's own gauges, and the counters of fixed label sets, at zero.
    let s = m.settle("the first refresh", |s| s.sum("otpd_ready", &[]) == 1.0).await;
    assert_eq!(s.sum("otpd_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert!(s.sum("otpd_start_time_seconds", &[]) > 1.6e9);
    assert_eq!(s.sum("otpd_delivery_queue_capacity", &[]), 10_000.0);
    assert!(s.has("otpd_limiter_redis_fallback_active"));
    assert_eq!(s.sum("otpd_limiter_redis_fallback_active", &[]), 0.0);
    for dependency in ["store", "limiter", "delivery"] {
        assert_eq!(s.sum("otpd_dependency_up", &[("dependency", dependency)]), 1.0, "{dependency}");
    }
    for (provider, state, v) in [("twilio", "closed", 1.0), ("twilio", "open", 0.0), ("webhook", "closed", 1.0)] {
        assert_eq!(s.sum("otpd_delivery_breaker_state", &[("provider", provider), ("state", state)]), v);
    }
    assert_eq!(s.matching("otpd_otp_codes_issued_total", &[]).count(), 4, "purpose × channel, registered at zero");
    assert_eq!(s.sum("otpd_otp_codes_issued_total", &[]), 0.0);
    assert_eq!(s.matching("otpd_challenges_live", &[]).count(), 8, "one per shard");
    assert_eq!((s.sum("otpd_users", &[]), s.sum("otpd_sessions_active", &[])), (0.0, 0.0));
    assert_eq!(s.sum("otpd_actor_restarts_total", &[]), 0.0);
    assert_eq!(s.sum("otpd_http_requests_total", &[("route", "/v1/register")]), 0.0);
    assert!(s.sum("otpd_http_connections_open", &[("listener", "admin")]) >= 1.0, "this scrape's connection");
    assert!(s.sum("otpd_http_requests_in_flight", &[]) >= 1.0, "this scrape is in flight");

    // A registration: HTTP, limiter, code issued, delivery through Twilio, store, census.
    let a = phone(7001);
    assert_eq!(t.post("/v1/register", register_body(&a)).await.status, 202);
    let code = sms_code(&twilio, &a, 1).await;
    let s = m
        .settle("the registration's delivery, its receipt and gauges", |s| {
            s.sum("otpd_delivery_messages_total", &[("outcome", "delivered")]) == 1.0
                && s.sum("otpd_challenges_pending", &[]) == 1.0
                && s.sum("otpd_delivery_receipts_total", &[("status", "delivered")]) == 1.0
        })
        .await;
    assert_eq!(s.sum("otpd_delivery_receipts_total", &[("status", "sent"), ("country", "1")]), 1.0);
    assert_eq!(s.sum("otpd_delivery_time_to_delivered_seconds_count", &[("provider", "twilio")]), 1.0);
    assert_eq!(s.matching("otpd_delivery_receipt_failovers_total", &[]).count(), 3, "every reason, at zero");
    let one = |name: &str, labels: &[(&str, &str)]| assert_eq!(s.sum(name, labels), 1.0, "{name} {labels:?}");
    one("otpd_http_requests_total", &[("route", "/v1/register"), ("method", "POST"), ("status", "2xx")]);
    one("otpd_http_request_duration_seconds_count", &[("route", "/v1/register")]);
    one("otpd_http_request_duration_seconds_bucket", &[("route", "/v1/register"), ("le", "+Inf")]);
    one("otpd_otp_codes_issued_total", &[("purpose", "register"), ("channel", "sms")]);
    one("otpd_limiter_decisions_total", &[("action", "send"), ("rule", "none"), ("outcome", "allowed")]);
    one("otpd_limiter_check_duration_seconds_count", &[]);
    one("otpd_delivery_enqueued_total", &[("result", "accepted")]);
    one("otpd_delivery_sends_total", &[("provider", "twilio"), ("outcome", "delivered")]);
    one("otpd_delivery_messages_total", &[("channel", "sms"), ("outcome", "delivered")]);
    one("otpd_delivery_batch_size_count", &[("provider", "twilio")]);
    one("otpd_delivery_provider_duration_seconds_count", &[("provider", "twilio")]);
    // The account's read and its decoy (equal work whether the account exists).
    let reads = s.sum(
        "otpd_store_operation_duration_seconds_count",
        &[("store", "embedded"), ("operation", "user_by_identifier")],
    );
    assert_eq!(reads, 2.0);
    // A registration writes no account: its code does, when it verifies.
    assert_eq!(s.sum("otpd_store_operation_duration_seconds_count", &[("operation", "insert_user")]), 0.0);
    assert_eq!(s.sum("otpd_users", &[]), 0.0);
    assert_eq!(s.sum("otpd_delivery_queue_depth", &[]), 0.0, "delivered: nothing queued");
    assert!(s.sum("otpd_store_operation_duration_seconds_count", &[("operation", "audit_append")]) >= 1.0);
    assert!(s.sum("otpd_store_group_commit_batch_size_count", &[]) >= 1.0, "the audit appends");
    assert!(s.sum("otpd_store_commit_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(s.sum("otpd_challenges_live", &[]), 1.0);
    assert_eq!(s.sum("otpd_users_verified", &[]), 0.0);

    // Verification: wrong, right, again (used); tokens; verified users and sessions.
    let verify = |phone: String, code: String| {
        let t = &t;
        async move { t.post("/v1/register/verify", json!({ "phone": phone, "code": code })).await }
    };
    assert_eq!(verify(a.clone(), wrong_code(&code)).await.status, 400);
    let tokens = verify(a.clone(), code.clone()).await;
    assert_eq!(tokens.status, 200, "{}", tokens.raw);
    assert_eq!(verify(a.clone(), code.clone()).await.status, 400);
    let s = m
        .settle("a verified user and a session", |s| {
            s.sum("otpd_users_verified", &[]) == 1.0 && s.sum("otpd_sessions_active", &[]) == 1.0
        })
        .await;
    assert_eq!(s.sum("otpd_users", &[]), 1.0);
    let inserts =
        s.sum("otpd_store_operation_duration_seconds_count", &[("store", "embedded"), ("operation", "insert_user")]);
    assert_eq!(inserts, 1.0, "the verified code created the account");
    for outcome in ["wrong", "ok", "used"] {
        assert_eq!(s.sum("otpd_otp_verifications_total", &[("purpose", "register"), ("outcome", outcome)]), 1.0);
    }
    assert_eq!(s.sum("otpd_tokens_issued_total", &[("method", "otp")]), 1.0);
    assert_eq!(s.sum("otpd_limiter_decisions_total", &[("action", "verify"), ("outcome", "allowed")]), 3.0);

    // Logins: an unknown number (enumeration-safe, nothing issued), no code pending, four
    // wrong codes and a fifth that burns it, an expired code, a resend, a cooldown.
    let unknown = phone(7002);
    assert_eq!(t.post("/v1/login", json!({ "phone": unknown })).await.status, 202);
    let login_verify = |code: String| {
        let (t, a) = (&t, a.clone());
        async move { t.post("/v1/login/verify", json!({ "phone": a, "code": code })).await }
    };
    assert_eq!(login_verify("123456".into()).await.code(), "no_pending_code");
    t.advance(Duration::from_secs(31));
    assert_eq!(t.post("/v1/login", json!({ "phone": a })).await.status, 202);
    let code = sms_code(&twilio, &a, 2).await;
    for _ in 0..5 {
        login_verify(wrong_code(&code)).await;
    }
    t.advance(Duration::from_secs(31));
    assert_eq!(t.post("/v1/otp/resend", json!({ "phone": a, "purpose": "login" })).await.status, 202);
    let r = t.post("/v1/otp/resend", json!({ "phone": a, "purpose": "login" })).await;
    assert_eq!((r.status, r.code()), (429, "resend_cooldown"));
    let code = sms_code(&twilio, &a, 3).await;
    t.advance(Duration::from_secs(301));
    assert_eq!(login_verify(code).await.code(), "code_expired");
    let s = m.scrape().await;
    let login = |outcome: &str| s.sum("otpd_otp_verifications_total", &[("purpose", "login"), ("outcome", outcome)]);
    assert_eq!(
        [login("unknown"), login("wrong"), login("blocked"), login("expired"), login("ok")],
        [1.0, 4.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(s.sum("otpd_otp_enumeration_safe_responses_total", &[("api", "login")]), 1.0);
    assert_eq!(s.sum("otpd_otp_codes_issued_total", &[("purpose", "login"), ("channel", "sms")]), 2.0);
    assert_eq!(s.sum("otpd_otp_resends_total", &[("purpose", "login")]), 1.0);
    assert_eq!(
        s.sum(
            "otpd_limiter_decisions_total",
            &[("action", "send"), ("rule", "resend_cooldown"), ("outcome", "denied")]
        ),
        1.0
    );
    assert_eq!(s.sum("otpd_http_requests_total", &[("route", "/v1/otp/resend"), ("status", "4xx")]), 1.0);

    // An e-mail address: the e-mail channel (the outbox).
    let email = "funnel@example.com";
    assert_eq!(
        t.post("/v1/register", json!({ "email": email, "first_name": "E", "last_name": "Mail" })).await.status,
        202
    );
    t.code_for(email).await;
    let s = m
        .settle("the e-mail's delivery", |s| s.sum("otpd_delivery_messages_total", &[("channel", "email")]) == 1.0)
        .await;
    assert_eq!(s.sum("otpd_otp_codes_issued_total", &[("purpose", "register"), ("channel", "email")]), 1.0);
    assert_eq!(s.sum("otpd_delivery_sends_total", &[("provider", "outbox"), ("outcome", "delivered")]), 1.0);

    // Sessions: refresh (ok, reused, invalid), logout, logout-all.
    let r = refresh(&t, &refresh_token(&tokens.body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(refresh(&t, &refresh_token(&tokens.body)).await.code(), "refresh_token_reused");
    assert_eq!(refresh(&t, "ort1.garbage").await.status, 401);
    let b = phone(7003);
    assert_eq!(t.post("/v1/register", register_body(&b)).await.status, 202);
    let first = verify(b.clone(), sms_code(&twilio, &b, 1).await).await.body;
    assert_eq!(post_bearer(&t, "/v1/logout", &access(&first)).await.status, 204);
    t.advance(Duration::from_secs(31));
    assert_eq!(t.post("/v1/login", json!({ "phone": b })).await.status, 202);
    let second = t.post("/v1/login/verify", json!({ "phone": b, "code": sms_code(&twilio, &b, 2).await })).await.body;
    assert_eq!(post_bearer(&t, "/v1/logout/all", &access(&second)).await.status, 200);
    // Personal data: a retention sweep finds those ended sessions, then an operator erases the
    // account (and the store's files are rewritten).
    t.advance(Duration::from_millis(1));
    let retention = otpd::config::RetentionConfig { ended_sessions: Dur(Duration::ZERO), ..Default::default() };
    let swept = t.node.sweep_retention(&retention).await;
    assert!(swept.sessions >= 2, "{swept:?}");
    let id = first["user"]["id"].as_str().unwrap();
    let erase = t.client.delete(t.ops_url(&format!("/v1/admin/users/{id}"))).bearer_auth(&t.node.admin_token);
    assert_eq!(into_reply(erase.send().await.unwrap()).await.status, 200);
    let s = m
        .settle("an erasure and its file rewrite", |s| {
            s.sum("otpd_accounts_erased_total", &[("by", "admin")]) == 1.0
                && s.sum("otpd_store_erasure_purges_total", &[("outcome", "ok")]) == 1.0
        })
        .await;
    assert_eq!(s.sum("otpd_retention_removed_total", &[("kind", "session")]), swept.sessions as f64);
    let s = m.scrape().await;
    for outcome in ["ok", "reused", "invalid"] {
        assert_eq!(s.sum("otpd_tokens_refreshed_total", &[("outcome", outcome)]), 1.0, "{outcome}");
    }
    for reason in ["refresh_token_reuse", "logout", "logout_all"] {
        assert_eq!(s.sum("otpd_sessions_revoked_total", &[("reason", reason)]), 1.0, "{reason}");
    }
    assert_eq!(s.sum("otpd_otp_verifications_total", &[("purpose", "login"), ("outcome", "ok")]), 1.0);

    // Devices: enrol after a fresh login by code, log in, a wrong signature, an unknown
    // device (enumeration-safe), then revoke the device with its session.
    let d = phone(7004);
    assert_eq!(t.post("/v1/register", register_body(&d)).await.status, 202);
    let owner = verify(d.clone(), sms_code(&twilio, &d, 1).await).await.body;
    let key = Key::p256();
    let device = devices::enrol(&t, &access(&owner), &key).await;
    let r = devices::device_login(&t, &device, &key).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let (nonce, _) = devices::challenge(&t, &device).await;
    assert_eq!(devices::verify(&t, &device, &nonce, &Key::p256().sign(b"not the message")).await.status, 400);
    devices::challenge(&t, "0192f0c4-1c7e-7f00-8000-000000000000").await;
    assert_eq!(devices::delete(&t, &format!("/v1/devices/{device}"), &access(&owner)).await.status, 204);
    let s = m.scrape().await;
    assert_eq!(s.sum("otpd_device_logins_total", &[("outcome", "ok")]), 1.0);
    assert_eq!(s.sum("otpd_device_logins_total", &[("outcome", "wrong")]), 1.0);
    assert_eq!(s.sum("otpd_tokens_issued_total", &[("method", "device")]), 1.0);
    assert_eq!(s.sum("otpd_otp_enumeration_safe_responses_total", &[("api", "device_challenge")]), 1.0);
    assert_eq!(s.sum("otpd_sessions_revoked_total", &[("reason", "device_revoked")]), 1.0);
    assert_eq!(s.sum("otpd_http_requests_total", &[("route", "/v1/devices/{id}"), ("method", "DELETE")]), 1.0);

    // A body over the limit.
    let big = "x".repeat(20_000);
    let r = into_reply(
        t.client.post(t.url("/v1/login")).header("content-type", "application/json").body(big).send().await.unwrap(),
    )
    .await;
    assert_eq!(r.status, 413);
    let s = m.scrape().await;
    assert_eq!(s.sum("otpd_http_body_rejections_total", &[("route", "/v1/login"), ("reason", "too_large")]), 1.0);

    // Twilio fails twice: a retry, its breaker opens, the webhook takes over (failover).
    twilio.then([Fault::status(503), Fault::status(503)]);
    let f = phone(7005);
    assert_eq!(t.post("/v1/register", register_body(&f)).await.status, 202);
    let s = m
        .settle("a failover to the webhook", |s| {
            s.sum("otpd_delivery_sends_total", &[("provider", "webhook"), ("outcome", "delivered")]) == 1.0
                && s.sum("otpd_delivery_breaker_state", &[("provider", "twilio"), ("state", "open")]) == 1.0
        })
        .await;
    assert_eq!(s.sum("otpd_delivery_sends_total", &[("provider", "twilio"), ("outcome", "failed")]), 2.0);
    assert_eq!(s.sum("otpd_delivery_breaker_opened_total", &[("provider", "twilio")]), 1.0);
    assert_eq!(s.sum("otpd_delivery_retries_total", &[("provider", "twilio")]), 1.0);
    assert_eq!(s.sum("otpd_delivery_retries_total", &[("provider", "webhook")]), 1.0);
    assert_eq!(s.sum("otpd_delivery_failovers_total", &[("provider", "webhook")]), 1.0);
    assert_eq!(s.sum("otpd_delivery_breaker_state", &[("provider", "twilio"), ("state", "closed")]), 0.0);
    assert_eq!(s.sum("otpd_ready", &[]), 1.0, "the secondary delivers: still ready");

    // A message the webhook holds is queued until it answers; one it refuses is given up.
    hook.then([Fault::Hold, Fault::status(400)]);
    let g = phone(7006);
    t.advance(Duration::from_secs(31));
    // (`f` only registered, which makes no account: the login is `a`'s.)
    assert_eq!(t.post("/v1/login", json!({ "phone": a })).await.status, 202);
    hook.wait_requests(2).await;
    m.settle("a queued message", |s| s.sum("otpd_delivery_queue_depth", &[]) == 1.0).await;
    hook.release(1);
    m.settle("the held message delivered", |s| s.sum("otpd_delivery_queue_depth", &[]) == 0.0).await;
    assert_eq!(t.post("/v1/register", register_body(&g)).await.status, 202);
    let s = m
        .settle("a message given up", |s| s.sum("otpd_delivery_messages_total", &[("outcome", "given_up")]) == 1.0)
        .await;
    assert_eq!(s.sum("otpd_delivery_sends_total", &[("provider", "webhook"), ("outcome", "rejected")]), 1.0);

    // Actors: a shard and the dispatcher fail and are restarted.
    let victim = t.node.engine.normalizer().phone(&a).unwrap();
    t.node.engine.inject_shard_panic(&victim);
    t.node.delivery.inject_panic();
    let s = m
        .settle("two restarts", |s| {
            s.sum("otpd_actor_restarts_total", &[("actor", "shard")]) == 1.0
                && s.sum("otpd_actor_restarts_total", &[("actor", "dispatcher")]) == 1.0
        })
        .await;
    assert!(s.sum("otpd_http_connections_open", &[("listener", "main")]) >= 1.0, "the test client keeps one open");

    // The store stops taking writes: its failures are counted and the node is not ready.
    t.node.store().close();
    let r = t.post("/v1/register", register_body(&phone(7007))).await;
    assert_eq!(r.status, 503, "{}", r.raw);
    let s = m
        .settle("the store down", |s| {
            s.sum("otpd_ready", &[]) == 0.0 && s.sum("otpd_dependency_up", &[("dependency", "store")]) == 0.0
        })
        .await;
    assert!(s.sum("otpd_store_errors_total", &[("store", "embedded"), ("kind", "unavailable")]) >= 1.0);
    assert_eq!(s.sum("otpd_http_requests_total", &[("route", "/v1/register"), ("status", "5xx")]), 1.0);

    // Every family of the catalogue is in the exposition now, and Prometheus accepts it.
    for def in otpd::metrics::all() {
        let name = match def.kind {
            otpd_actors::metrics::Kind::Histogram => format!("{}_count", def.name),
            _ => def.name.to_owned(),
        };
        assert!(s.has(&name), "{name} is missing from the exposition");
    }
    promtool_check_metrics(&s.text);
}

/// `promtool check metrics` (lint included) accepts `text`, if the machine has promtool.
fn promtool_check_metrics(text: &str) {
    let Some(promtool) = program("promtool") else {
        println!(
            "SKIPPED promtool check metrics: promtool is not installed (scripts/test.sh installs Debian's prometheus)"
        );
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
}

/// The values each label may take: fixed sets, the configured providers, shard indexes.
fn allowed_label_values(shards: usize, providers: &[&str]) -> BTreeMap<&'static str, BTreeSet<String>> {
    let set = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<BTreeSet<String>>();
    let mut allowed = BTreeMap::new();
    allowed.insert("route", set(otpd::http::table::route_labels()));
    // HTTP methods, and the login method of `otpd_tokens_issued_total`.
    allowed.insert(
        "method",
        set(&["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other", "otp", "device", "passkey"]),
    );
    allowed.insert("status", set(&["1xx", "2xx", "3xx", "4xx", "5xx"]));
    allowed.insert(
        "reason",
        set(&[
            "too_large",
            "too_slow",
            "logout",
            "logout_all",
            "refresh_token_reuse",
            "device_revoked",
            "passkey_deleted",
        ]),
    );
    allowed.insert("purpose", set(&["register", "login"]));
    allowed.insert("channel", set(&["sms", "email"]));
    allowed.insert(
        "outcome",
        set(&[
            "ok",
            "wrong",
            "expired",
            "blocked",
            "used",
            "unknown",
            "allowed",
            "denied",
            "error",
            "delivered",
            "given_up",
            "failed",
            "rejected",
            "unreachable",
            "reused",
            "invalid",
            "refused",
        ]),
    );
    allowed.insert("api", set(&["register", "login", "otp_resend", "device_challenge", "device_verify"]));
    allowed.insert("action", set(&["send", "verify"]));
    allowed.insert("rule", set(&["none", "resend_cooldown", "identifier_send_limit"]));
    allowed.insert("result", set(&["accepted", "refused"]));
    // Country calling codes (never a prefix or a number), and the SMS budget's scopes.
    let calling_codes: Vec<String> = (1..1000).map(|c: u16| c.to_string()).collect();
    let codes: Vec<&str> = calling_codes.iter().map(String::as_str).collect();
    allowed.insert("country", set(&codes));
    allowed.insert("scope", set(&[codes.as_slice(), &["all"]].concat()));
    allowed.insert("event", set(&["sent", "verified"]));
    allowed.insert("provider", set(providers));
    allowed.insert("state", set(&["closed", "half_open", "open"]));
    allowed.insert("store", set(&["embedded"]));
    allowed.insert(
        "operation",
        otpd_actors::adapters::metered::Operation::ALL.iter().map(|o| o.as_str().to_owned()).collect(),
    );
    allowed.insert("kind", set(&["unavailable", "corrupt"]));
    allowed.insert("actor", set(&["shard", "dispatcher"]));
    allowed.insert("dependency", set(&["store", "limiter", "delivery"]));
    allowed.insert("listener", set(&["main", "admin"]));
    allowed.insert("version", set(&[env!("CARGO_PKG_VERSION")]));
    allowed.insert("shard", (0..shards).map(|i| i.to_string()).collect());
    allowed
}

#[tokio::test]
async fn no_label_value_ever_carries_an_identifier() {
    if !isolated("observability::no_label_value_ever_carries_an_identifier") {
        return;
    }
    let hook = FakeProvider::start().await;
    let t = start_node_with(|c| {
        c.delivery.provider = "webhook".into();
        use_webhook(c, &hook);
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.admin.refresh_interval = Dur(Duration::from_millis(20));
    })
    .await;
    let m = Scraper::of(&t);
    // Distinctive values in every place a request can carry one.
    let p = "+12024561414";
    let email = "zq7.distinctive@example.org";
    let trace = "trace-q9z-distinctive";
    let agent = "agent-q9z-distinctive/1.0";
    let client_ip = "203.0.113.77";
    let device_path = "/v1/devices/0192f0c4-1c7e-7f00-8000-00000000d15c";
    let send = |method: &str, path: &str, body: Option<Value>| {
        let mut req = t
            .client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), t.url(path))
            .header("x-request-id", trace)
            .header("user-agent", agent)
            .header("x-forwarded-for", client_ip);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { into_reply(req.send().await.unwrap()).await }
    };
    assert_eq!(send("POST", "/v1/register", Some(register_body(p))).await.status, 202);
    let sms = hook.wait_requests(1).await[0].json();
    let code = code_in(sms["messages"][0]["body"].as_str().unwrap());
    assert_eq!(
        send("POST", "/v1/register/verify", Some(json!({ "phone": p, "code": wrong_code(&code) }))).await.status,
        400
    );
    let tokens = send("POST", "/v1/register/verify", Some(json!({ "phone": p, "code": code }))).await.body;
    assert_eq!(
        send("POST", "/v1/register", Some(json!({ "email": email, "first_name": "Z", "last_name": "Q" }))).await.status,
        202
    );
    assert_eq!(send("POST", "/v1/login", Some(json!({ "phone": p }))).await.status, 202);
    assert_eq!(send("POST", "/v1/login", Some(json!({ "phone": p }))).await.status, 429);
    assert_eq!(send("POST", &format!("/{p}"), None).await.status, 404);
    assert_eq!(send("GET", &format!("/v1/login?phone={p}&code={code}"), None).await.status, 405);
    assert_eq!(send("BREW", "/v1/me", None).await.status, 405);
    assert_eq!(send("DELETE", device_path, None).await.status, 401);
    assert_eq!(send("GET", &format!("/v1/devices/{email}"), None).await.status, 405);
    let refreshed = send("POST", "/v1/token/refresh", Some(json!({ "refresh_token": refresh_token(&tokens) }))).await;
    assert_eq!(refreshed.status, 200);
    devices::challenge(&t, &device_path["/v1/devices/".len()..]).await;
    hook.wait_requests(2).await;
    let email_code = t.code_for(email).await;
    // One account: the e-mail registration is not one until its code verifies.
    let s = m.settle("the gauges after the traffic", |s| s.sum("otpd_users", &[]) == 1.0).await;

    let user_id = tokens["user"]["id"].as_str().unwrap();
    let session_id = tokens["session_id"].as_str().unwrap();
    let secrets = [
        p,
        &p[2..],
        email,
        "zq7",
        trace,
        "q9z",
        agent,
        client_ip,
        "127.0.0.1",
        "00000000d15c",
        &code,
        &email_code,
        user_id,
        session_id,
        &refresh_token(&tokens),
        &access(&tokens),
        &refresh_token(&refreshed.body),
    ];
    for secret in secrets {
        assert!(!s.text.contains(secret), "the exposition contains {secret:?}");
    }
    // Stronger: every label value is one of a fixed, known set.
    let allowed = allowed_label_values(64, &["webhook", "outbox"]);
    let mut seen = 0;
    for sample in s.samples.iter().filter(|s| s.name.starts_with("otpd_")) {
        for (label, value) in &sample.labels {
            seen += 1;
            if label == "le" {
                assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{} le={value}", sample.name);
                continue;
            }
            let known = allowed.get(label.as_str()).unwrap_or_else(|| panic!("{}: unknown label {label}", sample.name));
            assert!(known.contains(value), "{} {label}={value:?} is not a known value", sample.name);
        }
    }
    assert!(seen > 500, "the scan saw the labels ({seen})");
}

#[tokio::test]
async fn readiness_flips_to_503_when_the_provider_fails_and_back_when_it_returns() {
    if !isolated("observability::readiness_flips_to_503_when_the_provider_fails_and_back_when_it_returns") {
        return;
    }
    let twilio = FakeProvider::start().await;
    twilio.always(Some(Fault::status(500)));
    let t = start_node_with(|c| {
        use_twilio(c, &twilio);
        c.delivery.breaker_failures = 1;
        c.delivery.breaker_open_for = Dur(Duration::from_millis(500));
        // The message keeps probing (one attempt per half-open breaker) until Twilio is back.
        c.delivery.max_attempts = 20;
        c.admin.refresh_interval = Dur(Duration::from_millis(20));
    })
    .await;
    let m = Scraper::of(&t);
    let ready = |t: &TestNode| {
        let url = t.ops_url("/health/ready");
        let client = t.client.clone();
        async move { into_reply(client.get(url).send().await.unwrap()).await }
    };
    let r = ready(&t).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["providers"]["twilio"]["status"], "up");
    assert_eq!(r.body["providers"]["twilio"]["latency_ms"], Value::Null, "no call yet");
    assert_eq!(r.body["checks"]["limiter"]["status"], "up");
    assert!(r.body["checks"]["store"]["latency_ms"].as_f64().unwrap() >= 0.0);

    // Twilio fails: its breaker opens, no SMS provider is left, the node is not ready.
    let p = phone(7101);
    assert_eq!(t.post("/v1/register", register_body(&p)).await.status, 202);
    let s = m.settle("not ready", |s| s.sum("otpd_ready", &[]) == 0.0).await;
    assert_eq!(s.sum("otpd_dependency_up", &[("dependency", "delivery")]), 0.0);
    assert_eq!(s.sum("otpd_dependency_up", &[("dependency", "store")]), 1.0);
    let r = ready(&t).await;
    assert_eq!(r.status, 503, "{}", r.raw);
    assert_eq!(r.body["status"], "not_ready");
    assert_eq!(r.body["checks"]["delivery"]["status"], "down");
    assert_eq!(r.body["providers"]["twilio"]["status"], "down");
    assert!(r.body["providers"]["twilio"]["latency_ms"].as_f64().is_some(), "the failed call's duration");

    // Twilio answers again: the next probe succeeds, the message is delivered, ready again.
    twilio.always(None);
    let s = m
        .settle("ready again", |s| {
            s.sum("otpd_ready", &[]) == 1.0
                && s.sum("otpd_delivery_breaker_state", &[("provider", "twilio"), ("state", "closed")]) == 1.0
        })
        .await;
    assert_eq!(s.sum("otpd_dependency_up", &[("dependency", "delivery")]), 1.0);
    assert!(s.sum("otpd_delivery_sends_total", &[("provider", "twilio"), ("outcome", "delivered")]) >= 1.0);
    let r = ready(&t).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["providers"]["twilio"]["status"], "up");
    let public = t.get("/health/ready", None).await;
    assert_eq!(
        (public.status, public.body),
        (200, json!({ "status": "ready" })),
        "the public listener agrees, briefly"
    );
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_trace_id() {
    let Some(stderr) = isolated_stderr("observability::every_log_line_of_a_request_carries_its_trace_id") else {
        // In the child: JSON logs on stderr, as `otpd run` sets them up, at debug for otpd.
        let node = otpd::config::NodeConfig {
            log_level: "otpd=debug,otpd_actors=debug,warn".into(),
            log_format: "json".into(),
            ..Default::default()
        };
        otpd::logging::init(&node);
        let t = start_node().await;
        let p = phone(7201);
        let with_trace = |path: &str, trace: &str, body: Value| {
            let req = t.client.post(t.url(path)).header("x-request-id", trace).json(&body);
            async move { into_reply(req.send().await.unwrap()).await }
        };
        assert_eq!(with_trace("/v1/register", "log-trace-1", register_body(&p)).await.status, 202);
        let code = t.code_for(&p).await;
        let wrong = json!({ "phone": p, "code": wrong_code(&code) });
        assert_eq!(with_trace("/v1/register/verify", "log-trace-2", wrong).await.status, 400);
        assert_eq!(with_trace("/v1/nowhere", "log-trace-3", json!({})).await.status, 404);
        // A dependency fails inside a request: its error line names the request.
        t.node.store().close();
        let r = with_trace("/v1/register/verify", "log-trace-4", json!({ "phone": p, "code": code })).await;
        assert_eq!(r.status, 503, "{}", r.raw);
        return;
    };

    let p = phone(7201);
    let mut answered = BTreeMap::new();
    let mut failed_on_dependency = Vec::new();
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(!line.contains(&p) && !line.contains(&p[2..]), "a log line names the number: {line}");
        assert!(v["level"].is_string() && v["timestamp"].is_string() && v["target"].is_string(), "{line}");
        // The lines of the request path: the front end's, and the engine's inside a request.
        let target = v["target"].as_str().unwrap();
        if target.starts_with("otpd::http") || target == "otpd_actors::engine" {
            let trace =
                v["trace_id"].as_str().unwrap_or_else(|| panic!("a request's line without its trace id: {line}"));
            assert!(trace.starts_with("log-trace-"), "{line}");
            if v["message"] == "request answered" {
                answered.insert(trace.to_owned(), (v["route"].clone(), v["status"].clone()));
            }
            if v["message"] == "request failed on a dependency"
                || v["message"] == "could not write the call's audit event"
            {
                failed_on_dependency.push(format!("{target} {trace}"));
            }
        }
    }
    let expect = |route: &str, status: u64| (Value::from(route), Value::from(status));
    assert_eq!(
        answered,
        BTreeMap::from([
            ("log-trace-1".to_owned(), expect("/v1/register", 202)),
            ("log-trace-2".to_owned(), expect("/v1/register/verify", 400)),
            ("log-trace-3".to_owned(), expect("other", 404)),
            ("log-trace-4".to_owned(), expect("/v1/register/verify", 503)),
        ]),
        "one line per request, each with its own trace id:\n{stderr}"
    );
    assert_eq!(
        failed_on_dependency,
        ["otpd_actors::engine log-trace-4", "otpd::http::problem log-trace-4"],
        "the store's failure is logged, by the engine and the front end, under its request"
    );
}

/// Every `otpd_…` name in `text`, histogram suffixes included.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("otpd_") {
        let start = i + at;
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        if end > start + 5 && !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The catalogue entry a name in PromQL refers to (`…_bucket`, `…_sum`, `…_count` of a
/// histogram included).
fn catalogued(name: &str) -> Option<&'static otpd_actors::metrics::MetricDef> {
    use otpd_actors::metrics::Kind;
    otpd::metrics::all().find(|d| d.name == name).or_else(|| {
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s))?;
        otpd::metrics::all().find(|d| d.name == base && d.kind == Kind::Histogram)
    })
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_dashboard_and_alert_rules_use_only_catalogued_metrics() {
    let dashboard_text = repo_file("deploy/grafana/otpd-dashboard.json");
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");
    let alerts = repo_file("deploy/prometheus/alerts.yml");
    for (file, text) in [("dashboard", &dashboard_text), ("alerts.yml", &alerts)] {
        for name in metric_names(text) {
            assert!(catalogued(&name).is_some(), "{file} uses {name}, which otpd does not export");
        }
    }

    // The dashboard: importable (a title, a uid, a data source variable), the sections the
    // issue asks for, and a panel for every metric but the start time.
    assert_eq!(dashboard["uid"], "otpd-overview");
    let vars: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels.iter().filter(|p| p["type"] == "row").map(|p| p["title"].as_str().unwrap()).collect();
    assert_eq!(
        rows,
        [
            "Overview",
            "HTTP",
            "OTP funnel",
            "SMS and e-mail delivery",
            "Limits",
            "Storage",
            "Accounts, sessions, tokens",
            "Actors",
            "Cluster",
            "Fraud and spend",
            "Delivery receipts"
        ]
    );
    let mut ids = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel ids are unique");
        assert!(!panel["targets"].as_array().unwrap().is_empty(), "{} has a query", panel["title"]);
    }
    let used = metric_names(&dashboard_text);
    for def in otpd::metrics::all().filter(|d| d.name != "otpd_start_time_seconds") {
        let shown = used.iter().any(|n| catalogued(n).is_some_and(|c| c.name == def.name));
        assert!(shown, "the dashboard shows nothing of {}", def.name);
    }

    // The alerts the issue asks for.
    for alert in [
        "OtpdHighErrorRate",
        "OtpdHighLatencyP99",
        "OtpdSmsFailureRate",
        "OtpdDeliveryBreakerOpen",
        "OtpdRedisFallback",
        "OtpdNotReady",
    ] {
        assert!(alerts.contains(&format!("- alert: {alert}\n")), "alerts.yml has no {alert}");
    }
}

#[test]
fn the_metrics_page_lists_every_metric_with_its_type_and_labels() {
    let catalogue = repo_file("docs/metrics.md");
    let catalogue = catalogue.as_str();
    for def in otpd::metrics::all() {
        let labels = if def.labels.is_empty() {
            "—".to_owned()
        } else {
            def.labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ")
        };
        let row = format!("| `{}` | {} | {} |", def.name, def.kind.as_str(), labels);
        assert!(catalogue.contains(&row), "docs/metrics.md lacks the row\n{row}");
    }
    for name in metric_names(catalogue) {
        assert!(catalogued(&name).is_some(), "docs/metrics.md names {name}, which otpd does not export");
    }
}

#[test]
fn promtool_accepts_the_shipped_rules_config_and_rule_tests() {
    let Some(promtool) = program("promtool") else {
        println!("SKIPPED promtool checks: promtool is not installed (scripts/test.sh installs Debian's prometheus)");
        return;
    };
    let dir = Path::new(REPO).join("deploy/prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["check", "config", "prometheus.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool).args(args).current_dir(&dir).output().expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn the_ops_listener_and_the_admin_stats() {
    let t = start_node().await;
    let admin = t.ops_url("");
    let get = |url: String, token: Option<String>| {
        let mut req = t.client.get(url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move { into_reply(req.send().await.unwrap()).await }
    };

    // Operations on the ops listener; the API and /metrics only where they belong.
    let metrics = t.client.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert_eq!(metrics.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert!(metrics.text().await.unwrap().contains("# TYPE otpd_delivery_queue_capacity gauge"));
    assert_eq!(get(format!("{admin}/health/live"), None).await.status, 200);
    assert_eq!(get(format!("{admin}/health/ready"), None).await.status, 200);
    assert_eq!(get(format!("{admin}/v1/me"), None).await.code(), "not_found");
    let r = into_reply(
        t.client.post(format!("{admin}/v1/login")).json(&json!({ "phone": phone(1) })).send().await.unwrap(),
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "the ops listener serves no API");
    assert_eq!(t.get("/metrics", None).await.status, 404, "no metrics on the public listener");

    // The stats: admin token only, no unknown parameters.
    let stats_url = format!("{admin}/v1/admin/stats");
    assert_eq!(get(stats_url.clone(), None).await.status, 401);
    assert_eq!(get(stats_url.clone(), Some("not-the-token".into())).await.status, 403);
    let token = Some(t.node.admin_token.clone());
    assert_eq!(get(format!("{stats_url}?verbose=1"), token.clone()).await.code(), "invalid_request");
    let public = t.get("/v1/admin/stats", Some(&t.node.admin_token)).await;
    assert_eq!(public.status, 404, "not on the public listener, even with the token");

    let p = phone(7301);
    t.signed_up(&p).await;
    assert_eq!(t.post("/v1/login", json!({ "phone": phone(7302) })).await.status, 202);
    assert_eq!(t.post("/v1/register", register_body(&phone(7303))).await.status, 202);
    t.wait_for_messages(&phone(7303), 1).await;
    let mut stats = Value::Null;
    for _ in 0..500 {
        stats = get(stats_url.clone(), token.clone()).await.body;
        if stats["users"] != Value::Null && stats["delivery"]["delivered"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The pending registration (7303) is no account yet.
    assert_eq!(stats["users"], json!({ "total": 1, "verified": 1 }), "{stats}");
    assert_eq!(stats["sessions"], json!({ "active": 1 }));
    assert_eq!(stats["otp"]["issued"]["register"], json!({ "sms": 2, "email": 0 }));
    assert_eq!(stats["otp"]["verifications"]["register"]["ok"], 1);
    assert_eq!(stats["otp"]["enumeration_safe_responses"]["login"], 1);
    assert_eq!(stats["challenges"]["shards"], 64);
    assert_eq!(stats["challenges"]["pending"], 2, "the unknown number's decoy and the second registration");
    assert_eq!(stats["challenges"]["shard_restarts"], 0);
    assert_eq!(stats["delivery"]["providers"]["outbox"]["delivered"], 2);
    assert!(stats["at"].as_str().unwrap().ends_with('Z'));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process stopped (by its PID) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks Prometheus's HTTP API for `query`; the `data` of a successful answer.
async fn prometheus_query(client: &reqwest::Client, base: &str, query: &str) -> Result<Value, String> {
    let encoded: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
    let resp = client.get(format!("{base}/api/v1/query?query={encoded}")).send().await;
    let body: Value = match resp {
        Ok(r) => r.json().await.map_err(|e| e.to_string())?,
        Err(e) => return Err(e.to_string()),
    };
    if body["status"] == "success" { Ok(body["data"].clone()) } else { Err(body.to_string()) }
}

/// The value of an instant query that returns one series, if it does.
async fn prometheus_value(client: &reqwest::Client, base: &str, query: &str) -> Option<f64> {
    let data = prometheus_query(client, base, query).await.ok()?;
    let result = data["result"].as_array()?;
    (result.len() == 1).then(|| result[0]["value"][1].as_str()?.parse().ok())?
}

#[tokio::test]
async fn a_real_prometheus_scrapes_otpd_and_counts_the_traffic_sent() {
    let Some(prometheus) = program("prometheus") else {
        println!(
            "SKIPPED the Prometheus scrape test: prometheus is not installed (scripts/test.sh installs Debian's prometheus)"
        );
        return;
    };
    // otpd, the real binary, alone in its process: its counters hold only this test's traffic.
    let data = tempfile::tempdir().unwrap();
    let (port, ops_port) = (free_port(), free_port());
    let _otpd = Child(
        Command::new(env!("CARGO_BIN_EXE_otpd"))
            .env("OTPD_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("OTPD_ADMIN__LISTEN", format!("127.0.0.1:{ops_port}"))
            .env("OTPD_NODE__DATA_DIR", data.path())
            .env("OTPD_NODE__LOG_LEVEL", "warn")
            .env("OTPD_ADMIN__REFRESH_INTERVAL", "100ms")
            .env_remove("OTPD_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("otpd starts"),
    );
    let otpd = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if client.get(format!("{otpd}/health/live")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Prometheus on its own loopback port, scraping otpd every 200 ms and evaluating the
    // shipped alert rules against what it scrapes.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(Path::new(REPO).join("deploy/prometheus/alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n  evaluation_interval: 200ms\n\
         rule_files: [alerts.yml]\n\
         scrape_configs:\n  - job_name: otpd\n    static_configs:\n      - targets: ['127.0.0.1:{ops_port}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let prom_port = free_port();
    let _prometheus = Child(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");

    // The traffic: seven logins for unknown numbers (202) and three malformed ones (400).
    for i in 0..7 {
        let r =
            client.post(format!("{otpd}/v1/login")).json(&json!({ "phone": phone(7400 + i) })).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    for _ in 0..3 {
        let r = client
            .post(format!("{otpd}/v1/login"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }

    // What Prometheus scraped must match what was sent (and what otpd itself says).
    let queries = [
        (r#"otpd_http_requests_total{job="otpd",route="/v1/login",method="POST",status="2xx"}"#, 7.0),
        (r#"otpd_http_requests_total{job="otpd",route="/v1/login",method="POST",status="4xx"}"#, 3.0),
        (r#"otpd_http_request_duration_seconds_count{job="otpd",route="/v1/login"}"#, 10.0),
        (r#"otpd_http_request_duration_seconds_bucket{job="otpd",route="/v1/login",le="+Inf"}"#, 10.0),
        (r#"otpd_otp_enumeration_safe_responses_total{job="otpd",api="login"}"#, 7.0),
        (r#"otpd_users{job="otpd"}"#, 0.0),
        (r#"otpd_ready{job="otpd"}"#, 1.0),
    ];
    let mut seen = Vec::new();
    for _ in 0..300 {
        seen.clear();
        for (q, _) in &queries {
            seen.push(prometheus_value(&client, &prom, q).await);
        }
        if seen.iter().zip(&queries).all(|(v, (_, want))| *v == Some(*want)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for ((q, want), got) in queries.iter().zip(&seen) {
        assert_eq!(*got, Some(*want), "Prometheus's {q}");
    }
    // Every bucket of the latency histogram, and its sum, as otpd exposes them.
    let own = scrape(&client, &format!("http://127.0.0.1:{ops_port}/metrics")).await;
    let buckets: Vec<&Sample> =
        own.matching("otpd_http_request_duration_seconds_bucket", &[("route", "/v1/login")]).collect();
    assert_eq!(buckets.len(), otpd_actors::metrics::LATENCY_BUCKETS.len() + 1);
    for b in buckets {
        let le = &b.labels.iter().find(|(k, _)| k == "le").unwrap().1;
        let q = format!(r#"otpd_http_request_duration_seconds_bucket{{job="otpd",route="/v1/login",le="{le}"}}"#);
        assert_eq!(prometheus_value(&client, &prom, &q).await, Some(b.value), "{q}");
    }
    let sum = own.sum("otpd_http_request_duration_seconds_sum", &[("route", "/v1/login")]);
    assert!(sum > 0.0);
    let q = r#"otpd_http_request_duration_seconds_sum{job="otpd",route="/v1/login"}"#;
    assert_eq!(prometheus_value(&client, &prom, q).await, Some(sum));

    // The shipped rules load and evaluate without error on real data, and every query of
    // the dashboard is valid PromQL for this Prometheus.
    let rules: Value = client.get(format!("{prom}/api/v1/rules")).send().await.unwrap().json().await.unwrap();
    let rules: Vec<&Value> =
        rules["data"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert_eq!(rules.len(), 18);
    for rule in rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let dashboard: Value = serde_json::from_str(&repo_file("deploy/grafana/otpd-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 40);
    for expr in exprs {
        let q = expr.replace("$instance", ".*").replace("$__rate_interval", "1m");
        if let Err(e) = prometheus_query(&client, &prom, &q).await {
            panic!("the dashboard's query {expr} fails: {e}");
        }
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}
