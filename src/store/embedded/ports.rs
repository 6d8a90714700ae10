//! The store's ports (`UserStore`, `SessionStore`, `DeviceStore`, `AuditLog`,
//! `CensusSource`): reads from a snapshot of the last commit, writes as [`Op`]s to the writer;
//! and [`AuditReader`], the audit trail read by `otpd audit` when no node holds the store.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use fjall::{Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace, Snapshot};
use otpd_actors::ports::{
    AuditEvent, AuditLog, Census, CensusSource, Device, DeviceStore, Erased, InsertDevice, InsertPasskey, InsertUser,
    Passkey, PasskeyStore, PasskeyUse, RevokeReason, Rotation, Session, SessionStore, StoreError, User, UserStore,
};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::{DeviceId, SessionId, UserId};
use otpd_actors::rules::keys::IdentHash;
use otpd_actors::rules::passkey::CredentialId;

use super::codec::{
    Spaces, corrupt, decode, decode_session, indexed, parse_subject_key, passkeys_of, read_event, trace_prefix,
    unavailable,
};
use super::handle::{EmbeddedStore, open_db, open_trail};
use super::trail::{self, Key, Trail};
use super::writer::{Op, SweepPlan};
use crate::store::retention::{Cutoffs, Swept};

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn user_by_identifier(&self, ident: &IdentHash) -> Result<Option<Arc<User>>, StoreError> {
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
            decode(&bytes).map(|user| Some(Arc::new(user)))
        })?;
        self.users.fill(started, ident.0, &read);
        Ok(read)
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(|snap, sp| snap.get(&sp.users, id.0.as_bytes()).map_err(unavailable)?.map(|v| decode(&v)).transpose())
    }

    async fn insert_user(&self, user: &User) -> Result<InsertUser, StoreError> {
        let user = Box::new(user.clone());
        self.submit(|reply| Op::InsertUser { user, reply }).await
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let user = Box::new(user.clone());
        self.submit(|reply| Op::UpdateUser { user, reply }).await
    }

    /// Finds candidates on a snapshot, off the writer; the writer deletes those still
    /// unverified (one op, `max` accounts at most, so a purge never holds a commit long).
    async fn purge_unverified(&self, created_before: Timestamp, max: usize) -> Result<usize, StoreError> {
        let ids = self.read(|snap, sp| {
            let mut ids = Vec::new();
            for guard in snap.iter(&sp.users) {
                if ids.len() >= max {
                    break;
                }
                let (_, value) = guard.into_inner().map_err(unavailable)?;
                let user: User = decode(&value)?;
                if !user.verified && user.created_at < created_before {
                    ids.push(user.id);
                }
            }
            Ok(ids)
        })?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.submit(|reply| Op::PurgeUnverified { ids, created_before, reply }).await
    }

    /// One writer op deletes the account and everything of it; then the files that may still
    /// hold its old values are rewritten (see [`EmbeddedStore::request_purge`]).
    async fn erase_user(&self, id: UserId) -> Result<Option<Erased>, StoreError> {
        let erased = self.submit(|reply| Op::EraseUser { user: id, reply }).await?;
        if erased.is_some() {
            self.request_purge();
        }
        Ok(erased)
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        let session = Box::new(session.clone());
        self.submit(|reply| Op::InsertSession { session, reply }).await
    }

    /// One op, so one commit: the session and its event are durable together or not at all.
    async fn open_session(&self, session: Session, event: AuditEvent) -> Result<(), StoreError> {
        let (session, event) = (Box::new(session), Box::new(event));
        self.submit(|reply| Op::OpenSession { session, event, reply }).await
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
        opener: Option<uuid::Uuid>,
        reason: RevokeReason,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.submit(|reply| Op::RevokeUserSessions { user, opener, reason, now, reply }).await
    }

    async fn sessions_of_user(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        self.read(|snap, sp| {
            indexed(snap, &sp.sessions_by_user, &sp.sessions, user.0.as_bytes(), "session", decode_session)
        })
    }
}

