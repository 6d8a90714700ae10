//! Device keys for fingerprint login: parsing enrolled public keys, the signed message, and
//! signature checks (RustCrypto `p256` and `ed25519-dalek`).
//!
//! A phone keeps a private key in its secure hardware (iOS Secure Enclave, Android Keystore),
//! usable only after a fingerprint. Enrolment stores the public key; a login proves possession
//! by signing a one-time nonce:
//!
//! ```text
//! message = "otpd-device-login-v1" LF audience LF device_id LF nonce
//! ```
//!
//! * `audience` is the node's `tokens.audience` (default `otpd`), so a signature made for one
//!   deployment cannot be replayed against another;
//! * `device_id` is the enrolled device's id, lower-case hyphenated UUID;
//! * `nonce` is the 64 lower-case hex characters the challenge returned;
//! * no trailing newline; the bytes are ASCII.
//!
//! | key | accepted as | signature |
//! | --- | --- | --- |
//! | ECDSA P-256 | SPKI DER (base64), SPKI PEM, JWK `{kty:"EC",crv:"P-256",x,y}` | ECDSA over SHA-256 of the message; ASN.1 DER (what iOS `SecKeyCreateSignature(.ecdsaSignatureMessageX962SHA256)`, Android `SHA256withECDSA` and `openssl dgst -sha256 -sign` produce) or raw `r ‖ s` (64 bytes, JOSE/WebCrypto) |
//! | Ed25519 | SPKI DER (base64), SPKI PEM, JWK `{kty:"OKP",crv:"Ed25519",x}` | Ed25519 over the message itself (64 bytes), checked strictly |
//!
//! Keys are stored as canonical SPKI DER whatever form they arrived in.

use std::fmt;
use std::time::Duration;

use ed25519_dalek::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use p256::ecdsa::signature::Verifier as _;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::rules::keys::hex;

/// The device rules (from the `[devices]` config section).
#[derive(Clone, Debug)]
pub struct DevicePolicy {
    /// Active devices per account.
    pub max_per_user: usize,
    /// Oldest login by code (and access token) that may enrol a device.
    pub enrol_max_auth_age: Duration,
    /// Second line of the signed message; the node's token audience.
    pub audience: String,
}

impl DevicePolicy {
    /// Active devices per account unless configured otherwise.
    pub const MAX_PER_USER: usize = 5;
    /// How fresh a login by code must be to enrol a device, unless configured otherwise.
    pub const ENROL_MAX_AUTH_AGE: Duration = Duration::from_secs(300);
}

impl Default for DevicePolicy {
    fn default() -> Self {
        DevicePolicy {
            max_per_user: Self::MAX_PER_USER,
            enrol_max_auth_age: Self::ENROL_MAX_AUTH_AGE,
            audience: "otpd".into(),
        }
    }
}

/// First line of every signed message; changes only with an incompatible format.
pub const MESSAGE_PREFIX: &str = "otpd-device-login-v1";

/// The algorithm of an enrolled key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (JOSE `ES256`).
    Es256,
    /// Ed25519 (JOSE `EdDSA`).
    Ed25519,
}

impl KeyAlgorithm {
    /// The JOSE name, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::Ed25519 => "EdDSA",
        }
    }
}

/// A public key as a client sent it, already out of its transport encoding (base64, JSON).
#[derive(Clone, Debug)]
pub enum KeyInput {
    /// SubjectPublicKeyInfo, DER.
    SpkiDer(Vec<u8>),
    /// SubjectPublicKeyInfo, PEM (`-----BEGIN PUBLIC KEY-----`).
    SpkiPem(String),
    /// A JSON Web Key's members (coordinates already base64url-decoded).
    Jwk { kty: String, crv: String, x: Vec<u8>, y: Option<Vec<u8>> },
}

/// Why a public key cannot be enrolled. The message is safe to return.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn key_error(msg: impl Into<String>) -> KeyError {
    KeyError(msg.into())
}

/// An enrolled public key: its algorithm and canonical SPKI DER.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKey {
    pub algorithm: KeyAlgorithm,
    pub spki_der: Vec<u8>,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({}, sha256:{})", self.algorithm.as_str(), &self.fingerprint()[..16])
    }
}

