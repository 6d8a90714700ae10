//! Accounts: `users_by_ident` holds the record (claimed at registration with
//! `INSERT … IF NOT EXISTS`), `users_by_id` maps an id to its identifier hash.
//!
//! A lookup by identifier (every send and verify) is one read; by id (`/v1/me`, refresh,
//! device login) two: the id's identifier hash, then the record.

use async_trait::async_trait;
use otpd_actors::ports::{Erased, InsertUser, StoreError, User, UserStore};
use otpd_actors::rules::identifier::Identifier;
use otpd_actors::rules::ids::UserId;
use otpd_actors::rules::keys::IdentHash;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use otpd_actors::rules::clock::Timestamp;
use scylla::value::CqlTimestamp;

use super::lwt::{Columns, LwtError};
use super::{ScyllaStore, StoreFailure, cql_ts, from_cql_ts, unset_if_none};

/// An account from its named columns (a read, or the existing row of a lost claim).
pub fn user_from_columns(c: &Columns) -> Result<User, LwtError> {
    let missing = |name: &str| LwtError::Decode(format!("account column {name} is null"));
    let ident: [u8; 16] = c
        .blob("ident_hash")?
        .ok_or_else(|| missing("ident_hash"))?
        .try_into()
        .map_err(|_| LwtError::Decode("ident_hash is not 16 bytes".into()))?;
    let text = |name: &str| c.text(name)?.map(str::to_owned).ok_or_else(|| missing(name));
    let identifier = text("identifier")?;
    let identifier = match c.int("country_code")? {
        Some(cc) => Identifier::Phone {
            e164: identifier,
            country_code: u16::try_from(cc).map_err(|_| LwtError::Decode("country_code out of range".into()))?,
        },
        None => Identifier::Email(identifier),
    };
    let ts = |name: &str| -> Result<Option<otpd_actors::rules::clock::Timestamp>, LwtError> {
        c.timestamp(name)?
            .map(|ms| from_cql_ts(ms, "read account").map_err(|e| LwtError::Decode(e.to_string())))
            .transpose()
    };
    Ok(User {
        id: UserId(c.uuid("user_id")?.ok_or_else(|| missing("user_id"))?),
        identifier,
        ident_hash: IdentHash(ident),
        first_name: text("first_name")?,
        last_name: text("last_name")?,
        email: c.text("email")?.map(str::to_owned),
        verified: c.boolean("verified")?.unwrap_or(false),
        created_at: ts("created_at")?.ok_or_else(|| missing("created_at"))?,
        verified_at: ts("verified_at")?,
        updated_at: ts("updated_at")?.ok_or_else(|| missing("updated_at"))?,
    })
}

fn decode(what: &'static str) -> impl Fn(LwtError) -> StoreFailure {
    move |e| StoreFailure::decode(what, &e)
}

impl ScyllaStore {
    async fn read_user(&self, ident: &IdentHash) -> Result<Option<User>, StoreFailure> {
        const WHAT: &str = "read account";
        let result = self.run(&self.cql.user_by_ident, (ident.0.as_slice(),), WHAT).await?;
        let rows = Columns::rows_of(result).map_err(decode(WHAT))?;
        rows.first().map(user_from_columns).transpose().map_err(decode(WHAT))
    }
}

#[async_trait]
impl UserStore for ScyllaStore {
    async fn user_by_identifier(&self, ident: &IdentHash) -> Result<Option<Arc<User>>, StoreError> {
        Ok(self.read_user(ident).await?.map(Arc::new))
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        const WHAT: &str = "read account id";
        let rows: Vec<(Vec<u8>,)> = self.rows(&self.cql.user_ident_by_id, (id.0,), WHAT, 1).await?;
        let Some((ident,)) = rows.into_iter().next() else { return Ok(None) };
        let ident: [u8; 16] =
            ident.try_into().map_err(|_| StoreFailure::decode(WHAT, &"ident_hash is not 16 bytes"))?;
        // The id row is written before the claim; a claim that lost leaves it pointing at
        // someone else's account, which must not be returned for this id.
        Ok(self.read_user(&IdentHash(ident)).await?.filter(|u| u.id == id))
    }

