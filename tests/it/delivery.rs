//! Delivery through real providers on loopback: the Twilio-shaped server of
//! [`crate::fake_provider`] (faults on command) as Twilio and as a JSON webhook. Every test
//! reads the code out of what the provider received and checks that it verifies.

use std::time::Duration;

use otpd::config::{Config, Dur, Secret};
use otpd_actors::actors::dispatch::DispatchStats;
use otpd_actors::ports::AuditEvent;
use serde_json::json;

use crate::fake_provider::{FakeProvider, Fault};
use crate::support::*;

pub const SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "twilio-auth-token-7f3a9c1e5b";
pub const SENDER: &str = "+15005550006";

/// Twilio as the SMS provider, pointed at `fake`, with short backoffs.
pub fn use_twilio(c: &mut Config, fake: &FakeProvider) {
    c.delivery.provider = "twilio".into();
    c.twilio.account_sid = SID.into();
    c.twilio.auth_token = Some(Secret(TOKEN.into()));
    c.twilio.from = SENDER.into();
    c.twilio.base_url = fake.url();
    c.delivery.backoff_base = Dur(Duration::from_millis(5));
    c.delivery.backoff_max = Dur(Duration::from_millis(50));
}

pub fn use_webhook(c: &mut Config, fake: &FakeProvider) {
    c.webhook.url = format!("{}/hook", fake.url());
}

/// The code in a message body: its six-digit run (twice with an origin line, the same).
pub fn code_in(text: &str) -> String {
    let mut runs: Vec<&str> = text.split(|c: char| !c.is_ascii_digit()).filter(|r| r.len() == 6).collect();
    runs.dedup();
    assert_eq!(runs.len(), 1, "exactly one six-digit code in {text:?}");
    runs[0].to_owned()
}

async fn register(t: &TestNode, phone: &str, trace: &str) -> Reply {
    let body = json!({ "phone": phone, "first_name": "Ada", "last_name": "Lovelace" });
    into_reply(t.client.post(t.url("/v1/register")).header("x-request-id", trace).json(&body).send().await.unwrap())
        .await
}

async fn verify(t: &TestNode, phone: &str, code: &str) -> Reply {
    t.post("/v1/register/verify", json!({ "phone": phone, "code": code })).await
}

