//! Three real `otpd` processes joined in one cluster on loopback.
//!
//! Every node is the release binary under test, started with `[cluster]` set through
//! `OTPD_*` variables, as an operator would. The nodes share what a real deployment shares:
//! one durable store (an in-memory CQL server, kassandra, in this test process: it outlives
//! a node's `kill -9`, as a ScyllaDB cluster would) and one real `redis-server` for
//! cooldowns and limits. Each node writes the codes it sends to its own outbox file.
//!
//! Ownership is checked against the definition, not against what the nodes say of
//! themselves: the test computes each identifier's partition and owner from the shared hash
//! key and the member names (`otpd_actors::actors::cluster::ring`), then looks at where the
//! challenges really are (each node's live challenge count).
//!
//! The link's security is checked the same way, from outside: nodes with mutual TLS that know
//! one seed each still meet every member (every dial is TLS), a plaintext ractor_cluster peer
//! with the right cookie is kept out, and a node with the right cookie but another hash key
//! gets nothing run and believes nothing it is answered.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kassandra_tester::KassandraTester;
use kassandra_tester::kassandra::KassandraSession;
use otpd_actors::actors::cluster::ring::{Ring, partition_of};
use otpd_actors::rules::keys::Keys;
use serde_json::{Value, json};

use crate::redis_server::{Redis, SHARED_HASH_KEY};
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_otpd");
/// 32 bytes or more, with enough different characters: what the configuration accepts.
const COOKIE: &str = "cluster-test-cookie-0123456789-abcdefghijklmnop";
const ADMIN: &str = "cluster-test-admin-token-0123456789";
const HS256: &str = "cluster-test-hs256-secret-0123456789abcdef";
/// Short, so a test can watch a cooldown hold and then pass.
const COOLDOWN: Duration = Duration::from_secs(3);
/// How long a survivor may take to notice a dead node and take over its identifiers.
const TAKEOVER: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    reserved_port()
}

/// One `otpd` process.
struct NodeProc {
    name: String,
    child: Option<Child>,
    base: String,
    data: PathBuf,
    client: reqwest::Client,
}

