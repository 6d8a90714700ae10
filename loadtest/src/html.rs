//! The report as one self-contained HTML page (inline CSS and SVG, no script, nothing fetched),
//! and the comparison page of several reports (before/after).
//!
//! Every chart has the bare hyper ceiling of the same run beside the node (a series, a curve or
//! a column), and every number a chart shows is also in a table.

use std::fmt::Write as _;

use crate::report::{CapacityReport, CapacityStep, Report, STEP_COLUMNS, capacity_sentence, generator_sentence};
use crate::stats::{QUANTILES, RunSummary};
use crate::svg::{BarChart, LineChart, Rule, Series, esc, short};

const STYLE: &str = "body{font-family:sans-serif;max-width:980px;margin:1em auto;padding:0 1em;color:#111;line-height:1.4}\
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #999;margin-top:1.6em}\
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #bbb;padding:.2em .5em;text-align:right}\
th{background:#eee}td.l,th.l{text-align:left}code{font-size:.9em;word-break:break-all}.note{color:#333;font-style:italic}\
svg.chart{max-width:100%;height:auto;display:block;margin:.6em 0}.warn{border-left:4px solid #000;padding-left:.6em}";

/// The run whose figures stand for the report: a plain run's only run, or the find-capacity
/// step at the capacity found (else its last step).
pub fn main_run(r: &Report) -> Option<&RunSummary> {
    if let Some(c) = &r.capacity
        && c.steps.len() == r.runs.len()
        && let Some(rate) = c.capacity_rate
        && let Some(i) = c.steps.iter().position(|s| s.offered_rate == rate && s.meets_slo)
    {
        return r.runs.get(i);
    }
    r.runs.last()
}

/// Every chart of one report, by file name (without `.svg`).
pub fn charts(r: &Report) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    // A capacity search's steps are in its tables and its curve; over time, its run at the
    // capacity found is shown beside the bare hyper run nearest that rate.
    let runs: Vec<&RunSummary> = match &r.capacity {
        Some(_) => r.baseline.iter().chain(main_run(r)).collect(),
        None => r.baseline.iter().chain(r.runs.iter()).collect(),
    };
    if !runs.is_empty() {
        out.push(("throughput", throughput_chart(&runs).render()));
        out.push(("latency", latency_chart(&runs).render()));
    }
    if let Some(run) = main_run(r) {
        out.push(("distribution", distribution_chart(run, r.baseline.as_ref()).render()));
    }
    if runs.iter().any(|x| x.errors > 0) {
        out.push(("errors", errors_chart(&runs).render()));
    }
    if let Some(c) = &r.capacity {
        out.push((
            "capacity",
            capacity_chart("capacity", "capacity curve: latency against offered rate", &[("otpd", c)]).render(),
        ));
        out.push(("capacity-errors", capacity_errors_chart(c).render()));
    }
    out
}

fn throughput_chart(runs: &[&RunSummary]) -> LineChart {
    LineChart {
        id: "throughput".into(),
        title: "throughput over time".into(),
        x_label: "seconds since the run started".into(),
        y_label: "requests / s".into(),
        series: runs
            .iter()
            .map(|r| Series::new(&r.label, r.timeline.iter().map(|p| (p.second as f64, p.requests as f64))))
            .collect(),
        ..Default::default()
    }
}

fn latency_chart(runs: &[&RunSummary]) -> LineChart {
    let mut series = Vec::new();
    for r in runs {
        series.push(Series::new(format!("{} p50", r.label), r.timeline.iter().map(|p| (p.second as f64, p.p50_ms))));
        series.push(Series::new(format!("{} p99", r.label), r.timeline.iter().map(|p| (p.second as f64, p.p99_ms))));
        series.push(Series::new(
            format!("{} generator pause", r.label),
            r.timeline.iter().map(|p| (p.second as f64, p.pause_ms)),
        ));
    }
    LineChart {
        id: "latency".into(),
        title: "latency percentiles over time (per second)".into(),
        x_label: "seconds since the run started".into(),
        y_label: "ms (log scale)".into(),
        series,
        y_log: true,
        ..Default::default()
    }
}