/// Waits (at most 10 s) for the dispatcher's counters to satisfy `done`.
pub async fn wait_stats(t: &TestNode, done: impl Fn(&DispatchStats) -> bool) -> DispatchStats {
    for _ in 0..1000 {
        let s = t.node.delivery.stats();
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("dispatcher never reached the expected state: {:?}", t.node.delivery.stats());
}

/// The delivery outcome events of one trace id (waits for the first, at most 5 s).
pub async fn delivery_events(t: &TestNode, trace: &str) -> Vec<AuditEvent> {
    for _ in 0..500 {
        let mut events = t.node.engine.audit_log().by_trace(trace, 20).await.unwrap();
        events.retain(|e| e.api == "delivery");
        if !events.is_empty() {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no delivery event for trace {trace}");
}

#[tokio::test]
async fn twilio_receives_its_rest_shape_and_the_code_verifies() {
    let fake = FakeProvider::start().await;
    let t = start_node_with(|c| use_twilio(c, &fake)).await;
    let p = phone(4001);
    assert_eq!(register(&t, &p, "trace-twilio-1").await.status, 202);

    let req = &fake.wait_requests(1).await[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("/2010-04-01/Accounts/{SID}/Messages.json"));
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
    assert_eq!(req.authorization.as_deref(), Some(format!("Basic {basic}").as_str()));
    assert_eq!(req.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(req.form("To").as_deref(), Some(p.as_str()));
    assert_eq!(req.form("From").as_deref(), Some(SENDER));
    assert_eq!(req.form("MessagingServiceSid"), None);
    let body = req.form("Body").unwrap();
    assert!(body.starts_with("Your otpd verification code is "), "{body}");

    let r = verify(&t, &p, &code_in(&body)).await;
    assert_eq!(r.status, 200, "the code Twilio was asked to send is the one that verifies: {}", r.raw);
    let events = delivery_events(&t, "trace-twilio-1").await;
    assert_eq!((events[0].step.as_str(), &*events[0].message), ("delivered", "handed to twilio on attempt 1"));
    assert!(t.messages_for(&p).is_empty(), "nothing went to the outbox");
}

#[tokio::test]
async fn a_messaging_service_replaces_from_and_templates_carry_the_origin_line() {
    let fake = FakeProvider::start().await;
    let service = format!("MG{}", "0123456789abcdef".repeat(2));
    let t = start_node_with(|c| {
        use_twilio(c, &fake);
        c.twilio.from = String::new();
        c.twilio.messaging_service_sid = service.clone();
        c.delivery.app_name = "Acme".into();
        c.delivery.origin = "login.acme.test".into();
        c.delivery.template_login = Some("{app_name}: {code} is your sign-in code ({minutes} min).".into());
    })
    .await;
    let p = phone(4002);
    t.signed_up_via(&fake, &p).await;
    assert_eq!(t.post("/v1/login", json!({ "phone": p })).await.status, 202);
    let req = &fake.wait_requests(2).await[1];
    assert_eq!(req.form("MessagingServiceSid").as_deref(), Some(service.as_str()));
    assert_eq!(req.form("From"), None);
    let body = req.form("Body").unwrap();
    let code = code_in(&body);
    assert_eq!(body, format!("Acme: {code} is your sign-in code (5 min).\n\n@login.acme.test #{code}"));
    assert_eq!(t.post("/v1/login/verify", json!({ "phone": p, "code": code })).await.status, 200);
}

impl TestNode {
    /// Registers and verifies `phone` with the code `fake` received.
    async fn signed_up_via(&self, fake: &FakeProvider, phone: &str) {
        let before = fake.requests().len();
        assert_eq!(register(self, phone, &format!("signup-{phone}")).await.status, 202);
        let req = fake.wait_requests(before + 1).await.pop().unwrap();
        let r = verify(self, phone, &code_in(&req.form("Body").unwrap())).await;
        assert_eq!(r.status, 200, "{}", r.raw);
    }
}

#[tokio::test]
async fn transient_5xx_is_retried_until_twilio_takes_the_message() {
    let fake = FakeProvider::start().await;
    fake.then([Fault::status(500), Fault::Status { status: 503, code: Some(20503), retry_after: None }]);
    let t = start_node_with(|c| use_twilio(c, &fake)).await;
    let p = phone(4003);
    assert_eq!(register(&t, &p, "trace-5xx").await.status, 202);
    let s = wait_stats(&t, |s| s.delivered == 1).await;
    assert_eq!((s.attempts, s.retries, s.given_up), (3, 2, 0));
    let requests = fake.requests();
    assert_eq!(requests.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 503, 201]);
    let bodies: Vec<String> = requests.iter().map(|r| r.form("Body").unwrap()).collect();
    assert!(bodies.windows(2).all(|w| code_in(&w[0]) == code_in(&w[1])), "every attempt carries the same code");
    assert_eq!(verify(&t, &p, &code_in(&bodies[2])).await.status, 200);
    let events = delivery_events(&t, "trace-5xx").await;
    assert_eq!(events.len(), 1, "one event for the final outcome, none per attempt");
    assert_eq!(events[0].message, "handed to twilio on attempt 3");
}

#[tokio::test]
async fn retry_after_is_respected() {
    let fake = FakeProvider::start().await;
    fake.then([Fault::Status { status: 429, code: Some(20429), retry_after: Some(1) }]);
    // Without Retry-After the retry would come within 5 ms (the backoff ceiling).
    let t = start_node_with(|c| use_twilio(c, &fake)).await;
    assert_eq!(register(&t, &phone(4004), "trace-429").await.status, 202);
    wait_stats(&t, |s| s.delivered == 1).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, sooner than Retry-After: 1");
}

#[tokio::test]
async fn a_permanent_error_is_not_retried() {
    let fake = FakeProvider::start().await;
    fake.then([Fault::Status { status: 400, code: Some(21211), retry_after: None }]);
    let t = start_node_with(|c| use_twilio(c, &fake)).await;
    let p = phone(4005);
    assert_eq!(register(&t, &p, "trace-21211").await.status, 202);
    let s = wait_stats(&t, |s| s.given_up == 1).await;
    assert_eq!((s.delivered, s.attempts, s.queued), (0, 1, 0));
    // The outcome is final: the message left the dispatcher, so nothing can retry it later.
    assert_eq!(fake.requests().len(), 1);
    let e = &delivery_events(&t, "trace-21211").await[0];
    assert_eq!((e.step.as_str(), e.outcome.as_str()), ("given_up", "failed"));
    assert_eq!(
        e.message,
        "given up after 1 attempt(s): twilio: HTTP 400, error 21211 (https://www.twilio.com/docs/errors/21211); not retried"
    );
    assert!(!format!("{e:?}").contains(p.trim_start_matches('+')), "no number in the trail");
    assert_eq!(t.node.delivery.health()[0].consecutive_failures, 0, "not held against Twilio");
}

#[tokio::test]
async fn resets_and_slow_answers_are_retried() {
    let fake = FakeProvider::start().await;
    fake.then([Fault::Reset, Fault::Slow(Duration::from_secs(3))]);
    let t = start_node_with(|c| {
        use_twilio(c, &fake);
        c.delivery.send_timeout = Dur(Duration::from_millis(500));
    })
    .await;
    let p = phone(4006);
    assert_eq!(register(&t, &p, "trace-reset").await.status, 202);
    let s = wait_stats(&t, |s| s.delivered == 1).await;
    assert_eq!(s.attempts, 3, "reset, timeout, success");
    let requests = fake.wait_requests(3).await;
    assert_eq!(requests[0].answered, 0, "the first was reset");
    assert_eq!(requests[2].answered, 201);
    assert_eq!(verify(&t, &p, &code_in(&requests[2].form("Body").unwrap())).await.status, 200);
}

#[tokio::test]
async fn an_open_breaker_fails_over_to_the_secondary_and_readiness_shows_it() {
    let twilio = FakeProvider::start().await;
    let hook = FakeProvider::start().await;
    twilio.always(Some(Fault::status(503)));
    let t = start_node_with(|c| {
        use_twilio(c, &twilio);
        use_webhook(c, &hook);
        c.delivery.secondary = "webhook".into();
        c.delivery.breaker_failures = 2;
        c.delivery.batch_max_size = 1;
        c.webhook.bearer_token = Some(Secret("hook-bearer-3e1d".into()));
    })
    .await;
    let p = phone(4007);
    assert_eq!(register(&t, &p, "trace-failover").await.status, 202);
    let s = wait_stats(&t, |s| s.delivered == 1).await;
    assert_eq!(twilio.requests().len(), 2, "two failures opened Twilio's breaker");
    assert!(s.failovers >= 1);
    let batch = hook.wait_requests(1).await[0].clone();
    assert_eq!(batch.authorization.as_deref(), Some("Bearer hook-bearer-3e1d"));
    let item = &batch.json()["messages"][0];
    assert_eq!((item["to"].as_str(), item["attempt"].as_u64()), (Some(p.as_str()), Some(3)));
    assert_eq!(verify(&t, &p, &code_in(item["body"].as_str().unwrap())).await.status, 200);
    let e = &delivery_events(&t, "trace-failover").await[0];
    assert_eq!(e.message, "handed to webhook on attempt 3");

    // While Twilio's breaker is open its traffic goes straight to the secondary.
    let q = phone(4008);
    assert_eq!(register(&t, &q, "trace-failover-2").await.status, 202);
    wait_stats(&t, |s| s.delivered == 2).await;
    assert_eq!(twilio.requests().len(), 2, "no request to an open breaker");
    assert_eq!(hook.requests()[1].json()["messages"][0]["attempt"], 1);

    let ready = t.ops_get("/health/ready", None).await;
    assert_eq!(ready.status, 200, "the secondary delivers, so the node is ready: {}", ready.raw);
    assert_eq!(ready.body["checks"]["delivery"]["status"], "up");
    assert_eq!(ready.body["providers"]["twilio"]["breaker"], "open");
    assert_eq!(ready.body["providers"]["twilio"]["routes"], json!(["sms:primary"]));
    assert!(ready.body["providers"]["twilio"]["retry_in_ms"].as_u64().unwrap() > 0);
    assert_eq!(ready.body["providers"]["webhook"]["breaker"], "closed");
    assert_eq!(ready.body["providers"]["webhook"]["routes"], json!(["sms:secondary"]));
    assert_eq!(ready.body["providers"]["outbox"]["routes"], json!(["email:primary"]));
}

#[tokio::test]
async fn with_no_provider_left_readiness_is_503_and_names_it() {
    let fake = FakeProvider::start().await;
    fake.always(Some(Fault::status(500)));
    let t = start_node_with(|c| {
        use_twilio(c, &fake);
        c.delivery.breaker_failures = 1;
        c.delivery.max_attempts = 1;
    })
    .await;
    assert_eq!(t.get("/health/ready", None).await.status, 200);
    assert_eq!(register(&t, &phone(4009), "trace-down").await.status, 202);
    wait_stats(&t, |s| s.given_up == 1).await;
    let ready = t.ops_get("/health/ready", None).await;
    assert_eq!(ready.status, 503, "{}", ready.raw);
    let public = t.get("/health/ready", None).await;
    assert_eq!((public.status, public.body.clone()), (503, json!({ "status": "not_ready" })), "no details in public");
    assert_eq!(ready.body["checks"]["delivery"]["status"], "down");
    assert_eq!(ready.body["checks"]["delivery"]["error"], "no sms provider available (twilio open)");
    assert_eq!(ready.body["checks"]["store"]["status"], "up");
}

#[tokio::test]
async fn the_webhook_gets_batches_that_waited_for_their_age() {
    let hook = FakeProvider::start().await;
    let age = Duration::from_secs(1);
    let t = start_node_with(|c| {
        c.delivery.provider = "webhook".into();
        use_webhook(c, &hook);
        c.delivery.batch_max_size = 50;
        c.delivery.batch_max_age = Dur(age);
    })
    .await;
    let n = 20;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, url) = (t.client.clone(), t.url("/v1/register"));
        tasks.push(tokio::spawn(async move {
            let body = json!({ "phone": phone(4100 + i), "first_name": "B", "last_name": "C" });
            let r = client.post(url).header("x-request-id", format!("batch-{i}")).json(&body).send().await.unwrap();
            r.status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 202);
    }
    wait_stats(&t, |s| s.delivered == n as u64).await;
    let posts = hook.requests();
    let messages: Vec<serde_json::Value> =
        posts.iter().flat_map(|p| p.json()["messages"].as_array().unwrap().clone()).collect();
    assert_eq!(messages.len(), n as usize, "every message once");
    assert!(posts.len() < n as usize, "{} messages in {} POSTs: batched", messages.len(), posts.len());
    assert!(posts[0].at - started >= age, "the first batch waited for its oldest message's age");

    // The JSON shape, and the codes verify.
    for i in [0, n - 1] {
        let m = messages.iter().find(|m| m["trace_id"] == format!("batch-{i}")).expect("the message of request i");
        assert_eq!(
            (m["channel"].as_str(), m["purpose"].as_str(), m["attempt"].as_u64()),
            (Some("sms"), Some("register"), Some(1))
        );
        assert_eq!(m["to"], phone(4100 + i));
        assert!(m["expires_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(m["id"].as_str().unwrap().len(), 36, "a UUID per message");
        let r = verify(&t, &phone(4100 + i), &code_in(m["body"].as_str().unwrap())).await;
        assert_eq!(r.status, 200, "{}", r.raw);
    }
}

#[tokio::test]
async fn a_full_batch_leaves_without_waiting() {
    let hook = FakeProvider::start().await;
    let t = start_node_with(|c| {
        c.delivery.provider = "webhook".into();
        use_webhook(c, &hook);
        c.delivery.batch_max_size = 5;
        c.delivery.batch_max_age = Dur(Duration::from_secs(3600));
    })
    .await;
    for i in 0..10 {
        assert_eq!(register(&t, &phone(4200 + i), &format!("full-{i}")).await.status, 202);
    }
    wait_stats(&t, |s| s.delivered == 10).await;
    let sizes: Vec<usize> = hook.requests().iter().map(|p| p.json()["messages"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [5, 5], "two full batches, no hour-long wait");
}

#[tokio::test]
async fn a_full_queue_answers_503_and_frees_up_after_delivery() {
    let fake = FakeProvider::start().await;
    fake.then([Fault::Hold]);
    let t = start_node_with(|c| {
        use_twilio(c, &fake);
        c.delivery.queue_capacity = 1;
    })
    .await;
    assert_eq!(register(&t, &phone(4301), "queue-1").await.status, 202);
    fake.wait_requests(1).await;
    let r = register(&t, &phone(4302), "queue-2").await;
    assert_eq!((r.status, r.code()), (503, "delivery_busy"), "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("retry-after"), Some("1"));
    // A login for a number without an account meets the same full queue, and says so alike.
    let unknown = t.post("/v1/login", json!({ "phone": phone(4309) })).await;
    let known = t.post("/v1/login", json!({ "phone": phone(4301) })).await;
    assert_eq!((unknown.status, unknown.code()), (503, "delivery_busy"), "{}", unknown.raw);
    assert_eq!((unknown.status, &unknown.body["detail"]), (known.status, &known.body["detail"]));
    assert_eq!(unknown.header("retry-after"), known.header("retry-after"));
    assert_eq!(t.node.delivery.stats().refused, 3);
    let events = t.node.engine.audit_log().by_trace("queue-2", 5).await.unwrap();
    assert_eq!((events[0].step.as_str(), events[0].outcome.as_str()), ("dispatch", "failed"), "the refusal is audited");

    fake.release(1);
    wait_stats(&t, |s| s.delivered == 1).await;
    assert_eq!(register(&t, &phone(4303), "queue-3").await.status, 202);
    wait_stats(&t, |s| s.delivered == 2).await;
}

#[tokio::test]
async fn an_expired_code_is_never_sent() {
    let fake = FakeProvider::start().await;
    fake.then([Fault::Hold]);
    let t = start_node_with(|c| {
        use_twilio(c, &fake);
        c.twilio.concurrency = 1;
    })
    .await;
    assert_eq!(register(&t, &phone(4401), "expiry-1").await.status, 202);
    fake.wait_requests(1).await;
    // The second waits for Twilio's only call slot while the first is held.
    assert_eq!(register(&t, &phone(4402), "expiry-2").await.status, 202);
    t.advance(Duration::from_secs(301));
    fake.release(1);
    let s = wait_stats(&t, |s| s.delivered + s.expired == 2).await;
    assert_eq!((s.delivered, s.expired), (1, 1));
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "the expired code never reached Twilio");
    assert_eq!(requests[0].form("To"), Some(phone(4401)));
    let e = &delivery_events(&t, "expiry-2").await[0];
    assert_eq!(
        (e.step.as_str(), &*e.message),
        ("expired", "the code expired before it could be sent (after 0 attempt(s))")
    );
}

#[tokio::test]
async fn a_crashed_dispatcher_is_restarted_and_delivers_what_it_held() {
    let fake = FakeProvider::start().await;
    fake.then([Fault::Hold]);
    let t = start_node_with(|c| {
        use_twilio(c, &fake);
        c.twilio.concurrency = 1;
    })
    .await;
    let (a, b, c) = (phone(4501), phone(4502), phone(4503));
    assert_eq!(register(&t, &a, "crash-a").await.status, 202);
    fake.wait_requests(1).await;
    assert_eq!(register(&t, &b, "crash-b").await.status, 202);

    t.node.delivery.inject_panic();
    let s = wait_stats(&t, |s| s.restarts == 1).await;
    assert_eq!(s.queued, 2, "both messages survived the crash");
    assert_eq!(t.get("/health/ready", None).await.status, 200, "the node never went down");
    assert_eq!(register(&t, &c, "crash-c").await.status, 202);

    fake.release(1);
    wait_stats(&t, |s| s.delivered == 3).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "each message sent once");
    for p in [&a, &b, &c] {
        let req = requests.iter().find(|r| r.form("To").as_deref() == Some(p.as_str())).unwrap();
        assert_eq!(verify(&t, p, &code_in(&req.form("Body").unwrap())).await.status, 200);
    }
    assert_eq!(t.node.engine.shard_restarts().await.unwrap(), 0, "only the dispatcher restarted");
}

/// The real binary, configured only through the environment, with every log level on: no
/// credential appears in its logs, in `otpd check-config`, in readiness or in the audit trail,
/// while Twilio refuses the credentials, fails, and the webhook takes over.
#[tokio::test]
async fn credentials_never_appear_in_logs_or_outputs() {
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_otpd");
    const HOOK_TOKEN: &str = "hook-bearer-token-c0ffee42";
    const SMTP_PASSWORD: &str = "smtp-password-d15ea5e";
    let twilio = FakeProvider::start().await;
    let hook = FakeProvider::start().await;
    twilio.then([Fault::Status { status: 401, code: Some(20003), retry_after: None }, Fault::status(500)]);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ops_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env: Vec<(&str, String)> = vec![
        ("OTPD_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ("OTPD_ADMIN__LISTEN", format!("127.0.0.1:{ops_port}")),
        ("OTPD_NODE__DATA_DIR", dir.path().display().to_string()),
        ("OTPD_NODE__LOG_LEVEL", "trace".into()),
        ("OTPD_DELIVERY__PROVIDER", "twilio".into()),
        ("OTPD_DELIVERY__SECONDARY", "webhook".into()),
        ("OTPD_DELIVERY__BREAKER_FAILURES", "2".into()),
        ("OTPD_DELIVERY__BACKOFF_BASE", "5ms".into()),
        ("OTPD_TWILIO__ACCOUNT_SID", SID.into()),
        ("OTPD_TWILIO__AUTH_TOKEN", TOKEN.into()),
        ("OTPD_TWILIO__FROM", SENDER.into()),
        ("OTPD_TWILIO__BASE_URL", twilio.url()),
        ("OTPD_WEBHOOK__URL", format!("{}/hook", hook.url())),
        ("OTPD_WEBHOOK__BEARER_TOKEN", HOOK_TOKEN.into()),
        ("OTPD_SMTP__USERNAME", "mailer".into()),
        ("OTPD_SMTP__PASSWORD", SMTP_PASSWORD.into()),
    ];
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("RUST_LOG")
        .env_remove("OTPD_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("otpd starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if client.get(format!("{base}/health/live")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = phone(4701);
    let body = json!({ "phone": p, "first_name": "S", "last_name": "T" });
    let r = client.post(format!("{base}/v1/register")).header("x-request-id", "secrets-1").json(&body).send().await;
    assert_eq!(r.unwrap().status(), 202);
    let batch = hook.wait_requests(1).await;
    assert_eq!(twilio.requests().len(), 2, "401 and 500 from Twilio, then the webhook");
    let ops = format!("http://127.0.0.1:{ops_port}");
    let ready = client.get(format!("{ops}/health/ready")).send().await.unwrap().text().await.unwrap();
    let admin = std::fs::read_to_string(dir.path().join("secrets/admin.token")).unwrap();
    let mut audit = String::new();
    for _ in 0..200 {
        audit = client
            .get(format!("{ops}/v1/admin/audit?trace_id=secrets-1"))
            .bearer_auth(admin.trim())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if audit.contains("\"delivery\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let check = Command::new(BIN).arg("check-config").envs(env.iter().map(|(k, v)| (*k, v.as_str()))).output().unwrap();
    assert!(check.status.success());

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("circuit breaker opened"), "the failures were logged (the test is not vacuous)");
    assert!(audit.contains("handed to webhook"), "{audit}");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
    let outputs = [
        ("the log", log),
        ("check-config", String::from_utf8_lossy(&check.stdout).into_owned()),
        ("readiness", ready),
        ("the audit trail", audit),
    ];
    for (what, text) in &outputs {
        for secret in [TOKEN, HOOK_TOKEN, SMTP_PASSWORD, basic.as_str()] {
            assert!(!text.contains(secret), "{what} contains a credential");
        }
    }
    // Nor the number or the code (the invariant for every log level).
    let code = code_in(batch[0].json()["messages"][0]["body"].as_str().unwrap());
    assert!(
        !outputs[0].1.contains(&code) && !outputs[0].1.contains(p.trim_start_matches('+')),
        "the log holds the code or the number"
    );
    // The requests themselves carried them, of course.
    assert_eq!(batch[0].authorization.as_deref(), Some(format!("Bearer {HOOK_TOKEN}").as_str()));
    assert_eq!(twilio.requests()[0].authorization.as_deref(), Some(format!("Basic {basic}").as_str()));
}
