//! The rules: pure values and decisions, no actors and no ports.
//!
//! Everything above builds on these, and nothing here imports anything above (the layers are
//! listed in the crate doc). A rule takes its clock as an argument and answers with a value,
//! so each one is tested on its own.
//!
//! * [`challenge`]: the challenge state machine and the attempt cap; [`code`]: generating,
//!   normalising and sealing codes; [`keys`]: per-purpose keys and identifier hashes;
//! * [`identifier`]: E.164 and e-mail normalisation; [`device_key`]: device public keys,
//!   signatures and the device rules;
//! * [`limits`]: the anti-abuse policy and the plan of checks every limiter applies;
//!   [`sms`]: how many segments (billed messages) an SMS body takes; [`locale`]: which
//!   language a message is written in;
//! * [`refresh`]: the refresh-token format; [`ids`]: account, session and device ids;
//! * [`audit`]: the audit trail's vocabulary (API, outcome), shared by the audit record and
//!   the metric labels;
//! * [`breaker`] and [`backoff`]: delivery's circuit breaker and retry backoff;
//! * [`clock`]: time as an argument.

pub mod audit;
pub mod backoff;
pub mod breaker;
pub mod challenge;
pub mod clock;
pub mod code;
pub mod device_key;
pub mod identifier;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod locale;
pub mod passkey;
pub mod refresh;
pub mod refusals;
pub mod sms;
