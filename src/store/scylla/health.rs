//! Readiness: a probe that asks the cluster a cheap question every `health_interval`.
//!
//! `/health/ready` is synchronous and hit often, so it reads the probe's last verdict instead
//! of querying the cluster itself. The verdict is "up" only while the last probe succeeded
//! and is recent; a failed probe reports a short category ([`super::classify`]), never the
//! driver's text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tokio::task::JoinHandle;

use super::classify;

#[derive(Debug, Clone)]
enum Verdict {
    Up(Instant),
    Down(&'static str),
}

pub struct Health {
    state: Arc<Mutex<Verdict>>,
    interval: Duration,
    task: Mutex<Option<JoinHandle<()>>>,
}

async fn probe(session: &Session, statement: &PreparedStatement) -> Verdict {
    match session.execute_unpaged(statement, ("otpd",)).await {
        Ok(_) => Verdict::Up(Instant::now()),
        Err(e) => {
            tracing::warn!(error = %e, "ScyllaDB readiness probe failed");
            Verdict::Down(classify(&e))
        }
    }
}

impl Health {
    /// Probes once, then keeps probing in the background.
    pub async fn start(session: Arc<Session>, statement: PreparedStatement, interval: Duration) -> Self {
        let state = Arc::new(Mutex::new(probe(&session, &statement).await));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let verdict = probe(&session, &statement).await;
                if let (Verdict::Up(_), Verdict::Down(_)) = (&verdict, &*shared.lock()) {
                    tracing::info!("ScyllaDB answers the readiness probe again");
                }
                *shared.lock() = verdict;
            }
        });
        Health { state, interval, task: Mutex::new(Some(task)) }
    }

    /// `Ok` while the cluster answered the last probe, recently.
    pub fn check(&self) -> Result<(), String> {
        verdict_to_check(&self.state.lock(), self.interval, Instant::now())
    }

    pub fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

fn verdict_to_check(v: &Verdict, interval: Duration, now: Instant) -> Result<(), String> {
    match v {
        Verdict::Down(category) => Err(format!("ScyllaDB: {category}")),
        Verdict::Up(at) => {
            // A probe can take up to the request timeout; allow a few missed rounds before
            // calling silence a failure.
            let stale = interval * 3 + Duration::from_secs(5);
            let age = now.saturating_duration_since(*at);
            if age > stale {
                Err(format!("ScyllaDB: no answer to the readiness probe for {}s", age.as_secs()))
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_recent_answer() {
        let t0 = Instant::now();
        let i = Duration::from_secs(2);
        assert_eq!(verdict_to_check(&Verdict::Up(t0), i, t0 + Duration::from_secs(3)), Ok(()));
        let stale = verdict_to_check(&Verdict::Up(t0), i, t0 + Duration::from_secs(60)).unwrap_err();
        assert!(stale.contains("no answer") && stale.contains("60s"), "{stale}");
        assert_eq!(
            verdict_to_check(&Verdict::Down("request timed out"), i, t0),
            Err("ScyllaDB: request timed out".into())
        );
    }
}
