//! The configuration tree: one TOML file, overridden by `OTPD_<SECTION>__<KEY>` variables.
//!
//! Every key has a documented default, so an empty file (or none) is a complete
//! configuration: one node on the embedded store with the development outbox. Loading
//! reports *every* unknown key and bad value at once, each with its dotted name (and the
//! environment variable that set it), instead of stopping at the first.
//!
//! Sections are declared with [`section!`], which generates the struct, its defaults, and a
//! loader that reads each key on its own so that one bad value does not hide the next.
//! Cross-key rules (code length range, lifetime cap, …) live in [`Config::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use otpd_actors::actors::dispatch::template;
use otpd_actors::rules::code::{Alphabet, MAX_CODE_LENGTH, MIN_CODE_LENGTH};
use otpd_actors::rules::limits::Preset;
use serde::{Deserialize, Deserializer};

/// A duration written as text: `"30s"`, `"5m"`, `"30d"`, `"250ms"`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("{e} (write durations like \"30s\", \"5m\", \"30d\")")))
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

const fn secs(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}

const fn millis(ms: u64) -> Dur {
    Dur(Duration::from_millis(ms))
}

/// A secret given in config: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Declares a config section: struct, defaults and a per-key loader.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name { $( $(#[doc = $doc])* pub $field: $ty, )* }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $name {
            /// The keys this section accepts.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn load(table: &toml::Table, section: &str, origin: &Origins, errors: &mut Vec<String>) -> Self {
                let mut out = Self::default();
                for (key, value) in table {
                    let path = format!("{section}.{key}");
                    match key.as_str() {
                        $( stringify!($field) => match <$ty as Deserialize>::deserialize(value.clone())
                            .or_else(|e| origin.as_text::<$ty>(&path, value).ok_or(e))
                        {
                            Ok(v) => out.$field = v,
                            Err(e) => errors.push(format!("{}: {}", origin.describe(&path), e.message())),
                        }, )*
                        _ => errors.push(format!(
                            "{}: unknown key (this section accepts: {})",
                            origin.describe(&path),
                            Self::KEYS.join(", ")
                        )),
                    }
                }
                out
            }
        }
    };
}

section! {
    /// Where the node keeps its data, and how it logs.
    pub struct NodeConfig {
        /// Directory of the embedded store, the outbox and generated secrets.
        data_dir: PathBuf = PathBuf::from("data"),
        /// `tracing` filter: `info`, `otpd=debug,info`, …
        log_level: String = "info".into(),
        /// `json` (one object per line) or `text`.
        log_format: String = "json".into(),
    }
}

section! {
    /// The HTTP listener.
    pub struct HttpConfig {
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// Largest request body accepted (bytes).
        max_body_bytes: usize = 16 * 1024,
        /// Open connections beyond this wait in the kernel's accept queue.
        max_connections: usize = 10_000,
        /// Time allowed to receive a request's headers.
        header_read_timeout: Dur = secs(5),
        /// Time allowed for a whole request, body and handling included.
        request_timeout: Dur = secs(10),
        /// Peers whose `X-Forwarded-For` is believed (load balancers). Empty: the socket
        /// address is the client address.
        trusted_proxies: Vec<IpAddr> = Vec::new(),
    }
}

section! {
    /// How identifiers are read.
    pub struct IdentifierConfig {
        /// ISO 3166 region for phone numbers given without a country code; empty refuses them.
        default_region: String = "US".into(),
        /// Phone-number verdicts remembered (valid or not) so repeat numbers skip libphonenumber.
        verdict_cache: usize = 200_000,
    }
}

section! {
    /// The one-time-code rules.
    pub struct OtpConfig {
        /// Characters per code, 4..=10.
        code_length: u8 = 6,
        /// `numeric` or `alphanumeric`.
        alphabet: Alphabet = Alphabet::Numeric,
        /// How long a code works (at most 10 minutes).
        lifetime: Dur = secs(300),
        /// Wrong codes before a challenge burns.
        max_attempts: u8 = 5,
        /// Minimum time between two codes for one identifier and purpose.
        resend_cooldown: Dur = secs(30),
        /// Window of the per-identifier send cap.
        send_window: Dur = secs(600),
        /// Codes per identifier per window.
        max_sends_per_window: u32 = 5,
        /// Answer 404 (login) / 409 (register) for unknown / existing accounts instead of
        /// enumeration-safe answers. Off by default.
        reveal_accounts: bool = false,
    }
}

section! {
    /// The actor tree.
    pub struct EngineSection {
        /// Challenge shards (actors). More shards, shorter mailboxes.
        shards: usize = 64,
        /// Longest wait for a shard's answer.
        call_timeout: Dur = secs(2),
        /// How often shards reclaim expired challenges.
        reclaim_interval: Dur = secs(1),
        /// How long an expired challenge is kept so late attempts read "expired".
        expired_grace: Dur = secs(60),
    }
}

section! {
    /// Access and refresh tokens.
    pub struct TokensConfig {
        /// `EdDSA` (default; public key in the JWKS) or `HS256` (shared secret).
        algorithm: String = "EdDSA".into(),
        issuer: String = "otpd".into(),
        audience: String = "otpd".into(),
        /// Lifetime of an access token.
        access_ttl: Dur = secs(900),
        /// Lifetime of a session and its refresh token.
        session_ttl: Dur = secs(30 * 24 * 3600),
        /// PKCS#8 (DER or PEM) Ed25519 key; default: generated into `<data_dir>/secrets/`.
        signing_key_file: Option<PathBuf> = None,
        /// HS256 secret (at least 32 bytes); default: generated into `<data_dir>/secrets/`.
        hs256_secret: Option<Secret> = None,
    }
}

section! {
    /// Device keys (fingerprint login).
    pub struct DevicesConfig {
        /// Active devices per account.
        max_per_user: usize = 5,
        /// Enrolment needs a login by one-time code (and an access token) at most this old.
        enrol_max_auth_age: Dur = secs(300),
        /// How long a device-login nonce works.
        challenge_lifetime: Dur = secs(60),
    }
}

section! {
    /// Several nodes sharing one population (ractor_cluster). Off by default; when on, every
    /// node needs the same `cookie`, `secrets.hash_key` and token signing key, a shared store
    /// (`store.kind = "scylla"`) and shared limits (`[redis]`).
    pub struct ClusterConfig {
        enabled: bool = false,
        /// This node's name, unique in the cluster; ownership is hashed over these names, so
        /// a node that restarts under the same name gets the same identifiers back.
        node_name: String = String::new(),
        /// Address the inter-node listener binds.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 4370)),
        /// Host name or address the other nodes reach this one at; default: `listen`'s address.
        advertise_host: String = String::new(),
        /// Other nodes (`host:port`) to join through; any one that is up is enough.
        seeds: Vec<String> = Vec::new(),
        /// Shared secret the nodes authenticate each other with (at least 16 characters).
        /// Prefer the environment: `OTPD_CLUSTER__COOKIE`.
        cookie: Option<Secret> = None,
        /// Longest wait for the owner of an identifier to answer a forwarded request; past it
        /// the request fails with 503 `owner_unreachable`.
        forward_timeout: Dur = secs(2),
        /// How often unreachable seeds are tried again.
        reconnect_interval: Dur = secs(1),
        /// PEM certificate chain of this node, for TLS between nodes (with `tls_key_file` and
        /// `tls_ca_file`; all three or none).
        tls_cert_file: Option<PathBuf> = None,
        /// PEM private key of `tls_cert_file`.
        tls_key_file: Option<PathBuf> = None,
        /// PEM CA that signed every node's certificate; peers must present one it signed.
        tls_ca_file: Option<PathBuf> = None,
    }
}

