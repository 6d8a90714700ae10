//! `[tokens]`: access and refresh tokens.

use std::path::PathBuf;
use std::time::Duration;

use super::value::{Dur, Secret, check, secs, section};

section! {
    /// Access and refresh tokens.
    pub struct TokensConfig {
        /// `EdDSA` (default; public key in the JWKS) or `HS256` (shared secret).
        algorithm: String = "EdDSA".into(),
        /// `iss` of every access token, checked on the way back in.
        issuer: String = "otpd".into(),
        /// `aud` of every access token (and the second line a device signs).
        audience: String = "otpd".into(),
        /// Lifetime of an access token.
        access_ttl: Dur = secs(900),
        /// Lifetime of a session and its refresh token.
        session_ttl: Dur = secs(30 * 24 * 3600),
        /// PKCS#8 (DER or PEM) Ed25519 key; default: generated into `<data_dir>/secrets/`.
        signing_key_file: Option<PathBuf> = None,
        /// HS256 secret (at least 32 bytes); default: generated into `<data_dir>/secrets/`.
        hs256_secret: Option<Secret> = None,
    }
}

impl TokensConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, matches!(self.algorithm.as_str(), "EdDSA" | "HS256"), || {
            format!("tokens.algorithm: must be \"EdDSA\" or \"HS256\", got {:?}", self.algorithm)
        });
        check(errors, self.access_ttl.0 >= Duration::from_secs(30), || {
            "tokens.access_ttl: must be at least 30s".into()
        });
        check(errors, self.session_ttl.0 >= self.access_ttl.0, || {
            "tokens.session_ttl: must be at least tokens.access_ttl".into()
        });
        if let Some(secret) = &self.hs256_secret {
            check(errors, secret.0.len() >= 32, || "tokens.hs256_secret: must be at least 32 bytes".into());
        }
    }

    /// Whether the signing key is given (not generated per node), as every node of a cluster needs.
    pub(super) fn signing_key_configured(&self) -> bool {
        match self.algorithm.as_str() {
            "HS256" => self.hs256_secret.is_some(),
            _ => self.signing_key_file.is_some(),
        }
    }
}
