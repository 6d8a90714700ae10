//! Refresh tokens: opaque bearer secrets that name their session.
//!
//! Format: `ort1.<session id, 32 hex>.<secret, 64 hex>` (101 ASCII characters). The session id
//! lets the store find the session with a point read; the 256-bit secret is stored only as its
//! keyed digest ([`crate::rules::keys::Keys::token_digest`]) and compared in constant time, so a leak of
//! the session table cannot be turned into working tokens.

use rand::RngExt;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::rules::ids::SessionId;
use crate::rules::keys::{Keys, hex};

const PREFIX: &str = "ort1.";
const ENCODED_LEN: usize = PREFIX.len() + 32 + 1 + 64;

/// A refresh token in clear: exists only between its creation and the response that carries
/// it, or between parsing a request and checking it.
pub struct RefreshToken {
    pub session: SessionId,
    secret: [u8; 32],
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefreshToken({}, ..)", self.session)
    }
}

/// Why a presented refresh token is not even worth a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed refresh token")]
pub struct MalformedToken;

impl RefreshToken {
    pub fn generate(session: SessionId) -> Self {
        RefreshToken { session, secret: rand::rng().random() }
    }

    pub fn encode(&self) -> String {
        format!("{PREFIX}{}.{}", self.session.0.simple(), hex(&self.secret))
    }

    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        if text.len() != ENCODED_LEN || !text.is_ascii() {
            return Err(MalformedToken);
        }
        let rest = text.strip_prefix(PREFIX).ok_or(MalformedToken)?;
        let (sid, secret) = rest.split_once('.').ok_or(MalformedToken)?;
        if sid.len() != 32 || secret.len() != 64 {
            return Err(MalformedToken);
        }
        let mut sid_bytes = [0u8; 16];
        unhex(sid, &mut sid_bytes)?;
        let mut secret_bytes = [0u8; 32];
        unhex(secret, &mut secret_bytes)?;
        Ok(RefreshToken { session: SessionId(Uuid::from_bytes(sid_bytes)), secret: secret_bytes })
    }

    pub fn digest(&self, keys: &Keys) -> [u8; 32] {
        keys.token_digest(&self.secret)
    }

    /// Constant-time comparison with a stored digest.
    pub fn matches(&self, keys: &Keys, stored: &[u8; 32]) -> bool {
        self.digest(keys).ct_eq(stored).into()
    }
}

fn unhex(text: &str, out: &mut [u8]) -> Result<(), MalformedToken> {
    fn nibble(c: u8) -> Result<u8, MalformedToken> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(MalformedToken),
        }
    }
    let bytes = text.as_bytes();
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = (nibble(bytes[2 * i])? << 4) | nibble(bytes[2 * i + 1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_digest() {
        let keys = Keys::from_master(&[8; 32]);
        let sid = SessionId(Uuid::now_v7());
        let token = RefreshToken::generate(sid);
        let text = token.encode();
        assert_eq!(text.len(), ENCODED_LEN);
        let parsed = RefreshToken::parse(&text).unwrap();
        assert_eq!(parsed.session, sid);
        assert!(parsed.matches(&keys, &token.digest(&keys)));
        assert!(!RefreshToken::generate(sid).matches(&keys, &token.digest(&keys)));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = RefreshToken::generate(SessionId(Uuid::now_v7())).encode();
        let mut cases = vec![
            String::new(),
            "ort1.".into(),
            good.replace("ort1.", "ort2."),
            good.to_uppercase(),
            good[..good.len() - 1].to_owned(),
            format!("{good}0"),
            good.replacen('.', "-", 2),
        ];
        let mut non_ascii = good.clone();
        non_ascii.replace_range(10..12, "é");
        cases.push(non_ascii);
        for c in cases {
            assert_eq!(RefreshToken::parse(&c).unwrap_err(), MalformedToken, "{c:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = RefreshToken::generate(SessionId(Uuid::nil()));
        let secret_hex = t.encode()[38..].to_owned();
        assert!(!format!("{t:?}").contains(&secret_hex));
    }
}
