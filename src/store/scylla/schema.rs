//! The schema: versioned CQL migrations, applied in order and recorded in
//! `<keyspace>.schema_migrations`.
//!
//! Every statement of a migration is idempotent (`IF NOT EXISTS`), so a migration interrupted
//! half-way is simply applied again; its row in `schema_migrations` is written only after all
//! its statements succeeded. A node refuses to start against a keyspace that records a version
//! newer than [`LATEST`] (a newer otpd migrated it: this binary would misread its data), and,
//! with `migrate_on_start = false`, against one that lacks a version it needs.
//!
//! # Tables (version 1; the passkey tables from version 2)
//!
//! | table | partition key | clustering | holds | bounded by |
//! | --- | --- | --- | --- | --- |
//! | `users_by_ident` | identifier hash | — | the account (claimed with `IF NOT EXISTS`) | one row |
//! | `users_by_id` | user id | — | → identifier hash | one row |
//! | `sessions` | session id | `slot` DESC | base row, revocation row, one row per refresh rotation; TTL | the session's life (rotations) |
//! | `sessions_by_user` | user id | session id | → opener (`device_id`: the device's id or the passkey's `PasskeyRef`); TTL | sessions opened within `session_ttl` |
//! | `device_ids` | device id | — | → user id | one row |
//! | `device_sets` | user id | `version` DESC | the user's devices, one version per change (`IF NOT EXISTS`) | 2 versions (older ones deleted) |
//! | `passkey_ids` (v4) | credential id | — | → user id (claimed with `IF NOT EXISTS`) | one row |
//! | `passkey_sets` (v4) | user id | `version` DESC | the user's passkeys, one version per change (`IF NOT EXISTS`) | 2 versions (1 after a deletion) |
//! | `audit_by_ident` | (identifier hash, day) | (`at`, event id) DESC | events; TTL = retention | one identifier's events of one day |
//! | `audit_by_trace` | (trace id, day) | (`at`, event id) DESC | events; TTL = retention | one trace id's events of one day |
//! | `audit_days` | (scope, key) | `day` DESC | the days that have events, per identifier / trace id; TTL | retention in days |
//!
//! Version 2 adds `subject_keys` (partition: subject; clustering: key id): the keys that seal
//! the audit events' personal fields (`store::shred`), one per subject, node and minute, with
//! the audit's TTL; erasing an account deletes its subjects' partitions.
//!
//! Version 3 adds `keys` (partition: kind; clustering: generation): the rotated signing keys
//! and admin tokens, sealed (`crate::keyring`), each generation claimed with `IF NOT EXISTS`.
//! A handful of rows per rotation, never expired (a row is a few hundred bytes).
//!
//! Keywords are upper case and every table is written out in full: the statements must also
//! be accepted by the small CQL parser of the in-memory test server (`kassandra`), which is
//! case-sensitive about `PRIMARY KEY`, `WITH`, `AND` and `CLUSTERING ORDER BY`.

use scylla::client::session::Session;
use scylla::statement::Statement;
use scylla::value::CqlTimestamp;

use super::options::{ttl_secs, valid_keyspace};
use super::{StoreFailure, classify};

/// A schema change: a version, a name for the record, and idempotent statements.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    /// CQL with `{ks}` standing for the keyspace.
    pub statements: &'static [&'static str],
}

/// The newest schema this binary knows.
pub const LATEST: i32 = 4;

