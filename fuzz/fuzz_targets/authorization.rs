//! The `Authorization` header and access-token (JWT) decoding: `app::bearer` on arbitrary
//! header bytes, then `TokenService::verify` on what it extracts (and on the raw text).
//! Never a panic; a token that verifies carries this node's issuer and audience.
//!
//! The signing key is fixed (Ed25519, seed `[7; 32]`) and so is the clock, so the seed corpus
//! can hold a valid token (`fuzz/seeds/authorization`, made by `fuzz/seeds/make_seeds.py`).

#![no_main]

use std::sync::OnceLock;

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use otpd::config::Config;
use otpd::http::app::bearer;
use otpd::secrets::SigningKey;
use otpd::tokens::TokenService;
use otpd_actors::rules::clock::Timestamp;

/// PKCS#8 v1 of an Ed25519 private key: this prefix, then the 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
/// 2023-11-14T22:13:20Z: the seed token's `iat`.
const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn service() -> &'static TokenService {
    static S: OnceLock<TokenService> = OnceLock::new();
    S.get_or_init(|| {
        let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
        pkcs8.extend_from_slice(&[7; 32]);
        TokenService::new(&SigningKey::Ed25519(pkcs8), &Config::default().tokens).expect("a valid key")
    })
}

fn verify(token: &str) {
    if let Ok(claims) = service().verify(token, NOW) {
        let config = Config::default().tokens;
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (config.issuer.as_str(), config.audience.as_str()));
        assert!(claims.exp > NOW.as_secs());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        if let Some(token) = bearer(&headers) {
            assert!(!token.is_empty() && token.trim() == token);
            verify(token);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        verify(text);
    }
});
