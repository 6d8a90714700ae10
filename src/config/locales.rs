//! The message catalogue: the locales otpd ships, compiled in from `locales/<tag>.toml` so a
//! binary needs no files, and the operator's own (`delivery.locales_dir`), which add locales
//! or override shipped ones key by key.
//!
//! A locale file is TOML with the keys `register`, `login`, `resend`, `email_subject`,
//! `lifetime_one` and `lifetime_other` (placeholders and rules: `template` in the engine),
//! named after its BCP 47 tag (`es.toml`, `pt-PT.toml`, `zh-Hant.toml`). A file for a shipped
//! locale may give only the keys it changes; a file for a new locale gives them all. Files
//! are read and checked at start: a broken one stops the node with its path and template
//! named. The `delivery.template_*` keys, when set, override English (`en`), whatever the
//! default locale: they were English's texts before there were locales, and a Spanish
//! default with English overrides would mix languages.
//!
//! # Segments of the shipped locales
//!
//! What each SMS costs (`rules::sms`), for the app name `Acme Cloud` (10 characters), a
//! six-digit code and the default 5-minute lifetime (the longer of its two plural forms):
//! septets (GSM-7) or UTF-16 units (UCS-2) / segments, first the body alone, then with both
//! last lines (`@login.example.com #123456 FA+9qCX9VSu` after an empty line: 40 more). The
//! spend budget charges these counts, per locale and purpose, as the node's own templates
//! give them; every character more of app name or origin adds one unit. The SMS Retriever
//! reads only one-segment messages (`template`): with both lines, every GSM-7 locale fits
//! (French's resend exactly: 160), no UCS-2 one does. A test computes this table and fails
//! when it differs (`cargo test -p otpd --lib shipped_locales -- --nocapture` prints it).
//!
//! | locale | encoding | register | login | resend | register + lines | login + lines | resend + lines |
//! |--------|----------|----------|-------|--------|------------------|---------------|----------------|
//! | ar | UCS-2 | 66 / 1 | 67 / 1 | 85 / 2 | 106 / 2 | 107 / 2 | 125 / 2 |
//! | de | GSM-7 | 101 / 1 | 96 / 1 | 119 / 1 | 141 / 1 | 136 / 1 | 159 / 1 |
//! | en | GSM-7 | 85 / 1 | 78 / 1 | 106 / 1 | 125 / 1 | 118 / 1 | 146 / 1 |
//! | es | GSM-7 | 106 / 1 | 90 / 1 | 116 / 1 | 146 / 1 | 130 / 1 | 156 / 1 |
//! | fr | GSM-7 | 98 / 1 | 95 / 1 | 120 / 1 | 138 / 1 | 135 / 1 | 160 / 1 |
//! | hi | UCS-2 | 69 / 1 | 67 / 1 | 85 / 2 | 109 / 2 | 107 / 2 | 125 / 2 |
//! | pt | UCS-2 | 83 / 2 | 81 / 2 | 94 / 2 | 123 / 2 | 121 / 2 | 134 / 2 |
//! | zh | UCS-2 | 42 / 1 | 42 / 1 | 51 / 1 | 82 / 2 | 82 / 2 | 91 / 2 |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use otpd_actors::actors::dispatch::template::{Kind, TemplateTexts, check_template};
use otpd_actors::rules::locale::Locale;
use serde::Deserialize;

/// The shipped catalogue: tag and file text.
pub const SHIPPED: &[(&str, &str)] = &[
    ("en", include_str!("../../locales/en.toml")),
    ("es", include_str!("../../locales/es.toml")),
    ("fr", include_str!("../../locales/fr.toml")),
    ("de", include_str!("../../locales/de.toml")),
    ("pt", include_str!("../../locales/pt.toml")),
    ("hi", include_str!("../../locales/hi.toml")),
    ("ar", include_str!("../../locales/ar.toml")),
    ("zh", include_str!("../../locales/zh.toml")),
];

