//! What a run measured: per-step HDR histograms, an error breakdown, and a per-second
//! timeline, recorded from every task through one short-held lock.
//!
//! Latency is measured from the *intended* start of a request (open loop: its slot in the
//! arrival schedule), not from when the generator got round to sending it, so a stalled server
//! cannot hide its stall by slowing the generator down (coordinated omission).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Highest latency recorded exactly (longer ones are clamped): one minute, in microseconds.
const MAX_MICROS: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// A non-2xx answer, with the problem `code` when the body had one.
    Status(u16, String),
    /// No answer: connection refused or reset, timeout, protocol error.
    Transport(&'static str),
}

struct Step {
    hist: Histogram<u64>,
    errors: u64,
}

struct Second {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
}

struct State {
    steps: BTreeMap<&'static str, Step>,
    errors: BTreeMap<String, u64>,
    timeline: Vec<Second>,
    requests: u64,
    failed: u64,
    scenarios_ok: u64,
    scenarios_failed: u64,
}

/// Shared by every task of a run.
pub struct Recorder {
    start: Instant,
    state: Mutex<State>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            state: Mutex::new(State {
                steps: BTreeMap::new(),
                errors: BTreeMap::new(),
                timeline: Vec::new(),
                requests: 0,
                failed: 0,
                scenarios_ok: 0,
                scenarios_failed: 0,
            }),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records one request of `step` that was meant to start at `intended` and ended `done`.
    pub fn record(&self, step: &'static str, intended: Instant, done: Instant, outcome: &Outcome) {
        let micros = done.saturating_duration_since(intended).as_micros().clamp(1, MAX_MICROS as u128) as u64;
        let second = done.saturating_duration_since(self.start).as_secs() as usize;
        let failed = !matches!(outcome, Outcome::Ok);
        let mut s = self.state.lock();
        let entry = s.steps.entry(step).or_insert_with(|| Step { hist: histogram(), errors: 0 });
        entry.hist.saturating_record(micros);
        entry.errors += u64::from(failed);
        s.requests += 1;
        if failed {
            s.failed += 1;
            let key = match outcome {
                Outcome::Status(status, code) if code.is_empty() => format!("{step}: HTTP {status}"),
                Outcome::Status(status, code) => format!("{step}: HTTP {status} {code}"),
                Outcome::Transport(kind) => format!("{step}: {kind}"),
                Outcome::Ok => format!("{step}: ok"),
            };
            *s.errors.entry(key).or_insert(0) += 1;
        }
        while s.timeline.len() <= second {
            s.timeline.push(Second { hist: histogram(), requests: 0, errors: 0 });
        }
        let sec = &mut s.timeline[second];
        sec.hist.saturating_record(micros);
        sec.requests += 1;
        sec.errors += u64::from(failed);
    }

    /// Records a whole scenario instance's fate.
    pub fn scenario(&self, ok: bool) {
        let mut s = self.state.lock();
        if ok {
            s.scenarios_ok += 1;
        } else {
            s.scenarios_failed += 1;
        }
    }

    /// Requests and failures so far (for the progress bar).
    pub fn totals(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.requests, s.failed)
    }

    /// Freezes the measurements into a report section.
    pub fn summary(&self, label: &str, elapsed: Duration) -> RunSummary {
        let s = self.state.lock();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut total = histogram();
        let steps = s
            .steps
            .iter()
            .map(|(name, st)| {
                let _ = total.add(&st.hist);
                StepSummary::from_hist(name, &st.hist, st.errors, secs)
            })
            .collect();
        let timeline = s
            .timeline
            .iter()
            .enumerate()
            .map(|(t, sec)| TimelinePoint {
                second: t as u64,
                requests: sec.requests,
                errors: sec.errors,
                p50_ms: ms(sec.hist.value_at_quantile(0.50)),
                p90_ms: ms(sec.hist.value_at_quantile(0.90)),
                p99_ms: ms(sec.hist.value_at_quantile(0.99)),
                max_ms: ms(sec.hist.max()),
            })
            .collect();
        RunSummary {
            label: label.to_owned(),
            duration_s: secs,
            requests: s.requests,
            errors: s.failed,
            error_rate: if s.requests == 0 { 0.0 } else { s.failed as f64 / s.requests as f64 },
            requests_per_s: s.requests as f64 / secs,
            scenarios_ok: s.scenarios_ok,
            scenarios_failed: s.scenarios_failed,
            overall: StepSummary::from_hist("all", &total, s.failed, secs),
            steps,
            errors_by_kind: s.errors.clone(),
            timeline,
        }
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Latency and throughput of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub step: String,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl StepSummary {
    fn from_hist(name: &str, h: &Histogram<u64>, errors: u64, secs: f64) -> Self {
        StepSummary {
            step: name.to_owned(),
            requests: h.len(),
            errors,
            requests_per_s: h.len() as f64 / secs,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything measured in one run against one target.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub label: String,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub requests_per_s: f64,
    pub scenarios_ok: u64,
    pub scenarios_failed: u64,
    pub overall: StepSummary,
    pub steps: Vec<StepSummary>,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_intended_start() {
        let start = Instant::now();
        let r = Recorder::new(start);
        // Intended at t=0 but answered at t=50 ms: 50 ms, even if the request left late.
        r.record("login", start, start + Duration::from_millis(50), &Outcome::Ok);
        r.record("login", start, start + Duration::from_millis(10), &Outcome::Status(429, "resend_cooldown".into()));
        r.record("me", start, start + Duration::from_millis(1), &Outcome::Transport("reset"));
        let s = r.summary("t", Duration::from_secs(1));
        assert_eq!(s.requests, 3);
        assert_eq!(s.errors, 2);
        let login = s.steps.iter().find(|x| x.step == "login").unwrap();
        assert!((login.max_ms - 50.0).abs() < 0.1, "{}", login.max_ms);
        assert_eq!(s.errors_by_kind["login: HTTP 429 resend_cooldown"], 1);
        assert_eq!(s.errors_by_kind["me: reset"], 1);
        assert_eq!(s.timeline.len(), 1);
        assert_eq!(s.timeline[0].requests, 3);
    }
}
