//! `[http]`: the HTTP listener.

use std::net::SocketAddr;

use super::value::{Dur, IpRange, check, secs, section};

section! {
    /// The HTTP listener.
    pub struct HttpConfig {
        /// Address of the API listener (`0.0.0.0:8080` to serve beyond this host).
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// Largest request body accepted (bytes).
        max_body_bytes: usize = 16 * 1024,
        /// Open connections beyond this wait in the kernel's accept queue.
        max_connections: usize = 10_000,
        /// Time allowed to receive a request's headers.
        header_read_timeout: Dur = secs(5),
        /// Time allowed for a whole request, body and handling included.
        request_timeout: Dur = secs(10),
        /// Peers whose `X-Forwarded-For` is believed (load balancers), as addresses or CIDR
        /// ranges (`"10.0.0.0/8"`). The client is the right-most hop not in these ranges.
        /// Empty: the socket address is the client address.
        trusted_proxies: Vec<IpRange> = Vec::new(),
    }
}

impl HttpConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, (256..=16 * 1024 * 1024).contains(&self.max_body_bytes), || {
            format!("http.max_body_bytes: must be 256..=16777216, got {}", self.max_body_bytes)
        });
        check(errors, self.max_connections >= 1, || "http.max_connections: must be at least 1".into());
    }
}
