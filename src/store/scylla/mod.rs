//! ScyllaDB as the durable store (`store.kind = "scylla"`), with the official `scylla` driver.
//!
//! One [`ScyllaStore`] implements all four store ports. It connects with the driver's
//! token- and shard-aware default load balancing (preferring `scylla.local_datacenter`),
//! applies the schema migrations ([`schema`]), prepares every statement once ([`cql`]) and
//! keeps a readiness probe running ([`health`]).
//!
//! # How the contracts of `otpd_actors::ports` hold without a single writer
//!
//! The embedded store gets atomic read-modify-write for free from its one writer thread. Here
//! every node writes, so each contract is kept by the data model:
//!
//! | contract | how | LWT? |
//! | --- | --- | --- |
//! | one account per identifier | the account row is claimed with `INSERT … IF NOT EXISTS`; `[applied]` is read by name and a lost race returns the winner's row (Scylla sends it back in the same answer) | yes, registration only |
//! | refresh rotation is a compare-and-swap | a session is a partition of write-once rows; rotation *g → g+1* claims row *g+1* with `INSERT … IF NOT EXISTS`: of racing rotations exactly one claims it, the others re-read, find their token retired and revoke | yes (refresh, not the code hot path) |
//! | revocation keeps the first time | the revocation row is claimed with `INSERT … IF NOT EXISTS` | yes (logout, reuse, device removal) |
//! | device cap and duplicate key, atomically | a user's devices are one document, versioned; a change claims version *v+1* with `INSERT … IF NOT EXISTS` after checking the cap on version *v* | yes (enrolment, removal) |
//! | audit append | plain inserts with a TTL, all of an event's writes concurrently | no |
//!
//! Every cell is written once, so lightweight transactions never race plain writes on the same
//! cell (their timestamps come from different clocks), and every conditional write is an
//! `INSERT … IF NOT EXISTS` — the one LWT form whose failed answer carries the existing row.
//!
//! The driver never retries a claim (they are not idempotent: a second attempt would read
//! the first one's row as someone else's). A claim whose answer is lost — a timeout, a broken
//! connection — may still have applied, so it is resolved by reading: a rotation re-reads at
//! serial consistency and finds its own new digest current, an enrolment finds its device in
//! the set, a registration finds its own account id; anything else is returned as an error.
//!
//! The send and verify paths use none of these LWTs: a send reads the account and appends an
//! audit event; a verify reads the account, inserts a session (plain, idempotent writes) and
//! appends an audit event (docs/decisions/2026-11-21-scylla-data-model.md has the statement counts).
//!
//! # Errors
//!
//! Every driver error becomes [`StoreError::Unavailable`] with a short category
//! ([`classify`]) for readiness, and the driver's text only in logs; the HTTP layer answers
//! `503 problem+json` without either.

pub mod audit;
pub mod cql;
pub mod devices;
pub mod health;
pub mod keys;
pub mod lwt;
pub mod options;
pub mod passkeys;
pub mod schema;
pub mod sessions;
pub mod tls;
pub mod users;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use otpd_actors::ports::StoreError;
use otpd_actors::rules::clock::Timestamp;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::policies::speculative_execution::SimpleSpeculativeExecutionPolicy;
use scylla::response::PagingState;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlTimestamp, MaybeUnset};

use crate::config::ScyllaConfig;
use cql::Stmt;
pub use schema::{MigrationReport, SchemaError};

/// `[scylla]` resolved: everything [`ScyllaStore::connect`] needs.
#[derive(Clone, Debug)]
pub struct ScyllaOptions {
    pub config: ScyllaConfig,
    /// `tokens.session_ttl`: session rows live this long plus a day.
    pub session_ttl: Duration,
    /// `retention.audit`: audit events live this long (TTL).
    pub audit_retention: Duration,
}

/// A failed driver call, reduced to what operators and readiness need.
#[derive(Debug, Clone, thiserror::Error)]
#[error("scylla {what}: {category} ({detail})")]
pub struct StoreFailure {
    /// The store operation (`read account`, `append audit event`, …).
    pub what: &'static str,
    /// A short, stable description of the cause ([`classify`]).
    pub category: &'static str,
    /// The driver's own text: for logs only.
    pub detail: String,
    pub corrupt: bool,
    /// The request may have been applied even so (a timeout, a connection lost after
    /// sending): a conditional write's outcome must be found out by reading.
    pub uncertain: bool,
}

