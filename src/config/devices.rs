//! `[devices]`: device keys (fingerprint login).

use std::time::Duration;

use otpd_actors::rules::challenge::NONCE_LIFETIME;
use otpd_actors::rules::device_key::DevicePolicy;

use super::value::{Dur, check, section};

section! {
    /// Device keys (fingerprint login).
    pub struct DevicesConfig {
        /// Active devices per account.
        max_per_user: usize = DevicePolicy::MAX_PER_USER,
        /// Enrolment needs a login by one-time code (and an access token) at most this old.
        enrol_max_auth_age: Dur = Dur(DevicePolicy::ENROL_MAX_AUTH_AGE),
        /// How long a device-login nonce works.
        challenge_lifetime: Dur = Dur(NONCE_LIFETIME),
    }
}

impl DevicesConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, (1..=100).contains(&self.max_per_user), || {
            format!("devices.max_per_user: must be 1..=100, got {}", self.max_per_user)
        });
        let age = self.enrol_max_auth_age.0;
        check(errors, age >= Duration::from_secs(30) && age <= Duration::from_secs(3600), || {
            format!("devices.enrol_max_auth_age: must be between 30s and 1h, got {:?}", self.enrol_max_auth_age)
        });
        let life = self.challenge_lifetime.0;
        check(errors, life >= Duration::from_secs(10) && life <= Duration::from_secs(300), || {
            format!("devices.challenge_lifetime: must be between 10s and 5m, got {:?}", self.challenge_lifetime)
        });
    }
}
