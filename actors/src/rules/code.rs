//! One-time codes: generation, normalisation of what the user typed, hashing, comparison.
//!
//! * Codes come from `rand::rng()` (ChaCha12 reseeded from the OS: a CSPRNG), drawn uniformly
//!   per character with no modulo bias.
//! * A code is never stored: a challenge keeps `salt` (16 random bytes) and the keyed BLAKE3
//!   digest of `salt ‖ code` (see [`crate::rules::keys`]); verification recomputes the digest and
//!   compares in constant time.
//! * [`Code`] is the only type that holds a code in clear. Its `Debug` prints `Code(******)`, so
//!   no log line can carry one by accident; the clear text leaves the process only through the
//!   notifier (SMS, e-mail, development outbox).

use std::fmt;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::rules::keys::Keys;

/// Characters a code may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alphabet {
    /// `0-9`.
    Numeric,
    /// Upper-case letters and digits without the look-alikes `0 O 1 I L` (31 symbols), so a
    /// code read off a lock screen is typed right the first time.
    Alphanumeric,
}

const NUMERIC: &[u8] = b"0123456789";
const ALPHANUMERIC: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

impl Alphabet {
    fn symbols(self) -> &'static [u8] {
        match self {
            Alphabet::Numeric => NUMERIC,
            Alphabet::Alphanumeric => ALPHANUMERIC,
        }
    }

    /// The shortest code with at least [`MIN_CODE_SPACE`] possible values: 6 digits, or 5
    /// alphanumeric characters (31⁵ ≈ 2.9 × 10⁷; 31⁴ ≈ 9.2 × 10⁵ is too few).
    pub fn min_length(self) -> u8 {
        let base = self.symbols().len() as u64;
        (1..=MAX_CODE_LENGTH).find(|&n| base.pow(u32::from(n)) >= MIN_CODE_SPACE).expect("10 characters are enough")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alphabet::Numeric => "numeric",
            Alphabet::Alphanumeric => "alphanumeric",
        }
    }
}

/// Characters in a code unless configured otherwise (≈ 20 bits when numeric).
pub const DEFAULT_CODE_LENGTH: u8 = 6;
/// The longest code allowed by configuration.
pub const MAX_CODE_LENGTH: u8 = 10;
/// The fewest possible codes a configuration may allow: one guess wins with chance at most
/// 10⁻⁶, the figure the guess budget (`rules::limits`) is sized against. So numeric codes
/// have at least 6 digits (NIST SP 800-63B asks for 20 bits; 4 digits give 13).
pub const MIN_CODE_SPACE: u64 = 1_000_000;

/// A code length outside `alphabet.min_length()..=MAX_CODE_LENGTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} codes must be {}..={MAX_CODE_LENGTH} characters long (at least 10^6 possible codes), got {length}",
    alphabet.as_str(),
    alphabet.min_length()
)]
pub struct CodeLengthError {
    pub length: u8,
    pub alphabet: Alphabet,
}

/// How codes look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodePolicy {
    length: u8,
    alphabet: Alphabet,
}

impl CodePolicy {
    pub fn new(length: u8, alphabet: Alphabet) -> Result<Self, CodeLengthError> {
        if !(alphabet.min_length()..=MAX_CODE_LENGTH).contains(&length) {
            return Err(CodeLengthError { length, alphabet });
        }
        Ok(CodePolicy { length, alphabet })
    }

    pub fn length(&self) -> u8 {
        self.length
    }

    pub fn alphabet(&self) -> Alphabet {
        self.alphabet
    }

    /// How many codes there are: one guess wins with chance 1 / this.
    pub fn code_space(&self) -> u64 {
        (self.alphabet.symbols().len() as u64).pow(u32::from(self.length))
    }

    /// Bits of entropy of one code (NIST SP 800-63B asks for at least 20).
    pub fn entropy_bits(&self) -> f64 {
        f64::from(self.length) * (self.alphabet.symbols().len() as f64).log2()
    }

