//! Delivery receipts against the Twilio-shaped server of [`crate::fake_provider`], which calls
//! otpd back like Twilio does (`StatusCallback`, signed with `X-Twilio-Signature`): a message
//! reported delivered; one reported undelivered, sent again on the next route (the outbox) and
//! verified; one with no receipt, sent again after `delivery.receipt_timeout`; mis-signed and
//! unsigned callbacks refused and counted; a callback for an unknown message ignored.

use std::time::Duration;

use otpd::config::Dur;
use otpd_actors::ports::AuditEvent;
use serde_json::json;

use crate::delivery::{TOKEN, code_in, use_twilio};
use crate::fake_provider::{FakeProvider, Receipt, twilio_signature};
use crate::support::*;
use otpd_actors::rules::audit::AuditOutcome;

/// Twilio with receipts at this node's callback URL (a reserved port, so the URL is known
/// before the node starts), the outbox as the next route, and a receipt timeout.
fn configure(c: &mut otpd::config::Config, fake: &FakeProvider, port: u16) {
    use_twilio(c, fake);
    c.http.listen = format!("127.0.0.1:{port}").parse().unwrap();
    c.twilio.status_callback_url = format!("http://127.0.0.1:{port}/v1/delivery/twilio/status");
    c.delivery.secondary = "outbox".into();
    c.delivery.receipt_timeout = Dur(Duration::from_secs(60));
}

async fn register(t: &TestNode, phone: &str, trace: &str) -> Reply {
    let body = json!({ "phone": phone, "first_name": "Ada", "last_name": "Lovelace" });
    let r = t.client.post(t.url("/v1/register")).header("x-request-id", trace).json(&body).send().await.unwrap();
    into_reply(r).await
}

