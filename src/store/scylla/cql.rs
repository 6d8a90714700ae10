//! Every DML statement the store runs: its text ([`Texts`], built once from the keyspace and
//! the TTLs) and its prepared form ([`Statements`], prepared once at connect).
//!
//! Rules the texts follow:
//! * every value is a bind marker — no literal in a `WHERE` or `VALUES`;
//! * TTLs are literals fixed per process (`USING TTL 7776000`), so no statement binds a TTL:
//!   the audit retention and the session lifetime are configuration, not per-row values;
//! * a read that wants "the newest" relies on `CLUSTERING ORDER BY … DESC` plus `LIMIT` on
//!   Scylla, and the code still sorts what comes back, so an answer in another order (the
//!   in-memory test server ignores both) cannot change a result;
//! * idempotent statements (reads, plain inserts of fixed values, deletes) are marked so:
//!   the driver may retry them and send reads speculatively; conditional writes are not, so
//!   the driver never sends one twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::options::{DAY, SESSION_ROW_GRACE, ttl_secs};
use super::schema::in_keyspace;
use super::{Profiles, StoreFailure};

/// The newest rows of a session partition a read needs: its base and revocation rows plus the
/// current and the retired refresh digests (see `sessions.rs`).
pub const SESSION_ROWS: usize = 2 + 1 + otpd_actors::ports::RETIRED_REFRESH_DIGESTS;

/// Statement texts, keyspace and TTLs filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    pub user_by_ident: String,
    pub user_ident_by_id: String,
    pub insert_user_id: String,
    pub delete_user_id: String,
    pub insert_user: String,
    pub update_user: String,
    pub insert_session: String,
    pub insert_session_index: String,
    pub select_session: String,
    pub claim_session_row: String,
    pub sessions_of_user: String,
    pub insert_device_id: String,
    pub device_user: String,
    pub device_set: String,
    pub claim_device_set: String,
    pub delete_device_set: String,
    pub claim_passkey_id: String,
    pub passkey_user: String,
    pub delete_passkey_id: String,
    pub passkey_set: String,
    pub claim_passkey_set: String,
    pub delete_passkey_set: String,
    pub insert_audit_ident: String,
    pub insert_audit_trace: String,
    pub insert_audit_day: String,
    pub audit_days: String,
    pub audit_of_ident_day: String,
    pub audit_of_trace_day: String,
    pub insert_subject_key: String,
    pub subject_key: String,
    pub probe: String,
    pub keys_of_kind: String,
    pub claim_key: String,
}

const USER_COLUMNS: &str = "ident_hash, user_id, identifier, country_code, first_name, last_name, email, verified, created_at, verified_at, updated_at";
const SESSION_COLUMNS: &str = "slot, user_id, method, device_id, created_at, expires_at, client_ip, user_agent, \
     refresh_digest, changed_at, revoke_reason";
const AUDIT_COLUMNS: &str =
    "at, event_id, trace_id, api, step, outcome, message, client_ip, user_agent, ident_hash, user_id";

