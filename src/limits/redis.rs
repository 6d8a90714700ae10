//! The Redis [`Limiter`] (fred): cooldowns and rate limits that every node shares, on one
//! Redis server or a Redis Cluster.
//!
//! # One round trip per decision
//!
//! A decision is one Lua script (`decide.lua`, run with `EVALSHA`; loaded again on
//! `NOSCRIPT`) that checks every rule of the request and, only if none refuses, records every
//! rule, atomically: Redis runs a script alone, so two nodes deciding for one identifier at
//! the same instant are serialised and exactly one gets the cooldown.
//!
//! Each subject is one hash, whose fields are its rules (`resend_cooldown:<purpose>` holds a
//! cooldown's end; `<rule>:c`, `:u`, `:b` a window's count, end and block, and the guess
//! budget's count, forget-at and block; a spend budget's money and day end in `:c` and `:u`; `x` the key's expiry), so a decision reads a subject with one `HMGET` and writes it with one `HSET`. The
//! script formats nothing: field names and candidate ends come from here. The key is its own
//! hash tag:
//!
//! | group | key |
//! | --- | --- |
//! | identifier | `otpd:{i:<IdentHash>}` (cooldowns and every per-identifier rule) |
//! | client IP | `otpd:{ip:<keyed hash of the IP or its /64>}` |
//! | number prefix | `otpd:{pfx:<keyed hash of the prefix>}` |
//! | country | `otpd:{cc:<calling code>}` (its send rule and its SMS budget) |
//! | everywhere | `otpd:{all}` (the SMS budget of the whole deployment: on a cluster, one slot every SMS send touches) |
//!
//! An identifier, an IP, a prefix and a country are independent dimensions (one IP sends to
//! many identifiers, one identifier is reached from many IPs), so no single tag can put all
//! the counters a request touches in one slot without putting *every* key of the deployment
//! in that slot (which makes the cluster one server). So:
//!
//! * **one server**: slots do not exist; the whole decision is one `EVALSHA` (measured: one
//!   command per request);
//! * **Redis Cluster**: one `EVALSHA` per group the request touches (identifier, IP, prefix,
//!   and country when its rule is on), all sent at once: fred writes them to their nodes
//!   without waiting, so the decision still costs one network round trip, not one per group.
//!   Each group is atomic. If one group refuses while another recorded, the recording is taken
//!   back (`undo` mode of the same script, awaited: a second round trip, only on that path),
//!   so "a refused request counts nowhere" holds as on one server. Between the record and the
//!   undo (one round trip) a concurrent request may see the extra count and be refused: the
//!   error is on the side of refusing.
//!
//! A right code clears the guess budget with one `HDEL` of its fields: the one extra round
//! trip of the budget, on a successful check only (a wrong one was counted by the decision).
//!
//! Keys expire by themselves (`PEXPIRE` to the moment they stop mattering); nothing sweeps.
//! Identifiers appear only as their keyed hash, IPs and prefixes only as a keyed hash (key
//! derived from the node secret, identical on every node).
//!
//! # Time
//!
//! The script decides with the `now` the engine passes, not Redis's clock, exactly like the
//! in-process limiter: the two enforce identical rules, tests drive both with a manual clock,
//! and nodes agree as far as their clocks agree (NTP: milliseconds, against cooldowns of
//! seconds). Redis's own clock only expires keys, which never changes a decision: a key still
//! present but past its end reads as absent.
//!
//! # TLS
//!
//! A `rediss://` (or `rediss-cluster://`) URL connects over TLS with rustls on aws-lc-rs,
//! like every other TLS client of the node. otpd builds the TLS set-up itself rather than
//! letting fred build one from the scheme: the CA is `redis.tls_ca_file` (the system's roots
//! without it), a client certificate is sent when `redis.tls_cert_file` is set, and its key
//! must be its owner's only. The server is checked against the host it is dialled by (the
//! URL's, or on a cluster the address each node announces), so certificates must name it.
//!
//! # When Redis does not answer
//!
//! A decision that fails or takes longer than `redis.timeout` is made by the in-process limiter
//! instead, and the limiter turns *degraded* ([`LimiterHealth`], logged once per transition,
//! shown by `/health/ready`): later decisions go straight to the in-process limiter, and a
//! probe (every `redis.probe_interval`, also while healthy, to notice an outage without
//! traffic) switches back once every Redis node answers and holds the script. The in-process
//! limiter is fed every decision Redis allowed, so a node that falls back still remembers what
//! it let through itself. Why this, and not refusing: docs/decisions/2026-11-21-redis-fallback.md.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, ClientLike, ClusterInterface, Config, EventInterface, HashesInterface, LuaInterface, Options,
    ServerConfig, Value,
};
use fred::types::config::{ReconnectPolicy, TlsConfig, TlsConnector, TlsHostMapping};
use futures::future::join_all;
use otpd_actors::adapters::limiter::LocalLimiter;
use otpd_actors::ports::{Limiter, LimiterError};
use otpd_actors::rules::challenge::Purpose;
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::keys::IdentHash;
use otpd_actors::rules::limits::{
    Check, CheckKind, ConversionGuard, DestinationChange, DestinationState, Group, GuardMode, LimitPolicy, Pin,
    SmsTarget, Subject, plan, strongest,
};
use otpd_actors::rules::limits::{Decision, LimitRequest, LimitRule};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::health::LimiterHealth;
use crate::config::RedisConfig;
use crate::tls_files::{TlsFileError, certificates, roots, secret_private_key};

