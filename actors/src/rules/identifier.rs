//! Identifiers: E.164 phone numbers and e-mail addresses, normalised once at the edge.
//!
//! Everything in otpd (challenges, limits, users, audit) is keyed by the *normalised* form, so
//! `+1 (202) 555-0123`, `202-555-0123` (with default region US) and `+12025550123` are one
//! person.
//!
//! # Why phone validation is layered
//!
//! The `phonenumber` crate (libphonenumber's metadata) is the authority, but it is slow in
//! exactly the way an attacker can exploit: 6–7 µs per call behind one process-wide lock around
//! its regex cache, and about 1.3 ms per call once requests rotate through more countries than
//! its 100-entry regex cache holds (measured on the 2-core reference machine; see
//! docs/decisions/2026-11-21-layered-phone-validation.md). So a number passes three layers:
//!
//! 1. a shape check (`+` then 7–15 digits, or a national number of 4–15 digits) that costs
//!    nanoseconds and rejects garbage before anything else runs;
//! 2. a bounded verdict cache keyed by the digits, so a number seen before never reaches the
//!    crate again;
//! 3. the crate, whose regex cache is enlarged at start to hold every pattern of every region
//!    (about 2 000 regexes), so that rotating through countries costs ~20 µs, not 1.3 ms.

use std::fmt;
use std::str::FromStr;
use std::sync::Once;

use serde::{Deserialize, Serialize};

/// The delivery channel an identifier implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    Sms,
    Email,
}

/// How a code for a phone number travels: a text message, a WhatsApp message, or a voice call
/// that reads it out. Each is a provider on the SMS route (`delivery.provider`, `secondary`,
/// `fallback`); a request may ask for one the operator put there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    Sms,
    WhatsApp,
    Voice,
}

impl Via {
    pub const ALL: [Via; 3] = [Via::Sms, Via::WhatsApp, Via::Voice];

    pub fn as_str(self) -> &'static str {
        match self {
            Via::Sms => "sms",
            Via::WhatsApp => "whatsapp",
            Via::Voice => "voice",
        }
    }

    pub fn parse(text: &str) -> Option<Via> {
        Via::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

/// A validated, normalised identifier.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Identifier {
    /// E.164 form (`+` and digits) and its country calling code.
    Phone { e164: String, country_code: u16 },
    /// Lower-cased address.
    Email(String),
}

impl Identifier {
    pub fn as_str(&self) -> &str {
        match self {
            Identifier::Phone { e164, .. } => e164,
            Identifier::Email(e) => e,
        }
    }

    pub fn channel(&self) -> Channel {
        match self {
            Identifier::Phone { .. } => Channel::Sms,
            Identifier::Email(_) => Channel::Email,
        }
    }
}

/// Identifiers are personal data: `Debug` shows only their kind, so that a stray `{:?}` in a
/// log line cannot leak one.
impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identifier::Phone { country_code, .. } => write!(f, "Phone(+{country_code}…)"),
            Identifier::Email(_) => f.write_str("Email(…)"),
        }
    }
}

/// Why an identifier was refused. Messages are safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("phone number has an invalid shape: {0}")]
    PhoneShape(&'static str),
    #[error("phone number is not a valid number for its country")]
    PhoneInvalid,
    #[error("phone number has no country code and no default region is configured")]
    PhoneNoRegion,
    #[error("e-mail address is invalid: {0}")]
    Email(&'static str),
}

/// Fewest digits of an international number (country code included). The shortest assigned
/// numbers have 7 (Niue, Saint Helena, some Austrian numbers): a shorter minimum would refuse
/// the normalised form of a valid number (found by `fuzz/` with `0043 0 12334` → `+4312334`).
pub const MIN_INTERNATIONAL_DIGITS: usize = 7;

/// Longest raw input looked at (bytes, surrounding spaces included); anything longer is
/// refused before any parsing. Part of the API contract (the phone fields' `maxLength`).
pub const MAX_RAW_PHONE: usize = 32;
/// RFC 5321 limit on a forward path (bytes, surrounding spaces included). Part of the API
/// contract (the e-mail fields' `maxLength`).
pub const MAX_EMAIL: usize = 254;

/// A phone number's verdict as cached: its E.164 digits and country code, or invalid. In 8
/// bytes, so that a cache slot (ghosts included, the cache keeps half as many again) is 32
/// bytes, not 64: the digits in the low 54 bits (E.164 has at most 15 digits, < 2^50), the
/// country code (at most 3 digits, < 2^10) in the high 10, and 0 for invalid (no digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict(u64);

impl Verdict {
    const INVALID: Verdict = Verdict(0);
    const DIGIT_BITS: u32 = 54;

    /// The verdict of a valid number; invalid if it does not fit, which E.164 rules out.
    fn valid(digits: u64, country_code: u16) -> Verdict {
        if digits == 0 || digits >> Self::DIGIT_BITS != 0 || country_code >> 10 != 0 {
            return Verdict::INVALID;
        }
        Verdict(u64::from(country_code) << Self::DIGIT_BITS | digits)
    }

    fn get(self) -> Option<(u64, u16)> {
        let digits = self.0 & ((1 << Self::DIGIT_BITS) - 1);
        (digits != 0).then_some((digits, (self.0 >> Self::DIGIT_BITS) as u16))
    }
}

/// Normalises raw identifiers. Cheap to share (`Arc`); all methods take `&self`.
pub struct Normalizer {
    default_region: Option<phonenumber::country::Id>,
    verdicts: quick_cache::sync::Cache<u128, Verdict>,
}

impl fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Normalizer")
            .field("default_region", &self.default_region)
            .field("cached_verdicts", &self.verdicts.len())
            .finish()
    }
}

