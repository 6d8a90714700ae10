//! `otpd-loadtest`: drive otpd nodes with realistic scenarios and report what they sustain.
//!
//! ```text
//! otpd-loadtest run --target http://127.0.0.1:8080 --scenario login --users 2000 \
//!     --rate 2000 --duration 30s --codes outbox --outbox data/outbox.jsonl --baseline --out report/
//! otpd-loadtest find-capacity --target http://127.0.0.1:8080 --scenario send-unknown \
//!     --slo-p99 10ms --slo-errors 0.001 --out capacity/
//! otpd-loadtest baseline-server --listen 127.0.0.1:9000
//! otpd-loadtest sms-sink --listen 127.0.0.1:9100
//! ```
//!
//! See docs/PERFORMANCE.md for the method and the figures measured with it.

mod baseline;
mod client;
mod codes;
mod driver;
mod report;
mod scenario;
mod stats;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use parking_lot::Mutex;

use crate::client::{Pool, Target};
use crate::codes::Codes;
use crate::driver::{Bounds, Load};
use crate::report::{CapacityReport, CapacityStep, Report};
use crate::scenario::{Identities, Kind, Mix, World};
use crate::stats::RunSummary;

#[derive(Parser)]
#[command(name = "otpd-loadtest", version, about = "Load-test harness for otpd")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One measured run (open or closed loop), optionally next to the bare hyper baseline.
    Run(RunArgs),
    /// Searches for the highest arrival rate that meets an SLO.
    FindCapacity(CapacityArgs),
    /// A bare hyper server answering every request with a tiny JSON body (the ceiling).
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// A Twilio-shaped SMS endpoint that prints each message's recipient and code.
    SmsSink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CodeSource {
    /// Tail the node's development outbox file.
    Outbox,
    /// Serve a Twilio-shaped endpoint the node sends its SMS to.
    Twilio,
}

#[derive(Args, Clone)]
struct Common {
    /// Base URL of a node; repeat (or separate with commas) for several nodes.
    #[arg(long, required = true, value_delimiter = ',')]
    target: Vec<String>,
    /// A single scenario...
    #[arg(long, value_enum, conflicts_with = "mix")]
    scenario: Option<Kind>,
    /// ...or a weighted mix: `login=70,signup=20,refresh=10`.
    #[arg(long)]
    mix: Option<String>,
    /// Users to sign up before the measured phase (for login, send, refresh).
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Codes to issue before a `verify` run (default: enough for the run).
    #[arg(long)]
    prepare: Option<usize>,
    #[arg(long, value_enum, default_value = "outbox")]
    codes: CodeSource,
    /// The node's outbox file (`--codes outbox`).
    #[arg(long, default_value = "data/outbox.jsonl")]
    outbox: PathBuf,
    /// Where the Twilio-shaped endpoint listens (`--codes twilio`); configure the node's
    /// Twilio base URL to it.
    #[arg(long, default_value = "127.0.0.1:0")]
    sms_listen: SocketAddr,
    /// Most connections open at once (per run).
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Offset into the phone-number space (default: random per run).
    #[arg(long)]
    id_offset: Option<u64>,
    /// Rest between two codes sent to one user (set to the node's `otp.resend_cooldown`).
    #[arg(long, default_value = "31s", value_parser = humantime::parse_duration)]
    user_cooldown: Duration,
    /// The node's `tokens.audience` (signed into device-login messages).
    #[arg(long, default_value = "otpd")]
    audience: String,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Folder for report.json, report.md and the charts.
    #[arg(long, default_value = "loadtest-report")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Open loop: scenario arrivals per second. Without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: reach the rate linearly over this long.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// Closed loop: virtual users, each on its own connection.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Hard cap on scenario instances.
    #[arg(long, default_value_t = 10_000_000)]
    max_scenarios: u64,
    /// Also measure a bare hyper server with the same load first, and report the ratio.
    #[arg(long)]
    baseline: bool,
    /// CPUs for the baseline server (`taskset -c` list): give it the node's CPUs, or it
    /// shares the generator's (this process' affinity) and the ceiling reads low.
    #[arg(long)]
    baseline_cpus: Option<String>,
}

