//! The embedded store: redb in `<data_dir>/otpd.redb`, written through one group-committing
//! writer thread.
//!
//! # Why a writer thread
//!
//! A durable commit costs one fsync (~160 µs on the reference machine), so one commit per
//! request caps a node at ~5.6 k writes/s. Every write here is an [`Op`] sent to a single
//! thread that takes whatever has queued up (up to `group_commit_max`), applies it in one
//! redb write transaction with `Durability::Immediate`, commits once, and only then answers
//! every op of the batch. Under load, batches grow by themselves while the previous fsync
//! runs; at low load a write waits for a single fsync and nothing else. No timer is involved.
//!
//! Reads do not go through the thread: redb read transactions run concurrently with the
//! writer and see the last committed state, which includes every write already acknowledged.
//!
//! # Tables
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `users` | user id (16 B) | record |
//! | `users_by_ident` | identifier hash (16 B) | user id |
//! | `sessions` | session id (16 B) | record (format 2; format-1 records from before refresh rotation are read and upgraded on their next write) |
//! | `sessions_by_user` | user id ‖ session id (32 B) | () |
//! | `devices` | device id (16 B) | record |
//! | `devices_by_user` | user id ‖ device id (32 B) | () |
//! | `audit` | sequence number (u64) | record |
//! | `audit_by_ident` | identifier hash ‖ sequence (24 B) | () |
//! | `audit_by_trace` | BLAKE3(trace id)[..16] ‖ sequence (24 B) | () |
//!
//! Records are postcard-encoded behind a one-byte format version.
//!
//! Read-modify-write operations (refresh rotation, revocations, the device cap) run inside
//! the writer's transaction, after every earlier op of the same batch: they are atomic and
//! serialised with respect to each other without any lock.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use otpd_actors::clock::Timestamp;
use otpd_actors::keys::IdentHash;
use otpd_actors::ports::{
    AuditEvent, AuditLog, AuthMethod, Device, DeviceId, DeviceStore, InsertDevice, InsertUser, RevokeReason, Rotation,
    RotationVerdict, Session, SessionId, SessionStore, StoreError, User, UserId, UserStore,
};
use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

const USERS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("users");
const USERS_BY_IDENT: TableDefinition<&[u8; 16], &[u8; 16]> = TableDefinition::new("users_by_ident");
const SESSIONS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("sessions");
const SESSIONS_BY_USER: TableDefinition<&[u8; 32], ()> = TableDefinition::new("sessions_by_user");
const DEVICES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("devices");
const DEVICES_BY_USER: TableDefinition<&[u8; 32], ()> = TableDefinition::new("devices_by_user");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const AUDIT_BY_IDENT: TableDefinition<&[u8; 24], ()> = TableDefinition::new("audit_by_ident");
const AUDIT_BY_TRACE: TableDefinition<&[u8; 24], ()> = TableDefinition::new("audit_by_trace");

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

