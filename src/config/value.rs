//! What every section is made of: the value types keys are read as ([`Dur`], [`Secret`],
//! [`RedisUrl`]), the [`section!`] macro that declares a section, and [`Shown`], which renders a
//! key's type and default for `docs/configuration.md`.
//!
//! A section is declared once, as data: its doc comment, each key's doc comment, type and
//! default. From that one declaration the macro derives the struct, its `Default`, a loader
//! that reads each key on its own (so one bad value does not hide the next) and the key's row
//! in the reference page, so the page cannot drift from the code.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use otpd_actors::rules::code::Alphabet;
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

pub(super) const fn secs(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}

pub(super) const fn millis(ms: u64) -> Dur {
    Dur(Duration::from_millis(ms))
}

/// An IP address range in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), or one address.
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are taken as the IPv4 address they carry,
/// on both sides of [`IpRange::contains`]: a dual-stack listener reports IPv4 peers that way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// The range, its host bits cleared; `None` for a prefix longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpRange> {
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then(|| IpRange { addr: mask(addr, prefix), prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;
    fn from_str(text: &str) -> Result<IpRange, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let full = if addr.to_canonical().is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| format!("{text:?}: the prefix length is not a number"))?,
            None => full,
        };
        // A mapped address with a mapped prefix (`::ffff:10.0.0.0/104`) is its IPv4 range.
        let prefix = if !addr.is_ipv4() && addr.to_canonical().is_ipv4() { prefix.saturating_sub(96) } else { prefix };
        IpRange::new(addr, prefix).ok_or_else(|| format!("{text:?}: the prefix is longer than the address"))
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Shown for IpRange {
    fn kind() -> String {
        "IP range (CIDR)".into()
    }
    fn shown(&self) -> String {
        format!("\"{self:?}\"")
    }
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

/// Which environment variable set which key, for error messages; and the variable's raw text.
#[derive(Default)]
pub(super) struct Origins(
    pub(super) std::collections::BTreeMap<String, String>,
    pub(super) std::collections::BTreeMap<String, String>,
);

impl Origins {
    pub(super) fn describe(&self, path: &str) -> String {
        match self.0.get(path) {
            Some(var) => format!("{path} (from {var})"),
            None => path.to_owned(),
        }
    }

    /// An override read as a number or boolean that the key wants as text (a sender number
    /// `OTPD_TWILIO__FROM=+15005550006` reads as the integer 15005550006): its raw text.
    pub(super) fn as_text<'de, T: Deserialize<'de>>(&self, path: &str, value: &toml::Value) -> Option<T> {
        let raw = self.1.get(path).filter(|_| !value.is_str())?;
        T::deserialize(toml::Value::String(raw.clone())).ok()
    }
}

/// One key as `docs/configuration.md` shows it.
pub struct KeyDoc {
    pub key: &'static str,
    /// What the key takes, in words (`duration`, `list of strings`, …).
    pub kind: String,
    /// The default as it would be written in the file; empty when the key is unset by default.
    pub default: String,
    pub doc: String,
}

/// How a key's type and default read in the reference page.
pub trait Shown {
    /// The type in words.
    fn kind() -> String;
    /// The value as written in TOML.
    fn shown(&self) -> String;
}

macro_rules! shown_as_number {
    ($($t:ty),*) => {$(
        impl Shown for $t {
            fn kind() -> String { "integer".into() }
            fn shown(&self) -> String { self.to_string() }
        }
    )*};
}
shown_as_number!(u8, u16, u32, usize);

impl Shown for bool {
    fn kind() -> String {
        "boolean".into()
    }
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for String {
    fn kind() -> String {
        "string".into()
    }
    fn shown(&self) -> String {
        format!("{self:?}")
    }
}

impl Shown for PathBuf {
    fn kind() -> String {
        "path".into()
    }
    fn shown(&self) -> String {
        format!("{:?}", self.display().to_string())
    }
}

impl Shown for Dur {
    fn kind() -> String {
        "duration".into()
    }
    fn shown(&self) -> String {
        format!("\"{self:?}\"")
    }
}

impl Shown for SocketAddr {
    fn kind() -> String {
        "address (host:port)".into()
    }
    fn shown(&self) -> String {
        format!("\"{self}\"")
    }
}

impl Shown for IpAddr {
    fn kind() -> String {
        "IP address".into()
    }
    fn shown(&self) -> String {
        format!("\"{self}\"")
    }
}

impl Shown for Secret {
    fn kind() -> String {
        "secret string".into()
    }
    fn shown(&self) -> String {
        "(secret)".into()
    }
}

impl Shown for RedisUrl {
    fn kind() -> String {
        "URL".into()
    }
    fn shown(&self) -> String {
        format!("{:?}", self.0)
    }
}

impl Shown for Alphabet {
    fn kind() -> String {
        "`numeric` or `alphanumeric`".into()
    }
    fn shown(&self) -> String {
        match self {
            Alphabet::Numeric => "\"numeric\"".into(),
            Alphabet::Alphanumeric => "\"alphanumeric\"".into(),
        }
    }
}

impl Shown for Preset {
    fn kind() -> String {
        "`low`, `medium` or `high`".into()
    }
    fn shown(&self) -> String {
        format!("\"{}\"", format!("{self:?}").to_ascii_lowercase())
    }
}

impl<T: Shown> Shown for Option<T> {
    fn kind() -> String {
        T::kind()
    }
    fn shown(&self) -> String {
        self.as_ref().map(Shown::shown).unwrap_or_default()
    }
}

impl<T: Shown> Shown for Vec<T> {
    fn kind() -> String {
        format!("list of {}", T::kind())
    }
    fn shown(&self) -> String {
        format!("[{}]", self.iter().map(Shown::shown).collect::<Vec<_>>().join(", "))
    }
}

/// Declares a config section: struct, defaults, a per-key loader and the reference rows.
macro_rules! section {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[doc = $sdoc])*
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

            /// What the section is for (its doc comment).
            pub const DOC: &'static [&'static str] = &[$($sdoc),*];

            pub(super) fn load(
                table: &toml::Table,
                section: &str,
                origin: &super::value::Origins,
                errors: &mut Vec<String>,
            ) -> Self {
                let mut out = Self::default();
                for (key, value) in table {
                    let path = format!("{section}.{key}");
                    match key.as_str() {
                        $( stringify!($field) => match <$ty as serde::Deserialize>::deserialize(value.clone())
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

            /// Every key with its type, default and doc comment, for the reference page.
            pub fn reference() -> Vec<super::value::KeyDoc> {
                let defaults = Self::default();
                vec![$(super::value::KeyDoc {
                    key: stringify!($field),
                    kind: <$ty as super::value::Shown>::kind(),
                    default: super::value::Shown::shown(&defaults.$field),
                    doc: [$($doc),*].iter().map(|l: &&str| l.trim()).collect::<Vec<_>>().join(" "),
                }),*]
            }
        }
    };
}
pub(super) use section;

/// Pushes `msg` when `ok` is false: the shape of every validation rule.
pub(super) fn check(errors: &mut Vec<String>, ok: bool, msg: impl FnOnce() -> String) {
    if !ok {
        errors.push(msg());
    }
}

/// `host:port` with a non-empty host and a numeric port.
pub(super) fn host_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// An `http://` or `https://` URL with a host.
pub(super) fn http_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}