    async fn insert_user(&self, user: &User) -> Result<InsertUser, StoreError> {
        const WHAT: &str = "claim identifier";
        let ident = user.ident_hash.0.as_slice();
        self.run(&self.cql.insert_user_id, (user.id.0, ident), "write account id").await?;
        let country_code = match &user.identifier {
            Identifier::Phone { country_code, .. } => Some(i32::from(*country_code)),
            Identifier::Email(_) => None,
        };
        let values = (
            ident,
            user.id.0,
            user.identifier.as_str(),
            unset_if_none(country_code),
            user.first_name.as_str(),
            user.last_name.as_str(),
            unset_if_none(user.email.as_deref()),
            user.verified,
            cql_ts(user.created_at),
            unset_if_none(user.verified_at.map(cql_ts)),
            cql_ts(user.updated_at),
        );
        let answer = match self.claim(&self.cql.insert_user, values, WHAT).await {
            Ok(answer) => answer,
            Err(f) if f.uncertain => {
                // The claim may have applied: the account row says whose it is.
                return match self.read_user(&user.ident_hash).await? {
                    Some(u) if u.id == user.id => Ok(InsertUser::Inserted),
                    Some(other) => Ok(InsertUser::Exists(Box::new(other))),
                    None => Err(f.into()),
                };
            }
            Err(f) => return Err(f.into()),
        };
        if answer.applied {
            return Ok(InsertUser::Inserted);
        }
        // Scylla returns the whole existing row with `[applied] = false`; a server that
        // returns only some columns gets a read instead.
        let existing = match user_from_columns(&answer.existing) {
            Ok(u) => u,
            Err(_) => self.read_user(&user.ident_hash).await?.ok_or_else(|| {
                StoreFailure::decode(WHAT, &"the claim failed but no account exists for the identifier")
            })?,
        };
        if existing.id == user.id {
            return Ok(InsertUser::Inserted);
        }
        if let Err(e) = self.run(&self.cql.delete_user_id, (user.id.0,), "delete unused account id").await {
            tracing::warn!(error = %e, "could not delete the id row of a refused account (harmless)");
        }
        Ok(InsertUser::Exists(Box::new(existing)))
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        const WHAT: &str = "update account";
        let values = (
            user.first_name.as_str(),
            user.last_name.as_str(),
            user.email.as_deref(),
            user.verified,
            user.verified_at.map(cql_ts),
            cql_ts(user.updated_at),
            user.ident_hash.0.as_slice(),
        );
        let answer = self.claim(&self.cql.update_user, values, WHAT).await?;
        if answer.applied {
            Ok(())
        } else {
            Err(StoreError::Corrupt("update_user: no account exists for this identifier".into()))
        }
    }

