//! What a run measured: per-step HDR histograms, an error breakdown, and a per-second
//! timeline, recorded from every task through one short-held lock.
//!
//! Latency is measured from the *intended* start of a request (open loop: its slot in the
//! arrival schedule), not from when the generator got round to sending it, so a stalled server
//! cannot hide its stall by slowing the generator down (coordinated omission).
//!
//! The generator watches itself too: how late it launched each open-loop arrival (its lag
//! behind the schedule), the CPU this process used over the run (`getrusage`), and its pauses
//! ([`PauseMeter`]), so a report shows when the numbers measure the generator, or the machine,
//! rather than the node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The step a code's delivery is recorded under: from the node's answer to the send until the
/// harness read the code (outbox or SMS endpoint).
pub const CODE_DELIVERY: &str = "code_delivery";

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
    /// Open loop: how late each arrival was launched after its intended time.
    lag: Histogram<u64>,
}

/// Measures the generator's pauses: a thread of its own asks to wake every millisecond and
/// keeps, per second since `start`, how late it woke at worst.
///
/// Why: a shared virtual machine's host sometimes stops it for 10–20 ms, every vCPU at once
/// (docs/PERFORMANCE.md, "A pause every five seconds"). The node stops with it, and a second
/// with such a pause fails a 10 ms p99 whatever the node does. The meter shows those seconds
/// on the generator's side: it is late only when this process could not run, which at the
/// generator's usual fraction of a core means the machine paused, or the generator's own
/// CPU ran out (its CPU figure says which).
struct PauseMeter {
    /// Per second since the run's start: the latest wake-up, in microseconds.
    worst: Arc<Mutex<Vec<u32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const PAUSE_TICK: Duration = Duration::from_millis(1);

impl PauseMeter {
    fn start(start: Instant) -> Self {
        let worst = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, halt) = (worst.clone(), stop.clone());
        // Without the thread the run goes on; the timeline's pauses then read 0.
        let thread = std::thread::Builder::new()
            .name("pause-meter".into())
            .spawn(move || {
                // Each wake-up is due a tick after the last one, so a stop anywhere in the loop
                // (the host, the scheduler, the lock below) counts in the next wake-up.
                let mut last = Instant::now();
                while !halt.load(Ordering::Relaxed) {
                    std::thread::sleep(PAUSE_TICK);
                    let woke = Instant::now();
                    let late = woke.saturating_duration_since(last + PAUSE_TICK);
                    last = woke;
                    let late = late.as_micros().min(u128::from(u32::MAX)) as u32;
                    note_pause(&mut w.lock(), woke.saturating_duration_since(start).as_secs() as usize, late);
                }
            })
            .ok();
        PauseMeter { worst, stop, thread }
    }
}

impl Drop for PauseMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeps `late` (µs) as second `second`'s worst pause if it is worse than what is there.
fn note_pause(worst: &mut Vec<u32>, second: usize, late: u32) {
    if worst.len() <= second {
        worst.resize(second + 1, 0);
    }
    worst[second] = worst[second].max(late);
}

/// Shared by every task of a run.
pub struct Recorder {
    start: Instant,
    cpu_at_start: CpuTime,
    pauses: PauseMeter,
    state: Mutex<State>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            cpu_at_start: CpuTime::now(),
            pauses: PauseMeter::start(start),
            state: Mutex::new(State {
                steps: BTreeMap::new(),
                errors: BTreeMap::new(),
                timeline: Vec::new(),
                requests: 0,
                failed: 0,
                scenarios_ok: 0,
                scenarios_failed: 0,
                lag: histogram(),
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

    /// Records that an open-loop arrival meant for `intended` was launched at `launched`.
    pub fn launched(&self, intended: Instant, launched: Instant) {
        let micros = launched.saturating_duration_since(intended).as_micros().clamp(1, MAX_MICROS as u128) as u64;
        self.state.lock().lag.saturating_record(micros);
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
        let cpu = CpuTime::now().since(self.cpu_at_start);
        let pauses = self.pauses.worst.lock().clone();
        let pause_ms = |second: usize| ms(pauses.get(second).copied().map_or(0, u64::from));
        let s = self.state.lock();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut total = histogram();
        let (mut answers, mut answer_errors) = (histogram(), 0);
        let steps = s
            .steps
            .iter()
            .map(|(name, st)| {
                let _ = total.add(&st.hist);
                if *name != CODE_DELIVERY {
                    let _ = answers.add(&st.hist);
                    answer_errors += st.errors;
                }
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
                pause_ms: pause_ms(t),
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
            answers: Some(StepSummary::from_hist("answers", &answers, answer_errors, secs)),
            steps,
            errors_by_kind: s.errors.clone(),
            timeline,
            generator: GeneratorStats {
                cpu_user_s: cpu.user_s,
                cpu_system_s: cpu.system_s,
                cpu_cores: (cpu.user_s + cpu.system_s) / secs,
                arrivals: s.lag.len(),
                lag_p50_ms: ms(s.lag.value_at_quantile(0.50)),
                lag_p99_ms: ms(s.lag.value_at_quantile(0.99)),
                lag_max_ms: ms(s.lag.max()),
                pause_max_ms: (0..=elapsed.as_secs() as usize).map(pause_ms).fold(0.0, f64::max),
            },
        }
    }
}

/// CPU time this process has used (every thread), from `getrusage(RUSAGE_SELF)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    pub user_s: f64,
    pub system_s: f64,
}

impl CpuTime {
    pub fn now() -> CpuTime {
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        // SAFETY: getrusage only writes into the struct we pass; a zeroed rusage is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return CpuTime::default();
        }
        CpuTime { user_s: secs(usage.ru_utime), system_s: secs(usage.ru_stime) }
    }

    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime { user_s: self.user_s - earlier.user_s, system_s: self.system_s - earlier.system_s }
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The quantiles each step's latency distribution is reported at (the chart's x axis).
pub const QUANTILES: [f64; 11] = [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0];

/// Latency and throughput of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Latency (ms) at each of [`QUANTILES`], in order.
    #[serde(default)]
    pub distribution: Vec<(f64, f64)>,
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
            distribution: QUANTILES.iter().map(|&q| (q, ms(h.value_at_quantile(q)))).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The generator's worst pause in this second ([`PauseMeter`]); 0 in reports written
    /// before it was measured.
    #[serde(default)]
    pub pause_ms: f64,
}

