//! The embedded store: an LSM tree (fjall) in `<data_dir>/store/`, written through one
//! group-committing writer thread.
//!
//! # Why a writer thread
//!
//! A durable commit costs one fsync (~160 µs on the reference machine), so one commit per
//! request caps a node at ~5.6 k writes/s. Every write here is an [`Op`] sent to a single
//! thread that takes whatever has queued up (up to `group_commit_max`), applies it in one
//! write transaction, commits it with the journal fsync'd (`PersistMode::SyncAll`), and only
//! then answers every op of the batch. Under load, batches grow by themselves while the
//! previous fsync runs; at low load a write waits for a single fsync and nothing else.
//!
//! Reads do not go through the thread: they read a snapshot of the last committed state, which
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
//!
//! # Keyspaces
//!
//! | keyspace | key | value |
//! | --- | --- | --- |
//! | `users` | user id (16 B) | record |
//! | `users_by_ident` | identifier hash (16 B) | user id |
//! | `sessions` | session id (16 B) | record (format 2; format 1 from before refresh rotation is read and upgraded on its next write) |
//! | `sessions_by_user` | user id ‖ session id (32 B) | empty |
//! | `devices` | device id (16 B) | record |
//! | `devices_by_user` | user id ‖ device id (32 B) | empty |
//! | `audit` | sequence number (u64, big-endian) | record |
//! | `audit_by_ident` | identifier hash ‖ sequence (24 B) | empty |
//! | `audit_by_trace` | BLAKE3(trace id)[..16] ‖ sequence (24 B) | empty |
//!
//! Records are postcard-encoded behind a one-byte format version.
//!
//! Read-modify-write operations (user uniqueness, refresh rotation, revocations, the device
//! cap) run inside the writer's transaction, which reads its own uncommitted writes, after
//! every earlier op of the same batch: they are atomic and serialised with respect to each
//! other without any lock.
//!
//! # Census
//!
//! [`CensusSource`] (users, verified users, active sessions) is answered from counters, not
//! by scanning: on open a background thread counts what a snapshot taken before the writer
//! starts holds (about a microsecond per record: a second or two for a million users and a
//! million sessions, off the request path), and the writer adds each committed batch's
//! changes. Active sessions are kept as counts per minute of expiry (at most
//! `session_ttl` / 1 min entries, ~43 200 for 30 days), so expiry needs no write and a
//! session stops counting within a minute of its `expires_at`. Cost on the write path: one
//! extra read of the old record per `update_user` (to see `verified` change) and a short
//! lock per batch that creates or revokes sessions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use async_trait::async_trait;
use fjall::{PersistMode, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace, Snapshot};
use otpd_actors::ports::{
    AuditEvent, AuditLog, AuthMethod, Census, CensusSource, Device, DeviceStore, InsertDevice, InsertUser,
    RevokeReason, Rotation, RotationVerdict, Session, SessionStore, StoreError, User, UserStore,
};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::{DeviceId, SessionId, UserId};
use otpd_actors::rules::keys::IdentHash;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

/// The keyspaces, opened once and shared by the writer and the readers.
#[derive(Clone)]
struct Spaces {
    users: SingleWriterTxKeyspace,
    users_by_ident: SingleWriterTxKeyspace,
    sessions: SingleWriterTxKeyspace,
    sessions_by_user: SingleWriterTxKeyspace,
    devices: SingleWriterTxKeyspace,
    devices_by_user: SingleWriterTxKeyspace,
    audit: SingleWriterTxKeyspace,
    audit_by_ident: SingleWriterTxKeyspace,
    audit_by_trace: SingleWriterTxKeyspace,
}

impl Spaces {
    fn open(db: &SingleWriterTxDatabase, memtable_bytes: usize) -> Result<Self, StoreError> {
        let options = || fjall::KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes.max(1 << 20) as u64);
        let ks = |name: &str| db.keyspace(name, options).map_err(unavailable);
        Ok(Spaces {
            users: ks("users")?,
            users_by_ident: ks("users_by_ident")?,
            sessions: ks("sessions")?,
            sessions_by_user: ks("sessions_by_user")?,
            devices: ks("devices")?,
            devices_by_user: ks("devices_by_user")?,
            audit: ks("audit")?,
            audit_by_ident: ks("audit_by_ident")?,
            audit_by_trace: ks("audit_by_trace")?,
        })
    }
}

