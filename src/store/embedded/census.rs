//! The census (users, verified users, active sessions) answered from counters, not by
//! scanning.
//!
//! On open a background thread counts what a snapshot taken before the writer starts holds
//! (about a microsecond per record: a second or two for a million users and a million
//! sessions, off the request path), and the writer adds each committed batch's changes.
//! Active sessions are kept as counts per minute of expiry (at most `session_ttl` / 1 min
//! entries, ~43 200 for 30 days), so expiry needs no write and a session stops counting within
//! a minute of its `expires_at`. Cost on the write path: one extra read of the old record per
//! `update_user` (to see `verified` change) and a short lock per batch that creates or revokes
//! sessions.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use fjall::{Readable, Snapshot};
use otpd_actors::ports::{Census, Session, StoreError, User};
use otpd_actors::rules::clock::Timestamp;
use parking_lot::Mutex;

use super::codec::{Spaces, decode, decode_session, unavailable};

/// Users, verified users and active sessions, kept up to date by the writer. Signed: a
/// batch's changes may arrive before the baseline count they apply to.
#[derive(Default)]
pub(super) struct Counts {
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
pub(super) struct CountsDelta {
    pub users: i64,
    pub verified: i64,
    sessions: Vec<(u64, i64)>,
}

impl CountsDelta {
    /// `n` more (or, negative, fewer) active sessions expiring when `session` does.
    pub fn session(&mut self, session: &Session, n: i64) {
        self.sessions.push((session.expires_at.as_millis() / MINUTE_MS, n));
    }
}

impl Counts {
    pub fn apply(&self, d: CountsDelta) {
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
    pub fn count_baseline(&self, snap: &Snapshot, sp: &Spaces) -> Result<(), StoreError> {
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

    pub fn census(&self, now: Timestamp) -> Option<Census> {
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
