//! The report a planner can use: `report.json` (everything, machine-readable), `report.md`
//! (the summary tables), and SVG charts (`latency.svg`, `throughput.svg`, and for
//! find-capacity `capacity.svg`), all written to one output folder.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::driver::{Bounds, Load};
use crate::scenario::Mix;
use crate::stats::RunSummary;

/// One step of a find-capacity search.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityStep {
    pub offered_rate: f64,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub error_rate: f64,
    pub meets_slo: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    pub slo_p99_ms: f64,
    pub slo_max_error_rate: f64,
    pub steps: Vec<CapacityStep>,
    /// Highest offered arrival rate that met the SLO.
    pub capacity_rate: Option<f64>,
}

/// Node throughput and latency relative to the bare hyper baseline measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub throughput: f64,
    pub p50_latency: f64,
    pub p99_latency: f64,
}

#[derive(Debug, Serialize)]
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

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        let mut series: Vec<&RunSummary> = self.baseline.iter().collect();
        series.extend(self.runs.iter());
        if !series.is_empty() {
            latency_chart(&dir.join("latency.svg"), &series)?;
            throughput_chart(&dir.join("throughput.svg"), &series)?;
        }
        if let Some(c) = &self.capacity {
            capacity_chart(&dir.join("capacity.svg"), c)?;
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
            "* load: {load}; bounded to {:.0} s and {} scenarios",
            self.bounds.duration_s, self.bounds.max_scenarios
        );
        let _ =
            writeln!(md, "* machine: {} CPUs; codes delivered to the harness: {}\n", self.cpus, self.codes_delivered);
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
            let _ = writeln!(
                md,
                "## Find capacity (SLO: p99 < {} ms, errors < {:.2} %)\n",
                c.slo_p99_ms,
                c.slo_max_error_rate * 100.0
            );
            let _ = writeln!(
                md,
                "| offered /s | achieved req/s | p50 ms | p99 ms | errors | meets SLO |\n| ---: | ---: | ---: | ---: | ---: | :---: |"
            );
            for s in &c.steps {
                let _ = writeln!(
                    md,
                    "| {:.0} | {:.0} | {:.2} | {:.2} | {:.3} % | {} |",
                    s.offered_rate,
                    s.achieved_rps,
                    s.p50_ms,
                    s.p99_ms,
                    s.error_rate * 100.0,
                    if s.meets_slo { "yes" } else { "no" }
                );
            }
            match c.capacity_rate {
                Some(r) => {
                    let _ = writeln!(md, "\n**Capacity: {r:.0} arrivals/s** meet the SLO.\n");
                }
                None => {
                    let _ = writeln!(md, "\n**No tested rate met the SLO.**\n");
                }
            }
        }
        md
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
    let _ = writeln!(md, "| step | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |");
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in run.steps.iter().chain(std::iter::once(&run.overall)) {
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

const COLOURS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

fn latency_chart(path: &Path, runs: &[&RunSummary]) -> anyhow::Result<()> {
    let max_t = runs.iter().map(|r| r.timeline.len()).max().unwrap_or(1).max(1) as f64;
    let max_y = runs.iter().flat_map(|r| r.timeline.iter().map(|p| p.p99_ms)).fold(0.1_f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency percentiles over time", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_t, 0f64..max_y)?;
    chart.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (q, style) in [("p50", colour.stroke_width(1)), ("p99", colour.stroke_width(3))] {
            let pts = run.timeline.iter().map(|p| (p.second as f64, if q == "p50" { p.p50_ms } else { p.p99_ms }));
            chart
                .draw_series(LineSeries::new(pts, style))?
                .label(format!("{} {q}", run.label))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn throughput_chart(path: &Path, runs: &[&RunSummary]) -> anyhow::Result<()> {
    let max_t = runs.iter().map(|r| r.timeline.len()).max().unwrap_or(1).max(1) as f64;
    let max_y = runs.iter().flat_map(|r| r.timeline.iter().map(|p| p.requests as f64)).fold(1.0_f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("throughput over time", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_t, 0f64..max_y)?;
    chart.configure_mesh().x_desc("seconds").y_desc("requests / s").draw()?;
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts = run.timeline.iter().map(|p| (p.second as f64, p.requests as f64));
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))?
            .label(run.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn capacity_chart(path: &Path, c: &CapacityReport) -> anyhow::Result<()> {
    let max_x = c.steps.iter().map(|s| s.achieved_rps).fold(1.0_f64, f64::max) * 1.1;
    let max_y = c.steps.iter().map(|s| s.p99_ms).fold(c.slo_p99_ms, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("throughput vs p99 latency (find-capacity)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)?;
    chart.configure_mesh().x_desc("achieved requests / s").y_desc("p99 ms").draw()?;
    let mut steps = c.steps.clone();
    steps.sort_by(|a, b| a.achieved_rps.total_cmp(&b.achieved_rps));
    chart.draw_series(LineSeries::new(steps.iter().map(|s| (s.achieved_rps, s.p99_ms)), BLUE.stroke_width(2)))?;
    chart.draw_series(steps.iter().map(|s| {
        Circle::new((s.achieved_rps, s.p99_ms), 5, if s.meets_slo { GREEN.filled() } else { RED.filled() })
    }))?;
    chart
        .draw_series(LineSeries::new([(0.0, c.slo_p99_ms), (max_x, c.slo_p99_ms)], RED.stroke_width(1)))?
        .label(format!("SLO p99 {} ms", c.slo_p99_ms))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
