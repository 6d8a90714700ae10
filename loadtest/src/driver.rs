//! Load shapes: open loop at a fixed (or ramping) arrival rate, and closed loop with N
//! connections. Every run is bounded in time and in scenario instances.
//!
//! Open loop works like wrk2: arrival `i` is *intended* at `start + i / rate`. The schedule is
//! dealt round-robin to a few arrival streams (tasks); each sleeps until its next arrival is
//! due, launches it stamped with its intended time, and drives every scenario it launched
//! inside the same task on pooled connections (several per stream: one per scenario in
//! flight). Latency includes any wait the node (or a saturated generator) imposed, and how late
//! the generator launched each arrival is recorded on its own (`generator.lag_*`), so timer
//! resolution does not skew the measurements and a late generator shows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};

use crate::scenario::{Mix, World};
use crate::stats::{Outcome, Recorder, RunSummary};

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Load {
    /// `rate` arrivals per second, reached linearly over `ramp` (zero: from the start).
    Open { rate: f64, ramp_s: f64 },
    /// `connections` virtual users, each starting its next scenario when the last one ends.
    Closed { connections: usize },
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    pub duration_s: f64,
    pub max_scenarios: u64,
    /// Open loop: seconds run at the full rate before the measured run, measuring nothing
    /// (connections, buffers and the node's caches get to their steady state first).
    #[serde(default)]
    pub warmup_s: f64,
}

/// Most scenario instances in flight in open loop before new arrivals are counted as lost
/// (the generator is saturated; the report says so instead of silently slowing down).
const MAX_IN_FLIGHT: u64 = 200_000;

pub async fn drive(
    world: Arc<World>,
    mix: &Mix,
    load: Load,
    bounds: Bounds,
    label: &str,
    progress: bool,
) -> RunSummary {
    if let Load::Open { rate, .. } = load {
        // About the connections the run will keep busy: its rate × a few milliseconds.
        world.pool.warm((rate * 0.004).clamp(8.0, 256.0) as usize).await;
        if bounds.warmup_s > 0.0 {
            let start = Instant::now();
            let scratch = Arc::new(Recorder::new(start));
            let warm = Bounds { duration_s: bounds.warmup_s, ..bounds };
            open_loop(&world, mix, rate, 0.0, warm, &scratch, start).await;
        }
    }
    let start = Instant::now();
    let rec = Arc::new(Recorder::new(start));
    let duration = Duration::from_secs_f64(bounds.duration_s);
    let bar = progress_bar(progress, duration, label);
    let ticker = spawn_ticker(rec.clone(), bar.clone());
    match load {
        Load::Open { rate, ramp_s } => open_loop(&world, mix, rate, ramp_s, bounds, &rec, start).await,
        Load::Closed { connections } => closed_loop(&world, mix, connections, bounds, &rec, start).await,
    }
    ticker.abort();
    let elapsed = start.elapsed();
    if world.exhausted() {
        eprintln!(
            "{label}: every prepared code was used after {:.1} s, so the run ended there (--prepare for more)",
            elapsed.as_secs_f64()
        );
    }
    bar.finish_and_clear();
    rec.summary(label, elapsed)
}

async fn open_loop(
    world: &Arc<World>,
    mix: &Mix,
    rate: f64,
    ramp_s: f64,
    bounds: Bounds,
    rec: &Arc<Recorder>,
    start: Instant,
) {
    let streams = open_streams();
    let handles: Vec<_> = (0..streams)
        .map(|s| {
            let (world, mix, rec) = (world.clone(), mix.clone(), rec.clone());
            let schedule = Schedule { rate, ramp_s, bounds, start, stream: s, streams };
            tokio::spawn(async move { arrival_stream(&world, &mix, schedule, &rec).await })
        })
        .collect();
    for h in handles {
        let _ = h.await;
    }
}

/// Arrival streams of an open-loop run: a few per worker thread, so that a stream that is
/// busy launching or answering does not hold back arrivals due on another.
fn open_streams() -> u64 {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u64;
    4 * threads
}

/// Which arrivals of the run's schedule one stream launches: `stream`, `stream + streams`, …
#[derive(Clone, Copy)]
struct Schedule {
    rate: f64,
    ramp_s: f64,
    bounds: Bounds,
    start: Instant,
    stream: u64,
    streams: u64,
}

impl Schedule {
    /// Seconds after the start at which arrival `i` of the whole run is due. Arrivals by time
    /// t: R·t²/(2T) during a ramp of length T, then R·T/2 + R·(t − T); this inverts that.
    fn time_of(&self, i: u64) -> f64 {
        let (k, rate, ramp_s) = (i as f64, self.rate, self.ramp_s);
        if ramp_s > 0.0 && k <= rate * ramp_s / 2.0 {
            (2.0 * ramp_s * k / rate).sqrt()
        } else {
            k / rate + ramp_s.max(0.0) / 2.0
        }
    }
}