/// Every migration, oldest first. Never edit one that shipped: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts, sessions, devices, audit trail",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {ks}.users_by_ident (ident_hash blob, user_id uuid, identifier text, \
         country_code int, first_name text, last_name text, email text, verified boolean, created_at timestamp, \
         verified_at timestamp, updated_at timestamp, PRIMARY KEY (ident_hash))",
            "CREATE TABLE IF NOT EXISTS {ks}.users_by_id (user_id uuid, ident_hash blob, PRIMARY KEY (user_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.sessions (session_id uuid, slot int, user_id uuid, method text, \
         device_id uuid, created_at timestamp, expires_at timestamp, client_ip inet, user_agent text, \
         refresh_digest blob, changed_at timestamp, revoke_reason text, PRIMARY KEY ((session_id), slot)) \
         WITH CLUSTERING ORDER BY (slot DESC)",
            "CREATE TABLE IF NOT EXISTS {ks}.sessions_by_user (user_id uuid, session_id uuid, device_id uuid, \
         PRIMARY KEY ((user_id), session_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.device_ids (device_id uuid, user_id uuid, PRIMARY KEY (device_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.device_sets (user_id uuid, version int, devices blob, changed_at timestamp, \
         PRIMARY KEY ((user_id), version)) WITH CLUSTERING ORDER BY (version DESC)",
            "CREATE TABLE IF NOT EXISTS {ks}.audit_by_ident (ident_hash blob, day int, at timestamp, event_id uuid, \
         trace_id text, api text, step text, outcome text, message text, client_ip inet, user_agent text, \
         user_id uuid, PRIMARY KEY ((ident_hash, day), at, event_id)) \
         WITH CLUSTERING ORDER BY (at DESC, event_id DESC) \
         AND compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}",
            "CREATE TABLE IF NOT EXISTS {ks}.audit_by_trace (trace_id text, day int, at timestamp, event_id uuid, \
         ident_hash blob, api text, step text, outcome text, message text, client_ip inet, user_agent text, \
         user_id uuid, PRIMARY KEY ((trace_id, day), at, event_id)) \
         WITH CLUSTERING ORDER BY (at DESC, event_id DESC) \
         AND compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}",
            "CREATE TABLE IF NOT EXISTS {ks}.audit_days (scope text, key blob, day int, PRIMARY KEY ((scope, key), day)) \
         WITH CLUSTERING ORDER BY (day DESC)",
        ],
    },
    Migration {
        version: 2,
        name: "keys of the audit trail's personal fields (crypto-shredding)",
        statements: &["CREATE TABLE IF NOT EXISTS {ks}.subject_keys (subject blob, key_id blob, key blob, \
         PRIMARY KEY ((subject), key_id))"],
    },
    Migration {
        version: 3,
        name: "rotated keys",
        statements: &["CREATE TABLE IF NOT EXISTS {ks}.keys (kind text, generation int, created_at timestamp, \
         activates_at timestamp, sealed blob, PRIMARY KEY ((kind), generation))"],
    },
    Migration {
        version: 4,
        name: "passkeys",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {ks}.passkey_ids (credential_id blob, user_id uuid, PRIMARY KEY (credential_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.passkey_sets (user_id uuid, version int, passkeys blob, changed_at timestamp, \
         PRIMARY KEY ((user_id), version)) WITH CLUSTERING ORDER BY (version DESC)",
        ],
    },
];

/// The table the applied versions are recorded in; created before anything is read.
const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (scope text, version int, \
     name text, applied_at timestamp, PRIMARY KEY ((scope), version))";

/// The one partition of `schema_migrations` otpd uses.
const SCOPE: &str = "otpd";

/// `CREATE KEYSPACE` for `keyspace`: per-datacenter replication when the local datacenter is
/// known (`NetworkTopologyStrategy`), otherwise `SimpleStrategy` (one datacenter).
pub fn create_keyspace_cql(keyspace: &str, local_datacenter: &str, replication_factor: u32) -> String {
    debug_assert!(valid_keyspace(keyspace));
    let replication = if local_datacenter.is_empty() {
        format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
    } else {
        format!("{{'class': 'NetworkTopologyStrategy', '{local_datacenter}': {replication_factor}}}")
    };
    format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH REPLICATION = {replication}")
}

/// A statement with the keyspace filled in.
pub fn in_keyspace(cql: &str, keyspace: &str) -> String {
    debug_assert!(valid_keyspace(keyspace));
    cql.replace("{ks}", keyspace)
}

/// Where the keyspace's schema stands relative to this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// Versions recorded in `schema_migrations`, ascending.
    pub applied: Vec<i32>,
}

impl SchemaState {
    pub fn current(&self) -> i32 {
        self.applied.last().copied().unwrap_or(0)
    }

    /// The migrations this keyspace still needs.
    pub fn pending(&self) -> impl Iterator<Item = &'static Migration> + '_ {
        MIGRATIONS.iter().filter(|m| !self.applied.contains(&m.version))
    }

