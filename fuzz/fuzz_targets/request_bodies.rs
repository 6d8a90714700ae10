//! Request bodies: bytes into every wire type of API v1 (`app::decode_json`, as the
//! handlers call it), then every check a handler runs before the engine sees the request.
//! A body is either a 400 problem (`invalid_json` / `invalid_request`) or a typed request;
//! what the checks accept keeps the bounds the API contract publishes.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use otpd::http::problem::ApiError;
use otpd::http::app::decode_json;
use otpd::http::wire::{self, RawIdentifier};
use otpd_actors::rules::device_key::DeviceKey;
use otpd_actors::rules::identifier::Normalizer;
use otpd_actors::rules::locale::{Locale, MAX_LOCALE_LEN};
use otpd_actors::rules::refresh::RefreshToken;

fn normalizer() -> &'static Normalizer {
    static N: OnceLock<Normalizer> = OnceLock::new();
    N.get_or_init(|| Normalizer::new(Some("US"), 4096).expect("US is a region"))
}

fn refused(e: &ApiError) {
    assert_eq!(e.status().as_u16(), 400, "{}", e.code());
    assert!(["invalid_json", "invalid_request"].contains(&e.code()), "{}", e.code());
}

fn decode<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    decode_json::<T>(data).inspect_err(refused).ok()
}

fn name(field: &str, value: &str, max: usize) {
    let checked = if field == "name" { wire::device_name(value) } else { wire::name(field, value) };
    if let Ok(v) = checked {
        let chars = v.chars().count();
        assert!((1..=max).contains(&chars) && value.chars().count() <= max);
        assert!(!v.chars().any(char::is_control) && v.trim() == v);
    }
}

fn identifier(phone: &Option<String>, email: &Option<String>) {
    let Ok(raw) = wire::raw_identifier(phone, email) else {
        assert_eq!(phone.is_some(), email.is_some(), "refused only with both or neither");
        return;
    };
    let _ = match raw {
        RawIdentifier::Phone(p) => normalizer().phone(p),
        RawIdentifier::Email(e) => normalizer().email(e),
    };
}

/// An accepted `locale` is at most 35 ASCII characters, its canonical form parses to itself,
/// and its fallbacks end at its language.
fn locale(value: &Option<String>) {
    let Ok(Some(l)) = wire::locale(value.as_deref()) else { return };
    let text = value.as_deref().unwrap_or_default();
    assert!(text.len() <= MAX_LOCALE_LEN && text.is_ascii() && l.as_str().eq_ignore_ascii_case(text));
    assert_eq!(Locale::parse(l.as_str()).as_ref(), Ok(&l), "canonical is a fixed point");
    let language = l.as_str().split('-').next().unwrap_or_default();
    assert_eq!(l.fallbacks().last(), Some(language));
}

fn device_id(value: &str) {
    if let Ok(id) = wire::device_id(value) {
        assert!(id.0.hyphenated().to_string().eq_ignore_ascii_case(value));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = decode::<wire::RegisterRequest>(data) {
        name("first_name", &r.first_name, wire::MAX_NAME_CHARS);
        name("last_name", &r.last_name, wire::MAX_NAME_CHARS);
        if let Some(p) = &r.phone {
            let _ = normalizer().phone(p);
        }
        if let Some(e) = &r.email {
            let _ = normalizer().email(e);
        }
        locale(&r.locale);
    }
    if let Some(r) = decode::<wire::LoginRequest>(data) {
        identifier(&r.phone, &r.email);
        locale(&r.locale);
    }
    if let Some(r) = decode::<wire::VerifyRequest>(data) {
        identifier(&r.phone, &r.email);
        if wire::code(&r.code).is_ok() {
            assert!(r.code.len() <= wire::MAX_CODE_CHARS && r.code.is_ascii());
        }
    }
    if let Some(r) = decode::<wire::ResendRequest>(data) {
        identifier(&r.phone, &r.email);
        locale(&r.locale);
    }
    if let Some(r) = decode::<wire::RefreshRequest>(data) {
        let _ = RefreshToken::parse(&r.refresh_token);
    }
    if let Some(r) = decode::<wire::EnrolRequest>(data) {
        name("name", &r.name, wire::MAX_DEVICE_NAME_CHARS);
        if let Ok(key) = wire::key_input(&r.public_key, &r.jwk) {
            let _ = DeviceKey::parse(&key);
        }
    }
    if let Some(r) = decode::<wire::DeviceChallengeRequest>(data) {
        device_id(&r.device_id);
    }
    if let Some(r) = decode::<wire::DeviceVerifyRequest>(data) {
        device_id(&r.device_id);
        let _ = wire::nonce(&r.nonce);
        if let Ok(sig) = wire::base64_any("signature", &r.signature, wire::MAX_SIGNATURE_CHARS) {
            assert!(sig.len() <= wire::MAX_SIGNATURE_CHARS);
        }
    }
});
