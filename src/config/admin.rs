//! `[admin]`: what SREs use: Prometheus metrics, health and admin endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use super::value::{Dur, check, secs, section};

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

impl AdminConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, self.refresh_interval.0 >= Duration::from_millis(10), || {
            format!("admin.refresh_interval: must be at least 10ms, got {:?}", self.refresh_interval)
        });
    }
}
