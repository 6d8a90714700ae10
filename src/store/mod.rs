//! Storage adapters for the engine's store ports.
//!
//! The embedded store is the default and the only one a node needs; `scylla` keeps the same
//! data in a ScyllaDB cluster (`store.kind = "scylla"`). Every adapter passes the conformance
//! suites in `otpd_actors::testkit`.

pub mod embedded;
pub mod scylla;

use std::sync::Arc;

use otpd_actors::ports::{AuditLog, DeviceStore, SessionStore, UserStore};

use crate::config::Config;
use embedded::{EmbeddedOptions, EmbeddedStore};
use scylla::{ScyllaOptions, ScyllaStore};

/// The store a node runs on, as `store.kind` chose it.
#[derive(Clone)]
pub enum Store {
    Embedded(Arc<EmbeddedStore>),
    Scylla(Arc<ScyllaStore>),
}

impl Store {
    /// Opens the configured store: the embedded one in `<data_dir>/store/`, or a connection
    /// to the ScyllaDB cluster of `[scylla]` (schema checked and migrated, statements prepared).
    pub async fn open(config: &Config) -> Result<Store, String> {
        match config.store.kind.as_str() {
            "scylla" => {
                let options = ScyllaOptions { config: config.scylla.clone(), session_ttl: config.tokens.session_ttl.0 };
                ScyllaStore::connect(&options).await.map(Store::Scylla).map_err(|e| e.to_string())
            }
            _ => EmbeddedStore::open(
                &config.store_path(),
                EmbeddedOptions {
                    group_commit_max: config.store.group_commit_max,
                    queue_capacity: config.store.queue_capacity,
                    cache_bytes: config.store.cache_bytes,
                    memtable_bytes: config.store.memtable_bytes,
                    user_cache_entries: config.store.user_cache,
                },
            )
            .map(Store::Embedded)
            .map_err(|e| e.to_string()),
        }
    }

    /// Where the data is, for the start-up log line.
    pub fn describe(&self, config: &Config) -> String {
        match self {
            Store::Embedded(_) => config.store_path().display().to_string(),
            Store::Scylla(_) => {
                format!("scylla://{}/{}", config.scylla.contact_points.join(","), config.scylla.keyspace)
            }
        }
    }

    pub fn users(&self) -> Arc<dyn UserStore> {
        match self {
            Store::Embedded(s) => s.clone(),
            Store::Scylla(s) => s.clone(),
        }
    }

    pub fn sessions(&self) -> Arc<dyn SessionStore> {
        match self {
            Store::Embedded(s) => s.clone(),
            Store::Scylla(s) => s.clone(),
        }
    }

    pub fn devices(&self) -> Arc<dyn DeviceStore> {
        match self {
            Store::Embedded(s) => s.clone(),
            Store::Scylla(s) => s.clone(),
        }
    }

    pub fn audit(&self) -> Arc<dyn AuditLog> {
        match self {
            Store::Embedded(s) => s.clone(),
            Store::Scylla(s) => s.clone(),
        }
    }

    /// Readiness: `Ok` while the store can take requests.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Store::Embedded(s) => s.check().map_err(|e| e.to_string()),
            Store::Scylla(s) => s.check(),
        }
    }

    pub fn close(&self) {
        match self {
            Store::Embedded(s) => s.close(),
            Store::Scylla(s) => s.close(),
        }
    }
}