/// One locale file: any of the keys of [`TemplateTexts`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocaleFile {
    register: Option<String>,
    login: Option<String>,
    resend: Option<String>,
    email_subject: Option<String>,
    lifetime_one: Option<String>,
    lifetime_other: Option<String>,
}

impl LocaleFile {
    fn parse(text: &str) -> Result<LocaleFile, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    /// Each key with its value, if given, and what kind of template it is.
    fn keys(&self) -> [(&'static str, Option<&String>, Kind); 6] {
        [
            ("register", self.register.as_ref(), Kind::Body),
            ("login", self.login.as_ref(), Kind::Body),
            ("resend", self.resend.as_ref(), Kind::Body),
            ("email_subject", self.email_subject.as_ref(), Kind::Subject),
            ("lifetime_one", self.lifetime_one.as_ref(), Kind::Lifetime),
            ("lifetime_other", self.lifetime_other.as_ref(), Kind::Lifetime),
        ]
    }

    /// `texts` with this file's keys over them.
    fn over(self, texts: &mut TemplateTexts) {
        let set = |field: &mut String, value: Option<String>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut texts.register, self.register);
        set(&mut texts.login, self.login);
        set(&mut texts.resend, self.resend);
        set(&mut texts.email_subject, self.email_subject);
        set(&mut texts.lifetime_one, self.lifetime_one);
        set(&mut texts.lifetime_other, self.lifetime_other);
    }

    /// Every key, for a locale otpd does not ship; `None` names what is missing.
    fn complete(self) -> Result<TemplateTexts, Vec<&'static str>> {
        let missing: Vec<&'static str> =
            self.keys().into_iter().filter(|(_, v, _)| v.is_none()).map(|(k, ..)| k).collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        let mut texts = TemplateTexts::default();
        self.over(&mut texts);
        Ok(texts)
    }
}

/// The English texts the `delivery.template_*` keys set (`None`: as the catalogue says).
#[derive(Debug, Default)]
pub struct EnglishOverrides<'a> {
    pub register: Option<&'a str>,
    pub login: Option<&'a str>,
    pub resend: Option<&'a str>,
    pub email_subject: Option<&'a str>,
}

/// The shipped catalogue, in [`SHIPPED`] order.
pub fn shipped() -> Vec<(Locale, TemplateTexts)> {
    SHIPPED
        .iter()
        .map(|(tag, text)| {
            let file = LocaleFile::parse(text).expect("a shipped locale file is TOML of the known keys");
            let texts = file.complete().expect("a shipped locale file has every key");
            (Locale::parse(tag).expect("a shipped tag is well-formed"), texts)
        })
        .collect()
}

/// The catalogue a node renders: the shipped one, the files of `dir` over it (in file-name
/// order), then `english`. Every problem is reported, each naming its file (or key) and
/// template, as `check-config` prints them.
pub fn load(dir: Option<&Path>, english: &EnglishOverrides<'_>) -> Result<Vec<(Locale, TemplateTexts)>, Vec<String>> {
    let mut catalogue = shipped();
    let mut errors = Vec::new();
    if let Some(dir) = dir {
        for (path, tag, text) in read_dir(dir, &mut errors) {
            let problem = |what: String| format!("delivery.locales_dir: {}: {what}", path.display());
            let file = match LocaleFile::parse(&text) {
                Ok(f) => f,
                Err(e) => {
                    errors.push(problem(e.trim_end().to_owned()));
                    continue;
                }
            };
            let before = errors.len();
            for (key, value, kind) in file.keys() {
                if let Some(text) = value
                    && let Err(e) = check_template(key, text, kind)
                {
                    errors.push(problem(e.to_string()));
                }
            }
            if errors.len() > before {
                continue;
            }
            match catalogue.iter_mut().find(|(l, _)| *l == tag) {
                Some((_, texts)) => file.over(texts),
                None => match file.complete() {
                    Ok(texts) => catalogue.push((tag, texts)),
                    Err(missing) => errors.push(problem(format!(
                        "missing {} (a locale otpd does not ship needs every key)",
                        missing.join(", ")
                    ))),
                },
            }
        }
    }
    let en = catalogue.iter_mut().find(|(l, _)| l.as_str() == "en").map(|(_, t)| t).expect("English is shipped");
    for (field, value) in [
        (&mut en.register, english.register),
        (&mut en.login, english.login),
        (&mut en.resend, english.resend),
        (&mut en.email_subject, english.email_subject),
    ] {
        if let Some(v) = value {
            *field = v.to_owned();
        }
    }
    if errors.is_empty() { Ok(catalogue) } else { Err(errors) }
}

