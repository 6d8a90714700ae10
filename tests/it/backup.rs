//! Backups and restores of the embedded store (`otpd backup`, `otpd restore`,
//! `POST /v1/admin/backup`): a backup taken from a real node while sign-ups run, restored into
//! a new data directory on which a new node serves every account acknowledged before the
//! backup began; damaged backups and occupied targets refused; the admin endpoint's bad input,
//! audit event and metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_otpd");

/// A real `otpd` process on two free loopback ports.
struct Proc {
    child: Child,
    base: String,
    ops: String,
    data: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Proc {
    async fn start(data: &Path) -> Proc {
        let (http, ops) = (reserved_port(), reserved_port());
        let env = vec![
            ("OTPD_HTTP__LISTEN", format!("127.0.0.1:{http}")),
            ("OTPD_ADMIN__LISTEN", format!("127.0.0.1:{ops}")),
            ("OTPD_NODE__DATA_DIR", data.display().to_string()),
        ];
        let child = Command::new(BIN)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("OTPD_NODE__LOG_LEVEL", "warn")
            // Hundreds of sign-ups from 127.0.0.1 to +1202 numbers, most verified: the per-IP,
            // per-prefix, per-country rules, the SMS budget and the conversion guard would
            // refuse such traffic; the per-identifier rules stay on.
            .env("OTPD_LIMITS__IP_SEND", "{ limit = 0 }")
            .env("OTPD_LIMITS__IP_VERIFY", "{ limit = 0 }")
            .env("OTPD_LIMITS__PREFIX_SEND", "{ limit = 0 }")
            .env("OTPD_LIMITS__COUNTRY_SEND", "{ limit = 0 }")
            .env("OTPD_LIMITS__SMS_BUDGET", "{ daily = 0 }")
            .env("OTPD_LIMITS__CONVERSION_GUARD", "{ mode = \"off\" }")
            .env_remove("OTPD_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("otpd starts");
        let proc = Proc {
            child,
            base: format!("http://127.0.0.1:{http}"),
            ops: format!("http://127.0.0.1:{ops}"),
            data: data.to_owned(),
            env,
        };
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if client.get(format!("{}/health/ready", proc.base)).send().await.is_ok_and(|r| r.status() == 200) {
                return proc;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("otpd did not start on {}", proc.base);
    }

    /// Runs `otpd <args>` with this node's data directory and ports: (success, stdout, stderr).
    async fn cli(&self, args: &[&str], extra: &[(&str, &str)]) -> (bool, String, String) {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args).envs(self.env.iter().map(|(k, v)| (*k, v.as_str()))).env_remove("OTPD_CONFIG");
        cmd.envs(extra.iter().copied());
        let out = cmd.output().await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The codes of a node's development outbox by (recipient, purpose), read as the file grows.
#[derive(Clone)]
struct Codes {
    seen: Arc<Mutex<HashMap<(String, String), String>>>,
}

impl Codes {
    fn watch(outbox: PathBuf) -> Codes {
        let codes = Codes { seen: Arc::default() };
        let c = codes.clone();
        // Ends with the test's runtime.
        tokio::spawn(async move {
            let mut offset = 0usize;
            loop {
                let text = std::fs::read_to_string(&outbox).unwrap_or_default();
                // Only whole lines; a line being written is read next time.
                let end = text.rfind('\n').map_or(0, |i| i + 1);
                if end > offset {
                    let mut seen = c.seen.lock().unwrap();
                    for line in text[offset..end].lines() {
                        if let Ok(m) = serde_json::from_str::<Value>(line)
                            && let (Some(to), Some(purpose), Some(code)) =
                                (m["to"].as_str(), m["purpose"].as_str(), m["code"].as_str())
                        {
                            seen.insert((to.to_owned(), purpose.to_owned()), code.to_owned());
                        }
                    }
                    offset = end;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        codes
    }

    async fn code(&self, to: &str, purpose: &str) -> String {
        for _ in 0..2000 {
            if let Some(code) = self.seen.lock().unwrap().remove(&(to.to_owned(), purpose.to_owned())) {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no {purpose} code for {to}");
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Reply {
    into_reply(client.post(url).json(&body).send().await.unwrap()).await
}

/// A whole sign-up (register, its code, verify); the access token once acknowledged.
async fn sign_up(client: &reqwest::Client, base: &str, codes: &Codes, phone: &str) -> String {
    let body = json!({ "phone": phone, "first_name": "Backup", "last_name": "Load" });
    let r = post(client, format!("{base}/v1/register"), body).await;
    assert_eq!(r.status, 202, "{phone}: {}", r.raw);
    let code = codes.code(phone, "register").await;
    let r = post(client, format!("{base}/v1/register/verify"), json!({ "phone": phone, "code": code })).await;
    assert_eq!(r.status, 200, "{phone}: {}", r.raw);
    r.body["access_token"].as_str().unwrap().to_owned()
}

/// A login by code; asserts it succeeds (so the account is there).
async fn logs_in(client: &reqwest::Client, base: &str, codes: &Codes, phone: &str) {
    let r = post(client, format!("{base}/v1/login"), json!({ "phone": phone })).await;
    assert_eq!(r.status, 202, "{phone}: {}", r.raw);
    let code = codes.code(phone, "login").await;
    let r = post(client, format!("{base}/v1/login/verify"), json!({ "phone": phone, "code": code })).await;
    assert_eq!(r.status, 200, "{phone} logs in on the restored node: {}", r.raw);
}

/// One sign-up of the load: when it started and when it was acknowledged.
struct Acked {
    phone: String,
    started: Instant,
    acked: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_sign_up() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Proc::start(&tmp.path().join("a")).await;
    let codes = Codes::watch(node.data.join("outbox.jsonl"));
    let client = reqwest::Client::new();

    // 200 accounts first, 32 sign-ups at a time.
    let before: Vec<String> = (0..200).map(|i| phone(30_000 + i)).collect();
    let mut first_token = String::new();
    for chunk in before.chunks(32) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|p| {
                let (client, base, codes, p) = (client.clone(), node.base.clone(), codes.clone(), p.clone());
                tokio::spawn(async move { sign_up(&client, &base, &codes, &p).await })
            })
            .collect();
        for t in tasks {
            let token = t.await.unwrap();
            if first_token.is_empty() {
                first_token = token;
            }
        }
    }

    // Then sign-ups keep running, 16 at a time, while `otpd backup` runs.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU32::new(40_000));
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (client, base, codes) = (client.clone(), node.base.clone(), codes.clone());
            let (stop, next, acked) = (stop.clone(), next.clone(), acked.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let p = phone(next.fetch_add(1, Ordering::Relaxed));
                    let started = Instant::now();
                    sign_up(&client, &base, &codes, &p).await;
                    acked.lock().unwrap().push(Acked { phone: p, started, acked: Instant::now() });
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let backup_dir = tmp.path().join("backups/one");
    let began = Instant::now();
    let (ok, out, err) = node.cli(&["backup", backup_dir.to_str().unwrap()], &[]).await;
    let ended = Instant::now();
    assert!(ok, "otpd backup: {err}");
    assert!(out.contains("verified"), "{out}");
    // The load goes on a little after the backup, then stops.
    let after_backup = acked.lock().unwrap().len() + 20;
    while acked.lock().unwrap().len() < after_backup {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let overlapping = acked.iter().filter(|a| a.started < ended && a.acked > began).count();
    assert!(overlapping >= 1, "sign-ups were running while the backup ran");
    let must_have: Vec<String> =
        before.iter().cloned().chain(acked.iter().filter(|a| a.acked < began).map(|a| a.phone.clone())).collect();
    println!(
        "backup under load: {} sign-ups before the load, {} during it ({} overlapping the backup's {:?}); {out}",
        before.len(),
        acked.len(),
        overlapping,
        ended - began
    );

    // The manifest: every keyspace, at least the acknowledged accounts, the secrets.
    let manifest: Value = serde_json::from_slice(&std::fs::read(backup_dir.join("manifest.json")).unwrap()).unwrap();
    let users = manifest["keyspaces"]["users"]["count"].as_u64().unwrap();
    assert!(users >= must_have.len() as u64, "{users} accounts in the backup, {} acknowledged before", must_have.len());
    assert!(users <= (before.len() + acked.len()) as u64, "no account that was never signed up");
    for ks in ["users", "users_by_ident", "sessions", "sessions_by_user", "audit", "audit_by_ident", "audit_by_trace"] {
        assert!(manifest["keyspaces"][ks]["blake3"].as_str().is_some_and(|d| d.len() == 64), "{ks}: {manifest}");
    }
    for secret in ["secrets/hash.key", "secrets/jwt-ed25519.pk8", "secrets/admin.token"] {
        assert!(manifest["files"][secret]["blake3"].is_string(), "{secret} is in the backup");
    }

    // The node counted and audited it.
    let metrics = scrape(&client, &format!("{}/metrics", node.ops)).await;
    assert_eq!(metrics.sum("otpd_backups_total", &[("outcome", "ok")]), 1.0);
    assert!(metrics.sum("otpd_backup_last_bytes", &[]) > 0.0);
    assert!(metrics.sum("otpd_backup_last_success_time_seconds", &[]) > 1.6e9);

    // A second backup into the same directory is refused, and changes nothing there.
    let (ok, _, err) = node.cli(&["backup", backup_dir.to_str().unwrap()], &[]).await;
    assert!(!ok && err.contains("already exists") && err.contains("backup_target_exists"), "{err}");
    let metrics = scrape(&client, &format!("{}/metrics", node.ops)).await;
    assert_eq!(metrics.sum("otpd_backups_total", &[("outcome", "refused")]), 1.0);
    drop(node);

    // Restore into a new directory, then a node on it.
    let restored = tmp.path().join("restored");
    let (ok, out, err) = node_less_cli(&["restore", backup_dir.to_str().unwrap(), restored.to_str().unwrap()]).await;
    assert!(ok, "otpd restore: {err}");
    assert!(out.contains("verified"), "{out}");
    let (ok, _, err) = node_less_cli(&["restore", backup_dir.to_str().unwrap(), restored.to_str().unwrap()]).await;
    assert!(!ok && err.contains("not empty"), "restore refuses a non-empty target: {err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(restored.join("secrets")), 0o700);
        assert_eq!(mode(restored.join("secrets/hash.key")), 0o600);
    }
    let node = Proc::start(&restored).await;
    let codes = Codes::watch(node.data.join("outbox.jsonl"));

    // Every sign-up acknowledged before the backup began logs in, 16 at a time.
    for chunk in must_have.chunks(16) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|p| {
                let (client, base, codes, p) = (client.clone(), node.base.clone(), codes.clone(), p.clone());
                tokio::spawn(async move { logs_in(&client, &base, &codes, &p).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    // A token issued before the backup still works: the session and the signing key came back.
    let me = get_with(&client, format!("{}/v1/me", node.base), Some(&first_token)).await;
    assert_eq!(me.status, 200, "{}", me.raw);
    assert_eq!(me.body["user"]["phone"], before[0].as_str());
    // The restored node serves new sign-ups too.
    sign_up(&client, &node.base, &codes, &phone(60_000)).await;
}

/// Runs `otpd <args>` with no node and no configuration.
async fn node_less_cli(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN).args(args).env_remove("OTPD_CONFIG").output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flips one bit of the byte at `at` (from the end when negative) of `path`.
fn flip(path: &Path, at: i64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = if at < 0 { bytes.len() - at.unsigned_abs() as usize } else { at as usize };
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn a_damaged_backup_is_refused_by_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Proc::start(&tmp.path().join("a")).await;
    let codes = Codes::watch(node.data.join("outbox.jsonl"));
    let client = reqwest::Client::new();
    for i in 0..10 {
        sign_up(&client, &node.base, &codes, &phone(50_000 + i)).await;
    }
    let clean = tmp.path().join("clean");
    let (ok, _, err) = node.cli(&["backup", clean.to_str().unwrap()], &[]).await;
    assert!(ok, "{err}");
    drop(node);
    let manifest: Value = serde_json::from_slice(&std::fs::read(clean.join("manifest.json")).unwrap()).unwrap();
    // The largest data file of the store (a table of the audit trail), in its middle.
    let (table, size) = manifest["files"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(f, _)| f.starts_with("store/"))
        .map(|(f, s)| (f.clone(), s["bytes"].as_u64().unwrap()))
        .max_by_key(|(_, size)| *size)
        .unwrap();
    for (what, file, at) in [
        ("a data file", table.as_str(), (size / 2) as i64),
        ("the manifest", "manifest.json", 40),
        ("a secret", "secrets/hash.key", -3),
    ] {
        let copy = tmp.path().join(format!("damaged-{}", what.replace(' ', "-")));
        copy_tree(&clean, &copy);
        flip(&copy.join(file), at);
        let target = tmp.path().join(format!("restored-{}", what.replace(' ', "-")));
        let (ok, _, err) = node_less_cli(&["restore", copy.to_str().unwrap(), target.to_str().unwrap()]).await;
        assert!(!ok, "{what}: a damaged backup is refused");
        assert!(err.contains("verification failed"), "{what}: {err}");
        assert!(!target.exists(), "{what}: no data directory is left behind");
    }
    // The undamaged one restores (the copies were damaged, not it).
    let (ok, _, err) =
        node_less_cli(&["restore", clean.to_str().unwrap(), tmp.path().join("ok").to_str().unwrap()]).await;
    assert!(ok, "{err}");
}

#[tokio::test]
async fn backup_with_scylla_points_to_nodetool() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["backup", tmp.path().join("b").to_str().unwrap()])
        .env("OTPD_STORE__KIND", "scylla")
        .env("OTPD_NODE__DATA_DIR", tmp.path())
        .env_remove("OTPD_CONFIG")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nodetool snapshot") && err.contains("docs/OPERATIONS.md"), "{err}");
    assert!(!tmp.path().join("b").exists());
}

#[tokio::test]
async fn the_backup_endpoint_refuses_bad_input_and_audits_what_it_does() {
    let t = start_node().await;
    let token = t.node.admin_token.clone();
    let call = |body: Value, bearer: Option<String>, trace: &'static str| {
        let mut req = t.client.post(t.ops_url("/v1/admin/backup")).header("x-request-id", trace).json(&body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move { into_reply(req.send().await.unwrap()).await }
    };
    let dir = t.dir.path().join("backup-1");
    let ok = call(json!({ "dir": dir.to_str().unwrap() }), Some(token.clone()), "backup-ok").await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    let names: Vec<&str> =
        ok.body["keyspaces"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"users") && names.contains(&"audit"), "{}", ok.raw);
    assert_eq!(ok.body["secret_files"], 3, "{}", ok.raw);

    for (body, bearer, status, code) in [
        (json!({ "dir": dir.to_str().unwrap() }), Some(token.clone()), 409, "backup_target_exists"),
        (json!({ "dir": "relative/dir" }), Some(token.clone()), 400, "invalid_request"),
        (json!({ "dir": "/tmp/../etc/x" }), Some(token.clone()), 400, "invalid_request"),
        (json!({ "dir": "" }), Some(token.clone()), 400, "invalid_request"),
        (json!({ "dir": format!("/{}", "a".repeat(5000)) }), Some(token.clone()), 400, "invalid_request"),
        (json!({ "dir": 7 }), Some(token.clone()), 400, "invalid_request"),
        (json!({ "dir": "/x", "extra": 1 }), Some(token.clone()), 400, "invalid_request"),
        (json!({}), Some(token.clone()), 400, "invalid_request"),
        (json!({ "dir": "/proc/otpd-backup" }), Some(token.clone()), 400, "invalid_request"),
        // Inside the node's own store: refused before anything is created there.
        (json!({ "dir": t.dir.path().join("store/b").to_str().unwrap() }), Some(token.clone()), 400, "invalid_request"),
        (json!({ "dir": t.dir.path().join("b2").to_str().unwrap() }), None, 401, "missing_token"),
        (json!({ "dir": t.dir.path().join("b2").to_str().unwrap() }), Some("wrong".into()), 403, "forbidden"),
    ] {
        let r = call(body.clone(), bearer, "backup-bad").await;
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.raw);
        assert_eq!(r.header("content-type"), Some("application/problem+json"), "{}", r.raw);
    }
    assert!(!t.dir.path().join("b2").exists() && !t.dir.path().join("store/b").exists());
    // The public listener does not serve it.
    let public = into_reply(
        t.client
            .post(t.url("/v1/admin/backup"))
            .bearer_auth(&token)
            .json(&json!({ "dir": "/x" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(public.status, 404, "{}", public.raw);

    // One audit event per backup asked for, with how it went.
    let log = t.node.engine.audit_log();
    let done = log.by_trace("backup-ok", 10).await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!((done[0].api.as_str(), done[0].step.as_str(), done[0].outcome.as_str()), ("admin_backup", "done", "ok"));
    let refused = log.by_trace("backup-bad", 20).await.unwrap();
    assert!(
        refused.iter().any(|e| e.api == "admin_backup" && e.step == "validate" && e.outcome.as_str() == "rejected")
    );
}