section! {
    /// The durable store.
    pub struct StoreConfig {
        /// `embedded` (an LSM tree in `<data_dir>/store/`) or `scylla` (a ScyllaDB cluster,
        /// configured in `[scylla]`).
        kind: String = "embedded".into(),
        /// Most writes committed together in one fsync.
        group_commit_max: usize = 512,
        /// Writes waiting for the writer before new ones are refused (503).
        queue_capacity: usize = 65_536,
        /// Block cache of the embedded store (bytes); reads of accounts and sessions need
        /// little, and a bounded cache keeps a node's memory predictable.
        cache_bytes: usize = 128 * 1024 * 1024,
        /// Largest in-memory table per keyspace before it is flushed (bytes); the store has
        /// nine keyspaces, so this bounds its write buffers at about nine times this. Small
        /// tables flush in short bursts: a flush's disk writes delay the commits queued behind
        /// it (docs/PERFORMANCE.md, "Write stalls").
        memtable_bytes: usize = 4 * 1024 * 1024,
        /// Accounts kept in memory by identifier hash (each ≈ 300 B), so sends read none.
        user_cache: usize = 100_000,
    }
}

section! {
    /// A ScyllaDB cluster as the durable store (`store.kind = "scylla"`).
    pub struct ScyllaConfig {
        /// Nodes to connect to first (`host:port`); the driver discovers the rest.
        contact_points: Vec<String> = vec!["127.0.0.1:9042".into()],
        /// Keyspace of otpd's tables (created by the migrations unless `create_keyspace = false`).
        keyspace: String = "otpd".into(),
        /// The datacenter this node is in: requests go to its replicas first and consistency
        /// `LOCAL_*` counts them. Empty: no preference (single-datacenter clusters).
        local_datacenter: String = String::new(),
        /// Consistency of account, session and device reads and writes.
        consistency: String = "LOCAL_QUORUM".into(),
        /// Consistency of audit writes and reads.
        audit_consistency: String = "LOCAL_QUORUM".into(),
        /// Consistency of the Paxos round of lightweight transactions: `LOCAL_SERIAL` or `SERIAL`.
        serial_consistency: String = "LOCAL_SERIAL".into(),
        /// Empty: no authentication.
        username: String = String::new(),
        /// Prefer the environment: `OTPD_SCYLLA__PASSWORD`.
        password: Option<Secret> = None,
        /// Connect over TLS (rustls).
        tls: bool = false,
        /// PEM file of the CA(s) that signed the nodes' certificates; default: the system's roots.
        tls_ca_file: Option<PathBuf> = None,
        /// Client certificate (PEM) for clusters that require one, with `tls_key_file`.
        tls_cert_file: Option<PathBuf> = None,
        tls_key_file: Option<PathBuf> = None,
        /// Name the nodes' certificates are checked against; empty: each node's IP address.
        tls_server_name: String = String::new(),
        /// Longest wait for a connection to a node.
        connect_timeout: Dur = secs(5),
        /// Longest wait for one request (retries and speculative executions included).
        request_timeout: Dur = secs(2),
        /// Idempotent reads still unanswered after this long are also sent to another
        /// replica; `0s` turns speculative execution off.
        speculative_after: Dur = millis(100),
        /// Audit events are deleted by Scylla (TTL) after this long.
        audit_retention: Dur = secs(90 * 24 * 3600),
        /// `CREATE KEYSPACE IF NOT EXISTS` with `replication_factor` per datacenter (or in
        /// `local_datacenter` when set). Off: the keyspace must exist.
        create_keyspace: bool = true,
        /// Replicas per datacenter when otpd creates the keyspace.
        replication_factor: u32 = 3,
        /// Apply pending schema migrations when a node starts. Off: a node refuses to start
        /// until `otpd migrate` has run.
        migrate_on_start: bool = true,
        /// Wait for every node to agree on the schema after a migration. Turn off only for a
        /// single test server that cannot report schema versions.
        await_schema_agreement: bool = true,
        /// How often readiness asks the cluster for an answer.
        health_interval: Dur = secs(2),
    }
}

section! {
    /// Where codes go, and how the dispatcher gets them there.
    pub struct DeliveryConfig {
        /// SMS provider: `outbox` (development: JSON lines in a file), `twilio` or `webhook`.
        provider: String = "outbox".into(),
        /// Name in the messages ("Your <app_name> login code is …").
        app_name: String = "otpd".into(),
        /// Default: `<data_dir>/outbox.jsonl`.
        outbox_path: Option<PathBuf> = None,
        /// Messages accepted and not yet delivered (or given up) before sends are refused (503).
        queue_capacity: usize = 10_000,
        /// SMS failover when the primary's circuit breaker is open: `""` (none), `twilio`,
        /// `webhook` or `outbox`.
        secondary: String = String::new(),
        /// E-mail provider: `outbox`, `smtp` or `webhook`.
        email_provider: String = "outbox".into(),
        /// E-mail failover: `""` (none), `smtp`, `webhook` or `outbox`.
        email_secondary: String = String::new(),
        /// A provider call carries at most this many messages (1 turns batching off)…
        batch_max_size: usize = 100,
        /// … and leaves once its oldest message has waited this long.
        batch_max_age: Dur = millis(10),
        /// Attempts per message, every provider together.
        max_attempts: u32 = 5,
        /// Ceiling of the first retry's delay (full jitter; doubles per attempt).
        backoff_base: Dur = millis(200),
        /// Largest backoff ceiling (a provider's Retry-After may ask for more).
        backoff_max: Dur = secs(30),
        /// Longest a provider call may take before it counts as a failure.
        send_timeout: Dur = secs(10),
        /// Consecutive failed calls that open a provider's circuit breaker.
        breaker_failures: u32 = 5,
        /// How long an open breaker sends the provider's traffic elsewhere before a probe.
        breaker_open_for: Dur = secs(30),
        /// Host for the origin-bound last line of SMS (`@example.com #123456`, WebOTP / SMS
        /// Retriever); empty: no such line.
        origin: String = String::new(),
        /// Body of a registration code (placeholders: {code}, {app_name}, {lifetime}, {minutes}).
        template_register: String = template::DEFAULT_REGISTER.into(),
        /// Body of a login code.
        template_login: String = template::DEFAULT_LOGIN.into(),
        /// Body of a resent code (either purpose).
        template_resend: String = template::DEFAULT_RESEND.into(),
        /// Subject of a code sent by e-mail.
        email_subject: String = template::DEFAULT_EMAIL_SUBJECT.into(),
    }
}

