//! `[passkeys]`: passkeys (WebAuthn) and the reference sign-in page.

use std::time::Duration;

use otpd_actors::rules::device_key::DevicePolicy;
use otpd_actors::rules::passkey::PasskeyPolicy;

use super::value::{Dur, check, section};

section! {
    /// Passkeys (WebAuthn) and the reference sign-in page.
    pub struct PasskeysConfig {
        /// The relying party id: the domain passkeys are bound to (`example.com`), the pages'
        /// host or a parent of it. `localhost` for development.
        rp_id: String = "localhost".into(),
        /// The name the browser shows when it asks to create a passkey.
        rp_name: String = "otpd".into(),
        /// The origins (scheme, host, port) whose pages may register and use passkeys, each
        /// within `rp_id`: `https://example.com`.
        origins: Vec<String> = vec!["http://localhost:8080".into()],
        /// Accept any port of the `origins` (development and tests only).
        any_port: bool = false,
        /// Passkeys per account.
        max_per_user: usize = PasskeyPolicy::MAX_PER_USER,
        /// Registering a passkey needs a login by one-time code (and an access token) at most
        /// this old.
        enrol_max_auth_age: Dur = Dur(DevicePolicy::ENROL_MAX_AUTH_AGE),
        /// Serve the reference sign-in page at `/signin`: `on`, `off`, or `auto` (on only
        /// while codes go to the development outbox, `delivery.provider = "outbox"`).
        signin_page: String = "auto".into(),
    }
}

impl PasskeysConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        let rp_id_ok = !self.rp_id.is_empty()
            && self.rp_id.len() <= 253
            && self.rp_id.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-')
            })
            && self.rp_id.parse::<std::net::IpAddr>().is_err();
        check(errors, rp_id_ok, || {
            format!("passkeys.rp_id: must be a domain name such as example.com (not an address), got {:?}", self.rp_id)
        });
        check(errors, !self.rp_name.trim().is_empty(), || "passkeys.rp_name: must not be empty".into());
        check(errors, !self.origins.is_empty(), || "passkeys.origins: name at least one origin".into());
        for origin in &self.origins {
            if let Err(why) = origin_within(origin, &self.rp_id) {
                errors.push(format!("passkeys.origins: {origin:?} {why}"));
            }
        }
        check(errors, (1..=100).contains(&self.max_per_user), || {
            format!("passkeys.max_per_user: must be 1..=100, got {}", self.max_per_user)
        });
        let age = self.enrol_max_auth_age.0;
        check(errors, age >= Duration::from_secs(30) && age <= Duration::from_secs(3600), || {
            format!("passkeys.enrol_max_auth_age: must be between 30s and 1h, got {:?}", self.enrol_max_auth_age)
        });
        check(errors, matches!(self.signin_page.as_str(), "auto" | "on" | "off"), || {
            format!("passkeys.signin_page: must be auto, on or off, got {:?}", self.signin_page)
        });
    }

    /// Whether `/signin` is served, given the delivery provider.
    pub fn serves_signin_page(&self, delivery_provider: &str) -> bool {
        match self.signin_page.as_str() {
            "on" => true,
            "off" => false,
            _ => delivery_provider == "outbox",
        }
    }

    /// The relying party's settings.
    pub fn policy(&self) -> PasskeyPolicy {
        PasskeyPolicy { max_per_user: self.max_per_user, enrol_max_auth_age: self.enrol_max_auth_age.0 }
    }
}

/// Whether `origin` is a bare origin whose host is `rp_id` or below it (https, or http for
/// `localhost`).
fn origin_within(origin: &str, rp_id: &str) -> Result<(), &'static str> {
    let url = webauthn_rs::prelude::Url::parse(origin).map_err(|_| "is not a URL")?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must be an origin only (scheme, host, port), no path");
    }
    let host = url.host_str().ok_or("has no host")?;
    let within = host == rp_id || host.ends_with(&format!(".{rp_id}"));
    if !within {
        return Err("is not within passkeys.rp_id");
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if host == "localhost" || host.ends_with(".localhost") => Ok(()),
        _ => Err("must be https (http only for localhost)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_sit_within_the_rp_id() {
        assert!(origin_within("https://example.com", "example.com").is_ok());
        assert!(origin_within("https://login.example.com:8443", "example.com").is_ok());
        assert!(origin_within("http://localhost:8080", "localhost").is_ok());
        assert!(origin_within("http://example.com", "example.com").is_err(), "plain http beyond localhost");
        assert!(origin_within("https://evil-example.com", "example.com").is_err());
        assert!(origin_within("https://example.com/signin", "example.com").is_err());
        assert!(origin_within("nonsense", "example.com").is_err());
    }
}
