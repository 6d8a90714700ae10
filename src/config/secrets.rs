//! `[secrets]`: node secrets not covered by a more specific section.

use super::value::{Dur, Secret, check, secs, section};

section! {
    /// Node secrets not covered by a more specific section.
    pub struct SecretsConfig {
        /// 64 hex characters; default: generated into `<data_dir>/secrets/hash.key`. Every node
        /// of a cluster needs the same one.
        hash_key: Option<Secret> = None,
        /// Bearer token for `/v1/admin/*`; default: generated into `<data_dir>/secrets/admin.token`.
        admin_token: Option<Secret> = None,
        /// After `otpd keys rotate --admin-token`, how long the previous admin token is still
        /// accepted beside the new one (`0s`: it stops at once).
        admin_token_overlap: Dur = secs(24 * 3600),
    }
}

impl SecretsConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if let Some(key) = &self.hash_key {
            check(errors, key.0.len() == 64 && key.0.bytes().all(|b| b.is_ascii_hexdigit()), || {
                "secrets.hash_key: must be 64 hex characters".into()
            });
        }
        if let Some(token) = &self.admin_token {
            check(errors, token.0.len() >= 16, || "secrets.admin_token: must be at least 16 characters".into());
        }
    }
}
