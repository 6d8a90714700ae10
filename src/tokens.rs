//! Access tokens (JWT) and the JWKS that lets anyone verify them.
//!
//! Claims: `iss`, `aud`, `sub` (user id), `sid` (session id), `iat`, `exp`, `jti`. The header
//! carries `kid`: for EdDSA the RFC 7638 thumbprint of the public key, so key rotation can
//! publish several keys side by side. HS256 tokens are signed by jsonwebtoken; EdDSA tokens
//! are put together here, in the same form, with an `aws_lc_rs` key pair parsed once per key:
//! `jsonwebtoken::encode` parses the PKCS#8 key again for every token, which derives the public
//! key, a second scalar multiplication as dear as the signature itself (docs/PERFORMANCE.md).
//! Verifying uses jsonwebtoken for both.
//!
//! Expiry is checked here against the engine's clock, not by jsonwebtoken against the system
//! clock, so tests that move time also move token expiry.
//!
//! # Several keys (rotation)
//!
//! The service holds a set of [`SigningEntry`]s, one per generation of the signing key
//! (`crate::keyring` loads them): generation 0 is the configured or generated key, later ones
//! come from `otpd keys rotate`. At a time `now`:
//! * the newest generation whose `activates_at` has come signs;
//! * a generation is *published* (JWKS, and accepted by `verify`) from when it is known until
//!   every token it can have signed has expired: its successor's activation, plus
//!   `access_ttl`, plus [`RETIRE_MARGIN`] (clocks of nodes differ a little). A generation not
//!   yet active is published already, so verifiers learn a key before any token carries it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::{SessionId, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::TokensConfig;
use crate::secrets::SigningKey;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

impl AccessClaims {
    pub fn user(&self) -> UserId {
        UserId(self.sub)
    }

    pub fn session(&self) -> SessionId {
        SessionId(self.sid)
    }
}

/// Why a bearer token was refused. The message is safe to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is malformed or its signature is not valid")]
    Invalid,
    #[error("the access token has expired")]
    Expired,
}

pub struct TokenService {
    algorithm: Algorithm,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    validation: Validation,
    /// Every generation known, oldest first; replaced whole when the key ring changes.
    keys: ArcSwap<Vec<Arc<SigningEntry>>>,
}

/// One generation of the signing key, ready to sign and verify.
pub struct SigningEntry {
    pub generation: u32,
    /// When it starts signing (generation 0: always).
    pub activates_at: Timestamp,
    kid: String,
    signer: Signer,
    decoding: DecodingKey,
    /// The public key as a JWK; `None` for a shared secret (HS256), which is never published.
    jwk: Option<serde_json::Value>,
}

/// How an entry signs its tokens.
enum Signer {
    /// The key pair, parsed once, and the header every token it signs carries (base64url).
    Ed25519 { pair: aws_lc_rs::signature::Ed25519KeyPair, header: String },
    /// A shared secret, through jsonwebtoken.
    Hs256(EncodingKey),
}