/// Group-commit settings.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedOptions {
    pub group_commit_max: usize,
    pub queue_capacity: usize,
    /// redb's page cache.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { group_commit_max: 512, queue_capacity: 65_536, cache_bytes: 128 * 1024 * 1024 }
    }
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Statistics of the writer, for tests and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub commits: u64,
    pub ops: u64,
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
fn ids_with_prefix<T: ReadableTable<&'static [u8; 32], ()>>(
    index: &T,
    prefix: &[u8; 16],
) -> Result<Vec<[u8; 16]>, StoreError> {
    let (lo, hi) = (pair_key(prefix, &[0; 16]), pair_key(prefix, &[0xff; 16]));
    let mut out = Vec::new();
    for entry in index.range::<&[u8; 32]>(&lo..=&hi).map_err(unavailable)? {
        let (key, _) = entry.map_err(unavailable)?;
        out.push(key.value()[16..].try_into().expect("16 of 32 bytes"));
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
    /// Opens (creating if needed) the store at `path` and starts its writer thread.
    pub fn open(path: &Path, options: EmbeddedOptions) -> Result<Arc<Self>, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let next_seq = {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(USERS).map_err(unavailable)?;
            txn.open_table(USERS_BY_IDENT).map_err(unavailable)?;
            txn.open_table(SESSIONS).map_err(unavailable)?;
            txn.open_table(DEVICES).map_err(unavailable)?;
            txn.open_table(DEVICES_BY_USER).map_err(unavailable)?;
            backfill_sessions_by_user(&txn)?;
            txn.open_table(AUDIT_BY_IDENT).map_err(unavailable)?;
            txn.open_table(AUDIT_BY_TRACE).map_err(unavailable)?;
            let next = {
                let audit = txn.open_table(AUDIT).map_err(unavailable)?;
                audit.last().map_err(unavailable)?.map(|(k, _)| k.value() + 1).unwrap_or(1)
            };
            txn.commit().map_err(unavailable)?;
            next
        };
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let writer_db = db.clone();
        let max = options.group_commit_max.max(1);
        let writer = std::thread::Builder::new()
            .name("otpd-store-writer".into())
            .spawn(move || writer_loop(&writer_db, rx, max, next_seq))
            .map_err(unavailable)?;
        Ok(Arc::new(EmbeddedStore { db, ops: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)) }))
    }

    /// Stops accepting writes, lets the writer commit what is queued, and waits for it.
    pub fn close(&self) {
        drop(self.ops.lock().take());
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }

    /// A cheap liveness check for readiness: a read transaction on the users table.
    pub fn check(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        txn.open_table(USERS).map_err(unavailable)?;
        Ok(())
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

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        f(&txn)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Stores written before the `sessions_by_user` index existed get it built once, on open.
fn backfill_sessions_by_user(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
    let mut by_user = txn.open_table(SESSIONS_BY_USER).map_err(unavailable)?;
    if !by_user.is_empty().map_err(unavailable)? || sessions.is_empty().map_err(unavailable)? {
        return Ok(());
    }
    for entry in sessions.iter().map_err(unavailable)? {
        let (_, value) = entry.map_err(unavailable)?;
        let s = decode_session(value.value())?;
        by_user.insert(&pair_key(s.user_id.0.as_bytes(), s.id.0.as_bytes()), ()).map_err(unavailable)?;
    }
    Ok(())
}

/// The writer: block for one op, take whatever else is queued, commit once, answer all.
fn writer_loop(db: &Database, mut rx: mpsc::Receiver<Op>, max: usize, mut next_seq: u64) {
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
        match commit_batch(db, &batch, &mut next_seq) {
            Ok(outcomes) => {
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

fn commit_batch(db: &Database, batch: &[Op], next_seq: &mut u64) -> Result<Vec<Outcome>, StoreError> {
    let mut txn = db.begin_write().map_err(unavailable)?;
    txn.set_durability(Durability::Immediate).map_err(unavailable)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut users = txn.open_table(USERS).map_err(unavailable)?;
        let mut by_ident = txn.open_table(USERS_BY_IDENT).map_err(unavailable)?;
        let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
        let mut sessions_by_user = txn.open_table(SESSIONS_BY_USER).map_err(unavailable)?;
        let mut devices = txn.open_table(DEVICES).map_err(unavailable)?;
        let mut devices_by_user = txn.open_table(DEVICES_BY_USER).map_err(unavailable)?;
        let mut audit = txn.open_table(AUDIT).map_err(unavailable)?;
        let mut audit_ident = txn.open_table(AUDIT_BY_IDENT).map_err(unavailable)?;
        let mut audit_trace = txn.open_table(AUDIT_BY_TRACE).map_err(unavailable)?;
        for op in batch {
            let outcome = match op {
                Op::InsertUser(user, _) => {
                    let existing = by_ident.get(&user.ident_hash.0).map_err(unavailable)?.map(|g| *g.value());
                    match existing {
                        Some(id) => {
                            let bytes = users
                                .get(&id)
                                .map_err(unavailable)?
                                .ok_or_else(|| corrupt("index names a missing user"))?;
                            Outcome::User(InsertUser::Exists(Box::new(decode(bytes.value())?)))
                        }
                        None => {
                            users
                                .insert(user.id.0.as_bytes(), encode(user.as_ref())?.as_slice())
                                .map_err(unavailable)?;
                            by_ident.insert(&user.ident_hash.0, user.id.0.as_bytes()).map_err(unavailable)?;
                            Outcome::User(InsertUser::Inserted)
                        }
                    }
                }
                Op::UpdateUser(user, _) => {
                    users.insert(user.id.0.as_bytes(), encode(user.as_ref())?.as_slice()).map_err(unavailable)?;
                    Outcome::Done
                }
                Op::InsertSession(session, _) => {
                    sessions
                        .insert(session.id.0.as_bytes(), encode_session(session)?.as_slice())
                        .map_err(unavailable)?;
                    sessions_by_user
                        .insert(&pair_key(session.user_id.0.as_bytes(), session.id.0.as_bytes()), ())
                        .map_err(unavailable)?;
                    Outcome::Done
                }
                Op::RotateRefresh { id, presented, next, now, .. } => {
                    let current =
                        sessions.get(id.0.as_bytes()).map_err(unavailable)?.map(|g| decode_session(g.value()));
                    let rotation = match current.transpose()? {
                        None => Rotation::Inactive,
                        Some(mut session) => match session.rotate(presented, next, *now) {
                            RotationVerdict::Rotated => {
                                sessions
                                    .insert(id.0.as_bytes(), encode_session(&session)?.as_slice())
                                    .map_err(unavailable)?;
                                Rotation::Rotated(Box::new(session))
                            }
                            RotationVerdict::Reused => {
                                sessions
                                    .insert(id.0.as_bytes(), encode_session(&session)?.as_slice())
                                    .map_err(unavailable)?;
                                Rotation::Reused(Box::new(session))
                            }
                            RotationVerdict::Mismatch => Rotation::Mismatch,
                            RotationVerdict::Inactive => Rotation::Inactive,
                        },
                    };
                    Outcome::Rotation(rotation)
                }
                Op::RevokeSession { id, reason, now, .. } => {
                    let current =
                        sessions.get(id.0.as_bytes()).map_err(unavailable)?.map(|g| decode_session(g.value()));
                    let revoked = match current.transpose()? {
                        Some(mut session) if session.is_active(*now) => {
                            session.revoked_at = Some(*now);
                            session.revoke_reason = Some(*reason);
                            sessions
                                .insert(id.0.as_bytes(), encode_session(&session)?.as_slice())
                                .map_err(unavailable)?;
                            true
                        }
                        _ => false,
                    };
                    Outcome::Flag(revoked)
                }
                Op::RevokeUserSessions { user, device, reason, now, .. } => {
                    let mut n = 0;
                    for sid in ids_with_prefix(&sessions_by_user, user.0.as_bytes())? {
                        let Some(bytes) = sessions.get(&sid).map_err(unavailable)?.map(|g| g.value().to_vec()) else {
                            continue;
                        };
                        let mut session = decode_session(&bytes)?;
                        let opened_by_device = |d: DeviceId| session.method == AuthMethod::Device(d);
                        if !session.is_active(*now) || device.is_some_and(|d| !opened_by_device(d)) {
                            continue;
                        }
                        session.revoked_at = Some(*now);
                        session.revoke_reason = Some(*reason);
                        sessions.insert(&sid, encode_session(&session)?.as_slice()).map_err(unavailable)?;
                        n += 1;
                    }
                    Outcome::Count(n)
                }
                Op::InsertDevice { device, max_active, .. } => {
                    let mut active = 0;
                    let mut duplicate = None;
                    for did in ids_with_prefix(&devices_by_user, device.user_id.0.as_bytes())? {
                        let bytes = devices
                            .get(&did)
                            .map_err(unavailable)?
                            .ok_or_else(|| corrupt("device index names a missing device"))?;
                        let existing: Device = decode(bytes.value())?;
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
                        devices
                            .insert(device.id.0.as_bytes(), encode(device.as_ref())?.as_slice())
                            .map_err(unavailable)?;
                        devices_by_user
                            .insert(&pair_key(device.user_id.0.as_bytes(), device.id.0.as_bytes()), ())
                            .map_err(unavailable)?;
                        InsertDevice::Inserted
                    };
                    Outcome::Device(outcome)
                }
                Op::RevokeDevice { user, id, now, .. } => {
                    let current: Option<Device> =
                        devices.get(id.0.as_bytes()).map_err(unavailable)?.map(|g| decode(g.value())).transpose()?;
                    let revoked = match current {
                        Some(mut d) if d.user_id == *user => {
                            if d.revoked_at.is_none() {
                                d.revoked_at = Some(*now);
                                devices.insert(id.0.as_bytes(), encode(&d)?.as_slice()).map_err(unavailable)?;
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
                    audit.insert(seq, encode(event.as_ref())?.as_slice()).map_err(unavailable)?;
                    if let Some(ident) = &event.ident_hash {
                        audit_ident.insert(&index_key(&ident.0, seq), ()).map_err(unavailable)?;
                    }
                    audit_trace.insert(&index_key(&trace_prefix(&event.trace_id), seq), ()).map_err(unavailable)?;
                    Outcome::Done
                }
            };
            outcomes.push(outcome);
        }
    }
    txn.commit().map_err(unavailable)?;
    Ok(outcomes)
}

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn user_by_identifier(&self, ident: &IdentHash) -> Result<Option<User>, StoreError> {
        self.read(|txn| {
            let by_ident = txn.open_table(USERS_BY_IDENT).map_err(unavailable)?;
            let Some(id) = by_ident.get(&ident.0).map_err(unavailable)?.map(|g| *g.value()) else {
                return Ok(None);
            };
            let users = txn.open_table(USERS).map_err(unavailable)?;
            let bytes = users.get(&id).map_err(unavailable)?.ok_or_else(|| corrupt("index names a missing user"))?;
            decode(bytes.value()).map(Some)
        })
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(|txn| {
            let users = txn.open_table(USERS).map_err(unavailable)?;
            users.get(id.0.as_bytes()).map_err(unavailable)?.map(|g| decode(g.value())).transpose()
        })
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
        self.read(|txn| {
            let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            sessions.get(id.0.as_bytes()).map_err(unavailable)?.map(|g| decode_session(g.value())).transpose()
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
        self.read(|txn| {
            let index = txn.open_table(SESSIONS_BY_USER).map_err(unavailable)?;
            let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let mut out = Vec::new();
            for sid in ids_with_prefix(&index, user.0.as_bytes())? {
                let bytes =
                    sessions.get(&sid).map_err(unavailable)?.ok_or_else(|| corrupt("index names a missing session"))?;
                out.push(decode_session(bytes.value())?);
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
        self.read(|txn| {
            let devices = txn.open_table(DEVICES).map_err(unavailable)?;
            devices.get(id.0.as_bytes()).map_err(unavailable)?.map(|g| decode(g.value())).transpose()
        })
    }

    async fn devices_of_user(&self, user: UserId) -> Result<Vec<Device>, StoreError> {
        self.read(|txn| {
            let index = txn.open_table(DEVICES_BY_USER).map_err(unavailable)?;
            let devices = txn.open_table(DEVICES).map_err(unavailable)?;
            let mut out = Vec::new();
            for did in ids_with_prefix(&index, user.0.as_bytes())? {
                let bytes =
                    devices.get(&did).map_err(unavailable)?.ok_or_else(|| corrupt("index names a missing device"))?;
                out.push(decode(bytes.value())?);
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
        self.read(|txn| events_by_prefix(txn, AUDIT_BY_IDENT, &ident.0, limit, |_| true))
    }

    async fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(|txn| {
            events_by_prefix(txn, AUDIT_BY_TRACE, &trace_prefix(trace_id), limit, |e| e.trace_id == trace_id)
        })
    }
}

/// Newest-first events whose index key starts with `prefix`.
fn events_by_prefix(
    txn: &redb::ReadTransaction,
    index: TableDefinition<&[u8; 24], ()>,
    prefix: &[u8; 16],
    limit: usize,
    keep: impl Fn(&AuditEvent) -> bool,
) -> Result<Vec<AuditEvent>, StoreError> {
    let index = txn.open_table(index).map_err(unavailable)?;
    let audit = txn.open_table(AUDIT).map_err(unavailable)?;
    let (lo, hi) = (index_key(prefix, 0), index_key(prefix, u64::MAX));
    let mut out = Vec::new();
    for entry in index.range::<&[u8; 24]>(&lo..=&hi).map_err(unavailable)?.rev() {
        if out.len() >= limit {
            break;
        }
        let (key, _) = entry.map_err(unavailable)?;
        let seq = u64::from_be_bytes(key.value()[16..].try_into().expect("8 bytes"));
        let bytes = audit.get(seq).map_err(unavailable)?.ok_or_else(|| corrupt("audit index names a missing event"))?;
        let event: AuditEvent = decode(bytes.value())?;
        if keep(&event) {
            out.push(event);
        }
    }
    Ok(out)
}

/// Access for `otpd audit` while no node holds the store. It opens the file read-write
/// (without writing) because a store left by `kill -9` needs redb's repair on open, which a
/// read-only handle cannot do; redb's lock still keeps a running node out, and vice versa.
pub struct AuditReader {
    db: Database,
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
        if !path.exists() {
            return Err(OpenReadOnlyError::Other(format!(
                "{}: no store here (has a node ever run with this data_dir?)",
                path.display()
            )));
        }
        match Database::open(path) {
            Ok(db) => Ok(AuditReader { db }),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(OpenReadOnlyError::InUse),
            Err(e) => Err(OpenReadOnlyError::Other(format!("{}: {e}", path.display()))),
        }
    }

    pub fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        events_by_prefix(&txn, AUDIT_BY_IDENT, &ident.0, limit, |_| true)
    }

    pub fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        events_by_prefix(&txn, AUDIT_BY_TRACE, &trace_prefix(trace_id), limit, |e| e.trace_id == trace_id)
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

    #[test]
    fn index_keys_sort_by_prefix_then_sequence() {
        let a = index_key(&[1; 16], 5);
        let b = index_key(&[1; 16], 6);
        let c = index_key(&[2; 16], 0);
        assert!(a < b && b < c);
    }
}
