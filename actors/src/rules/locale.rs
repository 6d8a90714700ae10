//! Which language a message is written in: a request's `locale` (a BCP 47 language tag), the
//! country of the phone number it goes to, or the node's default.
//!
//! ```text
//! asked "es-MX"  → es-MX, es (the tag, then shorter and shorter prefixes)  → default
//! nothing asked, a phone number → the country's tag (+52 → es-MX), es      → default
//! nothing asked, an e-mail address                                         → default
//! ```
//!
//! A tag someone asked for wins even when the catalogue lacks it and its number's country is
//! known: the person said which language they read, and a guess from the number would be
//! less likely right than the operator's default. The same choice is made twice, with the
//! same answer: by the engine, for what the SMS will cost (`rules::sms`), and by the
//! templates, to render it. The engine writes the chosen tag into the message, and a known
//! tag chooses itself.

use std::fmt;
use std::sync::Arc;

use crate::rules::identifier::Identifier;

/// Longest tag accepted (RFC 5646 §4.4.1: the shortest buffer an implementation should
/// support, enough for any tag of a language, script and region with a variant or two).
pub const MAX_LOCALE_LEN: usize = 35;

/// A well-formed language tag in its canonical case: language lower case (`es`), script title
/// case (`Hans`), region upper case (`MX`), anything after lower case. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Locale(Arc<str>);

/// Why a tag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocaleError {
    #[error(
        "must be a BCP 47 language tag of at most {MAX_LOCALE_LEN} characters: a language of 2 or 3 letters, \
         then optionally a script (4 letters) and a region (2 letters or 3 digits), like \"es\", \"pt-BR\" or \"zh-Hans-CN\""
    )]
    Malformed,
}

impl Locale {
    /// Parses a tag: language (2–3 letters), optional script (4 letters), optional region
    /// (2 letters or 3 digits), then any further subtags (variants, extensions: 1–8 letters
    /// or digits each), separated by `-`, at most [`MAX_LOCALE_LEN`] characters.
    pub fn parse(text: &str) -> Result<Locale, LocaleError> {
        if text.is_empty() || text.len() > MAX_LOCALE_LEN || !text.is_ascii() {
            return Err(LocaleError::Malformed);
        }
        let mut subtags = text.split('-').peekable();
        let language = subtags.next().unwrap_or_default();
        if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(LocaleError::Malformed);
        }
        let mut out = language.to_ascii_lowercase();
        let alpha = |s: &str| s.bytes().all(|b| b.is_ascii_alphabetic());
        if let Some(script) = subtags.next_if(|s| s.len() == 4 && alpha(s)) {
            out.push('-');
            out.push_str(&script[..1].to_ascii_uppercase());
            out.push_str(&script[1..].to_ascii_lowercase());
        }
        let region = |s: &&str| (s.len() == 2 && alpha(s)) || (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()));
        if let Some(region) = subtags.next_if(region) {
            out.push('-');
            out.push_str(&region.to_ascii_uppercase());
        }
        for rest in subtags {
            if rest.is_empty() || rest.len() > 8 || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(LocaleError::Malformed);
            }
            out.push('-');
            out.push_str(&rest.to_ascii_lowercase());
        }
        Ok(Locale(out.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag, then each shorter prefix that ends on a whole subtag, longest first
    /// (`zh-Hans-CN`, `zh-Hans`, `zh`), skipping prefixes that end in a one-letter subtag
    /// (the `x` of `en-x-private`), as RFC 4647's lookup does.
    pub fn fallbacks(&self) -> impl Iterator<Item = &str> {
        lookup_chain(&self.0)
    }
}

impl fmt::Debug for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The language most people read at a country calling code, as a tag with the country's
/// region (`+52` → `es-MX`), which falls back to the bare language (`es`). Only languages the
/// node has templates for are ever chosen: the catalogue ships `en`, `es`, `fr`, `de`, `pt`,
/// `hi`, `ar` and `zh` (simplified); the others here take effect when an operator adds their
/// file. Countries with several main languages (Belgium, Switzerland, Canada is `+1` with
/// the United States) are left out or take the most read one; the default covers the rest.
/// Hong Kong, Macau and Taiwan read traditional Chinese: left out, so that they do not get
/// the simplified catalogue (add `zh-Hant`/`zh-TW` files and ask for them explicitly).
pub const COUNTRY_LOCALES: &[(u16, &str)] = &[
    (1, "en-US"),
    (7, "ru-RU"),
    (20, "ar-EG"),
    (30, "el-GR"),
    (31, "nl-NL"),
    (33, "fr-FR"),
    (34, "es-ES"),
    (36, "hu-HU"),
    (39, "it-IT"),
    (40, "ro-RO"),
    (43, "de-AT"),
    (44, "en-GB"),
    (46, "sv-SE"),
    (48, "pl-PL"),
    (49, "de-DE"),
    (51, "es-PE"),
    (52, "es-MX"),
    (53, "es-CU"),
    (54, "es-AR"),
    (55, "pt-BR"),
    (56, "es-CL"),
    (57, "es-CO"),
    (58, "es-VE"),
    (61, "en-AU"),
    (62, "id-ID"),
    (64, "en-NZ"),
    (66, "th-TH"),
    (81, "ja-JP"),
    (82, "ko-KR"),
    (84, "vi-VN"),
    (86, "zh-CN"),
    (90, "tr-TR"),
    (91, "hi-IN"),
    (212, "ar-MA"),
    (213, "ar-DZ"),
    (216, "ar-TN"),
    (218, "ar-LY"),
    (221, "fr-SN"),
    (222, "ar-MR"),
    (223, "fr-ML"),
    (224, "fr-GN"),
    (225, "fr-CI"),
    (226, "fr-BF"),
    (227, "fr-NE"),
    (228, "fr-TG"),
    (229, "fr-BJ"),
    (238, "pt-CV"),
    (240, "es-GQ"),
    (241, "fr-GA"),
    (242, "fr-CG"),
    (243, "fr-CD"),
    (244, "pt-AO"),
    (245, "pt-GW"),
    (249, "ar-SD"),
    (258, "pt-MZ"),
    (261, "fr-MG"),
    (262, "fr-RE"),
    (351, "pt-PT"),
    (353, "en-IE"),
    (377, "fr-MC"),
    (380, "uk-UA"),
    (423, "de-LI"),
    (502, "es-GT"),
    (503, "es-SV"),
    (504, "es-HN"),
    (505, "es-NI"),
    (506, "es-CR"),
    (507, "es-PA"),
    (509, "fr-HT"),
    (590, "fr-GP"),
    (591, "es-BO"),
    (593, "es-EC"),
    (594, "fr-GF"),
    (595, "es-PY"),
    (596, "fr-MQ"),
    (598, "es-UY"),
    (961, "ar-LB"),
    (962, "ar-JO"),
    (963, "ar-SY"),
    (964, "ar-IQ"),
    (965, "ar-KW"),
    (966, "ar-SA"),
    (967, "ar-YE"),
    (968, "ar-OM"),
    (970, "ar-PS"),
    (971, "ar-AE"),
    (973, "ar-BH"),
    (974, "ar-QA"),
];

/// The tag of `country` in [`COUNTRY_LOCALES`].
pub fn country_locale(country: u16) -> Option<&'static str> {
    COUNTRY_LOCALES.binary_search_by_key(&country, |(c, _)| *c).ok().map(|i| COUNTRY_LOCALES[i].1)
}