/// A default region that is not an ISO 3166 code `phonenumber` knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region {0:?} (expected an ISO 3166 code such as \"US\")")]
pub struct UnknownRegion(pub String);

/// Capacity of the `phonenumber` crate's process-wide regex cache: every pattern of every
/// region fits (about 2 000), so no rotation of countries can make it thrash.
const REGEX_CACHE_CAPACITY: usize = 4096;

impl Normalizer {
    /// `default_region` is an ISO 3166 code (`"US"`, `"GB"`) used for numbers given without
    /// a country code; `None` refuses them. `cache_capacity` bounds the verdict cache.
    pub fn new(default_region: Option<&str>, cache_capacity: usize) -> Result<Self, UnknownRegion> {
        static ENLARGE: Once = Once::new();
        ENLARGE.call_once(|| {
            let cache = phonenumber::metadata::DATABASE.cache();
            let mut guard = cache.lock().unwrap_or_else(|p| p.into_inner());
            *guard = regex_cache::RegexCache::new(REGEX_CACHE_CAPACITY);
        });
        let default_region = match default_region {
            None => None,
            Some(r) => Some(
                phonenumber::country::Id::from_str(&r.to_ascii_uppercase()).map_err(|_| UnknownRegion(r.to_owned()))?,
            ),
        };
        Ok(Normalizer { default_region, verdicts: quick_cache::sync::Cache::new(cache_capacity.max(16)) })
    }

    /// Pays the crate's first-call cost (lazy metadata load, ~65 ms) at start instead of on the
    /// first request.
    pub fn warm(&self) {
        let _ = self.phone("+12025550123");
        if let Some(region) = self.default_region {
            let _ = phonenumber::parse(Some(region), "0000000");
        }
    }

    pub fn phone(&self, raw: &str) -> Result<Identifier, IdentifierError> {
        let shape = PhoneShape::parse(raw)?;
        let key = shape.cache_key();
        let verdict = match self.verdicts.get(&key) {
            Some(v) => v,
            None => {
                let v = self.ask_the_crate(&shape)?;
                self.verdicts.insert(key, v);
                v
            }
        };
        match verdict.get() {
            Some((digits, country_code)) => Ok(Identifier::Phone { e164: format!("+{digits}"), country_code }),
            None => Err(IdentifierError::PhoneInvalid),
        }
    }

    fn ask_the_crate(&self, shape: &PhoneShape) -> Result<Verdict, IdentifierError> {
        let region = match shape.international {
            true => None,
            false => Some(self.default_region.ok_or(IdentifierError::PhoneNoRegion)?),
        };
        let Some((e164, country_code)) = Self::crate_verdict(region, &shape.text()) else {
            return Ok(Verdict::INVALID);
        };
        // The normal form must normalise to itself, or an account created under one spelling
        // could not log in with its own E.164 number. Two ways it did not (found by `fuzz/`):
        // a normal form shorter than the shape check allows, and a number the crate accepts
        // through an international dialling prefix (US `011 7 8452…`) but not as E.164.
        let itself = PhoneShape::parse(&e164).ok().and_then(|s| Self::crate_verdict(None, &s.text()));
        if itself.as_ref().map(|(again, _)| again) != Some(&e164) {
            return Ok(Verdict::INVALID);
        }
        let digits = e164.strip_prefix('+').and_then(|d| d.parse::<u64>().ok());
        Ok(digits.map_or(Verdict::INVALID, |d| Verdict::valid(d, country_code)))
    }

    /// The crate's E.164 form and country code of a valid number.
    fn crate_verdict(region: Option<phonenumber::country::Id>, text: &str) -> Option<(String, u16)> {
        let number = phonenumber::parse(region, text).ok()?;
        if !phonenumber::is_valid(&number) {
            return None;
        }
        Some((number.format().mode(phonenumber::Mode::E164).to_string(), number.code().value()))
    }

