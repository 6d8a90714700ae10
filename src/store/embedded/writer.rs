//! The writer thread: every write of the store, group-committed.
//!
//! A durable commit costs one fsync (~160 µs on the reference machine), so one commit per
//! request would cap a node at ~5.6 k writes/s. Every write is an [`Op`] sent to this one
//! thread, which takes whatever has queued up (up to `group_commit_max`), applies it in one
//! write transaction, commits it with the journal made durable (`PersistMode::SyncData`:
//! `fdatasync`, which skips the inode's times; the journal's blocks are zero-filled ahead of
//! it, see vendor/fjall/VENDORED.md, so a commit writes data only), and only
//! then answers every op of the batch. Under load, batches grow by themselves while the
//! previous fsync runs; at low load a write waits for a single fsync and nothing else.
//!
//! Read-modify-write operations (user uniqueness, refresh rotation, revocations, the device
//! cap) run inside the transaction, which reads its own uncommitted writes, after every
//! earlier op of the same batch: they are atomic and serialised with respect to each other
//! without any lock.
//!
//! Each op is applied by its own `apply_<op>`, which returns the op's own result type; the
//! result waits beside the op's reply channel (an [`Answer`]) until the batch is durable.
//! Pairing the two happens in one generic function, [`pend`], so a reply can only ever carry
//! the result of its own op.

use std::time::Instant;

use fjall::{PersistMode, Readable, SingleWriterTxDatabase, SingleWriterWriteTx};
use otpd_actors::ports::{
    AuditEvent, Device, Erased, InsertDevice, InsertPasskey, InsertUser, Passkey, PasskeyUse, RevokeReason, Rotation,
    RotationVerdict, Session, StoreError, User,
};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::{DeviceId, SessionId, UserId};
use otpd_actors::rules::keys::IdentHash;
use otpd_actors::rules::passkey::CredentialId;
use tokio::sync::{mpsc, oneshot};

use super::cache::UserCache;
use super::census::{Counts, CountsDelta};
use super::codec::{
    Spaces, corrupt, decode, decode_session, encode, encode_session, ids_with_prefix, indexed, pair_key,
    parse_subject_key, passkey_index_key, passkeys_of, subject_key_key, subject_key_value, unavailable,
};
use super::trail::{Staged, Trail};
use crate::store::retention::{Cutoffs, Swept};
use crate::store::shred::{self, KeySource, Subject};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write, queued for the writer thread, with the channel its result goes back on.
pub(super) enum Op {
    InsertUser {
        user: Box<User>,
        reply: Reply<InsertUser>,
    },
    UpdateUser {
        user: Box<User>,
        reply: Reply<()>,
    },
    PurgeUnverified {
        ids: Vec<UserId>,
        created_before: Timestamp,
        reply: Reply<usize>,
    },
    InsertSession {
        session: Box<Session>,
        reply: Reply<()>,
    },
    /// Events in order: one call's, or a delivery batch's outcomes.
    AppendAudit {
        events: Vec<AuditEvent>,
        reply: Reply<()>,
    },
    /// A new session and the event recording it, in the same batch.
    OpenSession {
        session: Box<Session>,
        event: Box<AuditEvent>,
        reply: Reply<()>,
    },
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
        opener: Option<uuid::Uuid>,
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
    EraseUser {
        user: UserId,
        reply: Reply<Option<Erased>>,
    },
    Sweep {
        plan: Box<SweepPlan>,
        reply: Reply<Swept>,
    },
    InsertPasskey {
        passkey: Box<Passkey>,
        max: usize,
        reply: Reply<InsertPasskey>,
    },
    RecordPasskeyUse {
        used: Box<Passkey>,
        now: Timestamp,
        reply: Reply<PasskeyUse>,
    },
    DeletePasskey {
        user: UserId,
        id: CredentialId,
        reply: Reply<bool>,
    },
    DeleteUserPasskeys {
        user: UserId,
        reply: Reply<usize>,
    },
}