impl StoreFailure {
    pub fn new(what: &'static str, category: &'static str, detail: &dyn std::fmt::Display) -> Self {
        StoreFailure { what, category, detail: detail.to_string(), corrupt: false, uncertain: false }
    }

    /// A failed request whose effect is unknown ([`may_have_applied`]).
    pub fn execution(what: &'static str, e: &ExecutionError) -> Self {
        StoreFailure { uncertain: may_have_applied(e), ..StoreFailure::new(what, classify(e), e) }
    }

    pub fn prepare(what: &'static str, e: &scylla::errors::PrepareError) -> Self {
        StoreFailure::new(what, "a statement was refused while preparing it", e)
    }

    /// The answer had an unexpected shape: the schema is not what this binary expects.
    pub fn decode(what: &'static str, e: &dyn std::fmt::Display) -> Self {
        StoreFailure { what, category: "unexpected answer", detail: e.to_string(), corrupt: true, uncertain: false }
    }
}

impl From<StoreFailure> for StoreError {
    fn from(f: StoreFailure) -> Self {
        if f.corrupt { StoreError::Corrupt(f.to_string()) } else { StoreError::Unavailable(f.to_string()) }
    }
}

/// A short, stable description of a driver error, safe to show in readiness.
pub fn classify(e: &ExecutionError) -> &'static str {
    match e {
        ExecutionError::RequestTimeout(_) => "request timed out",
        ExecutionError::EmptyPlan | ExecutionError::ConnectionPoolError(_) => "no connection to the cluster",
        ExecutionError::LastAttemptError(attempt) => classify_attempt(attempt),
        ExecutionError::PrepareError(_) => "a statement was refused while preparing it",
        ExecutionError::BadQuery(_) => "a statement's values were refused by the driver",
        ExecutionError::SchemaAgreementError(_) | ExecutionError::MetadataError(_) => {
            "the cluster did not agree on the schema"
        }
        _ => "driver error",
    }
}

/// Whether a failed request may still have been applied: it timed out, or its connection
/// broke after it was sent. (An `Unavailable` error, by contrast, is refused before any write.)
pub fn may_have_applied(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::RequestTimeout(_)
            | ExecutionError::LastAttemptError(
                RequestAttemptError::DbError(DbError::WriteTimeout { .. }, _)
                    | RequestAttemptError::BrokenConnectionError(_)
            )
    )
}

fn classify_attempt(e: &RequestAttemptError) -> &'static str {
    match e {
        RequestAttemptError::DbError(db, _) => match db {
            DbError::Unavailable { .. } => "not enough replicas alive for the consistency level",
            DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => "replicas did not answer in time",
            DbError::ReadFailure { .. } | DbError::WriteFailure { .. } => "replicas failed the request",
            DbError::Overloaded | DbError::RateLimitReached { .. } => "the cluster is overloaded",
            DbError::IsBootstrapping => "the node is still starting",
            DbError::AuthenticationError | DbError::Unauthorized => "not authorised by the cluster",
            DbError::SyntaxError | DbError::Invalid | DbError::ConfigError | DbError::AlreadyExists { .. } => {
                "the cluster refused a statement (schema mismatch?)"
            }
            DbError::Unprepared { .. } => "a prepared statement was lost by the cluster",
            _ => "the cluster answered with an error",
        },
        RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId => {
            "connection to the cluster broken"
        }
        _ => "driver error",
    }
}

/// Execution profiles: reads may be sent speculatively to a second replica; writes never
/// are (the driver also never speculates or retries a statement not marked idempotent, which
/// is how every LWT is prepared).
#[derive(Clone)]
pub struct Profiles {
    pub data_read: ExecutionProfile,
    pub data_write: ExecutionProfile,
    pub audit_read: ExecutionProfile,
    pub audit_write: ExecutionProfile,
    pub serial: SerialConsistency,
}

