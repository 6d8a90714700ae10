//! [`MeteredStore`]: any store adapter, timed.
//!
//! The wiring wraps whichever store it built (embedded, ScyllaDB, …) once, and hands the
//! wrapper to the engine as every store port, so each port call records its duration in
//! `otpd_store_operation_duration_seconds{store, operation}` and each failure in
//! `otpd_store_errors_total{store, operation, kind}` without the adapter knowing. Costs two
//! clock reads and one histogram record per call (tens of nanoseconds next to a store call's
//! microseconds).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use metrics::{Histogram, counter, histogram};
use uuid::Uuid;

use crate::metrics::{STORE_DURATION, STORE_ERRORS};
use crate::ports::{
    AuditEvent, AuditLog, Census, CensusSource, Device, DeviceStore, Erased, InsertDevice, InsertPasskey, InsertUser,
    Passkey, PasskeyStore, PasskeyUse, RevokeReason, Rotation, Session, SessionStore, StoreError, User, UserStore,
};
use crate::rules::clock::Timestamp;
use crate::rules::ids::{DeviceId, SessionId, UserId};
use crate::rules::keys::IdentHash;
use crate::rules::passkey::CredentialId;

/// The store port operations, as the `operation` label names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    UserByIdentifier,
    UserById,
    InsertUser,
    UpdateUser,
    PurgeUnverified,
    EraseUser,
    InsertSession,
    OpenSession,
    Session,
    RotateRefresh,
    RevokeSession,
    RevokeUserSessions,
    SessionsOfUser,
    InsertDevice,
    Device,
    DevicesOfUser,
    RevokeDevice,
    InsertPasskey,
    Passkey,
    PasskeysOfUser,
    RecordPasskeyUse,
    DeletePasskey,
    DeleteUserPasskeys,
    AuditAppend,
    AuditByIdentifier,
    AuditByTrace,
    Census,
}

impl Operation {
    pub const ALL: [Operation; 27] = [
        Operation::UserByIdentifier,
        Operation::UserById,
        Operation::InsertUser,
        Operation::UpdateUser,
        Operation::PurgeUnverified,
        Operation::EraseUser,
        Operation::InsertSession,
        Operation::OpenSession,
        Operation::Session,
        Operation::RotateRefresh,
        Operation::RevokeSession,
        Operation::RevokeUserSessions,
        Operation::SessionsOfUser,
        Operation::InsertDevice,
        Operation::Device,
        Operation::DevicesOfUser,
        Operation::RevokeDevice,
        Operation::InsertPasskey,
        Operation::Passkey,
        Operation::PasskeysOfUser,
        Operation::RecordPasskeyUse,
        Operation::DeletePasskey,
        Operation::DeleteUserPasskeys,
        Operation::AuditAppend,
        Operation::AuditByIdentifier,
        Operation::AuditByTrace,
        Operation::Census,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::UserByIdentifier => "user_by_identifier",
            Operation::UserById => "user_by_id",
            Operation::InsertUser => "insert_user",
            Operation::UpdateUser => "update_user",
            Operation::PurgeUnverified => "purge_unverified",
            Operation::EraseUser => "erase_user",
            Operation::InsertSession => "insert_session",
            Operation::OpenSession => "open_session",
            Operation::Session => "session",
            Operation::RotateRefresh => "rotate_refresh",
            Operation::RevokeSession => "revoke_session",
            Operation::RevokeUserSessions => "revoke_user_sessions",
            Operation::SessionsOfUser => "sessions_of_user",
            Operation::InsertDevice => "insert_device",
            Operation::Device => "device",
            Operation::DevicesOfUser => "devices_of_user",
            Operation::RevokeDevice => "revoke_device",
            Operation::InsertPasskey => "insert_passkey",
            Operation::Passkey => "passkey",
            Operation::PasskeysOfUser => "passkeys_of_user",
            Operation::RecordPasskeyUse => "record_passkey_use",
            Operation::DeletePasskey => "delete_passkey",
            Operation::DeleteUserPasskeys => "delete_user_passkeys",
            Operation::AuditAppend => "audit_append",
            Operation::AuditByIdentifier => "audit_by_identifier",
            Operation::AuditByTrace => "audit_by_trace",
            Operation::Census => "census",
        }
    }
}

/// A store adapter whose every port call is timed and whose failures are counted.
pub struct MeteredStore<S> {
    inner: Arc<S>,
    store: &'static str,
    durations: Vec<Histogram>,
}

impl<S> MeteredStore<S> {
    /// Wraps `inner`; `store` is the `store` label (`embedded`, `scylla`).
    pub fn new(store: &'static str, inner: Arc<S>) -> Self {
        let durations = Operation::ALL
            .iter()
            .map(|op| histogram!(STORE_DURATION, "store" => store, "operation" => op.as_str()))
            .collect();
        MeteredStore { inner, store, durations }
    }

    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    async fn timed<T>(
        &self,
        op: Operation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.durations[op as usize].record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let kind = match e {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Corrupt(_) => "corrupt",
            };
            counter!(STORE_ERRORS, "store" => self.store, "operation" => op.as_str(), "kind" => kind).increment(1);
        }
        result
    }
}

