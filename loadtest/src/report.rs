//! The report a planner can use, all in one output folder: `report.html` (one self-contained
//! page: charts, tables, the sizing plan when one was made), `report.json` (everything,
//! machine-readable; `compare` and `plan` read it back), `report.md` (the summary tables) and
//! the charts as SVG files.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::capacity::CapacityTable;
use crate::driver::{Bounds, Load};
use crate::plan::Plan;
use crate::scenario::Mix;
use crate::stats::{CODE_DELIVERY, RunSummary};

/// One step of a find-capacity search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityStep {
    pub offered_rate: f64,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    #[serde(default)]
    pub p999_ms: f64,
    pub error_rate: f64,
    pub meets_slo: bool,
    /// The step asked for more requests/s than half the generator's own ceiling: whatever it
    /// measured, it does not count as meeting the SLO.
    #[serde(default)]
    pub beyond_generator: bool,
    /// The generator's worst pause in the step (`GeneratorStats::pause_max_ms`): beside a
    /// missed p99, 10 ms and more says the machine stopped, not only the node.
    #[serde(default)]
    pub pause_max_ms: f64,
}

/// The columns of a capacity search's step table, in the Markdown and the HTML report alike.
pub const STEP_COLUMNS: [&str; 8] = [
    "offered /s",
    "achieved req/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "errors",
    "generator's worst pause ms",
    "meets SLO",
];

impl CapacityStep {
    /// The step's row under [`STEP_COLUMNS`].
    pub fn cells(&self) -> [String; STEP_COLUMNS.len()] {
        [
            format!("{:.0}", self.offered_rate),
            format!("{:.0}", self.achieved_rps),
            format!("{:.2}", self.p50_ms),
            format!("{:.2}", self.p99_ms),
            format!("{:.2}", self.p999_ms),
            format!("{:.3} %", self.error_rate * 100.0),
            format!("{:.1}", self.pause_max_ms),
            step_verdict(self).to_owned(),
        ]
    }

    /// A run at `rate` as a step, judged on the node's answers (a code's delivery is not one)
    /// and on every error, the delivery's included; `meets_slo` and `beyond_generator` are the
    /// search's to set.
    pub fn of(rate: f64, run: &RunSummary) -> CapacityStep {
        let answers = run.answers.as_ref().unwrap_or(&run.overall);
        CapacityStep {
            offered_rate: rate,
            achieved_rps: answers.requests_per_s,
            p50_ms: answers.p50_ms,
            p99_ms: answers.p99_ms,
            p999_ms: answers.p999_ms,
            error_rate: run.error_rate,
            meets_slo: false,
            beyond_generator: false,
            pause_max_ms: run.generator.pause_max_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityReport {
    pub slo_p99_ms: f64,
    pub slo_max_error_rate: f64,
    pub steps: Vec<CapacityStep>,
    /// Highest offered arrival rate that met the SLO.
    pub capacity_rate: Option<f64>,
    /// The generator's own open-loop ceiling, measured first against the bare hyper server.
    #[serde(default)]
    pub generator: Option<GeneratorCeiling>,
    /// The search stopped at half the generator's ceiling, not at the node's limit: the node's
    /// capacity is at least `capacity_rate`, and this harness on this machine cannot say more.
    #[serde(default)]
    pub generator_limited: bool,
}

/// The generator's open-loop ceiling: the same search against the bare hyper server, whose
/// own cost per request is a few microseconds, so what stops it is mostly the generator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorCeiling {
    pub steps: Vec<CapacityStep>,
    /// Requests/s achieved at the highest offered rate that met the SLO (None: none did).
    pub ceiling_rps: Option<f64>,
    /// The most requests/s a node step may be credited with: half the ceiling.
    pub limit_rps: f64,
    /// CPU the generator used, per second, at the ceiling step (1.0 = one core).
    #[serde(default)]
    pub cpu_cores_at_ceiling: f64,
    /// The check met the SLO at the highest rate it needed to try: the ceiling is higher.
    #[serde(default)]
    pub lower_bound: bool,
}

/// The machine the harness ran on, and what it ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub cpu_model: String,
    /// CPUs this process may run on (its affinity), and CPUs online.
    pub cpus_usable: usize,
    pub cpus_online: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// The node's version, from its `/openapi.json` (empty when it did not answer).
    pub node_version: String,
}

impl Machine {
    /// Reads /proc (Linux); what it cannot read stays empty.
    pub fn here() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
            cpu_model: field("model name"),
            cpus_usable: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpus_online: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
            memory_gib: mem_kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            node_version: String::new(),
        }
    }
}

