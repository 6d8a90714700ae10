//! `[identifiers]`: how identifiers are read.

use otpd_actors::rules::identifier::Normalizer;

use super::value::{check, section};

section! {
    /// How identifiers are read.
    pub struct IdentifierConfig {
        /// ISO 3166 region for phone numbers given without a country code; empty refuses them.
        default_region: String = "US".into(),
        /// Phone-number verdicts remembered (valid or not) so repeat numbers skip libphonenumber.
        verdict_cache: usize = 200_000,
    }
}

impl IdentifierConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        if !self.default_region.is_empty() {
            check(errors, Normalizer::new(Some(&self.default_region), 16).is_ok(), || {
                format!("identifiers.default_region: unknown region {:?}", self.default_region)
            });
        }
    }

    /// The region of national numbers, if any.
    pub fn default_region(&self) -> Option<&str> {
        Some(self.default_region.as_str()).filter(|r| !r.is_empty())
    }
}
