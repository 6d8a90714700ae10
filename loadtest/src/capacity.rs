//! The capacity table a capacity plan reads: for each p99 bound (5, 10, 25 and 50 ms, errors
//! below 0.1 %), the highest open-loop arrival rate the node met it at, next to the bare hyper
//! ceiling's, and the one search whose steps fill every row.
//!
//! A rate that meets 5 ms meets 50 ms, so the bounds need not be searched one by one: every
//! step is judged against every bound, and the next rate is chosen where the table is least
//! certain (first up until the loosest bound misses, then down while the lowest rate tried
//! misses the tightest, then halfway into the widest gap between a rate that met a bound and
//! the next one that missed it). The SLO's own bound is settled first ([`next_rate_slo_first`]):
//! it is the figure a plan is judged by, and a search that spread its steps over all four rows
//! ended with the SLO's gap still 14 % wide after ten steps. The search ends when every gap is
//! within `resolution`, or after `max_steps` steps.
//!
//! A row's rate is the highest rate tried that met its bound **together with every lower rate
//! tried**: a lucky step above one that missed does not count. Latency is the p99 of the
//! node's answers in the step, each measured from its request's intended start (coordinated
//! omission); a code's delivery is not an answer of the node and is left out of the p99, but
//! a code that never arrived is an error. Errors count against the bound like slow answers do.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::report::CapacityStep;

/// The p99 bounds every table has, in milliseconds.
pub const P99_BOUNDS_MS: [f64; 4] = [5.0, 10.0, 25.0, 50.0];
/// The table's error bound: a step meets a row only with fewer errors than this share.
pub const MAX_ERROR_RATE: f64 = 0.001;

/// What a step must show to meet one row.
#[derive(Clone, Copy, Debug)]
pub struct Criterion {
    pub p99_ms: f64,
    pub max_error_rate: f64,
    /// Steps that achieved more requests/s than this do not count (they would measure the
    /// generator: half of its own ceiling at this bound).
    pub credit_limit_rps: Option<f64>,
}

impl Criterion {
    pub fn new(p99_ms: f64, max_error_rate: f64) -> Self {
        Criterion { p99_ms, max_error_rate, credit_limit_rps: None }
    }

    fn judge(&self, s: &CapacityStep) -> Verdict {
        if self.credit_limit_rps.is_some_and(|limit| s.achieved_rps > limit) {
            Verdict::NotCredited
        } else if s.achieved_rps > 0.0 && s.p99_ms <= self.p99_ms && s.error_rate < self.max_error_rate {
            Verdict::Meets
        } else {
            Verdict::Misses
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Meets,
    Misses,
    NotCredited,
}

/// What the steps say about one bound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bracket {
    /// Highest rate tried that met the bound, every lower rate tried meeting it too (None: the
    /// lowest rate tried missed it, or nothing was tried).
    pub rate: Option<f64>,
    /// Requests/s achieved at `rate`.
    pub rps: Option<f64>,
    /// p99 measured at `rate`.
    pub p99_ms: Option<f64>,
    /// The lowest rate tried above `rate`, which missed the bound or was not credited (None:
    /// none did, so the capacity is at least `rate`).
    pub above: Option<f64>,
    /// `above` was not credited (beyond half the generator's ceiling), rather than missed.
    #[serde(default)]
    pub above_not_credited: bool,
}

/// The steps' verdict on one bound.
pub fn bracket(steps: &[CapacityStep], c: &Criterion) -> Bracket {
    let mut judged: Vec<(&CapacityStep, Verdict)> = steps.iter().map(|s| (s, c.judge(s))).collect();
    // By rate; at one rate a miss sorts first, so a rate tried twice counts only if both met.
    judged.sort_by(|a, b| {
        a.0.offered_rate.total_cmp(&b.0.offered_rate).then((a.1 == Verdict::Meets).cmp(&(b.1 == Verdict::Meets)))
    });
    let mut out = Bracket::default();
    for (s, v) in judged {
        if v == Verdict::Meets {
            out.rate = Some(s.offered_rate);
            out.rps = Some(s.achieved_rps);
            out.p99_ms = Some(s.p99_ms);
        } else {
            out.above = Some(s.offered_rate);
            out.above_not_credited = v == Verdict::NotCredited;
            break;
        }
    }
    out
}

/// Where a search may go.
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub start: f64,
    pub min: f64,
    pub max: f64,
    /// A gap between a met and a missed rate narrower than this share of the met one is closed.
    pub resolution: f64,
}