const SCRIPT: &str = include_str!("decide.lua");
static SCRIPT_SHA: LazyLock<String> = LazyLock::new(|| fred::util::sha1_hash(SCRIPT));

/// Longest wait for the first connection at start; fred keeps trying afterwards.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the Redis limiter could not be built (an unreachable Redis is not one: the node starts
/// degraded and connects when Redis answers).
#[derive(Debug, thiserror::Error)]
pub enum RedisStartError {
    #[error("redis.url is not usable: {0}")]
    Url(String),
    #[error("redis.cluster_nodes: {0:?} is not host:port")]
    ClusterNode(String),
    #[error("redis client: {0}")]
    Client(String),
    #[error("redis TLS: {0}")]
    Tls(#[from] TlsFileError),
}

/// Where Redis is and how patient to be with it.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: String,
    pub cluster_nodes: Vec<String>,
    pub password: Option<String>,
    pub timeout: Duration,
    pub probe_interval: Duration,
    pub key_prefix: String,
    /// CA file of a `rediss://` URL (`None`: the system's roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key files of a `rediss://` URL, for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

impl RedisSettings {
    /// `None` when no Redis is configured (limits stay in-process).
    pub fn from_config(c: &RedisConfig) -> Option<RedisSettings> {
        if !c.enabled() {
            return None;
        }
        Some(RedisSettings {
            url: c.url.0.clone(),
            cluster_nodes: c.cluster_nodes.clone(),
            password: c.password.as_ref().map(|p| p.0.clone()),
            timeout: c.timeout.0,
            probe_interval: c.probe_interval.0,
            key_prefix: c.key_prefix.clone(),
            tls_ca_file: c.tls_ca_file.clone(),
            tls_client: c.tls_cert_file.clone().zip(c.tls_key_file.clone()),
        })
    }

    /// The rustls set-up of a `rediss://` URL.
    fn tls(&self) -> Result<TlsConfig, TlsFileError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(self.tls_ca_file.as_deref(), "redis.tls_ca_file")?);
        let config = match &self.tls_client {
            Some((cert, key)) => builder
                .with_client_auth_cert(certificates(cert)?, secret_private_key(key)?)
                .map_err(TlsFileError::refused(cert))?,
            None => builder.with_no_client_auth(),
        };
        // Each node is checked against the host it is dialled by (see the module doc).
        Ok(TlsConfig { connector: TlsConnector::from(config), hostnames: TlsHostMapping::None })
    }

    fn client(&self) -> Result<fred::clients::Client, RedisStartError> {
        let mut config = if self.cluster_nodes.is_empty() {
            let (url, tls) = without_tls(&self.url);
            let mut config = Config::from_url(&url).map_err(|e| RedisStartError::Url(e.details().to_owned()))?;
            if tls {
                config.tls = Some(self.tls()?);
            }
            config
        } else {
            let mut hosts = Vec::new();
            for node in &self.cluster_nodes {
                let parsed = node.rsplit_once(':').and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)));
                hosts.push(parsed.ok_or_else(|| RedisStartError::ClusterNode(node.clone()))?);
            }
            Config { server: ServerConfig::new_clustered(hosts), ..Config::default() }
        };
        if let Some(password) = &self.password {
            config.password = Some(password.clone());
        }
        // fred owns (re)connecting, from the first connection on, forever: 10 ms after a failure,
        // doubling up to the probe interval. (Calling `init` again after a failed first attempt
        // races with fred's previous connection task; one connection task for the client's life
        // does not.)
        config.fail_fast = false;
        let max_delay = self.probe_interval.as_millis().clamp(10, 60_000) as u32;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.tcp.nodelay = Some(true);
            })
            .with_performance_config(|p| p.default_command_timeout = self.timeout)
            .set_policy(ReconnectPolicy::new_exponential(0, 10, max_delay, 2));
        builder.build().map_err(|e| RedisStartError::Client(e.details().to_owned()))
    }
}

