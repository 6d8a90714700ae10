//! The store's ports (`UserStore`, `SessionStore`, `DeviceStore`, `AuditLog`,
//! `CensusSource`): reads from a snapshot of the last commit, writes as [`Op`]s to the writer;
//! and [`AuditReader`], the audit trail read by `otpd audit` when no node holds the store.

use std::path::Path;

use async_trait::async_trait;
use fjall::{Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace, Snapshot};
use otpd_actors::ports::{
    AuditEvent, AuditLog, Census, CensusSource, Device, DeviceStore, InsertDevice, InsertPasskey, InsertUser, Passkey,
    PasskeyStore, PasskeyUse, RevokeReason, Rotation, Session, SessionStore, StoreError, User, UserStore,
};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::{DeviceId, SessionId, UserId};
use otpd_actors::rules::keys::IdentHash;
use otpd_actors::rules::passkey::CredentialId;

use super::codec::{Spaces, corrupt, decode, decode_session, indexed, passkeys_of, seq_of, trace_prefix, unavailable};
use super::handle::{EmbeddedStore, open_db};
use super::writer::Op;

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
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        let session = Box::new(session.clone());
        self.submit(|reply| Op::InsertSession { session, reply }).await
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
        let event = Box::new(event);
        self.submit(|reply| Op::AppendAudit { event, reply }).await
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
