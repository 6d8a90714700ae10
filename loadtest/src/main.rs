//! `otpd-loadtest`: drive otpd nodes with realistic scenarios and report what they sustain.
//!
//! ```text
//! otpd-loadtest run --target http://127.0.0.1:8080 --scenario login --users 2000 \
//!     --rate 2000 --duration 30s --codes outbox --outbox data/outbox.jsonl --baseline --out report/
//! otpd-loadtest find-capacity --target http://127.0.0.1:8080 --scenario send-unknown \
//!     --slo-p99 10ms --slo-errors 0.001 --out capacity/
//! otpd-loadtest baseline-server --listen 127.0.0.1:9000
//! otpd-loadtest sms-sink --listen 127.0.0.1:9100
//! otpd-loadtest plan --users 10000000 --logins-per-user 2 --peak-factor 10 --slo-p99 100ms
//! otpd-loadtest compare before/ after/ --out compared/
//! ```
//!
//! `--pin 1` (any command) keeps the generator on CPU 1, as `taskset -c 1` would.
//!
//! See docs/PERFORMANCE.md for the method and the figures measured with it.

mod baseline;
mod capacity;
mod client;
mod codes;
mod driver;
mod html;
mod plan;
mod report;
mod scenario;
mod stats;
mod svg;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use parking_lot::Mutex;

use crate::capacity::{Criterion, TableSource};
use crate::client::{Pool, Target};
use crate::codes::Codes;
use crate::driver::{Bounds, Load};
use crate::plan::{PerCore, Sizing, Workload};
use crate::report::{CapacityReport, CapacityStep, GeneratorCeiling, Report};
use crate::scenario::{Identities, Kind, Mix, World};
use crate::stats::RunSummary;