/// Version byte in front of every record.
const RECORD_V1: u8 = 1;
/// Sessions since refresh rotation (more fields than format 1).
const SESSION_V2: u8 = 2;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write, queued for the writer thread.
enum Op {
    InsertUser(Box<User>, Reply<InsertUser>),
    UpdateUser(Box<User>, Reply<()>),
    InsertSession(Box<Session>, Reply<()>),
    AppendAudit(Box<AuditEvent>, Reply<()>),
    RotateRefresh {
        id: SessionId,
        presented: [u8; 32],
        next: [u8; 32],
        now: Timestamp,
        reply: Reply<Rotation>,
    },
    RevokeSession {
        id: SessionId,
        reason: RevokeReason,
        now: Timestamp,
        reply: Reply<bool>,
    },
    RevokeUserSessions {
        user: UserId,
        device: Option<DeviceId>,
        reason: RevokeReason,
        now: Timestamp,
        reply: Reply<usize>,
    },
    InsertDevice {
        device: Box<Device>,
        max_active: usize,
        reply: Reply<InsertDevice>,
    },
    RevokeDevice {
        user: UserId,
        id: DeviceId,
        now: Timestamp,
        reply: Reply<Option<Device>>,
    },
}

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

/// Accounts by identifier hash, in memory: every send and verify looks its account up, and
/// two LSM point reads (index, then record) cost more than the rest of the lookup path.
///
/// Only the writer thread knows when an account changes, so it updates the cache after each
/// commit. A reader that missed may fill the cache with what it read, but only if no account
/// changed since it started reading (`epoch`): checking and filling happen under the same lock
/// the writer holds while it updates and bumps the epoch, so a stale read can never overwrite a
/// newer value.
struct UserCache {
    entries: quick_cache::sync::Cache<[u8; 16], Option<User>>,
    epoch: Mutex<u64>,
}

impl UserCache {
    fn new(capacity: usize) -> Self {
        UserCache { entries: quick_cache::sync::Cache::new(capacity.max(1)), epoch: Mutex::new(0) }
    }

    fn epoch(&self) -> u64 {
        *self.epoch.lock()
    }

    fn fill(&self, started: u64, ident: [u8; 16], value: &Option<User>) {
        let epoch = self.epoch.lock();
        if *epoch == started {
            self.entries.insert(ident, value.clone());
        }
    }

    /// After a commit: the accounts the batch created or changed.
    fn apply(&self, batch: &[Op], outcomes: &[Outcome]) {
        let changed = batch.iter().zip(outcomes).filter_map(|(op, outcome)| match (op, outcome) {
            (Op::InsertUser(user, _), Outcome::User(InsertUser::Inserted)) | (Op::UpdateUser(user, _), _) => Some(user),
            _ => None,
        });
        let mut changed = changed.peekable();
        if changed.peek().is_none() {
            return;
        }
        let mut epoch = self.epoch.lock();
        for user in changed {
            self.entries.insert(user.ident_hash.0, Some(user.as_ref().clone()));
        }
        *epoch += 1;
    }
}

pub struct EmbeddedStore {
    db: SingleWriterTxDatabase,
    spaces: Spaces,
    users: Arc<UserCache>,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counts: Arc<Counts>,
    /// Counts the baseline; holds a snapshot (and so the database) until done.
    counting: Mutex<Option<JoinHandle<()>>>,
}

/// Users, verified users and active sessions, kept up to date by the writer (see the module
/// doc). Signed: a batch's changes may arrive before the baseline count they apply to.
#[derive(Default)]
struct Counts {
    users: AtomicI64,
    verified: AtomicI64,
    /// Sessions not revoked, by the minute in which they expire.
    sessions_by_expiry: Mutex<BTreeMap<u64, i64>>,
    /// Set once the count of what the store held at open has been added.
    baseline: AtomicBool,
}

const MINUTE_MS: u64 = 60_000;

/// The changes a batch makes to [`Counts`], applied once it is committed.
#[derive(Default)]
struct CountsDelta {
    users: i64,
    verified: i64,
    sessions: Vec<(u64, i64)>,
}

impl CountsDelta {
    fn session(&mut self, session: &Session, n: i64) {
        self.sessions.push((session.expires_at.as_millis() / MINUTE_MS, n));
    }
}

