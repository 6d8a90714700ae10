//! The store's handle: opening (keyspaces, the census count, the writer thread), closing,
//! readiness, and the queue every write goes through.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use fjall::{PersistMode, Readable, SingleWriterTxDatabase, Snapshot};
use otpd_actors::ports::StoreError;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

use super::cache::UserCache;
use super::census::Counts;
use super::codec::{Spaces, decode_audit, decode_session, pair_key, seq_of, unavailable};
use super::trail::{SEGMENT_BYTES, Staged, Trail};
use super::writer::{Op, Reply, Writer, WriterMetrics};
use crate::store::shred::KeySource;

/// Group-commit and memory settings.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedOptions {
    pub group_commit_max: usize,
    pub queue_capacity: usize,
    /// The LSM tree's block cache.
    pub cache_bytes: usize,
    /// Largest in-memory table per keyspace before it is flushed to disk.
    pub memtable_bytes: usize,
    /// Accounts remembered by identifier hash (including "no account"), so a send reads none.
    pub user_cache_entries: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            group_commit_max: 512,
            queue_capacity: 65_536,
            cache_bytes: 128 * 1024 * 1024,
            memtable_bytes: 4 * 1024 * 1024,
            user_cache_entries: 100_000,
        }
    }
}

pub struct EmbeddedStore {
    pub(super) db: SingleWriterTxDatabase,
    pub(super) spaces: Spaces,
    pub(super) users: Arc<UserCache>,
    /// The writer's queue; `None` once closed. Read-locked per write, never cloned.
    pub(super) ops: RwLock<Option<mpsc::Sender<Op>>>,
    pub(super) writer: Mutex<Option<JoinHandle<()>>>,
    pub(super) counts: Arc<Counts>,
    /// Counts the baseline; holds a snapshot (and so the database) until done.
    pub(super) counting: Mutex<Option<JoinHandle<()>>>,
    /// Asks the purge thread to rewrite the files after an erasure (see [`Self::request_purge`]).
    purge: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    purging: Mutex<Option<JoinHandle<()>>>,
    /// The keyspaces' memtable size, which a backup gives the keyspaces it creates.
    pub(super) memtable_bytes: usize,
    /// The audit trail (`<store>/audit/`).
    pub(super) trail: Arc<Trail>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in the directory `path` and starts its writer
    /// thread.
    pub fn open(path: &Path, options: EmbeddedOptions) -> Result<Arc<Self>, StoreError> {
        crate::private_fs::create_dir(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let db = open_db(path, options.cache_bytes).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let spaces = Spaces::open(&db, options.memtable_bytes)?;
        backfill_sessions_by_user(&db, &spaces)?;
        let trail = open_trail(path, &db, &spaces)?;
        // The baseline is what this snapshot holds: everything the writer commits from now on
        // is added by the writer itself.
        let counts = Arc::new(Counts::default());
        let (snap, census_spaces, census_counts) = (db.read_tx(), spaces.clone(), counts.clone());
        let counting = super::spawn_background("otpd-store-census", move || {
            if let Err(e) = census_counts.count_baseline(&snap, &census_spaces) {
                tracing::error!(error = %e, "could not count the store's users and sessions");
            }
        })
        .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let users = Arc::new(UserCache::new(options.user_cache_entries));
        let writer = Writer {
            db: db.clone(),
            spaces: spaces.clone(),
            users: users.clone(),
            counts: counts.clone(),
            meters: WriterMetrics {
                batch: metrics::histogram!(crate::metrics::STORE_GROUP_COMMIT_BATCH),
                commit: metrics::histogram!(crate::metrics::STORE_COMMIT_DURATION),
            },
            max: options.group_commit_max.max(1),
            keys: KeySource::default(),
            trail: trail.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("otpd-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(unavailable)?;
        let (purge, requests) = std::sync::mpsc::sync_channel(1);
        let (purge_db, purge_spaces) = (db.clone(), spaces.clone());
        let purging = super::spawn_background("otpd-store-purge", move || {
            while requests.recv().is_ok() {
                let outcome = match purge_files(&purge_db, &purge_spaces) {
                    Ok(()) => "ok",
                    Err(e) => {
                        tracing::error!(error = %e, "could not rewrite the store's files after an erasure");
                        "failed"
                    }
                };
                metrics::counter!(crate::metrics::ERASURE_PURGES, "outcome" => outcome).increment(1);
            }
        })
        .map_err(unavailable)?;
        Ok(Arc::new(EmbeddedStore {
            db,
            spaces,
            users,
            ops: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            counts,
            counting: Mutex::new(Some(counting)),
            purge: Mutex::new(Some(purge)),
            purging: Mutex::new(Some(purging)),
            memtable_bytes: options.memtable_bytes,
            trail,
        }))
    }

    /// Has the purge thread rewrite the store's files, off the writer: deleted values stay in
    /// the journal and in older tables until then. Requests made while one is pending are
    /// served by it (its rewrite starts after them).
    pub(super) fn request_purge(&self) {
        if let Some(purge) = self.purge.lock().as_ref() {
            // Full: a purge is pending and will cover this erasure too.
            let _ = purge.try_send(());
        }
    }

    /// Stops accepting writes, lets the writer commit what is queued, and waits for it.
    pub fn close(&self) {
        drop(self.ops.write().take());
        drop(self.purge.lock().take());
        if let Some(handle) = self.purging.lock().take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
        self.trail.close();
        if let Some(handle) = self.counting.lock().take() {
            let _ = handle.join();
        }
    }

    /// Flushes every memtable and compacts every keyspace fully, then returns the bytes the
    /// store's files take: what a workload leaves on disk once background work has caught up.
    /// For measurements (`examples/retention_growth.rs`); a node never calls it.
    pub fn compact_and_measure(&self, path: &Path) -> Result<u64, StoreError> {
        self.db.inner().rotate_journal_and_flush().map_err(unavailable)?;
        for name in self.db.list_keyspace_names() {
            let space = self.db.keyspace(&name, fjall::KeyspaceCreateOptions::default).map_err(unavailable)?;
            space.inner().major_compact().map_err(unavailable)?;
        }
        Ok(dir_bytes(path))
    }

    /// A cheap check for readiness: the writer takes writes, and a point read answers.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.ops.read().as_ref().is_none_or(|ops| ops.is_closed()) {
            return Err(unavailable("the store's writer is stopped: writes cannot be made durable"));
        }
        self.spaces.users.get([0u8; 16]).map(|_| ()).map_err(unavailable)
    }

    /// Queues a write and waits until it is durable. `try_send` does not block, so the read
    /// lock is held for an enqueue only, and the sender is used in place rather than cloned.
    pub(super) async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        {
            let ops = self.ops.read();
            let sender = ops.as_ref().ok_or_else(|| unavailable("store is closed"))?;
            sender.try_send(make(reply)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => unavailable("store write queue is full"),
                mpsc::error::TrySendError::Closed(_) => unavailable("store is closed"),
            })?;
        }
        answer.await.map_err(|_| unavailable("store writer stopped"))?
    }

    /// Runs `f` on a snapshot: reads of an index and of the records it names agree.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Snapshot, &Spaces) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&self.db.read_tx(), &self.spaces)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// The database with the node's settings: a bounded block cache, and background work on one