/// The delivery events of `trace` once one has step `step` (at most 10 s).
async fn events_until(t: &TestNode, trace: &str, step: &str) -> Vec<AuditEvent> {
    for _ in 0..1000 {
        let mut events = t.node.engine.audit_log().by_trace(trace, 50).await.unwrap();
        events.retain(|e| e.api == "delivery");
        if events.iter().any(|e| e.step == step) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = t.node.engine.audit_log().by_trace(trace, 50).await.unwrap();
    panic!("no delivery event {step} for {trace}: {events:?}");
}

async fn metrics(t: &TestNode) -> String {
    t.ops_get("/metrics", None).await.raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_receipt_ends_the_watch_and_is_audited() {
    let fake = FakeProvider::start().await;
    fake.receipts(TOKEN, [Some(Receipt { status: "delivered", error_code: None })]);
    let t = start_node_with(|c| configure(c, &fake, reserved_port())).await;
    let p = phone(6101);
    assert_eq!(register(&t, &p, "receipt-delivered").await.status, 202);
    let req = &fake.wait_requests(1).await[0];
    let callback = req.form("StatusCallback").expect("each message names its StatusCallback");
    assert!(callback.contains("/v1/delivery/twilio/status?d="), "{callback}");
    let events = events_until(&t, "receipt-delivered", "receipt_delivered").await;
    assert!(events.iter().any(|e| e.message == "twilio reports it delivered"), "{events:?}");
    assert!(events.iter().all(|e| !e.message.contains(&p[1..])), "no number in the trail");
    for _ in 0..100 {
        if t.node.delivery.watched() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(t.node.delivery.watched(), 0, "delivered: no longer watched");
    let m = metrics(&t).await;
    let delivered = r#"otpd_delivery_receipts_total{provider="twilio",channel="sms",country="1",status="delivered"} 1"#;
    assert!(m.contains(delivered), "{}", grep(&m, "receipts_total"));
    assert!(m.contains("otpd_delivery_time_to_delivered_seconds_count"), "time to delivered measured");
    assert!(t.messages_for(&p).is_empty(), "nothing went to the next route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_code_goes_out_on_the_next_route_and_verifies() {
    let fake = FakeProvider::start().await;
    fake.receipts(TOKEN, [Some(Receipt { status: "undelivered", error_code: Some(30003) })]);
    let t = start_node_with(|c| configure(c, &fake, reserved_port())).await;
    let p = phone(6102);
    assert_eq!(register(&t, &p, "receipt-undelivered").await.status, 202);
    let sent = code_in(&fake.wait_requests(1).await[0].form("Body").unwrap());
    let events = events_until(&t, "receipt-undelivered", "failover").await;
    assert!(
        events.iter().any(|e| e.step == "receipt_failed" && e.message == "twilio reports it undelivered (error 30003)")
    );
    assert!(events.iter().any(|e| e.step == "failover" && e.message == "sent again on another route (undelivered)"));
    let again = t.code_for(&p).await;
    assert_eq!(again, sent, "the same code, through the outbox");
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": again })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(fake.requests().len(), 1, "Twilio was not asked again: once per route");
    let m = metrics(&t).await;
    assert!(
        m.contains(r#"otpd_delivery_receipt_failovers_total{reason="undelivered"} 1"#),
        "{}",
        grep(&m, "failovers")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_without_a_receipt_goes_out_again_after_the_timeout() {
    let fake = FakeProvider::start().await;
    fake.receipts(TOKEN, [None]);
    let t = start_node_with(|c| configure(c, &fake, reserved_port())).await;
    let p = phone(6103);
    assert_eq!(register(&t, &p, "receipt-none").await.status, 202);
    let sent = code_in(&fake.wait_requests(1).await[0].form("Body").unwrap());
    // Watched, not yet overdue: nothing happens in a second and a half of real time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(t.messages_for(&p).is_empty(), "not overdue yet");
    assert_eq!(t.node.delivery.watched(), 1);
    t.advance(Duration::from_secs(61));
    let events = events_until(&t, "receipt-none", "failover").await;
    assert!(events.iter().any(|e| e.message == "no delivery receipt from twilio within its timeout"), "{events:?}");
    assert_eq!(t.code_for(&p).await, sent);
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": sent })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_without_the_signature_are_refused_and_unknown_ones_ignored() {
    let fake = FakeProvider::start().await;
    let port = reserved_port();
    let t = start_node_with(|c| configure(c, &fake, port)).await;
    let url = format!("http://127.0.0.1:{port}/v1/delivery/twilio/status");
    let target = format!("{url}?d=0191e0c2-7f1a-7000-8000-000000000001");
    let form = vec![("MessageSid".to_owned(), "SM1".to_owned()), ("MessageStatus".to_owned(), "delivered".to_owned())];
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
    let post = |signature: Option<String>| {
        let mut req =
            t.client.post(&target).header("content-type", "application/x-www-form-urlencoded").body(body.clone());
        if let Some(s) = signature {
            req = req.header("x-twilio-signature", s);
        }
        async move { into_reply(req.send().await.unwrap()).await }
    };
    let unsigned = post(None).await;
    assert_eq!((unsigned.status, unsigned.code()), (403, "invalid_callback_signature"), "{}", unsigned.raw);
    assert_eq!(unsigned.header("content-type"), Some("application/problem+json"));
    let wrong = post(Some(twilio_signature("another-token", &target, &form))).await;
    assert_eq!((wrong.status, wrong.code()), (403, "invalid_callback_signature"), "{}", wrong.raw);
    let other_url = post(Some(twilio_signature(TOKEN, &url, &form))).await;
    assert_eq!(other_url.status, 403, "the query is signed too: {}", other_url.raw);
    // Authentic, about a message nobody watches: answered like any, ignored.
    let unknown = post(Some(twilio_signature(TOKEN, &target, &form))).await;
    assert_eq!(unknown.status, 204, "{}", unknown.raw);
    let garbage = into_reply(
        t.client
            .post(&target)
            .header("content-type", "application/json")
            .header("x-twilio-signature", "x")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(garbage.status, 415, "{}", garbage.raw);
    // Authentic, about a message whose code has expired: ignored too.
    let p = phone(6109);
    assert_eq!(register(&t, &p, "receipt-expired").await.status, 202);
    let callback = fake.wait_requests(1).await[0].form("StatusCallback").unwrap();
    t.advance(Duration::from_secs(301));
    let late = vec![("MessageSid".to_owned(), "SM2".to_owned()), ("MessageStatus".to_owned(), "delivered".to_owned())];
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&late).finish();
    let r = t
        .client
        .post(&callback)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", twilio_signature(TOKEN, &callback, &late))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let events = t.node.engine.audit_log().by_trace("receipt-expired", 20).await.unwrap();
    assert!(events.iter().all(|e| e.step != "receipt_delivered"), "an expired code's receipt is ignored: {events:?}");
    let m = metrics(&t).await;
    assert!(
        m.contains(r#"otpd_delivery_callbacks_refused_total{provider="twilio",reason="missing"} 1"#),
        "{}",
        grep(&m, "refused")
    );
    assert!(
        m.contains(r#"otpd_delivery_callbacks_refused_total{provider="twilio",reason="mismatch"} 2"#),
        "{}",
        grep(&m, "refused")
    );
}

fn grep(text: &str, what: &str) -> String {
    text.lines().filter(|l| l.contains(what)).collect::<Vec<_>>().join("\n")
}

/// The webhook gateway reports with its own signature: a signed `delivered` ends the watch; a
/// signed `failed` sends the code on through the next route; a mis-signed one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_reports_receipts_with_its_own_signature() {
    let hook = FakeProvider::start().await;
    let secret = "receipt-secret-4b1d";
    let t = start_node_with(|c| {
        crate::delivery::use_webhook(c, &hook);
        c.delivery.provider = "webhook".into();
        c.delivery.secondary = "outbox".into();
        c.webhook.receipt_secret = Some(otpd::config::Secret(secret.into()));
    })
    .await;
    let report = |id: String, status: &'static str, signature: Option<&'static str>| {
        let body = json!({ "id": id, "status": status, "error_code": 30008 }).to_string();
        let signature = signature
            .map_or_else(|| otpd::delivery::receipts::webhook_signature(secret, body.as_bytes()), str::to_owned);
        let req = t
            .client
            .post(t.url("/v1/delivery/webhook/status"))
            .header("content-type", "application/json")
            .header("x-otpd-signature", signature)
            .body(body);
        async move { into_reply(req.send().await.unwrap()).await }
    };
    let (a, b) = (phone(6104), phone(6105));
    assert_eq!(register(&t, &a, "hook-a").await.status, 202);
    assert_eq!(register(&t, &b, "hook-b").await.status, 202);
    let batches = hook.wait_requests(1).await;
    let messages: Vec<serde_json::Value> =
        batches.iter().flat_map(|r| r.json()["messages"].as_array().cloned().unwrap_or_default()).collect();
    let id_of = |to: &str| {
        messages.iter().find(|m| m["to"] == to).map(|m| m["id"].as_str().unwrap().to_owned()).expect("a message")
    };
    let forged = report(id_of(&a), "failed", Some("sha256=00")).await;
    assert_eq!((forged.status, forged.code()), (403, "invalid_callback_signature"), "{}", forged.raw);
    assert_eq!(report(id_of(&a), "delivered", None).await.status, 204);
    events_until(&t, "hook-a", "receipt_delivered").await;
    assert_eq!(report(id_of(&b), "failed", None).await.status, 204);
    let events = events_until(&t, "hook-b", "failover").await;
    assert!(events.iter().any(|e| e.message == "webhook reports it failed (error 30008)"), "{events:?}");
    let code = t.code_for(&b).await;
    let r = t.post("/v1/register/verify", json!({ "phone": b, "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(t.messages_for(&a).is_empty(), "a was delivered: nothing more sent");
}

const WHATSAPP_FROM: &str = "+14155238886";
const VOICE_FROM: &str = "+15005550009";
const CONTENT_SID: &str = "HX0123456789abcdef0123456789abcdef";

/// SMS, then WhatsApp, then voice on the SMS route, all Twilio, with receipts.
fn three_ways(c: &mut otpd::config::Config, fake: &FakeProvider, port: u16) {
    configure(c, fake, port);
    c.delivery.secondary = "twilio_whatsapp".into();
    c.delivery.fallback = vec!["twilio_voice".into()];
    c.twilio.whatsapp_from = WHATSAPP_FROM.into();
    c.twilio.whatsapp_content_sid = CONTENT_SID.into();
    c.twilio.voice_from = VOICE_FROM.into();
}

/// The `<Say>` texts of a TwiML document, parsed by Python's XML parser (an independent
/// reader: TwiML that is not XML fails here).
fn say_texts(twiml: &str) -> Vec<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; r = E.fromstring(sys.stdin.read()); \
                      assert r.tag == 'Response'; print('\\n'.join(s.text for s in r.iter('Say')))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test.sh installs it)");
    child.stdin.take().unwrap().write_all(twiml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the TwiML parses as XML: {twiml}");
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_and_voice_have_twilios_shapes_and_a_channel_picks_the_way() {
    let fake = FakeProvider::start().await;
    let t = start_node_with(|c| three_ways(c, &fake, reserved_port())).await;
    let p = phone(6106);

    // Registration by WhatsApp: the Messages API with whatsapp: addresses and the template.
    let body = json!({ "phone": p, "first_name": "Ada", "last_name": "Lovelace", "channel": "whatsapp" });
    assert_eq!(t.post("/v1/register", body).await.status, 202);
    let w = &fake.wait_requests(1).await[0];
    assert!(w.path.ends_with("/Messages.json"), "{}", w.path);
    assert_eq!(w.form("To"), Some(format!("whatsapp:{p}")));
    assert_eq!(w.form("From").as_deref(), Some(format!("whatsapp:{WHATSAPP_FROM}").as_str()));
    assert_eq!(w.form("ContentSid").as_deref(), Some(CONTENT_SID));
    assert_eq!(w.form("Body"), None, "a template, not free text");
    let vars: serde_json::Value = serde_json::from_str(&w.form("ContentVariables").unwrap()).unwrap();
    let code = vars["1"].as_str().expect("the code is variable 1").to_owned();
    assert_eq!(code.len(), 6);

    // A resend by voice: the Calls API, TwiML that reads the new code digit by digit, twice.
    t.advance(Duration::from_secs(31));
    let body = json!({ "phone": p, "purpose": "register", "channel": "voice" });
    assert_eq!(t.post("/v1/otp/resend", body).await.status, 202);
    let v = &fake.wait_requests(2).await[1];
    assert!(v.path.ends_with("/Calls.json"), "{}", v.path);
    assert_eq!(v.form("To").as_deref(), Some(p.as_str()));
    assert_eq!(v.form("From").as_deref(), Some(VOICE_FROM));
    assert!(v.form("StatusCallback").unwrap().contains("?d="));
    let says = say_texts(&v.form("Twiml").unwrap());
    assert_eq!(says.len(), 2, "{says:?}");
    let spoken: Vec<String> = says.iter().map(|s| s.chars().filter(char::is_ascii_digit).collect()).collect();
    assert_eq!(spoken[0], spoken[1], "read twice");
    assert!(says[0].contains(", "), "digit by digit: {says:?}");
    let r = t.post("/v1/register/verify", json!({ "phone": p, "code": spoken[0] })).await;
    assert_eq!(r.status, 200, "the code read out verifies: {}", r.raw);

    // A way the route does not have is refused, whatever the identifier.
    let body = json!({ "phone": phone(6107), "channel": "carrier-pigeon" });
    let r = t.post("/v1/login", body).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_sms_goes_on_by_whatsapp_then_an_unanswered_call_ends_it() {
    let fake = FakeProvider::start().await;
    fake.receipts(
        TOKEN,
        [
            Some(Receipt { status: "undelivered", error_code: Some(30005) }),
            Some(Receipt { status: "failed", error_code: Some(63016) }),
            Some(Receipt { status: "no-answer", error_code: None }),
        ],
    );
    let t = start_node_with(|c| three_ways(c, &fake, reserved_port())).await;
    let p = phone(6108);
    assert_eq!(register(&t, &p, "three-ways").await.status, 202);
    let requests = fake.wait_requests(3).await;
    let paths: Vec<(&str, Option<String>)> =
        requests.iter().map(|r| (r.path.rsplit('/').next().unwrap(), r.form("To"))).collect();
    assert_eq!(
        paths,
        [
            ("Messages.json", Some(p.clone())),
            ("Messages.json", Some(format!("whatsapp:{p}"))),
            ("Calls.json", Some(p.clone()))
        ],
        "SMS, then WhatsApp, then voice: the route's order"
    );
    let events = events_until(&t, "three-ways", "failover").await;
    let ended = |e: &AuditEvent| e.step == "failover" && e.message.contains("every route of its channel carried it");
    for _ in 0..500 {
        let events = t.node.engine.audit_log().by_trace("three-ways", 50).await.unwrap();
        if events.iter().any(ended) {
            let failovers = events.iter().filter(|e| e.step == "failover" && e.outcome == AuditOutcome::Ok).count();
            assert_eq!(failovers, 2, "{events:?}");
            assert_eq!(fake.requests().len(), 3, "no provider twice");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the last way's no-answer did not end the code's delivery: {events:?}");
}
