//! The node's hashing secrets and the keyed hashes derived from them.
//!
//! One 32-byte master secret (generated into the data directory on first start, or given in
//! config) is expanded with BLAKE3's key derivation into one key per purpose, so that a hash
//! made for one purpose can never be replayed as another:
//!
//! | key | hashes | why keyed |
//! | --- | --- | --- |
//! | `identifier` | normalised phone numbers and e-mail addresses | the audit trail, indexes and metrics never hold an identifier in clear, and a leaked trail cannot be reversed by enumerating the phone number space |
//! | `code` | salt ‖ one-time code | a memory dump of the challenge shards does not reveal codes, even by brute force over 10^6 codes |
//! | `token` | refresh tokens | a stolen session table cannot be replayed |
//! | `device` | device ids, into the subject of their login challenge | device challenges spread over shards and map buckets in a way nobody outside can steer |
//!
//! Every node of a cluster must share the master secret: identifier hashes are the shard key
//! and the storage key.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Keyed BLAKE3 hash of a normalised identifier, truncated to 128 bits.
///
/// 128 bits keep a billion identifiers collision-free (birthday bound ≈ 2^64) while halving
/// the memory of every map keyed by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdentHash(pub [u8; 16]);

impl IdentHash {
    /// Lower-case hex, the form the audit trail and `otpd audit` show.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// 64 bits used to pick a shard; independent of the bits a hash map uses.
    pub fn shard_bits(&self) -> u64 {
        u64::from_le_bytes(self.0[8..16].try_into().expect("slice of 8 bytes"))
    }
}

impl fmt::Debug for IdentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentHash({})", self.to_hex())
    }
}

/// The per-purpose keys derived from the master secret. `Debug` never prints key material.
#[derive(Clone)]
pub struct Keys {
    identifier: [u8; 32],
    code: [u8; 32],
    token: [u8; 32],
    device: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    pub fn from_master(master: &[u8; 32]) -> Self {
        Keys {
            identifier: blake3::derive_key("otpd identifier hash v1", master),
            code: blake3::derive_key("otpd one-time code hash v1", master),
            token: blake3::derive_key("otpd refresh token hash v1", master),
            device: blake3::derive_key("otpd device challenge subject v1", master),
        }
    }

    pub fn identifier_hash(&self, normalised: &str) -> IdentHash {
        let h = blake3::keyed_hash(&self.identifier, normalised.as_bytes());
        IdentHash(truncate16(h.as_bytes()))
    }

    /// A subject derived from a device id (with whatever else scopes it: a nonce, an address).
    pub fn device_subject(&self, device_id: &[u8]) -> IdentHash {
        IdentHash(truncate16(blake3::keyed_hash(&self.device, device_id).as_bytes()))
    }

    /// Digest of a one-time code under its challenge's salt.
    pub fn code_digest(&self, salt: &[u8; 16], code: &[u8]) -> [u8; 16] {
        let mut hasher = blake3::Hasher::new_keyed(&self.code);
        hasher.update(salt);
        hasher.update(code);
        truncate16(hasher.finalize().as_bytes())
    }

    /// Digest under which a refresh token (or any other bearer secret) is stored.
    pub fn token_digest(&self, token: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.token, token).as_bytes()
    }
}

fn truncate16(bytes: &[u8; 32]) -> [u8; 16] {
    bytes[..16].try_into().expect("slice of 16 bytes")
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_are_separated() {
        let keys = Keys::from_master(&[7; 32]);
        let salt = [0u8; 16];
        let a = keys.code_digest(&salt, b"123456");
        let b = keys.identifier_hash("123456");
        assert_ne!(&a[..], &b.0[..]);
        assert_ne!(keys.token_digest(b"x")[..16], keys.identifier_hash("x").0[..]);
    }

    #[test]
    fn different_masters_give_different_hashes() {
        let a = Keys::from_master(&[1; 32]).identifier_hash("+12025550123");
        let b = Keys::from_master(&[2; 32]).identifier_hash("+12025550123");
        assert_ne!(a, b);
    }

    #[test]
    fn debug_never_prints_keys() {
        let keys = Keys::from_master(&[9; 32]);
        assert_eq!(format!("{keys:?}"), "Keys(..)");
    }

    #[test]
    fn hex_matches_known_vector() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