/// What a retention sweep found on a snapshot, for the writer to delete (re-checking each
/// record that can change).
#[derive(Default)]
pub(super) struct SweepPlan {
    pub cutoffs: Cutoffs,
    pub sessions: Vec<SessionId>,
    pub devices: Vec<DeviceId>,
    pub subject_keys: Vec<[u8; 33]>,
}

impl Op {
    /// Answers with `e` without applying (an earlier op of the batch failed).
    fn fail(self, e: StoreError) {
        match self {
            Op::InsertUser { reply, .. } => fail(reply, e),
            Op::UpdateUser { reply, .. }
            | Op::InsertSession { reply, .. }
            | Op::AppendAudit { reply, .. }
            | Op::OpenSession { reply, .. } => fail(reply, e),
            Op::RotateRefresh { reply, .. } => fail(reply, e),
            Op::RevokeSession { reply, .. } => fail(reply, e),
            Op::RevokeUserSessions { reply, .. } | Op::PurgeUnverified { reply, .. } => fail(reply, e),
            Op::InsertDevice { reply, .. } => fail(reply, e),
            Op::RevokeDevice { reply, .. } => fail(reply, e),
            Op::EraseUser { reply, .. } => fail(reply, e),
            Op::Sweep { reply, .. } => fail(reply, e),
            Op::InsertPasskey { reply, .. } => fail(reply, e),
            Op::RecordPasskeyUse { reply, .. } => fail(reply, e),
            Op::DeletePasskey { reply, .. } => fail(reply, e),
            Op::DeleteUserPasskeys { reply, .. } => fail(reply, e),
        }
    }
}

fn fail<T>(reply: Reply<T>, e: StoreError) {
    // The caller may have given up waiting; nothing is owed to it then.
    let _ = reply.send(Err(e));
}

/// An op's reply and the result it will carry once the batch is durable.
pub(super) struct Answer<T> {
    reply: Reply<T>,
    value: T,
}

impl<T> Answer<T> {
    fn settle(self, committed: &Result<(), StoreError>) {
        let _ = self.reply.send(committed.clone().map(|()| self.value));
    }
}

/// Declares [`Pending`]: one variant per result type the ports return.
macro_rules! pending {
    ($($variant:ident($value:ty)),* $(,)?) => {
        /// An answer waiting for its batch's commit.
        pub(super) enum Pending {
            $($variant(Answer<$value>),)*
        }

        impl Pending {
            fn settle(self, committed: &Result<(), StoreError>) {
                match self {
                    $(Pending::$variant(answer) => answer.settle(committed),)*
                }
            }
        }

        $(impl From<Answer<$value>> for Pending {
            fn from(answer: Answer<$value>) -> Self {
                Pending::$variant(answer)
            }
        })*
    };
}

pending! {
    InsertUser(InsertUser),
    Unit(()),
    Rotation(Rotation),
    Flag(bool),
    Count(usize),
    Device(InsertDevice),
    Revoked(Option<Device>),
    Erased(Option<Erased>),
    Swept(Swept),
    Passkey(InsertPasskey),
    PasskeyUse(PasskeyUse),
}

/// Pairs an op's reply with what applying it gave; a failure is answered at once (and fails
/// the batch).
fn pend<T>(reply: Reply<T>, applied: Result<T, StoreError>) -> Result<Pending, StoreError>
where
    Answer<T>: Into<Pending>,
{
    match applied {
        Ok(value) => Ok(Answer { reply, value }.into()),
        Err(e) => {
            fail(reply, e.clone());
            Err(e)
        }
    }
}

/// The writer's metrics: records per commit, commit duration.
pub(super) struct WriterMetrics {
    pub batch: metrics::Histogram,
    pub commit: metrics::Histogram,
}