    pub fn generate(&self) -> Code {
        let symbols = self.alphabet.symbols();
        let mut rng = rand::rng();
        let mut code = [0u8; MAX_CODE_LENGTH as usize];
        for slot in code.iter_mut().take(self.length as usize) {
            *slot = symbols[rng.random_range(0..symbols.len())];
        }
        Code { bytes: code, len: self.length }
    }

    /// What the user typed, reduced to the form codes are generated in: spaces and dashes
    /// dropped, letters upper-cased. Any further mismatch (wrong length, a symbol outside the
    /// alphabet) is left to the digest comparison, where it is simply a wrong code.
    pub fn normalise_attempt(&self, typed: &str) -> Code {
        let mut bytes = [0u8; MAX_CODE_LENGTH as usize];
        let mut len = 0usize;
        for b in typed.bytes().filter(|b| !matches!(b, b' ' | b'-')) {
            if len == bytes.len() {
                // Longer than any code: keep a marker byte so it cannot match a shorter code.
                bytes[len - 1] = 0;
                break;
            }
            bytes[len] = b.to_ascii_uppercase();
            len += 1;
        }
        Code { bytes, len: len as u8 }
    }
}

/// A one-time code in clear. Never logged (see the module doc).
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    bytes: [u8; MAX_CODE_LENGTH as usize],
    len: u8,
}

impl Code {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// A code (or a typed attempt, whatever its bytes) from the bytes of [`Code::as_bytes`],
    /// as another node sends them; `None` if longer than any code.
    pub fn from_bytes(bytes: &[u8]) -> Option<Code> {
        if bytes.len() > MAX_CODE_LENGTH as usize {
            return None;
        }
        let mut out = Code { bytes: [0; MAX_CODE_LENGTH as usize], len: bytes.len() as u8 };
        out.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(out)
    }

    /// The code as text, for the message sent to the user and nothing else.
    pub fn expose(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(******)")
    }
}

/// Salt and digest of one issued code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub salt: [u8; 16],
    pub digest: [u8; 16],
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(..)")
    }
}

impl Sealed {
    /// Seals `code` under a fresh random salt.
    pub fn seal(keys: &Keys, code: &Code) -> Self {
        Self::seal_secret(keys, code.as_bytes())
    }

    /// Constant-time check of an attempt against this seal.
    pub fn opens_with(&self, keys: &Keys, attempt: &Code) -> bool {
        self.opens_with_secret(keys, attempt.as_bytes())
    }

    /// Seals any short secret (a device-login nonce) the way codes are sealed.
    pub fn seal_secret(keys: &Keys, secret: &[u8]) -> Self {
        let salt: [u8; 16] = rand::rng().random();
        Sealed { salt, digest: keys.code_digest(&salt, secret) }
    }

    /// Constant-time check of a secret against this seal.
    pub fn opens_with_secret(&self, keys: &Keys, secret: &[u8]) -> bool {
        let digest = keys.code_digest(&self.salt, secret);
        digest.ct_eq(&self.digest).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_master(&[3; 32])
    }

    #[test]
    fn policy_bounds() {
        assert!(CodePolicy::new(11, Alphabet::Numeric).is_err());
        for short in [3, 4, 5] {
            assert_eq!(
                CodePolicy::new(short, Alphabet::Numeric),
                Err(CodeLengthError { length: short, alphabet: Alphabet::Numeric }),
                "numeric codes shorter than 6 digits are refused"
            );
        }
        assert!(CodePolicy::new(4, Alphabet::Alphanumeric).is_err(), "31^4 < 10^6");
        assert!(CodePolicy::new(5, Alphabet::Alphanumeric).is_ok(), "31^5 ≥ 10^6");
        assert_eq!((Alphabet::Numeric.min_length(), Alphabet::Alphanumeric.min_length()), (6, 5));
        assert!(CodePolicy::new(10, Alphabet::Alphanumeric).is_ok());
        assert_eq!(CodePolicy::new(6, Alphabet::Numeric).unwrap().code_space(), MIN_CODE_SPACE);
        assert!(CodePolicy::new(6, Alphabet::Numeric).unwrap().entropy_bits() > 19.9);
        let e = CodeLengthError { length: 4, alphabet: Alphabet::Numeric }.to_string();
        assert_eq!(e, "numeric codes must be 6..=10 characters long (at least 10^6 possible codes), got 4");
    }

