//! The real `otpd` binary as a child process: durability across `kill -9` and restarts, the
//! `otpd audit` subcommand, and configuration errors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_otpd");

struct Proc {
    child: Child,
    base: String,
    data: PathBuf,
}

fn free_port() -> u16 {
    reserved_port()
}

/// The two loopback ports of a node: the public listener and the ops listener.
#[derive(Clone, Copy)]
struct Ports {
    http: u16,
    ops: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports { http: free_port(), ops: free_port() }
    }

    fn env(self) -> [(&'static str, String); 2] {
        [
            ("OTPD_HTTP__LISTEN", format!("127.0.0.1:{}", self.http)),
            ("OTPD_ADMIN__LISTEN", format!("127.0.0.1:{}", self.ops)),
        ]
    }
}

/// Starts `otpd` on a free loopback port with `data` as its data directory and waits until it
/// answers.
async fn spawn(data: &Path, port: Ports) -> Proc {
    spawn_with(data, port, &[]).await
}

/// [`spawn`] with more settings.
async fn spawn_with(data: &Path, port: Ports, env: &[(&str, &str)]) -> Proc {
    let child = Command::new(BIN)
        .envs(port.env())
        .envs(env.iter().copied())
        .env("OTPD_NODE__DATA_DIR", data)
        .env("OTPD_NODE__LOG_LEVEL", "warn")
        // Bursts of sign-ups from one number prefix, verified after the burst: what the
        // conversion guard throttles (tests/it/pumping.rs tests it).
        .env("OTPD_LIMITS__CONVERSION_GUARD", "{ mode = \"off\" }")
        .env_remove("OTPD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("otpd starts");
    let proc = Proc { child, base: format!("http://127.0.0.1:{}", port.http), data: data.to_owned() };
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if client.get(format!("{}/health/live", proc.base)).send().await.is_ok() {
            return proc;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("otpd did not start on port {}", port.http);
}

impl Proc {
    async fn post(&self, path: &str, body: Value) -> Reply {
        into_reply(reqwest::Client::new().post(format!("{}{path}", self.base)).json(&body).send().await.unwrap()).await
    }

    fn kill9(mut self) {
        // std's kill() is SIGKILL on Unix: no shutdown path runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn outbox(&self) -> PathBuf {
        self.data.join("outbox.jsonl")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outbox of a killed node may miss lines it had not yet written (it is a development
/// provider, not an acknowledged write), so look for the login code specifically.
async fn wait_until_login_code(outbox: &Path, to: &str) -> String {
    for _ in 0..500 {
        if let Some(m) = outbox_messages(outbox, to).iter().rev().find(|m| m["purpose"] == "login") {
            return m["code"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no login code for {to}");
}

fn audit_cli(data: &Path, port: Ports, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("audit")
        .args(args)
        .env("OTPD_NODE__DATA_DIR", data)
        .envs(port.env())
        .env_remove("OTPD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = Ports::free();
    let node = spawn(dir.path(), port).await;

    // One account signed up completely, then a burst of concurrent sign-up verifications (each
    // creates its account); the node is killed the moment the last answer arrives.
    let first = phone(900);
    assert_eq!(
        node.post("/v1/register", json!({ "phone": first, "first_name": "K", "last_name": "Nine" })).await.status,
        202
    );
    let code = wait_for_outbox(&node.outbox(), &first, 1).await[0]["code"].as_str().unwrap().to_owned();
    let tokens = node.post("/v1/register/verify", json!({ "phone": first, "code": code })).await;
    assert_eq!(tokens.status, 200);
    let burst: Vec<String> = (0..30).map(|i| phone(910 + i)).collect();
    let mut codes = Vec::new();
    for p in &burst {
        let body = json!({ "phone": p, "first_name": "Burst", "last_name": "User" });
        assert_eq!(node.post("/v1/register", body).await.status, 202);
        codes.push(wait_for_outbox(&node.outbox(), p, 1).await[0]["code"].as_str().unwrap().to_owned());
    }
    let mut tasks = Vec::new();
    for (p, code) in burst.iter().zip(codes) {
        let url = format!("{}/v1/register/verify", node.base);
        let body = json!({ "phone": p, "code": code });
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new().post(url).json(&body).send().await.unwrap().status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    node.kill9();

    // With the node down, `otpd audit` reads the store itself.
    for p in burst.iter().chain([&first]) {
        let (ok, out, err) = audit_cli(dir.path(), port, &["--identifier", p, "--json"]);
        assert!(ok, "{err}");
        let apis: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["api"].as_str().unwrap().to_owned())
            .collect();
        assert!(apis.contains(&"register".to_owned()) && apis.contains(&"register_verify".to_owned()), "{p}: {out}");
    }
    let (ok, out, _) = audit_cli(dir.path(), port, &["--identifier", &first]);
    assert!(ok && out.contains("register_verify") && out.contains("account verified"), "{out}");

    // After a restart the accounts and the session are still there.
    let node = spawn(dir.path(), port).await;
    let access = tokens.body["access_token"].as_str().unwrap();
    let me = into_reply(
        reqwest::Client::new().get(format!("{}/v1/me", node.base)).bearer_auth(access).send().await.unwrap(),
    )
    .await;
    assert_eq!(me.status, 200, "the session and the signing key survived: {}", me.raw);
    assert_eq!(me.body["user"]["phone"], first.as_str());
    for p in &burst {
        // An account gets a real code; an unknown number would not.
        assert_eq!(node.post("/v1/login", json!({ "phone": p })).await.status, 202);
        wait_until_login_code(&node.outbox(), p).await;
    }

    // While the node runs, `otpd audit` asks it over the admin API instead.
    let (ok, out, err) = audit_cli(dir.path(), port, &["--identifier", &burst[0], "--json"]);
    assert!(ok, "{err}");
    let apis: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["api"].as_str().unwrap().to_owned())
        .filter(|api| api != "delivery")
        .collect();
    assert_eq!(apis, vec!["login", "register_verify", "register"], "{out}");
}

/// `kill -9` while requests are in flight: every answer the node gave before it died is on
/// disk (the audit event of each acknowledged send, the session of each acknowledged
/// verification), whatever write was cut in the middle is not, and the node goes on appending
/// after the restart.
#[tokio::test]
async fn kill_9_mid_burst_loses_no_acknowledged_event_or_session() {
    let dir = tempfile::tempdir().unwrap();
    let port = Ports::free();
    // One client address and one number prefix: the send limits out of this burst's way.
    let unlimited = "{ limit = 1000000 }";
    let env = [("OTPD_LIMITS__IP_SEND", unlimited), ("OTPD_LIMITS__PREFIX_SEND", unlimited)];
    let node = spawn_with(dir.path(), port, &env).await;
    // Codes for 20 sign-ups, to verify during the burst.
    let signups: Vec<String> = (0..20).map(|i| phone(700 + i)).collect();
    let mut codes = Vec::new();
    for p in &signups {
        let body = json!({ "phone": p, "first_name": "Mid", "last_name": "Burst" });
        assert_eq!(node.post("/v1/register", body).await.status, 202);
        codes.push(wait_for_outbox(&node.outbox(), p, 1).await[0]["code"].as_str().unwrap().to_owned());
    }
    let client = reqwest::Client::new();
    let sends = (0..400u32).map(|i| {
        let (client, base) = (client.clone(), node.base.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(2 * u64::from(i))).await;
            let trace = format!("mid-burst-{i}");
            let r = client
                .post(format!("{base}/v1/login"))
                .header("x-request-id", &trace)
                .json(&json!({ "phone": phone(1000 + i) }))
                .send()
                .await;
            r.is_ok_and(|r| r.status() == 202).then_some(trace)
        }
    });
    let verifies = signups.iter().zip(&codes).enumerate().map(|(i, (p, code))| {
        let (client, base) = (client.clone(), node.base.clone());
        let body = json!({ "phone": p, "code": code });
        async move {
            tokio::time::sleep(Duration::from_millis(40 * i as u64)).await;
            let r = client.post(format!("{base}/v1/register/verify")).json(&body).send().await.ok()?;
            if r.status() != 200 {
                return None;
            }
            r.json::<Value>().await.ok().and_then(|b| b["refresh_token"].as_str().map(str::to_owned))
        }
    });
    let burst =
        tokio::spawn(futures::future::join(futures::future::join_all(sends), futures::future::join_all(verifies)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    node.kill9();
    let (sent, verified) = burst.await.unwrap();
    let sent: Vec<String> = sent.into_iter().flatten().collect();
    let verified: Vec<String> = verified.into_iter().flatten().collect();
    assert!(!sent.is_empty() && sent.len() < 400, "the kill landed mid-burst: {} of 400 answered", sent.len());
    assert!(!verified.is_empty(), "some verifications were answered before the kill");

    let node = spawn_with(dir.path(), port, &env).await;
    for trace in &sent {
        let (ok, out, err) = audit_cli(dir.path(), port, &["--trace-id", trace, "--json"]);
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 1, "{trace}: exactly its one event: {out}");
    }
    for refresh in &verified {
        let r = into_reply(
            client
                .post(format!("{}/v1/token/refresh", node.base))
                .json(&json!({ "refresh_token": refresh }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "an acknowledged session survived: {}", r.raw);
    }
    // And the trail takes events again after the cut.
    let r = client.post(format!("{}/v1/login", node.base)).header("x-request-id", "after-restart");
    assert_eq!(r.json(&json!({ "phone": phone(1999) })).send().await.unwrap().status(), 202);
    let (ok, out, err) = audit_cli(dir.path(), port, &["--trace-id", "after-restart", "--json"]);
    assert!(ok && out.lines().count() == 1, "{out}{err}");
}

#[tokio::test]
async fn a_graceful_restart_keeps_users_and_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let port = Ports::free();
    let node = spawn(dir.path(), port).await;
    let p = phone(950);
    assert_eq!(
        node.post("/v1/register", json!({ "email": "restart@example.com", "first_name": "R", "last_name": "S" }))
            .await
            .status,
        202
    );
    assert_eq!(node.post("/v1/register", json!({ "phone": p, "first_name": "R", "last_name": "S" })).await.status, 202);
    let code = wait_for_outbox(&node.outbox(), &p, 1).await[0]["code"].as_str().unwrap().to_owned();
    assert_eq!(node.post("/v1/register/verify", json!({ "phone": p, "code": code })).await.status, 200);
    // SIGTERM: the node drains and closes its store.
    let status = Command::new("kill").arg("-TERM").arg(node.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let mut node = node;
    let exit = tokio::task::spawn_blocking(move || {
        let s = node.child.wait().unwrap();
        (node, s)
    })
    .await
    .unwrap();
    assert!(exit.1.success(), "clean exit on SIGTERM: {:?}", exit.1);
    drop(exit.0);

    let node = spawn(dir.path(), port).await;
    let code = {
        assert_eq!(node.post("/v1/login", json!({ "phone": p })).await.status, 202);
        wait_until_login_code(&node.outbox(), &p).await
    };
    // The account survived.
    let r = node.post("/v1/login/verify", json!({ "phone": p, "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let (ok, out, err) = audit_cli(dir.path(), port, &["--identifier", "Restart@Example.com"]);
    assert!(ok, "{err}");
    assert!(out.contains("register") && out.contains("new registration"), "{out}");
}

#[test]
fn bad_configuration_is_reported_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("otpd.toml");
    std::fs::write(&file, "[otp]\ncode_length = 2\nlifetime = \"1h\"\nflavour = \"x\"\n[http]\nlisten = \"nope\"\n")
        .unwrap();
    let out = Command::new(BIN).arg("--config").arg(&file).env("OTPD_ENGINE__SHARDS", "zero").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "otp.code_length",
        "otp.lifetime",
        "otp.flavour",
        "http.listen",
        "engine.shards (from OTPD_ENGINE__SHARDS)",
        "5 problems",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn a_cluster_node_on_the_network_without_tls_refuses_to_start_and_says_why() {
    // Everything a cluster node needs, except mutual TLS, on an address other hosts reach.
    let dir = tempfile::tempdir().unwrap();
    let out = cluster_node(dir.path())
        .env("OTPD_CLUSTER__LISTEN", "0.0.0.0:4370")
        .env("OTPD_CLUSTER__ADVERTISE_HOST", "otpd-1")
        .env("OTPD_CLUSTER__SEEDS", "[\"otpd-2:4370\"]")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        "1 problem",
        "cluster.tls_cert_file, tls_key_file, tls_ca_file: required",
        "listen = 0.0.0.0:4370 is not a loopback address",
        "seed \"otpd-2:4370\" is not a loopback address",
        "mutual TLS",
        "cluster.insecure_plaintext_on_private_network = true",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // Refused before anything was opened: no secrets written, no store created.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the data directory stays empty");
}

/// `otpd` configured as a cluster node in every respect but the cluster's addresses and TLS,
/// with `data` as its data directory. Its store and Redis are ports nothing listens on: the
/// tests that use it expect the node to stop before it opens either.
fn cluster_node(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("OTPD_CONFIG")
        .env("OTPD_NODE__DATA_DIR", data)
        .envs(Ports::free().env())
        .env("OTPD_CLUSTER__ENABLED", "true")
        .env("OTPD_CLUSTER__NODE_NAME", "otpd-1")
        .env("OTPD_CLUSTER__COOKIE", "5f0c3a9e71d24b8a96e0f1c2d3b4a5968778695a4b3c2d1e0f9e8d7c6b5a4938")
        .env("OTPD_SECRETS__HASH_KEY", "ab".repeat(32))
        .env("OTPD_TOKENS__ALGORITHM", "HS256")
        .env("OTPD_TOKENS__HS256_SECRET", "process-test-hs256-secret-0123456789abcdef")
        .env("OTPD_STORE__KIND", "scylla")
        .env("OTPD_SCYLLA__CONTACT_POINTS", format!("[\"127.0.0.1:{}\"]", free_port()))
        .env("OTPD_REDIS__URL", format!("redis://127.0.0.1:{}", free_port()));
    cmd
}

#[test]
fn a_cluster_node_whose_tls_key_others_can_read_refuses_to_start() {
    if !has_tools("process::a_cluster_node_whose_tls_key_others_can_read_refuses_to_start", &["openssl"]) {
        return;
    }
    let (data, certs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = test_ca(certs.path(), "ca");
    let (cert, key) = test_cert(certs.path(), "ca", "otpd-1");
    let start = || {
        cluster_node(data.path())
            .env("OTPD_CLUSTER__LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("OTPD_CLUSTER__TLS_CERT_FILE", &cert)
            .env("OTPD_CLUSTER__TLS_KEY_FILE", &key)
            .env("OTPD_CLUSTER__TLS_CA_FILE", &ca)
            .output()
            .unwrap()
    };
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let out = start();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "mode {mode:o}: {err}");
        let expected = format!("cluster TLS: {}: mode {mode:04o} lets group or others read a secret", key.display());
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
        assert!(err.contains(&format!("chmod 600 {}", key.display())), "{err}");
    }
    // The same key, private: the node gets past its cluster files, and stops only at the
    // store, which is not there.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = start();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("cluster TLS") && !err.contains("lets group or others read"), "{err}");
}

#[test]
fn the_start_up_log_names_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let port = ports.http;
    let mut child = Command::new(BIN)
        .envs(ports.env())
        .env("OTPD_NODE__DATA_DIR", dir.path())
        .env("OTPD_NODE__LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let done = line.contains("outbox");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let lines = reader.join().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let outbox_line = lines.iter().find(|l| l.contains("outbox")).expect("a log line naming the outbox");
    let parsed: Value = serde_json::from_str(outbox_line).expect("JSON log lines");
    assert_eq!(parsed["outbox"], dir.path().join("outbox.jsonl").display().to_string());
    assert!(lines.iter().any(|l| l.contains(&format!("127.0.0.1:{port}"))));
    // A quiet start: on an empty data directory (where the storage library has most to say)
    // every line up to the outbox is otpd's own; dependencies log at warn by default.
    for line in &lines {
        let parsed: Value = serde_json::from_str(line).expect("JSON log lines");
        let target = parsed["target"].as_str().unwrap_or_default();
        assert!(target == "otpd" || target.starts_with("otpd::") || target.starts_with("otpd_"), "{line}");
    }
}

#[tokio::test]
async fn rotations_revocations_and_devices_survive_kill_9() {
    use crate::devices::{Key, message};
    let dir = tempfile::tempdir().unwrap();
    let port = Ports::free();
    let node = spawn(dir.path(), port).await;
    let client = reqwest::Client::new();
    let p = phone(950);
    assert_eq!(
        node.post("/v1/register", json!({ "phone": p, "first_name": "K", "last_name": "Nine" })).await.status,
        202
    );
    let code = wait_for_outbox(&node.outbox(), &p, 1).await[0]["code"].as_str().unwrap().to_owned();
    let first = node.post("/v1/register/verify", json!({ "phone": p, "code": code })).await.body;
    let access = first["access_token"].as_str().unwrap().to_owned();
    let key = Key::p256();
    let enrolled = into_reply(
        client
            .post(format!("{}/v1/devices", node.base))
            .bearer_auth(&access)
            .json(&json!({ "name": "Phone", "platform": "android", "public_key": key.spki_base64() }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.raw);
    let device = enrolled.body["id"].as_str().unwrap().to_owned();
    let old_refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let rotated = node.post("/v1/token/refresh", json!({ "refresh_token": old_refresh })).await;
    assert_eq!(rotated.status, 200);
    // A second session, logged out right before the kill.
    let challenge = node.post("/v1/device-login/challenge", json!({ "device_id": device })).await.body;
    let nonce = challenge["nonce"].as_str().unwrap();
    let signature = key.sign(&message("otpd", &device, nonce));
    let second = node
        .post("/v1/device-login/verify", json!({ "device_id": device, "nonce": nonce, "signature": signature }))
        .await;
    assert_eq!(second.status, 200, "{}", second.raw);
    let second_access = second.body["access_token"].as_str().unwrap().to_owned();
    let out = client.post(format!("{}/v1/logout", node.base)).bearer_auth(&second_access).send().await.unwrap();
    assert_eq!(out.status(), 204);
    node.kill9();

    let node = spawn(dir.path(), port).await;
    let me = |token: String| {
        let (client, base) = (client.clone(), node.base.clone());
        async move { client.get(format!("{base}/v1/me")).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me(second_access).await, 401, "the logout survived");
    let challenge = node.post("/v1/device-login/challenge", json!({ "device_id": device })).await.body;
    let nonce = challenge["nonce"].as_str().unwrap();
    let signature = key.sign(&message("otpd", &device, nonce));
    let r = node
        .post("/v1/device-login/verify", json!({ "device_id": device, "nonce": nonce, "signature": signature }))
        .await;
    assert_eq!(r.status, 200, "the device survived: {}", r.raw);
    let current = rotated.body["refresh_token"].as_str().unwrap();
    let r = node.post("/v1/token/refresh", json!({ "refresh_token": current })).await;
    assert_eq!(r.status, 200, "the rotation survived: {}", r.raw);
    let r = node.post("/v1/token/refresh", json!({ "refresh_token": old_refresh })).await;
    assert_eq!(r.code(), "refresh_token_reused", "and so did the retired digest");
    assert_eq!(me(access).await, 401);
}

/// Every mode under `dir` that gives group or others any access.
fn shared_modes(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(format!("{} {mode:o}", path.display()));
        }
        if path.is_dir() {
            out.extend(shared_modes(&path));
        }
    }
    out
}

/// Started under the most permissive umask, the node still creates its data directory, store,
/// outbox and secrets for its own user only.
#[tokio::test]
async fn the_data_directory_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = Ports::free();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000 && exec {BIN}"))
        .envs(port.env())
        .env("OTPD_NODE__DATA_DIR", &data)
        .env("OTPD_NODE__LOG_LEVEL", "warn")
        .env_remove("OTPD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("otpd starts");
    let base = format!("http://127.0.0.1:{}", port.http);
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if client.get(format!("{base}/health/live")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = phone(990);
    let r =
        client.post(format!("{base}/v1/register")).json(&json!({ "phone": p, "first_name": "U", "last_name": "M" }));
    assert_eq!(r.send().await.unwrap().status(), 202);
    wait_for_outbox(&data.join("outbox.jsonl"), &p, 1).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data directory");
    let shared = shared_modes(&data);
    assert!(shared.is_empty(), "readable by group or others:\n{}", shared.join("\n"));
    assert!(data.join("store").is_dir() && data.join("secrets/hash.key").is_file(), "the test looked at something");
}

/// A secret file others can read stops the start, naming the file and the fix.
#[test]
fn a_secret_file_others_can_read_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let key = secrets.join("hash.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = Ports::free();
    let out = Command::new(BIN)
        .envs(port.env())
        .env("OTPD_NODE__DATA_DIR", dir.path())
        .env_remove("OTPD_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hash.key") && err.contains("mode 0644") && err.contains("chmod 600"), "{err}");
}
