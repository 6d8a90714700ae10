//! Storage adapters for the engine's store ports.
//!
//! The embedded store is the default and the only one a node needs; every adapter passes the
//! conformance suites in `otpd_actors::testkit`.

pub mod embedded;