/// The writer thread and what it keeps up to date after each commit.
pub(super) struct Writer {
    pub db: SingleWriterTxDatabase,
    pub spaces: Spaces,
    pub users: std::sync::Arc<UserCache>,
    pub counts: std::sync::Arc<Counts>,
    pub meters: WriterMetrics,
    /// Most ops per commit.
    pub max: usize,
    /// The keys audit events' personal fields are sealed with.
    pub keys: KeySource,
    /// Where audit events go.
    pub trail: std::sync::Arc<Trail>,
}

impl Writer {
    /// Blocks for one op, takes whatever else is queued, commits once, answers all.
    ///
    /// A batch's audit events go to the trail (one write, one `fdatasync`), everything else
    /// into one LSM transaction, committed after the trail's write and only if it wrote
    /// anything. The events become visible only once both are durable; if the transaction
    /// fails, the trail's write is cut off again, so the batch is all or nothing.
    pub fn run(self, mut rx: mpsc::Receiver<Op>) {
        let mut ops: Vec<Op> = Vec::with_capacity(self.max);
        let mut pending: Vec<Pending> = Vec::with_capacity(self.max);
        let mut staged = Staged::default();
        while let Some(first) = rx.blocking_recv() {
            ops.push(first);
            while ops.len() < self.max {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let count = ops.len();
            staged.clear();
            let mut batch = Batch {
                tx: self.db.write_tx().durability(Some(PersistMode::SyncData)),
                sp: &self.spaces,
                keys: &self.keys,
                staged: std::mem::take(&mut staged),
                next_seq: self.trail.next_seq(),
                drawn: Vec::new(),
                delta: CountsDelta::default(),
                changed_users: Vec::new(),
                removed_users: Vec::new(),
            };
            let mut failed = None;
            for op in ops.drain(..) {
                match &failed {
                    Some(e) => op.fail(StoreError::clone(e)),
                    None => match batch.apply(op) {
                        Ok(answer) => pending.push(answer),
                        Err(e) => failed = Some(e),
                    },
                }
            }
            let Batch { tx, delta, changed_users, removed_users, drawn, staged: filled, .. } = batch;
            staged = filled;
            let committed = match failed {
                None => self.commit(tx, &staged),
                Some(e) => Err(e),
            };
            self.meters.commit.record(started.elapsed().as_secs_f64());
            self.meters.batch.record(count as f64);
            match &committed {
                Ok(()) => {
                    self.counts.apply(delta);
                    self.users.apply(changed_users, &removed_users);
                }
                Err(e) => {
                    // Keys drawn for this batch were never stored: the next events draw anew.
                    for subject in &drawn {
                        self.keys.forget(subject);
                    }
                    tracing::error!(error = %e, ops = count, "embedded store commit failed");
                }
            }
            for answer in pending.drain(..) {
                answer.settle(&committed);
            }
        }
    }

    /// Makes the batch durable: the trail's events, then the transaction.
    fn commit(&self, tx: SingleWriterWriteTx<'_>, staged: &Staged) -> Result<(), StoreError> {
        if staged.is_empty() {
            return tx.commit().map_err(unavailable);
        }
        let written = self.trail.write(staged)?;
        match tx.commit() {
            Ok(()) => {
                self.trail.publish(written, staged);
                Ok(())
            }
            Err(e) => {
                self.trail.rollback(written);
                Err(unavailable(e))
            }
        }
    }
}

/// One batch's transaction and what its commit will change besides the data.
struct Batch<'a> {
    tx: SingleWriterWriteTx<'a>,
    sp: &'a Spaces,
    keys: &'a KeySource,
    /// The batch's audit events, for the trail.
    staged: Staged,
    /// The sequence number of the next audit event.
    next_seq: u64,
    /// Subjects whose key this batch drew (and stores).
    drawn: Vec<Subject>,
    delta: CountsDelta,
    /// Accounts created or changed, for the cache once committed.
    changed_users: Vec<User>,
    /// Accounts deleted (the unverified ones purged), for the cache once committed.
    removed_users: Vec<IdentHash>,
}

