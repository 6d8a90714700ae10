//! The audit trail: each event is written to two day-bucketed partitions, by identifier hash
//! and by trace id, with the retention as TTL; `audit_days` lists which days each identifier
//! and trace id has events on, so a lookup reads only those buckets, newest first.
//!
//! # Why day buckets
//!
//! A partition per identifier (or per trace id, which a client may reuse in `X-Request-Id`)
//! would grow for as long as the identifier is used. A day bucket holds one identifier's
//! events of one day, so its size is bounded by that day's traffic (and the per-identifier
//! rate limits), and the TTL removes whole buckets with time-window compaction.
//!
//! # Not serialising the hot path
//!
//! `append` is awaited by every request (an answer the client saw is always in the trail), so
//! its writes go out concurrently, not one after another: the event by trace and by identifier,
//! and the day-index rows, as independent single-partition inserts — no multi-partition batch
//! (its batch log would add a round trip and a write to every event). Many requests append at
//! once over the driver's shared, pipelined connections; nothing queues behind another event.
//! The day-index row is written once per (identifier or trace id, day) per node: a small cache
//! remembers which it wrote recently (the write is idempotent, so forgetting is harmless).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use otpd_actors::ports::{AuditEvent, AuditLog, StoreError};
use otpd_actors::rules::audit::AuditOutcome;
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::UserId;
use otpd_actors::rules::keys::IdentHash;
use parking_lot::Mutex;
use scylla::DeserializeRow;
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use super::cql::Stmt;
use super::{ScyllaStore, StoreFailure, cql_ts, from_cql_ts, unset_if_none};
use crate::store::shred::{self, Subject};

const MS_PER_DAY: u64 = 86_400_000;

/// The day bucket of an instant: whole UTC days since 1970-01-01.
pub fn day_of(at: Timestamp) -> i32 {
    i32::try_from(at.as_millis() / MS_PER_DAY).unwrap_or(i32::MAX)
}

/// Which index an `audit_days` row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Identifier,
    Trace,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Identifier => "ident",
            Scope::Trace => "trace",
        }
    }
}

/// Day-index rows this node wrote recently: skips rewriting the same row on every event.
pub struct DayIndexCache {
    written: Mutex<HashMap<[u8; 16], Instant>>,
    capacity: usize,
    /// After this long a row is written again (its TTL is counted from the last write).
    refresh: Duration,
}

impl Default for DayIndexCache {
    fn default() -> Self {
        DayIndexCache { written: Mutex::new(HashMap::new()), capacity: 200_000, refresh: Duration::from_secs(6 * 3600) }
    }
}

impl DayIndexCache {
    fn key(scope: Scope, key: &[u8], day: i32) -> [u8; 16] {
        let mut h = blake3::Hasher::new();
        h.update(scope.as_str().as_bytes()).update(&[0]).update(key).update(&day.to_be_bytes());
        h.finalize().as_bytes()[..16].try_into().expect("16 of 32 bytes")
    }

    /// Whether the row needs writing now.
    pub fn needs(&self, scope: Scope, key: &[u8], day: i32, now: Instant) -> bool {
        self.written
            .lock()
            .get(&Self::key(scope, key, day))
            .is_none_or(|at| now.saturating_duration_since(*at) >= self.refresh)
    }

    /// Records a successful write.
    pub fn wrote(&self, scope: Scope, key: &[u8], day: i32, now: Instant) {
        let mut written = self.written.lock();
        if written.len() >= self.capacity {
            // Forgetting only costs a redundant idempotent write.
            written.clear();
        }
        written.insert(Self::key(scope, key, day), now);
    }
}

/// One event as the `audit_by_*` tables return it.
#[derive(Debug, Clone, DeserializeRow)]
pub struct EventRow {
    pub at: CqlTimestamp,
    pub event_id: Uuid,
    pub trace_id: String,
    pub api: String,
    pub step: String,
    pub outcome: String,
    pub message: String,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub ident_hash: Option<Vec<u8>>,
    pub user_id: Option<Uuid>,
}

fn outcome_from_str(s: &str) -> Option<AuditOutcome> {
    [AuditOutcome::Ok, AuditOutcome::Rejected, AuditOutcome::Limited, AuditOutcome::Failed]
        .into_iter()
        .find(|o| o.as_str() == s)
}