#[derive(Args)]
struct CapacityArgs {
    #[command(flatten)]
    common: Common,
    /// The SLO's p99 bound.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    slo_p99: Duration,
    /// The SLO's error-rate bound (0.001 = 0.1 %).
    #[arg(long, default_value_t = 0.001)]
    slo_errors: f64,
    #[arg(long, default_value_t = 500.0)]
    min_rate: f64,
    #[arg(long, default_value_t = 200_000.0)]
    max_rate: f64,
    /// Length of each step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    step: Duration,
    /// Most steps (the search stops earlier once within 5 %).
    #[arg(long, default_value_t = 12)]
    max_steps: usize,
    /// Also measure the bare hyper baseline the same way.
    #[arg(long)]
    baseline: bool,
    /// CPUs for the baseline server, as for `run`.
    #[arg(long)]
    baseline_cpus: Option<String>,
}

/// Longest a single run may last, whatever the arguments say.
const MAX_RUN: Duration = Duration::from_secs(3600);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::FindCapacity(args) => find_capacity(args).await,
            Cmd::BaselineServer { listen } => baseline::serve(listen).await,
            Cmd::SmsSink { listen } => sms_sink(listen).await,
        }
    })
}

fn mix_of(c: &Common) -> anyhow::Result<Mix> {
    let mix = match (&c.scenario, &c.mix) {
        (Some(k), None) => Mix::single(*k),
        (None, Some(m)) => Mix::parse(m)?,
        (None, None) => bail!("give --scenario or --mix"),
        (Some(_), Some(_)) => bail!("give --scenario or --mix, not both"),
    };
    if mix.needs_users() && c.users == 0 {
        bail!("login, send, refresh and device-login need signed-up users: add --users N");
    }
    Ok(mix)
}

/// Builds the shared world: connection pool, code source, identities.
async fn world(c: &Common, targets: &[String], mix: &Mix) -> anyhow::Result<(Arc<World>, Option<SocketAddr>)> {
    let parsed = targets.iter().map(|t| Target::parse(t)).collect::<anyhow::Result<Vec<_>>>()?;
    let codes = Arc::new(Codes::default());
    let mut sink = None;
    if mix.needs_codes() || c.users > 0 || mix.0.iter().any(|(k, _)| *k == Kind::Verify) {
        match c.codes {
            CodeSource::Outbox => {
                codes
                    .tail_outbox(c.outbox.clone())
                    .with_context(|| format!("cannot follow the outbox {}", c.outbox.display()))?;
            }
            CodeSource::Twilio => {
                let addr = codes.twilio_sink(c.sms_listen).await?;
                eprintln!("Twilio-shaped SMS endpoint on http://{addr} (configure the node's Twilio base URL to it)");
                sink = Some(addr);
            }
        }
    }
    let offset = c.id_offset.unwrap_or_else(|| rand::random::<u64>() % 100_000_000);
    let world = World {
        pool: Pool::new(parsed, c.max_connections, c.timeout),
        codes,
        ids: Identities::new(offset),
        users: Mutex::new(VecDeque::new()),
        prepared: Mutex::new(VecDeque::new()),
        code_timeout: Duration::from_secs(10),
        user_cooldown: c.user_cooldown,
        enrol_devices: mix.needs_devices(),
        audience: c.audience.clone(),
        out_of_codes: Default::default(),
    };
    Ok((Arc::new(world), sink))
}

/// The options for the baseline's world: no users, so no code source either (with
/// `--codes twilio` on a fixed `--sms-listen`, the node's world must be the one that binds it).
fn baseline_common(c: &Common) -> Common {
    Common { users: 0, ..c.clone() }
}