/// "Nines" on the x axis: quantile q at −log10(1 − q), the maximum one step beyond p99.99.
fn nines(q: f64) -> f64 {
    if q >= 1.0 { 5.0 } else { -(1.0 - q).log10() }
}

fn distribution_chart(run: &RunSummary, baseline: Option<&RunSummary>) -> LineChart {
    let curve = |label: String, d: &[(f64, f64)]| Series::new(label, d.iter().map(|&(q, ms)| (nines(q), ms)));
    let mut series: Vec<Series> = run
        .steps
        .iter()
        .filter(|s| !s.distribution.is_empty())
        .map(|s| curve(s.step.clone(), &s.distribution))
        .collect();
    if let Some(b) = baseline {
        series.push(curve(format!("bare hyper ({})", b.overall.step), &b.overall.distribution));
    }
    let x_ticks = QUANTILES
        .iter()
        .filter(|q| [0.5, 0.9, 0.99, 0.999, 0.9999, 1.0].contains(q))
        .map(|&q| (nines(q), if q >= 1.0 { "max".to_owned() } else { format!("p{}", q * 100.0) }))
        .collect();
    LineChart {
        id: "distribution".into(),
        title: format!("latency distribution per step: {}", run.label),
        x_label: "percentile".into(),
        y_label: "ms (log scale)".into(),
        series,
        y_log: true,
        x_ticks: Some(x_ticks),
        ..Default::default()
    }
}

fn errors_chart(runs: &[&RunSummary]) -> LineChart {
    LineChart {
        id: "errors".into(),
        title: "errors over time".into(),
        x_label: "seconds since the run started".into(),
        y_label: "errors / s".into(),
        series: runs
            .iter()
            .map(|r| Series::new(&r.label, r.timeline.iter().map(|p| (p.second as f64, p.errors as f64))))
            .collect(),
        ..Default::default()
    }
}

fn sorted(steps: &[CapacityStep]) -> Vec<CapacityStep> {
    let mut s = steps.to_vec();
    s.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    s
}

/// Latency against offered rate for one or more capacity searches, each beside its bare hyper
/// curve (the generator check), with the SLO and the generator's limit drawn.
fn capacity_chart(id: &str, title: &str, searches: &[(&str, &CapacityReport)]) -> LineChart {
    let mut series = Vec::new();
    let mut v_rules = Vec::new();
    let one = searches.len() == 1;
    for (name, c) in searches {
        let steps = sorted(&c.steps);
        let pct = |label: &str, f: fn(&CapacityStep) -> f64| {
            Series::new(format!("{name} {label}"), steps.iter().map(|s| (s.offered_rate, f(s))))
        };
        if one {
            series.push(pct("p50", |s| s.p50_ms));
        }
        series.push(pct("p99", |s| s.p99_ms));
        if one {
            series.push(pct("p99.9", |s| s.p999_ms));
        }
        if let Some(g) = &c.generator {
            let g_steps = sorted(&g.steps);
            let label =
                if one { "bare hyper p99 (generator check)".to_owned() } else { format!("{name}: bare hyper p99") };
            series.push(Series::new(label, g_steps.iter().map(|s| (s.offered_rate, s.p99_ms))));
            if one {
                v_rules.push(Rule {
                    value: g.limit_rps,
                    label: format!("half the generator's ceiling ({})", short(g.limit_rps)),
                });
            }
        }
    }
    let slo = searches.first().map(|(_, c)| c.slo_p99_ms).unwrap_or(0.0);
    LineChart {
        id: id.into(),
        title: title.into(),
        x_label: "offered rate (arrivals / s, log scale)".into(),
        y_label: "ms (log scale)".into(),
        series,
        y_log: true,
        // The node's steps and the generator check's can be a decade apart.
        x_log: true,
        h_rules: vec![Rule { value: slo, label: format!("SLO p99 {slo} ms") }],
        v_rules,
        ..Default::default()
    }
}

