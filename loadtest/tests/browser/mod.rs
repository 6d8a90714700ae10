//! The HTML reports in a real browser: a run, a capacity search with a plan added, and their
//! comparison, made by the harness against its own bare hyper server on loopback, each opened
//! in headless Chromium (Debian's `chromium`, driven over the DevTools protocol by
//! `check.mjs` with Node's WebSocket). Every chart must be drawn (an `<svg>` with elements in
//! it and a size on the page), nothing may reach the console, and the page may fetch nothing.
//!
//! Without `chromium` or a Node with WebSocket support the test says that it skipped and why.
//! `OTPD_REPORT_SCREENSHOT=<file.png>` also saves a screenshot of the capacity report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::BIN;

/// Chromium's executable, or why the test cannot run.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let find = |name: &str| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find("chromium"))
        .or_else(|| find("chromium-browser"))
        .ok_or("no `chromium` on PATH (Debian: apt-get install chromium; or set CHROMIUM)")?;
    let node = find("node").ok_or("no `node` on PATH (Debian: apt-get install nodejs)")?;
    let ws = Command::new(&node)
        .args(["--experimental-websocket", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run node: {e}"))?;
    if !ws.success() {
        return Err("this node has no WebSocket (Node 20.10 or later needed)".into());
    }
    Ok((chromium, node))
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn baseline_server() -> Server {
    let mut child = Command::new(BIN)
        .args(["baseline-server", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the baseline server");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    Server(child, format!("http://{}", line.trim()))
}

fn harness(args: &[&str]) -> String {
    let done = Command::new(BIN).args(args).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&done.stdout), String::from_utf8_lossy(&done.stderr));
    assert!(done.status.success(), "{args:?}: {log}");
    log
}

/// Opens `page` and checks it; returns the chart ids found.
fn check_in_browser(chromium: &Path, node: &Path, page: &Path, screenshot: Option<&Path>) -> Vec<String> {
    let html = std::fs::read_to_string(page).unwrap();
    // Self-contained: nothing to load, no script at all.
    for needle in ["<script", "src=", "<link", "@import", "url(http"] {
        assert!(!html.contains(needle), "{}: contains {needle:?}", page.display());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check.mjs");
    let mut command = Command::new(node);
    command.arg("--experimental-websocket").arg(&script).arg(chromium).arg(page);
    if let Some(shot) = screenshot {
        command.arg(shot);
    }
    let done = command.stderr(Stdio::inherit()).output().unwrap();
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{}: {out}", page.display());
    let seen: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let svgs = seen["svgs"].as_array().unwrap();
    assert_eq!(svgs.len(), html.matches("<svg").count(), "every chart in the file is in the page: {seen}");
    for svg in svgs {
        assert!(svg["drawn"].as_u64().unwrap() > 10, "chart {} is empty: {seen}", svg["id"]);
        assert!(svg["width"].as_f64().unwrap() > 100.0 && svg["height"].as_f64().unwrap() > 100.0, "{seen}");
    }
    assert!(seen["tables"].as_u64().unwrap() >= 1, "numbers are in tables too: {seen}");
    for key in ["console", "exceptions", "log", "requests"] {
        assert_eq!(seen[key].as_array().unwrap().len(), 0, "{}: {key} should be empty: {seen}", page.display());
    }
    svgs.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn reports_show_every_chart_in_chromium_without_a_console_error() {
    let (chromium, node) = match browser() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED: the report is not checked in a browser: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let server = baseline_server();
    // A port nothing listens on: the run's second target, so that errors are reported too.
    let closed = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let run = dir.path().join("run");
    let targets = format!("{},{closed}", server.1);
    harness(&[
        "run",
        "--target",
        &targets,
        "--scenario",
        "ping",
        "--rate",
        "200",
        "--duration",
        "2s",
        "--baseline",
        "--quiet",
        "--out",
        run.to_str().unwrap(),
    ]);
    let search = dir.path().join("search");
    harness(&[
        "find-capacity",
        "--target",
        &server.1,
        "--scenario",
        "ping",
        "--min-rate",
        "100",
        "--max-rate",
        "200",
        "--step",
        "1s",
        "--generator-step",
        "1s",
        "--max-steps",
        "3",
        "--slo-p99",
        "250ms",
        "--quiet",
        "--out",
        search.to_str().unwrap(),
    ]);
    let plan = harness(&["plan", "--users", "1000000", "--logins-per-user", "2", "--report", search.to_str().unwrap()]);
    assert!(plan.contains("nodes"), "{plan}");
    let compared = dir.path().join("compared");
    harness(&["compare", run.to_str().unwrap(), search.to_str().unwrap(), "--out", compared.to_str().unwrap()]);

    let ids = check_in_browser(&chromium, &node, &run.join("report.html"), None);
    for id in ["throughput", "latency", "distribution", "errors"] {
        assert!(ids.iter().any(|i| i == id), "the run's report has a {id} chart: {ids:?}");
    }
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("connect refused"), "errors by kind are listed");

    let shot = std::env::var_os("OTPD_REPORT_SCREENSHOT").map(PathBuf::from);
    let ids = check_in_browser(&chromium, &node, &search.join("report.html"), shot.as_deref());
    for id in ["throughput", "latency", "distribution", "capacity", "capacity-errors"] {
        assert!(ids.iter().any(|i| i == id), "the search's report has a {id} chart: {ids:?}");
    }
    let html = std::fs::read_to_string(search.join("report.html")).unwrap();
    assert!(
        html.contains("id=\"plan\"") && html.contains("Generator check"),
        "plan and generator check are in the page"
    );

    let ids = check_in_browser(&chromium, &node, &compared.join("compare.html"), None);
    for id in ["compare-throughput", "compare-latency", "compare-distribution", "compare-capacity"] {
        assert!(ids.iter().any(|i| i == id), "the comparison has a {id} chart: {ids:?}");
    }
}