#[async_trait]
impl PasskeyStore for EmbeddedStore {
    async fn insert_passkey(&self, passkey: &Passkey, max: usize) -> Result<InsertPasskey, StoreError> {
        let passkey = Box::new(passkey.clone());
        self.submit(|reply| Op::InsertPasskey { passkey, max, reply }).await
    }

    async fn passkey(&self, id: &CredentialId) -> Result<Option<Passkey>, StoreError> {
        self.read(|snap, sp| snap.get(&sp.passkeys, &id.0).map_err(unavailable)?.map(|v| decode(&v)).transpose())
    }

    async fn passkeys_of_user(&self, user: UserId) -> Result<Vec<Passkey>, StoreError> {
        self.read(|snap, sp| passkeys_of(snap, sp, &user))
    }

    async fn record_passkey_use(&self, used: &Passkey, now: Timestamp) -> Result<PasskeyUse, StoreError> {
        let used = Box::new(used.clone());
        self.submit(|reply| Op::RecordPasskeyUse { used, now, reply }).await
    }

    async fn delete_passkey(&self, user: UserId, id: &CredentialId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.submit(|reply| Op::DeletePasskey { user, id, reply }).await
    }

    async fn delete_user_passkeys(&self, user: UserId) -> Result<usize, StoreError> {
        self.submit(|reply| Op::DeleteUserPasskeys { user, reply }).await
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
        self.read(|snap, sp| indexed(snap, &sp.devices_by_user, &sp.devices, user.0.as_bytes(), "device", decode))
    }

    async fn revoke_device(&self, user: UserId, id: DeviceId, now: Timestamp) -> Result<Option<Device>, StoreError> {
        self.submit(|reply| Op::RevokeDevice { user, id, now, reply }).await
    }
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.append_all(vec![event]).await
    }

    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.submit(|reply| Op::AppendAudit { events, reply }).await
    }

    async fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        events(&self.trail, &self.db, &self.spaces, Key::Identifier(ident.0), limit, |_| true)
    }

    async fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        events(&self.trail, &self.db, &self.spaces, Key::Trace(trace_prefix(trace_id)), limit, |e| {
            e.trace_id == trace_id
        })
    }
}

#[async_trait]
impl CensusSource for EmbeddedStore {
    async fn census(&self, now: Timestamp) -> Result<Option<Census>, StoreError> {
        Ok(self.counts.census(now))
    }
}

/// Where a sweep goes on from: the last key each scan looked at.
#[derive(Default)]
pub struct SweepCursor {
    sessions: Option<Vec<u8>>,
    devices: Option<Vec<u8>>,
    subject_keys: Option<Vec<u8>>,
}

impl EmbeddedStore {
    /// One retention step: deletes the audit trail's segments past the cutoff, then finds at
    /// most `max` records of each other kind past `cutoffs` on a snapshot (off the writer, on a
    /// blocking thread) and has the writer delete them in one op. Returns what went and whether
    /// there may be more (call again with the same cursor).
    pub async fn sweep(
        self: &std::sync::Arc<Self>,
        cutoffs: Cutoffs,
        max: usize,
        cursor: &mut SweepCursor,
    ) -> Result<(Swept, bool), StoreError> {
        let store = self.clone();
        let mut c = std::mem::take(cursor);
        let (audit_events, plan, more, c) = tokio::task::spawn_blocking(move || {
            let expired = store.trail.expire(cutoffs.audit)?;
            let found = store.read(|snap, sp| plan_sweep(snap, sp, cutoffs, max, &mut c));
            found.map(|(plan, more)| (expired as usize, plan, more, c))
        })
        .await
        .map_err(|e| unavailable(format!("sweep task: {e}")))??;
        *cursor = c;
        if plan.sessions.is_empty() && plan.devices.is_empty() && plan.subject_keys.is_empty() {
            return Ok((Swept { audit_events, ..Swept::default() }, more));
        }
        let plan = Box::new(plan);
        let swept = self.submit(|reply| Op::Sweep { plan, reply }).await?;
        Ok((Swept { audit_events, ..swept }, more))
    }