    pub fn email(&self, raw: &str) -> Result<Identifier, IdentifierError> {
        normalise_email(raw).map(Identifier::Email)
    }
}

/// A raw phone number reduced to its digits by the shape check.
#[derive(Debug, PartialEq, Eq)]
struct PhoneShape {
    international: bool,
    digits: [u8; 15],
    len: u8,
}

impl PhoneShape {
    /// Accepts `+` or `00` for international numbers, digits, and the separators people type
    /// (space, `-`, `.`, `(`, `)`); nothing else.
    fn parse(raw: &str) -> Result<Self, IdentifierError> {
        // The bound applies to the input as sent, so that it is exactly the published limit.
        if raw.len() > MAX_RAW_PHONE {
            return Err(IdentifierError::PhoneShape("too long"));
        }
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(IdentifierError::PhoneShape("empty"));
        }
        let (international, rest) = if let Some(r) = raw.strip_prefix('+') {
            (true, r)
        } else if let Some(r) = raw.strip_prefix("00") {
            (true, r)
        } else {
            (false, raw)
        };
        let mut digits = [0u8; 15];
        let mut len = 0usize;
        for b in rest.bytes() {
            match b {
                b'0'..=b'9' => {
                    if len == digits.len() {
                        return Err(IdentifierError::PhoneShape("more than 15 digits"));
                    }
                    digits[len] = b;
                    len += 1;
                }
                b' ' | b'-' | b'.' | b'(' | b')' => {}
                _ => return Err(IdentifierError::PhoneShape("only digits, '+' and separators are allowed")),
            }
        }
        if international {
            if len < MIN_INTERNATIONAL_DIGITS {
                return Err(IdentifierError::PhoneShape("fewer than 7 digits"));
            }
            if digits[0] == b'0' {
                return Err(IdentifierError::PhoneShape("country code cannot start with 0"));
            }
        } else if len < 4 {
            return Err(IdentifierError::PhoneShape("fewer than 4 digits"));
        }
        Ok(PhoneShape { international, digits, len: len as u8 })
    }

    /// Distinct for every distinct input that can have a distinct verdict: national numbers
    /// keep their leading zeros (the trunk prefix matters) by carrying the length.
    fn cache_key(&self) -> u128 {
        let mut value: u64 = 0;
        for &d in &self.digits[..self.len as usize] {
            value = value * 10 + u64::from(d - b'0');
        }
        (u128::from(self.international) << 72) | (u128::from(self.len) << 64) | u128::from(value)
    }

    fn text(&self) -> String {
        let digits = std::str::from_utf8(&self.digits[..self.len as usize]).expect("ASCII digits");
        match self.international {
            true => format!("+{digits}"),
            false => digits.to_owned(),
        }
    }
}