section! {
    /// Twilio Programmable Messaging (`delivery.provider = "twilio"`).
    pub struct TwilioConfig {
        /// Account SID (`AC…`, 34 characters); part of the API path.
        account_sid: String = String::new(),
        /// The account's auth token, or the secret of `api_key_sid`. Prefer the environment:
        /// `OTPD_TWILIO__AUTH_TOKEN`.
        auth_token: Option<Secret> = None,
        /// An API key (`SK…`) to authenticate with instead of the account SID.
        api_key_sid: String = String::new(),
        /// Sender: a Twilio number in E.164 or an alphanumeric sender id…
        from: String = String::new(),
        /// … or a Messaging Service (`MG…`) that picks the sender.
        messaging_service_sid: String = String::new(),
        /// API base URL (tests point it at a local server).
        base_url: String = "https://api.twilio.com".into(),
        /// Requests in flight at once (Twilio takes one message per request).
        concurrency: usize = 16,
    }
}

section! {
    /// A generic HTTP webhook that receives batches as JSON (an operator's own gateway).
    pub struct WebhookConfig {
        /// Where batches are POSTed (`http://` or `https://`).
        url: String = String::new(),
        /// Sent as `Authorization: Bearer <token>` when set.
        bearer_token: Option<Secret> = None,
        /// Most messages per POST.
        max_batch: usize = 100,
        /// POSTs in flight at once.
        concurrency: usize = 4,
    }
}

section! {
    /// E-mail over SMTP (`delivery.email_provider = "smtp"`).
    pub struct SmtpConfig {
        host: String = "localhost".into(),
        port: u16 = 587,
        /// `starttls` (required), `tls` (implicit TLS, usually port 465) or `none` (plain text:
        /// only for a relay on the same host).
        tls: String = "starttls".into(),
        /// Empty: no authentication.
        username: String = String::new(),
        password: Option<Secret> = None,
        /// The From header and envelope sender.
        from: String = "otpd <no-reply@localhost>".into(),
        /// Most messages per call (one pooled connection).
        max_batch: usize = 20,
        /// Calls (connections) in flight at once.
        concurrency: usize = 4,
    }
}

section! {
    /// What SREs use: Prometheus metrics, health and admin endpoints.
    pub struct AdminConfig {
        /// A second listener serving only `/metrics`, `/health/*` and `/v1/admin/*`
        /// (e.g. `"127.0.0.1:9464"`); unset: none.
        listen: Option<SocketAddr> = None,
        /// Whether the main listener also serves `GET /metrics` (turn it off when the main
        /// listener is public and scrapers use `admin.listen`).
        metrics_on_main: bool = true,
        /// How often sampled gauges are refreshed: users, sessions, live challenges, breaker
        /// states, readiness.
        refresh_interval: Dur = secs(5),
    }
}

section! {
    /// Node secrets not covered by a more specific section.
    pub struct SecretsConfig {
        /// 64 hex characters; default: generated into `<data_dir>/secrets/hash.key`. Every node
        /// of a cluster needs the same one.
        hash_key: Option<Secret> = None,
        /// Bearer token for `/v1/admin/*`; default: generated into `<data_dir>/secrets/admin.token`.
        admin_token: Option<Secret> = None,
    }
}

section! {
    /// Redis for the cooldowns and rate limits every node shares. Without a URL or cluster
    /// nodes, limits are kept in-process (the embedded default).
    pub struct RedisConfig {
        /// `redis://[user:password@]host:6379[/db]` for one server, or
        /// `redis-cluster://host:7000?node=host:7001&node=host:7002` for Redis Cluster.
        url: RedisUrl = RedisUrl::default(),
        /// Redis Cluster seed nodes (`host:port`), instead of a `redis-cluster://` URL.
        cluster_nodes: Vec<String> = Vec::new(),
        /// Password (overrides one in the URL).
        password: Option<Secret> = None,
        /// A decision slower than this is made by the in-process limiter instead.
        timeout: Dur = millis(250),
        /// How often Redis is pinged (to notice an outage without traffic, and a recovery).
        probe_interval: Dur = secs(1),
        /// First part of every key (`<key_prefix>:{…}:…`), to share a Redis between deployments.
        key_prefix: String = "otpd".into(),
    }
}

section! {
    /// Anti-abuse rate limits. `preset` sets every rule; each rule can be overridden in part,
    /// e.g. `ip_send = { limit = 50, block = "1h" }`; `limit = 0` turns a rule off.
    pub struct LimitsConfig {
        /// `low`, `medium` or `high`.
        preset: Preset = Preset::Medium,
        /// `/v1/login` codes per identifier.
        identifier_login: RuleConfig = RuleConfig::default(),
        /// `/v1/register` codes per identifier.
        identifier_register: RuleConfig = RuleConfig::default(),
        /// `/v1/otp/resend` codes per identifier.
        identifier_resend: RuleConfig = RuleConfig::default(),
        /// Code checks per identifier.
        identifier_verify: RuleConfig = RuleConfig::default(),
        /// Codes sent per client IP (IPv6: per /64).
        ip_send: RuleConfig = RuleConfig::default(),
        /// Code checks per client IP (IPv6: per /64).
        ip_verify: RuleConfig = RuleConfig::default(),
        /// SMS per number prefix (the first `prefix_digits` digits).
        prefix_send: RuleConfig = RuleConfig::default(),
        /// SMS per country calling code.
        country_send: RuleConfig = RuleConfig::default(),
        /// Digits of an E.164 number, country code included, that make its prefix.
        prefix_digits: u8 = 7,
        /// SMS only to these country codes or number prefixes (`"+1"`, `"+44"`); empty: anywhere.
        sms_allow: Vec<String> = Vec::new(),
        /// Never SMS to these country codes or number prefixes (`"+1876"`); wins over `sms_allow`.
        sms_deny: Vec<String> = Vec::new(),
    }
}

/// A Redis URL; `Debug` hides its password.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(pub String);

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://user:password@host… → scheme://user:…@host…
        let text = &self.0;
        let redacted = text.split_once("://").and_then(|(scheme, rest)| {
            let (auth, host) = rest.split_once('@')?;
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            Some(format!("{scheme}://{user}:…@{host}"))
        });
        write!(f, "{:?}", redacted.as_deref().unwrap_or(text))
    }
}

/// Overrides of one rate-limit rule; what is left out comes from the preset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Events allowed per window; 0 turns the rule off.
    pub limit: Option<u32>,
    pub window: Option<Dur>,
    /// Once the limit is exceeded, refuse for at least this long ("0s": until the window ends).
    pub block: Option<Dur>,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub identifiers: IdentifierConfig,
    pub otp: OtpConfig,
    pub engine: EngineSection,
    pub tokens: TokensConfig,
    pub devices: DevicesConfig,
    pub store: StoreConfig,
    pub scylla: ScyllaConfig,
    pub delivery: DeliveryConfig,
    pub secrets: SecretsConfig,
    pub admin: AdminConfig,
    pub twilio: TwilioConfig,
    pub webhook: WebhookConfig,
    pub smtp: SmtpConfig,
    pub redis: RedisConfig,
    pub limits: LimitsConfig,
    pub cluster: ClusterConfig,
}