/// One arrival stream: launches its arrivals at their intended times and drives them all
/// inside this one task (no task spawned per arrival, nothing kept per finished arrival), each
/// scenario on a pooled connection of its own, so one stream has as many connections busy as
/// it has arrivals in flight.
async fn arrival_stream(world: &World, mix: &Mix, schedule: Schedule, rec: &Recorder) {
    let end = schedule.start + Duration::from_secs_f64(schedule.bounds.duration_s);
    let cap = (MAX_IN_FLIGHT / schedule.streams).max(1) as usize;
    let mut in_flight = FuturesUnordered::new();
    let mut i = schedule.stream;
    while i < schedule.bounds.max_scenarios && !world.exhausted() {
        let at = schedule.start + Duration::from_secs_f64(schedule.time_of(i));
        if at >= end {
            break;
        }
        // Answer what comes back while waiting for the next arrival's time.
        let wake = tokio::time::sleep_until(at.into());
        tokio::pin!(wake);
        loop {
            tokio::select! {
                // Answers first: a stream that is behind its schedule still reads what came back.
                biased;
                Some(_) = in_flight.next(), if !in_flight.is_empty() => {}
                () = &mut wake => break,
            }
        }
        let kind = mix.pick(i);
        i += schedule.streams;
        let now = Instant::now();
        rec.launched(at, now);
        if in_flight.len() >= cap {
            rec.record("generator", at, now, &Outcome::Transport("generator saturated: arrival dropped"));
            continue;
        }
        in_flight.push(world.run(rec, kind, at));
    }
    // In-flight scenarios may finish up to 30 s after the end of the run.
    let drain = async { while in_flight.next().await.is_some() {} };
    let _ = tokio::time::timeout_at((Instant::now().max(end) + Duration::from_secs(30)).into(), drain).await;
}

async fn closed_loop(
    world: &Arc<World>,
    mix: &Mix,
    connections: usize,
    bounds: Bounds,
    rec: &Arc<Recorder>,
    start: Instant,
) {
    let deadline = start + Duration::from_secs_f64(bounds.duration_s);
    let launched = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..connections.max(1) {
        let (world, rec, launched, mix) = (world.clone(), rec.clone(), launched.clone(), mix.clone());
        handles.push(tokio::spawn(async move {
            while Instant::now() < deadline && !world.exhausted() {
                let n = launched.fetch_add(1, Ordering::Relaxed);
                if n >= bounds.max_scenarios {
                    break;
                }
                world.run(&rec, mix.pick(n), Instant::now()).await;
            }
        }));
    }
    // The loops end at the deadline (or at the scenario cap, or when the codes run out);
    // only then does the 30 s allowance for stragglers start.
    drain(handles, deadline).await;
}

/// Waits for in-flight scenarios, at most 30 s after the end of the run (`end`).
async fn drain(handles: Vec<tokio::task::JoinHandle<()>>, end: Instant) {
    let all = async {
        for h in handles {
            let _ = h.await;
        }
    };
    let _ = tokio::time::timeout_at((end + Duration::from_secs(30)).into(), all).await;
}

fn progress_bar(enabled: bool, duration: Duration, label: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Updates the bar with the live request rate and error count every 250 ms.
fn spawn_ticker(rec: Arc<Recorder>, bar: ProgressBar) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (requests, errors) = rec.totals();
            let now = Instant::now();
            let rate = (requests - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, requests);
            bar.set_position(rec.start().elapsed().as_secs());
            bar.set_message(format!("{rate:>9.0} req/s  {requests} requests  {errors} errors"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_share_the_schedule_without_gaps_or_overlaps() {
        let bounds = Bounds { duration_s: 1.0, max_scenarios: u64::MAX, warmup_s: 0.0 };
        let start = Instant::now();
        let whole = Schedule { rate: 1000.0, ramp_s: 0.0, bounds, start, stream: 0, streams: 1 };
        let s3 = Schedule { stream: 2, streams: 4, ..whole };
        assert_eq!(s3.time_of(6), whole.time_of(6));
        assert!((whole.time_of(500) - 0.5).abs() < 1e-9);
        let ramp = Schedule { ramp_s: 2.0, ..whole };
        // Half the rate's arrivals over a 2 s ramp: 1000 by t = 2 s, then 1000/s.
        assert!((ramp.time_of(1000) - 2.0).abs() < 1e-9 && (ramp.time_of(2000) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn bounds_serialise() {
        let b = Bounds { duration_s: 1.0, max_scenarios: 5, warmup_s: 0.0 };
        assert!(serde_json::to_string(&b).unwrap().contains("max_scenarios"));
    }
}
