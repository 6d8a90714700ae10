//! The harness against a real node started by the test, on loopback only: a short bounded
//! run whose report parses and accounts for every request, and a find-capacity search that
//! ends within its bound; and its HTML reports in a real browser (`browser/`).

mod browser;

use std::process::Command;
use std::sync::Arc;

use otpd::config::Config;
use otpd_actors::rules::clock::SystemClock;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_otpd-loadtest");

async fn node(dir: &std::path::Path) -> otpd::server::Node {
    node_with(dir, |_| {}).await
}

async fn node_with(dir: &std::path::Path, adjust: impl FnOnce(&mut Config)) -> otpd::server::Node {
    let mut config = Config::default();
    config.node.data_dir = dir.to_owned();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    adjust(&mut config);
    otpd::server::start(config, Arc::new(SystemClock)).await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the harness with `args` and `--out <out> --quiet`, off the runtime; requires it to
/// succeed and returns its `report.json` and everything it printed.
async fn harness(args: &[&str], out: &std::path::Path) -> (Value, String) {
    let mut command = Command::new(BIN);
    command.args(args).arg("--out").arg(out).arg("--quiet");
    let done = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&done.stdout), String::from_utf8_lossy(&done.stderr));
    assert!(done.status.success(), "{log}");
    let report = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    (report, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_login_run_reports_every_request_and_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let out = dir.path().join("report");
    let target = node.base_url();
    let outbox = node.outbox_path.display().to_string();
    let (report, log) = harness(
        &[
            "run",
            "--target",
            &target,
            "--scenario",
            "login",
            "--users",
            "40",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--codes",
            "outbox",
            "--outbox",
            &outbox,
        ],
        &out,
    )
    .await;
    let run = &report["runs"][0];
    assert_eq!(run["errors"], 0, "{log}");
    // 40 arrivals in 2 s, each login → code → login/verify → me.
    let steps: Vec<(&str, u64)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["requests"].as_u64().unwrap()))
        .collect();
    for step in ["login", "code_delivery", "login_verify", "me"] {
        assert!(steps.contains(&(step, 40)), "{step}: {steps:?}");
    }
    assert_eq!(run["requests"], 160);
    assert_eq!(run["scenarios_ok"], 40);
    assert_eq!(report["setup"]["errors"], 0);
    assert!(run["overall"]["p99_ms"].as_f64().unwrap() > 0.0);
    for f in ["report.md", "latency.svg", "throughput.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The capacity table from the run's one rate: every bound judged, printed and written.
    let table = &report["capacity_table"];
    assert_eq!(table["source"], "open-run", "{table}");
    let bounds: Vec<f64> = table["rows"].as_array().unwrap().iter().map(|r| r["p99_ms"].as_f64().unwrap()).collect();
    assert_eq!(bounds, [5.0, 10.0, 25.0, 50.0]);
    for row in table["rows"].as_array().unwrap() {
        // One rate tried: it either met the bound (rate 20) or missed it (above 20).
        let (rate, above) = (row["otpd"]["rate"].as_f64(), row["otpd"]["above"].as_f64());
        assert!(matches!((rate, above), (Some(20.0), None) | (None, Some(20.0))), "{row}");
    }
    assert!(log.contains("## Capacity table"), "{log}");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("| p99 ≤ |"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_capacity_ends_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let out = dir.path().join("capacity");
    let target = node.base_url();
    let (report, _) = harness(
        &[
            "find-capacity",
            "--target",
            &target,
            "--scenario",
            "send-unknown",
            "--min-rate",
            "50",
            "--max-rate",
            "400",
            "--step",
            "1s",
            "--max-steps",
            "4",
            "--slo-p99",
            "250ms",
        ],
        &out,
    )
    .await;
    let steps = report["capacity"]["steps"].as_array().unwrap();
    assert!(!steps.is_empty() && steps.len() <= 4, "{steps:?}");
    assert!(out.join("capacity.svg").exists());
    // One search fills the whole table, each row from the node's steps and beside the bare
    // hyper server's from the generator check's steps (both within --max-steps).
    assert!(report["capacity"]["generator"]["steps"].as_array().unwrap().len() <= 4);
    let table = &report["capacity_table"];
    assert_eq!(table["source"], "search", "{table}");
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{table}");
    let tried: Vec<f64> = steps.iter().map(|s| s["offered_rate"].as_f64().unwrap()).collect();
    for row in rows {
        assert!(row["baseline"].is_object(), "{row}");
        for key in ["rate", "above"] {
            if let Some(r) = row["otpd"][key].as_f64() {
                assert!(tried.contains(&r), "{key} {r} was never tried: {tried:?}");
            }
        }
    }
    // A looser bound never has a lower rate than a tighter one.
    let rates: Vec<f64> = rows.iter().map(|r| r["otpd"]["rate"].as_f64().unwrap_or(0.0)).collect();
    assert!(rates.windows(2).all(|w| w[0] <= w[1]), "{rates:?}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Capacity table") && md.contains("| 50 ms |"), "{md}");
    node.shutdown().await;
}

