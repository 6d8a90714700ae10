//! Messages in the reader's language, through a real node and its outbox: the request's
//! `locale`, else the number's country, else the default; a malformed tag refused; answers
//! that never tell a known account from an unknown one, whatever the locale; and the spend
//! budget charging the segments of the language the SMS is written in.

use std::time::Duration;

use otpd::config::SmsBudgetConfig;
use otpd_actors::rules::limits::GuardMode;
use serde_json::{Value, json};

use crate::support::*;

const FRENCH_MOBILE: &str = "+33612345678";
const INDIAN_MOBILES: [&str; 3] = ["+919876543210", "+919876543211", "+919876543212"];

/// The body of the newest message to `to` (waits for the `n`th).
async fn nth_body(t: &TestNode, to: &str, n: usize) -> String {
    let messages = t.wait_for_messages(to, n).await;
    messages[n - 1]["body"].as_str().expect("a body").to_owned()
}

#[tokio::test]
async fn an_explicit_locale_writes_the_message_in_it() {
    let t = start_node().await;
    let p = phone(7001);
    t.signed_up(&p).await;
    assert!(nth_body(&t, &p, 1).await.starts_with("Your otpd verification code is "), "+1: English");

    let r = t.post("/v1/login", json!({ "phone": p, "locale": "es-MX" })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let body = nth_body(&t, &p, 2).await;
    let code = t.messages_for(&p)[1]["code"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        format!("Tu clave de acceso a otpd es {code}. Caduca en 5 minutos. No la compartas con nadie."),
        "es-MX falls back to the shipped es"
    );
    assert_eq!(t.post("/v1/login/verify", json!({ "phone": p, "code": code })).await.status, 200);

    t.advance(Duration::from_secs(31));
    let r = t.post("/v1/otp/resend", json!({ "phone": p, "purpose": "login", "locale": "de" })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    assert!(nth_body(&t, &p, 3).await.starts_with("Ihr neuer Code für otpd: "), "resend in German");

    let q = phone(7002);
    let reg = json!({ "phone": q, "first_name": "Amal", "last_name": "Haddad", "locale": "ar" });
    assert_eq!(t.post("/v1/register", reg).await.status, 202);
    assert!(nth_body(&t, &q, 1).await.starts_with("رمز التحقق من otpd: "), "registration in Arabic");

    // E-mail: the asked locale, else the default (an address has no country).
    let r = t
        .post(
            "/v1/register",
            json!({ "email": "zoe@example.fr", "first_name": "Zoé", "last_name": "M", "locale": "fr" }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let m = &t.wait_for_messages("zoe@example.fr", 1).await[0];
    assert_eq!(m["subject"], format!("Votre code otpd : {}", m["code"].as_str().unwrap()));
    let r = t.post("/v1/register", json!({ "email": "ann@example.fr", "first_name": "Ann", "last_name": "M" })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let m = &t.wait_for_messages("ann@example.fr", 1).await[0];
    assert!(m["subject"].as_str().unwrap().starts_with("Your otpd code: "), "{m}");
}

#[tokio::test]
async fn a_french_number_without_a_locale_gets_french() {
    let t = start_node().await;
    t.signed_up(FRENCH_MOBILE).await;
    let body = nth_body(&t, FRENCH_MOBILE, 1).await;
    assert!(body.starts_with("Votre code de vérification otpd est "), "{body}");
    assert!(body.ends_with(". Il expire dans 5 minutes. Ne le partagez jamais."), "{body}");

    assert_eq!(t.post("/v1/login", json!({ "phone": FRENCH_MOBILE })).await.status, 202);
    assert!(nth_body(&t, FRENCH_MOBILE, 2).await.starts_with("Votre code de connexion otpd est "));
    t.advance(Duration::from_secs(31));
    let r = t.post("/v1/login", json!({ "phone": FRENCH_MOBILE, "locale": "en-GB" })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    assert!(nth_body(&t, FRENCH_MOBILE, 3).await.starts_with("Your otpd login code is "), "asked beats country");
    t.advance(Duration::from_secs(31));
    let r = t.post("/v1/login", json!({ "phone": FRENCH_MOBILE, "locale": "it" })).await;
    assert_eq!(r.status, 202, "{}", r.raw);
    assert!(
        nth_body(&t, FRENCH_MOBILE, 4).await.starts_with("Your otpd login code is "),
        "a language without templates: the default, not the country's"
    );
}

#[tokio::test]
async fn a_malformed_locale_is_a_400_problem_naming_the_field() {
    let t = start_node().await;
    let p = phone(7011);
    let bodies = |locale: &Value| {
        [
            ("/v1/register", json!({ "phone": p, "first_name": "A", "last_name": "B", "locale": locale })),
            ("/v1/login", json!({ "phone": p, "locale": locale })),
            ("/v1/otp/resend", json!({ "phone": p, "purpose": "login", "locale": locale })),
        ]
    };
    for bad in ["en_US", "e", "", "english", "es-", "x-klingon", &format!("en-{}", ["abcdefgh"; 4].join("-"))] {
        for (path, body) in bodies(&json!(bad)) {
            let r = t.post(path, body).await;
            assert_eq!((r.status, r.code()), (400, "invalid_request"), "{path} {bad:?}: {}", r.raw);
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
            let detail = r.body["detail"].as_str().unwrap();
            assert!(detail.starts_with("locale must be a BCP 47 language tag"), "{path} {bad:?}: {detail}");
        }
    }
    assert!(t.messages_for(&p).is_empty(), "nothing was sent");
}

/// The answer of every send is the same for an account and for a number without one, with
/// no locale, a shipped one, one that falls back, and one the node lacks; only the outbox
/// differs (login and resend reach the account alone; a registration reaches both).
#[tokio::test]
async fn answers_do_not_tell_known_from_unknown_whatever_the_locale() {
    // Sends to numbers that never verify trip the conversion guard of their prefix halfway
    // through a pair (it refuses both alike from then on); this test is about the locale.
    let t = start_node_with(|c| c.limits.conversion_guard.mode = Some(GuardMode::Off)).await;
    let locales = [None, Some("es"), Some("hi-IN"), Some("xx-YY")];
    for (i, locale) in locales.into_iter().enumerate() {
        let known = phone(7100 + i as u32 * 2);
        let unknown = phone(7101 + i as u32 * 2);
        t.signed_up(&known).await;
        let with = |mut body: Value| {
            if let Some(l) = locale {
                body["locale"] = json!(l);
            }
            body
        };
        let sends = [
            ("/v1/login", json!({})),
            ("/v1/otp/resend", json!({ "purpose": "login" })),
            ("/v1/register", json!({ "first_name": "A", "last_name": "B" })),
        ];
        for (path, extra) in sends {
            t.advance(Duration::from_secs(31));
            let mut answers = Vec::new();
            for number in [&known, &unknown] {
                let mut body = with(extra.clone());
                body["phone"] = json!(number);
                let r = t.post(path, body).await;
                answers.push((r.status, r.body));
            }
            assert_eq!(answers[0].0, 202, "{path} {locale:?}: {:?}", answers[0]);
            assert_eq!(answers[0], answers[1], "{path} with locale {locale:?}: known and unknown alike");
        }
        assert_eq!(t.wait_for_messages(&known, 4).await.len(), 4, "sign-up, login, resend, register");
        let sent = t.wait_for_messages(&unknown, 1).await;
        let purposes: Vec<&str> = sent.iter().map(|m| m["purpose"].as_str().unwrap()).collect();
        assert_eq!(purposes, ["register"], "no login or resend went to the number without an account");
    }
    let hindi = t.messages_for(&phone(7104));
    assert!(hindi[1]["body"].as_str().unwrap().starts_with("otpd लॉगिन कोड: "), "{}", hindi[1]);
}

/// A +91 budget of two segments: one Hindi code with the origin line takes both (UCS-2, 101
/// units), where English codes take one each.
#[tokio::test]
async fn the_sms_budget_charges_the_segments_of_the_language_sent() {
    let configure = |c: &mut otpd::config::Config| {
        c.delivery.origin = "login.example.com".into();
        c.limits.sms_budget = SmsBudgetConfig {
            daily: Some(100.0),
            countries: [("91".to_owned(), 0.02)].into(),
            prices: [("91".to_owned(), 0.01)].into(),
            ..SmsBudgetConfig::default()
        };
    };
    let hindi = start_node_with(configure).await;
    let r = hindi.post("/v1/login", json!({ "phone": INDIAN_MOBILES[0] })).await;
    assert_eq!(r.status, 202, "the first Hindi code: {}", r.raw);
    let r = hindi.post("/v1/login", json!({ "phone": INDIAN_MOBILES[1] })).await;
    assert_eq!((r.status, r.code()), (503, "sms_budget_exhausted"), "two segments spent: {}", r.raw);

    let english = start_node_with(configure).await;
    for number in &INDIAN_MOBILES[..2] {
        let r = english.post("/v1/login", json!({ "phone": number, "locale": "en" })).await;
        assert_eq!(r.status, 202, "an English code is one segment: {}", r.raw);
    }
    let r = english.post("/v1/login", json!({ "phone": INDIAN_MOBILES[2], "locale": "en" })).await;
    assert_eq!((r.status, r.code()), (503, "sms_budget_exhausted"), "{}", r.raw);
}