#[derive(Parser)]
#[command(name = "otpd-loadtest", version, about = "Load-test harness for otpd")]
struct Cli {
    /// Pin this process (the generator) to these CPUs, e.g. `1` or `2-3,6`, before it starts
    /// its threads (as `taskset -c` would); the node and the baseline belong on others.
    #[arg(long, global = true)]
    pin: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One measured run (open or closed loop), optionally next to the bare hyper baseline.
    Run(RunArgs),
    /// Searches for the highest arrival rate that meets an SLO, and fills the capacity table
    /// (p99 ≤ 5, 10, 25, 50 ms) beside the bare hyper server's, from one search each.
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
    /// Sizes a deployment for a workload: nodes, Redis, ScyllaDB, SMS, audit storage.
    Plan(PlanArgs),
    /// Puts two or more reports side by side (the first is the reference): one HTML page.
    Compare {
        /// Report folders (or their report.json), oldest first.
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
        #[arg(long, default_value = "loadtest-compare")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct PlanArgs {
    #[arg(long)]
    users: f64,
    /// Sign-ins per user per day.
    #[arg(long, default_value_t = 1.0)]
    logins_per_user: f64,
    #[arg(long, default_value_t = 0.0)]
    signups_per_day: f64,
    /// Peak rate ÷ average rate.
    #[arg(long, default_value_t = 10.0)]
    peak_factor: f64,
    /// Share of codes sent by SMS, 0 to 1 (the rest by e-mail).
    #[arg(long, default_value_t = 1.0)]
    sms_share: f64,
    /// Country calling code of the SMS (for the price per segment).
    #[arg(long, default_value_t = 1)]
    sms_country: u16,
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    slo_p99: Duration,
    /// Days the audit trail is kept (`retention.audit`).
    #[arg(long, default_value_t = 365.0)]
    retention_days: f64,
    /// Plan for at most this share of measured capacity.
    #[arg(long, default_value_t = plan::HEADROOM)]
    headroom: f64,
    #[arg(long, default_value_t = 4)]
    cores_per_node: u32,
    /// ScyllaDB replication factor (audit storage on disk).
    #[arg(long, default_value_t = 3)]
    replication_factor: u32,
    #[arg(long, default_value_t = plan::AUDIT_BYTES_PER_EVENT)]
    audit_bytes: f64,
    /// Reports (folders or report.json) of send / verify runs or capacity searches to take the
    /// per-core figures from; without, the shipped defaults. The plan is added to the first
    /// one's report.html.
    #[arg(long)]
    report: Vec<PathBuf>,
    /// Node cores in those runs (scripts/perf.sh pins the node to one).
    #[arg(long, default_value_t = 1.0)]
    node_cores: f64,
    /// Folder for plan.json and plan.html (default: the first report's folder, if any).
    #[arg(long)]
    out: Option<PathBuf>,
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
    /// Open loop: run this long at the full rate before the measured run, measuring nothing
    /// (it uses users and prepared codes like the run does).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
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
    /// The SLO's p99 bound (met at p99 ≤ it); the capacity table's bounds are searched too.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    slo_p99: Duration,
    /// The SLO's error-rate bound (0.001 = 0.1 %).
    #[arg(long, default_value_t = 0.001)]
    slo_errors: f64,
    #[arg(long, default_value_t = 500.0)]
    min_rate: f64,
    #[arg(long, default_value_t = 200_000.0)]
    max_rate: f64,
    /// First rate tried (default: --min-rate); the search doubles up or halves down from it.
    #[arg(long)]
    start_rate: Option<f64>,
    /// A bound is settled when the rate that met it and the next one tried, which missed, are
    /// within this share of each other.
    #[arg(long, default_value_t = 0.05)]
    resolution: f64,
    /// Length of each step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    step: Duration,
    /// Run each step this long at its rate before measuring it (connections, buffers and the
    /// node's caches reach their steady state first).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Most steps, of each of the two searches (the generator check, then the node); one
    /// search fills the whole capacity table (p99 ≤ 5, 10, 25, 50 ms) and the --slo-p99
    /// verdict, and stops earlier once each is settled within --resolution.
    #[arg(long, default_value_t = 12)]
    max_steps: usize,
    /// Accepted for old scripts: the bare hyper baseline is always measured first now (the
    /// generator check).
    #[arg(long, hide = true)]
    baseline: bool,
    /// CPUs for the bare hyper server of the generator check, as for `run`.
    #[arg(long)]
    baseline_cpus: Option<String>,
    /// Length of each step of the generator check.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    generator_step: Duration,
}

/// Longest a single run may last, whatever the arguments say.
const MAX_RUN: Duration = Duration::from_secs(3600);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(list) = &cli.pin {
        pin(&parse_cpu_list(list)?)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::FindCapacity(args) => find_capacity(args).await,
            Cmd::BaselineServer { listen } => baseline::serve(listen).await,
            Cmd::SmsSink { listen } => sms_sink(listen).await,
            Cmd::Plan(args) => plan_cmd(args),
            Cmd::Compare { reports, out } => compare(&reports, &out),
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
        bail!("login, send-verify, send, refresh, device-login and passkey-login need signed-up users: add --users N");
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

/// `0,2-3` → [0, 2, 3].
fn parse_cpu_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>()?..=b.parse::<usize>()?),
            None => cpus.push(part.parse()?),
        }
    }
    anyhow::ensure!(!cpus.is_empty() && cpus.iter().all(|&c| c < libc::CPU_SETSIZE as usize), "bad CPU list {list:?}");
    Ok(cpus)
}

