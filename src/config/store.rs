//! `[store]`: the durable store.

use super::value::{check, section};

section! {
    /// The durable store.
    pub struct StoreConfig {
        /// `embedded` (an LSM tree in `<data_dir>/store/`) or `scylla` (a ScyllaDB cluster,
        /// configured in `[scylla]`).
        kind: String = "embedded".into(),
        /// Most writes committed together in one fsync.
        group_commit_max: usize = 512,
        /// Writes waiting for the writer before new ones are refused (503).
        queue_capacity: usize = 65_536,
        /// Block cache of the embedded store (bytes); reads of accounts and sessions need
        /// little, and a bounded cache keeps a node's memory predictable.
        cache_bytes: usize = 128 * 1024 * 1024,
        /// Largest in-memory table per keyspace before it is flushed (bytes); the store has
        /// nine keyspaces, so this bounds its write buffers at about nine times this. Small
        /// tables flush in short bursts: a flush's disk writes delay the commits queued behind
        /// it (docs/PERFORMANCE.md, "Write stalls").
        memtable_bytes: usize = 4 * 1024 * 1024,
        /// Accounts kept in memory by identifier hash (each ≈ 300 B), so sends read none.
        user_cache: usize = 100_000,
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, matches!(self.kind.as_str(), "embedded" | "scylla"), || {
            format!("store.kind: must be \"embedded\" or \"scylla\", got {:?}", self.kind)
        });
        check(errors, (1..=65_536).contains(&self.group_commit_max), || {
            "store.group_commit_max: must be 1..=65536".into()
        });
        check(errors, self.queue_capacity >= 1, || "store.queue_capacity: must be at least 1".into());
        check(errors, self.cache_bytes >= 1024 * 1024, || "store.cache_bytes: must be at least 1 MiB".into());
        check(errors, self.memtable_bytes >= 1024 * 1024, || "store.memtable_bytes: must be at least 1 MiB".into());
    }
}
