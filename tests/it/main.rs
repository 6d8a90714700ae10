//! Integration tests, compiled as one binary (one link, shared helpers).
//!
//! Every test starts its own node on 127.0.0.1:0 with a temporary data directory (or the real
//! binary on a free loopback port), so tests run in parallel without sharing state; tests on
//! Redis start their own `redis-server` processes (`redis_server.rs`).

mod backup;
mod bad_input;
mod cluster;
mod compose;
mod conformance;
mod contract;
mod delivery;
mod devices;
mod erasure;
mod fake_provider;
mod flows;
mod keepalive;
mod keys;
mod limits;
mod locales;
mod observability;
mod passkeys;
mod process;
mod pumping;
mod receipts;
mod redis_limits;
mod redis_server;
mod redis_tls;
mod reference;
mod retention;
mod scylla;
mod sessions;
mod signin;
mod smtp;
mod supervision;
mod support;
mod timing;
mod tls;
