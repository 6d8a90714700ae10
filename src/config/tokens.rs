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
        /// How often a node reads the rotated keys (signing keys, admin tokens) from where
        /// every node keeps them (the ScyllaDB store, or `<data_dir>/secrets/keys/`): a
        /// rotation made on any node is used by all within this interval, without a restart.
        keys_poll_interval: Dur = secs(5),
        /// How long after `otpd keys rotate` the new signing key starts signing. It is in the
        /// JWKS at once: the default, the JWKS's cache lifetime (`max-age=300`), lets every
        /// verifier that honours it fetch the key before a token carries it. `0s` signs at once.
        key_activation_delay: Dur = secs(300),
        /// Rotate the EdDSA signing key on this schedule (`90d`, say); `0s`: only by
        /// `otpd keys rotate`. The first check after turning it on rotates.
        rotate_every: Dur = secs(0),
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
        check(errors, self.keys_poll_interval.0 >= Duration::from_millis(10), || {
            format!("tokens.keys_poll_interval: must be at least 10ms, got {:?}", self.keys_poll_interval)
        });
        check(errors, self.rotate_every.0.is_zero() || self.rotate_every.0 >= Duration::from_secs(60), || {
            "tokens.rotate_every: must be 0s (off) or at least 1m".into()
        });
        check(errors, self.rotate_every.0.is_zero() || self.algorithm == "EdDSA", || {
            "tokens.rotate_every: only an EdDSA key is rotated (an HS256 secret is shared with its verifiers)".into()
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
