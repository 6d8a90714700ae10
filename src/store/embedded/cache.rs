//! Accounts by identifier hash, in memory: every send and verify looks its account up, and
//! two LSM point reads (index, then record) cost more than the rest of the lookup path.
//!
//! Only the writer thread knows when an account changes, so it updates the cache after each
//! commit. A reader that missed may fill the cache with what it read, but only if no account
//! changed since it started reading (`epoch`): checking and filling happen under the same lock
//! the writer holds while it updates and bumps the epoch, so a stale read can never overwrite a
//! newer value.
//!
//! Most entries are "no account" (every number a code is asked for is looked up), and the
//! cache keeps slots for half as many forgotten keys again (its ghosts), each as large as a
//! resident entry: so an account is kept behind an `Arc`, and a slot is 40 bytes instead of
//! the ~210 an inline `Option<User>` took.

use std::sync::Arc;

use otpd_actors::ports::User;
use otpd_actors::rules::keys::IdentHash;
use parking_lot::Mutex;

pub(super) struct UserCache {
    pub entries: Entries,
    epoch: Mutex<u64>,
}

/// Accounts (or their absence) by identifier hash. Anyone in the store may read; only
/// [`UserCache::fill`] and [`UserCache::apply`] write, under the epoch lock (`insert` is private).
pub(super) struct Entries(quick_cache::sync::Cache<[u8; 16], Option<Arc<User>>>);

impl Entries {
    /// The cached answer for `ident`: `Some(None)` when it has no account.
    pub fn get(&self, ident: &[u8; 16]) -> Option<Option<Arc<User>>> {
        self.0.get(ident)
    }

    fn insert(&self, ident: [u8; 16], user: Option<Arc<User>>) {
        self.0.insert(ident, user);
    }
}

impl UserCache {
    pub fn new(capacity: usize) -> Self {
        UserCache { entries: Entries(quick_cache::sync::Cache::new(capacity.max(1))), epoch: Mutex::new(0) }
    }

    pub fn epoch(&self) -> u64 {
        *self.epoch.lock()
    }

    pub fn fill(&self, started: u64, ident: [u8; 16], value: &Option<Arc<User>>) {
        let epoch = self.epoch.lock();
        if *epoch == started {
            self.entries.insert(ident, value.clone());
        }
    }

    /// After a commit: the accounts the batch created or changed, and those it deleted.
    pub fn apply(&self, changed: Vec<User>, removed: &[IdentHash]) {
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let mut epoch = self.epoch.lock();
        for user in changed {
            self.entries.insert(user.ident_hash.0, Some(Arc::new(user)));
        }
        for ident in removed {
            self.entries.insert(ident.0, None);
        }
        *epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use otpd_actors::rules::clock::Timestamp;
    use otpd_actors::rules::ids::UserId;
    use otpd_actors::rules::keys::IdentHash;

    use super::*;

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
        let newer = account("Newer");
        // A reader starts, the writer commits a change, then the reader offers what it read.
        let started = cache.epoch();
        cache.apply(vec![newer.clone()], &[]);
        cache.fill(started, [4; 16], &Some(Arc::new(account("Older"))));
        assert_eq!(cache.entries.get(&[4; 16]), Some(Some(Arc::new(newer))));
        // A reader that started after the change may fill (here: another identifier).
        let started = cache.epoch();
        cache.fill(started, [5; 16], &None);
        assert_eq!(cache.entries.get(&[5; 16]), Some(None));
    }
}
