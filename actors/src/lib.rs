//! The otpd engine: one-time-code challenges hosted in a supervised tree of shard actors,
//! the OTP rules, and the ports (storage, limits, delivery) that adapters implement.
//!
//! This crate knows nothing of HTTP or JSON; the `otpd` binary converts wire types into the
//! calls of [`Engine`] and maps [`EngineError`] to responses.
//!
//! Map of the crate:
//! * [`engine`]: the API flows (register, verify, login, resend, current user);
//! * [`supervisor`] and [`shard`]: the actor tree holding live challenges;
//! * [`cluster`]: membership, ownership (rendezvous hashing) and forwarding across nodes;
//! * [`challenge`] and [`code`]: the state machine and the code rules it enforces;
//! * [`identifier`] and [`keys`]: normalisation and keyed hashing of identifiers;
//! * [`ports`]: the traits adapters implement; [`limits`]: the anti-abuse rules every limiter
//!   applies; [`limiter`]: the in-process limiter;
//! * [`dispatch`]: the delivery dispatcher (queue, batches, retries, breakers, failover) and
//!   the provider port its adapters implement;
//! * [`refresh`]: the refresh-token format; [`clock`]: time as an argument;
//! * [`sessions`]: refresh rotation, logout, session listing;
//! * [`devices`] and [`device_key`]: device enrolment and fingerprint (device-key) login;
//! * [`metrics`]: the metric names and handles the engine records; [`metered`]: a timing
//!   wrapper around any store adapter.

pub mod challenge;
pub mod clock;
pub mod cluster;
pub mod code;
pub mod device_key;
pub mod devices;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod identifier;
pub mod keys;
pub mod limiter;
pub mod limits;
pub mod metered;
pub mod metrics;
pub mod ports;
pub mod refresh;
pub mod sessions;
pub mod shard;
pub mod supervisor;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use engine::{Api, Engine, EngineConfig, EnginePorts, Grant, Registration, RequestContext, SendReceipt};
pub use error::EngineError;