#[async_trait]
impl<S: UserStore> UserStore for MeteredStore<S> {
    async fn user_by_identifier(&self, ident: &IdentHash) -> Result<Option<Arc<User>>, StoreError> {
        self.timed(Operation::UserByIdentifier, self.inner.user_by_identifier(ident)).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.timed(Operation::UserById, self.inner.user_by_id(id)).await
    }

    async fn insert_user(&self, user: &User) -> Result<InsertUser, StoreError> {
        self.timed(Operation::InsertUser, self.inner.insert_user(user)).await
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        self.timed(Operation::UpdateUser, self.inner.update_user(user)).await
    }

    async fn purge_unverified(&self, created_before: Timestamp, max: usize) -> Result<usize, StoreError> {
        self.timed(Operation::PurgeUnverified, self.inner.purge_unverified(created_before, max)).await
    }

    async fn erase_user(&self, id: UserId) -> Result<Option<Erased>, StoreError> {
        self.timed(Operation::EraseUser, self.inner.erase_user(id)).await
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for MeteredStore<S> {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        self.timed(Operation::InsertSession, self.inner.insert_session(session)).await
    }

    async fn open_session(&self, session: Session, event: AuditEvent) -> Result<(), StoreError> {
        self.timed(Operation::OpenSession, self.inner.open_session(session, event)).await
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.timed(Operation::Session, self.inner.session(id)).await
    }

    async fn rotate_refresh(
        &self,
        id: SessionId,
        presented: &[u8; 32],
        next: &[u8; 32],
        now: Timestamp,
    ) -> Result<Rotation, StoreError> {
        self.timed(Operation::RotateRefresh, self.inner.rotate_refresh(id, presented, next, now)).await
    }

    async fn revoke_session(&self, id: SessionId, reason: RevokeReason, now: Timestamp) -> Result<bool, StoreError> {
        self.timed(Operation::RevokeSession, self.inner.revoke_session(id, reason, now)).await
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        opener: Option<Uuid>,
        reason: RevokeReason,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.timed(Operation::RevokeUserSessions, self.inner.revoke_user_sessions(user, opener, reason, now)).await
    }

    async fn sessions_of_user(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        self.timed(Operation::SessionsOfUser, self.inner.sessions_of_user(user)).await
    }
}

#[async_trait]
impl<S: DeviceStore> DeviceStore for MeteredStore<S> {
    async fn insert_device(&self, device: &Device, max_active: usize) -> Result<InsertDevice, StoreError> {
        self.timed(Operation::InsertDevice, self.inner.insert_device(device, max_active)).await
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        self.timed(Operation::Device, self.inner.device(id)).await
    }

    async fn devices_of_user(&self, user: UserId) -> Result<Vec<Device>, StoreError> {
        self.timed(Operation::DevicesOfUser, self.inner.devices_of_user(user)).await
    }

    async fn revoke_device(&self, user: UserId, id: DeviceId, now: Timestamp) -> Result<Option<Device>, StoreError> {
        self.timed(Operation::RevokeDevice, self.inner.revoke_device(user, id, now)).await
    }
}

#[async_trait]
impl<S: PasskeyStore> PasskeyStore for MeteredStore<S> {
    async fn insert_passkey(&self, passkey: &Passkey, max: usize) -> Result<InsertPasskey, StoreError> {
        self.timed(Operation::InsertPasskey, self.inner.insert_passkey(passkey, max)).await
    }

    async fn passkey(&self, id: &CredentialId) -> Result<Option<Passkey>, StoreError> {
        self.timed(Operation::Passkey, self.inner.passkey(id)).await
    }

    async fn passkeys_of_user(&self, user: UserId) -> Result<Vec<Passkey>, StoreError> {
        self.timed(Operation::PasskeysOfUser, self.inner.passkeys_of_user(user)).await
    }

    async fn record_passkey_use(&self, used: &Passkey, now: Timestamp) -> Result<PasskeyUse, StoreError> {
        self.timed(Operation::RecordPasskeyUse, self.inner.record_passkey_use(used, now)).await
    }

    async fn delete_passkey(&self, user: UserId, id: &CredentialId) -> Result<bool, StoreError> {
        self.timed(Operation::DeletePasskey, self.inner.delete_passkey(user, id)).await
    }

    async fn delete_user_passkeys(&self, user: UserId) -> Result<usize, StoreError> {
        self.timed(Operation::DeleteUserPasskeys, self.inner.delete_user_passkeys(user)).await
    }
}

#[async_trait]
impl<S: AuditLog> AuditLog for MeteredStore<S> {
    async fn append(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.timed(Operation::AuditAppend, self.inner.append(event)).await
    }

    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.timed(Operation::AuditAppend, self.inner.append_all(events)).await
    }

    async fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed(Operation::AuditByIdentifier, self.inner.by_identifier(ident, limit)).await
    }

    async fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed(Operation::AuditByTrace, self.inner.by_trace(trace_id, limit)).await
    }
}

#[async_trait]
impl<S: CensusSource> CensusSource for MeteredStore<S> {
    async fn census(&self, now: Timestamp) -> Result<Option<Census>, StoreError> {
        self.timed(Operation::Census, self.inner.census(now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_index_their_histograms() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{}", op.as_str());
        }
    }
}
