//! Sessions: one partition of write-once rows per session, so refresh rotation is a claim.
//!
//! | `slot` | row | written by |
//! | --- | --- | --- |
//! | [`BASE_SLOT`] (`i32::MAX`) | user, method, device, times, client, the first refresh digest (generation 0) | `insert_session`, plain |
//! | [`REVOKED_SLOT`] | revocation time and reason | `INSERT … IF NOT EXISTS`: the first revocation wins |
//! | *g* ≥ 1 | the refresh digest of generation *g* and when it was issued | `INSERT … IF NOT EXISTS`: of rotations racing from *g − 1*, one wins |
//!
//! The rows are clustered by `slot` descending, so `LIMIT 35` returns the base and revocation
//! rows and the newest 33 generations: the current digest and the 32 retired ones
//! ([`RETIRED_REFRESH_DIGESTS`]). A session is assembled from them by [`assemble`], and
//! rotation applies the same [`Session::rotate`] rule as every store, then claims the next
//! slot. The loser of a race re-reads (at serial consistency, which finishes any Paxos round
//! in flight), finds its token retired, and claims the revocation row: reuse detection.
//!
//! Every row carries the same TTL (session lifetime + a day); rows written later live a little
//! longer than the base row, and a partition without its base row reads as no session.

use std::net::IpAddr;

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use otpd_actors::ports::{
    AuditEvent, AuditLog, AuthMethod, RETIRED_REFRESH_DIGESTS, RevokeReason, Rotation, RotationVerdict, Session,
    SessionStore, StoreError,
};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::{DeviceId, SessionId, UserId};
use scylla::DeserializeRow;
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use super::cql::SESSION_ROWS;
use super::{ScyllaStore, StoreFailure, cql_ts, unset_if_none};

pub const BASE_SLOT: i32 = i32::MAX;
pub const REVOKED_SLOT: i32 = i32::MAX - 1;

/// Claims on one session that may race before one of them gives up.
const CLAIM_ROUNDS: usize = 4;
/// Sessions revoked or read at once for one user.
const FAN_OUT: usize = 16;

/// One row of the `sessions` partition.
#[derive(Debug, Clone, Default, PartialEq, DeserializeRow)]
pub struct SessionRow {
    pub slot: i32,
    pub user_id: Option<Uuid>,
    pub method: Option<String>,
    pub device_id: Option<Uuid>,
    pub created_at: Option<CqlTimestamp>,
    pub expires_at: Option<CqlTimestamp>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub refresh_digest: Option<Vec<u8>>,
    pub changed_at: Option<CqlTimestamp>,
    pub revoke_reason: Option<String>,
}