impl Texts {
    pub fn new(keyspace: &str, session_ttl: Duration, audit_retention: Duration) -> Self {
        let ks = |s: &str| in_keyspace(s, keyspace);
        let session_ttl = ttl_secs(session_ttl + SESSION_ROW_GRACE);
        let audit_ttl = ttl_secs(audit_retention);
        // A day-index row must outlive the newest event of its day.
        let day_ttl = ttl_secs(audit_retention + DAY * 2);
        Texts {
            user_by_ident: ks(&format!("SELECT {USER_COLUMNS} FROM {{ks}}.users_by_ident WHERE ident_hash = ?")),
            user_ident_by_id: ks("SELECT ident_hash FROM {ks}.users_by_id WHERE user_id = ?"),
            insert_user_id: ks("INSERT INTO {ks}.users_by_id (user_id, ident_hash) VALUES (?, ?)"),
            delete_user_id: ks("DELETE FROM {ks}.users_by_id WHERE user_id = ?"),
            insert_user: ks(&format!(
                "INSERT INTO {{ks}}.users_by_ident ({USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
            )),
            update_user: ks("UPDATE {ks}.users_by_ident SET first_name = ?, last_name = ?, email = ?, verified = ?, \
                 verified_at = ?, updated_at = ? WHERE ident_hash = ? IF EXISTS"),
            insert_session: ks(&format!(
                "INSERT INTO {{ks}}.sessions (session_id, slot, user_id, method, device_id, created_at, expires_at, \
                 client_ip, user_agent, refresh_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL {session_ttl}"
            )),
            insert_session_index: ks(&format!(
                "INSERT INTO {{ks}}.sessions_by_user (user_id, session_id, device_id) VALUES (?, ?, ?) USING TTL {session_ttl}"
            )),
            select_session: ks(&format!(
                "SELECT {SESSION_COLUMNS} FROM {{ks}}.sessions WHERE session_id = ? LIMIT {SESSION_ROWS}"
            )),
            claim_session_row: ks(&format!(
                "INSERT INTO {{ks}}.sessions (session_id, slot, refresh_digest, changed_at, revoke_reason) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL {session_ttl}"
            )),
            sessions_of_user: ks("SELECT session_id, device_id FROM {ks}.sessions_by_user WHERE user_id = ?"),
            insert_device_id: ks("INSERT INTO {ks}.device_ids (device_id, user_id) VALUES (?, ?)"),
            device_user: ks("SELECT user_id FROM {ks}.device_ids WHERE device_id = ?"),
            device_set: ks("SELECT version, devices FROM {ks}.device_sets WHERE user_id = ? LIMIT 1"),
            claim_device_set: ks(
                "INSERT INTO {ks}.device_sets (user_id, version, devices, changed_at) VALUES (?, ?, ?, ?) IF NOT EXISTS",
            ),
            delete_device_set: ks("DELETE FROM {ks}.device_sets WHERE user_id = ? AND version = ?"),
            claim_passkey_id: ks("INSERT INTO {ks}.passkey_ids (credential_id, user_id) VALUES (?, ?) IF NOT EXISTS"),
            passkey_user: ks("SELECT user_id FROM {ks}.passkey_ids WHERE credential_id = ?"),
            delete_passkey_id: ks("DELETE FROM {ks}.passkey_ids WHERE credential_id = ?"),
            passkey_set: ks("SELECT version, passkeys FROM {ks}.passkey_sets WHERE user_id = ? LIMIT 1"),
            claim_passkey_set: ks(
                "INSERT INTO {ks}.passkey_sets (user_id, version, passkeys, changed_at) VALUES (?, ?, ?, ?) IF NOT EXISTS",
            ),
            delete_passkey_set: ks("DELETE FROM {ks}.passkey_sets WHERE user_id = ? AND version = ?"),
            insert_audit_ident: ks(&format!(
                "INSERT INTO {{ks}}.audit_by_ident (ident_hash, day, at, event_id, trace_id, api, step, outcome, message, \
                 client_ip, user_agent, user_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL {audit_ttl}"
            )),
            insert_audit_trace: ks(&format!(
                "INSERT INTO {{ks}}.audit_by_trace (trace_id, day, at, event_id, ident_hash, api, step, outcome, message, \
                 client_ip, user_agent, user_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL {audit_ttl}"
            )),
            insert_audit_day: ks(&format!(
                "INSERT INTO {{ks}}.audit_days (scope, key, day) VALUES (?, ?, ?) USING TTL {day_ttl}"
            )),
            audit_days: ks("SELECT day FROM {ks}.audit_days WHERE scope = ? AND key = ?"),
            audit_of_ident_day: ks(&format!(
                "SELECT {AUDIT_COLUMNS} FROM {{ks}}.audit_by_ident WHERE ident_hash = ? AND day = ?"
            )),
            audit_of_trace_day: ks(&format!(
                "SELECT {AUDIT_COLUMNS} FROM {{ks}}.audit_by_trace WHERE trace_id = ? AND day = ?"
            )),
            insert_subject_key: ks(&format!(
                "INSERT INTO {{ks}}.subject_keys (subject, key_id, key) VALUES (?, ?, ?) USING TTL {day_ttl}"
            )),
            subject_key: ks("SELECT key FROM {ks}.subject_keys WHERE subject = ? AND key_id = ?"),
            probe: ks("SELECT version FROM {ks}.schema_migrations WHERE scope = ?"),
            keys_of_kind: ks("SELECT generation, created_at, activates_at, sealed FROM {ks}.keys WHERE kind = ?"),
            claim_key: ks("INSERT INTO {ks}.keys (kind, generation, created_at, activates_at, sealed) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"),
        }
    }