/// The position of a locale in a [`Locales`] (and in whatever tables are kept beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocaleId(pub usize);

/// The locales a node has templates for, and its default: what [`Locales::choose`] picks
/// from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locales {
    tags: Vec<Locale>,
    default: LocaleId,
}

/// Why a set of locales was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalesError {
    #[error("{0} has no templates (the shipped locales and the files of locales_dir are the choice)")]
    NoDefault(String),
    #[error("{0} is given twice")]
    Duplicate(String),
}

impl Locales {
    /// `tags` in order; `default` must be one of them.
    pub fn new(tags: Vec<Locale>, default: &Locale) -> Result<Locales, LocalesError> {
        for (i, t) in tags.iter().enumerate() {
            if tags[..i].contains(t) {
                return Err(LocalesError::Duplicate(t.to_string()));
            }
        }
        let default =
            tags.iter().position(|t| t == default).ok_or_else(|| LocalesError::NoDefault(default.to_string()))?;
        Ok(Locales { tags, default: LocaleId(default) })
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    pub fn tag(&self, id: LocaleId) -> &Locale {
        &self.tags[id.0]
    }

    pub fn default_locale(&self) -> LocaleId {
        self.default
    }

    pub fn tags(&self) -> impl Iterator<Item = (LocaleId, &Locale)> {
        self.tags.iter().enumerate().map(|(i, t)| (LocaleId(i), t))
    }

    /// The locale of a message to `to` for someone who asked for `asked` (see the module doc).
    pub fn choose(&self, asked: Option<&Locale>, to: &Identifier) -> LocaleId {
        let lookup = |tag: &str| lookup_chain(tag).find_map(|t| self.find(t));
        let found = match (asked, to) {
            (Some(asked), _) => asked.fallbacks().find_map(|t| self.find(t)),
            (None, Identifier::Phone { country_code, .. }) => country_locale(*country_code).and_then(lookup),
            (None, Identifier::Email(_)) => None,
        };
        found.unwrap_or(self.default)
    }

    fn find(&self, tag: &str) -> Option<LocaleId> {
        self.tags.iter().position(|t| t.as_str() == tag).map(LocaleId)
    }
}

/// A canonical tag, then its shorter prefixes (see [`Locale::fallbacks`]).
fn lookup_chain(tag: &str) -> impl Iterator<Item = &str> {
    let ends: Vec<usize> = tag.match_indices('-').map(|(i, _)| i).collect();
    let singleton = |prefix: &str| prefix.rsplit('-').next().is_some_and(|last| last.len() == 1);
    let shorter = ends.into_iter().rev().map(move |i| &tag[..i]).filter(move |p| !singleton(p));
    std::iter::once(tag).chain(shorter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Locale {
        Locale::parse(s).unwrap()
    }

    fn phone(country_code: u16) -> Identifier {
        Identifier::Phone { e164: format!("+{country_code}5550123"), country_code }
    }

    fn shipped() -> Locales {
        let tags = ["en", "es", "fr", "de", "pt", "hi", "ar", "zh"].map(tag).to_vec();
        Locales::new(tags, &tag("en")).unwrap()
    }

    #[test]
    fn tags_are_checked_and_put_in_canonical_case() {
        for (input, canonical) in [
            ("es", "es"),
            ("ES", "es"),
            ("es-mx", "es-MX"),
            ("zh-hans-cn", "zh-Hans-CN"),
            ("es-419", "es-419"),
            ("fil", "fil"),
            ("de-DE-1996", "de-DE-1996"),
            ("en-US-u-ca-gregory", "en-US-u-ca-gregory"),
        ] {
            assert_eq!(Locale::parse(input).map(|l| l.to_string()), Ok(canonical.to_owned()), "{input}");
        }
        for bad in [
            "",
            "e",
            "engl",
            "es_MX",
            "es-",
            "-es",
            "es--MX",
            "es-MX-",
            "1s",
            "es-abcdefghi",
            "é",
            "es MX",
            "en-US-u-ca-gregory-x-aaaaaaaaa-bbb", // 35 is the most
        ] {
            assert_eq!(Locale::parse(bad), Err(LocaleError::Malformed), "{bad:?}");
        }
        assert!(Locale::parse(&format!("en-{}", ["abcdefgh"; 4].join("-"))).is_err(), "36 characters");
        assert!(Locale::parse(&format!("en-{}-abc", ["abcdefgh"; 3].join("-"))).is_ok(), "33 characters");
    }

    #[test]
    fn fallbacks_drop_subtags_from_the_end() {
        let f = |s: &str| tag(s).fallbacks().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(f("zh-Hans-CN"), ["zh-Hans-CN", "zh-Hans", "zh"]);
        assert_eq!(f("es"), ["es"]);
        assert_eq!(f("en-x-private"), ["en-x-private", "en"], "no prefix ends in a singleton");
    }

    #[test]
    fn an_asked_tag_wins_then_its_prefixes_then_the_default() {
        let l = shipped();
        let name = |id: LocaleId| l.tag(id).to_string();
        assert_eq!(name(l.choose(Some(&tag("es-MX")), &phone(33))), "es", "es-MX → es, whatever the country");
        assert_eq!(name(l.choose(Some(&tag("fr")), &phone(1))), "fr");
        assert_eq!(name(l.choose(Some(&tag("it")), &phone(34))), "en", "an unknown language: the default, not Spain's");
        assert_eq!(name(l.choose(Some(&tag("ar")), &Identifier::Email("a@b.c".into()))), "ar");
    }

    #[test]
    fn without_a_tag_the_number_s_country_chooses() {
        let l = shipped();
        let name = |cc: u16| l.tag(l.choose(None, &phone(cc))).to_string();
        for (cc, want) in [
            (33, "fr"),
            (34, "es"),
            (52, "es"),
            (54, "es"),
            (49, "de"),
            (43, "de"),
            (55, "pt"),
            (351, "pt"),
            (91, "hi"),
            (966, "ar"),
            (971, "ar"),
            (20, "ar"),
            (86, "zh"),
            (44, "en"),
            (39, "en"),  // Italian is not shipped: the default
            (886, "en"), // Taiwan reads traditional Chinese: not mapped
            (999, "en"),
        ] {
            assert_eq!(name(cc), want, "+{cc}");
        }
        assert_eq!(l.tag(l.choose(None, &Identifier::Email("a@b.c".into()))).as_str(), "en", "e-mail: the default");
        let with_es_mx = Locales::new(vec![tag("en"), tag("es"), tag("es-MX")], &tag("es")).unwrap();
        assert_eq!(with_es_mx.tag(with_es_mx.choose(None, &phone(52))).as_str(), "es-MX", "a regional file wins");
        assert_eq!(with_es_mx.tag(with_es_mx.choose(None, &phone(999))).as_str(), "es", "the default");
    }

    #[test]
    fn the_country_table_is_sorted_and_canonical() {
        assert!(COUNTRY_LOCALES.windows(2).all(|w| w[0].0 < w[1].0), "binary search needs order");
        for (cc, t) in COUNTRY_LOCALES {
            assert_eq!(tag(t).as_str(), *t, "+{cc}");
        }
    }

    #[test]
    fn a_default_must_be_present_and_tags_unique() {
        assert_eq!(Locales::new(vec![tag("en")], &tag("fr")), Err(LocalesError::NoDefault("fr".into())));
        assert_eq!(Locales::new(vec![tag("en"), tag("EN")], &tag("en")), Err(LocalesError::Duplicate("en".into())));
    }
}