fn capacity_errors_chart(c: &CapacityReport) -> LineChart {
    let steps = sorted(&c.steps);
    let mut series = vec![Series::new("otpd errors", steps.iter().map(|s| (s.offered_rate, s.error_rate * 100.0)))];
    if let Some(g) = &c.generator {
        series.push(Series::new(
            "bare hyper errors (generator check)",
            sorted(&g.steps).iter().map(|s| (s.offered_rate, s.error_rate * 100.0)),
        ));
    }
    LineChart {
        id: "capacity-errors".into(),
        title: "errors against offered rate".into(),
        x_label: "offered rate (arrivals / s, log scale)".into(),
        y_label: "errors, % of requests".into(),
        series,
        x_log: true,
        h_rules: vec![Rule {
            value: c.slo_max_error_rate * 100.0,
            label: format!("SLO {} %", c.slo_max_error_rate * 100.0),
        }],
        ..Default::default()
    }
}

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    );
}

fn f(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// A table: header cells, then rows; the first column is left-aligned.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><tr>");
    for (i, h) in header.iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", if i == 0 { " class=\"l\"" } else { "" }, esc(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", if i == 0 { " class=\"l\"" } else { "" }, esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
}

fn summary_row(r: &RunSummary, baseline: Option<&RunSummary>) -> Vec<String> {
    let ratio =
        baseline.filter(|b| b.requests_per_s > 0.0).map_or("—".into(), |b| f(r.requests_per_s / b.requests_per_s, 3));
    vec![
        r.label.clone(),
        f(r.requests_per_s, 0),
        ratio,
        f(r.overall.p50_ms, 2),
        f(r.overall.p99_ms, 2),
        f(r.overall.p999_ms, 2),
        format!("{} ({:.3} %)", r.errors, r.error_rate * 100.0),
        f(r.generator.cpu_cores, 2),
        if r.generator.arrivals > 0 { f(r.generator.lag_p99_ms, 2) } else { "— (closed loop)".into() },
        f(r.generator.pause_max_ms, 1),
    ]
}

const SUMMARY_HEADER: [&str; 10] = [
    "run",
    "req/s",
    "÷ bare hyper req/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "errors",
    "generator CPU (cores)",
    "generator lag p99 ms",
    "generator worst pause ms",
];