impl SigningEntry {
    pub fn new(generation: u32, activates_at: Timestamp, key: &SigningKey) -> Result<Self, SigningKeyError> {
        let (signer, decoding, kid, jwk) = match key {
            SigningKey::Ed25519(pkcs8) => {
                use aws_lc_rs::signature::KeyPair as _;
                let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8)?;
                let public = pair.public_key().as_ref().to_vec();
                let x = URL_SAFE_NO_PAD.encode(&public);
                let kid = ed25519_thumbprint(&x);
                let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" });
                let header = serde_json::to_vec(&token_header(Algorithm::EdDSA, &kid)).expect("a header serialises");
                let header = URL_SAFE_NO_PAD.encode(header);
                (Signer::Ed25519 { pair, header }, DecodingKey::from_ed_der(&public), kid, Some(jwk))
            }
            SigningKey::Hs256(secret) => {
                let kid = format!("hs256-{}", &blake3::hash(secret).to_hex()[..16]);
                (Signer::Hs256(EncodingKey::from_secret(secret)), DecodingKey::from_secret(secret), kid, None)
            }
        };
        Ok(SigningEntry { generation, activates_at, kid, signer, decoding, jwk })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// The header of every token: the algorithm, the signing key's id, and `typ`.
fn token_header(algorithm: Algorithm, kid: &str) -> Header {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".into());
    header
}

/// How long after every token a key signed has expired it is still published: the leeway
/// other verifiers (and other nodes' clocks) get.
pub const RETIRE_MARGIN: Duration = Duration::from_secs(IAT_LEEWAY_SECS);

/// The configured Ed25519 signing key was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SigningKeyError(#[from] aws_lc_rs::error::KeyRejected);

/// Leeway for clocks of other verifiers; applied to `iat` only (expiry is exact).
const IAT_LEEWAY_SECS: u64 = 60;

impl TokenService {
    pub fn new(key: &SigningKey, config: &TokensConfig) -> Result<Self, SigningKeyError> {
        // With only the aws_lc_rs feature, jsonwebtoken picks its provider itself; installing it
        // explicitly keeps that true if another crate ever enables rust_crypto as well.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
        let algorithm = match key {
            SigningKey::Ed25519(_) => Algorithm::EdDSA,
            SigningKey::Hs256(_) => Algorithm::HS256,
        };
        let base = SigningEntry::new(0, Timestamp::from_millis(0), key)?;
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.required_spec_claims =
            ["exp", "iat", "iss", "aud", "sub"].into_iter().map(String::from).collect::<HashSet<_>>();
        Ok(TokenService {
            algorithm,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_ttl: config.access_ttl.0,
            validation,
            keys: ArcSwap::from_pointee(vec![Arc::new(base)]),
        })
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Whether keys of this algorithm can be rotated here (a shared HS256 secret cannot: its
    /// verifiers hold it too).
    pub fn rotatable(&self) -> bool {
        self.algorithm == Algorithm::EdDSA
    }

    /// Replaces the generations after 0 with `rotated` (any order).
    pub fn install(&self, rotated: Vec<SigningEntry>) {
        let current = self.keys.load();
        let mut keys: Vec<Arc<SigningEntry>> = vec![current[0].clone()];
        keys.extend(rotated.into_iter().filter(|e| e.generation > 0).map(Arc::new));
        keys.sort_by_key(|e| e.generation);
        keys.dedup_by_key(|e| e.generation);
        self.keys.store(Arc::new(keys));
    }

    /// The generations installed, oldest first.
    pub fn generations(&self) -> Vec<u32> {
        self.keys.load().iter().map(|e| e.generation).collect()
    }

    /// The key that signs at `now`.
    pub fn signing_at(&self, now: Timestamp) -> Arc<SigningEntry> {
        let keys = self.keys.load();
        keys.iter().rev().find(|e| e.activates_at <= now).unwrap_or(&keys[0]).clone()
    }

    /// `kid` of the key that signs at `now`.
    pub fn kid(&self, now: Timestamp) -> String {
        self.signing_at(now).kid.clone()
    }

    /// Until when generation `i` of `keys` is published: its successor's activation, plus
    /// the lifetime of the last token it signed, plus the margin. `None`: no successor.
    fn retires_at(&self, keys: &[Arc<SigningEntry>], i: usize) -> Option<Timestamp> {
        keys.get(i + 1).map(|next| next.activates_at.plus(self.access_ttl + RETIRE_MARGIN))
    }

    /// The keys published at `now`, with when each retires.
    pub fn published(&self, now: Timestamp) -> Vec<(Arc<SigningEntry>, Option<Timestamp>)> {
        let keys = self.keys.load();
        (0..keys.len())
            .map(|i| (keys[i].clone(), self.retires_at(&keys, i)))
            .filter(|(_, retires)| retires.is_none_or(|r| now < r))
            .collect()
    }

    /// The JSON of `GET /.well-known/jwks.json` at `now`: every published public key.
    pub fn jwks(&self, now: Timestamp) -> Bytes {
        let keys: Vec<serde_json::Value> =
            self.published(now).into_iter().filter_map(|(e, _)| e.jwk.clone()).rev().collect();
        Bytes::from(serde_json::json!({ "keys": keys }).to_string())
    }

    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        now: Timestamp,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.as_secs();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.0,
            sid: session.0,
            iat,
            exp: iat + self.access_ttl.as_secs(),
            jti: Uuid::new_v4().simple().to_string(),
        };
        let key = self.signing_at(now);
        match &key.signer {
            Signer::Ed25519 { pair, header } => {
                // What `jsonwebtoken::encode` writes: header.claims.signature, each base64url.
                let claims = serde_json::to_vec(&claims)?;
                let mut token = String::with_capacity(header.len() + claims.len() * 4 / 3 + 92);
                token.push_str(header);
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
                let signature = pair.sign(token.as_bytes());
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
                Ok(token)
            }
            Signer::Hs256(secret) => jsonwebtoken::encode(&token_header(Algorithm::HS256, &key.kid), &claims, secret),
        }
    }