/// The next rate to try so that the table for `criteria` (tightest first or in any order)
/// becomes more certain; None when every row is as certain as `range` allows.
pub fn next_rate(steps: &[CapacityStep], criteria: &[Criterion], range: &Range) -> Option<f64> {
    if steps.is_empty() {
        return Some(range.start.clamp(range.min, range.max));
    }
    let mut up: Option<f64> = None;
    let mut down: Option<f64> = None;
    let mut gap: Option<(f64, f64)> = None; // (relative width, midpoint)
    for c in criteria {
        let b = bracket(steps, c);
        match (b.rate, b.above) {
            // Met at every rate tried: go higher, up to the range.
            (Some(lo), None) if lo < range.max => {
                let r = (lo * 2.0).min(range.max);
                up = Some(up.map_or(r, |u: f64| u.max(r)));
            }
            // Missed at the lowest rate tried: go lower, down to the range.
            (None, Some(hi)) if hi > range.min => {
                let r = (hi / 2.0).max(range.min);
                down = Some(down.map_or(r, |d: f64| d.min(r)));
            }
            (Some(lo), Some(hi)) if (hi - lo) / lo > range.resolution => {
                let width = (hi - lo) / lo;
                if gap.is_none_or(|(w, _)| width > w) {
                    gap = Some((width, (lo + hi) / 2.0));
                }
            }
            _ => {}
        }
    }
    let next = up.or(down).or(gap.map(|(_, mid)| mid))?;
    // Never the same rate twice (a rounding edge of the rules above would loop).
    (!steps.iter().any(|s| (s.offered_rate - next).abs() <= next * 1e-9)).then_some(next)
}

/// The next rate to try: one that narrows the `slo` bound's gap while it is wider than
/// `range` allows, then one that narrows the table's (`next_rate` over `table`).
pub fn next_rate_slo_first(steps: &[CapacityStep], slo: &Criterion, table: &[Criterion], range: &Range) -> Option<f64> {
    next_rate(steps, std::slice::from_ref(slo), range).or_else(|| next_rate(steps, table, range))
}

/// One row: a bound, the node's bracket and the bare hyper server's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableRow {
    pub p99_ms: f64,
    pub otpd: Bracket,
    pub baseline: Option<Bracket>,
}

impl TableRow {
    /// The node's requests/s at its rate ÷ the bare hyper server's at its own.
    pub fn ratio(&self) -> Option<f64> {
        let base = self.baseline.as_ref()?.rps?;
        (base > 0.0).then_some(self.otpd.rps? / base)
    }
}

/// How the rows were measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableSource {
    /// `find-capacity`: an open-loop search, the rows filled from its steps.
    Search,
    /// `run --rate`: one open-loop rate; each row says only whether that rate met its bound.
    OpenRun,
    /// `run` in closed loop: one throughput at fixed concurrency, not an arrival rate.
    ClosedRun,
}

/// The capacity table of one report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapacityTable {
    pub source: TableSource,
    pub max_error_rate: f64,
    pub rows: Vec<TableRow>,
    /// Why the search stopped (empty for a plain run).
    #[serde(default)]
    pub stopped: String,
}

/// The table for the standard bounds from the node's steps and the baseline's (each judged
/// against its own criteria: the node's carry the generator's credit limits).
pub fn table(
    source: TableSource,
    node: &[CapacityStep],
    node_criteria: &[Criterion],
    baseline: Option<&[CapacityStep]>,
    stopped: String,
) -> CapacityTable {
    let rows = node_criteria
        .iter()
        .map(|c| TableRow {
            p99_ms: c.p99_ms,
            otpd: bracket(node, c),
            baseline: baseline.map(|b| bracket(b, &Criterion { credit_limit_rps: None, ..*c })),
        })
        .collect();
    CapacityTable {
        source,
        max_error_rate: node_criteria.first().map_or(MAX_ERROR_RATE, |c| c.max_error_rate),
        rows,
        stopped,
    }
}

/// The standard bounds' criteria, with no credit limit.
pub fn standard_criteria() -> Vec<Criterion> {
    P99_BOUNDS_MS.iter().map(|&ms| Criterion::new(ms, MAX_ERROR_RATE)).collect()
}