    /// When the oldest audit event still held was written (`None`: the trail is empty).
    pub fn oldest_event(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.trail.oldest_event())
    }
}

/// Scans from each cursor for records past `cutoffs`, at most `max` of each kind.
fn plan_sweep(
    snap: &Snapshot,
    sp: &Spaces,
    cutoffs: Cutoffs,
    max: usize,
    cursor: &mut SweepCursor,
) -> Result<(SweepPlan, bool), StoreError> {
    let mut plan = SweepPlan { cutoffs, ..SweepPlan::default() };
    let mut more = false;
    more |= scan_from(snap, &sp.sessions, &mut cursor.sessions, max, |key, value| {
        let session = decode_session(value)?;
        if cutoffs.session_ended_before(&session) {
            plan.sessions.push(SessionId(uuid_of(key)?));
        }
        Ok(())
    })?;
    more |= scan_from(snap, &sp.devices, &mut cursor.devices, max, |key, value| {
        let device: Device = decode(value)?;
        if cutoffs.device_removed_before(&device) {
            plan.devices.push(DeviceId(uuid_of(key)?));
        }
        Ok(())
    })?;
    more |= scan_from(snap, &sp.subject_keys, &mut cursor.subject_keys, max, |key, value| {
        if parse_subject_key(value)?.1 < cutoffs.audit {
            plan.subject_keys.push(key.try_into().map_err(|_| corrupt("subject key's key is not 33 bytes"))?);
        }
        Ok(())
    })?;
    Ok((plan, more))
}

/// Visits at most `max` records of `space` after `cursor`, moving it on; true if it stopped
/// early (there may be more).
fn scan_from(
    snap: &Snapshot,
    space: &SingleWriterTxKeyspace,
    cursor: &mut Option<Vec<u8>>,
    max: usize,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<bool, StoreError> {
    use std::ops::Bound;
    let start = match cursor.take() {
        Some(k) => Bound::Excluded(k),
        None => Bound::Unbounded,
    };
    let mut seen = 0;
    for guard in snap.range(space, (start, Bound::<Vec<u8>>::Unbounded)) {
        let (key, value) = guard.into_inner().map_err(unavailable)?;
        visit(&key, &value)?;
        seen += 1;
        *cursor = Some(key.to_vec());
        if seen >= max {
            return Ok(true);
        }
    }
    *cursor = None;
    Ok(false)
}

fn uuid_of(key: &[u8]) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::from_slice(key).map_err(|_| corrupt("record key is not 16 bytes"))
}

/// The newest `limit` events under `key` that `keep` keeps, newest first. The subject keys
/// are read from a snapshot taken after the look-up: every event the look-up found was
/// published after its key was committed.
fn events(
    trail: &Trail,
    db: &SingleWriterTxDatabase,
    sp: &Spaces,
    key: Key,
    limit: usize,
    keep: impl Fn(&AuditEvent) -> bool,
) -> Result<Vec<AuditEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let found = trail.lookup(key)?;
    let snap = db.read_tx();
    let mut out = Vec::new();
    trail::newest_first(&found, |_, bytes| {
        let event = read_event(&snap, sp, bytes)?;
        if keep(&event) {
            out.push(event);
        }
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

/// Access for `otpd audit` while no node holds the store (the LSM tree's lock file keeps a
/// running node and this reader apart). Opening replays the journal, so a store left by
/// `kill -9` reads complete.
pub struct AuditReader {
    db: SingleWriterTxDatabase,
    spaces: Spaces,
    trail: Arc<Trail>,
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
        let trail = open_trail(path, &db, &spaces).map_err(|e| OpenReadOnlyError::Other(e.to_string()))?;
        Ok(AuditReader { db, spaces, trail })
    }

    pub fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        events(&self.trail, &self.db, &self.spaces, Key::Identifier(ident.0), limit, |_| true)
    }

    /// When the oldest event still held was written.
    pub fn oldest_event(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.trail.oldest_event())
    }

    pub fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        events(&self.trail, &self.db, &self.spaces, Key::Trace(trace_prefix(trace_id)), limit, |e| {
            e.trace_id == trace_id
        })
    }
}