    /// Checks signature, `kid`, `iss`, `aud` and expiry against `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<AccessClaims, TokenError> {
        // A JWT of ours is a few hundred bytes; refuse anything absurd before decoding.
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        // Only a published key verifies: a retired one's tokens have all expired.
        let keys = self.keys.load();
        let i = keys.iter().position(|e| e.kid == kid).ok_or(TokenError::Invalid)?;
        if self.retires_at(&keys, i).is_some_and(|r| now >= r) {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &keys[i].decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        let claims = data.claims;
        let now = now.as_secs();
        if claims.iat > now + IAT_LEEWAY_SECS {
            return Err(TokenError::Invalid);
        }
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// RFC 7638 thumbprint of an Ed25519 JWK: SHA-256 over the required members in lexical order.
fn ed25519_thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn ed() -> TokenService {
        TokenService::new(&ed_key(), &Config::default().tokens).unwrap()
    }

    fn ids() -> (UserId, SessionId) {
        (UserId(Uuid::now_v7()), SessionId(Uuid::now_v7()))
    }

    #[test]
    fn eddsa_round_trip_and_expiry() {
        let t = ed();
        let (u, s) = ids();
        let now = Timestamp::from_millis(1_700_000_000_000);
        let jwt = t.issue(u, s, now).unwrap();
        let claims = t.verify(&jwt, now).unwrap();
        assert_eq!((claims.user(), claims.session()), (u, s));
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(t.verify(&jwt, now.plus(Duration::from_secs(899))).map(|c| c.sub), Ok(u.0));
        assert_eq!(t.verify(&jwt, now.plus(Duration::from_secs(900))), Err(TokenError::Expired));
    }

    /// EdDSA tokens are put together here, not by `jsonwebtoken::encode`: they must be what it
    /// would have written, byte for byte (Ed25519 signatures are deterministic).
    #[test]
    fn eddsa_tokens_are_what_jsonwebtoken_writes() {
        let signing = ed_key();
        let SigningKey::Ed25519(der) = &signing else { unreachable!("ed_key is an Ed25519 key") };
        let t = TokenService::new(&signing, &Config::default().tokens).unwrap();
        let (u, s) = ids();
        let now = Timestamp::from_millis(1_700_000_000_000);
        let jwt = t.issue(u, s, now).unwrap();
        let claims = t.verify(&jwt, now).unwrap();
        let key = t.signing_at(now);
        let theirs =
            jsonwebtoken::encode(&token_header(Algorithm::EdDSA, key.kid()), &claims, &EncodingKey::from_ed_der(der))
                .unwrap();
        assert_eq!(jwt, theirs);
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref(), header.typ.as_deref()),
            (Algorithm::EdDSA, Some(key.kid()), Some("JWT"))
        );
    }