pub struct RedisLimiter {
    client: fred::clients::Client,
    clustered: bool,
    policy: LimitPolicy,
    /// The decision script's calls; shared with the background undo of a refused decision.
    script: Arc<Script>,
    timeout: Duration,
    local: Arc<LocalLimiter>,
    health: Arc<LimiterHealth>,
    probe: Mutex<Option<JoinHandle<()>>>,
    /// Why the last connection attempt failed (a refused TLS handshake, a wrong password):
    /// fred reports it as an event, and readiness names it.
    last_error: Arc<Mutex<Option<String>>>,
    /// Copies fred's connection errors into `last_error`.
    errors: Mutex<Option<JoinHandle<()>>>,
}

impl RedisLimiter {
    /// Connects (or starts degraded if Redis does not answer) and starts the probe. `local`
    /// enforces `policy` in-process while Redis is unavailable.
    pub async fn start(
        settings: RedisSettings,
        policy: LimitPolicy,
        key: [u8; 32],
        local: Arc<LocalLimiter>,
    ) -> Result<Arc<RedisLimiter>, RedisStartError> {
        let client = settings.client()?;
        let limiter = Arc::new(RedisLimiter {
            clustered: client.is_clustered(),
            script: Arc::new(Script {
                client: client.clone(),
                prefix: settings.key_prefix,
                key,
                guard: policy.conversion_guard,
            }),
            client,
            policy,
            timeout: settings.timeout,
            local,
            health: Arc::new(LimiterHealth::default()),
            probe: Mutex::new(None),
            last_error: Arc::default(),
            errors: Mutex::new(None),
        });
        // Listening before the first connection, so its failure is heard.
        *limiter.errors.lock() = Some(limiter.spawn_error_listener());
        // Waits for the first connection at most CONNECT_TIMEOUT; fred goes on trying after that
        // (its task outlives this future).
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, limiter.client.init()).await;
        match limiter.check_health().await {
            Ok(()) => tracing::info!(cluster = limiter.clustered, "redis limiter connected"),
            Err(e) => limiter.health.degrade(&format!("at start: {e}")),
        }
        *limiter.probe.lock() = Some(limiter.spawn_probe(settings.probe_interval));
        Ok(limiter)
    }

    pub fn health(&self) -> Arc<LimiterHealth> {
        self.health.clone()
    }

    /// Stops the probe and closes the connections.
    pub async fn stop(&self) {
        if let Some(probe) = self.probe.lock().take() {
            probe.abort();
        }
        if let Some(errors) = self.errors.lock().take() {
            errors.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.quit()).await;
    }

    fn spawn_probe(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                match limiter.check_health().await {
                    Ok(()) => limiter.health.recover(),
                    Err(e) => limiter.health.degrade(&e),
                }
            }
        })
    }

    fn spawn_error_listener(&self) -> JoinHandle<()> {
        let mut errors = self.client.error_rx();
        let last = self.last_error.clone();
        tokio::spawn(async move {
            loop {
                match errors.recv().await {
                    Ok((error, _server)) => *last.lock() = Some(error.details().to_owned()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }

    /// Connected, every primary answering (and, on a cluster, serving every slot), and the
    /// script loaded everywhere (after a restart Redis has forgotten it).
    async fn check_health(&self) -> Result<(), String> {
        if !self.client.is_connected() {
            let why = self.last_error.lock().as_ref().map(|e| format!(": {e}")).unwrap_or_default();
            return Err(format!("cannot connect (fred: {:?}){why}", self.client.state()));
        }
        let checks = async {
            if self.clustered {
                let primaries =
                    self.client.cached_cluster_state().map(|s| s.unique_primary_nodes()).unwrap_or_default();
                if primaries.is_empty() {
                    return Err("no cluster routing table yet".to_owned());
                }
                let infos = primaries.into_iter().map(|server| {
                    let node = self.client.with_options(&Options { cluster_node: Some(server), ..Options::default() });
                    async move { node.cluster_info::<String>().await }
                });
                for info in join_all(infos).await {
                    let info = info.map_err(|e| e.details().to_owned())?;
                    if !info.contains("cluster_state:ok") {
                        return Err("the cluster is not serving every slot (cluster_state is not ok)".into());
                    }
                }
            }
            self.load_script().await.map_err(|e| e.details().to_owned())
        };
        match tokio::time::timeout(self.timeout, checks).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn load_script(&self) -> Result<(), fred::error::Error> {
        self.client.script_load_cluster::<String, _>(SCRIPT).await.map(|_| ())
    }

    /// The decision in Redis: one script per slot group, all at once. With an allowance, today's
    /// total of each spend budget among `checks`, by index.
    async fn decide(
        &self,
        checks: &[Check],
        now: Timestamp,
    ) -> Result<(Decision, Vec<(usize, u64)>), fred::error::Error> {
        let groups = self.groups(checks);
        let replies = join_all(groups.iter().map(|g| self.script.run("check", checks, g, now, None))).await;
        let mut waits = Vec::new();
        let mut recorded = Vec::new();
        let mut failure = None;
        for (group, reply) in groups.iter().zip(replies) {
            match reply.as_deref() {
                Ok([1, rest @ ..]) if rest.len() == group.len() => {
                    waits.extend(group.iter().zip(rest).filter(|(_, w)| **w > 0).map(|(i, w)| (*i, *w)))
                }
                Ok([0, ends @ ..]) if ends.len() == group.len() => recorded.push((group, ends.to_vec())),
                Ok(other) => failure = Some(unexpected(other)),
                Err(e) => failure = Some(e.clone()),
            }
        }
        if let Some(e) = failure {
            // This request is decided in-process; take back what Redis recorded for it, in the
            // background (Redis is probably failing anyway).
            let undo: Vec<_> = recorded.into_iter().map(|(g, ends)| (g.clone(), ends)).collect();
            if !undo.is_empty() {
                let (me, checks) = (self.script.clone(), checks.to_vec());
                tokio::spawn(async move { me.undo(&checks, &undo, now).await });
            }
            return Err(e);
        }
        waits.sort_unstable_by_key(|(i, _)| *i);
        let denied = strongest(waits.iter().map(|&(i, w)| (checks[i].rule, Duration::from_millis(w.max(0) as u64))));
        let Some(denied) = denied else {
            // The script answers a spend check's recording with the day's total (its end is
            // the day's end, which the caller knows).
            let spent = recorded
                .iter()
                .flat_map(|(g, ends)| g.iter().zip(ends))
                .filter(|(i, _)| matches!(checks[**i].kind, CheckKind::Spend(_)))
                .map(|(i, total)| (*i, (*total).max(0) as u64))
                .collect();
            return Ok((Decision::Allow, spent));
        };
        if !recorded.is_empty() {
            let undo: Vec<_> = recorded.into_iter().map(|(g, ends)| (g.clone(), ends)).collect();
            self.script.undo(checks, &undo, now).await;
        }
        Ok((denied, Vec::new()))
    }

    /// Indices of `checks` per script call: all together on one server, per group on a cluster.
    fn groups(&self, checks: &[Check]) -> Vec<Vec<usize>> {
        if !self.clustered {
            return vec![(0..checks.len()).collect()];
        }
        let mut groups: Vec<(Group, Vec<usize>)> = Vec::new();
        for (i, check) in checks.iter().enumerate() {
            let g = check.subject.group();
            match groups.iter_mut().find(|(k, _)| *k == g) {
                Some((_, members)) => members.push(i),
                None => groups.push((g, vec![i])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }
}

/// `rediss…://` as `redis…://`, and whether it was TLS: fred would build its own TLS set-up
/// from the scheme (the system's roots only, the process's default crypto provider); the
/// limiter builds one from `[redis]` instead.
fn without_tls(url: &str) -> (String, bool) {
    for (tls, plain) in [("rediss", "redis"), ("valkeys", "valkey")] {
        if let Some(rest) = url.strip_prefix(tls) {
            return (format!("{plain}{rest}"), true);
        }
    }
    (url.to_owned(), false)
}

fn unexpected(reply: &[i64]) -> fred::error::Error {
    let what = format!("unexpected reply from the limiter script ({} values)", reply.len());
    fred::error::Error::new(fred::error::ErrorKind::Protocol, what)
}

/// The decision script as the limiter calls it: the client, the key prefix, and the key that
/// hashes IPs and prefixes in key names. Apart from the limiter so that the undo of a refused
/// decision can run in the background.
struct Script {
    client: fred::clients::Client,
    prefix: String,
    /// Keys the hashes of IPs and prefixes in key names.
    key: [u8; 32],
    /// Its collapse, history and throttle gap are the script's head arguments.
    guard: ConversionGuard,
}

/// A guard mode as the script reads it (0: no mode, a pin's absence).
fn mode_code(mode: GuardMode) -> i64 {
    match mode {
        GuardMode::Off => 0,
        GuardMode::Record => 1,
        GuardMode::Throttle => 2,
        GuardMode::Block => 3,
    }
}

fn mode_of_code(code: i64) -> Option<GuardMode> {
    match code {
        1 => Some(GuardMode::Record),
        2 => Some(GuardMode::Throttle),
        3 => Some(GuardMode::Block),
        _ => None,
    }
}

impl Script {
    /// Takes back what a refused decision recorded.
    async fn undo(&self, checks: &[Check], recorded: &[(Vec<usize>, Vec<i64>)], now: Timestamp) {
        let calls = recorded.iter().map(|(g, ends)| self.run("undo", checks, g, now, Some(ends)));
        for result in join_all(calls).await {
            if let Err(e) = result {
                // The recording stays until its key expires: stricter, never looser.
                tracing::debug!(error = %e.details(), "could not take back a limiter recording");
            }
        }
    }

    /// Runs the script for the checks of one group; loads it once on `NOSCRIPT`.
    async fn run(
        &self,
        mode: &'static str,
        checks: &[Check],
        group: &[usize],
        now: Timestamp,
        ends: Option<&[i64]>,
    ) -> Result<Vec<i64>, fred::error::Error> {
        let (client, prefix, key) = (&self.client, self.prefix.as_str(), &self.key);
        let build = || {
            let now_ms = now.as_millis() as i64;
            let mut keys: Vec<String> = Vec::with_capacity(2);
            let mut args: Vec<Value> = Vec::with_capacity(5 + 9 * group.len());
            args.extend(self.head(mode, now_ms));
            for (n, &i) in group.iter().enumerate() {
                let check = &checks[i];
                let subject = subject_key(prefix, key, &check.subject);
                let index = match keys.iter().position(|k| *k == subject) {
                    Some(index) => index,
                    None => {
                        keys.push(subject);
                        keys.len() - 1
                    }
                };
                let [f1, f2, f3] = field_names(check);
                // The ends this decision would write; in undo mode, the end it wrote.
                let (kind, limit, end, blocked, longest) = match check.kind {
                    CheckKind::Cooldown(d) => ("c", 0, now_ms + millis(d), 0, 0),
                    CheckKind::Window(r) => {
                        let blocked = if r.block.is_zero() { 0 } else { now_ms + millis(r.block) };
                        ("w", i64::from(r.limit), now_ms + millis(r.window), blocked, 0)
                    }
                    // The block depends on the count, which only the script reads: it gets the
                    // first and the longest block instead of an end.
                    CheckKind::Guesses(b) => {
                        let forget_at = now_ms + millis(b.forget_after);
                        ("g", i64::from(b.free), forget_at, millis(b.first_block), millis(b.max_block))
                    }
                    // The cost rides where a window's block end would.
                    CheckKind::Spend(s) => ("s", money(s.budget), s.ends_at.as_millis() as i64, money(s.cost), 0),
                    CheckKind::Conversion(g, floor) => {
                        let end = now_ms + millis(g.window);
                        ("v", i64::from(floor), end, mode_code(g.mode), i64::from(g.min_conversion))
                    }
                };
                // A spend check's recording answered its total, not its end: that is always the
                // day's end, which undo compares.
                let end = match (check.kind, ends) {
                    (CheckKind::Spend(_), _) | (_, None) => end,
                    (_, Some(ends)) => ends[n],
                };
                args.extend([
                    Value::Integer(index as i64 + 1),
                    Value::from_static_str(kind),
                    Value::from_static_str(f1),
                    Value::from_static_str(f2),
                    Value::from_static_str(f3),
                    Value::Integer(limit),
                    Value::Integer(end),
                    Value::Integer(blocked),
                    Value::Integer(longest),
                ]);
            }
            (keys, args)
        };
        let (keys, args) = build();
        match client.evalsha::<Vec<i64>, _, _, _>(SCRIPT_SHA.as_str(), keys, args).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                client.script_load_cluster::<String, _>(SCRIPT).await?;
                let (keys, args) = build();
                client.evalsha(SCRIPT_SHA.as_str(), keys, args).await
            }
            other => other,
        }
    }
}

impl Script {
    /// The script's first five arguments: the mode, now, and the guard's collapse, history
    /// and throttle gap.
    fn head(&self, mode: &'static str, now_ms: i64) -> [Value; 5] {
        let g = &self.guard;
        [
            Value::from_static_str(mode),
            Value::Integer(now_ms),
            Value::Integer(i64::from(g.collapse)),
            Value::Integer(millis(g.history)),
            Value::Integer(millis(g.throttle_every).max(1)),
        ]
    }

    /// An operator's change to one destination, in the script's `read`, `lift`, `pin` or
    /// `unpin` mode; answers the destination's state after it.
    async fn destination(
        &self,
        subject: Subject,
        change: DestinationChange,
        now: Timestamp,
    ) -> Result<DestinationState, fred::error::Error> {
        let g = self.guard;
        let check =
            Check { rule: LimitRule::DestinationGuard, subject, kind: CheckKind::Conversion(g, g.floor(&subject)) };
        let (mode, pin_until, pin_mode) = match change {
            DestinationChange::Read => ("read", 0, 0),
            DestinationChange::Lift => ("lift", 0, 0),
            DestinationChange::Pin(pin) => ("pin", pin.until.as_millis() as i64, mode_code(pin.mode)),
            DestinationChange::Unpin => ("unpin", 0, 0),
        };
        let [f1, f2, f3] = field_names(&check);
        let build = || {
            let mut args: Vec<Value> = self.head(mode, now.as_millis() as i64).into();
            args.extend([
                Value::Integer(1),
                Value::from_static_str("v"),
                Value::from_static_str(f1),
                Value::from_static_str(f2),
                Value::from_static_str(f3),
                Value::Integer(i64::from(g.floor(&subject))),
                Value::Integer(pin_until),
                Value::Integer(pin_mode),
                Value::Integer(i64::from(g.min_conversion)),
            ]);
            (vec![subject_key(&self.prefix, &self.key, &subject)], args)
        };
        let (keys, args) = build();
        let reply: Vec<i64> = match self.client.evalsha(SCRIPT_SHA.as_str(), keys, args).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.client.script_load_cluster::<String, _>(SCRIPT).await?;
                let (keys, args) = build();
                self.client.evalsha(SCRIPT_SHA.as_str(), keys, args).await?
            }
            other => other?,
        };
        let [sent, end, next, verified, baseline, pin_mode, pin_until] = reply[..] else {
            return Err(fred::error::Error::new(
                fred::error::ErrorKind::Parse,
                "unexpected reply from the limiter script",
            ));
        };
        let at = |ms: i64| Timestamp::from_millis(ms.max(0) as u64);
        let fields = (sent.max(0) as u64, verified.max(0) as u64, at(end), at(next));
        let baseline = u8::try_from(baseline).ok();
        let pin = mode_of_code(pin_mode).map(|mode| Pin { mode, until: at(pin_until) });
        Ok(DestinationState::judge(&g, subject, fields, baseline, pin, now))
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Money as the script reads it: Lua numbers are doubles, exact up to 2^53.
fn money(m: u64) -> i64 {
    m.min(1 << 53) as i64
}

/// The Redis key (a hash) of a subject: its own hash tag; see the module doc.
fn subject_key(prefix: &str, key: &[u8; 32], subject: &Subject) -> String {
    match *subject {
        Subject::IdentPurpose(ident, _) | Subject::Ident(ident) => format!("{prefix}:{{i:{}}}", ident.to_hex()),
        Subject::Ip(block) => format!("{prefix}:{{ip:{}}}", digest(key, b"ip", &block.0)),
        Subject::Prefix(value, len) => {
            let mut bytes = [0u8; 9];
            bytes[0] = len;
            bytes[1..].copy_from_slice(&value.to_be_bytes());
            format!("{prefix}:{{pfx:{}}}", digest(key, b"prefix", &bytes))
        }
        Subject::Country(code) => format!("{prefix}:{{cc:{code}}}"),
        Subject::Everywhere => format!("{prefix}:{{all}}"),
    }
}

/// The fields of a check in its subject's hash: a cooldown's one field (the rule's code and
/// the purpose), or a window's count, end and block fields (the rule's code and `:c`, `:u`,
/// `:b`). Static strings: a decision allocates none of them.
fn field_names(check: &Check) -> [&'static str; 3] {
    macro_rules! window {
        ($code:literal) => {
            [concat!($code, ":c"), concat!($code, ":u"), concat!($code, ":b")]
        };
    }
    match (check.kind, check.subject) {
        (CheckKind::Cooldown(_), Subject::IdentPurpose(_, Purpose::Login)) => ["resend_cooldown:login", "", ""],
        (CheckKind::Cooldown(_), Subject::IdentPurpose(_, Purpose::Register)) => ["resend_cooldown:register", "", ""],
        (CheckKind::Cooldown(_), Subject::IdentPurpose(_, Purpose::DeviceLogin)) => {
            ["resend_cooldown:device_login", "", ""]
        }
        (CheckKind::Cooldown(_), _) => [check.rule.as_str(), "", ""],
        (CheckKind::Window(_) | CheckKind::Guesses(_) | CheckKind::Spend(_) | CheckKind::Conversion(..), _) => {
            match check.rule {
                LimitRule::ResendCooldown => window!("resend_cooldown"),
                LimitRule::IdentifierSends => window!("identifier_send_limit"),
                LimitRule::IdentifierLogins => window!("identifier_login_limit"),
                LimitRule::IdentifierRegistrations => window!("identifier_register_limit"),
                LimitRule::IdentifierResends => window!("identifier_resend_limit"),
                LimitRule::IdentifierVerifies => window!("identifier_verify_limit"),
                LimitRule::IdentifierGuesses => window!("identifier_guess_limit"),
                LimitRule::IpSends => window!("ip_send_limit"),
                LimitRule::IpVerifies => window!("ip_verify_limit"),
                LimitRule::PrefixSends => window!("prefix_send_limit"),
                LimitRule::CountrySends => window!("country_send_limit"),
                LimitRule::DeviceChallenges => window!("device_challenge_limit"),
                LimitRule::IpChallenges => window!("ip_challenge_limit"),
                LimitRule::DestinationNotAllowed => window!("destination_not_allowed"),
                LimitRule::SmsBudget => window!("sms_budget_exhausted"),
                LimitRule::DestinationGuard => window!("destination_throttled"),
            }
        }
    }
}

/// Keyed BLAKE3 of `domain ‖ bytes`, 128 bits in hex: IPs and prefixes never appear in clear.
fn digest(key: &[u8; 32], domain: &[u8], bytes: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(domain);
    hasher.update(&[0]);
    hasher.update(bytes);
    IdentHash(hasher.finalize().as_bytes()[..16].try_into().expect("16 bytes")).to_hex()
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, req: &LimitRequest) -> Result<Decision, LimiterError> {
        let checks = match plan(&self.policy, req) {
            Ok(checks) => checks,
            Err(decision) => return Ok(decision),
        };
        if checks.is_empty() {
            return Ok(Decision::Allow);
        }
        if !self.health.is_degraded() {
            match tokio::time::timeout(self.timeout, self.decide(&checks, req.now)).await {
                Ok(Ok((decision, spent))) => {
                    if decision == Decision::Allow {
                        self.local.record(&checks, req.now);
                        if let Some(target) = &req.sms {
                            self.local.sms_spent(target.country_code(), &checks, &spent);
                        }
                    }
                    return Ok(decision);
                }
                Ok(Err(e)) => self.health.degrade(&e.details()),
                Err(_) => self.health.degrade(&format!("no answer within {:?}", self.timeout)),
            }
        }
        self.health.count_fallback();
        Ok(self.local.decide_checks(req, &checks))
    }

    /// One `HDEL` of the guess budget's three fields and, for an SMS, the script in
    /// `verified` mode for the guard's destinations, all sent at once (the local copy is
    /// updated too, so a fallback does not remember what Redis forgot). If Redis does not
    /// answer, the guess count stays until it is forgotten and the verified code is not
    /// counted: stricter, never looser.
    async fn code_verified(
        &self,
        ident: IdentHash,
        sms: Option<SmsTarget>,
        now: Timestamp,
    ) -> Result<(), LimiterError> {
        let guard = self.local.record_verified(ident, sms, now);
        if self.health.is_degraded() {
            return Ok(());
        }
        let key = subject_key(&self.script.prefix, &self.script.key, &Subject::Ident(ident));
        let check = Check {
            rule: LimitRule::IdentifierGuesses,
            subject: Subject::Ident(ident),
            kind: CheckKind::Guesses(self.policy.identifier_guesses),
        };
        let fields: Vec<&'static str> = field_names(&check).to_vec();
        let clear = async { self.client.hdel::<i64, _, _>(key, fields).await.map(drop) };
        let count = async {
            let groups = self.groups(&guard);
            let calls = groups.iter().map(|g| self.script.run("verified", &guard, g, now, None));
            join_all(calls).await.into_iter().try_for_each(|r| r.map(drop))
        };
        let both = async { tokio::try_join!(clear, count) };
        match tokio::time::timeout(self.timeout, both).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.health.degrade(&e.details()),
            Err(_) => self.health.degrade(&format!("no answer within {:?}", self.timeout)),
        }
        Ok(())
    }

    /// The destinations this node's own copy has seen (`LocalLimiter::destinations`), the worst
    /// `DESTINATIONS_READ` of them by the local counts, read from Redis all at once.
    /// A destination only other nodes sent to is listed by them.
    async fn destinations(&self, now: Timestamp, limit: usize) -> Result<Vec<DestinationState>, LimiterError> {
        let local = self.local.destinations(now, DESTINATIONS_READ);
        let reads = local.iter().map(|d| self.script.destination(d.subject, DestinationChange::Read, now));
        let read = tokio::time::timeout(self.timeout, join_all(reads))
            .await
            .map_err(|_| LimiterError(format!("no answer within {:?}", self.timeout)))?;
        let mut all = read.into_iter().collect::<Result<Vec<_>, _>>().map_err(|e| LimiterError(e.details().into()))?;
        all.sort_by_key(|d| std::cmp::Reverse(d.badness()));
        all.truncate(limit);
        Ok(all)
    }

    /// In Redis, for every node, and in the local copy, for a fallback.
    async fn change_destination(
        &self,
        subject: Subject,
        change: DestinationChange,
        now: Timestamp,
    ) -> Result<DestinationState, LimiterError> {
        self.local.change_destination(subject, change, now);
        match tokio::time::timeout(self.timeout, self.script.destination(subject, change, now)).await {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(e)) => Err(LimiterError(e.details().into())),
            Err(_) => Err(LimiterError(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// How many of the destinations a node has seen `destinations` reads from Redis.
const DESTINATIONS_READ: usize = 1_000;

#[cfg(test)]
mod tests {
    use otpd_actors::rules::limits::{IpBlock, Rule};

    use super::*;

    #[test]
    fn one_hash_per_subject_with_one_field_per_rule_and_no_ip_or_prefix_in_clear() {
        let ident = IdentHash([0xab; 16]);
        let window = CheckKind::Window(Rule::per(1, Duration::from_secs(1)));
        let cooldown = Check {
            rule: LimitRule::ResendCooldown,
            subject: Subject::IdentPurpose(ident, Purpose::Login),
            kind: CheckKind::Cooldown(Duration::from_secs(30)),
        };
        let sends = Check { rule: LimitRule::IdentifierSends, subject: Subject::Ident(ident), kind: window };
        let k = [0u8; 32];
        assert_eq!(subject_key("otpd", &k, &cooldown.subject), format!("otpd:{{i:{}}}", ident.to_hex()));
        assert_eq!(subject_key("otpd", &k, &cooldown.subject), subject_key("otpd", &k, &sends.subject));
        assert_eq!(field_names(&cooldown)[0], "resend_cooldown:login");
        let window_fields = ["identifier_send_limit:c", "identifier_send_limit:u", "identifier_send_limit:b"];
        assert_eq!(field_names(&sends), window_fields);
        for rule in [LimitRule::IdentifierVerifies, LimitRule::IpSends, LimitRule::PrefixSends, LimitRule::CountrySends]
        {
            let check = Check { rule, subject: Subject::Country(1), kind: window };
            assert_eq!(field_names(&check)[1], format!("{}:u", rule.as_str()), "field names follow the rule codes");
        }
        let ip = subject_key("otpd", &k, &Subject::Ip(IpBlock::of([192, 0, 2, 1].into())));
        assert!(ip.starts_with("otpd:{ip:") && ip.ends_with('}') && !ip.contains("192"), "{ip}");
        let pfx = subject_key("otpd", &k, &Subject::Prefix(1_202_200, 7));
        assert!(!pfx.contains("1202200"), "{pfx}");
        assert_ne!(pfx, subject_key("otpd", &[1u8; 32], &Subject::Prefix(1_202_200, 7)), "keyed by the node secret");
        assert_eq!(subject_key("x", &k, &Subject::Country(44)), "x:{cc:44}");
    }

    #[test]
    fn a_tls_url_is_parsed_without_tls_and_the_limiter_builds_the_tls_set_up() {
        for (url, plain) in [
            ("rediss://h:6380/1", "redis://h:6380/1"),
            ("rediss-cluster://h:7000?node=g:7001", "redis-cluster://h:7000?node=g:7001"),
            ("valkeys://h", "valkey://h"),
        ] {
            assert_eq!(without_tls(url), (plain.to_owned(), true));
        }
        assert_eq!(without_tls("redis://h:6379"), ("redis://h:6379".to_owned(), false));
        assert_eq!(without_tls("redis-cluster://h:7000"), ("redis-cluster://h:7000".to_owned(), false));

        let mut config = crate::config::Config::default();
        config.redis.url = crate::config::RedisUrl("rediss://127.0.0.1:6380".into());
        config.redis.tls_ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let settings = RedisSettings::from_config(&config.redis).unwrap();
        let e = settings.client().expect_err("the CA file is read when the client is built");
        assert!(
            matches!(e, RedisStartError::Tls(TlsFileError::Pem { ref path, .. }) if path.ends_with("ca.pem")),
            "{e}"
        );
    }
}
