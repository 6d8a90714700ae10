//! The embedded store: an LSM tree (fjall) in `<data_dir>/store/`, written through one
//! group-committing writer thread.
//!
//! | file | what |
//! | --- | --- |
//! | [`handle`] | the store's handle: opening, closing, readiness; the writer's queue |
//! | [`writer`] | the writer thread: one `apply_<op>` per write, group commit with fsync (why: its module doc) |
//! | [`codec`] | keyspaces, keys and record formats (the table of what is stored where) |
//! | [`trail`] | the audit trail: append-only segment files, their index, recovery and retention (why: its module doc) |
//! | [`ports`] | the port implementations and the offline [`AuditReader`] |
//! | [`census`] | users, verified users and active sessions kept as counters |
//! | [`cache`] | accounts by identifier hash, in memory |
//! | [`backup`] | online backups from one snapshot, and restores; both verified against a manifest |
//!
//! Reads do not go through the writer: they read a snapshot of the last committed state, which
//! includes every write already acknowledged.
//!
//! # Why an LSM tree
//!
//! Every API call appends an audit event and two index entries keyed by hashes (identifier,
//! trace id), i.e. random keys. A copy-on-write B-tree (redb, the first implementation)
//! rewrites a page per random insert per commit: measured on the reference machine with this
//! exact pattern, 17–42 µs of CPU per event, and the writer thread took 58 % of a node's CPU
//! at 16 k sends/s. fjall appends the batch to its journal and inserts into memtables: 6–16 µs
//! per event (see docs/PERFORMANCE.md). Reads are a little slower (≈ 3 µs vs ≈ 1 µs point
//! reads) and the journal is replayed on open; both are cheap next to the write savings.

pub mod backup;
mod cache;
mod census;
mod codec;
mod handle;
mod ports;
mod trail;
mod writer;

pub use self::handle::{EmbeddedOptions, EmbeddedStore};
pub use self::ports::{AuditReader, OpenReadOnlyError, SweepCursor};

/// Starts a thread for work no request waits on (the census count, the audit index, the purge
/// after an erasure) at the lowest scheduling priority.
///
/// Why: the node may run on one core, beside the request thread. Building one sealed audit
/// segment's index is ~60 ms of CPU in one burst; at normal priority the scheduler shares the
/// core with it, and requests wait for the core (at 11 000 sends/s, 24–32 waits over 2 ms in
/// 20 s; at nice 19, 2: docs/PERFORMANCE.md, "The tail of a node under load"). At nice 19 it
/// gets the core's idle time and a small share under load, and still finishes.
fn spawn_background<F>(name: &str, work: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name.into()).spawn(move || {
        #[cfg(target_os = "linux")]
        // SAFETY: setpriority(2) only changes a scheduling attribute. On Linux the nice value
        // belongs to a thread, and `who = 0` is the calling thread. Lowering it needs no
        // privilege; if it fails anyway the work still runs, at normal priority.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
        work()
    })
}
