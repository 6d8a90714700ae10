//! Passkeys (WebAuthn credentials): the values the engine keeps of one, and its policy.
//!
//! The WebAuthn ceremonies themselves (options for the browser, attestation and assertion
//! checks) are the [`RelyingParty`](crate::ports::RelyingParty) port's, which the binary
//! implements with webauthn-rs: they parse the client's JSON, which the engine never does. The
//! engine keeps everything around them: freshness of the enrolling login, the challenge in the
//! shards (single use, short-lived, limited like a device challenge), the sign-counter rule
//! across concurrent logins (in the store's atomic step), sessions and the audit trail.
//!
//! # Sign counter and backup flags
//!
//! An authenticator that counts signatures sends a counter that must grow. A counter that does
//! not grow past the stored one (both not zero) means two authenticators hold the same private
//! key: a clone. The library refuses such an assertion; the store refuses the second of two
//! racing assertions with one counter ([`PasskeyUse::Regressed`](crate::ports::PasskeyUse)).
//! Both are refused as `passkey_clone_suspected` and audited. Synced passkeys count nothing
//! (their counter stays 0), and that is accepted. The backup-eligible flag of a credential may
//! not change once registered (the library refuses); its backup state is stored as last seen.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest credential id WebAuthn allows (bytes).
pub const MAX_CREDENTIAL_ID: usize = 1023;

/// A WebAuthn credential id: opaque bytes chosen by the authenticator, 16..=1023 of them.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CredentialId(pub Vec<u8>);

/// A passkey named in 16 bytes (a BLAKE3 digest of its credential id): what a session opened
/// by the passkey records of it, so that deleting the passkey can end those sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PasskeyRef(pub uuid::Uuid);

impl PasskeyRef {
    pub fn of(id: &CredentialId) -> PasskeyRef {
        let digest = blake3::hash(&id.0);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_bytes()[..16]);
        PasskeyRef(uuid::Uuid::from_bytes(bytes))
    }
}

impl CredentialId {
    /// The id, unless it is empty or longer than WebAuthn allows.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (!bytes.is_empty() && bytes.len() <= MAX_CREDENTIAL_ID).then_some(CredentialId(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A credential id is not a secret, but it names one person's key: a few bytes are
        // enough to tell two apart in a log.
        write!(f, "CredentialId({}…, {} B)", crate::rules::keys::hex(&self.0[..self.0.len().min(4)]), self.0.len())
    }
}

/// The passkey rules (from the `[passkeys]` config section).
#[derive(Clone, Debug)]
pub struct PasskeyPolicy {
    /// Passkeys per account.
    pub max_per_user: usize,
    /// Oldest login by code (and access token) that may register a passkey.
    pub enrol_max_auth_age: Duration,
}

impl PasskeyPolicy {
    /// Passkeys per account unless configured otherwise.
    pub const MAX_PER_USER: usize = 10;
}

impl Default for PasskeyPolicy {
    fn default() -> Self {
        PasskeyPolicy {
            max_per_user: Self::MAX_PER_USER,
            enrol_max_auth_age: crate::rules::device_key::DevicePolicy::ENROL_MAX_AUTH_AGE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_ids_are_bounded() {
        assert!(CredentialId::new(Vec::new()).is_none());
        assert!(CredentialId::new(vec![1; MAX_CREDENTIAL_ID + 1]).is_none());
        let id = CredentialId::new(vec![0xab; 32]).unwrap();
        assert_eq!(format!("{id:?}"), "CredentialId(abababab…, 32 B)");
    }
}