const SECTIONS: &[&str] = &[
    "node",
    "http",
    "identifiers",
    "otp",
    "engine",
    "tokens",
    "devices",
    "store",
    "scylla",
    "delivery",
    "secrets",
    "admin",
    "twilio",
    "webhook",
    "smtp",
    "redis",
    "limits",
    "cluster",
];

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

/// Which environment variable set which key, for error messages; and the variable's raw text.
#[derive(Default)]
struct Origins(BTreeMap<String, String>, BTreeMap<String, String>);

impl Origins {
    fn describe(&self, path: &str) -> String {
        match self.0.get(path) {
            Some(var) => format!("{path} (from {var})"),
            None => path.to_owned(),
        }
    }

    /// An override read as a number or boolean that the key wants as text (a sender number
    /// `OTPD_TWILIO__FROM=+15005550006` reads as the integer 15005550006): its raw text.
    fn as_text<'de, T: Deserialize<'de>>(&self, path: &str, value: &toml::Value) -> Option<T> {
        let raw = self.1.get(path).filter(|_| !value.is_str())?;
        T::deserialize(toml::Value::String(raw.clone())).ok()
    }
}

/// Prefix of every override variable.
pub const ENV_PREFIX: &str = "OTPD_";

/// What `delivery.provider` accepts.
pub const SMS_PROVIDERS: &[&str] = &["outbox", "twilio", "webhook"];
/// What `delivery.email_provider` accepts.
pub const EMAIL_PROVIDERS: &[&str] = &["outbox", "smtp", "webhook"];

