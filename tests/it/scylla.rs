//! The ScyllaDB store, tested two ways.
//!
//! 1. **Conformance against a real ScyllaDB** — the same suites the embedded store passes —
//!    whenever `OTPD_TEST_SCYLLA` names a contact point (`127.0.0.1:9042`); each run uses a
//!    fresh keyspace and drops it afterwards. No ScyllaDB server can be installed on the
//!    machines this project is built on, so without the variable these tests say plainly that
//!    they skipped and why.
//! 2. **Wire-level tests against `kassandra`** (crate `kassandra-tester`, running otpd's copy
//!    of `kassandra` in `vendor/kassandra`): an in-memory server speaking CQL protocol v4, run
//!    in-process on a loopback port. It runs the real store code over the real driver:
//!    connect, migrations, every prepared statement, type mapping both ways, reads and writes,
//!    readiness, and nodes serving HTTP on it. The copy implements the two lightweight
//!    transactions the store uses — `INSERT … IF NOT EXISTS` (optionally `USING TTL`) and
//!    `UPDATE … IF EXISTS`, checked and written under one lock and answered with `[applied]`
//!    and, for a lost claim, the existing row — so the user, session and device suites run
//!    here too, and a node serves every flow. It is still one node that keeps rows forever
//!    (`USING TTL` is parsed, not enforced) and honours neither `CLUSTERING ORDER BY` nor
//!    `LIMIT`: nothing here shows expiry, server-side ordering, replication, consistency
//!    levels or Paxos under contention across replicas. Those are the conformance half's.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kassandra_tester::KassandraTester;
use kassandra_tester::kassandra::KassandraSession;
use otpd::config::{Dur, ScyllaConfig};
use otpd::store::scylla::{self, ConnectError, SchemaError, ScyllaOptions, ScyllaStore};
use otpd_actors::ports::{
    AuthMethod, Device, DeviceStore, InsertDevice, InsertUser, Platform, RevokeReason, Rotation, Session, SessionStore,
    StoreError, User, UserStore,
};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::device_key::{DeviceKey, KeyAlgorithm};
use otpd_actors::rules::identifier::Identifier;
use otpd_actors::rules::ids::{DeviceId, SessionId, UserId};
use otpd_actors::rules::keys::IdentHash;
use otpd_actors::testkit;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::sessions::{access, login_again, post_bearer, refresh, refresh_token};
use crate::support::*;

const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Says, where a person running the tests sees it (the harness captures `eprintln!`), that a
/// test did not run and why.
fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

// ---------------------------------------------------------------------------------------
// 1. Conformance against a real ScyllaDB (OTPD_TEST_SCYLLA).
// ---------------------------------------------------------------------------------------

/// A store on a fresh keyspace of the cluster named by `OTPD_TEST_SCYLLA`, or `None`.
async fn real_scylla(test: &str) -> Option<(Arc<ScyllaStore>, String)> {
    let Ok(contact) = std::env::var("OTPD_TEST_SCYLLA") else {
        skipped(
            test,
            "OTPD_TEST_SCYLLA is not set, so the ScyllaDB half of the conformance suite did not run \
             (no ScyllaDB server can be installed here; set it to a contact point such as 127.0.0.1:9042)",
        );
        return None;
    };
    let keyspace = format!("otpd_it_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let config = ScyllaConfig {
        contact_points: vec![contact],
        keyspace: keyspace.clone(),
        local_datacenter: std::env::var("OTPD_TEST_SCYLLA_DC").unwrap_or_default(),
        replication_factor: 1,
        ..ScyllaConfig::default()
    };
    let store =
        ScyllaStore::connect(&ScyllaOptions { config, session_ttl: SESSION_TTL, audit_retention: AUDIT_RETENTION })
            .await
            .expect("OTPD_TEST_SCYLLA is set, so the cluster must accept a connection");
    Some((store, keyspace))
}

