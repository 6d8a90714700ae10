//! Storage adapters for the engine's store ports.
//!
//! The embedded store is the default and the only one a node needs; `scylla` keeps the same
//! data in a ScyllaDB cluster (`store.kind = "scylla"`). Every adapter passes the conformance
//! suites in `otpd_actors::testkit`.

pub mod embedded;
pub mod scylla;

use std::sync::Arc;

use otpd_actors::adapters::metered::MeteredStore;
use otpd_actors::ports::{AuditLog, CensusSource, DeviceStore, SessionStore, UserStore};

use crate::config::Config;
use embedded::{EmbeddedOptions, EmbeddedStore};
use scylla::{ScyllaOptions, ScyllaStore};

/// A store's ports as the engine takes them.
pub struct StorePorts {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub audit: Arc<dyn AuditLog>,
    /// Users, verified users and active sessions, counted by the store (the ScyllaDB store keeps
    /// no such counts yet: the gauges stay absent there).
    pub census: Option<Arc<dyn CensusSource>>,
}

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

    /// The ports the engine runs on, every call timed and its failures counted
    /// ([`MeteredStore`]), and the census source of the account gauges when the store keeps one.
    pub fn ports(&self) -> StorePorts {
        fn metered<S>(name: &'static str, store: &Arc<S>) -> Arc<MeteredStore<S>> {
            Arc::new(MeteredStore::new(name, store.clone()))
        }
        match self {
            Store::Embedded(s) => {
                let m = metered("embedded", s);
                StorePorts {
                    users: m.clone(),
                    sessions: m.clone(),
                    devices: m.clone(),
                    audit: m.clone(),
                    census: Some(m),
                }
            }
            Store::Scylla(s) => {
                let m = metered("scylla", s);
                StorePorts { users: m.clone(), sessions: m.clone(), devices: m.clone(), audit: m, census: None }
            }
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
