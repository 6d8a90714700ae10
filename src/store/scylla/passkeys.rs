//! Passkeys: each user's passkeys are one document, `passkey_sets`, versioned like the device
//! sets (`devices.rs`): a change reads the newest version *v*, decides on it (the cap, the
//! counter rule) and claims *v + 1* with `INSERT … IF NOT EXISTS`; of changes racing from *v*
//! one wins and the others decide again on the winner's set. So the cap holds, and of two
//! logins with one counter one is recorded, however many nodes run them.
//!
//! `passkey_ids` maps a credential id to its user and makes the id unique across accounts: a
//! registration claims it (`IF NOT EXISTS`) before it claims the set, and gives it back if the
//! cap refuses. Deleting a passkey writes a set without it, deletes its id row, and deletes the
//! previous version of the set too, so no copy of a deleted passkey stays behind (a reader takes
//! the newest version only).

use async_trait::async_trait;
use otpd_actors::ports::{InsertPasskey, Passkey, PasskeyStore, PasskeyUse, StoreError};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::UserId;
use otpd_actors::rules::passkey::CredentialId;
use uuid::Uuid;

use super::{ScyllaStore, StoreFailure, cql_ts};

const SET_V1: u8 = 1;
/// Changes to one user's passkeys that may race before one of them gives up.
const CLAIM_ROUNDS: usize = 8;

pub fn encode_set(passkeys: &[Passkey]) -> Result<Vec<u8>, String> {
    let mut out = vec![SET_V1];
    out.extend(postcard::to_stdvec(passkeys).map_err(|e| e.to_string())?);
    Ok(out)
}