impl EventRow {
    pub fn into_event(self) -> Result<AuditEvent, StoreFailure> {
        const WHAT: &str = "read audit";
        let ident_hash = match self.ident_hash {
            None => None,
            Some(b) => {
                Some(IdentHash(b.try_into().map_err(|_| StoreFailure::decode(WHAT, &"ident_hash is not 16 bytes"))?))
            }
        };
        Ok(AuditEvent {
            at: from_cql_ts(self.at.0, WHAT)?,
            outcome: outcome_from_str(&self.outcome)
                .ok_or_else(|| StoreFailure::decode(WHAT, &format!("unknown outcome {:?}", self.outcome)))?,
            trace_id: self.trace_id.into(),
            api: self.api.parse().map_err(|e| StoreFailure::decode(WHAT, &e))?,
            step: self.step.parse().map_err(|e| StoreFailure::decode(WHAT, &e))?,
            message: self.message.into(),
            client_ip: self.client_ip,
            user_agent: self.user_agent.map(Into::into),
            ident_hash,
            user_id: self.user_id.map(UserId),
        })
    }
}

impl ScyllaStore {
    async fn index_day(&self, scope: Scope, key: &[u8], day: i32) -> Result<(), StoreFailure> {
        let now = Instant::now();
        if !self.audit_days.needs(scope, key, day, now) {
            return Ok(());
        }
        self.run(&self.cql.insert_audit_day, (scope.as_str(), key, day), "index audit day").await?;
        self.audit_days.wrote(scope, key, day, now);
        Ok(())
    }