impl DeviceKey {
    /// Parses and validates a key in any accepted form; the result is canonical SPKI DER.
    pub fn parse(input: &KeyInput) -> Result<DeviceKey, KeyError> {
        let verifier = match input {
            KeyInput::SpkiDer(der) => Verifier::from_spki_der(der)?,
            KeyInput::SpkiPem(pem) => Verifier::from_spki_pem(pem)?,
            KeyInput::Jwk { kty, crv, x, y } => Verifier::from_jwk(kty, crv, x, y.as_deref())?,
        };
        let spki_der = verifier.to_spki_der()?;
        Ok(DeviceKey { algorithm: verifier.algorithm(), spki_der })
    }

    /// The key ready to check signatures. Stored keys were validated at enrolment, so an
    /// error here means a corrupt record.
    pub fn verifier(&self) -> Result<Verifier, KeyError> {
        let v = Verifier::from_spki_der(&self.spki_der)?;
        if v.algorithm() != self.algorithm {
            return Err(key_error("stored key algorithm does not match its SPKI"));
        }
        Ok(v)
    }

    /// SHA-256 of the SPKI DER, lower-case hex: what
    /// `openssl pkey -pubin -outform DER | sha256sum` prints for the same key.
    pub fn fingerprint(&self) -> String {
        hex(&sha2::Sha256::digest(&self.spki_der))
    }
}

/// A parsed public key that checks signatures.
#[derive(Clone, Debug)]
pub enum Verifier {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Verifier {
    fn from_spki_der(der: &[u8]) -> Result<Verifier, KeyError> {
        if der.len() > 1024 {
            return Err(key_error("public key is too long to be a P-256 or Ed25519 key"));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Verifier::P256(k));
        }
        match ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            Ok(k) => Self::ed25519(k),
            Err(_) => Err(key_error(
                "public_key is not a SubjectPublicKeyInfo of an ECDSA P-256 or Ed25519 key (other curves and RSA are not accepted)",
            )),
        }
    }

    fn from_spki_pem(pem: &str) -> Result<Verifier, KeyError> {
        if pem.len() > 2048 {
            return Err(key_error("public key is too long to be a P-256 or Ed25519 key"));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Verifier::P256(k));
        }
        match ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            Ok(k) => Self::ed25519(k),
            Err(_) => Err(key_error("public_key is not a PEM \"PUBLIC KEY\" (SPKI) of an ECDSA P-256 or Ed25519 key")),
        }
    }

    fn from_jwk(kty: &str, crv: &str, x: &[u8], y: Option<&[u8]>) -> Result<Verifier, KeyError> {
        match (kty, crv, y) {
            ("EC", "P-256", Some(y)) => {
                if x.len() != 32 || y.len() != 32 {
                    return Err(key_error("jwk: x and y of a P-256 key are 32 bytes each"));
                }
                let mut sec1 = [0u8; 65];
                sec1[0] = 0x04;
                sec1[1..33].copy_from_slice(x);
                sec1[33..].copy_from_slice(y);
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map(Verifier::P256)
                    .map_err(|_| key_error("jwk: the point is not on the P-256 curve"))
            }
            ("EC", "P-256", None) => Err(key_error("jwk: a P-256 key needs y")),
            ("OKP", "Ed25519", None) => {
                let bytes: [u8; 32] = x.try_into().map_err(|_| key_error("jwk: x of an Ed25519 key is 32 bytes"))?;
                let k = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| key_error("jwk: x is not an Ed25519 public key"))?;
                Self::ed25519(k)
            }
            ("OKP", "Ed25519", Some(_)) => Err(key_error("jwk: an Ed25519 key has no y")),
            _ => Err(key_error("jwk: only {kty:\"EC\",crv:\"P-256\"} and {kty:\"OKP\",crv:\"Ed25519\"} are accepted")),
        }
    }

    fn ed25519(k: ed25519_dalek::VerifyingKey) -> Result<Verifier, KeyError> {
        // A small-order point would let one signature verify for many messages.
        if k.is_weak() {
            return Err(key_error("the Ed25519 public key is a weak (small-order) point"));
        }
        Ok(Verifier::Ed25519(k))
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Verifier::P256(_) => KeyAlgorithm::Es256,
            Verifier::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    fn to_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        let doc = match self {
            Verifier::P256(k) => p256::pkcs8::EncodePublicKey::to_public_key_der(k),
            Verifier::Ed25519(k) => k.to_public_key_der(),
        };
        doc.map(|d| d.as_bytes().to_vec()).map_err(|e| key_error(format!("cannot encode the key: {e}")))
    }

    /// Whether `signature` signs `message` under this key. P-256 accepts ASN.1 DER and raw
    /// `r ‖ s`; Ed25519 uses strict verification (no malleable or small-order signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Verifier::P256(k) => {
                if let Ok(sig) = p256::ecdsa::DerSignature::from_bytes(signature)
                    && k.verify(message, &sig).is_ok()
                {
                    return true;
                }
                // A 64-byte input may be raw r ‖ s (and, rarely, also parse as DER).
                signature.len() == 64
                    && p256::ecdsa::Signature::from_slice(signature).is_ok_and(|sig| k.verify(message, &sig).is_ok())
            }
            Verifier::Ed25519(k) => match ed25519_dalek::Signature::from_slice(signature) {
                Ok(sig) => k.verify_strict(message, &sig).is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// A device-login nonce: 32 random bytes. Shown to clients as 64 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; 32]);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(..)")
    }
}