pub fn decode_set(bytes: &[u8]) -> Result<Vec<Passkey>, String> {
    match bytes.split_first() {
        Some((&SET_V1, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("passkey set format {v} is unknown")),
        None => Err("empty passkey set".into()),
    }
}

/// What a change decided on a set.
enum Change {
    /// Write this set as the next version; `prune` deletes the version before it as well.
    Write { next: Vec<Passkey>, prune: bool },
    /// Nothing to write.
    Done,
}

impl ScyllaStore {
    async fn passkey_set(&self, user: UserId, serial: bool) -> Result<(i32, Vec<Passkey>), StoreFailure> {
        const WHAT: &str = "read passkeys";
        let statement = if serial { &self.cql.passkey_set_serial } else { &self.cql.passkey_set };
        let rows: Vec<(i32, Vec<u8>)> = self.rows(statement, (user.0,), WHAT, 1).await?;
        match rows.into_iter().max_by_key(|(v, _)| *v) {
            None => Ok((0, Vec::new())),
            Some((v, bytes)) => Ok((v, decode_set(&bytes).map_err(|e| StoreFailure::decode(WHAT, &e))?)),
        }
    }

    async fn claim_passkey_set(
        &self,
        user: UserId,
        version: i32,
        set: &[Passkey],
        prune: bool,
        at: Timestamp,
    ) -> Result<bool, StoreFailure> {
        const WHAT: &str = "claim passkey set";
        let bytes = encode_set(set).map_err(|e| StoreFailure::decode(WHAT, &e))?;
        if !self.claim(&self.cql.claim_passkey_set, (user.0, version, bytes, cql_ts(at)), WHAT).await?.applied {
            return Ok(false);
        }
        // The version before the previous one always goes; after a deletion the previous one
        // too, which still holds what was deleted.
        let stale = if prune { [version - 1, version - 2] } else { [version - 2, 0] };
        for v in stale.into_iter().filter(|v| *v >= 1) {
            if let Err(e) = self.run(&self.cql.delete_passkey_set, (user.0, v), "prune passkeys").await {
                tracing::warn!(error = %e, "could not delete an old passkey set version");
            }
        }
        Ok(true)
    }

    /// Reads, decides with `decide`, and claims the next version, until a claim wins.
    async fn change_passkeys<T>(
        &self,
        user: UserId,
        now: Timestamp,
        mut decide: impl FnMut(&[Passkey]) -> (Change, T),
    ) -> Result<T, StoreError> {
        for round in 0..CLAIM_ROUNDS {
            let (version, passkeys) = self.passkey_set(user, round > 0).await?;
            let (change, answer) = decide(&passkeys);
            let Change::Write { next, prune } = change else { return Ok(answer) };
            match self.claim_passkey_set(user, version + 1, &next, prune, now).await {
                Ok(true) => return Ok(answer),
                Ok(false) => {}
                Err(f) if f.uncertain => {}
                Err(f) => return Err(f.into()),
            }
        }
        Err(StoreError::Unavailable(format!(
            "scylla: passkeys of user {} changed by {CLAIM_ROUNDS} others at once",
            user.0
        )))
    }

    async fn passkey_owner(&self, id: &CredentialId) -> Result<Option<UserId>, StoreFailure> {
        let rows: Vec<(Uuid,)> = self.rows(&self.cql.passkey_user, (&id.0,), "read passkey id", 1).await?;
        Ok(rows.into_iter().next().map(|(u,)| UserId(u)))
    }
}

#[async_trait]
impl PasskeyStore for ScyllaStore {
    async fn insert_passkey(&self, passkey: &Passkey, max: usize) -> Result<InsertPasskey, StoreError> {
        let claimed =
            self.claim(&self.cql.claim_passkey_id, (&passkey.id.0, passkey.user_id.0), "claim passkey id").await;
        match claimed {
            Ok(answer) if answer.applied => {}
            // Uncertain or lost: whoever holds the id now tells.
            Ok(_) | Err(StoreFailure { uncertain: true, .. }) => {
                if self.passkey_owner(&passkey.id).await? != Some(passkey.user_id) {
                    return Ok(InsertPasskey::Exists);
                }
                let (_, mine) = self.passkey_set(passkey.user_id, true).await?;
                if mine.iter().any(|p| p.id == passkey.id) {
                    return Ok(InsertPasskey::Exists);
                }
            }
            Err(f) => return Err(f.into()),
        }
        let inserted = self
            .change_passkeys(passkey.user_id, passkey.created_at, |set| {
                if set.len() >= max {
                    return (Change::Done, InsertPasskey::LimitReached { max });
                }
                let mut next = set.to_vec();
                next.push(passkey.clone());
                (Change::Write { next, prune: false }, InsertPasskey::Inserted)
            })
            .await?;
        if inserted != InsertPasskey::Inserted {
            self.run(&self.cql.delete_passkey_id, (&passkey.id.0,), "give back passkey id").await?;
        }
        Ok(inserted)
    }

    async fn passkey(&self, id: &CredentialId) -> Result<Option<Passkey>, StoreError> {
        let Some(user) = self.passkey_owner(id).await? else { return Ok(None) };
        let (_, set) = self.passkey_set(user, false).await?;
        Ok(set.into_iter().find(|p| &p.id == id))
    }

    async fn passkeys_of_user(&self, user: UserId) -> Result<Vec<Passkey>, StoreError> {
        let (_, mut set) = self.passkey_set(user, false).await?;
        set.sort_by_key(|p| p.created_at);
        Ok(set)
    }

    async fn record_passkey_use(&self, used: &Passkey, now: Timestamp) -> Result<PasskeyUse, StoreError> {
        self.change_passkeys(used.user_id, now, |set| {
            let Some(i) = set.iter().position(|p| p.id == used.id) else { return (Change::Done, PasskeyUse::Missing) };
            let stored = &set[i];
            let counting = used.sign_count != 0 || stored.sign_count != 0;
            if counting && used.sign_count <= stored.sign_count {
                return (Change::Done, PasskeyUse::Regressed { stored: stored.sign_count });
            }
            let mut next = set.to_vec();
            let p = &mut next[i];
            p.sign_count = used.sign_count;
            p.backup_eligible = used.backup_eligible;
            p.backup_state = used.backup_state;
            p.credential.clone_from(&used.credential);
            p.last_used_at = Some(now);
            (Change::Write { next, prune: false }, PasskeyUse::Recorded)
        })
        .await
    }

    async fn delete_passkey(&self, user: UserId, id: &CredentialId) -> Result<bool, StoreError> {
        let now = Timestamp::from_millis(0);
        let deleted = self
            .change_passkeys(user, now, |set| match set.iter().position(|p| &p.id == id) {
                None => (Change::Done, false),
                Some(i) => {
                    let mut next = set.to_vec();
                    next.remove(i);
                    (Change::Write { next, prune: true }, true)
                }
            })
            .await?;
        if deleted {
            self.run(&self.cql.delete_passkey_id, (&id.0,), "delete passkey id").await?;
        }
        Ok(deleted)
    }

    async fn delete_user_passkeys(&self, user: UserId) -> Result<usize, StoreError> {
        let now = Timestamp::from_millis(0);
        let gone = self
            .change_passkeys(user, now, |set| {
                if set.is_empty() {
                    return (Change::Done, Vec::new());
                }
                (Change::Write { next: Vec::new(), prune: true }, set.iter().map(|p| p.id.clone()).collect())
            })
            .await?;
        for id in &gone {
            self.run(&self.cql.delete_passkey_id, (&id.0,), "delete passkey id").await?;
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passkey_sets_round_trip_and_unknown_formats_are_refused() {
        let p = Passkey {
            id: CredentialId(vec![3; 32]),
            user_id: UserId(Uuid::now_v7()),
            name: "Ada's laptop".into(),
            credential: vec![1, 2, 3],
            sign_count: 7,
            backup_eligible: true,
            backup_state: true,
            created_at: Timestamp::from_millis(1_700_000_000_000),
            last_used_at: None,
        };
        let bytes = encode_set(std::slice::from_ref(&p)).unwrap();
        assert_eq!(decode_set(&bytes).unwrap(), vec![p]);
        assert!(decode_set(&[9, 0]).unwrap_err().contains("format 9"));
        assert!(decode_set(&[]).is_err());
    }
}