/// Signs up `--users` and prepares `verify` codes; returns the setup's measurements.
async fn setup(world: &Arc<World>, c: &Common, mix: &Mix, verify_codes: usize) -> Option<RunSummary> {
    let needs_prepared = mix.0.iter().any(|(k, w)| *k == Kind::Verify && *w > 0);
    let users = if needs_prepared { c.users.max(verify_codes) } else { c.users };
    if users == 0 {
        return None;
    }
    let start = Instant::now();
    let rec = stats::Recorder::new(start);
    eprintln!("setup: signing up {users} users…");
    world.sign_up_users(&rec, users, 64).await;
    if needs_prepared {
        eprintln!("setup: issuing {verify_codes} login codes for the verify run…");
        world.prepare_codes(&rec, verify_codes, 64).await;
    }
    let summary = rec.summary("setup", start.elapsed());
    eprintln!(
        "setup: {} requests, {} errors, {} users ready",
        summary.requests,
        summary.errors,
        world.users.lock().len()
    );
    Some(summary)
}

/// A child process running `baseline-server`; killed on drop.
struct BaselineProcess {
    child: Child,
    url: String,
}

impl BaselineProcess {
    /// Starts the server, on `cpus` (a `taskset -c` list) when given.
    fn start(cpus: Option<&str>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args(["baseline-server", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the baseline server")?;
        let stdout = child.stdout.take().context("baseline stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        Ok(BaselineProcess { child, url: format!("http://{}", line.trim()) })
    }
}

impl Drop for BaselineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let mix = mix_of(c)?;
    let duration = args.duration.min(MAX_RUN);
    let load = match args.rate {
        Some(rate) if rate > 0.0 => Load::Open { rate, ramp_s: args.ramp.as_secs_f64() },
        Some(_) => bail!("--rate must be positive"),
        None => Load::Closed { connections: args.connections },
    };
    let bounds = Bounds { duration_s: duration.as_secs_f64(), max_scenarios: args.max_scenarios };
    let verify_codes = c.prepare.unwrap_or(match load {
        Load::Open { rate, .. } => (rate * duration.as_secs_f64()).ceil() as usize,
        Load::Closed { .. } => 20_000,
    });

    let baseline = if args.baseline {
        let server = BaselineProcess::start(args.baseline_cpus.as_deref())?;
        let (bworld, _) =
            world(&baseline_common(c), std::slice::from_ref(&server.url), &Mix::single(Kind::Ping)).await?;
        Some(driver::drive(bworld, &Mix::single(Kind::Ping), load, bounds, "bare hyper baseline", !c.quiet).await)
    } else {
        None
    };

    let (w, _) = world(c, &c.target, &mix).await?;
    let setup_summary = setup(&w, c, &mix, verify_codes).await;
    let label = format!("otpd {}", mix_label(&mix));
    let summary = driver::drive(w.clone(), &mix, load, bounds, &label, !c.quiet).await;

    let report = Report {
        baseline_ratio: baseline.as_ref().map(|b| Report::ratio(b, &summary)),
        baseline,
        runs: vec![summary],
        codes_delivered: w.codes.delivered(),
        ..Report::new(c.target.clone(), mix, load, bounds, setup_summary)
    };
    report.write(&c.out)?;
    print!("{}", report.markdown());
    eprintln!("report written to {}", c.out.display());
    Ok(())
}

fn mix_label(mix: &Mix) -> String {
    mix.0
        .iter()
        .map(|(k, w)| if mix.0.len() == 1 { format!("{k:?}") } else { format!("{k:?}={w}") })
        .collect::<Vec<_>>()
        .join(",")
}

/// Doubles the rate until the SLO breaks, then bisects between the last pass and the first
/// failure until they are within 5 % (or `max_steps` runs).
async fn search(
    w: &Arc<World>,
    mix: &Mix,
    args: &CapacityArgs,
    label: &str,
    runs: &mut Vec<RunSummary>,
) -> CapacityReport {
    let slo_ms = args.slo_p99.as_secs_f64() * 1000.0;
    let mut steps = Vec::new();
    let (mut best, mut worst): (Option<f64>, Option<f64>) = (None, None);
    let mut rate = args.min_rate.max(1.0);
    for _ in 0..args.max_steps {
        let bounds = Bounds { duration_s: args.step.min(MAX_RUN).as_secs_f64(), max_scenarios: u64::MAX };
        let summary = driver::drive(
            w.clone(),
            mix,
            Load::Open { rate, ramp_s: 0.0 },
            bounds,
            &format!("{label} @ {rate:.0}/s"),
            !args.common.quiet,
        )
        .await;
        let meets = summary.overall.p99_ms < slo_ms && summary.error_rate < args.slo_errors && summary.requests > 0;
        eprintln!(
            "{label}: offered {rate:.0}/s → {:.0} req/s, p99 {:.2} ms, errors {:.3} % → {}",
            summary.requests_per_s,
            summary.overall.p99_ms,
            summary.error_rate * 100.0,
            if meets { "meets SLO" } else { "misses SLO" }
        );
        steps.push(CapacityStep {
            offered_rate: rate,
            achieved_rps: summary.requests_per_s,
            p50_ms: summary.overall.p50_ms,
            p99_ms: summary.overall.p99_ms,
            error_rate: summary.error_rate,
            meets_slo: meets,
        });
        runs.push(summary);
        if meets {
            best = Some(best.map_or(rate, |b: f64| b.max(rate)));
        } else {
            worst = Some(worst.map_or(rate, |x: f64| x.min(rate)));
        }
        rate = match (best, worst) {
            (Some(b), None) if b >= args.max_rate => break,
            (Some(b), None) => (b * 2.0).min(args.max_rate),
            (None, Some(_)) => break,
            (Some(b), Some(x)) if (x - b) / b <= 0.05 => break,
            (Some(b), Some(x)) => (b + x) / 2.0,
            (None, None) => break,
        };
    }
    CapacityReport { slo_p99_ms: slo_ms, slo_max_error_rate: args.slo_errors, steps, capacity_rate: best }
}

async fn find_capacity(args: CapacityArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let mix = mix_of(c)?;
    let mut runs = Vec::new();
    let mut baseline_capacity = None;
    if args.baseline {
        let server = BaselineProcess::start(args.baseline_cpus.as_deref())?;
        let (bw, _) = world(&baseline_common(c), std::slice::from_ref(&server.url), &Mix::single(Kind::Ping)).await?;
        let mut bruns = Vec::new();
        baseline_capacity = Some(search(&bw, &Mix::single(Kind::Ping), &args, "bare hyper baseline", &mut bruns).await);
    }
    let (w, _) = world(c, &c.target, &mix).await?;
    let verify_codes = c.prepare.unwrap_or((args.max_rate.min(50_000.0) * args.step.as_secs_f64()) as usize);
    let setup_summary = setup(&w, c, &mix, verify_codes).await;
    let capacity = search(&w, &mix, &args, &format!("otpd {}", mix_label(&mix)), &mut runs).await;
    if let (Some(b), Some(n)) = (baseline_capacity.as_ref().and_then(|b| b.capacity_rate), capacity.capacity_rate) {
        eprintln!("capacity: otpd {n:.0}/s vs bare hyper {b:.0}/s (×{:.3})", n / b);
    }
    let load = Load::Open { rate: capacity.capacity_rate.unwrap_or(0.0), ramp_s: 0.0 };
    let bounds = Bounds { duration_s: args.step.as_secs_f64(), max_scenarios: u64::MAX };
    let report = Report {
        runs,
        capacity: Some(capacity),
        codes_delivered: w.codes.delivered(),
        ..Report::new(c.target.clone(), mix, load, bounds, setup_summary)
    };
    report.write(&c.out)?;
    if let Some(b) = baseline_capacity {
        std::fs::write(c.out.join("baseline-capacity.json"), serde_json::to_vec_pretty(&b)?)?;
    }
    print!("{}", report.markdown());
    eprintln!("report written to {}", c.out.display());
    Ok(())
}

async fn sms_sink(listen: SocketAddr) -> anyhow::Result<()> {
    let codes = Arc::new(Codes::default());
    let addr = codes.twilio_sink(listen).await?;
    println!("Twilio-shaped SMS endpoint on http://{addr}");
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = codes.delivered();
        if n != last {
            eprintln!("{n} messages received");
            last = n;
        }
    }
}