impl Batch<'_> {
    fn apply(&mut self, op: Op) -> Result<Pending, StoreError> {
        match op {
            Op::InsertUser { user, reply } => pend(reply, self.apply_insert_user(user)),
            Op::UpdateUser { user, reply } => pend(reply, self.apply_update_user(user)),
            Op::PurgeUnverified { ids, created_before, reply } => {
                pend(reply, self.apply_purge_unverified(&ids, created_before))
            }
            Op::InsertSession { session, reply } => pend(reply, self.apply_insert_session(&session)),
            Op::AppendAudit { mut events, reply } => {
                pend(reply, events.iter_mut().try_for_each(|event| self.apply_append_audit(event)))
            }
            Op::OpenSession { session, mut event, reply } => {
                let applied = self.apply_insert_session(&session);
                pend(reply, applied.and_then(|()| self.apply_append_audit(&mut event)))
            }
            Op::RotateRefresh { id, presented, next, now, reply } => {
                pend(reply, self.apply_rotate_refresh(id, &presented, &next, now))
            }
            Op::RevokeSession { id, reason, now, reply } => pend(reply, self.apply_revoke_session(id, reason, now)),
            Op::RevokeUserSessions { user, opener, reason, now, reply } => {
                pend(reply, self.apply_revoke_user_sessions(user, opener, reason, now))
            }
            Op::InsertDevice { device, max_active, reply } => {
                pend(reply, self.apply_insert_device(&device, max_active))
            }
            Op::RevokeDevice { user, id, now, reply } => pend(reply, self.apply_revoke_device(user, id, now)),
            Op::EraseUser { user, reply } => pend(reply, self.apply_erase_user(user)),
            Op::Sweep { plan, reply } => pend(reply, self.apply_sweep(&plan)),
            Op::InsertPasskey { passkey, max, reply } => pend(reply, self.apply_insert_passkey(&passkey, max)),
            Op::RecordPasskeyUse { used, now, reply } => pend(reply, self.apply_record_passkey_use(&used, now)),
            Op::DeletePasskey { user, id, reply } => pend(reply, self.apply_delete_passkey(user, &id)),
            Op::DeleteUserPasskeys { user, reply } => pend(reply, self.apply_delete_user_passkeys(user)),
        }
    }

    fn session(&self, id: impl AsRef<[u8]>) -> Result<Option<Session>, StoreError> {
        self.tx.get(&self.sp.sessions, id).map_err(unavailable)?.map(|v| decode_session(&v)).transpose()
    }

    fn put_session(&mut self, session: &Session) -> Result<(), StoreError> {
        self.tx.insert(&self.sp.sessions, session.id.0.as_bytes(), encode_session(session)?);
        Ok(())
    }

    fn apply_insert_user(&mut self, user: Box<User>) -> Result<InsertUser, StoreError> {
        let sp = self.sp;
        if let Some(id) = self.tx.get(&sp.users_by_ident, user.ident_hash.0).map_err(unavailable)? {
            let bytes = self
                .tx
                .get(&sp.users, &id)
                .map_err(unavailable)?
                .ok_or_else(|| corrupt("index names a missing user"))?;
            return Ok(InsertUser::Exists(Box::new(decode(&bytes)?)));
        }
        self.tx.insert(&sp.users, user.id.0.as_bytes(), encode(user.as_ref())?);
        self.tx.insert(&sp.users_by_ident, user.ident_hash.0, user.id.0.as_bytes());
        self.delta.users += 1;
        self.delta.verified += i64::from(user.verified);
        self.changed_users.push(*user);
        Ok(InsertUser::Inserted)
    }

    fn apply_update_user(&mut self, user: Box<User>) -> Result<(), StoreError> {
        let before = self.tx.get(&self.sp.users, user.id.0.as_bytes()).map_err(unavailable)?;
        let was_verified = before.map(|b| decode::<User>(&b)).transpose()?.map(|u| u.verified);
        self.delta.users += i64::from(was_verified.is_none());
        self.delta.verified += i64::from(user.verified) - i64::from(was_verified.unwrap_or(false));
        self.tx.insert(&self.sp.users, user.id.0.as_bytes(), encode(user.as_ref())?);
        self.changed_users.push(*user);
        Ok(())
    }

    fn apply_purge_unverified(&mut self, ids: &[UserId], created_before: Timestamp) -> Result<usize, StoreError> {
        let mut purged = 0;
        for id in ids {
            let Some(bytes) = self.tx.get(&self.sp.users, id.0.as_bytes()).map_err(unavailable)? else { continue };
            let user: User = decode(&bytes)?;
            if user.verified || user.created_at >= created_before {
                continue;
            }
            self.tx.remove(&self.sp.users, id.0.as_bytes());
            self.tx.remove(&self.sp.users_by_ident, user.ident_hash.0);
            self.delta.users -= 1;
            self.removed_users.push(user.ident_hash);
            purged += 1;
        }
        Ok(purged)
    }

    fn apply_insert_session(&mut self, session: &Session) -> Result<(), StoreError> {
        self.put_session(session)?;
        let key = pair_key(session.user_id.0.as_bytes(), session.id.0.as_bytes());
        self.tx.insert(&self.sp.sessions_by_user, key, []);
        if session.revoked_at.is_none() {
            self.delta.session(session, 1);
        }
        Ok(())
    }

    /// Stages the event for the trail with its personal fields sealed under its subject's
    /// key; a key drawn for it is stored in the same commit.
    fn apply_append_audit(&mut self, event: &mut AuditEvent) -> Result<(), StoreError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let subject = Subject::of(event);
        let drawn = self.keys.draw(&subject, event.at);
        if drawn.fresh {
            self.tx.insert(
                &self.sp.subject_keys,
                subject_key_key(&subject, &drawn.key.id),
                subject_key_value(&drawn.key.key, drawn.until),
            );
            self.drawn.push(subject);
        }
        let sealed = shred::seal(event, &subject, &drawn.key);
        self.staged.push_event(seq, event, sealed.as_deref())
    }

    fn apply_rotate_refresh(
        &mut self,
        id: SessionId,
        presented: &[u8; 32],
        next: &[u8; 32],
        now: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let Some(mut session) = self.session(id.0.as_bytes())? else { return Ok(Rotation::Inactive) };
        Ok(match session.rotate(presented, next, now) {
            RotationVerdict::Rotated => {
                self.put_session(&session)?;
                Rotation::Rotated(Box::new(session))
            }
            RotationVerdict::Reused => {
                self.put_session(&session)?;
                self.delta.session(&session, -1);
                Rotation::Reused(Box::new(session))
            }
            RotationVerdict::Mismatch => Rotation::Mismatch,
            RotationVerdict::Inactive => Rotation::Inactive,
        })
    }

    /// Ends `session` now for `reason`.
    fn revoke(&mut self, mut session: Session, reason: RevokeReason, now: Timestamp) -> Result<(), StoreError> {
        session.revoked_at = Some(now);
        session.revoke_reason = Some(reason);
        self.put_session(&session)?;
        self.delta.session(&session, -1);
        Ok(())
    }

    fn apply_revoke_session(
        &mut self,
        id: SessionId,
        reason: RevokeReason,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        match self.session(id.0.as_bytes())? {
            Some(session) if session.is_active(now) => self.revoke(session, reason, now).map(|()| true),
            _ => Ok(false),
        }
    }

    fn apply_revoke_user_sessions(
        &mut self,
        user: UserId,
        opener: Option<uuid::Uuid>,
        reason: RevokeReason,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for sid in ids_with_prefix(&self.tx, &self.sp.sessions_by_user, user.0.as_bytes())? {
            let Some(session) = self.session(sid)? else { continue };
            if !session.is_active(now) || opener.is_some_and(|o| session.method.opener() != Some(o)) {
                continue;
            }
            self.revoke(session, reason, now)?;
            n += 1;
        }
        Ok(n)
    }

    fn apply_insert_device(&mut self, device: &Device, max_active: usize) -> Result<InsertDevice, StoreError> {
        let sp = self.sp;
        let mut active = 0;
        let mut duplicate = None;
        let prefix = device.user_id.0.as_bytes();
        for existing in indexed(&self.tx, &sp.devices_by_user, &sp.devices, prefix, "device", decode::<Device>)? {
            if existing.is_active() {
                active += 1;
                if existing.key == device.key {
                    duplicate = Some(existing.id);
                }
            }
        }
        if let Some(id) = duplicate {
            return Ok(InsertDevice::DuplicateKey(id));
        }
        if active >= max_active {
            return Ok(InsertDevice::LimitReached { max: max_active });
        }
        self.tx.insert(&sp.devices, device.id.0.as_bytes(), encode(device)?);
        self.tx.insert(&sp.devices_by_user, pair_key(device.user_id.0.as_bytes(), device.id.0.as_bytes()), []);
        Ok(InsertDevice::Inserted)
    }

    fn apply_revoke_device(
        &mut self,
        user: UserId,
        id: DeviceId,
        now: Timestamp,
    ) -> Result<Option<Device>, StoreError> {
        let current: Option<Device> =
            self.tx.get(&self.sp.devices, id.0.as_bytes()).map_err(unavailable)?.map(|v| decode(&v)).transpose()?;
        match current {
            Some(mut d) if d.user_id == user => {
                if d.revoked_at.is_none() {
                    d.revoked_at = Some(now);
                    self.tx.insert(&self.sp.devices, id.0.as_bytes(), encode(&d)?);
                }
                Ok(Some(d))
            }
            _ => Ok(None),
        }
    }

    /// Deletes the account, its sessions and devices with their index entries, and the keys
    /// of its subjects (the audit trail's personal fields about it cannot be read again).
    fn apply_erase_user(&mut self, id: UserId) -> Result<Option<Erased>, StoreError> {
        let sp = self.sp;
        let Some(bytes) = self.tx.get(&sp.users, id.0.as_bytes()).map_err(unavailable)? else { return Ok(None) };
        let user: User = decode(&bytes)?;
        let mut erased = Erased::default();
        for sid in ids_with_prefix(&self.tx, &sp.sessions_by_user, id.0.as_bytes())? {
            if let Some(session) = self.session(sid)? {
                if session.revoked_at.is_none() {
                    self.delta.session(&session, -1);
                }
                self.tx.remove(&sp.sessions, sid);
                erased.sessions += 1;
            }
            self.tx.remove(&sp.sessions_by_user, pair_key(id.0.as_bytes(), &sid));
        }
        for did in ids_with_prefix(&self.tx, &sp.devices_by_user, id.0.as_bytes())? {
            self.tx.remove(&sp.devices, did);
            self.tx.remove(&sp.devices_by_user, pair_key(id.0.as_bytes(), &did));
            erased.devices += 1;
        }
        let mut keys = Vec::new();
        for subject in Subject::of_account(&user.ident_hash, id) {
            for guard in self.tx.prefix(&sp.subject_keys, subject.0) {
                keys.push(guard.key().map_err(unavailable)?);
            }
        }
        for key in keys {
            self.tx.remove(&sp.subject_keys, key);
            erased.audit_keys += 1;
        }
        for subject in Subject::of_account(&user.ident_hash, id) {
            self.keys.forget(&subject);
        }
        self.tx.remove(&sp.users, id.0.as_bytes());
        self.tx.remove(&sp.users_by_ident, user.ident_hash.0);
        self.delta.users -= 1;
        self.delta.verified -= i64::from(user.verified);
        self.removed_users.push(user.ident_hash);
        Ok(Some(erased))
    }

    /// Deletes what a sweep found, re-checking sessions, devices and keys (they can change
    /// between the snapshot and now; audit events cannot).
    fn apply_sweep(&mut self, plan: &SweepPlan) -> Result<Swept, StoreError> {
        let sp = self.sp;
        let c = &plan.cutoffs;
        let mut swept = Swept::default();
        for id in &plan.sessions {
            let Some(session) = self.session(id.0.as_bytes())? else { continue };
            if !c.session_ended_before(&session) {
                continue;
            }
            self.tx.remove(&sp.sessions, id.0.as_bytes());
            self.tx.remove(&sp.sessions_by_user, pair_key(session.user_id.0.as_bytes(), id.0.as_bytes()));
            swept.sessions += 1;
        }
        for id in &plan.devices {
            let Some(bytes) = self.tx.get(&sp.devices, id.0.as_bytes()).map_err(unavailable)? else { continue };
            let device: Device = decode(&bytes)?;
            if !c.device_removed_before(&device) {
                continue;
            }
            self.tx.remove(&sp.devices, id.0.as_bytes());
            self.tx.remove(&sp.devices_by_user, pair_key(device.user_id.0.as_bytes(), id.0.as_bytes()));
            swept.devices += 1;
        }
        for key in &plan.subject_keys {
            let Some(value) = self.tx.get(&sp.subject_keys, key).map_err(unavailable)? else { continue };
            if parse_subject_key(&value)?.1 >= c.audit {
                continue;
            }
            self.tx.remove(&sp.subject_keys, key.as_slice());
            swept.subject_keys += 1;
        }
        Ok(swept)
    }

    fn passkey(&self, id: &[u8]) -> Result<Option<Passkey>, StoreError> {
        self.tx.get(&self.sp.passkeys, id).map_err(unavailable)?.map(|v| decode(&v)).transpose()
    }

    fn apply_insert_passkey(&mut self, passkey: &Passkey, max: usize) -> Result<InsertPasskey, StoreError> {
        if self.passkey(&passkey.id.0)?.is_some() {
            return Ok(InsertPasskey::Exists);
        }
        if passkeys_of(&self.tx, self.sp, &passkey.user_id)?.len() >= max {
            return Ok(InsertPasskey::LimitReached { max });
        }
        self.tx.insert(&self.sp.passkeys, &passkey.id.0, encode(passkey)?);
        self.tx.insert(&self.sp.passkeys_by_user, passkey_index_key(passkey), []);
        Ok(InsertPasskey::Inserted)
    }

    fn apply_record_passkey_use(&mut self, used: &Passkey, now: Timestamp) -> Result<PasskeyUse, StoreError> {
        let Some(mut stored) = self.passkey(&used.id.0)? else { return Ok(PasskeyUse::Missing) };
        let counting = used.sign_count != 0 || stored.sign_count != 0;
        if counting && used.sign_count <= stored.sign_count {
            return Ok(PasskeyUse::Regressed { stored: stored.sign_count });
        }
        stored.sign_count = used.sign_count;
        stored.backup_eligible = used.backup_eligible;
        stored.backup_state = used.backup_state;
        stored.credential.clone_from(&used.credential);
        stored.last_used_at = Some(now);
        self.tx.insert(&self.sp.passkeys, &stored.id.0, encode(&stored)?);
        Ok(PasskeyUse::Recorded)
    }

    fn apply_delete_passkey(&mut self, user: UserId, id: &CredentialId) -> Result<bool, StoreError> {
        match self.passkey(&id.0)? {
            Some(p) if p.user_id == user => {
                self.tx.remove(&self.sp.passkeys, &p.id.0);
                self.tx.remove(&self.sp.passkeys_by_user, passkey_index_key(&p));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn apply_delete_user_passkeys(&mut self, user: UserId) -> Result<usize, StoreError> {
        let all = passkeys_of(&self.tx, self.sp, &user)?;
        for p in &all {
            self.tx.remove(&self.sp.passkeys, &p.id.0);
            self.tx.remove(&self.sp.passkeys_by_user, passkey_index_key(p));
        }
        Ok(all.len())
    }
}