/// What the generator itself did during a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GeneratorStats {
    /// CPU this process used over the run, user and kernel, in seconds.
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// CPU used per second of the run (1.0 = one core busy all the time).
    pub cpu_cores: f64,
    /// Open loop: arrivals launched, and how late after their intended time (0 in closed loop).
    pub arrivals: u64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// The generator's worst pause over the run: how late a thread asking to wake every
    /// millisecond woke at worst ([`PauseMeter`]; 0 in reports written before it existed).
    #[serde(default)]
    pub pause_max_ms: f64,
}

/// Everything measured in one run against one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The node's answers alone: every step but [`CODE_DELIVERY`], which is not a request to
    /// the node (the dispatcher's batching and the outbox or SMS endpoint are in its time).
    /// What p99 bounds are judged on (None in reports written before it existed).
    #[serde(default)]
    pub answers: Option<StepSummary>,
    pub steps: Vec<StepSummary>,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
    #[serde(default)]
    pub generator: GeneratorStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codes_delivery_is_not_an_answer_but_its_failure_is_an_error() {
        let start = Instant::now();
        let r = Recorder::new(start);
        for _ in 0..99 {
            r.record("login", start, start + Duration::from_millis(1), &Outcome::Ok);
            r.record(CODE_DELIVERY, start, start + Duration::from_millis(40), &Outcome::Ok);
        }
        r.record(CODE_DELIVERY, start, start + Duration::from_millis(40), &Outcome::Transport("code never arrived"));
        let s = r.summary("t", Duration::from_secs(1));
        let answers = s.answers.unwrap();
        assert_eq!((answers.requests, answers.errors), (99, 0));
        assert!(answers.p99_ms < 2.0 && s.overall.p99_ms >= 40.0, "{answers:?}");
        assert_eq!((s.requests, s.errors), (199, 1));
    }

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
        let d = &login.distribution;
        assert_eq!(d.len(), QUANTILES.len());
        assert!((d.last().unwrap().1 - 50.0).abs() < 0.1 && (d[0].1 - 10.0).abs() < 0.1, "{d:?}");
    }

    #[test]
    fn lag_is_launch_time_minus_intended_time() {
        let start = Instant::now();
        let r = Recorder::new(start);
        r.launched(start, start + Duration::from_millis(3));
        r.launched(start, start + Duration::from_millis(1));
        let s = r.summary("t", Duration::from_secs(1));
        assert_eq!(s.generator.arrivals, 2);
        assert!((s.generator.lag_max_ms - 3.0).abs() < 0.01, "{:?}", s.generator);
    }

    #[test]
    fn a_pause_keeps_the_worst_per_second() {
        let mut worst = Vec::new();
        note_pause(&mut worst, 2, 300);
        note_pause(&mut worst, 2, 120);
        note_pause(&mut worst, 0, 50);
        note_pause(&mut worst, 2, 900);
        assert_eq!(worst, [50, 0, 900]);
    }

    #[test]
    fn the_pause_meter_sees_its_thread_stopped() {
        let start = Instant::now();
        let r = Recorder::new(start);
        r.record("login", start, start + Duration::from_millis(1), &Outcome::Ok);
        // The meter cannot record while this holds its lock: it stops for 40 ms, as if the
        // machine had paused it, and its next wake-up is that late.
        {
            let _held = r.pauses.worst.lock();
            std::thread::sleep(Duration::from_millis(40));
        }
        std::thread::sleep(Duration::from_millis(20));
        // A request in the second the meter woke late, so that the timeline reaches it.
        let now = Instant::now();
        r.record("login", now, now, &Outcome::Ok);
        let s = r.summary("t", start.elapsed());
        assert!(s.generator.pause_max_ms >= 35.0, "{:?}", s.generator);
        let in_timeline = s.timeline.iter().map(|p| p.pause_ms).fold(0.0, f64::max);
        assert!(in_timeline >= 35.0, "{:?}", s.timeline);
    }

    #[test]
    fn cpu_time_counts_work_done_by_this_process() {
        let before = CpuTime::now();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        let used = CpuTime::now().since(before);
        assert!(used.user_s + used.system_s > 0.0, "{used:?}");
    }
}