    /// Every text with whether it is a conditional write, for checks over all of them.
    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("user_by_ident", &self.user_by_ident),
            ("user_ident_by_id", &self.user_ident_by_id),
            ("insert_user_id", &self.insert_user_id),
            ("delete_user_id", &self.delete_user_id),
            ("insert_user", &self.insert_user),
            ("update_user", &self.update_user),
            ("insert_session", &self.insert_session),
            ("insert_session_index", &self.insert_session_index),
            ("select_session", &self.select_session),
            ("claim_session_row", &self.claim_session_row),
            ("sessions_of_user", &self.sessions_of_user),
            ("insert_device_id", &self.insert_device_id),
            ("device_user", &self.device_user),
            ("device_set", &self.device_set),
            ("claim_device_set", &self.claim_device_set),
            ("delete_device_set", &self.delete_device_set),
            ("claim_passkey_id", &self.claim_passkey_id),
            ("passkey_user", &self.passkey_user),
            ("delete_passkey_id", &self.delete_passkey_id),
            ("passkey_set", &self.passkey_set),
            ("claim_passkey_set", &self.claim_passkey_set),
            ("delete_passkey_set", &self.delete_passkey_set),
            ("insert_audit_ident", &self.insert_audit_ident),
            ("insert_audit_trace", &self.insert_audit_trace),
            ("insert_audit_day", &self.insert_audit_day),
            ("audit_days", &self.audit_days),
            ("audit_of_ident_day", &self.audit_of_ident_day),
            ("audit_of_trace_day", &self.audit_of_trace_day),
            ("insert_subject_key", &self.insert_subject_key),
            ("subject_key", &self.subject_key),
            ("probe", &self.probe),
            ("keys_of_kind", &self.keys_of_kind),
            ("claim_key", &self.claim_key),
        ]
    }
}

/// Whether a statement text is a lightweight transaction.
pub fn is_lwt(text: &str) -> bool {
    text.contains(" IF NOT EXISTS") || text.contains(" IF EXISTS")
}

/// A prepared statement, its name, and how often this process ran it.
pub struct Stmt {
    pub prepared: PreparedStatement,
    pub name: &'static str,
    pub lwt: bool,
    executed: AtomicU64,
}