impl Profiles {
    pub fn new(c: &ScyllaConfig) -> Self {
        let consistency = options::consistency(&c.consistency).unwrap_or(Consistency::LocalQuorum);
        let audit = options::consistency(&c.audit_consistency).unwrap_or(Consistency::LocalQuorum);
        let serial = options::serial_consistency(&c.serial_consistency).unwrap_or(SerialConsistency::LocalSerial);
        let mut lb = DefaultPolicy::builder().token_aware(true);
        if !c.local_datacenter.is_empty() {
            // LOCAL_* consistency counts only the local datacenter's replicas: sending to
            // another one would only add latency.
            lb = lb.prefer_datacenter(c.local_datacenter.clone()).permit_dc_failover(false);
        }
        let base = ExecutionProfile::builder()
            .load_balancing_policy(lb.build())
            .retry_policy(Arc::new(DefaultRetryPolicy::new()))
            .request_timeout(Some(c.request_timeout.0))
            .serial_consistency(Some(serial));
        let speculative = (!c.speculative_after.0.is_zero()).then(|| {
            Arc::new(SimpleSpeculativeExecutionPolicy { max_retry_count: 1, retry_interval: c.speculative_after.0 })
                as Arc<dyn scylla::policies::speculative_execution::SpeculativeExecutionPolicy>
        });
        let read = |cl| base.clone().consistency(cl).speculative_execution_policy(speculative.clone()).build();
        let write = |cl| base.clone().consistency(cl).speculative_execution_policy(None).build();
        Profiles {
            data_read: read(consistency),
            data_write: write(consistency),
            audit_read: read(audit),
            audit_write: write(audit),
            serial,
        }
    }
}