    #[test]
    fn foreign_or_tampered_tokens_fail() {
        let (a, b) = (ed(), ed());
        let (u, s) = ids();
        let now = Timestamp::from_millis(1_700_000_000_000);
        let jwt = a.issue(u, s, now).unwrap();
        assert_eq!(b.verify(&jwt, now), Err(TokenError::Invalid), "another key");
        let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = serde_json::json!(Uuid::now_v7());
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(a.verify(&parts.join("."), now), Err(TokenError::Invalid), "tampered claims");
        for junk in ["", "a.b.c", "....", &"x".repeat(5000)] {
            assert_eq!(a.verify(junk, now), Err(TokenError::Invalid));
        }
    }

    #[test]
    fn hs256_and_jwks() {
        let mut cfg = Config::default().tokens;
        cfg.algorithm = "HS256".into();
        let t = TokenService::new(&SigningKey::Hs256(vec![7; 32]), &cfg).unwrap();
        let (u, s) = ids();
        let now = Timestamp::from_millis(1_700_000_000_000);
        assert!(t.verify(&t.issue(u, s, now).unwrap(), now).is_ok());
        assert_eq!(&t.jwks(now)[..], br#"{"keys":[]}"#);
        let jwks: serde_json::Value = serde_json::from_slice(&ed().jwks(now)).unwrap();
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    }

    fn ed_key() -> SigningKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        SigningKey::Ed25519(aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec())
    }

    fn back(t: Timestamp, ms: u64) -> Timestamp {
        Timestamp::from_millis(t.as_millis() - ms)
    }

    fn kids(t: &TokenService, now: Timestamp) -> Vec<String> {
        let jwks: serde_json::Value = serde_json::from_slice(&t.jwks(now)).unwrap();
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn a_rotated_key_signs_from_its_activation_and_the_old_one_retires_after_its_last_token() {
        let t = ed();
        let (u, s) = ids();
        let t0 = Timestamp::from_millis(1_700_000_000_000);
        let old_kid = t.kid(t0);
        let activates = t0.plus(Duration::from_secs(10));
        let next = SigningEntry::new(1, activates, &ed_key()).unwrap();
        let new_kid = next.kid().to_owned();
        t.install(vec![next]);
        // Published at once, newest first; the old key still signs until the activation.
        assert_eq!(kids(&t, t0), vec![new_kid.clone(), old_kid.clone()]);
        let last_old = t.issue(u, s, back(activates.plus(Duration::from_millis(0)), 1)).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&last_old).unwrap().kid.as_deref(), Some(old_kid.as_str()));
        let first_new = t.issue(u, s, activates).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&first_new).unwrap().kid.as_deref(), Some(new_kid.as_str()));
        // The old key's last token verifies to its expiry; the key is published a margin more.
        let expiry = back(activates.plus(Duration::from_secs(900)), 1000);
        assert!(t.verify(&last_old, back(expiry, 1)).is_ok());
        assert_eq!(t.verify(&last_old, expiry), Err(TokenError::Expired));
        let retired = activates.plus(Duration::from_secs(900) + RETIRE_MARGIN);
        assert_eq!(kids(&t, back(retired, 1)), vec![new_kid.clone(), old_kid]);
        assert_eq!(kids(&t, retired), vec![new_kid]);
        assert_eq!(t.verify(&last_old, retired), Err(TokenError::Invalid));
        assert_eq!(t.verify(&first_new, retired), Err(TokenError::Expired), "the new key's first token is older");
        assert!(t.verify(&t.issue(u, s, retired).unwrap(), retired).is_ok(), "the new key signs on");
    }

    #[test]
    fn thumbprint_matches_rfc8037_example() {
        // RFC 8037 appendix A.3: thumbprint of the example Ed25519 key.
        assert_eq!(
            ed25519_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