impl Stmt {
    /// Counts one execution (attempts by the driver's retries and speculative executions
    /// are not counted: this is the store's own statement count).
    pub fn executed(&self) {
        self.executed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The prepared statements.
pub struct Statements {
    pub user_by_ident: Stmt,
    pub user_ident_by_id: Stmt,
    pub insert_user_id: Stmt,
    pub delete_user_id: Stmt,
    pub insert_user: Stmt,
    pub update_user: Stmt,
    pub insert_session: Stmt,
    pub insert_session_index: Stmt,
    pub select_session: Stmt,
    /// The same read at serial consistency: it completes any Paxos round in flight, so after
    /// a lost claim it sees the winner.
    pub select_session_serial: Stmt,
    pub claim_session_row: Stmt,
    pub sessions_of_user: Stmt,
    pub insert_device_id: Stmt,
    pub device_user: Stmt,
    pub device_set: Stmt,
    pub device_set_serial: Stmt,
    pub claim_device_set: Stmt,
    pub delete_device_set: Stmt,
    pub claim_passkey_id: Stmt,
    pub passkey_user: Stmt,
    pub delete_passkey_id: Stmt,
    pub passkey_set: Stmt,
    pub passkey_set_serial: Stmt,
    pub claim_passkey_set: Stmt,
    pub delete_passkey_set: Stmt,
    pub insert_audit_ident: Stmt,
    pub insert_audit_trace: Stmt,
    pub insert_audit_day: Stmt,
    pub audit_days: Stmt,
    pub audit_of_ident_day: Stmt,
    pub audit_of_trace_day: Stmt,
    pub insert_subject_key: Stmt,
    pub subject_key: Stmt,
    pub probe: Stmt,
    /// Read at serial consistency: it completes a claim in flight, so a node that lost a
    /// claim sees the winner.
    pub keys_of_kind: Stmt,
    pub claim_key: Stmt,
}

/// How a statement runs.
#[derive(Clone, Copy)]
enum Kind {
    DataRead,
    DataWrite,
    AuditRead,
    AuditWrite,
    /// A conditional write: never retried or speculated by the driver.
    Lwt,
    SerialRead,
}

impl Statements {
    pub async fn prepare(session: &Session, t: &Texts, p: &Profiles) -> Result<Self, StoreFailure> {
        let prepare = |name: &'static str, text: String, kind: Kind| async move {
            let lwt = is_lwt(&text);
            let mut s = session.prepare(text).await.map_err(|e| StoreFailure::prepare("prepare statements", &e))?;
            let (profile, idempotent) = match kind {
                Kind::DataRead | Kind::SerialRead => (&p.data_read, true),
                Kind::DataWrite => (&p.data_write, true),
                Kind::AuditRead => (&p.audit_read, true),
                Kind::AuditWrite => (&p.audit_write, true),
                Kind::Lwt => (&p.data_write, false),
            };
            s.set_execution_profile_handle(Some(profile.clone().into_handle()));
            if let Kind::AuditRead = kind {
                // Lookups want the newest few events; smaller pages stop sooner.
                s.set_page_size(200);
            }
            s.set_is_idempotent(idempotent);
            if let Kind::SerialRead = kind {
                s.set_consistency(match p.serial {
                    scylla::statement::SerialConsistency::Serial => scylla::statement::Consistency::Serial,
                    scylla::statement::SerialConsistency::LocalSerial => scylla::statement::Consistency::LocalSerial,
                });
            }
            Ok::<_, StoreFailure>(Stmt { prepared: s, name, lwt, executed: AtomicU64::new(0) })
        };
        use Kind::*;
        Ok(Statements {
            user_by_ident: prepare("user_by_ident", t.user_by_ident.clone(), DataRead).await?,
            user_ident_by_id: prepare("user_ident_by_id", t.user_ident_by_id.clone(), DataRead).await?,
            insert_user_id: prepare("insert_user_id", t.insert_user_id.clone(), DataWrite).await?,
            delete_user_id: prepare("delete_user_id", t.delete_user_id.clone(), DataWrite).await?,
            insert_user: prepare("insert_user", t.insert_user.clone(), Lwt).await?,
            update_user: prepare("update_user", t.update_user.clone(), Lwt).await?,
            insert_session: prepare("insert_session", t.insert_session.clone(), DataWrite).await?,
            insert_session_index: prepare("insert_session_index", t.insert_session_index.clone(), DataWrite).await?,
            select_session: prepare("select_session", t.select_session.clone(), DataRead).await?,
            select_session_serial: prepare("select_session_serial", t.select_session.clone(), SerialRead).await?,
            claim_session_row: prepare("claim_session_row", t.claim_session_row.clone(), Lwt).await?,
            sessions_of_user: prepare("sessions_of_user", t.sessions_of_user.clone(), DataRead).await?,
            insert_device_id: prepare("insert_device_id", t.insert_device_id.clone(), DataWrite).await?,
            device_user: prepare("device_user", t.device_user.clone(), DataRead).await?,
            device_set: prepare("device_set", t.device_set.clone(), DataRead).await?,
            device_set_serial: prepare("device_set_serial", t.device_set.clone(), SerialRead).await?,
            claim_device_set: prepare("claim_device_set", t.claim_device_set.clone(), Lwt).await?,
            delete_device_set: prepare("delete_device_set", t.delete_device_set.clone(), DataWrite).await?,
            claim_passkey_id: prepare("claim_passkey_id", t.claim_passkey_id.clone(), Lwt).await?,
            passkey_user: prepare("passkey_user", t.passkey_user.clone(), DataRead).await?,
            delete_passkey_id: prepare("delete_passkey_id", t.delete_passkey_id.clone(), DataWrite).await?,
            passkey_set: prepare("passkey_set", t.passkey_set.clone(), DataRead).await?,
            passkey_set_serial: prepare("passkey_set_serial", t.passkey_set.clone(), SerialRead).await?,
            claim_passkey_set: prepare("claim_passkey_set", t.claim_passkey_set.clone(), Lwt).await?,
            delete_passkey_set: prepare("delete_passkey_set", t.delete_passkey_set.clone(), DataWrite).await?,
            insert_audit_ident: prepare("insert_audit_ident", t.insert_audit_ident.clone(), AuditWrite).await?,
            insert_audit_trace: prepare("insert_audit_trace", t.insert_audit_trace.clone(), AuditWrite).await?,
            insert_audit_day: prepare("insert_audit_day", t.insert_audit_day.clone(), AuditWrite).await?,
            audit_days: prepare("audit_days", t.audit_days.clone(), AuditRead).await?,
            audit_of_ident_day: prepare("audit_of_ident_day", t.audit_of_ident_day.clone(), AuditRead).await?,
            audit_of_trace_day: prepare("audit_of_trace_day", t.audit_of_trace_day.clone(), AuditRead).await?,
            insert_subject_key: prepare("insert_subject_key", t.insert_subject_key.clone(), AuditWrite).await?,
            subject_key: prepare("subject_key", t.subject_key.clone(), AuditRead).await?,
            probe: prepare("probe", t.probe.clone(), DataRead).await?,
            keys_of_kind: prepare("keys_of_kind", t.keys_of_kind.clone(), SerialRead).await?,
            claim_key: prepare("claim_key", t.claim_key.clone(), Lwt).await?,
        })
    }
}

impl Statements {
    /// Every statement with how often it ran, for measurements and tests.
    pub fn counts(&self) -> Vec<(&'static str, bool, u64)> {
        [
            &self.user_by_ident,
            &self.user_ident_by_id,
            &self.insert_user_id,
            &self.delete_user_id,
            &self.insert_user,
            &self.update_user,
            &self.insert_session,
            &self.insert_session_index,
            &self.select_session,
            &self.select_session_serial,
            &self.claim_session_row,
            &self.sessions_of_user,
            &self.insert_device_id,
            &self.device_user,
            &self.device_set,
            &self.device_set_serial,
            &self.claim_device_set,
            &self.delete_device_set,
            &self.claim_passkey_id,
            &self.passkey_user,
            &self.delete_passkey_id,
            &self.passkey_set,
            &self.passkey_set_serial,
            &self.claim_passkey_set,
            &self.delete_passkey_set,
            &self.insert_audit_ident,
            &self.insert_audit_trace,
            &self.insert_audit_day,
            &self.audit_days,
            &self.audit_of_ident_day,
            &self.audit_of_trace_day,
            &self.insert_subject_key,
            &self.subject_key,
            &self.probe,
            &self.keys_of_kind,
            &self.claim_key,
        ]
        .iter()
        .map(|s| (s.name, s.lwt, s.executed.load(Ordering::Relaxed)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts() -> Texts {
        Texts::new("otpd", Duration::from_secs(30 * 86_400), Duration::from_secs(90 * 86_400))
    }

    #[test]
    fn only_the_claims_are_conditional_and_they_are_all_insert_if_not_exists_but_one() {
        let t = texts();
        let lwts: Vec<&str> = t.all().into_iter().filter(|(_, s)| is_lwt(s)).map(|(n, _)| n).collect();
        assert_eq!(
            lwts,
            [
                "insert_user",
                "update_user",
                "claim_session_row",
                "claim_device_set",
                "claim_passkey_id",
                "claim_passkey_set",
                "claim_key"
            ]
        );
        assert!(t.insert_user.ends_with("IF NOT EXISTS"));
        assert!(t.claim_key.ends_with("IF NOT EXISTS"), "a key generation is claimed");
        assert!(t.update_user.ends_with("IF EXISTS"), "registration's profile update: no bind marker in the condition");
        for (name, text) in t.all() {
            assert!(!text.contains("{ks}") && !text.contains(';'), "{name}: {text}");
            assert!(!text.contains('\''), "{name}: values are bound, never literals: {text}");
            assert!(!text.contains("TTL ?"), "{name}: TTLs are fixed per process: {text}");
            let table_named = text.contains(" otpd.");
            assert!(table_named, "{name}: every table is named with its keyspace: {text}");
        }
    }

    #[test]
    fn ttls_are_the_configured_ones() {
        let t = texts();
        let audit = 90 * 86_400;
        assert!(t.insert_audit_ident.ends_with(&format!("USING TTL {audit}")), "{}", t.insert_audit_ident);
        assert!(t.insert_audit_trace.ends_with(&format!("USING TTL {audit}")));
        assert!(t.insert_audit_day.ends_with(&format!("USING TTL {}", audit + 2 * 86_400)));
        let session = 31 * 86_400;
        assert!(t.insert_session.ends_with(&format!("USING TTL {session}")), "{}", t.insert_session);
        assert!(t.insert_session_index.ends_with(&format!("USING TTL {session}")));
        assert!(t.claim_session_row.ends_with(&format!("IF NOT EXISTS USING TTL {session}")));
        assert!(!t.insert_user.contains("TTL") && !t.claim_device_set.contains("TTL"), "accounts and devices stay");
    }

    #[test]
    fn reads_of_the_newest_rows_are_bounded() {
        let t = texts();
        assert_eq!(SESSION_ROWS, 35);
        assert!(t.select_session.ends_with("WHERE session_id = ? LIMIT 35"), "{}", t.select_session);
        assert!(t.device_set.ends_with("LIMIT 1"));
        assert!(t.passkey_set.ends_with("LIMIT 1"));
        assert_eq!(
            t.user_by_ident,
            "SELECT ident_hash, user_id, identifier, country_code, first_name, last_name, email, verified, created_at, \
             verified_at, updated_at FROM otpd.users_by_ident WHERE ident_hash = ?"
        );
    }
}
