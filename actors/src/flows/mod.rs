//! The API flows: each public call of [`Engine`](engine::Engine) as a straight line through the
//! ports and the challenge shards, ending in exactly one audit event.
//!
//! * [`engine`]: the engine itself, and the code flows (register, login, resend, verify,
//!   current user);
//! * [`sessions`]: refresh rotation, logout, session listing, authentication;
//! * [`devices`]: device enrolment and fingerprint (device-key) login;
//! * [`data`]: an account's data: export and erasure;
//! * [`error`]: every way a call can end other than success;
//! * [`notices`]: the queue that starts deliveries a moment after their calls answered.
//!
//! `sessions`, `devices` and `data` extend `Engine` and use the engine's helpers; the engine never
//! imports them.

pub mod data;
pub mod devices;
pub mod engine;
pub mod error;
pub(crate) mod notices;
pub mod passkeys;
pub mod sessions;