impl Counts {
    fn apply(&self, d: CountsDelta) {
        self.users.fetch_add(d.users, Ordering::Relaxed);
        self.verified.fetch_add(d.verified, Ordering::Relaxed);
        if !d.sessions.is_empty() {
            let mut by_expiry = self.sessions_by_expiry.lock();
            for (minute, n) in d.sessions {
                *by_expiry.entry(minute).or_default() += n;
            }
        }
    }

    /// Counts what `snap` holds (the store as it was before the writer started).
    fn count_baseline(&self, snap: &Snapshot, sp: &Spaces) -> Result<(), StoreError> {
        let mut d = CountsDelta::default();
        for guard in snap.iter(&sp.users) {
            let (_, value) = guard.into_inner().map_err(unavailable)?;
            let user: User = decode(&value)?;
            d.users += 1;
            d.verified += i64::from(user.verified);
        }
        let mut sessions: BTreeMap<u64, i64> = BTreeMap::new();
        for guard in snap.iter(&sp.sessions) {
            let (_, value) = guard.into_inner().map_err(unavailable)?;
            let session = decode_session(&value)?;
            if session.revoked_at.is_none() {
                *sessions.entry(session.expires_at.as_millis() / MINUTE_MS).or_default() += 1;
            }
        }
        d.sessions = sessions.into_iter().collect();
        self.apply(d);
        self.baseline.store(true, Ordering::Release);
        Ok(())
    }

