//! Device keys and signatures: enrolled public keys in every accepted form (SPKI DER, SPKI
//! PEM, JWK members, and `wire::key_input`'s base64), signatures of every length under a P-256
//! and an Ed25519 key, and device-login nonces. Never a panic; an accepted key is stored in
//! canonical SPKI DER that parses back to the same key.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use otpd::http::wire;
use otpd_actors::rules::device_key::{DeviceKey, KeyInput, Nonce, Verifier, login_message};

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    SpkiDer(&'a [u8]),
    SpkiPem(&'a str),
    Jwk {
        kty: &'a str,
        crv: &'a str,
        x: &'a [u8],
        y: Option<&'a [u8]>,
    },
    /// `public_key` as a client sends it (PEM or base64 DER).
    PublicKeyText(&'a str),
    /// A signature under one of the fixed keys, of a login message with this nonce text.
    Signature {
        ed25519: bool,
        nonce: &'a str,
        signature: &'a [u8],
    },
}

/// Real keys, as SPKI DER in base64: the document's example P-256 key and the Ed25519 key of
/// seed `[9; 32]` (`fuzz/seeds/make_seeds.py`).
const P256_SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfguw1pGn7KfAqTEASqLZY6d7OPqBsBHPIBOBAVDghkZpaiq8ymwtILhXjc9FLrHK2uPoTJUaLQkXxSsh4jodNQ==";
const ED25519_SPKI: &str = "MCowBQYDK2VwAyEA/RckOFqgx1tk+3jNYC+h2ZH96/drE8WO1wLqyDXp9hg=";

fn verifiers() -> &'static [Verifier; 2] {
    static V: OnceLock<[Verifier; 2]> = OnceLock::new();
    V.get_or_init(|| {
        [P256_SPKI, ED25519_SPKI].map(|text| {
            let input = wire::key_input(&Some(text.to_owned()), &None).expect("base64");
            DeviceKey::parse(&input).expect("a valid key").verifier().expect("a valid key")
        })
    })
}

fn accepted(key: DeviceKey) {
    let again = DeviceKey::parse(&KeyInput::SpkiDer(key.spki_der.clone())).expect("canonical DER parses");
    assert!(again == key, "canonical form is stable");
    assert!(key.verifier().is_ok());
    assert_eq!(key.fingerprint().len(), 64);
}

fuzz_target!(|input: Input| {
    let key = match input {
        Input::SpkiDer(der) => KeyInput::SpkiDer(der.to_vec()),
        Input::SpkiPem(pem) => KeyInput::SpkiPem(pem.to_owned()),
        Input::Jwk { kty, crv, x, y } => {
            KeyInput::Jwk { kty: kty.into(), crv: crv.into(), x: x.to_vec(), y: y.map(<[u8]>::to_vec) }
        }
        Input::PublicKeyText(text) => match wire::key_input(&Some(text.to_owned()), &None) {
            Ok(k) => k,
            Err(_) => return,
        },
        Input::Signature { ed25519, nonce, signature } => {
            let Some(nonce) = Nonce::parse(nonce) else { return };
            assert!(Nonce::parse(&nonce.to_hex()) == Some(nonce));
            let message = login_message("otpd", &uuid::Uuid::nil(), &nonce);
            let _ = verifiers()[usize::from(ed25519)].verify(&message, signature);
            return;
        }
    };
    if let Ok(k) = DeviceKey::parse(&key) {
        accepted(k);
    }
});