fn http_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

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
        let mut tables: BTreeMap<&str, &toml::Table> = BTreeMap::new();
        for (name, value) in &root {
            match (SECTIONS.contains(&name.as_str()), value) {
                (true, toml::Value::Table(t)) => {
                    tables.insert(SECTIONS.iter().find(|s| **s == name).expect("checked above"), t);
                }
                (true, _) => errors.push(format!("{name}: must be a table ([{name}])")),
                (false, _) => errors.push(format!("{name}: unknown section (known: {})", SECTIONS.join(", "))),
            }
        }
        let section = |name: &str| tables.get(name).copied().unwrap_or(&empty);
        let config = Config {
            node: NodeConfig::load(section("node"), "node", &origins, &mut errors),
            http: HttpConfig::load(section("http"), "http", &origins, &mut errors),
            identifiers: IdentifierConfig::load(section("identifiers"), "identifiers", &origins, &mut errors),
            otp: OtpConfig::load(section("otp"), "otp", &origins, &mut errors),
            engine: EngineSection::load(section("engine"), "engine", &origins, &mut errors),
            tokens: TokensConfig::load(section("tokens"), "tokens", &origins, &mut errors),
            devices: DevicesConfig::load(section("devices"), "devices", &origins, &mut errors),
            store: StoreConfig::load(section("store"), "store", &origins, &mut errors),
            scylla: ScyllaConfig::load(section("scylla"), "scylla", &origins, &mut errors),
            delivery: DeliveryConfig::load(section("delivery"), "delivery", &origins, &mut errors),
            secrets: SecretsConfig::load(section("secrets"), "secrets", &origins, &mut errors),
            admin: AdminConfig::load(section("admin"), "admin", &origins, &mut errors),
            twilio: TwilioConfig::load(section("twilio"), "twilio", &origins, &mut errors),
            webhook: WebhookConfig::load(section("webhook"), "webhook", &origins, &mut errors),
            smtp: SmtpConfig::load(section("smtp"), "smtp", &origins, &mut errors),
            redis: RedisConfig::load(section("redis"), "redis", &origins, &mut errors),
            limits: LimitsConfig::load(section("limits"), "limits", &origins, &mut errors),
            cluster: ClusterConfig::load(section("cluster"), "cluster", &origins, &mut errors),
        };
        config.validate(&mut errors);
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    /// Rules that span keys or bound values.
    fn validate(&self, errors: &mut Vec<String>) {
        let mut check = |ok: bool, msg: String| {
            if !ok {
                errors.push(msg);
            }
        };
        let otp = &self.otp;
        check(
            (MIN_CODE_LENGTH..=MAX_CODE_LENGTH).contains(&otp.code_length),
            format!("otp.code_length: must be {MIN_CODE_LENGTH}..={MAX_CODE_LENGTH}, got {}", otp.code_length),
        );
        check(
            otp.lifetime.0 >= Duration::from_secs(10) && otp.lifetime.0 <= Duration::from_secs(600),
            format!("otp.lifetime: must be between 10s and 10m, got {:?}", otp.lifetime),
        );
        check(
            (1..=20).contains(&otp.max_attempts),
            format!("otp.max_attempts: must be 1..=20, got {}", otp.max_attempts),
        );
        check(otp.max_sends_per_window >= 1, "otp.max_sends_per_window: must be at least 1".into());
        check(!otp.send_window.0.is_zero(), "otp.send_window: must be more than zero".into());
        check(
            (1..=4096).contains(&self.engine.shards),
            format!("engine.shards: must be 1..=4096, got {}", self.engine.shards),
        );
        check(!self.engine.call_timeout.0.is_zero(), "engine.call_timeout: must be more than zero".into());
        check(!self.engine.reclaim_interval.0.is_zero(), "engine.reclaim_interval: must be more than zero".into());
        check(
            (256..=16 * 1024 * 1024).contains(&self.http.max_body_bytes),
            format!("http.max_body_bytes: must be 256..=16777216, got {}", self.http.max_body_bytes),
        );
        check(self.http.max_connections >= 1, "http.max_connections: must be at least 1".into());
        check(
            self.admin.refresh_interval.0 >= Duration::from_millis(10),
            format!("admin.refresh_interval: must be at least 10ms, got {:?}", self.admin.refresh_interval),
        );
        check(
            self.admin.listen.is_none_or(|a| a.port() == 0 || a != self.http.listen),
            "admin.listen: must differ from http.listen".into(),
        );
        check(
            matches!(self.node.log_format.as_str(), "json" | "text"),
            format!("node.log_format: must be \"json\" or \"text\", got {:?}", self.node.log_format),
        );
        check(
            tracing_subscriber::EnvFilter::try_new(&self.node.log_level).is_ok(),
            format!("node.log_level: not a valid filter: {:?}", self.node.log_level),
        );
        check(
            matches!(self.tokens.algorithm.as_str(), "EdDSA" | "HS256"),
            format!("tokens.algorithm: must be \"EdDSA\" or \"HS256\", got {:?}", self.tokens.algorithm),
        );
        check(self.tokens.access_ttl.0 >= Duration::from_secs(30), "tokens.access_ttl: must be at least 30s".into());
        check(
            self.tokens.session_ttl.0 >= self.tokens.access_ttl.0,
            "tokens.session_ttl: must be at least tokens.access_ttl".into(),
        );
        if let Some(secret) = &self.tokens.hs256_secret {
            check(secret.0.len() >= 32, "tokens.hs256_secret: must be at least 32 bytes".into());
        }
        check(
            (1..=100).contains(&self.devices.max_per_user),
            format!("devices.max_per_user: must be 1..=100, got {}", self.devices.max_per_user),
        );
        check(
            self.devices.enrol_max_auth_age.0 >= Duration::from_secs(30)
                && self.devices.enrol_max_auth_age.0 <= Duration::from_secs(3600),
            format!(
                "devices.enrol_max_auth_age: must be between 30s and 1h, got {:?}",
                self.devices.enrol_max_auth_age
            ),
        );
        check(
            self.devices.challenge_lifetime.0 >= Duration::from_secs(10)
                && self.devices.challenge_lifetime.0 <= Duration::from_secs(300),
            format!(
                "devices.challenge_lifetime: must be between 10s and 5m, got {:?}",
                self.devices.challenge_lifetime
            ),
        );
        check(
            matches!(self.store.kind.as_str(), "embedded" | "scylla"),
            format!("store.kind: must be \"embedded\" or \"scylla\", got {:?}", self.store.kind),
        );
        if self.store.kind == "scylla" {
            for problem in self.scylla.problems() {
                check(false, problem);
            }
        }
        check((1..=65_536).contains(&self.store.group_commit_max), "store.group_commit_max: must be 1..=65536".into());
        check(self.store.queue_capacity >= 1, "store.queue_capacity: must be at least 1".into());
        check(self.store.cache_bytes >= 1024 * 1024, "store.cache_bytes: must be at least 1 MiB".into());
        check(self.store.memtable_bytes >= 1024 * 1024, "store.memtable_bytes: must be at least 1 MiB".into());
        check(self.delivery.queue_capacity >= 1, "delivery.queue_capacity: must be at least 1".into());
        if let Some(key) = &self.secrets.hash_key {
            check(
                key.0.len() == 64 && key.0.bytes().all(|b| b.is_ascii_hexdigit()),
                "secrets.hash_key: must be 64 hex characters".into(),
            );
        }
        if let Some(token) = &self.secrets.admin_token {
            check(token.0.len() >= 16, "secrets.admin_token: must be at least 16 characters".into());
        }
        if !self.identifiers.default_region.is_empty() {
            check(
                otpd_actors::rules::identifier::Normalizer::new(Some(&self.identifiers.default_region), 16).is_ok(),
                format!("identifiers.default_region: unknown region {:?}", self.identifiers.default_region),
            );
        }
        self.validate_delivery(errors);
        self.validate_redis(errors);
        self.validate_limits(errors);
        self.validate_cluster(errors);
    }

    fn validate_cluster(&self, errors: &mut Vec<String>) {
        let cluster = &self.cluster;
        if !cluster.enabled {
            return;
        }
        let name_ok = !cluster.node_name.is_empty()
            && cluster.node_name.len() <= 64
            && cluster.node_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            errors.push("cluster.node_name: required, 1-64 characters of A-Z a-z 0-9 - _ .".into());
        }
        match &cluster.cookie {
            Some(c) if c.0.len() >= 16 => {}
            _ => errors.push("cluster.cookie: required, at least 16 characters (set OTPD_CLUSTER__COOKIE)".into()),
        }
        for seed in &cluster.seeds {
            let ok = seed.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                errors.push(format!("cluster.seeds: {seed:?} is not host:port"));
            }
        }
        if cluster.forward_timeout.0 < Duration::from_millis(10) {
            errors.push("cluster.forward_timeout: must be at least 10ms".into());
        }
        if cluster.reconnect_interval.0 < Duration::from_millis(10) {
            errors.push("cluster.reconnect_interval: must be at least 10ms".into());
        }
        let tls = [&cluster.tls_cert_file, &cluster.tls_key_file, &cluster.tls_ca_file];
        if tls.iter().any(|f| f.is_some()) && !tls.iter().all(|f| f.is_some()) {
            errors.push("cluster.tls_cert_file, tls_key_file, tls_ca_file: give all three or none".into());
        }
        // Every node must seal codes, hash identifiers and sign tokens alike, and see the same
        // accounts and the same limits: nothing a node generates or keeps for itself will do.
        if self.secrets.hash_key.is_none() {
            errors.push("secrets.hash_key: required in a cluster (every node needs the same one)".into());
        }
        let signing_shared = match self.tokens.algorithm.as_str() {
            "HS256" => self.tokens.hs256_secret.is_some(),
            _ => self.tokens.signing_key_file.is_some(),
        };
        if !signing_shared {
            errors.push(
                "tokens.signing_key_file (or tokens.hs256_secret with HS256): required in a cluster (every node \
                 needs the same key)"
                    .into(),
            );
        }
        if self.store.kind != "scylla" {
            errors.push("store.kind: a cluster needs the shared store, \"scylla\"".into());
        }
        if self.redis.url.0.is_empty() && self.redis.cluster_nodes.is_empty() {
            errors.push("redis.url: a cluster needs shared limits (redis.url or redis.cluster_nodes)".into());
        }
    }

    fn validate_redis(&self, errors: &mut Vec<String>) {
        let redis = &self.redis;
        if !redis.url.0.is_empty() {
            let schemes = ["redis://", "redis-cluster://", "valkey://", "valkey-cluster://"];
            if !schemes.iter().any(|s| redis.url.0.starts_with(s)) {
                errors.push(format!("redis.url: must start with one of {}", schemes.join(", ")));
            }
            if !redis.cluster_nodes.is_empty() {
                errors.push("redis.cluster_nodes: give either redis.url or redis.cluster_nodes, not both".into());
            }
        }
        for node in &redis.cluster_nodes {
            let ok = node.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                errors.push(format!("redis.cluster_nodes: {node:?} is not host:port"));
            }
        }
        if redis.timeout.0.is_zero() {
            errors.push("redis.timeout: must be more than zero".into());
        }
        if redis.probe_interval.0 < Duration::from_millis(10) {
            errors.push("redis.probe_interval: must be at least 10ms".into());
        }
        let prefix_ok = !redis.key_prefix.is_empty()
            && redis.key_prefix.len() <= 64
            && redis.key_prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if !prefix_ok {
            errors.push("redis.key_prefix: 1-64 printable characters without spaces, '{' or '}'".into());
        }
    }

    fn validate_limits(&self, errors: &mut Vec<String>) {
        let limits = &self.limits;
        if !(2..=15).contains(&limits.prefix_digits) {
            errors.push(format!("limits.prefix_digits: must be 2..=15, got {}", limits.prefix_digits));
        }
        for (key, list) in [("sms_allow", &limits.sms_allow), ("sms_deny", &limits.sms_deny)] {
            for entry in list {
                if let Err(e) = otpd_actors::rules::limits::NumberPrefix::parse(entry) {
                    errors.push(format!("limits.{key}: {e}"));
                }
            }
        }
        let preset = otpd_actors::rules::limits::LimitPolicy::preset(limits.preset);
        let rules = [
            ("identifier_login", preset.identifier_logins, &limits.identifier_login),
            ("identifier_register", preset.identifier_registrations, &limits.identifier_register),
            ("identifier_resend", preset.identifier_resends, &limits.identifier_resend),
            ("identifier_verify", preset.identifier_verifies, &limits.identifier_verify),
            ("ip_send", preset.ip_sends, &limits.ip_send),
            ("ip_verify", preset.ip_verifies, &limits.ip_verify),
            ("prefix_send", preset.prefix_sends, &limits.prefix_send),
            ("country_send", preset.country_sends, &limits.country_send),
        ];
        for (key, preset_rule, over) in rules {
            let rule = crate::limits::merge(preset_rule, over);
            if rule.limit > 0 && rule.window.is_zero() {
                errors.push(format!("limits.{key}.window: must be set (more than zero) while the rule is on"));
            }
        }
    }

    /// The `[delivery]` rules and those of the provider sections in use.
    fn validate_delivery(&self, errors: &mut Vec<String>) {
        let d = &self.delivery;
        let mut check = |ok: bool, msg: String| {
            if !ok {
                errors.push(msg);
            }
        };
        let choice = |key: &str, value: &str, allowed: &[&str]| {
            let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            (allowed.contains(&value), format!("delivery.{key}: must be one of {}, got {value:?}", list.join(", ")))
        };
        let (ok, msg) = choice("provider", &d.provider, SMS_PROVIDERS);
        check(ok, msg);
        let (ok, msg) = choice("secondary", &d.secondary, &["", "outbox", "twilio", "webhook"]);
        check(ok, msg);
        check(d.secondary != d.provider, "delivery.secondary: must differ from delivery.provider".into());
        let (ok, msg) = choice("email_provider", &d.email_provider, EMAIL_PROVIDERS);
        check(ok, msg);
        let (ok, msg) = choice("email_secondary", &d.email_secondary, &["", "outbox", "smtp", "webhook"]);
        check(ok, msg);
        check(
            d.email_secondary != d.email_provider,
            "delivery.email_secondary: must differ from delivery.email_provider".into(),
        );
        check(
            (1..=10_000).contains(&d.batch_max_size),
            format!("delivery.batch_max_size: must be 1..=10000, got {}", d.batch_max_size),
        );
        check(
            (1..=20).contains(&d.max_attempts),
            format!("delivery.max_attempts: must be 1..=20, got {}", d.max_attempts),
        );
        check(!d.backoff_base.0.is_zero(), "delivery.backoff_base: must be more than zero".into());
        check(
            d.backoff_max.0 >= d.backoff_base.0,
            "delivery.backoff_max: must be at least delivery.backoff_base".into(),
        );
        check(!d.send_timeout.0.is_zero(), "delivery.send_timeout: must be more than zero".into());
        check(d.breaker_failures >= 1, "delivery.breaker_failures: must be at least 1".into());
        check(!d.breaker_open_for.0.is_zero(), "delivery.breaker_open_for: must be more than zero".into());
        let templates = [
            ("template_register", &d.template_register, true),
            ("template_login", &d.template_login, true),
            ("template_resend", &d.template_resend, true),
            ("email_subject", &d.email_subject, false),
        ];
        for (name, text, body) in templates {
            if let Err(e) = template::check_template(name, text, body) {
                check(false, format!("delivery.{e}"));
            }
        }
        if !d.origin.trim().is_empty()
            && let Err(e) = template::check_origin(d.origin.trim())
        {
            check(false, format!("delivery.{e}"));
        }
        check(!d.app_name.trim().is_empty(), "delivery.app_name: must not be empty".into());

        let used = self.providers_in_use();
        if used.contains(&"twilio") {
            let t = &self.twilio;
            check(
                t.account_sid.len() == 34 && t.account_sid.starts_with("AC"),
                "twilio.account_sid: must be the account SID (\"AC\" and 32 more characters)".into(),
            );
            check(
                t.auth_token.as_ref().is_some_and(|s| !s.0.is_empty()),
                "twilio.auth_token: required (set OTPD_TWILIO__AUTH_TOKEN)".into(),
            );
            check(
                t.api_key_sid.is_empty() || (t.api_key_sid.len() == 34 && t.api_key_sid.starts_with("SK")),
                "twilio.api_key_sid: must be an API key SID (\"SK\" and 32 more characters)".into(),
            );
            check(
                t.from.is_empty() != t.messaging_service_sid.is_empty(),
                "twilio: set exactly one of twilio.from and twilio.messaging_service_sid".into(),
            );
            check(
                t.messaging_service_sid.is_empty()
                    || (t.messaging_service_sid.len() == 34 && t.messaging_service_sid.starts_with("MG")),
                "twilio.messaging_service_sid: must be a Messaging Service SID (\"MG\" and 32 more characters)".into(),
            );
            check(http_url(&t.base_url), format!("twilio.base_url: not an http(s) URL: {:?}", t.base_url));
            check(t.concurrency >= 1, "twilio.concurrency: must be at least 1".into());
        }
        if used.contains(&"webhook") {
            let w = &self.webhook;
            check(http_url(&w.url), format!("webhook.url: required, an http(s) URL; got {:?}", w.url));
            check((1..=10_000).contains(&w.max_batch), "webhook.max_batch: must be 1..=10000".into());
            check(w.concurrency >= 1, "webhook.concurrency: must be at least 1".into());
        }
        if used.contains(&"smtp") {
            let s = &self.smtp;
            check(!s.host.is_empty(), "smtp.host: required".into());
            check(s.port != 0, "smtp.port: must not be 0".into());
            check(
                matches!(s.tls.as_str(), "starttls" | "tls" | "none"),
                format!("smtp.tls: must be \"starttls\", \"tls\" or \"none\", got {:?}", s.tls),
            );
            check(
                s.from.parse::<lettre::message::Mailbox>().is_ok(),
                format!("smtp.from: not an address like \"App <no-reply@example.com>\": {:?}", s.from),
            );
            check(
                s.username.is_empty() == s.password.is_none(),
                "smtp: set both smtp.username and smtp.password, or neither".into(),
            );
            check((1..=1000).contains(&s.max_batch), "smtp.max_batch: must be 1..=1000".into());
            check(s.concurrency >= 1, "smtp.concurrency: must be at least 1".into());
        }
    }

    /// The message templates, parsed.
    pub fn templates(&self) -> Result<template::Templates, String> {
        let d = &self.delivery;
        let texts = template::TemplateTexts {
            register: d.template_register.clone(),
            login: d.template_login.clone(),
            resend: d.template_resend.clone(),
            email_subject: d.email_subject.clone(),
        };
        template::Templates::new(&d.app_name, &texts, Some(d.origin.as_str())).map_err(|e| e.to_string())
    }

    /// Every provider some route names, once each.
    pub fn providers_in_use(&self) -> Vec<&str> {
        let d = &self.delivery;
        let mut used: Vec<&str> = Vec::new();
        for name in [&d.provider, &d.secondary, &d.email_provider, &d.email_secondary] {
            if !name.is_empty() && !used.contains(&name.as_str()) {
                used.push(name);
            }
        }
        used
    }

    pub fn default_region(&self) -> Option<&str> {
        Some(self.identifiers.default_region.as_str()).filter(|r| !r.is_empty())
    }

    pub fn outbox_path(&self) -> PathBuf {
        self.delivery.outbox_path.clone().unwrap_or_else(|| self.node.data_dir.join("outbox.jsonl"))
    }

    pub fn store_path(&self) -> PathBuf {
        self.node.data_dir.join("store")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.node.data_dir.join("secrets")
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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_config_is_the_documented_default() {
        let c = Config::from_sources("", env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.otp.lifetime.0, Duration::from_secs(300));
        assert_eq!(c.outbox_path(), PathBuf::from("data/outbox.jsonl"));
    }

    #[test]
    fn file_values_and_env_overrides_combine() {
        let text = "[otp]\ncode_length = 8\nlifetime = \"2m\"\n[http]\nlisten = \"127.0.0.1:9000\"\n";
        let c = Config::from_sources(
            text,
            env(&[
                ("OTPD_HTTP__LISTEN", "127.0.0.1:9100"),
                ("OTPD_OTP__ALPHABET", "alphanumeric"),
                ("OTPD_TEST_SCYLLA", "x"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.otp.code_length, 8);
        assert_eq!(c.otp.lifetime.0, Duration::from_secs(120));
        assert_eq!(c.otp.alphabet, Alphabet::Alphanumeric);
        assert_eq!(c.http.listen.port(), 9100);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_name() {
        let text = r#"
            colour = "blue"
            [otp]
            code_length = 3
            lifetime = "forever"
            max_attempts = "five"
            surprise = 1
            [http]
            listen = "nowhere"
            [tokens]
            algorithm = "RS256"
        "#;
        let err =
            Config::from_sources(text, env(&[("OTPD_ENGINE__SHARDS", "0"), ("OTPD_NODE__COLOR", "red")])).unwrap_err();
        let all = err.0.join("\n");
        for needle in [
            "colour: unknown section",
            "otp.code_length: must be 4..=10, got 3",
            "otp.lifetime:",
            "otp.max_attempts:",
            "otp.surprise: unknown key",
            "http.listen:",
            "tokens.algorithm: must be",
            "engine.shards: must be 1..=4096, got 0",
            "node.color (from OTPD_NODE__COLOR): unknown key",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(err.0.len(), 9, "{all}");
    }

    #[test]
    fn device_rules_are_bounded() {
        let c = Config::from_sources("[devices]\nmax_per_user = 3\nchallenge_lifetime = \"30s\"", env(&[])).unwrap();
        assert_eq!((c.devices.max_per_user, c.devices.challenge_lifetime.0), (3, Duration::from_secs(30)));
        let text = "[devices]\nmax_per_user = 0\nenrol_max_auth_age = \"2h\"\nchallenge_lifetime = \"1s\"\nx = 1";
        let err = Config::from_sources(text, env(&[])).unwrap_err();
        let all = err.0.join("\n");
        for needle in ["devices.max_per_user", "devices.enrol_max_auth_age", "devices.challenge_lifetime", "devices.x"]
        {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn the_admin_listener_is_off_by_default_and_checked_when_set() {
        let c = Config::from_sources("", env(&[])).unwrap();
        assert_eq!((c.admin.listen, c.admin.metrics_on_main), (None, true));
        let c = Config::from_sources(
            "[admin]\nmetrics_on_main = false",
            env(&[("OTPD_ADMIN__LISTEN", "127.0.0.1:9464"), ("OTPD_ADMIN__REFRESH_INTERVAL", "250ms")]),
        )
        .unwrap();
        assert_eq!(c.admin.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!((c.admin.metrics_on_main, c.admin.refresh_interval.0), (false, Duration::from_millis(250)));
        let text =
            "[http]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\nrefresh_interval = \"0s\"";
        let all = Config::from_sources(text, env(&[])).unwrap_err().0.join("\n");
        for needle in ["admin.listen: must differ from http.listen", "admin.refresh_interval: must be at least 10ms"] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn lifetime_is_capped_at_ten_minutes() {
        let err = Config::from_sources("[otp]\nlifetime = \"11m\"", env(&[])).unwrap_err();
        assert!(err.0[0].contains("otp.lifetime"));
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::from_sources("[secrets]\nadmin_token = \"super-secret-admin-token\"", env(&[])).unwrap();
        assert!(!format!("{c:?}").contains("super-secret"));
    }

    #[test]
    fn redis_and_limits_sections_load_merge_and_validate() {
        let text = r#"
            [redis]
            url = "redis://:hunter2@127.0.0.1:6379"
            timeout = "100ms"
            [limits]
            preset = "high"
            ip_send = { limit = 50 }
            country_send = { limit = 1000, window = "1h", block = "6h" }
            sms_allow = ["+1", "+44"]
            sms_deny = ["+1 876"]
        "#;
        let c = Config::from_sources(text, env(&[("OTPD_LIMITS__PREFIX_SEND", "{ limit = 0 }")])).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "the Redis password never prints");
        let p = crate::limits::policy(&c);
        let high = otpd_actors::rules::limits::LimitPolicy::preset(Preset::High);
        assert_eq!(p.identifier_logins, high.identifier_logins);
        assert_eq!(
            (p.ip_sends.limit, p.ip_sends.window, p.ip_sends.block),
            (50, high.ip_sends.window, high.ip_sends.block)
        );
        assert_eq!(p.country_sends.limit, 1000);
        assert!(!p.prefix_sends.is_on(), "limit = 0 turns a rule off");
        assert_eq!((p.sms_allow.len(), p.sms_deny.len()), (2, 1));
        assert_eq!(p.resend_cooldown, Duration::from_secs(30), "the cooldown comes from [otp]");

        let bad = r#"
            [redis]
            url = "http://example.com"
            cluster_nodes = ["127.0.0.1"]
            key_prefix = "a{b}"
            [limits]
            preset = "extreme"
            country_send = { limit = 5 }
            ip_send = { limt = 5 }
            sms_deny = ["+0"]
            prefix_digits = 1
        "#;
        let all = Config::from_sources(bad, env(&[])).unwrap_err().0.join("\n");
        for needle in [
            "redis.url: must start with",
            "give either redis.url or redis.cluster_nodes",
            "redis.cluster_nodes: \"127.0.0.1\" is not host:port",
            "redis.key_prefix:",
            "limits.preset: unknown variant `extreme`",
            "limits.country_send.window: must be set",
            "limits.ip_send: unknown field `limt`",
            "limits.sms_deny:",
            "limits.prefix_digits: must be 2..=15",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn delivery_defaults_to_the_outbox_for_both_channels() {
        let c = Config::from_sources("", env(&[])).unwrap();
        assert_eq!(c.providers_in_use(), ["outbox"]);
        assert_eq!(c.delivery.batch_max_age.0, Duration::from_millis(10));
        assert!(c.templates().is_ok());
    }

    #[test]
    fn providers_in_use_are_checked_and_their_secrets_come_from_the_environment() {
        let sid = format!("AC{}", "a".repeat(32));
        let c = Config::from_sources(
            &format!(
                "[delivery]\nprovider = \"twilio\"\nsecondary = \"webhook\"\nemail_provider = \"smtp\"\n\
                 [twilio]\naccount_sid = \"{sid}\"\nfrom = \"+15005550006\"\n\
                 [webhook]\nurl = \"http://127.0.0.1:9/hook\"\n[smtp]\nfrom = \"Acme <codes@acme.test>\"\n"
            ),
            env(&[("OTPD_TWILIO__AUTH_TOKEN", "env-only-auth-token"), ("OTPD_SMTP__TLS", "none")]),
        )
        .unwrap();
        assert_eq!(c.providers_in_use(), ["twilio", "webhook", "smtp"]);
        assert_eq!(c.twilio.auth_token.as_ref().unwrap().0, "env-only-auth-token");
        assert!(!format!("{c:?}").contains("env-only-auth-token"), "check-config never prints a secret");
        let c = Config::from_sources(
            "",
            env(&[
                ("OTPD_TWILIO__FROM", "+15005550006"),
                ("OTPD_DELIVERY__APP_NAME", "1234"),
                ("OTPD_OTP__CODE_LENGTH", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(c.twilio.from, "+15005550006", "a number meant as text keeps its text");
        assert_eq!(c.delivery.app_name, "1234");
        assert_eq!(c.otp.code_length, 8);
    }

    #[test]
    fn every_delivery_problem_is_named() {
        let text = r#"
            [delivery]
            provider = "pigeon"
            email_provider = "smtp"
            email_secondary = "smtp"
            batch_max_size = 0
            template_login = "no code"
            origin = "https://example.com"
            [twilio]
            account_sid = "nope"
            [smtp]
            tls = "maybe"
            from = "not an address"
            username = "u"
        "#;
        let err = Config::from_sources(text, env(&[("OTPD_DELIVERY__SECONDARY", "twilio")])).unwrap_err();
        let all = err.0.join("\n");
        for needle in [
            "delivery.provider: must be one of \"outbox\", \"twilio\", \"webhook\", got \"pigeon\"",
            "delivery.email_secondary: must differ from delivery.email_provider",
            "delivery.batch_max_size: must be 1..=10000, got 0",
            "delivery.template_login: must contain {code}",
            "twilio.account_sid: must be the account SID",
            "twilio.auth_token: required",
            "twilio: set exactly one of twilio.from and twilio.messaging_service_sid",
            "smtp.tls: must be",
            "smtp.from: not an address",
            "smtp: set both smtp.username and smtp.password, or neither",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let err = Config::from_sources("[delivery]\norigin = \"https://example.com\"", env(&[])).unwrap_err();
        assert!(err.0[0].starts_with("delivery.origin:"), "{:?}", err.0);
        let err = Config::from_sources("[delivery]\nprovider = \"webhook\"", env(&[])).unwrap_err();
        assert_eq!(err.0, ["webhook.url: required, an http(s) URL; got \"\""]);
    }

    #[test]
    fn scylla_is_selected_by_store_kind_and_every_problem_is_named() {
        let c = Config::from_sources(
            "[store]\nkind = \"scylla\"\n[scylla]\ncontact_points = [\"10.0.0.7:9042\", \"scylla-2:9042\"]\n\
             local_datacenter = \"eu-west\"\nusername = \"otpd\"\n",
            env(&[("OTPD_SCYLLA__PASSWORD", "env-only-scylla-password")]),
        )
        .unwrap();
        assert_eq!(c.store.kind, "scylla");
        assert_eq!(c.scylla.keyspace, "otpd");
        assert_eq!(c.scylla.consistency, "LOCAL_QUORUM", "writes that must not be lost");
        assert_eq!(c.scylla.audit_retention.0, Duration::from_secs(90 * 86_400));
        assert_eq!(c.scylla.password.as_ref().unwrap().0, "env-only-scylla-password");
        assert!(!format!("{c:?}").contains("env-only-scylla-password"), "check-config never prints it");

        // With the embedded store the section's values are not checked (its keys still are).
        assert!(Config::from_sources("[scylla]\nconsistency = \"MAYBE\"", env(&[])).is_ok());
        let text = r#"
            [store]
            kind = "scylla"
            [scylla]
            contact_points = ["nohost"]
            keyspace = "Bad-Name"
            consistency = "MAYBE"
            serial_consistency = "QUORUM"
            username = "otpd"
            tls_ca_file = "/etc/ca.pem"
            audit_retention = "1h"
            replication_factor = 0
        "#;
        let err = Config::from_sources(text, env(&[])).unwrap_err();
        let all = err.0.join("\n");
        for needle in [
            "scylla.contact_points: \"nohost\" is not host:port",
            "scylla.keyspace: must be lower-case",
            "scylla.consistency: must be one of",
            "scylla.serial_consistency: must be LOCAL_SERIAL or SERIAL",
            "scylla: set both scylla.username and scylla.password",
            "scylla: tls_* keys are set but scylla.tls is false",
            "scylla.audit_retention: must be between 1 day and 20 years",
            "scylla.replication_factor: must be 1..=10, got 0",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(err.0.len(), 8, "{all}");
        let err = Config::from_sources("[store]\nkind = \"cassandra\"", env(&[])).unwrap_err();
        assert_eq!(err.0, ["store.kind: must be \"embedded\" or \"scylla\", got \"cassandra\""]);
    }

    #[test]
    fn a_cluster_node_needs_shared_secrets_store_and_limits() {
        // Everything a node would otherwise keep for itself is refused, all at once.
        let err = Config::from_sources(
            "[cluster]\nenabled = true\nseeds = [\"otpd-2\"]\ntls_cert_file = \"/etc/otpd/node.pem\"\n",
            env(&[]),
        )
        .unwrap_err();
        let all = err.0.join("\n");
        for needle in [
            "cluster.node_name: required",
            "cluster.cookie: required",
            "cluster.seeds: \"otpd-2\" is not host:port",
            "give all three or none",
            "secrets.hash_key: required in a cluster",
            "tokens.signing_key_file (or tokens.hs256_secret with HS256): required in a cluster",
            "store.kind: a cluster needs the shared store",
            "redis.url: a cluster needs shared limits",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(err.0.len(), 8, "{all}");

        // The same node, complete, from the environment as the compose file sets it.
        let c = Config::from_sources(
            "",
            env(&[
                ("OTPD_CLUSTER__ENABLED", "true"),
                ("OTPD_CLUSTER__NODE_NAME", "otpd-1"),
                ("OTPD_CLUSTER__LISTEN", "0.0.0.0:4370"),
                ("OTPD_CLUSTER__SEEDS", "[\"otpd-2:4370\", \"otpd-3:4370\"]"),
                ("OTPD_CLUSTER__COOKIE", "a-cookie-of-some-length"),
                ("OTPD_SECRETS__HASH_KEY", &"ab".repeat(32)),
                ("OTPD_TOKENS__SIGNING_KEY_FILE", "/run/secrets/jwt.pem"),
                ("OTPD_STORE__KIND", "scylla"),
                ("OTPD_SCYLLA__CONTACT_POINTS", "[\"scylla-1:9042\"]"),
                ("OTPD_REDIS__URL", "redis://redis:6379"),
            ]),
        )
        .unwrap();
        assert!(c.cluster.enabled);
        assert_eq!(c.cluster.seeds, ["otpd-2:4370", "otpd-3:4370"]);
        assert_eq!(format!("{:?}", c.cluster.cookie), "Some(Secret(..))");
    }

    #[test]
    fn invalid_toml_is_one_clear_error() {
        let err = Config::from_sources("[otp\n", env(&[])).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].contains("not valid TOML"));
    }
}
