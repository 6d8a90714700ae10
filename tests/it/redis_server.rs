//! Real `redis-server` processes for tests: one standalone server, or a 3-master Redis Cluster
//! made with `redis-cli --cluster create`, on free loopback ports with temporary directories.
//! Every process is started here and stopped here by its PID (on drop at the latest).
//!
//! When `redis-server` is not installed, [`Redis::standalone`] and [`Redis::cluster`] print
//! that the test is skipped and why, and return `None` (`./scripts/test.sh` installs it).
//! [`Redis::standalone_tls`] starts a server that speaks TLS only, with a CA and certificates
//! made by `openssl` for the test; it skips the same way when `openssl` is missing or the
//! `redis-server` was built without TLS.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use otpd::config::{Config, Dur, RedisUrl, Secret};
use tempfile::TempDir;

/// The hash key every node of a cross-node test shares (identifier hashes are Redis keys).
pub const SHARED_HASH_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The certificates of a deployment that speaks TLS, and whether it asks clients for one.
#[derive(Clone)]
pub struct RedisTls {
    pub ca: PathBuf,
    /// The server's certificate and key (for 127.0.0.1).
    pub server: (PathBuf, PathBuf),
    /// A client certificate and key signed by the same CA, for mutual TLS.
    pub client: (PathBuf, PathBuf),
    /// `--tls-auth-clients yes`: a client without a certificate is refused.
    pub auth_clients: bool,
}

/// One `redis-server` process.
struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(port: u16, dir: &Path, cluster: bool, tls: Option<&RedisTls>) -> Server {
        let mut cmd = Command::new("redis-server");
        match tls {
            // TLS only: no plain-text port at all.
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&tls.server.0)
                    .arg("--tls-key-file")
                    .arg(&tls.server.1)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", if tls.auth_clients { "yes" } else { "no" }]);
            }
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
        }
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join(format!("redis-{port}.log")));
        if cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
        }
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("redis-server starts");
        Server { port, child: Some(child) }
    }

    /// Kills this process (by PID) and reaps it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process has ended (a server that refused its arguments).
    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().is_ok_and(|status| status.is_some()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running Redis deployment for one test.
pub struct Redis {
    servers: Vec<Server>,
    pub cluster: bool,
    /// Whether `redis-cli --cluster create` has run (from then on, "up" means cluster_state:ok).
    created: bool,
    /// Set when the servers speak TLS only.
    pub tls: Option<RedisTls>,
    dir: TempDir,
}

fn installed(test: &str) -> bool {
    let ok = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
        && Command::new("redis-cli").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED {test}: redis-server / redis-cli are not installed (Debian packages redis-server and \
             redis-tools; ./scripts/test.sh installs them)"
        );
    }
    ok
}

/// A free loopback port whose cluster-bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port <= 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs `redis-cli -p <port> <args>` and returns its output; over TLS (with the client
/// certificate) when `tls` is set.
fn cli_with(port: u16, tls: Option<&RedisTls>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(tls) = tls {
        cmd.arg("--tls").arg("--cacert").arg(&tls.ca).arg("--cert").arg(&tls.client.0).arg("--key").arg(&tls.client.1);
    }
    let out = cmd.args(args).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if tokio::task::block_in_place(&mut ready) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}

impl Redis {
    /// One standalone server, or `None` (after printing why) without `redis-server`.
    pub async fn standalone(test: &str) -> Option<Redis> {
        if !installed(test) {
            return None;
        }
        Some(Self::standalone_at(free_port()).await)
    }

    /// Whether the tests can run here (prints why not).
    pub fn installed(test: &str) -> bool {
        installed(test)
    }

    /// A loopback port nothing listens on (yet).
    pub fn free_port() -> u16 {
        free_port()
    }

    /// One standalone server on `port`.
    pub async fn standalone_at(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let servers = vec![Server::start(port, dir.path(), false, None)];
        let redis = Redis { servers, cluster: false, created: false, tls: None, dir };
        redis.wait_up().await;
        redis
    }

