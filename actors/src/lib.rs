//! The otpd engine: one-time-code challenges hosted in a supervised tree of shard actors,
//! the OTP rules, and the ports (storage, limits, delivery) that adapters implement.
//!
//! This crate knows nothing of HTTP or JSON; the `otpd` binary converts wire types into the
//! calls of [`Engine`] and maps [`EngineError`] to responses.
//!
//! The crate is built in layers. Each imports only the layers below it, never one above, so
//! there is no import cycle between them:
//!
//! ```text
//! testkit     conformance suites every adapter runs; fault injection (feature `testkit`)
//! flows       engine, sessions, devices: every API call as a straight line through the ports
//! actors      supervisor, shards, delivery dispatcher, cluster
//! adapters    the in-process limiter; the timing wrapper around any store
//! metrics     every metric name, its catalogue entry, and the handles the layers above record through
//! ports       the traits adapters implement and the records they exchange (no actor named)
//! rules       pure values and decisions: challenge, code, keys, identifier, device keys,
//!             limits, refresh tokens, ids, the audit vocabulary, breaker, backoff, clock
//! ```
//!
//! * [`rules`]: the rules; nothing here holds an actor, a port or a metric handle;
//! * [`ports`]: `UserStore`, `SessionStore`, `DeviceStore`, `AuditLog`, `CensusSource`,
//!   `Limiter`, `Notifier`;
//! * [`metrics`]: the engine's metric names and handles;
//! * [`adapters`]: `LocalLimiter` and `MeteredStore`;
//! * [`actors`]: the actor tree holding live challenges, the delivery dispatcher and the
//!   cluster;
//! * [`flows`]: the API flows ([`Engine`]) and their error ([`EngineError`]).

pub mod actors;
pub mod adapters;
pub mod flows;
pub mod metrics;
pub mod ports;
pub mod rules;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use flows::engine::{Asked, Engine, EngineConfig, EnginePorts, Grant, Registration, RequestContext, SendReceipt};
pub use flows::error::EngineError;
pub use rules::audit::Api;
