//! Access tokens (JWT) and the JWKS that lets anyone verify them.
//!
//! Claims: `iss`, `aud`, `sub` (user id), `sid` (session id), `iat`, `exp`, `jti`. The header
//! carries `kid`: for EdDSA the RFC 7638 thumbprint of the public key, so key rotation can
//! publish several keys side by side. Signing uses jsonwebtoken with the `aws_lc_rs` backend
//! (EdDSA sign ≈ 16 µs, HS256 ≈ 1 µs on the reference machine).
//!
//! Expiry is checked here against the engine's clock, not by jsonwebtoken against the system
//! clock, so tests that move time also move token expiry.

use std::collections::HashSet;
use std::time::Duration;

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
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    validation: Validation,
    jwks: Bytes,
}

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
        let (algorithm, encoding, decoding, kid, jwks) = match key {
            SigningKey::Ed25519(pkcs8) => {
                use aws_lc_rs::signature::KeyPair as _;
                let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8)?;
                let public = pair.public_key().as_ref().to_vec();
                let x = URL_SAFE_NO_PAD.encode(&public);
                let kid = ed25519_thumbprint(&x);
                let jwks = serde_json::json!({
                    "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" }]
                });
                (Algorithm::EdDSA, EncodingKey::from_ed_der(pkcs8), DecodingKey::from_ed_der(&public), kid, jwks)
            }
            SigningKey::Hs256(secret) => {
                let kid = format!("hs256-{}", &blake3::hash(secret).to_hex()[..16]);
                // A symmetric key is never published.
                let jwks = serde_json::json!({ "keys": [] });
                (Algorithm::HS256, EncodingKey::from_secret(secret), DecodingKey::from_secret(secret), kid, jwks)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.required_spec_claims =
            ["exp", "iat", "iss", "aud", "sub"].into_iter().map(String::from).collect::<HashSet<_>>();
        Ok(TokenService {
            algorithm,
            encoding,
            decoding,
            kid,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_ttl: config.access_ttl.0,
            validation,
            jwks: Bytes::from(jwks.to_string()),
        })
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JSON of `GET /.well-known/jwks.json`.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
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
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }

    /// Checks signature, `kid`, `iss`, `aud` and expiry against `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<AccessClaims, TokenError> {
        // A JWT of ours is a few hundred bytes; refuse anything absurd before decoding.
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
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
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
        TokenService::new(&SigningKey::Ed25519(der), &Config::default().tokens).unwrap()
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
        assert_eq!(&t.jwks()[..], br#"{"keys":[]}"#);
        let jwks: serde_json::Value = serde_json::from_slice(&ed().jwks()).unwrap();
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
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
