//! The configuration tree: one TOML file, overridden by `OTPD_<SECTION>__<KEY>` variables.
//!
//! Every key has a documented default, so an empty file (or none) is a complete
//! configuration: one node on the embedded store with the development outbox. Loading
//! reports *every* unknown key and bad value at once, each with its dotted name (and the
//! environment variable that set it), instead of stopping at the first.
//!
//! One file per section: its keys (declared with [`value::section!`], which also derives
//! the section's rows of `docs/configuration.md`) and its own rules (`validate`). Rules that
//! span sections — what a cluster node must share, which provider sections are in use, the
//! admin listener apart from the main one — are in one place, [`Config::validate_across`].
//! Defaults of the engine's rules (attempt cap, lifetimes, cooldown, send cap) are the
//! engine's own constants, so a default is written once. Each adapter takes its own section.

mod admin;
mod cluster;
mod delivery;
mod devices;
mod engine;
mod http;
mod identifiers;
mod limits;
pub mod locales;
mod node;
mod otp;
mod passkeys;
mod redis;
mod retention;
pub mod scylla;
mod secrets;
mod smtp;
mod store;
mod tokens;
mod twilio;
mod value;
mod webhook;

use std::fmt;
use std::path::Path;

pub use self::admin::AdminConfig;
pub use self::cluster::ClusterConfig;
pub use self::delivery::{DeliveryConfig, EMAIL_PROVIDERS, SMS_PROVIDERS};
pub use self::devices::DevicesConfig;
pub use self::engine::EngineSection;
pub use self::http::HttpConfig;
pub use self::identifiers::IdentifierConfig;
pub use self::limits::{GuessConfig, LimitsConfig, RuleConfig, SmsBudgetConfig};
pub use self::node::NodeConfig;
pub use self::otp::OtpConfig;
pub use self::passkeys::PasskeysConfig;
pub use self::redis::RedisConfig;
pub use self::retention::RetentionConfig;
pub use self::scylla::ScyllaConfig;
pub use self::secrets::SecretsConfig;
pub use self::smtp::SmtpConfig;
pub use self::store::StoreConfig;
pub use self::tokens::TokensConfig;
pub use self::twilio::TwilioConfig;
pub use self::value::{Dur, IpRange, KeyDoc, RedisUrl, Secret};
use self::value::{Origins, check};
pub use self::webhook::WebhookConfig;

/// Declares the tree once: its struct, the section names, and the loader of every section.
macro_rules! tree {
    ($( $field:ident : $ty:ident ),* $(,)?) => {
        /// The whole configuration.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct Config {
            $( pub $field: $ty, )*
        }

        /// Every section, in the order of the file and of the reference page.
        const SECTIONS: &[&str] = &[$(stringify!($field)),*];

        impl Config {
            fn load_sections<'a>(
                section: impl Fn(&str) -> &'a toml::Table,
                origins: &Origins,
                errors: &mut Vec<String>,
            ) -> Config {
                Config {
                    $( $field: $ty::load(section(stringify!($field)), stringify!($field), origins, errors), )*
                }
            }

            /// Each section's name, doc comment and keys, for `docs/configuration.md`.
            fn reference() -> Vec<(&'static str, &'static [&'static str], Vec<KeyDoc>)> {
                vec![$( (stringify!($field), $ty::DOC, $ty::reference()), )*]
            }
        }
    };
}

tree! {
    node: NodeConfig,
    http: HttpConfig,
    identifiers: IdentifierConfig,
    otp: OtpConfig,
    engine: EngineSection,
    tokens: TokensConfig,
    devices: DevicesConfig,
    passkeys: PasskeysConfig,
    store: StoreConfig,
    retention: RetentionConfig,
    scylla: ScyllaConfig,
    delivery: DeliveryConfig,
    secrets: SecretsConfig,
    admin: AdminConfig,
    twilio: TwilioConfig,
    webhook: WebhookConfig,
    smtp: SmtpConfig,
    redis: RedisConfig,
    limits: LimitsConfig,
    cluster: ClusterConfig,
}

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem{}):", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Prefix of every override variable.
pub const ENV_PREFIX: &str = "OTPD_";