    /// One standalone server that speaks TLS only (`--port 0 --tls-port <port>`), with a CA,
    /// a server certificate for 127.0.0.1 and a client certificate made for it; or `None`
    /// (after printing why) without `redis-server`, without `openssl`, or when this
    /// `redis-server` was built without TLS.
    pub async fn standalone_tls(test: &str, auth_clients: bool) -> Option<Redis> {
        if !installed(test) {
            return None;
        }
        if crate::support::program("openssl").is_none() {
            println!("SKIPPED {test}: openssl (to make the test certificates) is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::support::test_ca(dir.path(), "ca");
        let server = crate::support::test_cert(dir.path(), "ca", "redis");
        let client = crate::support::test_cert(dir.path(), "ca", "client");
        let tls = RedisTls { ca, server, client, auth_clients };
        let port = free_port();
        let mut servers = vec![Server::start(port, dir.path(), false, Some(&tls))];
        // A redis-server built without TLS refuses --tls-port and exits: skip, saying so.
        for _ in 0..1000 {
            if tokio::task::block_in_place(|| cli_with(port, Some(&tls), &["ping"])).trim() == "PONG" {
                return Some(Redis { servers, cluster: false, created: false, tls: Some(tls), dir });
            }
            if servers[0].exited() {
                let log = std::fs::read_to_string(dir.path().join(format!("redis-{port}.log"))).unwrap_or_default();
                let why = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no log line");
                println!("SKIPPED {test}: redis-server did not start with TLS (built without it?): {why}");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server with TLS on port {port} never answered");
    }

    /// A 3-master Redis Cluster, or `None` (after printing why) without `redis-server`.
    pub async fn cluster(test: &str) -> Option<Redis> {
        if !installed(test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let servers: Vec<Server> = (0..3).map(|_| Server::start(free_port(), dir.path(), true, None)).collect();
        let mut redis = Redis { servers, cluster: true, created: false, tls: None, dir };
        redis.wait_up().await;
        let nodes: Vec<String> = redis.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = tokio::task::block_in_place(|| {
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&nodes)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .output()
                .expect("redis-cli runs")
        });
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        redis.created = true;
        redis.wait_up().await;
        Some(redis)
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port).collect()
    }

    /// Answering, and, for a cluster, serving every slot on every node.
    async fn wait_up(&self) {
        for port in self.ports() {
            wait_until(&format!("redis on port {port}"), || self.cli(port, &["ping"]).trim() == "PONG").await;
            if self.cluster && self.created {
                wait_until(&format!("cluster state ok on port {port}"), || {
                    self.cli(port, &["cluster", "info"]).contains("cluster_state:ok")
                })
                .await;
            }
        }
    }

    /// Points a node's configuration at this deployment (URL for one server, seed nodes for a
    /// cluster), with a short probe interval and the shared hash key.
    pub fn configure(&self, config: &mut Config) {
        if self.cluster {
            config.redis.cluster_nodes = self.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        } else if let Some(tls) = &self.tls {
            config.redis.url = RedisUrl(format!("rediss://127.0.0.1:{}", self.servers[0].port));
            config.redis.tls_ca_file = Some(tls.ca.clone());
            if tls.auth_clients {
                config.redis.tls_cert_file = Some(tls.client.0.clone());
                config.redis.tls_key_file = Some(tls.client.1.clone());
            }
        } else {
            config.redis.url = RedisUrl(format!("redis://127.0.0.1:{}", self.servers[0].port));
        }
        // Generous: a decision that falls back by accident would hide a cross-node bug.
        config.redis.timeout = Dur(Duration::from_secs(2));
        config.redis.probe_interval = Dur(Duration::from_millis(50));
        config.secrets.hash_key = Some(Secret(SHARED_HASH_KEY.into()));
    }

    /// Kills every server (by PID).
    pub fn stop(&mut self) {
        for s in &mut self.servers {
            s.stop();
        }
    }

    /// Starts every server again on its port (a cluster reloads its node configuration); waits
    /// until it serves.
    pub async fn restart(&mut self) {
        self.stop();
        let dir: PathBuf = self.dir.path().to_owned();
        for s in &mut self.servers {
            *s = Server::start(s.port, &dir, self.cluster, self.tls.as_ref());
        }
        self.wait_up().await;
    }

    /// Pauses (`SIGSTOP`) or resumes (`SIGCONT`) every server: a Redis that accepts connections
    /// but does not answer.
    pub fn pause(&self, paused: bool) {
        for s in &self.servers {
            if let Some(pid) = s.pid() {
                let signal = if paused { "-STOP" } else { "-CONT" };
                let ok = Command::new("kill").args([signal, &pid.to_string()]).status().is_ok_and(|s| s.success());
                assert!(ok, "kill {signal} {pid}");
            }
        }
    }

    /// Calls of `cmd` (e.g. `evalsha`) served so far, over every server.
    pub fn calls(&self, cmd: &str) -> u64 {
        let needle = format!("cmdstat_{cmd}:calls=");
        self.ports()
            .iter()
            .map(|p| {
                let info = self.cli(*p, &["info", "commandstats"]);
                info.lines()
                    .find_map(|l| l.strip_prefix(&needle))
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// `redis-cli` on one of this deployment's ports, over TLS when it speaks TLS.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli_with(port, self.tls.as_ref(), args)
    }

    /// Every key over every server.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .ports()
            .iter()
            .flat_map(|p| self.cli(*p, &["--scan"]).lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys
    }
}