    #[test]
    fn generated_codes_have_the_policy_shape() {
        for (len, alphabet) in [(5, Alphabet::Alphanumeric), (6, Alphabet::Numeric), (10, Alphabet::Alphanumeric)] {
            let p = CodePolicy::new(len, alphabet).unwrap();
            for _ in 0..200 {
                let c = p.generate();
                assert_eq!(c.as_bytes().len(), len as usize);
                assert!(c.as_bytes().iter().all(|b| alphabet.symbols().contains(b)), "{}", c.expose());
            }
        }
    }

    #[test]
    fn digits_are_roughly_uniform() {
        // 60 000 digits; each of the 10 symbols expects 6 000. A biased generator (e.g. modulo
        // of a byte) would put ~6 250 on the low digits; 5 sigma here is about ±370.
        let p = CodePolicy::new(6, Alphabet::Numeric).unwrap();
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            for b in p.generate().as_bytes() {
                counts[(b - b'0') as usize] += 1;
            }
        }
        for (digit, &c) in counts.iter().enumerate() {
            assert!((5_630..=6_370).contains(&c), "digit {digit} drawn {c} times: {counts:?}");
        }
    }

    #[test]
    fn codes_do_not_repeat() {
        let p = CodePolicy::new(10, Alphabet::Alphanumeric).unwrap();
        let set: std::collections::HashSet<String> = (0..1000).map(|_| p.generate().expose().to_owned()).collect();
        assert_eq!(set.len(), 1000);
    }

    #[test]
    fn seal_opens_only_with_the_code() {
        let keys = keys();
        let p = CodePolicy::new(6, Alphabet::Numeric).unwrap();
        let code = p.generate();
        let sealed = Sealed::seal(&keys, &code);
        assert!(sealed.opens_with(&keys, &code));
        let mut wrong = code.expose().as_bytes().to_vec();
        wrong[0] = if wrong[0] == b'9' { b'0' } else { wrong[0] + 1 };
        assert!(!sealed.opens_with(&keys, &p.normalise_attempt(std::str::from_utf8(&wrong).unwrap())));
        // Another node's key cannot open it.
        assert!(!sealed.opens_with(&Keys::from_master(&[4; 32]), &code));
    }

    #[test]
    fn same_code_sealed_twice_differs() {
        let keys = keys();
        let code = CodePolicy::new(6, Alphabet::Numeric).unwrap().normalise_attempt("123456");
        assert_ne!(Sealed::seal(&keys, &code).digest, Sealed::seal(&keys, &code).digest);
    }

    #[test]
    fn attempts_are_normalised_like_generated_codes() {
        let keys = keys();
        let p = CodePolicy::new(6, Alphabet::Alphanumeric).unwrap();
        let code = p.normalise_attempt("ABC234");
        let sealed = Sealed::seal(&keys, &code);
        assert!(sealed.opens_with(&keys, &p.normalise_attempt("abc-234")));
        assert!(sealed.opens_with(&keys, &p.normalise_attempt(" abc 234 ")));
        assert!(!sealed.opens_with(&keys, &p.normalise_attempt("ABC2345")));
        assert!(!sealed.opens_with(&keys, &p.normalise_attempt("ABC23")));
        assert!(!sealed.opens_with(&keys, &p.normalise_attempt(&"ABC234".repeat(5))));
    }

    #[test]
    fn debug_hides_codes() {
        let code = CodePolicy::new(6, Alphabet::Numeric).unwrap().generate();
        assert_eq!(format!("{code:?}"), "Code(******)");
        assert!(!format!("{:?}", Sealed::seal(&keys(), &code)).contains(code.expose()));
    }
}