impl NodeProc {
    fn outbox(&self) -> PathBuf {
        self.data.join("outbox.jsonl")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("otpd.log")).unwrap_or_default()
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.post_traced(path, body, None).await
    }

    async fn post_traced(&self, path: &str, body: Value, trace: Option<&str>) -> Reply {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = trace {
            req = req.header("x-request-id", t);
        }
        match req.send().await {
            Ok(resp) => into_reply(resp).await,
            Err(e) => panic!("{} {path}: {e}\n{}", self.name, self.log()),
        }
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        into_reply(req.send().await.unwrap_or_else(|e| panic!("{} {path}: {e}", self.name))).await
    }

    /// Members this node sees, from `/health/ready`.
    async fn members(&self) -> Vec<String> {
        let r = self.get("/health/ready", None).await;
        r.body["cluster"]["members"]
            .as_array()
            .map(|m| m.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    async fn live_challenges(&self) -> u64 {
        let r = self.get("/v1/admin/stats", Some(ADMIN)).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        r.body["challenges"]["live"].as_u64().expect("a count")
    }

    /// The newest code this node sent to `to` with `purpose` (waits for its outbox).
    async fn code_for(&self, to: &str, purpose: &str, nth: usize) -> String {
        for _ in 0..500 {
            let sent: Vec<Value> =
                outbox_messages(&self.outbox(), to).into_iter().filter(|m| m["purpose"] == purpose).collect();
            if sent.len() >= nth {
                return sent[nth - 1]["code"].as_str().expect("a code").to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never sent {purpose} code #{nth} to {to}", self.name);
    }

    /// `kill -9`: no shutdown path runs.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Names, ports and shared services of one test's cluster.
struct Fleet {
    cql: SocketAddr,
    redis: Redis,
    dir: tempfile::TempDir,
    /// (name, http port, cluster port) of every node the test may start.
    /// Name, HTTP port, cluster port, ops port.
    slots: Vec<(String, u16, u16, u16)>,
    keys: Keys,
}

impl Fleet {
    fn new(cql: SocketAddr, redis: Redis, nodes: usize) -> Fleet {
        let mut master = [0u8; 32];
        for (i, b) in master.iter_mut().enumerate() {
            *b = u8::from_str_radix(&SHARED_HASH_KEY[2 * i..2 * i + 2], 16).unwrap();
        }
        Fleet {
            cql,
            redis,
            dir: tempfile::tempdir().unwrap(),
            slots: (1..=nodes).map(|i| (format!("otpd-{i}"), free_port(), free_port(), free_port())).collect(),
            keys: Keys::from_master(&master),
        }
    }

    /// Starts node `i` (0-based), seeded with every other slot, and waits until it serves.
    async fn start(&self, i: usize) -> NodeProc {
        self.start_with(i, &[]).await
    }

    /// [`Fleet::start`] with more environment variables.
    async fn start_with(&self, i: usize, extra: &[(&str, String)]) -> NodeProc {
        let (name, http, cport, ops) = self.slots[i].clone();
        let data = self.dir.path().join(&name);
        std::fs::create_dir_all(&data).unwrap();
        let seeds: Vec<String> =
            self.slots.iter().filter(|s| s.0 != name).map(|s| format!("\"127.0.0.1:{}\"", s.2)).collect();
        let log = std::fs::File::create(data.join("otpd.log")).unwrap();
        let child = Command::new(BIN)
            .env_remove("OTPD_CONFIG")
            .env("OTPD_HTTP__LISTEN", format!("127.0.0.1:{http}"))
            // The test reads members, stats and metrics through the one listener it knows.
            .env("OTPD_ADMIN__LISTEN", format!("127.0.0.1:{ops}"))
            .env("OTPD_ADMIN__OPS_ON_PUBLIC_LISTENER", "true")
            .env("OTPD_NODE__DATA_DIR", &data)
            .env("OTPD_NODE__LOG_FORMAT", "text")
            .env("OTPD_NODE__LOG_LEVEL", "warn,otpd_actors::cluster=info")
            .env("OTPD_STORE__KIND", "scylla")
            .env("OTPD_SCYLLA__CONTACT_POINTS", format!("[\"{}\"]", self.cql))
            .env("OTPD_SCYLLA__KEYSPACE", "otpd_cluster")
            .env("OTPD_SCYLLA__REPLICATION_FACTOR", "1")
            // kassandra cannot report schema versions (its system tables are partial).
            .env("OTPD_SCYLLA__AWAIT_SCHEMA_AGREEMENT", "false")
            .env("OTPD_REDIS__URL", format!("redis://127.0.0.1:{}", self.redis.ports()[0]))
            .env("OTPD_SECRETS__HASH_KEY", SHARED_HASH_KEY)
            .env("OTPD_SECRETS__ADMIN_TOKEN", ADMIN)
            .env("OTPD_TOKENS__ALGORITHM", "HS256")
            .env("OTPD_TOKENS__HS256_SECRET", HS256)
            .env("OTPD_OTP__RESEND_COOLDOWN", format!("{}s", COOLDOWN.as_secs()))
            // Every request of this test comes from 127.0.0.1 and every number shares the
            // +1202 prefix: the per-IP and per-prefix rules (and the conversion guard, as most
            // codes are never typed) would refuse the traffic, so they are off; the
            // per-identifier rules and the cooldown stay on.
            .env("OTPD_LIMITS__IP_SEND", "{ limit = 0 }")
            .env("OTPD_LIMITS__IP_VERIFY", "{ limit = 0 }")
            .env("OTPD_LIMITS__PREFIX_SEND", "{ limit = 0 }")
            .env("OTPD_LIMITS__CONVERSION_GUARD", "{ mode = \"off\" }")
            .env("OTPD_CLUSTER__ENABLED", "true")
            .env("OTPD_CLUSTER__NODE_NAME", &name)
            .env("OTPD_CLUSTER__LISTEN", format!("127.0.0.1:{cport}"))
            .env("OTPD_CLUSTER__SEEDS", format!("[{}]", seeds.join(",")))
            .env("OTPD_CLUSTER__COOKIE", COOKIE)
            .env("OTPD_CLUSTER__FORWARD_TIMEOUT", "1s")
            .env("OTPD_CLUSTER__RECONNECT_INTERVAL", "200ms")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("otpd starts");
        let node = NodeProc {
            name,
            child: Some(child),
            base: format!("http://127.0.0.1:{http}"),
            data,
            client: reqwest::Client::new(),
        };
        for _ in 0..1000 {
            if let Ok(r) = node.client.get(format!("{}/health/ready", node.base)).send().await
                && r.status() == 200
            {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} did not become ready:\n{}", node.name, node.log());
    }

    /// The owner of `phone` among `members`, by the ring's definition.
    fn owner(&self, phone: &str, members: &[&str]) -> String {
        Ring::new(members.iter().copied()).owner(partition_of(&self.keys.identifier_hash(phone))).to_owned()
    }
}

/// Waits until every node in `nodes` sees exactly `expected` as members.
async fn converge(nodes: &[&NodeProc], expected: &[&str], limit: Duration) -> Duration {
    let started = Instant::now();
    let want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    loop {
        let mut all = true;
        for n in nodes {
            all &= n.members().await == want;
        }
        if all {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let mut seen = String::new();
            for n in nodes {
                seen += &format!("{} sees {:?}\n{}\n", n.name, n.members().await, n.log());
            }
            panic!("membership did not converge on {want:?} within {limit:?}:\n{seen}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that, once a node saw all three members, its membership never changed again:
/// ractor_cluster closes one of two connections a pair of nodes opened at once, and that
/// must not move partitions back and forth.
async fn no_flap(nodes: &[&NodeProc]) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in nodes {
        let log = n.log();
        let changes: Vec<&str> = log.lines().filter(|l| l.contains("cluster membership changed")).collect();
        let full = changes.iter().position(|l| l.contains("otpd-1,otpd-2,otpd-3"));
        let full = full.unwrap_or_else(|| panic!("{} never logged the three members:\n{log}", n.name));
        assert_eq!(changes.len(), full + 1, "{} changed membership after all three joined:\n{log}", n.name);
    }
}

/// Runs `body` with a fresh in-memory CQL server and a real Redis; `None` (after saying
/// why) when `redis-server` is missing.
async fn with_services<F, Fut>(test: &str, body: F)
where
    F: FnOnce(SocketAddr, Redis) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(redis) = Redis::standalone(test).await else { return };
    let mut body = Some((body, redis));
    let _ = KassandraTester::new(KassandraSession::new())
        .in_scope(|addr| {
            let (run, redis) = body.take().expect("the scope runs once");
            async move {
                run(addr, redis).await;
                Ok::<(), ()>(())
            }
        })
        .await;
}

/// Phones `from..from+n` grouped by their owner among `members`.
fn by_owner(fleet: &Fleet, from: u32, n: u32, members: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in from..from + n {
        let p = phone(i);
        out.entry(fleet.owner(&p, members)).or_default().push(p);
    }
    out
}

fn register_body(p: &str) -> Value {
    json!({ "phone": p, "first_name": "Clu", "last_name": "Ster" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_requested_through_one_node_verifies_through_the_others() {
    with_services("cluster::a_code_requested_through_one_node_verifies_through_the_others", |cql, redis| async move {
        let fleet = Fleet::new(cql, redis, 3);
        let a = fleet.start(0).await;
        let b = fleet.start(1).await;
        let c = fleet.start(2).await;
        let names = ["otpd-1", "otpd-2", "otpd-3"];
        converge(&[&a, &b, &c], &names, Duration::from_secs(20)).await;
        no_flap(&[&a, &b, &c]).await;
        let nodes = [&a, &b, &c];

        // One identifier owned by each node, so every combination of entry, owner and
        // verifying node occurs: register through A, verify through B, log in through B,
        // verify through C.
        let groups = by_owner(&fleet, 100, 60, &names);
        for owner in names {
            let p = &groups[owner][0];
            let r = a.post("/v1/register", register_body(p)).await;
            assert_eq!(r.status, 202, "{}", r.raw);
            let code = a.code_for(p, "register", 1).await;
            let r = b.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
            assert_eq!(r.status, 200, "register through otpd-1, verify through otpd-2 (owner {owner}): {}", r.raw);
            let access = r.body["access_token"].as_str().unwrap().to_owned();
            // The account and the token are good on every node.
            for n in nodes {
                let me = n.get("/v1/me", Some(&access)).await;
                assert_eq!(me.status, 200, "{}: {}", n.name, me.raw);
                assert_eq!(me.body["user"]["phone"], p.as_str());
            }

            let r = b.post("/v1/login", json!({ "phone": p })).await;
            assert_eq!(r.status, 202, "{}", r.raw);
            let code = b.code_for(p, "login", 1).await;
            // A wrong code through A counts against the challenge held on the owner …
            let r = a.post("/v1/login/verify", json!({ "phone": p, "code": wrong_code(&code) })).await;
            assert_eq!((r.status, r.code()), (400, "invalid_code"), "{}", r.raw);
            assert_eq!(r.body["attempts_left"], 4, "{}", r.raw);
            // … and the right one through C signs in, once.
            let r = c.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
            assert_eq!(r.status, 200, "log in through otpd-2, verify through otpd-3 (owner {owner}): {}", r.raw);
            let r = a.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
            assert_eq!(r.code(), "code_already_used", "{}", r.raw);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_spread_over_three_nodes_puts_each_identifier_on_exactly_one_owner() {
    with_services(
        "cluster::traffic_spread_over_three_nodes_puts_each_identifier_on_exactly_one_owner",
        |cql, redis| async move {
            let fleet = Fleet::new(cql, redis, 3);
            let nodes = [fleet.start(0).await, fleet.start(1).await, fleet.start(2).await];
            let names = ["otpd-1", "otpd-2", "otpd-3"];
            converge(&nodes.iter().collect::<Vec<_>>(), &names, Duration::from_secs(20)).await;
            let phones: Vec<String> = (1000..1150).map(phone).collect();

            // Concurrent registrations, each through the node after its owner's index.
            let sends = phones.iter().enumerate().map(|(i, p)| {
                let node = &nodes[i % 3];
                async move { (node.post("/v1/register", register_body(p)).await, i % 3) }
            });
            for (r, _) in futures::future::join_all(sends).await {
                assert_eq!(r.status, 202, "{}", r.raw);
            }

            // Where the challenges are: each node holds exactly the identifiers the ring gives
            // it, and no other (so none is held twice, and none is missing).
            let mut expected = [0u64; 3];
            for p in &phones {
                let owner = fleet.owner(p, &names);
                expected[names.iter().position(|n| *n == owner).unwrap()] += 1;
            }
            let mut held = [0u64; 3];
            for (i, n) in nodes.iter().enumerate() {
                held[i] = n.live_challenges().await;
            }
            assert_eq!(held, expected, "live challenges per node against the ring's owners");
            assert!(expected.iter().all(|e| *e > 20), "each node owns a share: {expected:?}");

            // Concurrent verifications, each through a node other than the one that sent the
            // code: all succeed.
            let mut codes = Vec::new();
            for (i, p) in phones.iter().enumerate() {
                codes.push(nodes[i % 3].code_for(p, "register", 1).await);
            }
            let verifies = phones.iter().zip(&codes).enumerate().map(|(i, (p, code))| {
                let node = &nodes[(i + 1) % 3];
                async move { node.post("/v1/register/verify", json!({ "phone": p, "code": code })).await }
            });
            for r in futures::future::join_all(verifies).await {
                assert_eq!(r.status, 200, "{}", r.raw);
            }

            // Each node forwarded some commands and served some for others.
            for n in &nodes {
                let m = n.get("/metrics", None).await.raw;
                let forwarded = metric(&m, "otpd_cluster_forwarded_total{outcome=\"ok\"}");
                let served = metric(&m, "otpd_cluster_served_total");
                assert!(forwarded > 0.0 && served > 0.0, "{}: forwarded {forwarded}, served {served}", n.name);
                assert_eq!(metric(&m, "otpd_cluster_forwarded_total{outcome=\"unreachable\"}"), 0.0);
                assert_eq!(metric(&m, "otpd_cluster_members"), 3.0);
            }
        },
    )
    .await;
}

/// The value of the sample `series` (name plus labels as exposed) in a text exposition.
fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_loses_no_acknowledged_write_and_its_identifiers_move_to_the_survivors() {
    with_services(
        "cluster::a_node_killed_mid_run_loses_no_acknowledged_write_and_its_identifiers_move_to_the_survivors",
        |cql, redis| async move {
            let fleet = Fleet::new(cql, redis, 3);
            let a = fleet.start(0).await;
            let b = fleet.start(1).await;
            let mut c = fleet.start(2).await;
            let names = ["otpd-1", "otpd-2", "otpd-3"];
            converge(&[&a, &b, &c], &names, Duration::from_secs(20)).await;

            // Sign-ups run through A and B while C dies. Every acknowledged one is recorded.
            let phones: Vec<String> = (2000..2090).map(phone).collect();
            let acknowledged = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<(String, String)>::new()));
            let traffic = {
                let (a_base, b_base) = (a.base.clone(), b.base.clone());
                let (a_box, b_box) = (a.outbox(), b.outbox());
                let acknowledged = acknowledged.clone();
                let phones = phones.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let runs = phones.into_iter().enumerate().map(|(i, p)| {
                        let (base, outbox) = if i % 2 == 0 { (&a_base, &a_box) } else { (&b_base, &b_box) };
                        let client = client.clone();
                        let acknowledged = acknowledged.clone();
                        async move {
                            // Spread over ~1.5 s, so the kill lands mid-run.
                            tokio::time::sleep(Duration::from_millis(15 * i as u64)).await;
                            let trace = format!("kill-run-{i}");
                            let sent = client
                                .post(format!("{base}/v1/register"))
                                .header("x-request-id", &trace)
                                .json(&register_body(&p))
                                .send()
                                .await;
                            let Ok(sent) = sent else { return };
                            if sent.status() != 202 {
                                return;
                            }
                            let Some(code) = poll_code(outbox, &p).await else { return };
                            let verify_trace = format!("{trace}-verify");
                            let r = client
                                .post(format!("{base}/v1/register/verify"))
                                .header("x-request-id", &verify_trace)
                                .json(&json!({ "phone": p, "code": code }))
                                .send()
                                .await;
                            if r.is_ok_and(|r| r.status() == 200) {
                                acknowledged.lock().push((p, verify_trace));
                            }
                        }
                    });
                    futures::future::join_all(runs).await;
                })
            };
            // C's identifiers and the failover: `x` is owned by C and has a code pending there,
            // with one wrong attempt made, when C dies.
            tokio::time::sleep(Duration::from_millis(700)).await;
            let x = by_owner(&fleet, 2100, 60, &names).remove("otpd-3").unwrap().remove(0);
            let r = a.post("/v1/register", register_body(&x)).await;
            assert_eq!(r.status, 202, "{}", r.raw);
            let sent_at = Instant::now();
            let old_code = a.code_for(&x, "register", 1).await;
            let r = b.post("/v1/register/verify", json!({ "phone": x, "code": wrong_code(&old_code) })).await;
            assert_eq!(r.body["attempts_left"], 4, "{}", r.raw);
            c.kill9();
            let killed_at = Instant::now();

            // Right away, before anyone noticed the death: the cooldown (in Redis) holds
            // through every survivor, so the failover gains no extra code.
            for n in [&a, &b] {
                let r = n.post("/v1/register", register_body(&x)).await;
                assert_eq!((r.status, r.code()), (429, "resend_cooldown"), "{}: {}", n.name, r.raw);
            }
            // The survivors agree that C is gone.
            let noticed = converge(&[&a, &b], &["otpd-1", "otpd-2"], TAKEOVER).await;
            traffic.await.unwrap();

            // The code C held is gone with it: it no longer verifies anywhere (and no
            // attempt is gained either; a new code starts a new challenge).
            let r = a.post("/v1/register/verify", json!({ "phone": x, "code": old_code })).await;
            assert_eq!(r.code(), "no_pending_code", "{}", r.raw);
            // The next send after the cooldown works at once on the new owner.
            tokio::time::sleep(COOLDOWN.saturating_sub(sent_at.elapsed())).await;
            let r = a.post("/v1/register", register_body(&x)).await;
            assert_eq!(r.status, 202, "{}", r.raw);
            let code = a.code_for(&x, "register", 2).await;
            let r = b.post("/v1/register/verify", json!({ "phone": x, "code": code })).await;
            assert_eq!(r.status, 200, "{}", r.raw);
            let back = killed_at.elapsed();

            // Nothing acknowledged is lost: the audit trail has every acknowledged
            // verification …
            let acknowledged = acknowledged.lock().clone();
            assert!(acknowledged.len() >= 30, "enough of the run was acknowledged: {}", acknowledged.len());
            for (p, trace) in &acknowledged {
                let audit = a.get(&format!("/v1/admin/audit?trace_id={trace}"), Some(ADMIN)).await;
                assert_eq!(audit.status, 200, "{}", audit.raw);
                let events = audit.body["events"].as_array().unwrap();
                assert!(
                    events.iter().any(|e| e["api"] == "register_verify" && e["outcome"] == "ok"),
                    "the acknowledged verification of {p} ({trace}) is in the audit trail: {}",
                    audit.raw
                );
            }
            // … and every acknowledged account signs in through the survivors, those that C
            // owned included, with the challenge's attempt count intact.
            let mut of_c = 0;
            for (i, (p, _)) in acknowledged.iter().enumerate() {
                let (sender, verifier) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                let r = sender.post("/v1/login", json!({ "phone": p })).await;
                assert_eq!(r.status, 202, "{}", r.raw);
                let code = sender.code_for(p, "login", 1).await;
                let r = verifier.post("/v1/login/verify", json!({ "phone": p, "code": wrong_code(&code) })).await;
                assert_eq!(r.body["attempts_left"], 4, "{}", r.raw);
                let r = verifier.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
                assert_eq!(r.status, 200, "{p}: {}", r.raw);
                of_c += usize::from(fleet.owner(p, &names) == "otpd-3");
            }
            assert!(of_c > 0, "some acknowledged identifier was C's");
            println!(
                "cluster failover: survivors dropped the killed node within {:.2} s; its identifier \
                 verified again {:.2} s after the kill (cooldown {} s); {} sign-ups acknowledged, {} of them C's",
                noticed.as_secs_f64(),
                back.as_secs_f64(),
                COOLDOWN.as_secs(),
                acknowledged.len(),
                of_c
            );
        },
    )
    .await;
}

/// The register code for `p` in `outbox`, waiting at most 5 s.
async fn poll_code(outbox: &Path, p: &str) -> Option<String> {
    for _ in 0..500 {
        if let Some(m) = outbox_messages(outbox, p).iter().find(|m| m["purpose"] == "register") {
            return m["code"].as_str().map(str::to_owned);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_over_only_its_share() {
    with_services("cluster::a_joining_node_takes_over_only_its_share", |cql, redis| async move {
        let fleet = Fleet::new(cql, redis, 3);
        let a = fleet.start(0).await;
        let b = fleet.start(1).await;
        converge(&[&a, &b], &["otpd-1", "otpd-2"], Duration::from_secs(20)).await;

        // Codes pending for 120 identifiers, held by A and B.
        let phones: Vec<String> = (3000..3120).map(phone).collect();
        for (i, p) in phones.iter().enumerate() {
            let node = if i % 2 == 0 { &a } else { &b };
            let r = node.post("/v1/register", register_body(p)).await;
            assert_eq!(r.status, 202, "{}", r.raw);
        }
        let mut codes = BTreeMap::new();
        for (i, p) in phones.iter().enumerate() {
            let node = if i % 2 == 0 { &a } else { &b };
            codes.insert(p.clone(), node.code_for(p, "register", 1).await);
        }

        // C listens on every address (as in a container), in plaintext by the operator's
        // explicit choice: it joins like the others and says at start what it does.
        let cport = fleet.slots[2].2;
        let c = fleet
            .start_with(
                2,
                &[
                    ("OTPD_CLUSTER__LISTEN", format!("0.0.0.0:{cport}")),
                    ("OTPD_CLUSTER__ADVERTISE_HOST", "127.0.0.1".into()),
                    ("OTPD_CLUSTER__INSECURE_PLAINTEXT_ON_PRIVATE_NETWORK", "true".into()),
                ],
            )
            .await;
        let names = ["otpd-1", "otpd-2", "otpd-3"];
        converge(&[&a, &b, &c], &names, Duration::from_secs(20)).await;
        no_flap(&[&a, &b, &c]).await;
        let warning =
            c.log().lines().find(|l| l.contains("INSECURE: the cluster link is plaintext")).map(str::to_owned);
        let warning = warning.unwrap_or_else(|| panic!("no start-up warning:\n{}", c.log()));
        assert!(warning.contains("WARN") && warning.contains(&format!("listen = 0.0.0.0:{cport}")), "{warning}");
        assert!(!a.log().contains("INSECURE"), "a node on loopback has nothing to warn about");

        // Only partitions that C now owns changed hands (the ring's promise, checked on the
        // ring the nodes report) …
        let before = Ring::new(["otpd-1", "otpd-2"]);
        let after = Ring::new(names);
        let ready = c.get("/health/ready", None).await;
        assert_eq!(ready.body["cluster"]["partitions_owned"].as_u64(), Some(after.owned_by("otpd-3") as u64));
        // … and on the identifiers themselves: those that stayed put still verify through
        // any node; those that moved to C find no code there (it is in their old owner's
        // memory, see docs/decisions/2026-11-21-one-owner-per-identifier.md) and get a new one at once.
        let mut moved = BTreeSet::new();
        for (i, p) in phones.iter().enumerate() {
            let partition = partition_of(&fleet.keys.identifier_hash(p));
            let verifier = [&a, &b, &c][i % 3];
            let r = verifier.post("/v1/register/verify", json!({ "phone": p, "code": codes[p] })).await;
            if before.owner(partition) == after.owner(partition) {
                assert_eq!(r.status, 200, "{p} stayed on {} and verifies: {}", after.owner(partition), r.raw);
            } else {
                assert_eq!(after.owner(partition), "otpd-3", "{p} moved between old members");
                assert_eq!(r.code(), "no_pending_code", "{}", r.raw);
                moved.insert(p.clone());
            }
        }
        assert!(
            !moved.is_empty() && moved.len() < phones.len() / 2,
            "C took a share: {} of {}",
            moved.len(),
            phones.len()
        );
        tokio::time::sleep(COOLDOWN).await;
        for p in moved.iter().take(3) {
            let earlier = outbox_messages(&a.outbox(), p).len();
            let r = a.post("/v1/register", register_body(p)).await;
            assert_eq!(r.status, 202, "{}", r.raw);
            let code = a.code_for(p, "register", earlier + 1).await;
            let r = c.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
            assert_eq!(r.status, 200, "{}", r.raw);
        }
        assert_eq!(c.live_challenges().await as usize, 3.min(moved.len()), "C holds only what it was sent since");
    })
    .await;
}

/// A CA named `ca` in `dir` and, signed by it, one certificate per node for 127.0.0.1 usable
/// as server and client (its key private to this user); returns the OTPD_CLUSTER__TLS_*
/// variables of `node`.
fn node_tls(dir: &Path, ca: &str, node: &str) -> Vec<(&'static str, String)> {
    let (cert, key) = test_cert(dir, ca, node);
    let ca = test_ca(dir, ca);
    let path = |f: &Path| f.to_string_lossy().into_owned();
    vec![
        ("OTPD_CLUSTER__TLS_CERT_FILE", path(&cert)),
        ("OTPD_CLUSTER__TLS_KEY_FILE", path(&key)),
        ("OTPD_CLUSTER__TLS_CA_FILE", path(&ca)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_tls_join_and_serve_and_a_node_from_another_ca_is_kept_out() {
    let test = "cluster::nodes_with_tls_join_and_serve_and_a_node_from_another_ca_is_kept_out";
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIPPED {test}: openssl (to make test certificates) is not installed");
        return;
    }
    with_services(test, |cql, redis| async move {
        let fleet = Fleet::new(cql, redis, 3);
        let certs = tempfile::tempdir().unwrap();
        let a = fleet.start_with(0, &node_tls(certs.path(), "ca", "otpd-1")).await;
        let b = fleet.start_with(1, &node_tls(certs.path(), "ca", "otpd-2")).await;
        converge(&[&a, &b], &["otpd-1", "otpd-2"], Duration::from_secs(20)).await;

        // The TLS link carries forwarded commands both ways.
        let groups = by_owner(&fleet, 4000, 40, &["otpd-1", "otpd-2"]);
        for owner in ["otpd-1", "otpd-2"] {
            let p = &groups[owner][0];
            let r = a.post("/v1/register", register_body(p)).await;
            assert_eq!(r.status, 202, "{}", r.raw);
            let code = a.code_for(p, "register", 1).await;
            let r = b.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
            assert_eq!(r.status, 200, "owner {owner}: {}", r.raw);
        }

        // Same cookie, but a certificate the others' CA did not sign: it never joins.
        let c = fleet.start_with(2, &node_tls(certs.path(), "other-ca", "otpd-3")).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        for n in [&a, &b] {
            assert_eq!(n.members().await, ["otpd-1", "otpd-2"], "{} let in a node of another CA", n.name);
        }
        assert_eq!(c.members().await, ["otpd-3"]);
    })
    .await;
}

/// The metric samples of `node` this file's link tests read, as (series → value).
async fn cluster_counters(node: &NodeProc) -> BTreeMap<&'static str, f64> {
    let m = node.get("/metrics", None).await.raw;
    [
        "otpd_cluster_forwarded_total{outcome=\"ok\"}",
        "otpd_cluster_forwarded_total{outcome=\"refused\"}",
        "otpd_cluster_served_total",
        "otpd_cluster_refused_total",
    ]
    .into_iter()
    .map(|series| (series, metric(&m, series)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_nodes_that_know_one_seed_meet_every_member_over_tls_and_a_plaintext_peer_is_kept_out() {
    let test = "cluster::tls_nodes_that_know_one_seed_meet_every_member_over_tls_and_a_plaintext_peer_is_kept_out";
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIPPED {test}: openssl (to make test certificates) is not installed");
        return;
    }
    with_services(test, |cql, redis| async move {
        let fleet = Fleet::new(cql, redis, 3);
        let certs = tempfile::tempdir().unwrap();
        let seed_a = format!("[\"127.0.0.1:{}\"]", fleet.slots[0].2);
        let with = |node: &str, seeds: &str| {
            let mut env = node_tls(certs.path(), "ca", node);
            env.push(("OTPD_CLUSTER__SEEDS", seeds.to_owned()));
            env
        };
        // A knows nobody; B and C know only A. B and C can meet only through what A tells
        // them, and only over TLS: their listeners accept nothing else (ractor_cluster's own
        // transitive dial, in plaintext, would never get through).
        let a = fleet.start_with(0, &with("otpd-1", "[]")).await;
        let b = fleet.start_with(1, &with("otpd-2", &seed_a)).await;
        let c = fleet.start_with(2, &with("otpd-3", &seed_a)).await;
        let names = ["otpd-1", "otpd-2", "otpd-3"];
        // A member shows in a node's view only through a connection of its own to it (each
        // node announces only its own gateway), so three members everywhere is a full mesh.
        converge(&[&a, &b, &c], &names, Duration::from_secs(20)).await;
        no_flap(&[&a, &b, &c]).await;

        // The mesh carries authenticated requests between the two that met through A.
        let groups = by_owner(&fleet, 5000, 60, &names);
        for owner in ["otpd-2", "otpd-3"] {
            let p = &groups[owner][0];
            let r = b.post("/v1/register", register_body(p)).await;
            assert_eq!(r.status, 202, "{}", r.raw);
            let code = b.code_for(p, "register", 1).await;
            let r = c.post("/v1/register/verify", json!({ "phone": p, "code": code })).await;
            assert_eq!(r.status, 200, "owner {owner}: {}", r.raw);
        }
        for n in [&b, &c] {
            let counters = cluster_counters(n).await;
            assert!(counters["otpd_cluster_forwarded_total{outcome=\"ok\"}"] > 0.0, "{}: {counters:?}", n.name);
            assert_eq!(counters["otpd_cluster_forwarded_total{outcome=\"refused\"}"], 0.0, "{}", n.name);
            assert_eq!(counters["otpd_cluster_refused_total"], 0.0, "{}", n.name);
        }

        // A ractor_cluster node with the right cookie, in plaintext: it never gets past A's
        // listener (no session of its learns A's name), and A closes the connection.
        plaintext_peer_is_kept_out(fleet.slots[0].2).await;
        assert_eq!(a.members().await, names, "A's members after the plaintext attempt");
    })
    .await;
}

/// Dials `port` on loopback from a plaintext ractor_cluster node in this process (with the
/// fleet's cookie) and checks that the connection closes without a handshake.
async fn plaintext_peer_is_kept_out(port: u16) {
    use otpd_actors::actors::cluster::ractor_cluster::{self, NodeServer, NodeServerMessage};
    let server = NodeServer::new(free_port(), COOKIE.into(), "intruder".into(), "127.0.0.1".into(), None, None)
        .with_listen_addr([127, 0, 0, 1].into());
    let (server, handle) = ractor::Actor::spawn(None, server, ()).await.expect("a node server starts");
    ractor_cluster::client_connect(&server, format!("127.0.0.1:{port}")).await.expect("the TCP connection opens");
    let started = Instant::now();
    loop {
        let sessions = ractor::call_t!(server, NodeServerMessage::GetSessions, 1000).expect("the node server answers");
        assert!(
            sessions.values().all(|s| s.peer_name.is_none()),
            "a plaintext peer got through the handshake: {:?}",
            sessions.values().map(|s| s.peer_name.clone()).collect::<Vec<_>>()
        );
        if sessions.is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the TLS listener kept a plaintext connection open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop(None);
    handle.await.expect("the node server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_cookie_but_another_hash_key_gets_nothing_run_and_believes_nothing() {
    with_services(
        "cluster::a_node_with_the_cookie_but_another_hash_key_gets_nothing_run_and_believes_nothing",
        |cql, redis| async move {
            let fleet = Fleet::new(cql, redis, 2);
            let a = fleet.start(0).await;
            // The cookie lets B in (ractor_cluster's handshake proves only the cookie), but
            // the link's keys come from the cookie and the hash key.
            let b = fleet.start_with(1, &[("OTPD_SECRETS__HASH_KEY", "cd".repeat(32))]).await;
            let names = ["otpd-1", "otpd-2"];
            converge(&[&a, &b], &names, Duration::from_secs(20)).await;

            let b_keys = Keys::from_master(&[0xcd; 32]);
            let ring = Ring::new(names);
            // Registrations through each node: those it owns itself are accepted; those it
            // forwards are refused by the other (B's requests do not authenticate at A), or
            // the other's answer is (A's requests are refused by B under B's keys, and that
            // refusal does not authenticate at A either), and the caller gets 503.
            let mut forwarded = [0usize; 2];
            for (i, node) in [&a, &b].into_iter().enumerate() {
                let keys = if i == 0 { &fleet.keys } else { &b_keys };
                let from = 6000 + 100 * i as u32;
                for p in (from..from + 20).map(phone) {
                    let r = node.post("/v1/register", register_body(&p)).await;
                    if ring.owner(partition_of(&keys.identifier_hash(&p))) == node.name {
                        assert_eq!(r.status, 202, "{} owns {p}: {}", node.name, r.raw);
                    } else {
                        assert_eq!(r.status, 503, "{} forwards {p}: {}", node.name, r.raw);
                        forwarded[i] += 1;
                    }
                }
            }
            assert!(forwarded.iter().all(|n| *n > 0), "each node forwarded some: {forwarded:?}");
            for (i, node) in [&a, &b].into_iter().enumerate() {
                let counters = cluster_counters(node).await;
                let at = |series: &str| counters[series];
                let name = &node.name;
                assert_eq!(at("otpd_cluster_served_total"), 0.0, "{name} ran nothing for the other: {counters:?}");
                assert_eq!(at("otpd_cluster_forwarded_total{outcome=\"ok\"}"), 0.0, "{name}: {counters:?}");
                assert_eq!(
                    at("otpd_cluster_forwarded_total{outcome=\"refused\"}"),
                    forwarded[i] as f64,
                    "{name}: every request it forwarded ended refused: {counters:?}"
                );
                // Every request of the other was refused: its forwarded commands, and the
                // questions its dialer asks every `reconnect_interval` (whom are you connected to?).
                assert!(
                    at("otpd_cluster_refused_total") >= forwarded[1 - i] as f64,
                    "{name} refused every request of the other ({} forwarded): {counters:?}",
                    forwarded[1 - i]
                );
                assert_eq!(node.live_challenges().await as usize, 20 - forwarded[i], "{name} holds only its own");
            }
        },
    )
    .await;
}