/// Node throughput and latency relative to the bare hyper baseline measured in the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub throughput: f64,
    pub p50_latency: f64,
    pub p99_latency: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub started_at: String,
    pub command: String,
    pub targets: Vec<String>,
    pub mix: Mix,
    pub load: Load,
    pub bounds: Bounds,
    pub cpus: usize,
    pub setup: Option<RunSummary>,
    pub baseline: Option<RunSummary>,
    pub runs: Vec<RunSummary>,
    pub baseline_ratio: Option<Ratio>,
    pub capacity: Option<CapacityReport>,
    pub codes_delivered: u64,
    #[serde(default)]
    pub machine: Machine,
    /// A sizing plan made from this run's figures (`otpd-loadtest plan --report`).
    #[serde(default)]
    pub plan: Option<Plan>,
    /// The highest rate meeting p99 ≤ 5, 10, 25 and 50 ms, next to the bare hyper server's
    /// (every `run` and `find-capacity` writes one; older reports have none).
    #[serde(default)]
    pub capacity_table: Option<CapacityTable>,
}

impl Report {
    /// A report of this process's run (tool, time, command line, CPUs filled in) with no
    /// results yet.
    pub fn new(targets: Vec<String>, mix: Mix, load: Load, bounds: Bounds, setup: Option<RunSummary>) -> Report {
        Report {
            tool: format!("otpd-loadtest {}", env!("CARGO_PKG_VERSION")),
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            targets,
            mix,
            load,
            bounds,
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            setup,
            baseline: None,
            runs: Vec::new(),
            baseline_ratio: None,
            capacity: None,
            codes_delivered: 0,
            machine: Machine::here(),
            plan: None,
            capacity_table: None,
        }
    }

    pub fn ratio(baseline: &RunSummary, run: &RunSummary) -> Ratio {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Ratio {
            throughput: div(run.requests_per_s, baseline.requests_per_s),
            p50_latency: div(run.overall.p50_ms, baseline.overall.p50_ms),
            p99_latency: div(run.overall.p99_ms, baseline.overall.p99_ms),
        }
    }

    /// Reads a `report.json` back (a folder holding one, or the file).
    pub fn read(path: &Path) -> anyhow::Result<Report> {
        let file = if path.is_dir() { path.join("report.json") } else { path.to_owned() };
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a report.json", file.display()))
    }

    /// Writes report.json, report.md, report.html and each chart as an SVG file.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("report.html"), crate::html::report(self))?;
        for (name, svg) in crate::html::charts(self) {
            std::fs::write(dir.join(format!("{name}.svg")), svg)?;
        }
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# otpd load test — {}\n", self.started_at);
        let _ = writeln!(md, "* command: `{}`", self.command);
        let _ = writeln!(md, "* targets: {}", self.targets.join(", "));
        let mix: Vec<String> = self.mix.0.iter().map(|(k, w)| format!("{k:?}={w}")).collect();
        let _ = writeln!(md, "* scenario mix: {}", mix.join(", "));
        let load = match self.load {
            Load::Open { rate, ramp_s } => format!("open loop, {rate:.0} arrivals/s (ramp {ramp_s:.0} s)"),
            Load::Closed { connections } => format!("closed loop, {connections} connections"),
        };
        let _ = writeln!(
            md,
            "* load: {load}; bounded to {:.0} s and {} scenarios, after {:.0} s of unmeasured warm-up (open loop)",
            self.bounds.duration_s, self.bounds.max_scenarios, self.bounds.warmup_s
        );
        let m = &self.machine;
        let _ = writeln!(
            md,
            "* machine: {} ({}), {} of {} CPUs usable, {:.1} GiB, Linux {}; node version {}",
            m.hostname,
            m.cpu_model,
            m.cpus_usable.max(self.cpus),
            m.cpus_online,
            m.memory_gib,
            m.kernel,
            if m.node_version.is_empty() { "unknown" } else { &m.node_version }
        );
        let _ = writeln!(md, "* codes delivered to the harness: {}\n", self.codes_delivered);
        if let Some(s) = &self.setup {
            let _ = writeln!(
                md,
                "Setup (not part of the measurement): {} requests in {:.1} s, {} errors.\n",
                s.requests, s.duration_s, s.errors
            );
        }
        for run in self.baseline.iter().chain(self.runs.iter()) {
            md.push_str(&run_table(run));
        }
        if let Some(r) = &self.baseline_ratio {
            let _ = writeln!(
                md,
                "**Against the bare hyper baseline (same run):** throughput ×{:.3}, p50 latency ×{:.2}, p99 latency ×{:.2}.\n",
                r.throughput, r.p50_latency, r.p99_latency
            );
        }
        if let Some(c) = &self.capacity {
            if let Some(g) = &c.generator {
                let _ = writeln!(md, "{}\n", generator_sentence(g));
            }
            let _ = writeln!(
                md,
                "## Find capacity (SLO: p99 ≤ {} ms, errors < {:.2} %)\n",
                c.slo_p99_ms,
                c.slo_max_error_rate * 100.0
            );
            let _ = writeln!(md, "| {} |", STEP_COLUMNS.join(" | "));
            let _ = writeln!(md, "|{} :---: |", " ---: |".repeat(STEP_COLUMNS.len() - 1));
            for s in &c.steps {
                let _ = writeln!(md, "| {} |", s.cells().join(" | "));
            }
            let _ = writeln!(md, "\n**{}**\n", capacity_sentence(c));
        }
        if let Some(t) = &self.capacity_table {
            md.push_str(&t.markdown());
        }
        if let Some(plan) = &self.plan {
            md.push_str(&plan.markdown());
        }
        md
    }
}

