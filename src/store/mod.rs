//! Storage adapters for the engine's store ports.
//!
//! The embedded store is the default and the only one a node needs; `scylla` keeps the same
//! data in a ScyllaDB cluster (`store.kind = "scylla"`). Every adapter passes the conformance
//! suites in `otpd_actors::testkit`.

pub mod embedded;
pub mod retention;
pub mod scylla;
pub mod shred;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use otpd_actors::adapters::metered::MeteredStore;
use otpd_actors::ports::{AuditLog, CensusSource, DeviceStore, PasskeyStore, SessionStore, StoreError, UserStore};
use otpd_actors::rules::clock::Timestamp;
use tokio::task::JoinHandle;

use crate::config::{ScyllaConfig, StoreConfig};
use embedded::{EmbeddedOptions, EmbeddedStore};
use scylla::{ConnectError, ScyllaOptions, ScyllaStore};

/// How often the purge of unverified accounts runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Accounts one purge call deletes at most (then the next call, at once).
const PURGE_BATCH: usize = 1_000;

/// Deletes the accounts never verified and older than `ttl`, every [`PURGE_EVERY`] (and once
/// at start), until the app is dropped. Each call is bounded (`PURGE_BATCH`), so the store's
/// commit path is held briefly; a failed run is logged and tried again the next time.
pub fn spawn_purger(app: &Arc<crate::http::App>, users: Arc<dyn UserStore>, ttl: Duration) -> JoinHandle<()> {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(PURGE_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(app) = weak.upgrade() else { break };
            let before = Timestamp::from_millis(app.engine.now().as_millis().saturating_sub(ttl.as_millis() as u64));
            drop(app);
            purge_unverified(&*users, before).await;
        }
    })
}

/// Purges in batches until a batch comes back short; returns how many accounts went.
pub async fn purge_unverified(users: &dyn UserStore, created_before: Timestamp) -> usize {
    let mut total = 0;
    loop {
        match users.purge_unverified(created_before, PURGE_BATCH).await {
            Ok(n) => {
                metrics::counter!(crate::metrics::UNVERIFIED_PURGED).increment(n as u64);
                total += n;
                if n < PURGE_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not purge unverified accounts; trying again in an hour");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    if total > 0 {
        tracing::info!(accounts = total, "purged accounts never verified");
    }
    total
}

/// Why the configured store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Embedded(#[from] StoreError),
    #[error("{0}")]
    Scylla(#[from] ConnectError),
}

/// A store's ports as the engine takes them.
pub struct StorePorts {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub passkeys: Arc<dyn PasskeyStore>,
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
    /// Opens the store `store.kind` names: the embedded one in `path` (`<data_dir>/store/`),
    /// or a connection to the ScyllaDB cluster of `[scylla]` (schema checked and migrated,
    /// statements prepared), whose session rows live `session_ttl`.
    pub async fn open(
        store: &StoreConfig,
        scylla: &ScyllaConfig,
        path: &Path,
        session_ttl: Duration,
        audit_retention: Duration,
    ) -> Result<Store, OpenError> {
        Ok(match store.kind.as_str() {
            "scylla" => {
                let options = ScyllaOptions { config: scylla.clone(), session_ttl, audit_retention };
                Store::Scylla(ScyllaStore::connect(&options).await?)
            }
            _ => Store::Embedded(EmbeddedStore::open(
                path,
                EmbeddedOptions {
                    group_commit_max: store.group_commit_max,
                    queue_capacity: store.queue_capacity,
                    cache_bytes: store.cache_bytes,
                    memtable_bytes: store.memtable_bytes,
                    user_cache_entries: store.user_cache,
                },
            )?),
        })
    }

    /// Where the data is, for the start-up log line.
    pub fn describe(&self, path: &Path, scylla: &ScyllaConfig) -> String {
        match self {
            Store::Embedded(_) => path.display().to_string(),
            Store::Scylla(_) => format!("scylla://{}/{}", scylla.contact_points.join(","), scylla.keyspace),
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
                    passkeys: m.clone(),
                    audit: m.clone(),
                    census: Some(m),
                }
            }
            Store::Scylla(s) => {
                let m = metered("scylla", s);
                StorePorts {
                    users: m.clone(),
                    sessions: m.clone(),
                    devices: m.clone(),
                    passkeys: m.clone(),
                    audit: m,
                    census: None,
                }
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