/// Why a node could not get a usable store.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to ScyllaDB at {contact_points}: {error}")]
    Session { contact_points: String, error: String },
    #[error("TLS set-up: {0}")]
    Tls(#[from] crate::tls_files::TlsFileError),
    #[error("schema: {0}")]
    Schema(#[from] SchemaError),
    #[error("{0}")]
    Failure(#[from] StoreFailure),
}

/// Opens a driver session as `[scylla]` says (no keyspace is selected: every statement names
/// its table with the keyspace).
pub async fn open_session(c: &ScyllaConfig) -> Result<Session, ConnectError> {
    let profiles = Profiles::new(c);
    let mut builder = SessionBuilder::new()
        .known_nodes(&c.contact_points)
        .connection_timeout(c.connect_timeout.0)
        .default_execution_profile_handle(profiles.data_write.into_handle())
        .auto_await_schema_agreement(c.await_schema_agreement);
    if let Some(password) = &c.password {
        builder = builder.user(c.username.clone(), password.0.clone());
    }
    if c.tls {
        builder = builder.tls_context(Some(tls::client_config(c)?));
    }
    builder
        .build()
        .await
        .map_err(|e| ConnectError::Session { contact_points: c.contact_points.join(", "), error: e.to_string() })
}

/// `otpd migrate`: creates the keyspace (if configured) and applies pending migrations.
pub async fn migrate(c: &ScyllaConfig) -> Result<MigrationReport, ConnectError> {
    let session = open_session(c).await?;
    let create = c.create_keyspace.then_some((c.local_datacenter.as_str(), c.replication_factor));
    let state = schema::read_state(&session, &c.keyspace, create).await?;
    Ok(schema::apply_pending(&session, &c.keyspace, &state, now_ms()).await?)
}

/// Why `otpd migrate` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("store.kind is {0:?}: migrations are for store.kind = \"scylla\" (the embedded store needs none)")]
    NotScylla(String),
    #[error("{0}")]
    Connect(#[from] ConnectError),
}

/// `otpd migrate`: what it prints, or why it failed.
pub async fn migrate_command(store: &crate::config::StoreConfig, c: &ScyllaConfig) -> Result<String, MigrateError> {
    if store.kind != "scylla" {
        return Err(MigrateError::NotScylla(store.kind.clone()));
    }
    let report = migrate(c).await?;
    let mut out = String::new();
    for (version, name) in &report.applied {
        out.push_str(&format!("applied {version}: {name}\n"));
    }
    if report.applied.is_empty() {
        out.push_str(&format!("keyspace {} is up to date at schema version {}\n", report.keyspace, report.after));
    } else {
        out.push_str(&format!(
            "keyspace {} migrated from schema version {} to {}\n",
            report.keyspace, report.before, report.after
        ));
    }
    Ok(out)
}

fn now_ms() -> i64 {
    i64::try_from(otpd_actors::rules::clock::Timestamp::system_now().as_millis()).unwrap_or(i64::MAX)
}

/// The ScyllaDB store: all four ports over one driver session.
pub struct ScyllaStore {
    session: Arc<Session>,
    cql: cql::Statements,
    audit_days: audit::DayIndexCache,
    /// The keys audit events' personal fields are sealed with (`store::shred`).
    keys: crate::store::shred::KeySource,
    health: health::Health,
    keyspace: String,
    /// Where the purge of unverified accounts goes on scanning (a token of `users_by_ident`).
    purge_from: std::sync::atomic::AtomicI64,
}

impl ScyllaStore {
    /// Connects, checks (and with `migrate_on_start`, applies) the schema, prepares every
    /// statement and starts the readiness probe. Fails rather than start on a schema this
    /// binary does not match.
    pub async fn connect(options: &ScyllaOptions) -> Result<Arc<Self>, ConnectError> {
        let c = &options.config;
        let session = Arc::new(open_session(c).await?);
        let create = c.create_keyspace.then_some((c.local_datacenter.as_str(), c.replication_factor));
        let state = schema::read_state(&session, &c.keyspace, create).await?;
        state.check_not_newer()?;
        if state.current() < schema::LATEST {
            if !c.migrate_on_start {
                return Err(SchemaError::Pending { current: state.current(), needed: schema::LATEST }.into());
            }
            schema::apply_pending(&session, &c.keyspace, &state, now_ms()).await?;
        }
        let profiles = Profiles::new(c);
        let texts = cql::Texts::new(&c.keyspace, options.session_ttl, options.audit_retention);
        let cql = cql::Statements::prepare(&session, &texts, &profiles).await?;
        let health = health::Health::start(session.clone(), cql.probe.prepared.clone(), c.health_interval.0).await;
        tracing::info!(
            contact_points = %c.contact_points.join(", "),
            keyspace = %c.keyspace,
            datacenter = %c.local_datacenter,
            consistency = %c.consistency,
            tls = c.tls,
            schema_version = schema::LATEST,
            "connected to ScyllaDB"
        );
        Ok(Arc::new(ScyllaStore {
            session,
            cql,
            audit_days: audit::DayIndexCache::default(),
            keys: crate::store::shred::KeySource::default(),
            health,
            keyspace: c.keyspace.clone(),
            purge_from: std::sync::atomic::AtomicI64::new(i64::MIN),
        }))
    }

    /// Readiness: whether the cluster answered the last probe (see [`health`]).
    pub fn check(&self) -> Result<(), String> {
        self.health.check()
    }

    /// Stops the readiness probe. The driver closes its connections when the last handle
    /// to the session is dropped.
    pub fn close(&self) {
        self.health.stop();
    }

    /// Every statement with whether it is a lightweight transaction and how often this
    /// process ran it (a page of a paged read counts once).
    pub fn statement_counts(&self) -> Vec<(&'static str, bool, u64)> {
        self.cql.counts()
    }

    /// The driver session (tests, tools).
    pub fn driver_session(&self) -> &Arc<Session> {
        &self.session
    }
}

impl ScyllaStore {
    /// Runs a prepared statement; any driver error becomes a [`StoreFailure`] naming `what`.
    async fn run(
        &self,
        statement: &Stmt,
        values: impl SerializeRow,
        what: &'static str,
    ) -> Result<QueryResult, StoreFailure> {
        statement.executed();
        self.session.execute_unpaged(&statement.prepared, values).await.map_err(|e| StoreFailure::execution(what, &e))
    }

    /// Runs a conditional write and reads its `[applied]` by name ([`lwt`]).
    async fn claim(
        &self,
        statement: &Stmt,
        values: impl SerializeRow,
        what: &'static str,
    ) -> Result<lwt::LwtAnswer, StoreFailure> {
        let result = self.run(statement, values, what).await?;
        lwt::answer(result).map_err(|e| StoreFailure::new(what, "the conditional write's answer is unusable", &e))
    }

    /// Every row of a read, following pages, typed.
    async fn rows<R>(
        &self,
        statement: &Stmt,
        values: impl SerializeRow,
        what: &'static str,
        enough: usize,
    ) -> Result<Vec<R>, StoreFailure>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let mut out = Vec::new();
        let mut paging = PagingState::start();
        loop {
            statement.executed();
            let (result, next) = self
                .session
                .execute_single_page(&statement.prepared, &values, paging)
                .await
                .map_err(|e| StoreFailure::new(what, classify(&e), &e))?;
            let rows = result.into_rows_result().map_err(|e| StoreFailure::decode(what, &e))?;
            for row in rows.rows::<R>().map_err(|e| StoreFailure::decode(what, &e))? {
                out.push(row.map_err(|e| StoreFailure::decode(what, &e))?);
            }
            match next.into_paging_control_flow() {
                ControlFlow::Continue(state) if out.len() < enough => paging = state,
                _ => return Ok(out),
            }
        }
    }
}

/// A timestamp as CQL stores it (milliseconds since the epoch, signed).
fn cql_ts(t: Timestamp) -> CqlTimestamp {
    CqlTimestamp(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
}

fn from_cql_ts(ms: i64, what: &'static str) -> Result<Timestamp, StoreFailure> {
    u64::try_from(ms).map(Timestamp::from_millis).map_err(|_| StoreFailure::decode(what, &"a timestamp before 1970"))
}

/// An optional value written as "unset" rather than null, so an absent field writes no
/// tombstone.
fn unset_if_none<T>(v: Option<T>) -> MaybeUnset<T> {
    v.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        self.health.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_driver_text_out_of_the_category() {
        let f =
            StoreFailure::new("read account", "request timed out", &"Request execution exceeded 2000ms at 10.0.0.7");
        let e: StoreError = f.clone().into();
        assert!(matches!(e, StoreError::Unavailable(_)));
        assert_eq!(f.category, "request timed out");
        assert!(e.to_string().contains("read account") && e.to_string().contains("10.0.0.7"), "logs keep the detail");
        let e: StoreError = StoreFailure::decode("read session", &"column slot has type text").into();
        assert!(matches!(e, StoreError::Corrupt(_)));
    }

    #[test]
    fn driver_errors_are_classified() {
        assert_eq!(classify(&ExecutionError::RequestTimeout(Duration::from_secs(2))), "request timed out");
        assert_eq!(classify(&ExecutionError::EmptyPlan), "no connection to the cluster");
        let unavailable = RequestAttemptError::DbError(
            DbError::Unavailable { consistency: Consistency::LocalQuorum, required: 2, alive: 1 },
            "Cannot achieve consistency level".into(),
        );
        assert_eq!(
            classify(&ExecutionError::LastAttemptError(unavailable)),
            "not enough replicas alive for the consistency level"
        );
        let auth = RequestAttemptError::DbError(DbError::Unauthorized, "no SELECT on otpd.users".into());
        assert_eq!(classify(&ExecutionError::LastAttemptError(auth.clone())), "not authorised by the cluster");

        // A timed-out conditional write may have applied; a refused one has not.
        assert!(may_have_applied(&ExecutionError::RequestTimeout(Duration::from_secs(2))));
        let cas_timeout = RequestAttemptError::DbError(
            DbError::WriteTimeout {
                consistency: Consistency::LocalSerial,
                received: 1,
                required: 2,
                write_type: scylla::errors::WriteType::Cas,
            },
            "Operation timed out".into(),
        );
        assert!(may_have_applied(&ExecutionError::LastAttemptError(cas_timeout)));
        assert!(!may_have_applied(&ExecutionError::LastAttemptError(auth)));
        assert!(!may_have_applied(&ExecutionError::EmptyPlan));
    }
}
