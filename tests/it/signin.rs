//! The reference sign-in page (`/signin`) in a real browser: Debian's `chromium`, driven over
//! the DevTools protocol by `tests/browser/signin.mjs` (Node's WebSocket), against a node on
//! this machine. The script walks the whole flow — new account by code, a wrong code, an
//! expired code, a cooldown, signed in, a passkey added through a CDP virtual authenticator,
//! signed out, signed in with the passkey, signed out everywhere — and checks each screen, that
//! axe-core finds no serious or critical violation, and that nothing reached the console, broke
//! the CSP or was fetched from elsewhere. This test answers its questions (the code a phone got,
//! moving the node's clock) and checks what the node recorded.
//!
//! Screenshots of every step go to `target/browser-artifacts/signin/` (kept whatever the
//! outcome; a failure names the last one). Without `chromium`, a Node with WebSocket, or
//! `npm ci` run in `tests/browser/` (axe-core), the test says it skipped and why.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::*;

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Chromium, node and axe-core, or why the test cannot run.
fn tools() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"))
        .ok_or("no `chromium` on PATH (Debian: apt-get install chromium; or set CHROMIUM)")?;
    let node = on_path("node").ok_or("no `node` on PATH (Debian: apt-get install nodejs)")?;
    let ws = std::process::Command::new(&node)
        .args(["--experimental-websocket", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run node: {e}"))?;
    if !ws.success() {
        return Err("this node has no WebSocket (Node 20.10 or later needed)".into());
    }
    let axe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/axe-core/axe.min.js");
    if !axe.is_file() {
        return Err("axe-core is not installed: run `npm ci` in tests/browser (scripts/test.sh does)".into());
    }
    Ok((chromium, node, axe))
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-artifacts/signin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signin_page_works_end_to_end_in_chromium() {
    let (chromium, node, axe) = match tools() {
        Ok(t) => t,
        Err(why) => {
            println!("SKIPPED: the sign-in page's browser test: {why}");
            return;
        }
    };
    let t = start_node_with(|c| {
        // The page's origin is http://localhost:<the test's port>.
        c.passkeys.any_port = true;
        c.passkeys.signin_page = "on".into();
    })
    .await;
    let port = t.base.rsplit(':').next().unwrap().to_owned();
    let base = format!("http://localhost:{port}");
    let shots = artifacts();
    let _ = std::fs::remove_dir_all(&shots);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/signin.mjs");
    let mut child = tokio::process::Command::new(node)
        .arg("--experimental-websocket")
        .arg(script)
        .arg(chromium)
        .arg(&base)
        .arg(&shots)
        .arg(axe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut codes_given = 0;
    let outcome: Value = loop {
        let line = tokio::time::timeout(Duration::from_secs(150), lines.next_line())
            .await
            .expect("the browser script answers within 150 s")
            .unwrap()
            .unwrap_or_else(|| panic!("the browser script ended without a result; screenshots: {}", shots.display()));
        let msg: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON from the script: {line}"));
        let reply = match msg["need"].as_str() {
            Some("code") => {
                codes_given += 1;
                let to = msg["to"].as_str().unwrap();
                let messages = t.wait_for_messages(to, codes_given).await;
                json!({ "code": messages.last().unwrap()["code"] })
            }
            Some("advance") => {
                t.advance(Duration::from_secs(msg["seconds"].as_u64().unwrap()));
                json!({ "ok": true })
            }
            _ => break msg,
        };
        stdin.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
    };
    let status = child.wait().await.unwrap();
    assert!(
        outcome.get("error").is_none() && status.success(),
        "the sign-in flow failed in Chromium: {}\nscreenshots of each step: {}\nchromium's log: {}",
        outcome["error"],
        shots.display(),
        outcome["chromium_stderr"]
    );
    let steps: Vec<&str> =
        outcome["result"]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        [
            "open",
            "send-code",
            "wrong-code",
            "expired-code",
            "cooldown",
            "signed-in",
            "add-passkey",
            "sign-out",
            "passkey-sign-in",
            "sign-out-everywhere",
            "remove-signing-passkey"
        ]
    );
    println!("sign-in page screenshots: {}", shots.display());

    // What the node recorded: the account, its passkey (added, then removed), every session ended.
    let ident = t.node.engine.identifier_hash(&t.node.engine.normalizer().phone("+12025550177").unwrap());
    let events = t.node.engine.audit_log().by_identifier(&ident, 50).await.unwrap();
    let apis: Vec<(&str, &str)> = events.iter().rev().map(|e| (e.api.as_str(), e.outcome.as_str())).collect();
    for expected in [
        ("register_verify", "rejected"),
        ("register_verify", "ok"),
        ("passkey_register", "ok"),
        ("passkey_login", "ok"),
        ("logout_all", "ok"),
        ("passkey_delete", "ok"),
    ] {
        assert!(apis.contains(&expected), "{expected:?} in {apis:?}");
    }
    let user = events.iter().find_map(|e| e.user_id).expect("the account's events name it");
    assert_eq!(t.node.engine.passkey_store().passkeys_of_user(user).await.unwrap().len(), 0, "removed on the page");
}