/// The code login without `me` (`send-verify`), closed loop with a baseline: two requests and
/// a delivery per login, and the capacity table from the closed loop beside the baseline's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_verify_run_is_the_code_login_alone() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let out = dir.path().join("report");
    let target = node.base_url();
    let outbox = node.outbox_path.display().to_string();
    let (report, log) = harness(
        &[
            "run",
            "--target",
            &target,
            "--scenario",
            "send-verify",
            "--users",
            "20",
            "--connections",
            "4",
            "--duration",
            "2s",
            "--max-scenarios",
            "20",
            "--codes",
            "outbox",
            "--outbox",
            &outbox,
            "--baseline",
        ],
        &out,
    )
    .await;
    let run = &report["runs"][0];
    assert_eq!(run["errors"], 0, "{log}");
    let steps: Vec<&str> = run["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["code_delivery", "login", "login_verify"], "{log}");
    let table = &report["capacity_table"];
    assert_eq!(table["source"], "closed-run", "{table}");
    assert!(table["rows"].as_array().unwrap().iter().all(|r| r["baseline"].is_object()), "{table}");
    node.shutdown().await;
}

/// The node sends its SMS through Twilio's REST shape to the harness's endpoint, so the
/// codes travel the node's real dispatcher path; a mix of every scenario completes cleanly.
/// With `--baseline` first: the baseline's world must not take the fixed `--sms-listen` port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_gets_its_codes_through_the_twilio_shape() {
    let dir = tempfile::tempdir().unwrap();
    let sms_port = free_port();
    let node = node_with(dir.path(), |c| {
        c.delivery.provider = "twilio".into();
        c.twilio.account_sid = "AC0123456789abcdef0123456789abcdef".into();
        c.twilio.auth_token = Some(otpd::config::Secret("harness-test-token".into()));
        c.twilio.from = "+15005550006".into();
        c.twilio.base_url = format!("http://127.0.0.1:{sms_port}");
    })
    .await;
    let out = dir.path().join("mixed");
    let target = node.base_url();
    let sms = format!("127.0.0.1:{sms_port}");
    let (report, log) = harness(
        &[
            "run",
            "--target",
            &target,
            "--mix",
            "login=2,signup=1,refresh=1,device-login=1",
            "--users",
            "60",
            "--rate",
            "15",
            "--duration",
            "2s",
            "--codes",
            "twilio",
            "--sms-listen",
            &sms,
            "--baseline",
        ],
        &out,
    )
    .await;
    let run = &report["runs"][0];
    assert_eq!(run["errors"], 0, "{log}");
    assert_eq!(report["setup"]["errors"], 0, "{log}");
    assert_eq!(run["scenarios_ok"], 30);
    let steps: Vec<&str> = run["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    for step in
        ["login", "login_verify", "me", "register", "register_verify", "refresh", "device_challenge", "device_verify"]
    {
        assert!(steps.contains(&step), "{step} missing: {steps:?}");
    }
    // Every code the virtual users used came through the Twilio-shaped endpoint.
    assert!(report["codes_delivered"].as_u64().unwrap() >= 60 + 12 + 6, "{}", report["codes_delivered"]);
    node.shutdown().await;
}

/// A verify run ends when its prepared codes are used up: every code is tried once, and the
/// run neither keeps "running" verifies without codes nor counts them as errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_run_ends_when_its_prepared_codes_are_used_up() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let out = dir.path().join("report");
    let target = node.base_url();
    let outbox = node.outbox_path.display().to_string();
    let (report, log) = harness(
        &[
            "run",
            "--target",
            &target,
            "--scenario",
            "verify",
            "--users",
            "10",
            "--prepare",
            "10",
            "--connections",
            "4",
            "--duration",
            "60s",
            "--codes",
            "outbox",
            "--outbox",
            &outbox,
        ],
        &out,
    )
    .await;
    assert!(log.contains("every prepared code was used"), "{log}");
    let run = &report["runs"][0];
    assert_eq!(run["errors"], 0, "{log}");
    assert_eq!(run["requests"], 10, "{log}");
    assert_eq!(run["scenarios_ok"], 10, "{log}");
    assert_eq!(run["scenarios_failed"], 0, "{log}");
    node.shutdown().await;
}