async fn drop_keyspace(store: &ScyllaStore, keyspace: &str) {
    let _ = store.driver_session().query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_user_store() {
    let Some((s, ks)) = real_scylla("scylla_user_store").await else { return };
    testkit::user_store(s.clone()).await;
    drop_keyspace(&s, &ks).await;
    let Some((s, ks)) = real_scylla("scylla_user_purge").await else { return };
    testkit::user_purge(s.clone()).await;
    drop_keyspace(&s, &ks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_session_store() {
    let Some((s, ks)) = real_scylla("scylla_session_store").await else { return };
    testkit::session_store(s.clone()).await;
    testkit::open_session(s.clone()).await;
    drop_keyspace(&s, &ks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_device_store() {
    let Some((s, ks)) = real_scylla("scylla_device_store").await else { return };
    testkit::device_store(s.clone()).await;
    drop_keyspace(&s, &ks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_passkey_store() {
    let Some((s, ks)) = real_scylla("scylla_passkey_store").await else { return };
    testkit::passkey_store(s.clone()).await;
    drop_keyspace(&s, &ks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_audit_log() {
    let Some((s, ks)) = real_scylla("scylla_audit_log").await else { return };
    testkit::audit_log(s.clone()).await;
    drop_keyspace(&s, &ks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_erasure() {
    let Some((s, ks)) = real_scylla("scylla_erasure").await else { return };
    testkit::erasure(s.clone()).await;
    drop_keyspace(&s, &ks).await;
}

// ---------------------------------------------------------------------------------------
// 2. Wire-level smoke test against kassandra.
// ---------------------------------------------------------------------------------------

/// `[scylla]` for the in-memory server at `addr`.
pub(crate) fn kassandra_config(addr: SocketAddr, keyspace: &str) -> ScyllaConfig {
    ScyllaConfig {
        contact_points: vec![addr.to_string()],
        keyspace: keyspace.into(),
        replication_factor: 1,
        // kassandra cannot report schema versions (its system.peers/local are partial).
        await_schema_agreement: false,
        request_timeout: Dur(Duration::from_secs(2)),
        connect_timeout: Dur(Duration::from_secs(2)),
        ..ScyllaConfig::default()
    }
}

async fn connect(config: &ScyllaConfig) -> Result<Arc<ScyllaStore>, ConnectError> {
    ScyllaStore::connect(&ScyllaOptions {
        config: config.clone(),
        session_ttl: SESSION_TTL,
        audit_retention: AUDIT_RETENTION,
    })
    .await
}

/// Runs `body` with a fresh in-memory CQL server on a loopback port.
pub(crate) async fn with_kassandra<F, Fut>(body: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut body = Some(body);
    let _ = KassandraTester::new(KassandraSession::new())
        .in_scope(|addr| {
            let run = body.take().expect("the scope runs once");
            async move {
                run(addr).await;
                Ok::<(), ()>(())
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kassandra_smoke_migrations_statements_and_type_mapping() {
    with_kassandra(|addr| async move {
        let config = kassandra_config(addr, "otpd_smoke");

        // Migrations: applied once, recorded, and a second run has nothing to do.
        let first = scylla::migrate(&config).await.expect("migrations apply");
        assert_eq!(first.applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!((first.before, first.after), (0, 4));
        let again = scylla::migrate(&config).await.expect("migrations are idempotent");
        assert!(again.applied.is_empty(), "{again:?}");
        assert_eq!(again.after, 4);

        // Connecting prepares every statement on the server.
        let store = connect(&config).await.expect("the store connects to the migrated keyspace");
        assert_eq!(store.check(), Ok(()), "readiness: the cluster answered the probe");

        // Audit: the whole conformance suite (no LWT, no TTL assertion in it).
        testkit::audit_log(store.clone()).await;

        // Sessions: plain writes and reads, every column type.
        let t = Timestamp::from_millis(1_700_000_000_000);
        let user = UserId(Uuid::now_v7());
        let device = DeviceId(Uuid::now_v7());
        let mut s = Session::new(
            SessionId(Uuid::now_v7()),
            user,
            [7; 32],
            AuthMethod::Device(device),
            t,
            t.plus(Duration::from_secs(3600)),
        );
        s.client_ip = Some(IpAddr::V6("2001:db8::7".parse().unwrap()));
        s.user_agent = Some("smoke/1 (ünïcode)".into());
        store.insert_session(&s).await.unwrap();
        let by_code = Session::new(SessionId(Uuid::now_v7()), user, [8; 32], AuthMethod::Otp, t, t.plus(SESSION_TTL));
        store.insert_session(&by_code).await.unwrap();
        assert_eq!(store.session(s.id).await.unwrap().as_ref(), Some(&s), "a session round-trips");
        assert_eq!(store.session(SessionId(Uuid::now_v7())).await.unwrap(), None);
        let listed = store.sessions_of_user(user).await.unwrap();
        assert_eq!(listed, vec![s.clone(), by_code.clone()], "listed in id order");
        // Rotation and revocation are claims (`INSERT … IF NOT EXISTS USING TTL`).
        let soon = t.plus(Duration::from_secs(1));
        let rotated = match store.rotate_refresh(s.id, &[7; 32], &[9; 32], soon).await.unwrap() {
            Rotation::Rotated(r) => *r,
            other => panic!("the current digest rotates, got {other:?}"),
        };
        assert_eq!((rotated.generation, rotated.refresh_digest), (1, [9; 32]));
        assert_eq!(store.session(s.id).await.unwrap().as_ref(), Some(&rotated), "the claimed row reads back");
        assert!(store.revoke_session(by_code.id, RevokeReason::Logout, soon).await.unwrap());
        assert!(!store.revoke_session(by_code.id, RevokeReason::Logout, soon).await.unwrap(), "revoked once");

        // Accounts: the identifier is claimed (`INSERT … IF NOT EXISTS`); both lookups read
        // back every account column.
        let alice = User {
            id: UserId(Uuid::now_v7()),
            identifier: Identifier::Phone { e164: "+442079460000".into(), country_code: 44 },
            ident_hash: IdentHash([0x11; 16]),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: Some("ada@example.com".into()),
            verified: false,
            created_at: t,
            verified_at: None,
            updated_at: t,
        };
        assert_eq!(store.insert_user(&alice).await.unwrap(), InsertUser::Inserted);
        assert_eq!(store.user_by_identifier(&alice.ident_hash).await.unwrap().as_deref(), Some(&alice));
        assert_eq!(store.user_by_id(alice.id).await.unwrap().as_ref(), Some(&alice));
        assert_eq!(store.user_by_id(UserId(Uuid::now_v7())).await.unwrap(), None);

        // A second account for the identifier loses the claim and gets the winner back, decoded
        // from the claim's answer (every column, typed): no read follows.
        let mallory = User { id: UserId(Uuid::now_v7()), first_name: "Mallory".into(), ..alice.clone() };
        let before = counts(&store);
        assert_eq!(store.insert_user(&mallory).await.unwrap(), InsertUser::Exists(Box::new(alice.clone())));
        assert_eq!(
            ran(&before, &counts(&store)),
            vec![("delete_user_id", false, 1), ("insert_user", true, 1), ("insert_user_id", false, 1)],
            "id row, lost claim, the loser's id row deleted"
        );
        assert_eq!(store.user_by_id(mallory.id).await.unwrap(), None);
        assert_eq!(store.user_by_identifier(&alice.ident_hash).await.unwrap().as_deref(), Some(&alice), "untouched");

        // The profile update applies to an existing account only (`UPDATE … IF EXISTS`).
        let later = t.plus(Duration::from_secs(5));
        let verified = User { verified: true, verified_at: Some(later), updated_at: later, ..alice.clone() };
        store.update_user(&verified).await.unwrap();
        assert_eq!(store.user_by_id(alice.id).await.unwrap().as_ref(), Some(&verified));
        let nobody = User { id: UserId(Uuid::now_v7()), ident_hash: IdentHash([0x44; 16]), ..verified.clone() };
        assert!(matches!(store.update_user(&nobody).await, Err(StoreError::Corrupt(_))), "no account, no update");
        assert_eq!(
            store.user_by_identifier(&nobody.ident_hash).await.unwrap(),
            None,
            "the refused update wrote nothing"
        );
        let bob = User {
            id: UserId(Uuid::now_v7()),
            identifier: Identifier::Email("bob@example.com".into()),
            ident_hash: IdentHash([0x22; 16]),
            email: None,
            ..alice.clone()
        };
        assert_eq!(store.insert_user(&bob).await.unwrap(), InsertUser::Inserted);
        assert_eq!(store.user_by_identifier(&bob.ident_hash).await.unwrap().as_deref(), Some(&bob), "e-mail accounts");
        assert_eq!(store.user_by_identifier(&IdentHash([0x33; 16])).await.unwrap(), None);

        // Devices: each version of the set is claimed (`INSERT … IF NOT EXISTS`).
        let phone = Device {
            id: DeviceId(Uuid::now_v7()),
            user_id: user,
            name: "Ada's iPhone".into(),
            platform: Platform::Ios,
            key: DeviceKey { algorithm: KeyAlgorithm::Es256, spki_der: vec![4; 91] },
            created_at: t,
            revoked_at: None,
        };
        assert_eq!(store.insert_device(&phone, 5).await.unwrap(), InsertDevice::Inserted);
        assert_eq!(store.device(phone.id).await.unwrap().as_ref(), Some(&phone));
        assert_eq!(store.devices_of_user(user).await.unwrap(), vec![phone.clone()]);
        assert_eq!(store.device(DeviceId(Uuid::now_v7())).await.unwrap(), None);
        assert_eq!(store.insert_device(&phone, 5).await.unwrap(), InsertDevice::Inserted, "already in the set");
        let other = Device {
            id: DeviceId(Uuid::now_v7()),
            key: DeviceKey { spki_der: vec![5; 91], ..phone.key.clone() },
            ..phone.clone()
        };
        assert_eq!(store.insert_device(&other, 1).await.unwrap(), InsertDevice::LimitReached { max: 1 });
        let same_key = Device { id: DeviceId(Uuid::now_v7()), ..phone.clone() };
        assert_eq!(store.insert_device(&same_key, 5).await.unwrap(), InsertDevice::DuplicateKey(phone.id));
        let removed = store.revoke_device(user, phone.id, later).await.unwrap().expect("the owner's device");
        assert_eq!(removed.revoked_at, Some(later));
        assert_eq!(
            store.insert_device(&other, 1).await.unwrap(),
            InsertDevice::Inserted,
            "a removed device frees its place"
        );
        store.close();
    })
    .await;
}

/// The conformance suites whose contracts rest on the lightweight transactions — one account
/// per identifier, refresh rotation as a compare-and-swap, the device cap — including their
/// races: 16 concurrent claims on one key, exactly one applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kassandra_passes_the_user_session_and_device_suites() {
    with_kassandra(|addr| async move {
        let store = connect(&kassandra_config(addr, "otpd_suites")).await.expect("the store connects");
        testkit::user_store(store.clone()).await;
        // The purge's token-ordered scan and conditional delete are not in kassandra's CQL
        // parser: it runs against a real cluster only (`scylla_user_store`).
        println!("SKIPPED on kassandra: the purge of unverified accounts (token() scan, DELETE … IF)");
        testkit::session_store(store.clone()).await;
        testkit::open_session(store.clone()).await;
        testkit::device_store(store.clone()).await;
        testkit::erasure(store.clone()).await;
        testkit::passkey_store(store.clone()).await;
        store.close();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kassandra_refuses_a_newer_schema_and_a_missing_migration() {
    with_kassandra(|addr| async move {
        // A node that may not migrate refuses a keyspace that lacks the schema.
        let mut config = kassandra_config(addr, "otpd_versions");
        config.migrate_on_start = false;
        match connect(&config).await {
            Err(ConnectError::Schema(SchemaError::Pending { current: 0, needed: 4 })) => {}
            other => panic!("expected a refusal naming `otpd migrate`, got {:?}", other.err()),
        }
        let store_kind = otpd::config::StoreConfig { kind: "scylla".into(), ..Default::default() };
        let out = scylla::migrate_command(&store_kind, &config).await.unwrap();
        assert_eq!(
            out,
            "applied 1: accounts, sessions, devices, audit trail\n\
             applied 2: keys of the audit trail's personal fields (crypto-shredding)\n\
             applied 3: rotated keys\n\
             applied 4: passkeys\n\
             keyspace otpd_versions migrated from schema version 0 to 4\n"
        );
        let store = connect(&config).await.expect("migrated: the node starts");
        store.close();

        // A newer otpd migrated the keyspace: this one refuses to start on it.
        let record = store
            .driver_session()
            .prepare(
                "INSERT INTO otpd_versions.schema_migrations (scope, version, name, applied_at) VALUES (?, ?, ?, ?)",
            )
            .await
            .unwrap();
        store.driver_session().execute_unpaged(&record, ("otpd", 5i32, "from the future", scylla_ts(0))).await.unwrap();
        config.migrate_on_start = true;
        match connect(&config).await {
            Err(ConnectError::Schema(e @ SchemaError::Newer { found: 5, known: 4 })) => {
                assert!(e.to_string().contains("upgrade otpd"), "{e}");
            }
            other => panic!("expected a refusal of schema 5, got {:?}", other.err()),
        }
        let err = scylla::migrate(&config).await.unwrap_err();
        assert!(err.to_string().contains("newer than this otpd knows"), "{err}");
    })
    .await;
}

fn scylla_ts(ms: i64) -> ::scylla::value::CqlTimestamp {
    ::scylla::value::CqlTimestamp(ms)
}

/// A TCP forwarder between the node and the CQL server that can be cut: the cluster "goes
/// down" for the node without stopping the server.
struct Cuttable {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    links: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
}

impl Cuttable {
    async fn start(upstream: SocketAddr) -> Self {
        Self::start_on(upstream, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(upstream: SocketAddr, at: SocketAddr) -> Self {
        let listener = TcpListener::bind(at).await.expect("bind the forwarder");
        let addr = listener.local_addr().unwrap();
        let links: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().push(link);
            }
        });
        Cuttable { addr, accept, links }
    }

    /// Closes the listener and every forwarded connection.
    fn cut(&self) {
        self.accept.abort();
        for link in self.links.lock().drain(..) {
            link.abort();
        }
    }
}

/// A client's whole life over HTTP on a node whose store is kassandra, every claim included:
/// registration claims the identifier and verifies with `UPDATE … IF EXISTS`, a refresh claims
/// the next generation, a logout the revocation row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_kassandra_serves_register_verify_login_refresh_and_logout() {
    with_kassandra(|cql| async move {
        let t = start_node_with(move |c| {
            c.store.kind = "scylla".into();
            c.scylla = kassandra_config(cql, "otpd_flows");
        })
        .await;
        let p = phone(801);

        // Register, then verify with the code from the outbox.
        let r = t.post("/v1/register", json!({ "phone": p, "first_name": "Ada", "last_name": "Lovelace" })).await;
        assert_eq!(r.status, 202, "{}", r.raw);
        let code = t.code_for(&p).await;
        let r = t.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let registered = r.body;
        assert_eq!(registered["user"]["verified"], true, "{registered}");
        let otpd::store::Store::Scylla(store) = t.node.store().clone() else { panic!("a ScyllaDB node") };
        let ident = t.node.engine.identifier_hash(&t.node.engine.normalizer().phone(&p).unwrap());
        let account = store.user_by_identifier(&ident).await.unwrap().expect("the claimed account");
        assert_eq!(account.id.0.to_string(), registered["user"]["id"].as_str().unwrap());
        assert!(account.verified && account.verified_at.is_some(), "{account:?}");

        // Log in again by code: a second session of the same account.
        let tokens = login_again(&t, &p).await;
        assert_eq!(tokens["user"]["id"], registered["user"]["id"]);
        assert_ne!(tokens["session_id"], registered["session_id"]);
        let r = t.get("/v1/me", Some(&access(&tokens))).await;
        assert_eq!((r.status, r.body["user"]["first_name"].as_str()), (200, Some("Ada")), "{}", r.raw);

        // Refresh twice: each rotation claims the next generation.
        t.advance(Duration::from_secs(60));
        let r = refresh(&t, &refresh_token(&tokens)).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let rotated = r.body;
        assert_eq!(rotated["session_id"], tokens["session_id"]);
        assert_ne!(refresh_token(&rotated), refresh_token(&tokens));
        let r = refresh(&t, &refresh_token(&rotated)).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let current = r.body;

        // Log out: this session ends, the registration's lives on.
        let r = post_bearer(&t, "/v1/logout", &access(&current)).await;
        assert_eq!(r.status, 204, "{}", r.raw);
        let r = t.get("/v1/me", Some(&access(&current))).await;
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{}", r.raw);
        let r = refresh(&t, &refresh_token(&current)).await;
        assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"), "{}", r.raw);
        assert_eq!(t.get("/v1/me", Some(&access(&registered))).await.status, 200, "the other session lives on");
        t.node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_scylla_serves_the_send_path_and_answers_503_when_the_cluster_goes_away() {
    with_kassandra(|cql| async move {
        let link = Cuttable::start(cql).await;
        let mut scylla = kassandra_config(link.addr, "otpd_node");
        scylla.health_interval = Dur(Duration::from_millis(100));
        scylla.request_timeout = Dur(Duration::from_millis(500));
        let t = start_node_with(move |c| {
            c.store.kind = "scylla".into();
            c.scylla = scylla;
        })
        .await;

        let r = t.ops_get("/health/ready", None).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(r.body["checks"]["store"]["status"], "up");

        // The send path: account lookup and the audit append go to the cluster.
        let p = phone(501);
        let resp = t
            .client
            .post(t.url("/v1/login"))
            .header("x-request-id", "smoke-trace-1")
            .json(&json!({ "phone": p }))
            .send()
            .await
            .unwrap();
        let r = into_reply(resp).await;
        assert_eq!(r.status, 202, "{}", r.raw);
        let audit = t
            .client
            .get(t.ops_url("/v1/admin/audit?trace_id=smoke-trace-1"))
            .bearer_auth(&t.node.admin_token)
            .send()
            .await
            .unwrap();
        let audit = into_reply(audit).await;
        assert_eq!(audit.status, 200, "{}", audit.raw);
        let events = audit.body["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{}", audit.raw);
        assert_eq!((events[0]["api"].as_str(), events[0]["outcome"].as_str()), (Some("login"), Some("ok")));
        let by_phone = t
            .client
            .get(t.ops_url(&format!("/v1/admin/audit?identifier={}", p.replace('+', "%2B"))))
            .bearer_auth(&t.node.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(into_reply(by_phone).await.body["events"].as_array().map(Vec::len), Some(1));

        // The cluster goes away: requests that need it get a 503 problem document, never a
        // 500 and never the driver's text; readiness says which dependency is down.
        link.cut();
        let r = t.post("/v1/login", json!({ "phone": phone(502) })).await;
        assert_eq!(r.status, 503, "{}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.code(), "unavailable");
        for leak in ["127.0.0.1", "scylla", "Scylla", "driver", "connection"] {
            assert!(!r.raw.contains(leak), "the answer leaks {leak:?}: {}", r.raw);
        }
        let mut ready = t.ops_get("/health/ready", None).await;
        for _ in 0..50 {
            if ready.status == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            ready = t.ops_get("/health/ready", None).await;
        }
        assert_eq!(ready.status, 503, "{}", ready.raw);
        assert_eq!(ready.body["checks"]["store"]["status"], "down");
        let why = ready.body["checks"]["store"]["error"].as_str().unwrap();
        assert!(why.starts_with("ScyllaDB: "), "{why}");
        assert!(!why.contains(&link.addr.port().to_string()), "a category, not the driver's text: {why}");

        // The cluster comes back on the same address: the driver reconnects and the node is
        // ready again.
        let back = Cuttable::start_on(cql, link.addr).await;
        let mut ready = t.get("/health/ready", None).await;
        for _ in 0..150 {
            if ready.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            ready = t.get("/health/ready", None).await;
        }
        assert_eq!(ready.status, 200, "the node recovers when the cluster returns: {}", ready.raw);
        let r = t.post("/v1/login", json!({ "phone": phone(503) })).await;
        assert_eq!(r.status, 202, "{}", r.raw);
        t.node.shutdown().await;
        back.cut();
    })
    .await;
}

#[tokio::test]
async fn a_node_that_cannot_reach_its_cluster_does_not_start_and_says_where() {
    // A loopback port with nothing listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.store.kind = "scylla".into();
    config.scylla = kassandra_config(free, "otpd");
    let err = otpd::server::start(config, Arc::new(otpd_actors::rules::clock::ManualClock::starting_now()))
        .await
        .err()
        .expect("no cluster, no node");
    let msg = err.to_string();
    assert!(msg.contains("cannot connect to ScyllaDB") && msg.contains(&free.to_string()), "{msg}");
}

/// Statement counts of this store, by name.
fn counts(store: &ScyllaStore) -> std::collections::BTreeMap<&'static str, (bool, u64)> {
    store.statement_counts().into_iter().map(|(name, lwt, n)| (name, (lwt, n))).collect()
}

/// What ran between two snapshots: `(statement, is LWT, times)`, those that ran only.
fn ran(
    before: &std::collections::BTreeMap<&'static str, (bool, u64)>,
    after: &std::collections::BTreeMap<&'static str, (bool, u64)>,
) -> Vec<(&'static str, bool, u64)> {
    after
        .iter()
        .filter(|(name, (_, n))| *n > before[*name].1)
        .map(|(name, (lwt, n))| (*name, *lwt, n - before[name].1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_per_request_on_the_send_and_verify_paths() {
    with_kassandra(|cql| async move {
        let t = start_node_with(move |c| {
            c.store.kind = "scylla".into();
            c.scylla = kassandra_config(cql, "otpd_counts");
            // The probe must not run between two snapshots.
            c.scylla.health_interval = Dur(Duration::from_secs(3600));
            // The code leaves (and its delivery event is written) well after the answer, so
            // the two can be counted apart.
            c.delivery.batch_max_age = Dur(Duration::from_millis(300));
        })
        .await;
        let otpd::store::Store::Scylla(store) = t.node.store().clone() else { panic!("a ScyllaDB node") };

        // A verified account, written through the store.
        let p = phone(601);
        let identifier = t.node.engine.normalizer().phone(&p).unwrap();
        let now = t.node.engine.now();
        let user = User {
            id: UserId(Uuid::now_v7()),
            ident_hash: t.node.engine.identifier_hash(&identifier),
            identifier,
            first_name: "Count".into(),
            last_name: "Statements".into(),
            email: None,
            verified: true,
            created_at: now,
            verified_at: Some(now),
            updated_at: now,
        };
        assert_eq!(store.insert_user(&user).await.unwrap(), InsertUser::Inserted);

        // Send: POST /v1/login, and the delivery audit event its code produces later.
        let before = counts(&store);
        let r = t.post("/v1/login", json!({ "phone": p })).await;
        assert_eq!(r.status, 202, "{}", r.raw);
        let answered = counts(&store);
        let code = t.code_for(&p).await;
        let mut settled = counts(&store);
        for _ in 0..300 {
            // The delivery event writes its rows concurrently: wait for both of them.
            let grew = |name: &str| settled[name].1 >= before[name].1 + 2;
            if grew("insert_audit_trace") && grew("insert_audit_ident") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            settled = counts(&store);
        }
        let send = ran(&before, &answered);
        let delivery = ran(&answered, &settled);

        // Verify: POST /v1/login/verify.
        let before = counts(&store);
        let r = t.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let verify = ran(&before, &counts(&store));

        // A send for an identifier without an account (the enumeration-safe path).
        let before = counts(&store);
        assert_eq!(t.post("/v1/login", json!({ "phone": phone(602) })).await.status, 202);
        let unknown = ran(&before, &counts(&store));

        let mut table = String::from("\nstatements per request (ScyllaDB store, measured on kassandra):\n");
        for (what, stmts) in [
            ("POST /v1/login (answer)", &send),
            ("  its delivery audit event (after the answer)", &delivery),
            ("POST /v1/login/verify", &verify),
            ("POST /v1/login, unknown identifier", &unknown),
        ] {
            let total: u64 = stmts.iter().map(|s| s.2).sum();
            let list: Vec<String> =
                stmts.iter().map(|(n, l, k)| format!("{n}×{k}{}", if *l { " (LWT)" } else { "" })).collect();
            table.push_str(&format!("  {what}: {total} = {}\n", list.join(" + ")));
        }
        let _ = std::io::stderr().write_all(table.as_bytes());

        assert_eq!(
            send,
            vec![
                ("insert_audit_day", false, 2),
                ("insert_audit_ident", false, 1),
                ("insert_audit_trace", false, 1),
                ("insert_subject_key", false, 1),
                ("user_by_ident", false, 2)
            ],
            "send: the account read and its decoy (equal work with or without an account), the event by trace and \
             by identifier, the two day-index rows (first event of the day), the key of its sealed fields"
        );
        assert_eq!(
            delivery,
            vec![("insert_audit_ident", false, 1), ("insert_audit_trace", false, 1), ("insert_subject_key", false, 1)],
            "the delivery event: its day-index rows were written by this node already"
        );
        assert_eq!(
            verify,
            vec![
                ("insert_audit_day", false, 1),
                ("insert_audit_ident", false, 1),
                ("insert_audit_trace", false, 1),
                ("insert_session", false, 1),
                ("insert_session_index", false, 1),
                ("insert_subject_key", false, 1),
                ("user_by_ident", false, 1),
            ],
            "verify: one account read, the session and its index row, the event (a new trace id's day row) and \
             its key"
        );
        assert_eq!(unknown.iter().map(|s| s.2).sum::<u64>(), 7, "{unknown:?}");
        assert_eq!(send.iter().map(|s| s.2).sum::<u64>(), 7, "as many statements with an account as without");
        for (name, lwt, _) in send.iter().chain(&delivery).chain(&verify).chain(&unknown) {
            assert!(!lwt, "no lightweight transaction on the send or verify path: {name}");
        }
        t.node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_migrates_then_runs_on_scylla_and_never_prints_the_password() {
    const BIN: &str = env!("CARGO_BIN_EXE_otpd");
    const PASSWORD: &str = "scylla-password-that-must-never-print";
    with_kassandra(|cql| async move {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let command = |args: &[&str]| {
            let mut c = tokio::process::Command::new(BIN);
            c.args(args)
                .env_remove("OTPD_CONFIG")
                .env_remove("RUST_LOG")
                .env("OTPD_NODE__DATA_DIR", dir.path())
                .env("OTPD_HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .env("OTPD_ADMIN__LISTEN", "127.0.0.1:0")
                .env("OTPD_STORE__KIND", "scylla")
                .env("OTPD_SCYLLA__CONTACT_POINTS", format!("[\"{cql}\"]"))
                .env("OTPD_SCYLLA__KEYSPACE", "otpd_bin")
                .env("OTPD_SCYLLA__REPLICATION_FACTOR", "1")
                .env("OTPD_SCYLLA__AWAIT_SCHEMA_AGREEMENT", "false")
                .env("OTPD_SCYLLA__MIGRATE_ON_START", "false")
                // kassandra does not ask for credentials; the driver holds them all the same.
                .env("OTPD_SCYLLA__USERNAME", "otpd")
                .env("OTPD_SCYLLA__PASSWORD", PASSWORD)
                .env("OTPD_NODE__LOG_LEVEL", "trace")
                .kill_on_drop(true);
            c
        };

        let out = tokio::time::timeout(Duration::from_secs(60), command(&["migrate"]).output())
            .await
            .expect("otpd migrate finishes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            stdout,
            "applied 1: accounts, sessions, devices, audit trail\n\
             applied 2: keys of the audit trail's personal fields (crypto-shredding)\n\
             applied 3: rotated keys\n\
             applied 4: passkeys\n\
             keyspace otpd_bin migrated from schema version 0 to 4\n"
        );
        let again = command(&["migrate"]).output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&again.stdout), "keyspace otpd_bin is up to date at schema version 4\n");

        let check = command(&["check-config"]).output().await.unwrap();
        let printed = String::from_utf8_lossy(&check.stdout);
        assert!(printed.contains("otpd_bin") && !printed.contains(PASSWORD), "{printed}");

        // Trace-level logs are large: into a file, so a full pipe can never stall the node.
        let log_path = dir.path().join("node.log");
        let log_file = std::fs::File::create(&log_path).unwrap();
        let mut node = command(&[]).stderr(log_file).stdout(std::process::Stdio::null()).spawn().unwrap();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut ready = None;
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/health/ready")).send().await {
                ready = Some(r.status().as_u16());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ready, Some(200), "the node runs on the migrated keyspace");
        let r = client
            .post(format!("http://127.0.0.1:{port}/v1/login"))
            .json(&json!({ "phone": phone(701) }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        node.start_kill().unwrap();
        node.wait().await.unwrap();
        let logs = std::fs::read_to_string(&log_path).unwrap();
        assert!(logs.contains("connected to ScyllaDB"), "{}", &logs[..logs.len().min(2000)]);
        assert!(logs.contains(&format!("scylla://{cql}/otpd_bin")), "the start-up line names the store");
        assert!(!logs.contains(PASSWORD), "the password appears in the trace-level logs");
    })
    .await;
}
