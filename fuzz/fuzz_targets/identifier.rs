//! Identifier normalisation (`Normalizer::phone`, `Normalizer::email`) on arbitrary text:
//! never a panic; what is accepted is in normal form (E.164, or a lower-cased address) and
//! normalising it again gives the same identifier.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use otpd_actors::rules::identifier::{Identifier, MAX_EMAIL, MIN_INTERNATIONAL_DIGITS, Normalizer};

fn normalizer() -> &'static Normalizer {
    static N: OnceLock<Normalizer> = OnceLock::new();
    N.get_or_init(|| Normalizer::new(Some("US"), 4096).expect("US is a region"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let n = normalizer();
    if let Ok(id) = n.phone(text) {
        let Identifier::Phone { e164, country_code } = &id else { panic!("a phone number became {id:?}") };
        let digits = e164.strip_prefix('+').expect("E.164 starts with +");
        assert!(
            (MIN_INTERNATIONAL_DIGITS..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
            "{e164}"
        );
        assert!(digits.starts_with(&country_code.to_string()));
        assert_eq!(n.phone(e164).as_ref(), Ok(&id), "normalising twice");
    }
    if let Ok(id) = n.email(text) {
        let Identifier::Email(address) = &id else { panic!("an address became {id:?}") };
        assert!(address.len() <= MAX_EMAIL && address.contains('@'));
        assert_eq!(address, &address.to_lowercase());
        assert_eq!(n.email(address).as_ref(), Ok(&id), "normalising twice");
    }
});