/// `12 345` (thin groups, as docs/PERFORMANCE.md writes figures).
fn n(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

/// The node's (or baseline's) cell: `2 000`, `≥ 2 000` (nothing above it missed) or `< 400`
/// (the lowest rate tried missed).
fn rate_cell(b: &Bracket) -> String {
    match (b.rate, b.above) {
        (Some(r), Some(_)) => n(r),
        (Some(r), None) => format!("≥ {}", n(r)),
        (None, Some(a)) => format!("< {}", n(a)),
        (None, None) => "—".into(),
    }
}

fn above_cell(b: &Bracket) -> String {
    match b.above {
        Some(a) if b.above_not_credited => format!("{} not credited (generator)", n(a)),
        Some(a) => format!("{} missed", n(a)),
        None => "—".into(),
    }
}

fn rps_cell(b: &Bracket) -> String {
    match (b.rps, b.above) {
        (Some(r), None) => format!("≥ {}", n(r)),
        (Some(r), Some(_)) => n(r),
        (None, _) => "—".into(),
    }
}

impl CapacityTable {
    /// Header and cells, for the Markdown and HTML renderings.
    pub fn cells(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let rate_name = match self.source {
            TableSource::ClosedRun => "otpd scenarios/s",
            _ => "otpd arrivals/s",
        };
        let header = vec![
            "p99 ≤",
            rate_name,
            "otpd req/s",
            "otpd p99 ms",
            "next rate tried",
            "bare hyper req/s",
            "otpd / hyper",
        ];
        let rows = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    format!("{} ms", r.p99_ms),
                    rate_cell(&r.otpd),
                    rps_cell(&r.otpd),
                    r.otpd.p99_ms.map_or("—".into(), |p| format!("{p:.2}")),
                    above_cell(&r.otpd),
                    r.baseline.as_ref().map_or("not measured".into(), rps_cell),
                    r.ratio().map_or("—".into(), |x| format!("{x:.3}")),
                ]
            })
            .collect();
        (header, rows)
    }

    /// What the rows mean, in one paragraph.
    pub fn caption(&self) -> String {
        let errors = format!("errors < {} %", self.max_error_rate * 100.0);
        match self.source {
            TableSource::Search => format!(
                "Highest open-loop arrival rate meeting each p99 bound ({errors}), every lower rate tried meeting it \
                 too; p99 of the node's answers (a code's delivery is not one); all rows from the steps of one \
                 search{}. \"≥\": no higher rate tried missed. The bare hyper \
                 server was searched the same way in the same run (the generator check); a node step above half its \
                 ceiling at a bound is not credited for that bound.",
                if self.stopped.is_empty() { String::new() } else { format!(" ({})", self.stopped) }
            ),
            TableSource::OpenRun => format!(
                "From this run's one open-loop rate ({errors}): \"≥\" it met the bound, \"<\" it missed. \
                 `find-capacity` searches for the highest rate per bound."
            ),
            TableSource::ClosedRun => format!(
                "From this closed-loop run ({errors}): the throughput reached at fixed concurrency and whether its \
                 p99 met each bound. Not an arrival rate: `find-capacity` (or `run --rate`) measures those."
            ),
        }
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## Capacity table\n\n{}\n", self.caption());
        let (header, rows) = self.cells();
        let _ = writeln!(md, "| {} |", header.join(" | "));
        let _ = writeln!(md, "| ---: |{}", " ---: |".repeat(header.len() - 1));
        for row in rows {
            let _ = writeln!(md, "| {} |", row.join(" | "));
        }
        md.push('\n');
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, p99_ms: f64, error_rate: f64) -> CapacityStep {
        CapacityStep {
            offered_rate: rate,
            achieved_rps: rate,
            p50_ms: p99_ms / 4.0,
            p99_ms,
            p999_ms: p99_ms * 2.0,
            error_rate,
            meets_slo: false,
            beyond_generator: false,
            pause_max_ms: 0.0,
        }
    }

    fn range() -> Range {
        Range { start: 1000.0, min: 250.0, max: 64_000.0, resolution: 0.05 }
    }

    #[test]
    fn one_set_of_steps_fills_every_row() {
        let steps = [
            step(1000.0, 3.0, 0.0),
            step(2000.0, 7.0, 0.0),
            step(4000.0, 20.0, 0.0),
            step(8000.0, 45.0, 0.0),
            step(16000.0, 300.0, 0.0),
        ];
        let t = table(TableSource::Search, &steps, &standard_criteria(), None, String::new());
        let got: Vec<(Option<f64>, Option<f64>)> = t.rows.iter().map(|r| (r.otpd.rate, r.otpd.above)).collect();
        assert_eq!(
            got,
            vec![
                (Some(1000.0), Some(2000.0)),
                (Some(2000.0), Some(4000.0)),
                (Some(4000.0), Some(8000.0)),
                (Some(8000.0), Some(16000.0)),
            ]
        );
        assert_eq!(t.rows[2].otpd.p99_ms, Some(20.0));
    }

    #[test]
    fn errors_count_against_every_bound() {
        // Fast but 0.2 % errors at 4000: no bound is met there, nor above.
        let steps = [step(2000.0, 2.0, 0.0), step(4000.0, 2.0, 0.002), step(8000.0, 2.0, 0.0)];
        let t = table(TableSource::Search, &steps, &standard_criteria(), None, String::new());
        for r in &t.rows {
            assert_eq!((r.otpd.rate, r.otpd.above), (Some(2000.0), Some(4000.0)));
        }
        // Exactly on the bound meets it (p99 ≤ bound).
        let b = bracket(&[step(1000.0, 5.0, 0.0)], &Criterion::new(5.0, MAX_ERROR_RATE));
        assert_eq!(b.rate, Some(1000.0));
    }

    #[test]
    fn a_lucky_step_above_a_miss_does_not_count() {
        let steps = [step(1000.0, 4.0, 0.0), step(2000.0, 12.0, 0.0), step(3000.0, 4.5, 0.0)];
        let b = bracket(&steps, &Criterion::new(5.0, MAX_ERROR_RATE));
        assert_eq!((b.rate, b.above), (Some(1000.0), Some(2000.0)));
        // A rate tried twice counts only if it met the bound both times.
        let steps = [step(1000.0, 4.0, 0.0), step(1000.0, 9.0, 0.0)];
        assert_eq!(bracket(&steps, &Criterion::new(5.0, MAX_ERROR_RATE)).rate, None);
    }

    #[test]
    fn rows_say_when_nothing_missed_or_nothing_met() {
        let steps = [step(1000.0, 8.0, 0.0), step(2000.0, 9.0, 0.0)];
        let t = table(TableSource::Search, &steps, &standard_criteria(), None, String::new());
        assert_eq!((t.rows[0].otpd.rate, t.rows[0].otpd.above), (None, Some(1000.0)));
        assert_eq!((t.rows[3].otpd.rate, t.rows[3].otpd.above), (Some(2000.0), None));
        let (_, cells) = t.cells();
        assert_eq!(cells[0][1], "< 1 000");
        assert_eq!(cells[3][1], "≥ 2 000");
        assert_eq!(cells[3][2], "≥ 2 000");
    }

    #[test]
    fn steps_beyond_the_generators_credit_do_not_count() {
        let steps = [step(10_000.0, 2.0, 0.0), step(20_000.0, 2.0, 0.0)];
        let c = Criterion { credit_limit_rps: Some(15_000.0), ..Criterion::new(5.0, MAX_ERROR_RATE) };
        let b = bracket(&steps, &c);
        assert_eq!((b.rate, b.above, b.above_not_credited), (Some(10_000.0), Some(20_000.0), true));
    }

    #[test]
    fn the_baseline_is_judged_without_credit_limits_and_gives_the_ratio() {
        let node = [step(2000.0, 4.0, 0.0), step(4000.0, 30.0, 0.0)];
        let base = [step(32_000.0, 1.0, 0.0), step(64_000.0, 40.0, 0.0)];
        let criteria: Vec<Criterion> =
            standard_criteria().into_iter().map(|c| Criterion { credit_limit_rps: Some(16_000.0), ..c }).collect();
        let t = table(TableSource::Search, &node, &criteria, Some(&base), String::new());
        assert_eq!(t.rows[0].baseline.as_ref().unwrap().rate, Some(32_000.0));
        assert_eq!(t.rows[3].baseline.as_ref().unwrap().rate, Some(64_000.0));
        assert_eq!(t.rows[0].ratio(), Some(2000.0 / 32_000.0));
        assert_eq!(t.rows[3].ratio(), Some(4000.0 / 64_000.0));
        let md = t.markdown();
        assert!(md.contains("| 5 ms | 2 000 | 2 000 | 4.00 | 4 000 missed | 32 000 | 0.062 |"), "{md}");
    }

    #[test]
    fn the_search_climbs_then_descends_then_bisects_the_widest_gap() {
        let criteria = standard_criteria();
        let r = range();
        assert_eq!(next_rate(&[], &criteria, &r), Some(1000.0));
        // Everything met so far: double.
        let mut steps = vec![step(1000.0, 6.0, 0.0)];
        assert_eq!(next_rate(&steps, &criteria, &r), Some(2000.0));
        // 50 ms missed at 2000; 5 ms missed at the lowest rate: halve below it.
        steps.push(step(2000.0, 80.0, 0.0));
        assert_eq!(next_rate(&steps, &criteria, &r), Some(500.0));
        // 5 ms met at 500: now the widest gap (500→1000 for 5 ms, 1000→2000 for the others,
        // both ×2) is bisected; the first found wins a tie.
        steps.push(step(500.0, 3.0, 0.0));
        assert_eq!(next_rate(&steps, &criteria, &r), Some(750.0));
        steps.push(step(750.0, 4.0, 0.0));
        assert_eq!(next_rate(&steps, &criteria, &r), Some(1500.0));
    }

    #[test]
    fn the_slo_bound_is_settled_before_the_other_rows() {
        let criteria = standard_criteria();
        let slo = criteria[1]; // 10 ms
        let r = range();
        // 10 ms missed at 2000, 50 ms met there: the table alone would climb for 50 ms.
        let mut steps = vec![step(1000.0, 6.0, 0.0), step(2000.0, 30.0, 0.0)];
        assert_eq!(next_rate(&steps, &criteria, &r), Some(4000.0));
        assert_eq!(next_rate_slo_first(&steps, &slo, &criteria, &r), Some(1500.0));
        // Bisected down to the resolution, then the table's rows get the steps.
        for (rate, p99) in [(1500.0, 8.0), (1750.0, 12.0), (1625.0, 9.0), (1687.5, 11.0)] {
            assert_eq!(next_rate_slo_first(&steps, &slo, &criteria, &r), Some(rate));
            steps.push(step(rate, p99, 0.0));
        }
        assert_eq!(next_rate(&steps, std::slice::from_ref(&slo), &r), None, "the SLO's gap is within 5 %");
        assert_eq!(next_rate_slo_first(&steps, &slo, &criteria, &r), next_rate(&steps, &criteria, &r));
        assert_eq!(next_rate_slo_first(&steps, &slo, &criteria, &r), Some(4000.0));
    }

    #[test]
    fn the_search_ends_at_its_bounds_and_resolution() {
        let criteria = standard_criteria();
        let r = range();
        // Met at the top of the range: nothing more to learn.
        assert_eq!(next_rate(&[step(64_000.0, 1.0, 0.0)], &criteria, &r), None);
        // Missed at the bottom of the range: nothing lower to try.
        assert_eq!(next_rate(&[step(250.0, 100.0, 0.0)], &criteria, &r), None);
        // Every gap within 5 %.
        let steps = [step(1000.0, 4.0, 0.0), step(1040.0, 70.0, 0.0)];
        assert_eq!(next_rate(&steps, &criteria, &r), None);
        // Never a rate tried before: a climb capped at the maximum that was tried stops.
        let r = Range { max: 1500.0, ..r };
        assert_eq!(next_rate(&[step(1000.0, 1.0, 0.0)], &criteria, &r), Some(1500.0));
    }

    #[test]
    fn a_simulated_node_is_found_within_the_resolution_in_few_steps() {
        // p99 grows with the rate: 1 ms + a knee near 6000/s.
        let p99 = |rate: f64| 1.0 + 49.0 * (rate / 6000.0).powi(6);
        let criteria = standard_criteria();
        let r = Range { resolution: 0.1, ..range() };
        let mut steps = Vec::new();
        while let Some(rate) = next_rate(&steps, &criteria, &r) {
            steps.push(step(rate, p99(rate), 0.0));
            assert!(steps.len() <= 20, "{steps:?}");
        }
        let t = table(TableSource::Search, &steps, &criteria, None, String::new());
        for row in &t.rows {
            let (lo, hi) = (row.otpd.rate.unwrap(), row.otpd.above.unwrap());
            assert!(p99(lo) <= row.p99_ms && p99(hi) > row.p99_ms, "{row:?}");
            assert!((hi - lo) / lo <= 0.1, "{row:?}");
        }
    }
}