/// Length of a nonce as text.
pub const NONCE_HEX_LEN: usize = 64;

impl Nonce {
    pub fn generate() -> Self {
        Nonce(rand::rng().random())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Nonce(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses the 64 lower-case hex characters of [`Nonce::to_hex`] (upper case is accepted).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != NONCE_HEX_LEN {
            return None;
        }
        let mut out = [0u8; 32];
        let bytes = text.as_bytes();
        for (i, slot) in out.iter_mut().enumerate() {
            let hi = (bytes[2 * i] as char).to_digit(16)?;
            let lo = (bytes[2 * i + 1] as char).to_digit(16)?;
            *slot = (hi * 16 + lo) as u8;
        }
        Some(Nonce(out))
    }
}

/// The exact bytes a device signs (see the module doc).
pub fn login_message(audience: &str, device_id: &uuid::Uuid, nonce: &Nonce) -> Vec<u8> {
    format!("{MESSAGE_PREFIX}\n{audience}\n{}\n{}", device_id.hyphenated(), nonce.to_hex()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;

    fn p256_key(seed: u8) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn ed_key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn p256_keys_parse_from_every_form_to_one_canonical_spki() {
        let sk = p256_key(7);
        let vk = sk.verifying_key();
        let der = vk.to_public_key_der().unwrap().as_bytes().to_vec();
        let pem = vk.to_public_key_pem(Default::default()).unwrap();
        let point = vk.to_sec1_point(false);
        let jwk = KeyInput::Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: point.x().unwrap().to_vec(),
            y: Some(point.y().unwrap().to_vec()),
        };
        let a = DeviceKey::parse(&KeyInput::SpkiDer(der.clone())).unwrap();
        let b = DeviceKey::parse(&KeyInput::SpkiPem(pem)).unwrap();
        let c = DeviceKey::parse(&jwk).unwrap();
        assert_eq!(a.algorithm, KeyAlgorithm::Es256);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.spki_der, der);
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn ed25519_keys_parse_from_every_form() {
        let vk = ed_key(3).verifying_key();
        let der = vk.to_public_key_der().unwrap().as_bytes().to_vec();
        let pem = vk.to_public_key_pem(Default::default()).unwrap();
        let jwk = KeyInput::Jwk { kty: "OKP".into(), crv: "Ed25519".into(), x: vk.to_bytes().to_vec(), y: None };
        let a = DeviceKey::parse(&KeyInput::SpkiDer(der)).unwrap();
        assert_eq!(a.algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(a, DeviceKey::parse(&KeyInput::SpkiPem(pem)).unwrap());
        assert_eq!(a, DeviceKey::parse(&jwk).unwrap());
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        let cases = vec![
            KeyInput::SpkiDer(vec![]),
            KeyInput::SpkiDer(vec![0x30; 91]),
            KeyInput::SpkiDer(vec![0; 5000]),
            KeyInput::SpkiPem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into()),
            KeyInput::Jwk { kty: "EC".into(), crv: "P-384".into(), x: vec![1; 48], y: Some(vec![1; 48]) },
            KeyInput::Jwk { kty: "EC".into(), crv: "P-256".into(), x: vec![1; 32], y: Some(vec![1; 32]) },
            KeyInput::Jwk { kty: "EC".into(), crv: "P-256".into(), x: vec![1; 32], y: None },
            KeyInput::Jwk { kty: "OKP".into(), crv: "Ed25519".into(), x: vec![1; 31], y: None },
            KeyInput::Jwk { kty: "RSA".into(), crv: "".into(), x: vec![], y: None },
            // The identity point: small order.
            KeyInput::Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: {
                    let mut x = vec![0; 32];
                    x[0] = 1;
                    x
                },
                y: None,
            },
        ];
        for c in cases {
            let e = DeviceKey::parse(&c).unwrap_err();
            assert!(!e.0.is_empty(), "{c:?}");
        }
    }