fn reason_from_str(s: &str) -> Option<RevokeReason> {
    [
        RevokeReason::Logout,
        RevokeReason::LogoutAll,
        RevokeReason::RefreshTokenReuse,
        RevokeReason::DeviceRevoked,
        RevokeReason::PasskeyDeleted,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

/// Builds the session from the rows of its partition (any order, possibly more than needed).
/// `Ok(None)`: no base row (never written, or expired by its TTL).
pub fn assemble(id: SessionId, mut rows: Vec<SessionRow>) -> Result<Option<Session>, String> {
    rows.sort_by_key(|r| std::cmp::Reverse(r.slot));
    let Some(base) = rows.iter().find(|r| r.slot == BASE_SLOT) else { return Ok(None) };
    let missing = |what: &str| format!("session {} has no {what}", id.0);
    let ts = |t: Option<CqlTimestamp>, what: &str| -> Result<Timestamp, String> {
        let ms = t.ok_or_else(|| missing(what))?.0;
        u64::try_from(ms).map(Timestamp::from_millis).map_err(|_| format!("{what} before 1970"))
    };
    let digest = |r: &SessionRow| -> Result<[u8; 32], String> {
        r.refresh_digest
            .as_deref()
            .ok_or_else(|| missing("refresh digest"))?
            .try_into()
            .map_err(|_| format!("session {}: refresh digest of slot {} is not 32 bytes", id.0, r.slot))
    };
    let method = match (base.method.as_deref(), base.device_id) {
        (Some("otp"), _) => AuthMethod::Otp,
        (Some("device"), Some(d)) => AuthMethod::Device(DeviceId(d)),
        (Some("passkey"), Some(p)) => AuthMethod::Passkey(otpd_actors::rules::passkey::PasskeyRef(p)),
        (Some("passkey"), None) => AuthMethod::PasskeyUnnamed,
        (m, _) => return Err(format!("session {}: unknown method {m:?}", id.0)),
    };
    let mut session = Session::new(
        id,
        UserId(base.user_id.ok_or_else(|| missing("user"))?),
        digest(base)?,
        method,
        ts(base.created_at, "creation time")?,
        ts(base.expires_at, "expiry")?,
    );
    session.client_ip = base.client_ip;
    session.user_agent = base.user_agent.clone();

    // Generations, newest first: rotation rows, then the base row as generation 0.
    let mut generations: Vec<(i32, [u8; 32], Option<CqlTimestamp>)> = Vec::new();
    for r in rows.iter().filter(|r| (1..REVOKED_SLOT).contains(&r.slot)).take(RETIRED_REFRESH_DIGESTS + 1) {
        generations.push((r.slot, digest(r)?, r.changed_at));
    }
    if generations.len() <= RETIRED_REFRESH_DIGESTS {
        generations.push((0, session.refresh_digest, None));
    }
    let (current, current_digest, refreshed) = generations[0];
    if generations.windows(2).any(|w| w[0].0 != w[1].0 + 1) {
        return Err(format!("session {}: refresh generations are not contiguous", id.0));
    }
    session.refresh_digest = current_digest;
    session.generation = u32::try_from(current).map_err(|_| "negative generation".to_owned())?;
    session.refreshed_at = refreshed.map(|t| ts(Some(t), "refresh time")).transpose()?;
    session.retired_digests =
        generations[1..].iter().rev().map(|(_, d, _)| d[..16].try_into().expect("16 of 32 bytes")).collect();

    if let Some(revoked) = rows.iter().find(|r| r.slot == REVOKED_SLOT) {
        session.revoked_at = Some(ts(revoked.changed_at, "revocation time")?);
        session.revoke_reason = Some(
            revoked
                .revoke_reason
                .as_deref()
                .and_then(reason_from_str)
                .ok_or_else(|| format!("session {}: unknown revocation reason", id.0))?,
        );
    }
    Ok(Some(session))
}

fn contended(id: SessionId) -> StoreError {
    StoreError::Unavailable(format!("scylla: refresh rotation of session {} lost {CLAIM_ROUNDS} races", id.0))
}

impl ScyllaStore {
    async fn load_session(&self, id: SessionId, serial: bool) -> Result<Option<Session>, StoreFailure> {
        const WHAT: &str = "read session";
        let statement = if serial { &self.cql.select_session_serial } else { &self.cql.select_session };
        let rows: Vec<SessionRow> = self.rows(statement, (id.0,), WHAT, SESSION_ROWS).await?;
        assemble(id, rows).map_err(|e| StoreFailure::decode(WHAT, &e))
    }

    /// Claims `slot` of a session; `true` if this call wrote it.
    async fn claim_slot(
        &self,
        id: SessionId,
        slot: i32,
        digest: Option<&[u8; 32]>,
        at: Timestamp,
        reason: Option<RevokeReason>,
    ) -> Result<bool, StoreFailure> {
        let values = (
            id.0,
            slot,
            unset_if_none(digest.map(|d| d.as_slice())),
            cql_ts(at),
            unset_if_none(reason.map(RevokeReason::as_str)),
        );
        Ok(self.claim(&self.cql.claim_session_row, values, "claim session row").await?.applied)
    }

    async fn revoke_one(&self, id: SessionId, reason: RevokeReason, now: Timestamp) -> Result<bool, StoreFailure> {
        match self.load_session(id, false).await? {
            Some(s) if s.is_active(now) => self.claim_slot(id, REVOKED_SLOT, None, now, Some(reason)).await,
            _ => Ok(false),
        }
    }

    /// `(session, device)` of every session the user opened within the TTL.
    pub(super) async fn user_session_ids(&self, user: UserId) -> Result<Vec<(Uuid, Option<Uuid>)>, StoreFailure> {
        self.rows(&self.cql.sessions_of_user, (user.0,), "read sessions of user", usize::MAX).await
    }
}

#[async_trait]
impl SessionStore for ScyllaStore {
    /// The session, then its event: two round trips in a row, as before this method existed.
    /// (A logged batch across the two tables would make them atomic, at the cost of a batch
    /// log write on every sign-in; the event without its session cannot happen this way.)
    async fn open_session(&self, s: Session, event: AuditEvent) -> Result<(), StoreError> {
        self.insert_session(&s).await?;
        AuditLog::append(self, event).await
    }

    async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        if s.generation != 0 || s.revoked_at.is_some() || !s.retired_digests.is_empty() {
            return Err(StoreError::Corrupt("insert_session takes a new session (no rotation, not revoked)".into()));
        }
        // The `device_id` columns hold the opener: a device's id or a passkey's reference.
        let device = s.method.opener();
        let base = (
            s.id.0,
            BASE_SLOT,
            s.user_id.0,
            s.method.as_str(),
            unset_if_none(device),
            cql_ts(s.created_at),
            cql_ts(s.expires_at),
            unset_if_none(s.client_ip),
            unset_if_none(s.user_agent.as_deref()),
            s.refresh_digest.as_slice(),
        );
        // Two partitions, written concurrently: a multi-partition batch would cost a batch log.
        let (a, b) = tokio::join!(
            self.run(&self.cql.insert_session, base, "write session"),
            self.run(&self.cql.insert_session_index, (s.user_id.0, s.id.0, unset_if_none(device)), "index session"),
        );
        a?;
        b?;
        Ok(())
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.load_session(id, false).await?)
    }

    async fn rotate_refresh(
        &self,
        id: SessionId,
        presented: &[u8; 32],
        next: &[u8; 32],
        now: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let mut serial = false;
        let mut unknown = None;
        for _ in 0..CLAIM_ROUNDS {
            let Some(mut session) = self.load_session(id, serial).await? else { return Ok(Rotation::Inactive) };
            if serial && session.refresh_digest == *next {
                // A claim whose answer was lost (timeout) did apply: this rotation won.
                return Ok(Rotation::Rotated(Box::new(session)));
            }
            let generation = session.generation;
            match session.rotate(presented, next, now) {
                RotationVerdict::Inactive => return Ok(Rotation::Inactive),
                RotationVerdict::Mismatch => return Ok(Rotation::Mismatch),
                RotationVerdict::Rotated => {
                    let Some(slot) = i32::try_from(generation + 1).ok().filter(|s| *s < REVOKED_SLOT) else {
                        return Ok(Rotation::Inactive);
                    };
                    match self.claim_slot(id, slot, Some(next), now, None).await {
                        Ok(true) => return Ok(Rotation::Rotated(Box::new(session))),
                        Ok(false) => {}
                        Err(f) if f.uncertain => unknown = Some(f),
                        Err(f) => return Err(f.into()),
                    }
                }
                RotationVerdict::Reused => {
                    match self.claim_slot(id, REVOKED_SLOT, None, now, Some(RevokeReason::RefreshTokenReuse)).await {
                        Ok(true) => return Ok(Rotation::Reused(Box::new(session))),
                        Ok(false) => {}
                        Err(f) if f.uncertain => unknown = Some(f),
                        Err(f) => return Err(f.into()),
                    }
                    // Revoked meanwhile (by someone else, or by this claim if its answer was
                    // lost): still a replay, of a now revoked session.
                    return match self.load_session(id, true).await? {
                        Some(stored) if stored.revoked_at.is_some() => Ok(Rotation::Reused(Box::new(stored))),
                        Some(_) => Err(unknown.map_or_else(|| contended(id), StoreError::from)),
                        None => Ok(Rotation::Inactive),
                    };
                }
            }
            serial = true;
        }
        Err(unknown.map_or_else(|| contended(id), StoreError::from))
    }

    async fn revoke_session(&self, id: SessionId, reason: RevokeReason, now: Timestamp) -> Result<bool, StoreError> {
        Ok(self.revoke_one(id, reason, now).await?)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        opener: Option<Uuid>,
        reason: RevokeReason,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let ids = self.user_session_ids(user).await?;
        // The index row's `device_id` holds the session's opener (a device's or a passkey's).
        let targets = ids.into_iter().filter(|(_, o)| opener.is_none_or(|want| *o == Some(want)));
        let revoked: Vec<bool> = stream::iter(targets)
            .map(|(sid, _)| self.revoke_one(SessionId(sid), reason, now))
            .buffer_unordered(FAN_OUT)
            .try_collect()
            .await?;
        Ok(revoked.into_iter().filter(|r| *r).count())
    }

    async fn sessions_of_user(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        let ids = self.user_session_ids(user).await?;
        let mut sessions: Vec<Session> = stream::iter(ids)
            .map(|(sid, _)| self.load_session(SessionId(sid), false))
            .buffer_unordered(FAN_OUT)
            .try_filter_map(|s| async move { Ok(s) })
            .try_collect()
            .await?;
        // Index rows outlive nothing: a session whose base row is gone is skipped above.
        sessions.retain(|s| s.user_id == user);
        sessions.sort_by_key(|s| s.id);
        Ok(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000;

    fn base(id: Uuid) -> SessionRow {
        SessionRow {
            slot: BASE_SLOT,
            user_id: Some(id),
            method: Some("otp".into()),
            created_at: Some(CqlTimestamp(T)),
            expires_at: Some(CqlTimestamp(T + 3_600_000)),
            client_ip: Some(IpAddr::from([127, 0, 0, 1])),
            user_agent: Some("ua/1".into()),
            refresh_digest: Some(vec![0; 32]),
            ..SessionRow::default()
        }
    }

    fn rotation(g: i32) -> SessionRow {
        SessionRow {
            slot: g,
            refresh_digest: Some(vec![g as u8; 32]),
            changed_at: Some(CqlTimestamp(T + i64::from(g) * 1000)),
            ..SessionRow::default()
        }
    }

    #[test]
    fn a_fresh_session_is_its_base_row() {
        let (sid, uid) = (SessionId(Uuid::now_v7()), Uuid::now_v7());
        let s = assemble(sid, vec![base(uid)]).unwrap().unwrap();
        assert_eq!((s.generation, s.refresh_digest, s.refreshed_at), (0, [0; 32], None));
        assert!(s.retired_digests.is_empty() && s.revoked_at.is_none());
        assert_eq!(s.user_agent.as_deref(), Some("ua/1"));
        assert_eq!(assemble(sid, vec![rotation(1)]).unwrap(), None, "no base row: no session");
        assert_eq!(assemble(sid, vec![]).unwrap(), None);
    }

    #[test]
    fn rotations_give_the_current_digest_and_the_retired_window_in_any_row_order() {
        let (sid, uid) = (SessionId(Uuid::now_v7()), Uuid::now_v7());
        let rows = vec![rotation(2), base(uid), rotation(1), rotation(3)];
        let s = assemble(sid, rows).unwrap().unwrap();
        assert_eq!(s.generation, 3);
        assert_eq!(s.refresh_digest, [3; 32]);
        assert_eq!(s.refreshed_at, Some(Timestamp::from_millis((T + 3000) as u64)));
        assert_eq!(s.retired_digests, vec![[0; 16], [1; 16], [2; 16]], "oldest first, 16-byte prefixes");
    }

    #[test]
    fn only_the_newest_thirty_two_digests_are_retired() {
        let (sid, uid) = (SessionId(Uuid::now_v7()), Uuid::now_v7());
        let n = RETIRED_REFRESH_DIGESTS as i32 + 8;
        // What Scylla returns for LIMIT 35: base, newest 34 generations.
        let mut rows = vec![base(uid)];
        rows.extend((n - 33..=n).map(rotation));
        let s = assemble(sid, rows.clone()).unwrap().unwrap();
        assert_eq!(s.generation, n as u32);
        assert_eq!(s.retired_digests.len(), RETIRED_REFRESH_DIGESTS);
        assert_eq!(s.retired_digests[0], [(n - 32) as u8; 16]);
        assert_eq!(*s.retired_digests.last().unwrap(), [(n - 1) as u8; 16]);
        // Every generation (what the test server returns, ignoring LIMIT): same session.
        let mut all = vec![base(uid)];
        all.extend((1..=n).map(rotation));
        assert_eq!(assemble(sid, all).unwrap().unwrap(), s);
    }

    #[test]
    fn the_revocation_row_and_bad_rows() {
        let (sid, uid) = (SessionId(Uuid::now_v7()), Uuid::now_v7());
        let revoked = SessionRow {
            slot: REVOKED_SLOT,
            changed_at: Some(CqlTimestamp(T + 5000)),
            revoke_reason: Some("refresh_token_reuse".into()),
            ..SessionRow::default()
        };
        let s = assemble(sid, vec![base(uid), rotation(1), revoked.clone()]).unwrap().unwrap();
        assert_eq!(s.revoked_at, Some(Timestamp::from_millis((T + 5000) as u64)));
        assert_eq!(s.revoke_reason, Some(RevokeReason::RefreshTokenReuse));
        assert_eq!(s.refresh_digest, [1; 32], "revocation does not rotate");

        let gap = assemble(sid, vec![base(uid), rotation(1), rotation(3)]).unwrap_err();
        assert!(gap.contains("contiguous"), "{gap}");
        let mut short = base(uid);
        short.refresh_digest = Some(vec![1; 31]);
        assert!(assemble(sid, vec![short]).unwrap_err().contains("32 bytes"));
        let mut device = base(uid);
        device.method = Some("device".into());
        assert!(assemble(sid, vec![device.clone()]).is_err(), "a device session names its device");
        device.device_id = Some(Uuid::nil());
        assert_eq!(assemble(sid, vec![device]).unwrap().unwrap().method, AuthMethod::Device(DeviceId(Uuid::nil())));
        let mut passkey = base(uid);
        passkey.method = Some("passkey".into());
        let unnamed = assemble(sid, vec![passkey.clone()]).unwrap().unwrap().method;
        assert_eq!(unnamed, AuthMethod::PasskeyUnnamed, "written before sessions named their passkey");
        passkey.device_id = Some(Uuid::from_u128(7));
        let named = assemble(sid, vec![passkey]).unwrap().unwrap().method;
        assert_eq!(named, AuthMethod::Passkey(otpd_actors::rules::passkey::PasskeyRef(Uuid::from_u128(7))));
        let bad_reason = SessionRow { revoke_reason: Some("bored".into()), ..revoked };
        assert!(assemble(sid, vec![base(uid), bad_reason]).is_err());
    }
}
