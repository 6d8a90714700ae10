//! Load shapes: open loop at a fixed (or ramping) arrival rate, and closed loop with N
//! connections. Every run is bounded in time and in scenario instances.
//!
//! Open loop works like wrk2: arrival `i` is *intended* at `start + i / rate`; a scheduler
//! wakes about every millisecond and launches every arrival whose time has come, each stamped
//! with its intended time, so latency includes any wait the node (or a saturated generator)
//! imposed. Timer resolution does not skew the measurements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::scenario::{Mix, World};
use crate::stats::{Outcome, Recorder, RunSummary};

#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Load {
    /// `rate` arrivals per second, reached linearly over `ramp` (zero: from the start).
    Open { rate: f64, ramp_s: f64 },
    /// `connections` virtual users, each starting its next scenario when the last one ends.
    Closed { connections: usize },
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Bounds {
    pub duration_s: f64,
    pub max_scenarios: u64,
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
    let in_flight = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(bounds.duration_s);
    let mut launched = 0u64;
    // Arrivals by time t: R·t²/(2T) during a ramp of length T, then R·T/2 + R·(t − T).
    // `time_of(i)` inverts that for arrival i.
    let time_of = |i: u64| -> f64 {
        let k = i as f64;
        if ramp_s > 0.0 && k <= rate * ramp_s / 2.0 {
            (2.0 * ramp_s * k / rate).sqrt()
        } else {
            k / rate + ramp_s.max(0.0) / 2.0
        }
    };
    let mut handles = Vec::new();
    loop {
        let now = Instant::now();
        if now >= start + duration || launched >= bounds.max_scenarios || world.exhausted() {
            break;
        }
        loop {
            let at = start + Duration::from_secs_f64(time_of(launched));
            if at > now || at >= start + duration || launched >= bounds.max_scenarios {
                break;
            }
            let kind = mix.pick(launched);
            launched += 1;
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                rec.record(
                    "generator",
                    at,
                    Instant::now(),
                    &Outcome::Transport("generator saturated: arrival dropped"),
                );
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (world, rec, in_flight) = (world.clone(), rec.clone(), in_flight.clone());
            handles.push(tokio::spawn(async move {
                world.run(&rec, kind, at).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
            }));
        }
        if handles.len() > 100_000 {
            handles.retain(|h| !h.is_finished());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    drain(handles, Instant::now()).await;
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
    fn bounds_serialise() {
        let b = Bounds { duration_s: 1.0, max_scenarios: 5 };
        assert!(serde_json::to_string(&b).unwrap().contains("max_scenarios"));
    }
}