    /// Scans `PURGE_SCAN` accounts in token order from where the last call stopped (then
    /// from the start again), and deletes the unverified old ones with a conditional delete
    /// (`IF verified = false`: one verified meanwhile stays). The statements are prepared here,
    /// not at start: a purge runs hourly, and a server that cannot run them (the in-memory
    /// test server) fails the purge, not the node.
    async fn purge_unverified(&self, created_before: Timestamp, max: usize) -> Result<usize, StoreError> {
        const WHAT: &str = "purge unverified accounts";
        let failed = |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("{WHAT}: {e}"));
        let ks = &self.keyspace;
        let scan = format!(
            "SELECT token(ident_hash), ident_hash, user_id, verified, created_at FROM {ks}.users_by_ident \
             WHERE token(ident_hash) > ? LIMIT {PURGE_SCAN}"
        );
        let from = self.purge_from.load(Ordering::Relaxed);
        let result = self.session.query_unpaged(scan, (from,)).await.map_err(|e| failed(&e))?;
        type Row = (i64, Vec<u8>, uuid::Uuid, Option<bool>, Option<CqlTimestamp>);
        let rows = result.into_rows_result().map_err(|e| failed(&e))?;
        let rows: Vec<Row> =
            rows.rows::<Row>().map_err(|e| failed(&e))?.collect::<Result<_, _>>().map_err(|e| failed(&e))?;
        let next = match rows.last() {
            Some((token, ..)) if rows.len() == PURGE_SCAN => *token,
            _ => i64::MIN,
        };
        self.purge_from.store(next, Ordering::Relaxed);
        let cutoff = cql_ts(created_before).0;
        let old =
            |(_, _, _, verified, created): &&Row| *verified != Some(true) && created.is_some_and(|c| c.0 < cutoff);
        let delete = format!("DELETE FROM {ks}.users_by_ident WHERE ident_hash = ? IF verified = false");
        let delete_id = format!("DELETE FROM {ks}.users_by_id WHERE user_id = ?");
        let mut purged = 0;
        for (_, ident, id, ..) in rows.iter().filter(old).take(max) {
            let result =
                self.session.query_unpaged(delete.as_str(), (ident.as_slice(),)).await.map_err(|e| failed(&e))?;
            if !super::lwt::answer(result).map_err(|e| failed(&e))?.applied {
                continue;
            }
            self.session.query_unpaged(delete_id.as_str(), (*id,)).await.map_err(|e| failed(&e))?;
            purged += 1;
        }
        Ok(purged)
    }

    /// Deletes the subjects' key partitions first (the trail's personal fields are then
    /// unreadable), then sessions, devices and the account, each a plain delete; the
    /// statements are prepared here, erasure being rare. A failure part-way leaves the rest
    /// for a retry: every delete is idempotent, and the account row goes last.
    async fn erase_user(&self, id: UserId) -> Result<Option<Erased>, StoreError> {
        const WHAT: &str = "erase account";
        let failed = |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("{WHAT}: {e}"));
        let Some(user) = self.user_by_id(id).await? else { return Ok(None) };
        let ks = &self.keyspace;
        let mut erased = Erased::default();
        let run = |cql: String, values: Vec<scylla::value::CqlValue>| async move {
            self.session.query_unpaged(cql, values).await.map(|_| ()).map_err(|e| failed(&e))
        };
        use scylla::value::CqlValue::{Blob, Uuid as U};
        for subject in crate::store::shred::Subject::of_account(&user.ident_hash, id) {
            self.keys.forget(&subject);
            run(format!("DELETE FROM {ks}.subject_keys WHERE subject = ?"), vec![Blob(subject.0.to_vec())]).await?;
            erased.audit_keys += 1;
        }
        for (sid, _) in self.user_session_ids(id).await? {
            run(format!("DELETE FROM {ks}.sessions WHERE session_id = ?"), vec![U(sid)]).await?;
            erased.sessions += 1;
        }
        run(format!("DELETE FROM {ks}.sessions_by_user WHERE user_id = ?"), vec![U(id.0)]).await?;
        let (_, devices) = self.device_set(id, false).await?;
        for device in &devices {
            run(format!("DELETE FROM {ks}.device_ids WHERE device_id = ?"), vec![U(device.id.0)]).await?;
        }
        erased.devices = devices.len();
        run(format!("DELETE FROM {ks}.device_sets WHERE user_id = ?"), vec![U(id.0)]).await?;
        run(format!("DELETE FROM {ks}.users_by_ident WHERE ident_hash = ?"), vec![Blob(user.ident_hash.0.to_vec())])
            .await?;
        run(format!("DELETE FROM {ks}.users_by_id WHERE user_id = ?"), vec![U(id.0)]).await?;
        Ok(Some(erased))
    }
}

/// Accounts one purge call reads.
const PURGE_SCAN: usize = 1_000;