/// "yes", "no", or why a step did not count.
pub fn step_verdict(s: &CapacityStep) -> &'static str {
    match (s.beyond_generator, s.meets_slo) {
        (true, _) => "not counted: beyond half the generator's ceiling",
        (false, true) => "yes",
        (false, false) => "no",
    }
}

/// What the generator check found, in one sentence.
pub fn generator_sentence(g: &GeneratorCeiling) -> String {
    match g.ceiling_rps {
        Some(c) => format!(
            "Generator check: against the bare hyper server, open loop, the generator met the SLO up to {}{c:.0} req/s \
             (using {:.2} cores there), so no node step above {:.0} req/s (half) is credited.",
            if g.lower_bound { "at least " } else { "" },
            g.cpu_cores_at_ceiling,
            g.limit_rps
        ),
        None => "Generator check: the generator could not meet the SLO even against the bare hyper server at the \
                 lowest rate tried: no node capacity can be reported from this machine."
            .to_owned(),
    }
}

/// The search's verdict, in one sentence.
pub fn capacity_sentence(c: &CapacityReport) -> String {
    match (c.capacity_rate, c.generator_limited) {
        (Some(r), true) => format!(
            "Capacity: at least {r:.0} arrivals/s meet the SLO. Higher rates were not measured: they would ask more \
             than half of what this generator can send (see the generator check), so they would measure the \
             generator, not the node."
        ),
        (Some(r), false) => format!("Capacity: {r:.0} arrivals/s meet the SLO."),
        (None, true) => "No rate could be credited: even the lowest would measure the generator.".to_owned(),
        (None, false) => "No tested rate met the SLO.".to_owned(),
    }
}

fn run_table(run: &RunSummary) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## {}\n\n{} requests in {:.1} s = **{:.0} req/s**, {} errors ({:.3} %); scenarios ok {} / failed {}.\n",
        run.label,
        run.requests,
        run.duration_s,
        run.requests_per_s,
        run.errors,
        run.error_rate * 100.0,
        run.scenarios_ok,
        run.scenarios_failed
    );
    let g = &run.generator;
    let _ = writeln!(
        md,
        "Generator: {:.2} cores of CPU (user {:.1} s, system {:.1} s); launch lag p50 / p99 / max {:.2} / {:.2} / {:.2} ms over {} arrivals; worst pause {:.1} ms.\n",
        g.cpu_cores, g.cpu_user_s, g.cpu_system_s, g.lag_p50_ms, g.lag_p99_ms, g.lag_max_ms, g.arrivals, g.pause_max_ms
    );
    let _ = writeln!(md, "| step | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |");
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    // With codes delivered in the run, "all" includes waiting for them (the dispatcher's
    // batching); "answers" is the node's answers alone, the figure an SLO is written against.
    let answers = run.answers.as_ref().filter(|_| run.steps.iter().any(|s| s.step == CODE_DELIVERY));
    for s in run.steps.iter().chain(answers).chain(std::iter::once(&run.overall)) {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            s.step, s.requests, s.requests_per_s, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms, s.errors
        );
    }
    if !run.errors_by_kind.is_empty() {
        let _ = writeln!(md, "\nErrors by kind:\n");
        for (k, n) in &run.errors_by_kind {
            let _ = writeln!(md, "* {k}: {n}");
        }
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Kind;

    #[test]
    fn a_search_s_steps_are_one_markdown_table_row_each_in_search_order() {
        let step = |rate: f64, p99_ms: f64, pause_max_ms: f64, meets_slo: bool| CapacityStep {
            offered_rate: rate,
            achieved_rps: rate - 1.0,
            p50_ms: 1.0,
            p99_ms,
            p999_ms: p99_ms * 2.0,
            error_rate: 0.0,
            meets_slo,
            beyond_generator: false,
            pause_max_ms,
        };
        let bounds = Bounds { duration_s: 1.0, max_scenarios: 1, warmup_s: 0.0 };
        let mut r = Report::new(vec![], Mix::single(Kind::Send), Load::Open { rate: 1.0, ramp_s: 0.0 }, bounds, None);
        r.capacity = Some(CapacityReport {
            slo_p99_ms: 10.0,
            slo_max_error_rate: 0.001,
            steps: vec![step(8_000.0, 4.25, 0.5, true), step(4_000.0, 31.5, 16.5, false)],
            capacity_rate: None,
            generator: None,
            generator_limited: false,
        });
        let md = r.markdown();
        let lines: Vec<&str> = md.lines().skip_while(|l| !l.starts_with("| offered /s")).take(4).collect();
        assert_eq!(lines[0], format!("| {} |", STEP_COLUMNS.join(" | ")));
        assert_eq!(lines[1], "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |");
        assert!(lines[2].starts_with("| 8000 | 7999 | 1.00 | 4.25 | 8.50 | 0.000 % | 0.5 | "), "{}", lines[2]);
        assert!(lines[3].starts_with("| 4000 | 3999 | 1.00 | 31.50 | 63.00 | 0.000 % | 16.5 | "), "{}", lines[3]);
    }
}