fn steps_table(out: &mut String, run: &RunSummary) {
    let rows: Vec<Vec<String>> = run
        .steps
        .iter()
        .chain(std::iter::once(&run.overall))
        .map(|s| {
            vec![
                s.step.clone(),
                s.requests.to_string(),
                f(s.requests_per_s, 0),
                f(s.p50_ms, 3),
                f(s.p90_ms, 3),
                f(s.p99_ms, 3),
                f(s.p999_ms, 3),
                f(s.max_ms, 3),
                s.errors.to_string(),
            ]
        })
        .collect();
    table(out, &["step", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"], &rows);
}

fn capacity_rows(steps: &[CapacityStep]) -> Vec<Vec<String>> {
    sorted(steps).iter().map(|s| s.cells().to_vec()).collect()
}

fn figure(out: &mut String, svg: &str) {
    out.push_str("<figure>");
    out.push_str(svg);
    out.push_str("</figure>\n");
}

/// One report as a page.
pub fn report(r: &Report) -> String {
    let mut out = String::new();
    let title = format!("otpd load test — {}", r.started_at);
    head(&mut out, &title);
    let _ = writeln!(out, "<h1>{}</h1>", esc(&title));
    let charts: std::collections::HashMap<_, _> = charts(r).into_iter().collect();

    out.push_str("<h2 id=\"setup\">What ran, where</h2>\n");
    let m = &r.machine;
    let mix: Vec<String> = r.mix.0.iter().map(|(k, w)| format!("{k:?}={w}")).collect();
    let load = match r.load {
        crate::driver::Load::Open { rate, ramp_s } => format!("open loop, {rate:.0} arrivals/s (ramp {ramp_s:.0} s)"),
        crate::driver::Load::Closed { connections } => format!("closed loop, {connections} connections"),
    };
    let rows = vec![
        vec!["command".into(), r.command.clone()],
        vec!["targets".into(), r.targets.join(", ")],
        vec!["scenario mix".into(), mix.join(", ")],
        vec![
            "load".into(),
            format!(
                "{load}; at most {:.0} s and {} scenarios, after {:.0} s of unmeasured warm-up (open loop)",
                r.bounds.duration_s, r.bounds.max_scenarios, r.bounds.warmup_s
            ),
        ],
        vec!["machine".into(), format!("{} — {}", m.hostname, m.cpu_model)],
        vec![
            "CPUs, memory, kernel".into(),
            format!(
                "{} usable by the generator of {} online; {:.1} GiB; Linux {}",
                m.cpus_usable.max(r.cpus),
                m.cpus_online,
                m.memory_gib,
                m.kernel
            ),
        ],
        vec![
            "versions".into(),
            format!(
                "{}; node {}",
                r.tool,
                if m.node_version.is_empty() { "unknown (no /openapi.json)" } else { &m.node_version }
            ),
        ],
        vec!["codes delivered to the harness".into(), r.codes_delivered.to_string()],
    ];
    out.push_str("<table>");
    for row in rows {
        let _ = write!(
            out,
            "<tr><th class=\"l\">{}</th><td class=\"l\"><code>{}</code></td></tr>",
            esc(&row[0]),
            esc(&row[1])
        );
    }
    out.push_str("</table>\n");

    out.push_str("<h2 id=\"summary\">Summary, beside the bare hyper ceiling of the same run</h2>\n");
    // A search's bare hyper run is at another rate: no ratio of throughputs then.
    let ratio_to = r.baseline.as_ref().filter(|_| r.capacity.is_none());
    let mut rows: Vec<Vec<String>> = r.baseline.iter().map(|b| summary_row(b, None)).collect();
    rows.extend(r.runs.iter().map(|x| summary_row(x, ratio_to)));
    table(&mut out, &SUMMARY_HEADER, &rows);
    if let Some(g) = r.capacity.as_ref().and_then(|c| c.generator.as_ref()) {
        let _ = writeln!(out, "<p class=\"warn\">{}</p>", esc(&generator_sentence(g)));
    } else if r.baseline.is_none() {
        out.push_str("<p class=\"note\">This run has no bare hyper baseline (run with <code>--baseline</code>): its numbers cannot be read as a ratio.</p>\n");
    }
    out.push_str(
        "<p class=\"note\">Latency counts from each request's intended start (coordinated omission corrected). \
         Generator CPU is this harness's own use (getrusage, all threads) per second of the run; generator lag is how late \
         it launched open-loop arrivals after their scheduled time; generator pause is how late a thread of the generator that wakes every \
         millisecond woke at worst (a paused machine shows here, in the same seconds as the node's slow ones).</p>\n",
    );

    for (id, heading) in [("throughput", "Throughput"), ("latency", "Latency over time")] {
        if let Some(svg) = charts.get(id) {
            let _ = writeln!(out, "<h2 id=\"{id}\">{heading}</h2>");
            figure(&mut out, svg);
        }
    }
    if let Some(svg) = charts.get("distribution") {
        out.push_str("<h2 id=\"distribution\">Latency distribution per step</h2>\n");
        figure(&mut out, svg);
        for run in r.baseline.iter().chain(main_run(r)) {
            let _ = writeln!(out, "<p>{}</p>", esc(&run.label));
            steps_table(&mut out, run);
        }
    }

    out.push_str("<h2 id=\"errors\">Errors by kind</h2>\n");
    let errors: Vec<Vec<String>> = r
        .baseline
        .iter()
        .chain(r.runs.iter())
        .flat_map(|run| run.errors_by_kind.iter().map(|(k, n)| vec![run.label.clone(), k.clone(), n.to_string()]))
        .collect();
    if errors.is_empty() {
        out.push_str("<p>No request failed.</p>\n");
    } else {
        table(&mut out, &["run", "kind", "count"], &errors);
    }
    if let Some(svg) = charts.get("errors") {
        figure(&mut out, svg);
    }

    if let Some(c) = &r.capacity {
        let _ = writeln!(
            out,
            "<h2 id=\"capacity\">Capacity curve (SLO: p99 ≤ {} ms, errors &lt; {} %)</h2>",
            c.slo_p99_ms,
            c.slo_max_error_rate * 100.0
        );
        let _ = writeln!(out, "<p><strong>{}</strong></p>", esc(&capacity_sentence(c)));
        for id in ["capacity", "capacity-errors"] {
            if let Some(svg) = charts.get(id) {
                figure(&mut out, svg);
            }
        }
        out.push_str("<p>otpd, step by step:</p>\n");
        table(&mut out, &STEP_COLUMNS, &capacity_rows(&c.steps));
        if let Some(g) = &c.generator {
            out.push_str("<p>The generator check (the same search against the bare hyper server):</p>\n");
            table(&mut out, &STEP_COLUMNS, &capacity_rows(&g.steps));
        }
    }

    if let Some(t) = &r.capacity_table {
        out.push_str("<h2 id=\"capacity-table\">Capacity table</h2>\n");
        let _ = writeln!(out, "<p>{}</p>", esc(&t.caption()));
        let (header, rows) = t.cells();
        table(&mut out, &header, &rows);
    }

    if let Some(plan) = &r.plan {
        out.push_str(&plan.html());
    }
    out.push_str("</body></html>\n");
    out
}

/// Several reports side by side (the first is the reference "before").
pub fn compare(reports: &[(String, Report)]) -> (String, Vec<(&'static str, String)>) {
    let mut charts = Vec::new();
    let names: Vec<String> = reports.iter().map(|(n, _)| n.clone()).collect();
    let mains: Vec<Option<&RunSummary>> = reports.iter().map(|(_, r)| main_run(r)).collect();
    // The ceiling beside each report: a search's generator check, else its baseline run.
    let ceiling = |r: &Report| -> Option<f64> {
        match &r.capacity {
            Some(c) => c.generator.as_ref().and_then(|g| g.ceiling_rps),
            None => r.baseline.as_ref().map(|b| b.requests_per_s),
        }
    };
    let ceilings: Vec<Option<f64>> = reports.iter().map(|(_, r)| ceiling(r)).collect();
    charts.push((
        "compare-throughput",
        BarChart {
            id: "compare-throughput".into(),
            title: "throughput, each beside its own bare hyper ceiling".into(),
            x_label: "requests / s".into(),
            categories: names.clone(),
            series: vec![
                ("otpd".into(), mains.iter().map(|m| m.map_or(0.0, |r| r.requests_per_s)).collect()),
                ("bare hyper, same run".into(), ceilings.iter().map(|c| c.unwrap_or(f64::NAN)).collect()),
            ],
        }
        .render(),
    ));
    charts.push((
        "compare-latency",
        BarChart {
            id: "compare-latency".into(),
            title: "latency of the main run".into(),
            x_label: "ms".into(),
            categories: names.clone(),
            series: vec![
                ("p50".into(), mains.iter().map(|m| m.map_or(0.0, |r| r.overall.p50_ms)).collect()),
                ("p99".into(), mains.iter().map(|m| m.map_or(0.0, |r| r.overall.p99_ms)).collect()),
                ("p99.9".into(), mains.iter().map(|m| m.map_or(0.0, |r| r.overall.p999_ms)).collect()),
            ],
        }
        .render(),
    ));
    let dist: Vec<Series> = names
        .iter()
        .zip(&mains)
        .filter_map(|(n, m)| {
            m.map(|r| Series::new(n.clone(), r.overall.distribution.iter().map(|&(q, ms)| (nines(q), ms))))
        })
        .collect();
    if !dist.is_empty() {
        let mut chart = distribution_chart(mains.iter().flatten().next().expect("one main run"), None);
        chart.id = "compare-distribution".into();
        chart.title = "latency distribution of the main run, all steps together".into();
        chart.series = dist;
        charts.push(("compare-distribution", chart.render()));
    }
    let searches: Vec<(&str, &CapacityReport)> =
        reports.iter().filter_map(|(n, r)| r.capacity.as_ref().map(|c| (n.as_str(), c))).collect();
    if !searches.is_empty() {
        charts.push((
            "compare-capacity",
            capacity_chart("compare-capacity", "capacity curves: p99 against offered rate", &searches).render(),
        ));
    }

    let mut out = String::new();
    head(&mut out, "otpd load tests compared");
    out.push_str("<h1>otpd load tests compared</h1>\n<p>Each report's figures beside the bare hyper ceiling measured in the same run; \
                  read the ratios, since absolute numbers move between runs and machines. The first report is the reference.</p>\n");
    let rows: Vec<Vec<String>> = reports
        .iter()
        .zip(&mains)
        .zip(&ceilings)
        .map(|(((n, r), m), c)| {
            let rps = m.map_or(0.0, |x| x.requests_per_s);
            vec![
                n.clone(),
                r.started_at.clone(),
                f(rps, 0),
                c.map_or("—".into(), |c| f(c, 0)),
                c.filter(|c| *c > 0.0).map_or("—".into(), |c| f(rps / c, 3)),
                m.map_or("—".into(), |x| {
                    format!("{:.2} / {:.2} / {:.2}", x.overall.p50_ms, x.overall.p99_ms, x.overall.p999_ms)
                }),
                m.map_or("—".into(), |x| format!("{:.3} %", x.error_rate * 100.0)),
                r.capacity.as_ref().and_then(|c| c.capacity_rate).map_or("—".into(), |v| f(v, 0)),
                m.filter(|x| x.generator.cpu_user_s + x.generator.cpu_system_s > 0.0)
                    .map_or("— (not recorded)".into(), |x| f(x.generator.cpu_cores, 2)),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "report",
            "started",
            "req/s",
            "bare hyper req/s",
            "÷ bare hyper",
            "p50 / p99 / p99.9 ms",
            "errors",
            "capacity /s",
            "generator CPU",
        ],
        &rows,
    );
    if let (Some((first, _)), Some(Some(base))) = (reports.first(), mains.first()) {
        let ratio = |a: f64, b: f64| if b > 0.0 { f(a / b, 3) } else { "—".into() };
        let rows: Vec<Vec<String>> = names
            .iter()
            .zip(&mains)
            .zip(&ceilings)
            .skip(1)
            .filter_map(|((n, m), c)| {
                m.map(|m| {
                    let own = c.zip(ceilings[0]).map_or("—".into(), |(c, c0)| {
                        ratio(m.requests_per_s / c.max(1e-9), base.requests_per_s / c0.max(1e-9))
                    });
                    vec![
                        n.clone(),
                        ratio(m.requests_per_s, base.requests_per_s),
                        own,
                        ratio(m.overall.p50_ms, base.overall.p50_ms),
                        ratio(m.overall.p99_ms, base.overall.p99_ms),
                    ]
                })
            })
            .collect();
        if !rows.is_empty() {
            let _ = writeln!(out, "<h2 id=\"change\">Change against {}</h2>", esc(first));
            table(&mut out, &["report", "× req/s", "× (req/s ÷ bare hyper)", "× p50", "× p99"], &rows);
        }
    }
    for (id, svg) in &charts {
        let _ = writeln!(out, "<h2 id=\"{id}\">{}</h2>", esc(&id.replace('-', " ")));
        figure(&mut out, svg);
    }
    out.push_str("</body></html>\n");
    (out, charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_spread_the_tail() {
        assert!(
            (nines(0.99) - 2.0).abs() < 1e-9
                && (nines(0.5) - std::f64::consts::LOG10_2).abs() < 1e-9
                && nines(1.0) == 5.0
        );
    }
}