impl Config {
    /// Reads `path` (if given) and applies `OTPD_*` overrides from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigErrors(vec![format!("cannot read config file {}: {e}", p.display())]))?,
            None => String::new(),
        };
        Self::from_sources(&text, std::env::vars())
    }

    /// Parses TOML text plus override variables (any iterator of name/value pairs).
    pub fn from_sources(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigErrors> {
        let mut root: toml::Table =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![format!("config file is not valid TOML: {e}")]))?;
        let mut errors = Vec::new();
        let mut origins = Origins::default();
        apply_env(&mut root, env, &mut origins, &mut errors);

        let empty = toml::Table::new();
        for (name, value) in &root {
            match (SECTIONS.contains(&name.as_str()), value) {
                (true, toml::Value::Table(_)) => {}
                (true, _) => errors.push(format!("{name}: must be a table ([{name}])")),
                (false, _) => errors.push(format!("{name}: unknown section (known: {})", SECTIONS.join(", "))),
            }
        }
        let config = Config::load_sections(
            |name| match root.get(name) {
                Some(toml::Value::Table(t)) => t,
                _ => &empty,
            },
            &origins,
            &mut errors,
        );
        config.validate(&mut errors);
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    /// Every section's own rules, then the rules across sections.
    fn validate(&self, errors: &mut Vec<String>) {
        self.node.validate(errors);
        self.http.validate(errors);
        self.identifiers.validate(errors);
        self.otp.validate(errors);
        self.engine.validate(errors);
        self.tokens.validate(errors);
        self.devices.validate(errors);
        self.retention.validate(errors);
        self.passkeys.validate(errors);
        self.store.validate(errors);
        self.delivery.validate(errors);
        self.secrets.validate(errors);
        self.admin.validate(errors);
        self.redis.validate(errors);
        self.limits.validate(errors);
        self.cluster.validate(errors);
        self.validate_across(errors);
    }

    /// The rules that tie sections together.
    fn validate_across(&self, errors: &mut Vec<String>) {
        check(errors, self.admin.listen.port() == 0 || self.admin.listen != self.http.listen, || {
            "admin.listen: must differ from http.listen".into()
        });
        // A section that no route, store or option uses is not checked beyond its keys.
        if self.store.kind == "scylla" {
            self.scylla.validate(errors);
        }
        let used = self.delivery.providers_in_use();
        if used.iter().any(|p| p.starts_with("twilio")) {
            self.twilio.validate(errors);
        }
        if used.contains(&"twilio_whatsapp") {
            check(errors, self.twilio.whatsapp_from.starts_with('+'), || {
                "twilio.whatsapp_from: the WhatsApp sender's number in E.164 is required by twilio_whatsapp".into()
            });
        }
        if used.contains(&"twilio_voice") {
            check(errors, self.twilio.voice_from.starts_with('+'), || {
                "twilio.voice_from: a Twilio voice number in E.164 is required by twilio_voice".into()
            });
        }
        if used.contains(&"webhook") {
            self.webhook.validate(errors);
        }
        if used.contains(&"smtp") {
            self.smtp.validate(errors);
        }
        if self.cluster.enabled {
            // Every node must seal codes, hash identifiers and sign tokens alike, and see the
            // same accounts and the same limits: nothing a node generates or keeps for itself
            // will do.
            check(errors, self.secrets.hash_key.is_some(), || {
                "secrets.hash_key: required in a cluster (every node needs the same one)".into()
            });
            check(errors, self.tokens.signing_key_configured(), || {
                "tokens.signing_key_file (or tokens.hs256_secret with HS256): required in a cluster (every node \
                 needs the same key)"
                    .into()
            });
            check(errors, self.store.kind == "scylla", || {
                "store.kind: a cluster needs the shared store, \"scylla\"".into()
            });
            check(errors, self.redis.enabled(), || {
                "redis.url: a cluster needs shared limits (redis.url or redis.cluster_nodes)".into()
            });
        }
    }

    /// The development outbox file.
    pub fn outbox_path(&self) -> std::path::PathBuf {
        self.delivery.outbox_path(&self.node.data_dir)
    }

    /// `docs/configuration.md`: every section and key with its type, default and meaning.
    pub fn reference_markdown() -> String {
        let mut out = String::from(
            "# Configuration\n\n<!-- Generated from src/config/ by `OTPD_BLESS=1 cargo test --test it reference`; \
             do not edit. -->\n\notpd reads one TOML file (`otpd run --config otpd.toml`, or `OTPD_CONFIG`); every \
             key can be overridden by an environment variable `OTPD_<SECTION>__<KEY>` (e.g. \
             `OTPD_HTTP__LISTEN=0.0.0.0:8080`). Every key has a default, so no file at all is a complete \
             configuration. `otpd check-config` reports every problem at once.\n\nDurations are written like \
             `\"30s\"`, `\"5m\"`, `\"30d\"`; secrets are better given by environment variable than in the file.\n",
        );
        for (section, doc, keys) in Config::reference() {
            let doc: Vec<&str> = doc.iter().map(|l| l.trim()).collect();
            out.push_str(&format!("\n## `[{section}]`\n\n{}\n\n", doc.join(" ")));
            out.push_str("| key | type | default | meaning |\n| --- | --- | --- | --- |\n");
            for k in keys {
                let default = if k.default.is_empty() { String::from("unset") } else { format!("`{}`", k.default) };
                let cell = |s: &str| s.replace('|', "\\|");
                out.push_str(&format!("| `{}` | {} | {} | {} |\n", k.key, cell(&k.kind), cell(&default), cell(&k.doc)));
            }
        }
        out
    }
}

/// Merges `OTPD_<SECTION>__<KEY>=value` into the tree. A value is read as a TOML value
/// (`8080`, `true`, `["10.0.0.1"]`) and, failing that, as a string. Variables without `__`
/// (`OTPD_CONFIG`, `OTPD_TEST_SCYLLA`, …) are not overrides and are left alone.
fn apply_env(
    root: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    origins: &mut Origins,
    errors: &mut Vec<String>,
) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        let Some((section, key)) = rest.split_once("__") else { continue };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section.is_empty() || key.is_empty() || key.contains("__") {
            errors.push(format!("{name}: overrides are named OTPD_<SECTION>__<KEY>"));
            continue;
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let entry = root.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.clone(), value);
                origins.0.insert(format!("{section}.{key}"), name);
                origins.1.insert(format!("{section}.{key}"), raw);
            }
            _ => errors.push(format!("{name}: section {section} is not a table in the config file")),
        }
    }
}

#[cfg(test)]
mod tests;