/// Restricts this process to `cpus` (threads started later inherit it; the runtime sizes
/// itself to them).
fn pin(cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it (indices checked
    // against CPU_SETSIZE above); sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("cannot pin to CPUs {cpus:?}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
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
    let warmup_s = args.warmup.min(MAX_RUN).as_secs_f64();
    let bounds = Bounds { duration_s: duration.as_secs_f64(), max_scenarios: args.max_scenarios, warmup_s };
    let verify_codes = c.prepare.unwrap_or(match load {
        Load::Open { rate, .. } => (rate * (duration.as_secs_f64() + warmup_s)).ceil() as usize,
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
    let node_version = node_version(&w).await;
    let setup_summary = setup(&w, c, &mix, verify_codes).await;
    let label = format!("otpd {}", mix_label(&mix));
    let summary = driver::drive(w.clone(), &mix, load, bounds, &label, !c.quiet).await;

    // The capacity table from what this run measured: one point, judged against every bound.
    let source = match load {
        Load::Open { .. } => TableSource::OpenRun,
        Load::Closed { .. } => TableSource::ClosedRun,
    };
    // Open loop: the offered rate; closed loop: the scenarios it got through per second.
    let rate_of = |r: &RunSummary| match load {
        Load::Open { rate, .. } => rate,
        Load::Closed { .. } => (r.scenarios_ok + r.scenarios_failed) as f64 / r.duration_s.max(f64::EPSILON),
    };
    let node_step = CapacityStep::of(rate_of(&summary), &summary);
    let base_step = baseline.as_ref().map(|b| vec![CapacityStep::of(rate_of(b), b)]);
    let table = capacity::table(
        source,
        std::slice::from_ref(&node_step),
        &capacity::standard_criteria(),
        base_step.as_deref(),
        String::new(),
    );
    let mut report = Report {
        baseline_ratio: baseline.as_ref().map(|b| Report::ratio(b, &summary)),
        baseline,
        runs: vec![summary],
        capacity_table: Some(table),
        codes_delivered: w.codes.delivered(),
        ..Report::new(c.target.clone(), mix, load, bounds, setup_summary)
    };
    report.machine.node_version = node_version;
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

/// What one search is after: the bounds of the capacity table and the SLO of `--slo-p99`
/// (which decides `capacity_rate` and each step's "meets SLO"), each with its credit limit.
struct Goals {
    slo: Criterion,
    /// The table's bounds (`capacity::P99_BOUNDS_MS`), in order.
    table: Vec<Criterion>,
}

impl Goals {
    fn new(args: &CapacityArgs) -> Self {
        Goals {
            slo: Criterion::new(args.slo_p99.as_secs_f64() * 1000.0, args.slo_errors),
            table: capacity::standard_criteria(),
        }
    }

    /// Every criterion the search must settle: the table's and the SLO, once each.
    fn all(&self) -> Vec<Criterion> {
        let mut all = self.table.clone();
        if !all.iter().any(|c| c.p99_ms == self.slo.p99_ms && c.max_error_rate == self.slo.max_error_rate) {
            all.push(self.slo);
        }
        all
    }

    /// The same goals, each crediting only steps up to half of what the generator reached at
    /// its bound against the bare hyper server.
    fn credited_by(&self, generator_steps: &[CapacityStep]) -> Goals {
        let limit = |c: &Criterion| Criterion {
            credit_limit_rps: Some(capacity::bracket(generator_steps, c).rps.unwrap_or(0.0) / 2.0),
            ..*c
        };
        Goals { slo: limit(&self.slo), table: self.table.iter().map(limit).collect() }
    }
}

/// One open-loop search whose steps serve every goal, the SLO's first
/// (`capacity::next_rate_slo_first` picks each rate), bounded by `--max-steps`; ends early
/// when every goal is settled within `--resolution`, or when a `verify` run has used up its
/// prepared codes.
async fn search(
    w: &Arc<World>,
    mix: &Mix,
    args: &CapacityArgs,
    label: &str,
    runs: &mut Vec<RunSummary>,
    (range, step): (capacity::Range, Duration),
    goals: &Goals,
) -> (CapacityReport, String) {
    let slo = goals.slo;
    let all = goals.all();
    let mut steps: Vec<CapacityStep> = Vec::new();
    let mut stopped = None;
    for _ in 0..args.max_steps {
        let Some(rate) = capacity::next_rate_slo_first(&steps, &slo, &all, &range) else { break };
        let bounds = Bounds {
            duration_s: step.min(MAX_RUN).as_secs_f64(),
            max_scenarios: u64::MAX,
            warmup_s: args.warmup.min(MAX_RUN).as_secs_f64(),
        };
        let summary = driver::drive(
            w.clone(),
            mix,
            Load::Open { rate, ramp_s: 0.0 },
            bounds,
            &format!("{label} @ {rate:.0}/s"),
            !args.common.quiet,
        )
        .await;
        if w.exhausted() {
            // Cut short: its rate held for less than the step, so it is not a step at all.
            stopped = Some(format!("stopped: the prepared codes ran out during the step at {rate:.0}/s (--prepare)"));
            break;
        }
        let mut s = CapacityStep::of(rate, &summary);
        s.beyond_generator = slo.credit_limit_rps.is_some_and(|limit| s.achieved_rps > limit);
        s.meets_slo = capacity::bracket(std::slice::from_ref(&s), &slo).rate.is_some();
        eprintln!(
            "{label}: offered {rate:.0}/s → {:.0} answers/s, p99 {:.2} ms, errors {:.3} %, generator {:.2} cores, lag p99 {:.2} ms, worst pause {:.1} ms → {}",
            s.achieved_rps,
            s.p99_ms,
            s.error_rate * 100.0,
            summary.generator.cpu_cores,
            summary.generator.lag_p99_ms,
            summary.generator.pause_max_ms,
            report::step_verdict(&s)
        );
        steps.push(s);
        runs.push(summary);
    }
    let stopped = stopped.unwrap_or_else(|| match capacity::next_rate(&steps, &all, &range) {
        None => format!(
            "{} steps: every bound settled within {:.0} %, or at the range's end",
            steps.len(),
            range.resolution * 100.0
        ),
        Some(_) => format!("stopped after --max-steps {}: the next-rate column shows what is left open", steps.len()),
    });
    let at_slo = capacity::bracket(&steps, &slo);
    let report = CapacityReport {
        slo_p99_ms: slo.p99_ms,
        slo_max_error_rate: slo.max_error_rate,
        steps,
        capacity_rate: at_slo.rate,
        generator: None,
        generator_limited: at_slo.above_not_credited,
    };
    (report, stopped)
}

/// The generator's own open-loop ceiling: the search of `ping` against a bare hyper server (on
/// `--baseline-cpus`) for the same goals, so that it is also the bare hyper column of the
/// capacity table. It starts near where today's ceiling is, and goes no higher than needed to
/// credit the node search's `--max-rate` (twice the requests/s that rate makes, and a tenth
/// more).
async fn generator_ceiling(
    args: &CapacityArgs,
    mix: &Mix,
    goals: &Goals,
) -> anyhow::Result<(GeneratorCeiling, Vec<RunSummary>)> {
    let c = &args.common;
    let server = BaselineProcess::start(args.baseline_cpus.as_deref())?;
    let (bw, _) = world(&baseline_common(c), std::slice::from_ref(&server.url), &Mix::single(Kind::Ping)).await?;
    let max = 2.2 * args.max_rate * f64::from(mix.max_requests_per_scenario());
    let range = capacity::Range { start: max.min(32_000.0), min: 1.0, max, resolution: args.resolution };
    let mut runs = Vec::new();
    let label = "generator check: bare hyper";
    let (found, _) =
        search(&bw, &Mix::single(Kind::Ping), args, label, &mut runs, (range, args.generator_step), goals).await;
    let at_slo = capacity::bracket(&found.steps, &goals.slo);
    let cores = at_slo
        .rate
        .and_then(|rate| found.steps.iter().zip(&runs).find(|(s, _)| s.offered_rate == rate))
        .map_or(0.0, |(_, r)| r.generator.cpu_cores);
    let ceiling = GeneratorCeiling {
        lower_bound: at_slo.rate.is_some() && at_slo.above.is_none(),
        limit_rps: at_slo.rps.unwrap_or(0.0) / 2.0,
        cpu_cores_at_ceiling: cores,
        ceiling_rps: at_slo.rps,
        steps: found.steps,
    };
    Ok((ceiling, runs))
}

async fn find_capacity(args: CapacityArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let mix = mix_of(c)?;
    anyhow::ensure!(args.resolution > 0.0, "--resolution must be positive");
    let goals = Goals::new(&args);
    let (generator, generator_runs) = generator_ceiling(&args, &mix, &goals).await?;
    eprintln!("{}", report::generator_sentence(&generator));
    let goals = goals.credited_by(&generator.steps);
    let (w, _) = world(c, &c.target, &mix).await?;
    let node_version = node_version(&w).await;
    let verify_codes =
        c.prepare.unwrap_or((args.max_rate.min(50_000.0) * (args.step + args.warmup).as_secs_f64()) as usize);
    let setup_summary = setup(&w, c, &mix, verify_codes).await;
    let mut runs = Vec::new();
    let start = args.start_rate.unwrap_or(args.min_rate);
    let range = capacity::Range { start, min: args.min_rate, max: args.max_rate, resolution: args.resolution };
    let creditable = goals.all().iter().any(|g| g.credit_limit_rps.is_some_and(|l| l > 0.0));
    let (mut capacity, stopped) = if creditable {
        search(&w, &mix, &args, &format!("otpd {}", mix_label(&mix)), &mut runs, (range, args.step), &goals).await
    } else {
        let none = CapacityReport {
            slo_p99_ms: goals.slo.p99_ms,
            slo_max_error_rate: goals.slo.max_error_rate,
            steps: Vec::new(),
            capacity_rate: None,
            generator: None,
            generator_limited: true,
        };
        (none, "not searched: the generator met no bound against the bare hyper server".to_owned())
    };
    let table = capacity::table(TableSource::Search, &capacity.steps, &goals.table, Some(&generator.steps), stopped);
    // Beside the node's run at its capacity: the bare hyper run of the check nearest that rate.
    let near = capacity.capacity_rate.unwrap_or(args.min_rate);
    let baseline = generator
        .steps
        .iter()
        .zip(generator_runs)
        .min_by(|a, b| (a.0.offered_rate - near).abs().total_cmp(&(b.0.offered_rate - near).abs()))
        .map(|(_, run)| run);
    capacity.generator = Some(generator);
    eprintln!("{}", report::capacity_sentence(&capacity));
    let load = Load::Open { rate: capacity.capacity_rate.unwrap_or(0.0), ramp_s: 0.0 };
    let bounds =
        Bounds { duration_s: args.step.as_secs_f64(), max_scenarios: u64::MAX, warmup_s: args.warmup.as_secs_f64() };
    let mut report = Report {
        runs,
        baseline,
        capacity: Some(capacity),
        capacity_table: Some(table),
        codes_delivered: w.codes.delivered(),
        ..Report::new(c.target.clone(), mix, load, bounds, setup_summary)
    };
    report.machine.node_version = node_version;
    report.write(&c.out)?;
    print!("{}", report.markdown());
    eprintln!("report written to {}", c.out.display());
    Ok(())
}

/// The node's version from its OpenAPI document (empty if it does not serve one).
async fn node_version(w: &World) -> String {
    match w.pool.send(0, hyper::Method::GET, "/openapi.json", None, None).await {
        Ok(answer) => answer
            .json()
            .and_then(|v| v.pointer("/info/version").and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn plan_cmd(args: PlanArgs) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..=1.0).contains(&args.sms_share), "--sms-share is a share: 0 to 1");
    anyhow::ensure!(args.headroom > 0.0 && args.headroom <= 1.0, "--headroom is a share: above 0, at most 1");
    anyhow::ensure!(args.peak_factor >= 1.0, "--peak-factor is peak ÷ average: at least 1");
    let reports = args.report.iter().map(|p| Report::read(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let per_core =
        if reports.is_empty() { PerCore::shipped() } else { PerCore::from_reports(&reports, args.node_cores) };
    let workload = Workload {
        users: args.users,
        logins_per_user_per_day: args.logins_per_user,
        signups_per_day: args.signups_per_day,
        peak_factor: args.peak_factor,
        sms_share: args.sms_share,
        sms_country: args.sms_country,
        slo_p99_ms: args.slo_p99.as_secs_f64() * 1000.0,
        retention_days: args.retention_days,
    };
    let sizing = Sizing {
        headroom: args.headroom,
        cores_per_node: args.cores_per_node,
        replication_factor: args.replication_factor,
        audit_bytes_per_event: args.audit_bytes,
    };
    let plan = plan::plan(workload, per_core, sizing);
    print!("{}", plan.table());
    let report_dir = args
        .report
        .first()
        .map(|p| if p.is_dir() { p.clone() } else { p.parent().map(PathBuf::from).unwrap_or_default() });
    let Some(out) = args.out.or(report_dir) else { return Ok(()) };
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("plan.json"), serde_json::to_vec_pretty(&plan)?)?;
    if let Some(mut first) = reports.into_iter().next() {
        first.plan = Some(plan);
        first.write(&out)?;
        eprintln!("plan added to {}", out.join("report.html").display());
    } else {
        let page = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>otpd sizing plan</title></head><body>{}</body></html>\n",
            plan.html()
        );
        std::fs::write(out.join("plan.html"), page)?;
        eprintln!("plan written to {}", out.join("plan.html").display());
    }
    Ok(())
}

fn compare(paths: &[PathBuf], out: &std::path::Path) -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| if p.is_dir() { p.clone() } else { p.parent().map(PathBuf::from).unwrap_or_default() })
        .collect();
    // Each report is named by its folder; by its last two folders when one name is not enough.
    let last = |d: &PathBuf, n: usize| {
        let parts: Vec<String> = d.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        parts[parts.len().saturating_sub(n)..].join("/")
    };
    let unique = |n: usize| {
        let names: Vec<String> = dirs.iter().map(|d| last(d, n)).collect();
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        (distinct.len() == names.len()).then_some(names)
    };
    let names =
        unique(1).or_else(|| unique(2)).unwrap_or_else(|| paths.iter().map(|p| p.display().to_string()).collect());
    let mut reports = Vec::new();
    for (p, name) in paths.iter().zip(names) {
        reports.push((name, Report::read(p)?));
    }
    let (page, charts) = html::compare(&reports);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("compare.html"), page)?;
    for (name, svg) in charts {
        std::fs::write(out.join(format!("{name}.svg")), svg)?;
    }
    eprintln!("comparison written to {}", out.join("compare.html").display());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_like_taskset() {
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("").is_err() && parse_cpu_list("x").is_err() && parse_cpu_list("99999").is_err());
    }
}
