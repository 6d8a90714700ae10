//! Adapters that ship with the engine: the in-process limiter and the timing wrapper around
//! any store. The other adapters (stores, Redis, providers) live in the `otpd` binary.
//!
//! * [`limiter`]: `LocalLimiter`, every rule of `crate::rules::limits` for a single node;
//! * [`metered`]: `MeteredStore`, each store port call timed and each failure counted.

pub mod limiter;
pub mod metered;