/// The `<tag>.toml` files of `dir`, by tag, each read; other files (and hidden ones) are
/// left alone. A file named after no well-formed tag, two files of one tag (`es-mx.toml` and
/// `es-MX.toml`) or an unreadable file is an error.
fn read_dir(dir: &Path, errors: &mut Vec<String>) -> Vec<(PathBuf, Locale, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(format!("delivery.locales_dir: cannot read {}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')))
        .collect();
    paths.sort();
    let mut files = BTreeMap::new();
    for path in paths {
        let problem = |what: String| format!("delivery.locales_dir: {}: {what}", path.display());
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let tag = match Locale::parse(stem) {
            Ok(t) => t,
            Err(e) => {
                errors.push(problem(format!("the file name {e}")));
                continue;
            }
        };
        if files.contains_key(tag.as_str()) {
            errors.push(problem(format!("a second file for {tag}")));
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                files.insert(tag.to_string(), (path, tag, text));
            }
            Err(e) => errors.push(problem(format!("cannot read: {e}"))),
        }
    }
    files.into_values().collect()
}

#[cfg(test)]
mod tests {
    use otpd_actors::actors::dispatch::template::{SmsLines, Templates};
    use otpd_actors::ports::OutboundMessage;
    use otpd_actors::rules::challenge::Purpose;
    use otpd_actors::rules::clock::Timestamp;
    use otpd_actors::rules::code::{Alphabet, CodePolicy};
    use otpd_actors::rules::identifier::Identifier;
    use otpd_actors::rules::keys::IdentHash;
    use otpd_actors::rules::locale::LocaleId;
    use otpd_actors::rules::sms::{Encoding, Segments, segments};

    use super::*;

    /// What the table of the module doc assumes.
    const APP: &str = "Acme Cloud";
    const ORIGIN: &str = "login.example.com";
    const HASH: &str = "FA+9qCX9VSu";
    const PURPOSES: [(Purpose, bool); 3] =
        [(Purpose::Register, false), (Purpose::Login, false), (Purpose::Login, true)];

    fn shipped_templates(lines: SmsLines) -> Templates {
        Templates::new(APP, &shipped(), &Locale::parse("en").unwrap(), lines).unwrap()
    }

    /// The module doc's table as (locale, row text).
    fn documented() -> Vec<(String, String)> {
        include_str!("locales.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | "))
            .filter(|row| !row.starts_with("locale") && !row.starts_with('-'))
            .map(|row| (row.split(' ').next().unwrap().to_owned(), format!("| {row}")))
            .collect()
    }

    /// The table's row of `locale`, computed.
    fn row(plain: &Templates, lined: &Templates, id: LocaleId) -> String {
        let count = |t: &Templates, (purpose, resend): (Purpose, bool)| {
            // The lifetime shown is what is left: both plural forms, the longer counts.
            let [five, one] = [5, 1].map(|m| segments(&t.sms_body(id, purpose, resend, 6, m)));
            assert_eq!(five.encoding, one.encoding);
            if one.count > five.count { one } else { five }
        };
        let cells: Vec<Segments> =
            PURPOSES.map(|p| count(plain, p)).into_iter().chain(PURPOSES.map(|p| count(lined, p))).collect();
        let encoding = match cells[0].encoding {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        };
        let cells: Vec<String> = cells.iter().map(|s| format!("{} / {}", s.units, s.count)).collect();
        format!("| {} | {encoding} | {} |", plain.locales().tag(id), cells.join(" | "))
    }

    #[test]
    fn shipped_locales_cost_the_segments_the_module_doc_says() {
        let plain = shipped_templates(SmsLines::default());
        let lined = shipped_templates(SmsLines::new(ORIGIN, HASH).unwrap());
        let mut computed: Vec<(String, String)> =
            plain.locales().tags().map(|(id, tag)| (tag.to_string(), row(&plain, &lined, id))).collect();
        computed.sort();
        let table: Vec<&str> = computed.iter().map(|(_, r)| r.as_str()).collect();
        println!("{}", table.join("\n"));
        assert_eq!(documented(), computed, "the table of the module doc, as computed:\n{}", table.join("\n"));
        let tags: Vec<&str> = computed.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["ar", "de", "en", "es", "fr", "hi", "pt", "zh"], "every shipped locale has its row");
    }

    #[test]
    fn hindi_arabic_chinese_and_portuguese_are_ucs2_the_others_gsm7() {
        let t = shipped_templates(SmsLines::new(ORIGIN, HASH).unwrap());
        for (id, tag) in t.locales().tags() {
            for (purpose, resend) in PURPOSES {
                let body = t.sms_body(id, purpose, resend, 6, 5);
                let want = match tag.as_str() {
                    "hi" | "ar" | "zh" | "pt" => Encoding::Ucs2,
                    _ => Encoding::Gsm7,
                };
                assert_eq!(segments(&body).encoding, want, "{tag}: {body}");
            }
        }
    }

    /// Every shipped locale renders every purpose, on both channels, with the code, the app
    /// name and the lifetime in it, and its plural words for one minute and for several.
    #[test]
    fn every_shipped_locale_renders_every_purpose() {
        let t = shipped_templates(SmsLines::new(ORIGIN, HASH).unwrap());
        let now = Timestamp::from_millis(0);
        for (_, tag) in t.locales().tags() {
            for (purpose, resend) in PURPOSES {
                for to in [
                    Identifier::Phone { e164: "+12025550123".into(), country_code: 1 },
                    Identifier::Email("ada@example.com".into()),
                ] {
                    let code = CodePolicy::new(6, Alphabet::Numeric).unwrap().generate();
                    let text = code.expose().to_owned();
                    let m = OutboundMessage {
                        to: to.clone(),
                        purpose,
                        resend,
                        code,
                        expires_at: Timestamp::from_millis(300_000),
                        trace_id: "t".into(),
                        ident_hash: IdentHash([1; 16]),
                        via: None,
                        locale: Some(tag.clone()),
                    };
                    for (at, minutes) in [(now, "5"), (Timestamp::from_millis(250_000), "1")] {
                        let r = t.render(&m, at);
                        let body = r.body.lines().next().unwrap();
                        assert!(body.contains(&text) && body.contains(APP), "{tag}: {body}");
                        assert!(body.contains(minutes) && !body.contains('{'), "{tag}, {minutes} min: {body}");
                        if to.channel() == otpd_actors::rules::identifier::Channel::Email {
                            assert!(r.subject.contains(&text) && r.subject.contains(APP), "{tag}: {}", r.subject);
                        }
                    }
                    let texts = &shipped().into_iter().find(|(l, _)| l == tag).unwrap().1;
                    let one = t.render(&m, Timestamp::from_millis(250_000)).body;
                    assert!(one.contains(&texts.lifetime_one.replace("{minutes}", "1")), "{tag}: {one}");
                    let five = t.render(&m, now).body;
                    assert!(five.contains(&texts.lifetime_other.replace("{minutes}", "5")), "{tag}: {five}");
                }
            }
        }
    }

    #[test]
    fn english_is_the_engine_s_default_text() {
        let en = shipped().into_iter().find(|(l, _)| l.as_str() == "en").unwrap().1;
        assert_eq!(en, TemplateTexts::default(), "locales/en.toml and the engine's DEFAULT_* agree");
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn texts_of<'a>(catalogue: &'a [(Locale, TemplateTexts)], tag: &str) -> &'a TemplateTexts {
        &catalogue.iter().find(|(l, _)| l.as_str() == tag).unwrap().1
    }

    #[test]
    fn files_override_shipped_keys_and_add_locales() {
        let full_it = "register = \"Il tuo codice {app_name} è {code}.\"\nlogin = \"Accesso: {code}\"\n\
                       resend = \"Nuovo: {code}\"\nemail_subject = \"Codice {code}\"\n\
                       lifetime_one = \"{minutes} minuto\"\nlifetime_other = \"{minutes} minuti\"\n";
        let dir = dir_with(&[
            ("fr.toml", "login = \"Connexion {app_name} : {code}\"\n"),
            ("it.toml", full_it),
            ("README.md", "not a locale"),
            (".hidden.toml", "not = \"read\""),
        ]);
        let english = EnglishOverrides { login: Some("Sign in: {code}"), ..EnglishOverrides::default() };
        let catalogue = load(Some(dir.path()), &english).unwrap();
        let shipped_fr = texts_of(&shipped(), "fr").clone();
        let fr = texts_of(&catalogue, "fr");
        assert_eq!(fr.login, "Connexion {app_name} : {code}", "the file's key");
        assert_eq!((&fr.register, &fr.resend), (&shipped_fr.register, &shipped_fr.resend), "the shipped others");
        assert_eq!(texts_of(&catalogue, "it").lifetime_other, "{minutes} minuti", "a new locale");
        assert_eq!(texts_of(&catalogue, "en").login, "Sign in: {code}", "template_login overrides English");
        assert_eq!(texts_of(&catalogue, "en").register, TemplateTexts::default().register);
        assert_eq!(catalogue.len(), SHIPPED.len() + 1);
    }

    #[test]
    fn a_broken_file_is_named_with_its_template() {
        let dir = dir_with(&[
            ("de.toml", "login = \"kein Code\"\nresend = \"{code} {nope}\"\n"),
            ("it.toml", "login = \"{code}\"\n"),
            ("es_MX.toml", "login = \"{code}\"\n"),
            ("pt.toml", "logn = \"{code}\"\n"),
            ("ar.toml", "lifetime_one = \"دقيقة\"\n"),
            ("zh.toml", "login = 5\n"),
        ]);
        let path = |name: &str| dir.path().join(name).display().to_string();
        let errors = load(Some(dir.path()), &EnglishOverrides::default()).unwrap_err();
        let all = errors.join("\n");
        for needle in [
            format!("delivery.locales_dir: {}: login: must contain {{code}}", path("de.toml")),
            format!("delivery.locales_dir: {}: resend: unknown placeholder {{nope}}", path("de.toml")),
            format!(
                "delivery.locales_dir: {}: missing register, resend, email_subject, lifetime_one, lifetime_other",
                path("it.toml")
            ),
            format!("delivery.locales_dir: {}: the file name must be a BCP 47 language tag", path("es_MX.toml")),
            format!("delivery.locales_dir: {}: unknown field `logn`", path("pt.toml")),
            format!("delivery.locales_dir: {}: lifetime_one: may use only {{minutes}}, and must", path("ar.toml")),
            format!("delivery.locales_dir: {}: invalid type", path("zh.toml")),
        ] {
            assert!(all.contains(&needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 7, "one line per problem:\n{all}");
        let missing = load(Some(&dir.path().join("nope")), &EnglishOverrides::default()).unwrap_err();
        assert!(missing[0].starts_with("delivery.locales_dir: cannot read "), "{missing:?}");
        let twice = dir_with(&[("es-mx.toml", "login = \"{code}\"\n"), ("es-MX.toml", "login = \"{code}\"\n")]);
        let errors = load(Some(twice.path()), &EnglishOverrides::default()).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("a second file for es-MX")), "{errors:?}");
    }
}
