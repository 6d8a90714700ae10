//! Rotated keys (`crate::keyring`): table `keys`, one row per generation of a kind, each
//! claimed with `INSERT … IF NOT EXISTS`, so of two nodes rotating at once one wins and the
//! other takes the next generation. Read at serial consistency: a claim in flight completes
//! first, so a node that lost a claim reads the winner.

use async_trait::async_trait;
use otpd_actors::ports::StoreError;
use scylla::value::CqlTimestamp;

use super::{ScyllaStore, StoreFailure, cql_ts, from_cql_ts};
use crate::keyring::{KeyKind, KeyVault, StoredKey};

#[async_trait]
impl KeyVault for ScyllaStore {
    async fn keys(&self, kind: KeyKind) -> Result<Vec<StoredKey>, StoreError> {
        const WHAT: &str = "read keys";
        let rows: Vec<(i32, CqlTimestamp, CqlTimestamp, Vec<u8>)> =
            self.rows(&self.cql.keys_of_kind, (kind.as_str(),), WHAT, usize::MAX).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (generation, created_at, activates_at, sealed) in rows {
            out.push(StoredKey {
                kind,
                generation: u32::try_from(generation)
                    .map_err(|_| StoreFailure::decode(WHAT, &"negative generation"))?,
                created_at: from_cql_ts(created_at.0, WHAT)?,
                activates_at: from_cql_ts(activates_at.0, WHAT)?,
                sealed,
            });
        }
        Ok(out)
    }

    async fn claim_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        const WHAT: &str = "claim key";
        let generation =
            i32::try_from(key.generation).map_err(|_| StoreFailure::decode(WHAT, &"generation too large"))?;
        let values =
            (key.kind.as_str(), generation, cql_ts(key.created_at), cql_ts(key.activates_at), key.sealed.as_slice());
        match self.claim(&self.cql.claim_key, values, WHAT).await {
            Ok(answer) => Ok(answer.applied),
            Err(f) if f.uncertain => {
                // The claim may have applied: the row says whose it is.
                let stored = self.keys(key.kind).await?;
                match stored.iter().find(|k| k.generation == key.generation) {
                    Some(k) => Ok(k.sealed == key.sealed),
                    None => Err(f.into()),
                }
            }
            Err(f) => Err(f.into()),
        }
    }
}