/// thread (the reference machine has two cores and the request path needs them).
pub(super) fn open_db(path: &Path, cache_bytes: usize) -> fjall::Result<SingleWriterTxDatabase> {
    SingleWriterTxDatabase::builder(path)
        .cache_size(cache_bytes as u64)
        .worker_threads(1)
        .manual_journal_persist(true)
        .open()
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// After an erasure: seals the journal and flushes every memtable (the journals that held the
/// erased values are deleted), then compacts the keyspaces that hold personal data, so their
/// old tables (with the values the deletes shadowed) are replaced. Audit events need no
/// rewrite: their personal fields are sealed, and the keys are in `subject_keys`.
fn purge_files(db: &SingleWriterTxDatabase, sp: &Spaces) -> fjall::Result<()> {
    // A snapshot opened before the erasure can still read the erased values, and a compaction
    // keeps what an open snapshot can read: wait for those (a start-up count, a backup) to end.
    let erased_by = db.inner().visible_seqno();
    let deadline = std::time::Instant::now() + PURGE_WAIT;
    let waited_out = loop {
        if db.inner().oldest_reader() >= erased_by {
            break false;
        }
        if std::time::Instant::now() >= deadline {
            break true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    db.inner().rotate_journal_and_flush()?;
    for space in [
        &sp.users,
        &sp.users_by_ident,
        &sp.sessions,
        &sp.sessions_by_user,
        &sp.devices,
        &sp.devices_by_user,
        &sp.passkeys,
        &sp.passkeys_by_user,
        &sp.subject_keys,
    ] {
        space.inner().major_compact()?;
    }
    // The compactions' input tables (the erased values in them) are deleted only once no
    // tree version holds them; without this, that waited for some later flush or compaction.
    db.inner().drop_unread_versions()?;
    match waited_out {
        // Rewritten anyway; what that snapshot could read stays until a later compaction.
        true => Err(fjall::Error::Io(std::io::Error::other(format!(
            "a snapshot older than the erasure was still open after {} s",
            PURGE_WAIT.as_secs()
        )))),
        false => Ok(()),
    }
}

/// How long a purge waits for snapshots older than the erasure (see [`purge_files`]).
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens the audit trail in `<store>/audit/`. A store from before the trail held its events
/// in the LSM tree (`audit`, `audit_by_ident`, `audit_by_trace`): they are moved into the
/// trail first, in sequence order, then deleted there. A crash midway is resumed on the next
/// open, from the trail's last event.
pub(super) fn open_trail(path: &Path, db: &SingleWriterTxDatabase, sp: &Spaces) -> Result<Arc<Trail>, StoreError> {
    let old_first = match sp.audit.first_key_value() {
        Some(guard) => Some(seq_of(&guard.key().map_err(unavailable)?)?),
        None => None,
    };
    let trail = Trail::open(&path.join("audit"), old_first.unwrap_or(1), SEGMENT_BYTES)?;
    if old_first.is_none() {
        return Ok(trail);
    }
    let from = trail.next_seq();
    let mut staged = Staged::default();
    let mut moved = 0u64;
    let flush = |staged: &mut Staged| -> Result<(), StoreError> {
        if !staged.is_empty() {
            let written = trail.write(staged)?;
            trail.publish(written, staged);
            staged.clear();
        }
        Ok(())
    };
    for guard in db.read_tx().range(&sp.audit, from.to_be_bytes()..) {
        let (key, value) = guard.into_inner().map_err(unavailable)?;
        let (event, _) = decode_audit(&value)?;
        staged.push(seq_of(&key)?, &event, &value);
        moved += 1;
        if moved.is_multiple_of(10_000) {
            flush(&mut staged)?;
        }
    }
    flush(&mut staged)?;
    for space in [&sp.audit, &sp.audit_by_ident, &sp.audit_by_trace] {
        loop {
            let keys: Vec<_> =
                space.inner().iter().take(10_000).map(|g| g.key()).collect::<Result<_, _>>().map_err(unavailable)?;
            if keys.is_empty() {
                break;
            }
            let mut tx = db.write_tx().durability(Some(PersistMode::SyncAll));
            for key in keys {
                tx.remove(space, key);
            }
            tx.commit().map_err(unavailable)?;
        }
    }
    tracing::info!(events = moved, "moved the audit trail out of the LSM tree into its segment log");
    Ok(trail)
}

/// Stores written before the `sessions_by_user` index existed get it built once, on open.
fn backfill_sessions_by_user(db: &SingleWriterTxDatabase, spaces: &Spaces) -> Result<(), StoreError> {
    if spaces.sessions_by_user.first_key_value().is_some() || spaces.sessions.first_key_value().is_none() {
        return Ok(());
    }
    let mut tx = db.write_tx().durability(Some(PersistMode::SyncAll));
    for guard in spaces.sessions.inner().iter() {
        let (_, value) = guard.into_inner().map_err(unavailable)?;
        let s = decode_session(&value)?;
        tx.insert(&spaces.sessions_by_user, pair_key(s.user_id.0.as_bytes(), s.id.0.as_bytes()), []);
    }
    tx.commit().map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use otpd_actors::ports::{AuditEvent, AuditLog};
    use otpd_actors::rules::audit::{Api, AuditOutcome, Step};
    use otpd_actors::rules::clock::Timestamp;
    use otpd_actors::rules::keys::IdentHash;

    use super::super::codec::encode_audit;
    use super::*;

    fn event(i: u64) -> AuditEvent {
        AuditEvent {
            at: Timestamp::from_millis(1_700_000_000_000 + i),
            trace_id: format!("t{}", i % 3).into(),
            api: Api::Login,
            step: Step::Done,
            outcome: AuditOutcome::Ok,
            message: Cow::Owned(format!("event {i}")),
            client_ip: None,
            user_agent: None,
            ident_hash: Some(IdentHash([(i % 2) as u8; 16])),
            user_id: None,
        }
    }

    /// A store as the LSM-tree trail left it: events 1..=300 in `audit`, with index entries.
    fn old_store(path: &Path) {
        let db = open_db(path, 1 << 20).unwrap();
        let sp = Spaces::open(&db, 1 << 20).unwrap();
        let mut tx = db.write_tx().durability(Some(PersistMode::SyncAll));
        for i in 1..=300u64 {
            let e = event(i);
            tx.insert(&sp.audit, i.to_be_bytes(), encode_audit(&e, None).unwrap());
            let mut index = e.ident_hash.unwrap().0.to_vec();
            index.extend(i.to_be_bytes());
            tx.insert(&sp.audit_by_ident, index, []);
        }
        tx.commit().unwrap();
    }

    async fn messages(store: &EmbeddedStore, ident: u8) -> Vec<String> {
        let found = store.by_identifier(&IdentHash([ident; 16]), 1_000).await.unwrap();
        found.into_iter().map(|e| e.message.into_owned()).collect()
    }

    fn expected(ident: u64) -> Vec<String> {
        (1..=300u64).rev().filter(|i| i % 2 == ident).map(|i| format!("event {i}")).collect()
    }

    /// Every file under `dir` whose bytes contain `needle`.
    fn files_holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(files_holding(&path, needle));
            } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
        found
    }

    #[test]
    fn a_purge_leaves_no_file_holding_a_deleted_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let db = open_db(&path, 1 << 20).unwrap();
        let sp = Spaces::open(&db, 1 << 20).unwrap();
        let needle = |i: u8| format!("a value to erase, number {i}").into_bytes();
        // Three tables in `sessions`, each with a value, then every value deleted.
        for i in 0..3u8 {
            let mut tx = db.write_tx().durability(Some(PersistMode::SyncAll));
            tx.insert(&sp.sessions, [i], needle(i));
            tx.commit().unwrap();
            db.inner().rotate_journal_and_flush().unwrap();
        }
        for i in 0..3u8 {
            assert!(!files_holding(&path, &needle(i)).is_empty(), "value {i} is on disk before");
        }
        let mut tx = db.write_tx().durability(Some(PersistMode::SyncAll));
        for i in 0..3u8 {
            tx.remove(&sp.sessions, [i]);
        }
        tx.commit().unwrap();
        // A reader that started before the purge and is done by the time it ends does not hold
        // the old tables either.
        let reader = db.read_tx();
        assert_eq!(reader.get(&sp.sessions, [0u8]).unwrap(), None);
        drop(reader);
        purge_files(&db, &sp).unwrap();
        for i in 0..3u8 {
            assert_eq!(files_holding(&path, &needle(i)), Vec::<std::path::PathBuf>::new(), "value {i}");
        }

        // A snapshot from before an erasure is waited for: it could still read the value.
        let mut tx = db.write_tx().durability(Some(PersistMode::SyncAll));
        tx.insert(&sp.sessions, [9u8], needle(9));
        tx.commit().unwrap();
        db.inner().rotate_journal_and_flush().unwrap();
        let reader = db.read_tx();
        let mut tx = db.write_tx().durability(Some(PersistMode::SyncAll));
        tx.remove(&sp.sessions, [9u8]);
        tx.commit().unwrap();
        // Flushed while that snapshot is open: the purge finds every memtable empty.
        db.inner().rotate_journal_and_flush().unwrap();
        let purging = {
            let (db, sp) = (db.clone(), sp.clone());
            std::thread::spawn(move || purge_files(&db, &sp))
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!purging.is_finished(), "the purge waits for the older snapshot");
        assert_eq!(reader.get(&sp.sessions, [9u8]).unwrap().as_deref(), Some(&needle(9)[..]), "which still reads it");
        drop(reader);
        purging.join().unwrap().unwrap();
        assert_eq!(files_holding(&path, &needle(9)), Vec::<std::path::PathBuf>::new(), "value 9");
    }

    #[tokio::test]
    async fn a_store_from_before_the_trail_moves_its_events_into_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        old_store(&path);
        // A crash midway through an earlier move: the trail has the first 100 already.
        {
            let trail = Trail::open(&path.join("audit"), 1, SEGMENT_BYTES).unwrap();
            let mut staged = Staged::default();
            for i in 1..=100u64 {
                let e = event(i);
                staged.push(i, &e, &encode_audit(&e, None).unwrap());
            }
            let written = trail.write(&staged).unwrap();
            trail.publish(written, &staged);
        }
        for round in 0..2 {
            let store = EmbeddedStore::open(&path, EmbeddedOptions::default()).unwrap();
            assert_eq!(messages(&store, 0).await, expected(0), "round {round}");
            assert_eq!(messages(&store, 1).await, expected(1), "round {round}");
            assert_eq!(store.by_trace("t1", 1_000).await.unwrap().len(), 100);
            assert_eq!(store.oldest_event().unwrap(), Some(event(1).at));
            for space in [&store.spaces.audit, &store.spaces.audit_by_ident, &store.spaces.audit_by_trace] {
                assert!(space.first_key_value().is_none(), "the LSM tree's copy is gone");
            }
            assert_eq!(store.trail.next_seq(), 301, "numbering goes on from the old trail's");
            store.close();
        }
    }
}