    #[test]
    fn p256_signatures_verify_in_der_and_raw_form_and_only_for_their_message() {
        let sk = p256_key(9);
        let key =
            DeviceKey::parse(&KeyInput::SpkiDer(sk.verifying_key().to_public_key_der().unwrap().as_bytes().to_vec()))
                .unwrap();
        let v = key.verifier().unwrap();
        let nonce = Nonce::generate();
        let device = uuid::Uuid::now_v7();
        let msg = login_message("otpd", &device, &nonce);
        let sig: p256::ecdsa::Signature = sk.sign(&msg);
        assert!(v.verify(&msg, sig.to_der().as_bytes()));
        assert!(v.verify(&msg, &sig.to_bytes()));
        // The high-S twin (n - s), which OpenSSL and some hardware signers emit, is accepted too.
        let (r, s_) = sig.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s_).to_bytes()).unwrap();
        assert_ne!(high, sig);
        assert!(v.verify(&msg, high.to_der().as_bytes()));
        let other = login_message("otpd", &device, &Nonce::generate());
        assert!(!v.verify(&other, sig.to_der().as_bytes()), "another nonce");
        assert!(!v.verify(&login_message("other-audience", &device, &nonce), &sig.to_bytes()), "another audience");
        let foreign: p256::ecdsa::Signature = p256_key(10).sign(&msg);
        assert!(!v.verify(&msg, foreign.to_der().as_bytes()), "another key");
        for junk in [&[][..], &[0u8; 64][..], &[0x30, 0x06, 2, 1, 1, 2, 1, 1][..], &[0xff; 300][..]] {
            assert!(!v.verify(&msg, junk));
        }
    }

    #[test]
    fn ed25519_signatures_verify_only_for_their_message_and_key() {
        use ed25519_dalek::Signer as _;
        let sk = ed_key(4);
        let v =
            DeviceKey::parse(&KeyInput::SpkiDer(sk.verifying_key().to_public_key_der().unwrap().as_bytes().to_vec()))
                .unwrap()
                .verifier()
                .unwrap();
        let msg = login_message("otpd", &uuid::Uuid::now_v7(), &Nonce::generate());
        let sig = sk.sign(&msg).to_bytes();
        assert!(v.verify(&msg, &sig));
        assert!(!v.verify(&msg[1..], &sig));
        assert!(!v.verify(&msg, &ed_key(5).sign(&msg).to_bytes()));
        assert!(!v.verify(&msg, &sig[..63]));
    }

    #[test]
    fn the_message_is_the_documented_text() {
        let nonce = Nonce::parse(&"ab".repeat(32)).unwrap();
        let id = uuid::Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        assert_eq!(
            String::from_utf8(login_message("otpd", &id, &nonce)).unwrap(),
            format!("otpd-device-login-v1\notpd\n01890a5d-ac96-774b-bcce-b302099a8057\n{}", "ab".repeat(32))
        );
    }

    #[test]
    fn nonces_round_trip_and_junk_is_refused() {
        let n = Nonce::generate();
        assert_eq!(Nonce::parse(&n.to_hex()), Some(n));
        assert_eq!(Nonce::parse(&n.to_hex().to_uppercase()), Some(n));
        assert_eq!(Nonce::parse(""), None);
        assert_eq!(Nonce::parse(&"g".repeat(64)), None);
        assert_eq!(Nonce::parse(&"é".repeat(32)), None);
        assert_eq!(Nonce::parse(&"a".repeat(63)), None);
        assert_ne!(Nonce::generate(), Nonce::generate());
        assert_eq!(format!("{n:?}"), "Nonce(..)");
    }
}
