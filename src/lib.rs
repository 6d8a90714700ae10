//! otpd: the binary's library half. `main.rs` only parses the command line and calls in here.
//!
//! * [`config`]: the configuration tree (TOML + `OTPD_*` overrides);
//! * [`server`]: wiring a [`config::Config`] into a running node;
//! * [`http`]: the hyper front end: routes, wire types, problem+json;
//! * [`tokens`]: JWT access tokens and the JWKS; [`keyring`]: rotated signing keys and admin
//!   tokens, shared by every node; [`keys_cmd`]: `otpd keys`;
//! * [`store`]: storage adapters (embedded LSM tree, fjall; ScyllaDB); [`limits`]: limiter
//!   adapters (in-process, Redis);
//! * [`delivery`]: notifier adapters (development outbox);
//! * [`secrets`]: generated or configured node secrets; [`cluster`]: `[cluster]` into the
//!   settings (and TLS) a node joins its cluster with;
//! * [`metrics`]: the metric catalogue, the Prometheus recorder, sampled gauges;
//! * [`audit_cmd`]: `otpd audit`; [`backup_cmd`]: `otpd backup` and `otpd restore`; [`logging`]: log set-up.

pub mod audit_cmd;
pub mod backup_cmd;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod http;
pub mod keyring;
pub mod keys_cmd;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod passkeys;
pub mod private_fs;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls_files;
pub mod tokens;
pub mod writeback;