fn normalise_email(raw: &str) -> Result<String, IdentifierError> {
    // The bound applies to the input as sent, so that it is exactly the published limit.
    if raw.len() > MAX_EMAIL {
        return Err(IdentifierError::Email("longer than 254 characters"));
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(IdentifierError::Email("empty"));
    }
    // Quoted local parts, comments and display names are legal in RFC 5322 but have no place
    // in a login identifier; refusing them keeps one spelling per mailbox.
    if trimmed.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"\"()<>,;:\\[]".contains(&b)) {
        return Err(IdentifierError::Email("contains characters not allowed in an address"));
    }
    let options = email_address::Options::default().with_required_tld().without_domain_literal().without_display_text();
    let parsed = email_address::EmailAddress::parse_with_options(trimmed, options)
        .map_err(|_| IdentifierError::Email("not of the form name@domain.tld"))?;
    let (local, domain) = (parsed.local_part(), parsed.domain());
    if local.len() > 64 {
        return Err(IdentifierError::Email("local part longer than 64 characters"));
    }
    if !domain.is_ascii() {
        return Err(IdentifierError::Email("internationalised domains must be given in punycode"));
    }
    Ok(format!("{}@{}", local.to_lowercase(), domain.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Normalizer {
        Normalizer::new(Some("US"), 1024).unwrap()
    }

    fn e164(id: Identifier) -> String {
        id.as_str().to_owned()
    }

    #[test]
    fn phone_spellings_normalise_to_one_form() {
        let n = n();
        for raw in ["+12025550123", "+1 (202) 555-0123", "001 202 555 0123", "202.555.0123", " (202) 555 0123 "] {
            assert_eq!(e164(n.phone(raw).unwrap()), "+12025550123", "{raw}");
        }
        let Identifier::Phone { country_code, .. } = n.phone("+447911123456").unwrap() else { panic!() };
        assert_eq!(country_code, 44);
    }

    #[test]
    fn national_numbers_use_the_default_region_or_are_refused() {
        let gb = Normalizer::new(Some("gb"), 16).unwrap();
        assert_eq!(e164(gb.phone("07911 123456").unwrap()), "+447911123456");
        let none = Normalizer::new(None, 16).unwrap();
        assert_eq!(none.phone("2025550123"), Err(IdentifierError::PhoneNoRegion));
        assert_eq!(e164(none.phone("+12025550123").unwrap()), "+12025550123");
        assert!(Normalizer::new(Some("XX"), 16).is_err());
    }

    #[test]
    fn bad_shapes_are_refused_before_the_crate() {
        let n = n();
        for raw in ["", "+", "+1", "+0123456789", "+1202555012a", "+1-202-555-0123-9999999", "12", "+1202555😀0123"] {
            assert!(matches!(n.phone(raw), Err(IdentifierError::PhoneShape(_))), "{raw:?}");
        }
        assert!(matches!(n.phone(&"1".repeat(40)), Err(IdentifierError::PhoneShape(_))));
        // The length bound counts surrounding spaces: it is the API's published `maxLength`.
        let padded = format!("{:>33}", "+12025550123");
        assert_eq!(n.phone(&padded), Err(IdentifierError::PhoneShape("too long")));
        assert!(n.phone(&format!("{:>32}", "+12025550123")).is_ok());
    }

    /// Found by `fuzz/` (target `identifier`): the trunk `0` after Austria's country code is
    /// dropped, leaving 7 digits, which the shape check used to refuse: an account created
    /// with `0043 0 12334` could not log in as `+4312334`.
    #[test]
    fn the_normal_form_normalises_to_itself() {
        let n = n();
        let id = n.phone("00430 12334").unwrap();
        assert_eq!(id.as_str(), "+4312334");
        assert_eq!(n.phone(id.as_str()), Ok(id));
        // With region US, `011` is the international dialling prefix: the crate accepted
        // `011 7 845 274 9319` as `+78452749319` but refuses that E.164 form itself. Every
        // spelling now gets the same answer.
        assert_eq!(n.phone("01178452749319"), Err(IdentifierError::PhoneInvalid));
        assert_eq!(n.phone("+78452749319"), Err(IdentifierError::PhoneInvalid));
    }

    #[test]
    fn well_shaped_but_unassigned_numbers_are_invalid_and_cached() {
        let n = n();
        assert_eq!(n.phone("+15555550100"), Err(IdentifierError::PhoneInvalid));
        assert_eq!(n.verdicts.len(), 1);
        assert_eq!(n.phone("+15555550100"), Err(IdentifierError::PhoneInvalid));
        assert_eq!(n.verdicts.len(), 1);
    }

    #[test]
    fn a_verdict_keeps_digits_and_country_code_in_eight_bytes() {
        for (digits, cc) in [(12025550123, 1), (999_999_999_999_999, 999), (4312334, 43)] {
            assert_eq!(Verdict::valid(digits, cc).get(), Some((digits, cc)));
        }
        assert_eq!(Verdict::INVALID.get(), None);
        assert_eq!(Verdict::valid(1 << 54, 1), Verdict::INVALID, "more than E.164 allows: refused, not cut");
        assert_eq!(Verdict::valid(12025550123, 1024), Verdict::INVALID);
    }

    #[test]
    fn national_leading_zeros_are_part_of_the_cache_key() {
        let a = PhoneShape::parse("0123456").unwrap().cache_key();
        let b = PhoneShape::parse("123456").unwrap().cache_key();
        let c = PhoneShape::parse("+123456789").unwrap().cache_key();
        let d = PhoneShape::parse("123456789").unwrap().cache_key();
        assert_ne!(a, b);
        assert_ne!(c, d);
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        let n = n();
        assert_eq!(n.email(" Alice.Smith+otp@Example.COM ").unwrap().as_str(), "alice.smith+otp@example.com");
        for raw in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "a b@example.com",
            "\"a\"@example.com",
            "alice@[127.0.0.1]",
            "Alice <alice@example.com>",
        ] {
            assert!(n.email(raw).is_err(), "{raw:?}");
        }
        assert!(n.email(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(n.email(&format!("a@{}.com", "b".repeat(260))).is_err());
        assert!(n.email(&format!("{:>255}", "a@example.com")).is_err(), "surrounding spaces count");
        assert!(n.email(&format!("{:>254}", "a@example.com")).is_ok());
    }

    #[test]
    fn debug_hides_the_identifier() {
        let id = n().phone("+12025550123").unwrap();
        assert_eq!(format!("{id:?}"), "Phone(+1…)");
        assert_eq!(format!("{:?}", Identifier::Email("a@b.co".into())), "Email(…)");
    }
}