    /// Refuses a keyspace migrated by a newer otpd.
    pub fn check_not_newer(&self) -> Result<(), SchemaError> {
        match self.applied.iter().copied().filter(|v| *v > LATEST).max() {
            Some(found) => Err(SchemaError::Newer { found, known: LATEST }),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the keyspace's schema is at version {found}, newer than this otpd knows ({known}): \
         upgrade otpd, or point it at another keyspace"
    )]
    Newer { found: i32, known: i32 },
    #[error(
        "the keyspace's schema is at version {current}, this otpd needs {needed}; run `otpd migrate` \
         (or set scylla.migrate_on_start = true)"
    )]
    Pending { current: i32, needed: i32 },
    #[error("{0}")]
    Cluster(#[from] StoreFailure),
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub keyspace: String,
    pub before: i32,
    pub applied: Vec<(i32, &'static str)>,
    pub after: i32,
}

/// Schema changes can take far longer than a request (the cluster agrees on them first).
const DDL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn ddl(session: &Session, cql: &str, what: &'static str) -> Result<(), StoreFailure> {
    let mut statement = Statement::new(cql);
    statement.set_request_timeout(Some(DDL_TIMEOUT));
    session.query_unpaged(statement, ()).await.map(|_| ()).map_err(|e| StoreFailure::new(what, classify(&e), &e))
}

/// Creates the keyspace (if asked) and the migrations table, and reads what is applied.
pub async fn read_state(
    session: &Session,
    keyspace: &str,
    create: Option<(&str, u32)>,
) -> Result<SchemaState, StoreFailure> {
    if let Some((dc, rf)) = create {
        ddl(session, &create_keyspace_cql(keyspace, dc, rf), "create keyspace").await?;
    }
    ddl(session, &in_keyspace(MIGRATIONS_TABLE, keyspace), "create schema_migrations").await?;
    let select = session
        .prepare(in_keyspace("SELECT version FROM {ks}.schema_migrations WHERE scope = ?", keyspace))
        .await
        .map_err(|e| StoreFailure::prepare("read schema version", &e))?;
    let result = session
        .execute_unpaged(&select, (SCOPE,))
        .await
        .map_err(|e| StoreFailure::new("read schema version", classify(&e), &e))?;
    let rows = result.into_rows_result().map_err(|e| StoreFailure::decode("read schema version", &e))?;
    let mut applied = rows
        .rows::<(i32,)>()
        .map_err(|e| StoreFailure::decode("read schema version", &e))?
        .map(|r| r.map(|(v,)| v))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(|e| StoreFailure::decode("read schema version", &e))?;
    applied.sort_unstable();
    applied.dedup();
    Ok(SchemaState { applied })
}

/// Applies every pending migration, in order, and records each.
pub async fn apply_pending(
    session: &Session,
    keyspace: &str,
    state: &SchemaState,
    now_ms: i64,
) -> Result<MigrationReport, SchemaError> {
    state.check_not_newer()?;
    let record = session
        .prepare(in_keyspace(
            "INSERT INTO {ks}.schema_migrations (scope, version, name, applied_at) VALUES (?, ?, ?, ?)",
            keyspace,
        ))
        .await
        .map_err(|e| StoreFailure::prepare("record migration", &e))?;
    let mut applied = Vec::new();
    for m in state.pending() {
        for statement in m.statements {
            ddl(session, &in_keyspace(statement, keyspace), "apply migration").await?;
        }
        session
            .execute_unpaged(&record, (SCOPE, m.version, m.name, CqlTimestamp(now_ms)))
            .await
            .map_err(|e| StoreFailure::new("record migration", classify(&e), &e))?;
        tracing::info!(keyspace, version = m.version, name = m.name, "schema migration applied");
        applied.push((m.version, m.name));
    }
    let after = applied.last().map(|(v, _)| *v).unwrap_or(state.current()).max(state.current());
    Ok(MigrationReport { keyspace: keyspace.to_owned(), before: state.current(), applied, after })
}

/// The audit retention as a `USING TTL` literal (seconds).
pub fn audit_ttl(retention: std::time::Duration) -> u64 {
    ttl_secs(retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_unique_and_end_at_latest() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(versions.last(), Some(&LATEST));
        for m in MIGRATIONS {
            for s in m.statements {
                assert!(s.starts_with("CREATE TABLE IF NOT EXISTS {ks}."), "idempotent and in the keyspace: {s}");
                assert!(!s.contains(';'), "one statement each: {s}");
            }
        }
    }

    #[test]
    fn keyspace_creation_names_the_local_datacenter_when_known() {
        assert_eq!(
            create_keyspace_cql("otpd", "", 1),
            "CREATE KEYSPACE IF NOT EXISTS otpd WITH REPLICATION = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        assert_eq!(
            create_keyspace_cql("auth", "eu-west", 3),
            "CREATE KEYSPACE IF NOT EXISTS auth WITH REPLICATION = {'class': 'NetworkTopologyStrategy', 'eu-west': 3}"
        );
        assert_eq!(in_keyspace("SELECT x FROM {ks}.t", "auth"), "SELECT x FROM auth.t");
    }

    #[test]
    fn a_newer_schema_is_refused_and_pending_ones_are_listed() {
        let fresh = SchemaState { applied: vec![] };
        assert_eq!(fresh.current(), 0);
        assert_eq!(fresh.pending().map(|m| m.version).collect::<Vec<_>>(), (1..=LATEST).collect::<Vec<_>>());
        assert!(fresh.check_not_newer().is_ok());
        let done = SchemaState { applied: (1..=LATEST).collect() };
        assert_eq!(done.pending().count(), 0);
        let newer = SchemaState { applied: vec![1, LATEST + 1] };
        let err = newer.check_not_newer().unwrap_err();
        assert!(matches!(err, SchemaError::Newer { found, known } if found == LATEST + 1 && known == LATEST));
        assert!(err.to_string().contains("newer than this otpd knows"), "{err}");
    }
}