    fn census(&self, now: Timestamp) -> Option<Census> {
        if !self.baseline.load(Ordering::Acquire) {
            return None;
        }
        let current = now.as_millis() / MINUTE_MS;
        let mut by_expiry = self.sessions_by_expiry.lock();
        // Minutes that are over will never count again.
        let live = by_expiry.split_off(&current);
        *by_expiry = live;
        let active: i64 = by_expiry.values().sum();
        let get = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        Some(Census {
            users: get(&self.users),
            verified_users: get(&self.verified),
            active_sessions: active.max(0) as u64,
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![RECORD_V1];
    out.extend(postcard::to_stdvec(value).map_err(corrupt)?);
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((v, _)) => Err(corrupt(format!("unknown record version {v}"))),
        None => Err(corrupt("empty record")),
    }
}

/// Sessions are written in format 2; format 1 (before refresh rotation) is still read.
fn encode_session(session: &Session) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![SESSION_V2];
    out.extend(postcard::to_stdvec(session).map_err(corrupt)?);
    Ok(out)
}

fn decode_session(bytes: &[u8]) -> Result<Session, StoreError> {
    /// The session record of format 1.
    #[derive(serde::Deserialize)]
    struct SessionV1 {
        id: SessionId,
        user_id: UserId,
        refresh_digest: [u8; 32],
        method: AuthMethod,
        created_at: Timestamp,
        expires_at: Timestamp,
        revoked_at: Option<Timestamp>,
    }
    match bytes.split_first() {
        Some((&SESSION_V2, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&RECORD_V1, rest)) => {
            let v1: SessionV1 = postcard::from_bytes(rest).map_err(corrupt)?;
            let mut s = Session::new(v1.id, v1.user_id, v1.refresh_digest, v1.method, v1.created_at, v1.expires_at);
            s.revoked_at = v1.revoked_at;
            Ok(s)
        }
        Some((v, _)) => Err(corrupt(format!("unknown session record version {v}"))),
        None => Err(corrupt("empty record")),
    }
}

fn pair_key(a: &[u8; 16], b: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(a);
    k[16..].copy_from_slice(b);
    k
}

/// Every second half of the keys of `index` that start with `prefix`, in key order.
fn ids_with_prefix(
    r: &impl Readable,
    index: &SingleWriterTxKeyspace,
    prefix: &[u8; 16],
) -> Result<Vec<[u8; 16]>, StoreError> {
    let mut out = Vec::new();
    for guard in r.prefix(index, prefix) {
        let key = guard.key().map_err(unavailable)?;
        out.push(key.get(16..32).and_then(|k| k.try_into().ok()).ok_or_else(|| corrupt("index key is not 32 bytes"))?);
    }
    Ok(out)
}

fn index_key(prefix: &[u8; 16], seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(prefix);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn trace_prefix(trace_id: &str) -> [u8; 16] {
    blake3::hash(trace_id.as_bytes()).as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in the directory `path` and starts its writer
    /// thread.
    pub fn open(path: &Path, options: EmbeddedOptions) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let db = open_db(path, options.cache_bytes).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let spaces = Spaces::open(&db, options.memtable_bytes)?;
        backfill_sessions_by_user(&db, &spaces)?;
        let next_seq = match spaces.audit.last_key_value() {
            Some(guard) => seq_of(&guard.key().map_err(unavailable)?)? + 1,
            None => 1,
        };
        // The baseline is what this snapshot holds: everything the writer commits from now on
        // is added by the writer itself.
        let counts = Arc::new(Counts::default());
        let (snap, census_spaces, census_counts) = (db.read_tx(), spaces.clone(), counts.clone());
        let counting = std::thread::Builder::new()
            .name("otpd-store-census".into())
            .spawn(move || {
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
        };
        let writer = std::thread::Builder::new()
            .name("otpd-store-writer".into())
            .spawn(move || writer.run(rx, next_seq))
            .map_err(unavailable)?;
        Ok(Arc::new(EmbeddedStore {
            db,
            spaces,
            users,
            ops: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            counts,
            counting: Mutex::new(Some(counting)),
        }))
    }

    /// Stops accepting writes, lets the writer commit what is queued, and waits for it.
    pub fn close(&self) {
        drop(self.ops.lock().take());
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.counting.lock().take() {
            let _ = handle.join();
        }
    }

    /// A cheap check for readiness: the writer takes writes, and a point read answers.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.ops.lock().as_ref().is_none_or(|ops| ops.is_closed()) {
            return Err(unavailable("the store's writer is stopped: writes cannot be made durable"));
        }
        self.spaces.users.get([0u8; 16]).map(|_| ()).map_err(unavailable)
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.ops.lock().clone().ok_or_else(|| unavailable("store is closed"))?;
        sender.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => unavailable("store write queue is full"),
            mpsc::error::TrySendError::Closed(_) => unavailable("store is closed"),
        })?;
        answer.await.map_err(|_| unavailable("store writer stopped"))?
    }

    /// Runs `f` on a snapshot: reads of an index and of the records it names agree.
    fn read<T>(&self, f: impl FnOnce(&Snapshot, &Spaces) -> Result<T, StoreError>) -> Result<T, StoreError> {
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
fn open_db(path: &Path, cache_bytes: usize) -> fjall::Result<SingleWriterTxDatabase> {
    SingleWriterTxDatabase::builder(path)
        .cache_size(cache_bytes as u64)
        .worker_threads(1)
        .manual_journal_persist(true)
        .open()
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    key.try_into().map(u64::from_be_bytes).map_err(|_| corrupt("audit key is not 8 bytes"))
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

/// The writer's metrics: records per commit, commit duration.
struct WriterMetrics {
    batch: metrics::Histogram,
    commit: metrics::Histogram,
}

/// The writer thread and what it keeps up to date after each commit.
struct Writer {
    db: SingleWriterTxDatabase,
    spaces: Spaces,
    users: Arc<UserCache>,
    counts: Arc<Counts>,
    meters: WriterMetrics,
    /// Most ops per commit.
    max: usize,
}

impl Writer {
    /// Blocks for one op, takes whatever else is queued, commits once, answers all.
    fn run(self, mut rx: mpsc::Receiver<Op>, mut next_seq: u64) {
        let Writer { db, spaces, users, counts, meters, max } = &self;
        let (db, spaces, max) = (db, spaces, *max);
        let mut batch: Vec<Op> = Vec::with_capacity(max);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let seq_before = next_seq;
            let started = Instant::now();
            let mut delta = CountsDelta::default();
            let committed = commit_batch(db, spaces, &batch, &mut next_seq, &mut delta);
            meters.commit.record(started.elapsed().as_secs_f64());
            meters.batch.record(batch.len() as f64);
            match committed {
                Ok(outcomes) => {
                    counts.apply(delta);
                    users.apply(&batch, &outcomes);
                    for (op, outcome) in batch.drain(..).zip(outcomes) {
                        answer(op, Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, ops = batch.len(), "embedded store commit failed");
                    next_seq = seq_before;
                    for op in batch.drain(..) {
                        answer(op, Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// What an op produced inside the transaction.
enum Outcome {
    User(InsertUser),
    Done,
    Rotation(Rotation),
    Flag(bool),
    Count(usize),
    Device(InsertDevice),
    Revoked(Option<Device>),
}

fn answer(op: Op, result: Result<Outcome, StoreError>) {
    match op {
        Op::InsertUser(_, reply) => {
            let _ = reply.send(result.map(|o| match o {
                Outcome::User(u) => u,
                _ => InsertUser::Inserted,
            }));
        }
        Op::UpdateUser(_, reply) | Op::InsertSession(_, reply) | Op::AppendAudit(_, reply) => {
            let _ = reply.send(result.map(|_| ()));
        }
        Op::RotateRefresh { reply, .. } => {
            let _ = reply.send(result.and_then(|o| match o {
                Outcome::Rotation(r) => Ok(r),
                _ => Err(corrupt("writer answered a rotation with another outcome")),
            }));
        }
        Op::RevokeSession { reply, .. } => {
            let _ = reply.send(result.and_then(|o| match o {
                Outcome::Flag(b) => Ok(b),
                _ => Err(corrupt("writer answered a revocation with another outcome")),
            }));
        }
        Op::RevokeUserSessions { reply, .. } => {
            let _ = reply.send(result.and_then(|o| match o {
                Outcome::Count(n) => Ok(n),
                _ => Err(corrupt("writer answered a revocation with another outcome")),
            }));
        }
        Op::InsertDevice { reply, .. } => {
            let _ = reply.send(result.and_then(|o| match o {
                Outcome::Device(d) => Ok(d),
                _ => Err(corrupt("writer answered a device insert with another outcome")),
            }));
        }
        Op::RevokeDevice { reply, .. } => {
            let _ = reply.send(result.and_then(|o| match o {
                Outcome::Revoked(d) => Ok(d),
                _ => Err(corrupt("writer answered a device revocation with another outcome")),
            }));
        }
    }
}

fn commit_batch(
    db: &SingleWriterTxDatabase,
    sp: &Spaces,
    batch: &[Op],
    next_seq: &mut u64,
    delta: &mut CountsDelta,
) -> Result<Vec<Outcome>, StoreError> {
    let mut tx = db.write_tx().durability(Some(PersistMode::SyncAll));
    let mut outcomes = Vec::with_capacity(batch.len());
    for op in batch {
        let outcome = match op {
            Op::InsertUser(user, _) => {
                let existing = tx.get(&sp.users_by_ident, user.ident_hash.0).map_err(unavailable)?;
                match existing {
                    Some(id) => {
                        let bytes = tx
                            .get(&sp.users, &id)
                            .map_err(unavailable)?
                            .ok_or_else(|| corrupt("index names a missing user"))?;
                        Outcome::User(InsertUser::Exists(Box::new(decode(&bytes)?)))
                    }
                    None => {
                        tx.insert(&sp.users, user.id.0.as_bytes(), encode(user.as_ref())?);
                        tx.insert(&sp.users_by_ident, user.ident_hash.0, user.id.0.as_bytes());
                        (delta.users, delta.verified) = (delta.users + 1, delta.verified + i64::from(user.verified));
                        Outcome::User(InsertUser::Inserted)
                    }
                }
            }
            Op::UpdateUser(user, _) => {
                let before = tx.get(&sp.users, user.id.0.as_bytes()).map_err(unavailable)?;
                let was_verified = before.map(|b| decode::<User>(&b)).transpose()?.map(|u| u.verified);
                delta.users += i64::from(was_verified.is_none());
                delta.verified += i64::from(user.verified) - i64::from(was_verified.unwrap_or(false));
                tx.insert(&sp.users, user.id.0.as_bytes(), encode(user.as_ref())?);
                Outcome::Done
            }
            Op::InsertSession(session, _) => {
                tx.insert(&sp.sessions, session.id.0.as_bytes(), encode_session(session)?);
                tx.insert(&sp.sessions_by_user, pair_key(session.user_id.0.as_bytes(), session.id.0.as_bytes()), []);
                if session.revoked_at.is_none() {
                    delta.session(session, 1);
                }
                Outcome::Done
            }
            Op::RotateRefresh { id, presented, next, now, .. } => {
                let current = tx.get(&sp.sessions, id.0.as_bytes()).map_err(unavailable)?.map(|v| decode_session(&v));
                let rotation = match current.transpose()? {
                    None => Rotation::Inactive,
                    Some(mut session) => match session.rotate(presented, next, *now) {
                        RotationVerdict::Rotated => {
                            tx.insert(&sp.sessions, id.0.as_bytes(), encode_session(&session)?);
                            Rotation::Rotated(Box::new(session))
                        }
                        RotationVerdict::Reused => {
                            tx.insert(&sp.sessions, id.0.as_bytes(), encode_session(&session)?);
                            delta.session(&session, -1);
                            Rotation::Reused(Box::new(session))
                        }
                        RotationVerdict::Mismatch => Rotation::Mismatch,
                        RotationVerdict::Inactive => Rotation::Inactive,
                    },
                };
                Outcome::Rotation(rotation)
            }
            Op::RevokeSession { id, reason, now, .. } => {
                let current = tx.get(&sp.sessions, id.0.as_bytes()).map_err(unavailable)?.map(|v| decode_session(&v));
                let revoked = match current.transpose()? {
                    Some(mut session) if session.is_active(*now) => {
                        session.revoked_at = Some(*now);
                        session.revoke_reason = Some(*reason);
                        tx.insert(&sp.sessions, id.0.as_bytes(), encode_session(&session)?);
                        delta.session(&session, -1);
                        true
                    }
                    _ => false,
                };
                Outcome::Flag(revoked)
            }
            Op::RevokeUserSessions { user, device, reason, now, .. } => {
                let mut n = 0;
                for sid in ids_with_prefix(&tx, &sp.sessions_by_user, user.0.as_bytes())? {
                    let Some(bytes) = tx.get(&sp.sessions, sid).map_err(unavailable)? else {
                        continue;
                    };
                    let mut session = decode_session(&bytes)?;
                    let opened_by_device = |d: DeviceId| session.method == AuthMethod::Device(d);
                    if !session.is_active(*now) || device.is_some_and(|d| !opened_by_device(d)) {
                        continue;
                    }
                    session.revoked_at = Some(*now);
                    session.revoke_reason = Some(*reason);
                    tx.insert(&sp.sessions, sid, encode_session(&session)?);
                    delta.session(&session, -1);
                    n += 1;
                }
                Outcome::Count(n)
            }
            Op::InsertDevice { device, max_active, .. } => {
                let mut active = 0;
                let mut duplicate = None;
                for did in ids_with_prefix(&tx, &sp.devices_by_user, device.user_id.0.as_bytes())? {
                    let bytes = tx
                        .get(&sp.devices, did)
                        .map_err(unavailable)?
                        .ok_or_else(|| corrupt("device index names a missing device"))?;
                    let existing: Device = decode(&bytes)?;
                    if existing.is_active() {
                        active += 1;
                        if existing.key == device.key {
                            duplicate = Some(existing.id);
                        }
                    }
                }
                let outcome = if let Some(id) = duplicate {
                    InsertDevice::DuplicateKey(id)
                } else if active >= *max_active {
                    InsertDevice::LimitReached { max: *max_active }
                } else {
                    tx.insert(&sp.devices, device.id.0.as_bytes(), encode(device.as_ref())?);
                    tx.insert(&sp.devices_by_user, pair_key(device.user_id.0.as_bytes(), device.id.0.as_bytes()), []);
                    InsertDevice::Inserted
                };
                Outcome::Device(outcome)
            }
            Op::RevokeDevice { user, id, now, .. } => {
                let current: Option<Device> =
                    tx.get(&sp.devices, id.0.as_bytes()).map_err(unavailable)?.map(|v| decode(&v)).transpose()?;
                let revoked = match current {
                    Some(mut d) if d.user_id == *user => {
                        if d.revoked_at.is_none() {
                            d.revoked_at = Some(*now);
                            tx.insert(&sp.devices, id.0.as_bytes(), encode(&d)?);
                        }
                        Some(d)
                    }
                    _ => None,
                };
                Outcome::Revoked(revoked)
            }
            Op::AppendAudit(event, _) => {
                let seq = *next_seq;
                *next_seq += 1;
                tx.insert(&sp.audit, seq.to_be_bytes(), encode(event.as_ref())?);
                if let Some(ident) = &event.ident_hash {
                    tx.insert(&sp.audit_by_ident, index_key(&ident.0, seq), []);
                }
                tx.insert(&sp.audit_by_trace, index_key(&trace_prefix(&event.trace_id), seq), []);
                Outcome::Done
            }
        };
        outcomes.push(outcome);
    }
    tx.commit().map_err(unavailable)?;
    Ok(outcomes)
}

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn user_by_identifier(&self, ident: &IdentHash) -> Result<Option<User>, StoreError> {
        if let Some(cached) = self.users.entries.get(&ident.0) {
            return Ok(cached);
        }
        let started = self.users.epoch();
        let read = self.read(|snap, sp| {
            let Some(id) = snap.get(&sp.users_by_ident, ident.0).map_err(unavailable)? else {
                return Ok(None);
            };
            let bytes =
                snap.get(&sp.users, &id).map_err(unavailable)?.ok_or_else(|| corrupt("index names a missing user"))?;
            decode(&bytes).map(Some)
        })?;
        self.users.fill(started, ident.0, &read);
        Ok(read)
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(|snap, sp| snap.get(&sp.users, id.0.as_bytes()).map_err(unavailable)?.map(|v| decode(&v)).transpose())
    }

    async fn insert_user(&self, user: &User) -> Result<InsertUser, StoreError> {
        let user = Box::new(user.clone());
        self.submit(|reply| Op::InsertUser(user, reply)).await
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let user = Box::new(user.clone());
        self.submit(|reply| Op::UpdateUser(user, reply)).await
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        let session = Box::new(session.clone());
        self.submit(|reply| Op::InsertSession(session, reply)).await
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.read(|snap, sp| {
            snap.get(&sp.sessions, id.0.as_bytes()).map_err(unavailable)?.map(|v| decode_session(&v)).transpose()
        })
    }

    async fn rotate_refresh(
        &self,
        id: SessionId,
        presented: &[u8; 32],
        next: &[u8; 32],
        now: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let (presented, next) = (*presented, *next);
        self.submit(|reply| Op::RotateRefresh { id, presented, next, now, reply }).await
    }

    async fn revoke_session(&self, id: SessionId, reason: RevokeReason, now: Timestamp) -> Result<bool, StoreError> {
        self.submit(|reply| Op::RevokeSession { id, reason, now, reply }).await
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        device: Option<DeviceId>,
        reason: RevokeReason,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.submit(|reply| Op::RevokeUserSessions { user, device, reason, now, reply }).await
    }

    async fn sessions_of_user(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        self.read(|snap, sp| {
            let mut out = Vec::new();
            for sid in ids_with_prefix(snap, &sp.sessions_by_user, user.0.as_bytes())? {
                let bytes = snap
                    .get(&sp.sessions, sid)
                    .map_err(unavailable)?
                    .ok_or_else(|| corrupt("index names a missing session"))?;
                out.push(decode_session(&bytes)?);
            }
            Ok(out)
        })
    }
}

#[async_trait]
impl DeviceStore for EmbeddedStore {
    async fn insert_device(&self, device: &Device, max_active: usize) -> Result<InsertDevice, StoreError> {
        let device = Box::new(device.clone());
        self.submit(|reply| Op::InsertDevice { device, max_active, reply }).await
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        self.read(|snap, sp| {
            snap.get(&sp.devices, id.0.as_bytes()).map_err(unavailable)?.map(|v| decode(&v)).transpose()
        })
    }

    async fn devices_of_user(&self, user: UserId) -> Result<Vec<Device>, StoreError> {
        self.read(|snap, sp| {
            let mut out = Vec::new();
            for did in ids_with_prefix(snap, &sp.devices_by_user, user.0.as_bytes())? {
                let bytes = snap
                    .get(&sp.devices, did)
                    .map_err(unavailable)?
                    .ok_or_else(|| corrupt("index names a missing device"))?;
                out.push(decode(&bytes)?);
            }
            Ok(out)
        })
    }

    async fn revoke_device(&self, user: UserId, id: DeviceId, now: Timestamp) -> Result<Option<Device>, StoreError> {
        self.submit(|reply| Op::RevokeDevice { user, id, now, reply }).await
    }
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, event: AuditEvent) -> Result<(), StoreError> {
        let event = Box::new(event);
        self.submit(|reply| Op::AppendAudit(event, reply)).await
    }

    async fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(|snap, sp| events_by_prefix(snap, sp, &sp.audit_by_ident, &ident.0, limit, |_| true))
    }

    async fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(|snap, sp| {
            events_by_prefix(snap, sp, &sp.audit_by_trace, &trace_prefix(trace_id), limit, |e| e.trace_id == trace_id)
        })
    }
}

#[async_trait]
impl CensusSource for EmbeddedStore {
    async fn census(&self, now: Timestamp) -> Result<Option<Census>, StoreError> {
        Ok(self.counts.census(now))
    }
}

/// Newest-first events whose index key starts with `prefix`.
fn events_by_prefix(
    snap: &Snapshot,
    sp: &Spaces,
    index: &SingleWriterTxKeyspace,
    prefix: &[u8; 16],
    limit: usize,
    keep: impl Fn(&AuditEvent) -> bool,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut out = Vec::new();
    for guard in snap.prefix(index, prefix).rev() {
        if out.len() >= limit {
            break;
        }
        let key = guard.key().map_err(unavailable)?;
        let seq = seq_of(key.get(16..24).ok_or_else(|| corrupt("audit index key is not 24 bytes"))?)?;
        let bytes = snap
            .get(&sp.audit, seq.to_be_bytes())
            .map_err(unavailable)?
            .ok_or_else(|| corrupt("audit index names a missing event"))?;
        let event: AuditEvent = decode(&bytes)?;
        if keep(&event) {
            out.push(event);
        }
    }
    Ok(out)
}

/// Access for `otpd audit` while no node holds the store (the LSM tree's lock file keeps a
/// running node and this reader apart). Opening replays the journal, so a store left by
/// `kill -9` reads complete.
pub struct AuditReader {
    db: SingleWriterTxDatabase,
    spaces: Spaces,
}

/// Why `otpd audit` could not open the store itself.
#[derive(Debug, thiserror::Error)]
pub enum OpenReadOnlyError {
    #[error("the store is open in a running node")]
    InUse,
    #[error("{0}")]
    Other(String),
}

impl AuditReader {
    pub fn open(path: &Path) -> Result<Self, OpenReadOnlyError> {
        if !path.is_dir() {
            return Err(OpenReadOnlyError::Other(format!(
                "{}: no store here (has a node ever run with this data_dir?)",
                path.display()
            )));
        }
        let db = match open_db(path, 16 * 1024 * 1024) {
            Ok(db) => db,
            Err(fjall::Error::Locked) => return Err(OpenReadOnlyError::InUse),
            Err(e) => return Err(OpenReadOnlyError::Other(format!("{}: {e}", path.display()))),
        };
        let spaces = Spaces::open(&db, 4 << 20).map_err(|e| OpenReadOnlyError::Other(e.to_string()))?;
        Ok(AuditReader { db, spaces })
    }

    pub fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        events_by_prefix(&self.db.read_tx(), &self.spaces, &self.spaces.audit_by_ident, &ident.0, limit, |_| true)
    }

    pub fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let prefix = trace_prefix(trace_id);
        events_by_prefix(&self.db.read_tx(), &self.spaces, &self.spaces.audit_by_trace, &prefix, limit, |e| {
            e.trace_id == trace_id
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_a_version() {
        let bytes = encode(&42u32).unwrap();
        assert_eq!(bytes[0], RECORD_V1);
        assert_eq!(decode::<u32>(&bytes).unwrap(), 42);
        assert!(matches!(decode::<u32>(&[9, 1]), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode::<u32>(&[]), Err(StoreError::Corrupt(_))));
    }

    fn account(first_name: &str) -> User {
        let at = Timestamp::from_millis(1_700_000_000_000);
        User {
            id: UserId(uuid::Uuid::now_v7()),
            identifier: otpd_actors::rules::identifier::Identifier::Email("a@example.com".into()),
            ident_hash: IdentHash([4; 16]),
            first_name: first_name.into(),
            last_name: "B".into(),
            email: None,
            verified: true,
            created_at: at,
            verified_at: Some(at),
            updated_at: at,
        }
    }

    #[test]
    fn a_stale_read_never_overwrites_a_newer_account_in_the_cache() {
        let cache = UserCache::new(16);
        let (reply, _answer) = oneshot::channel();
        let newer = account("Newer");
        // A reader starts, the writer commits a change, then the reader offers what it read.
        let started = cache.epoch();
        cache.apply(&[Op::UpdateUser(Box::new(newer.clone()), reply)], &[Outcome::Done]);
        cache.fill(started, [4; 16], &Some(account("Older")));
        assert_eq!(cache.entries.get(&[4; 16]), Some(Some(newer)));
        // A reader that started after the change may fill (here: another identifier).
        let started = cache.epoch();
        cache.fill(started, [5; 16], &None);
        assert_eq!(cache.entries.get(&[5; 16]), Some(None));
    }

    #[test]
    fn index_keys_sort_by_prefix_then_sequence() {
        let a = index_key(&[1; 16], 5);
        let b = index_key(&[1; 16], 6);
        let c = index_key(&[2; 16], 0);
        assert!(a < b && b < c);
    }
}