    /// The newest `limit` events under one index, newest first.
    async fn audit_lookup(
        &self,
        scope: Scope,
        key: &[u8],
        events: &Stmt,
        bucket_key: BucketKey<'_>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreFailure> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut days: Vec<(i32,)> =
            self.rows(&self.cql.audit_days, (scope.as_str(), key), "read audit days", usize::MAX).await?;
        days.sort_unstable_by(|a, b| b.cmp(a));
        days.dedup();
        let mut out: Vec<EventRow> = Vec::new();
        for (day,) in days {
            let mut rows: Vec<EventRow> = match bucket_key {
                BucketKey::Blob(k) => self.rows(events, (k, day), "read audit", limit - out.len()).await?,
                BucketKey::Text(k) => self.rows(events, (k, day), "read audit", limit - out.len()).await?,
            };
            rows.sort_by_key(|r| std::cmp::Reverse((r.at.0, r.event_id)));
            out.extend(rows);
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        let mut events: Vec<AuditEvent> = out.into_iter().map(EventRow::into_event).collect::<Result<_, _>>()?;
        let mut keys: HashMap<(Subject, [u8; shred::KEY_ID_LEN]), Option<[u8; shred::KEY_LEN]>> = HashMap::new();
        for event in &mut events {
            let Some(sealed) = event.user_agent.as_deref().and_then(sealed_bytes).transpose()? else { continue };
            event.user_agent = None;
            let subject = Subject::of(event);
            let id = shred::key_id(&sealed).map_err(|e| StoreFailure::decode("read audit", &e))?;
            let key = match keys.get(&(subject, id)) {
                Some(key) => *key,
                None => {
                    let rows: Vec<(Vec<u8>,)> = self
                        .rows(&self.cql.subject_key, (subject.0.as_slice(), id.as_slice()), "read audit key", 1)
                        .await?;
                    let key = rows.into_iter().next().and_then(|(k,)| <[u8; shred::KEY_LEN]>::try_from(k).ok());
                    keys.insert((subject, id), key);
                    key
                }
            };
            shred::open(event, &subject, key.as_ref(), &sealed).map_err(|e| StoreFailure::decode("read audit", &e))?;
        }
        Ok(events)
    }
}

/// Marks sealed personal fields in the `user_agent` column: a control character, which no
/// HTTP header value can hold, so no user agent in clear starts with it. (Keeping them there
/// needed no schema change of the audit tables, which every node writes.)
const SEALED: &str = "\u{1}s1:";

fn sealed_text(sealed: &[u8]) -> String {
    use base64::Engine as _;
    format!("{SEALED}{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(sealed))
}

/// The sealed bytes a `user_agent` value holds, if it holds any.
fn sealed_bytes(text: &str) -> Option<Result<Vec<u8>, StoreFailure>> {
    use base64::Engine as _;
    let b64 = text.strip_prefix(SEALED)?;
    Some(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .map_err(|e| StoreFailure::decode("read audit", &format!("sealed fields: {e}"))),
    )
}

#[derive(Clone, Copy)]
enum BucketKey<'a> {
    Blob(&'a [u8]),
    Text(&'a str),
}

#[async_trait]
impl AuditLog for ScyllaStore {
    /// The events' writes go out together, as separate appends from separate tasks would.
    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        futures::future::try_join_all(events.into_iter().map(|e| self.append(e))).await.map(drop)
    }

    async fn append(&self, mut e: AuditEvent) -> Result<(), StoreError> {
        let day = day_of(e.at);
        // The personal fields go sealed in `user_agent` (see `SEALED`), under the subject's
        // key, which is written beside the event every time (blind and idempotent).
        let subject = Subject::of(&e);
        let key = self.keys.key_for(&subject);
        let sealed = shred::seal(&mut e, &subject, &key).map(|b| sealed_text(&b));
        if let Some(text) = &sealed {
            e.user_agent = Some(text.as_str().into());
        }
        let event_id = Uuid::new_v4();
        let at = cql_ts(e.at);
        let ident = e.ident_hash.map(|h| h.0);
        let user = e.user_id.map(|u| u.0);
        let by_trace = self.run(
            &self.cql.insert_audit_trace,
            (
                e.trace_id.as_str(),
                day,
                at,
                event_id,
                unset_if_none(ident.as_ref().map(|h| h.as_slice())),
                e.api.as_str(),
                e.step.as_str(),
                e.outcome.as_str(),
                &*e.message,
                unset_if_none(e.client_ip),
                unset_if_none(e.user_agent.as_deref()),
                unset_if_none(user),
            ),
            "append audit event",
        );
        let by_ident = async {
            let Some(h) = &ident else { return Ok(()) };
            let values = (
                h.as_slice(),
                day,
                at,
                event_id,
                e.trace_id.as_str(),
                e.api.as_str(),
                e.step.as_str(),
                e.outcome.as_str(),
                &*e.message,
                unset_if_none(e.client_ip),
                unset_if_none(e.user_agent.as_deref()),
                unset_if_none(user),
            );
            self.run(&self.cql.insert_audit_ident, values, "append audit event").await.map(|_| ())
        };
        let trace_day = self.index_day(Scope::Trace, e.trace_id.as_bytes(), day);
        let ident_day = async {
            match &ident {
                Some(h) => self.index_day(Scope::Identifier, h, day).await,
                None => Ok(()),
            }
        };
        let subject_key = async {
            let values = (subject.0.as_slice(), key.id.as_slice(), key.key.as_slice());
            self.run(&self.cql.insert_subject_key, values, "write audit key").await.map(|_| ())
        };
        let (a, b, c, d, k) = tokio::join!(by_trace, by_ident, trace_day, ident_day, subject_key);
        a?;
        b?;
        c?;
        d?;
        k?;
        Ok(())
    }

    async fn by_identifier(&self, ident: &IdentHash, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let key = ident.0.as_slice();
        Ok(self.audit_lookup(Scope::Identifier, key, &self.cql.audit_of_ident_day, BucketKey::Blob(key), limit).await?)
    }

    async fn by_trace(&self, trace_id: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let key = trace_id.as_bytes();
        Ok(self.audit_lookup(Scope::Trace, key, &self.cql.audit_of_trace_day, BucketKey::Text(trace_id), limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_utc_days() {
        assert_eq!(day_of(Timestamp::from_millis(0)), 0);
        assert_eq!(day_of(Timestamp::from_millis(MS_PER_DAY - 1)), 0, "23:59:59.999 is still day 0");
        assert_eq!(day_of(Timestamp::from_millis(MS_PER_DAY)), 1, "midnight starts the next bucket");
        // 2023-11-14T22:13:20Z is day 19675 (2023-11-14).
        assert_eq!(day_of(Timestamp::from_millis(1_700_000_000_000)), 19_675);
        // 2026-01-01T00:00:00Z.
        assert_eq!(day_of(Timestamp::from_millis(1_767_225_600_000)), 20_454);
        assert_eq!(day_of(Timestamp::from_millis(u64::MAX)), i32::MAX, "saturates instead of wrapping");
    }

    #[test]
    fn the_day_index_is_written_once_per_key_and_day_then_refreshed() {
        let cache = DayIndexCache::default();
        let t0 = Instant::now();
        assert!(cache.needs(Scope::Trace, b"t-1", 10, t0));
        cache.wrote(Scope::Trace, b"t-1", 10, t0);
        assert!(!cache.needs(Scope::Trace, b"t-1", 10, t0 + Duration::from_secs(60)));
        assert!(cache.needs(Scope::Trace, b"t-1", 11, t0), "another day");
        assert!(cache.needs(Scope::Identifier, b"t-1", 10, t0), "another scope");
        assert!(cache.needs(Scope::Trace, b"t-1", 10, t0 + Duration::from_secs(6 * 3600)), "refreshed later");
        let small = DayIndexCache { capacity: 2, ..DayIndexCache::default() };
        small.wrote(Scope::Trace, b"a", 1, t0);
        small.wrote(Scope::Trace, b"b", 1, t0);
        small.wrote(Scope::Trace, b"c", 1, t0);
        assert!(small.written.lock().len() <= 2, "bounded");
        assert!(!small.needs(Scope::Trace, b"c", 1, t0));
    }

    #[test]
    fn outcomes_round_trip_by_name() {
        for o in [AuditOutcome::Ok, AuditOutcome::Rejected, AuditOutcome::Limited, AuditOutcome::Failed] {
            assert_eq!(outcome_from_str(o.as_str()), Some(o));
        }
        assert_eq!(outcome_from_str("maybe"), None);
    }
}
