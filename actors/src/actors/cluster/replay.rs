//! The gateway's memory of the requests it ran, so that none runs twice.
//!
//! A request's tag proves that a node of this cluster made it, not that it is new: someone
//! who can write to the link (only possible without TLS) could send a captured `Issue` again
//! within the code's lifetime and bring back a challenge whose code was already typed (and
//! seen on the link). So the gateway also refuses replays:
//!
//! * per sender, it remembers the nonce of every request it accepted, with the request's `now`;
//! * a request whose `now` is older than the newest `now` of its sender by more than
//!   [`WINDOW`] is *stale*: refused. The `now`s come from the sender's own clock and are
//!   compared only with each other, so the nodes' clocks need not agree; a sender's requests
//!   may arrive out of order by up to the window (a slow store call between taking `now` and
//!   forwarding), never more. The price: a node whose clock steps back by more than the
//!   window has its requests refused until its clock catches up (or the receiver restarts);
//! * a request whose nonce is remembered is a *replay*: refused;
//! * nonces older than the window are forgotten (their requests are stale anyway), and when a
//!   sender's memory is full its oldest nonce is forgotten and its sender's *floor* raised
//!   past that nonce's `now`: nothing at or below the floor is accepted again. Memory stays
//!   bounded, and what is forgotten can never be replayed.
//!
//! ```text
//!   accept(sender, nonce, now):
//!     now < floor            → Stale
//!     now + WINDOW < newest  → Stale
//!     nonce remembered       → Replayed
//!     otherwise              → Fresh (remember it; newest = max(newest, now))
//! ```
//!
//! Only requests whose tag verified reach this memory, so a stranger can neither fill it nor
//! move a sender's clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::wire::NONCE_LEN;
use crate::rules::clock::Timestamp;

/// How far behind its sender's newest request a request may be.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most nonces remembered per sender (about 16 MiB at most; at 4,000 forwarded requests per
/// second from one sender, a full minute).
pub const PER_SENDER: usize = 1 << 18;

/// What [`ReplayGuard::accept`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Fresh,
    Replayed,
    Stale,
}

#[derive(Default)]
struct SenderLog {
    newest: u64,
    floor: u64,
    seen: HashSet<[u8; NONCE_LEN]>,
    /// Remembered nonces, in the order they were accepted.
    order: VecDeque<(u64, [u8; NONCE_LEN])>,
}

/// The nonces of accepted requests, by sender.
pub struct ReplayGuard {
    window: u64,
    capacity: usize,
    senders: HashMap<String, SenderLog>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(WINDOW, PER_SENDER)
    }
}

impl ReplayGuard {
    pub fn new(window: Duration, capacity: usize) -> ReplayGuard {
        ReplayGuard { window: window.as_millis() as u64, capacity: capacity.max(1), senders: HashMap::new() }
    }

    /// Decides on one authentic request, and remembers it when it is fresh.
    pub fn accept(&mut self, sender: &str, nonce: [u8; NONCE_LEN], now: Timestamp) -> Verdict {
        let now = now.as_millis();
        // Looked up by `&str` first: a sender's name is allocated once, not per request.
        if !self.senders.contains_key(sender) {
            self.senders.insert(sender.to_owned(), SenderLog::default());
        }
        let log = self.senders.get_mut(sender).expect("inserted above");
        if now < log.floor || now.saturating_add(self.window) < log.newest {
            return Verdict::Stale;
        }
        if !log.seen.insert(nonce) {
            return Verdict::Replayed;
        }
        log.order.push_back((now, nonce));
        log.newest = log.newest.max(now);
        // Forget what the window refuses anyway, oldest first.
        while let Some(&(at, old)) = log.order.front() {
            if at.saturating_add(self.window) >= log.newest {
                break;
            }
            log.order.pop_front();
            log.seen.remove(&old);
        }
        // Full: forget the oldest, and refuse everything at or below it from now on.
        while log.order.len() > self.capacity {
            let (at, old) = log.order.pop_front().expect("longer than the capacity, so not empty");
            log.seen.remove(&old);
            log.floor = log.floor.max(at.saturating_add(1));
        }
        Verdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_millis(1_790_000_000_000 + s * 1000)
    }

    #[test]
    fn a_request_runs_once() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.accept("otpd-1", [1; 16], at(0)), Verdict::Fresh);
        assert_eq!(guard.accept("otpd-1", [1; 16], at(0)), Verdict::Replayed);
        assert_eq!(guard.accept("otpd-1", [1; 16], at(30)), Verdict::Replayed, "the nonce is what counts");
        // Senders are apart: another node may draw the same nonce.
        assert_eq!(guard.accept("otpd-2", [1; 16], at(0)), Verdict::Fresh);
    }

    #[test]
    fn late_requests_pass_within_the_window_and_stale_ones_never() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.accept("otpd-1", [1; 16], at(100)), Verdict::Fresh);
        // Out of order, within the window: fine.
        assert_eq!(guard.accept("otpd-1", [2; 16], at(41)), Verdict::Fresh);
        assert_eq!(guard.accept("otpd-1", [3; 16], at(39)), Verdict::Stale);
        // Time moves on: what was remembered is forgotten, and its replay is stale.
        assert_eq!(guard.accept("otpd-1", [4; 16], at(200)), Verdict::Fresh);
        assert_eq!(guard.accept("otpd-1", [1; 16], at(100)), Verdict::Stale);
        assert_eq!(guard.accept("otpd-1", [2; 16], at(41)), Verdict::Stale);
        // Another sender's clock is its own: far behind otpd-1, it is not stale.
        assert_eq!(guard.accept("otpd-2", [5; 16], at(0)), Verdict::Fresh);
    }

    #[test]
    fn a_full_memory_forgets_the_oldest_and_refuses_it_for_good() {
        let mut guard = ReplayGuard::new(WINDOW, 3);
        for i in 0..3u8 {
            assert_eq!(guard.accept("otpd-1", [i; 16], at(u64::from(i))), Verdict::Fresh);
        }
        // A fourth pushes the first (at 0 s) out; its replay is refused as stale, and so is
        // any request at or before it, although the window would allow it.
        assert_eq!(guard.accept("otpd-1", [3; 16], at(3)), Verdict::Fresh);
        assert_eq!(guard.accept("otpd-1", [0; 16], at(0)), Verdict::Stale);
        assert_eq!(guard.accept("otpd-1", [9; 16], at(0)), Verdict::Stale);
        // What is still remembered is still refused as a replay.
        assert_eq!(guard.accept("otpd-1", [2; 16], at(2)), Verdict::Replayed);
        assert_eq!(guard.accept("otpd-1", [8; 16], at(1)), Verdict::Fresh);
        let log = &guard.senders["otpd-1"];
        assert!(log.order.len() <= 3 && log.seen.len() == log.order.len());
    }
}
