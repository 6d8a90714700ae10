//! Refusals in the audit trail, counted instead of written one by one.
//!
//! A refusal that an anonymous client can repeat at will (a body that is not JSON, a bad
//! token, a rate-limit denial) used to cost one durable audit write each: a flood of them
//! filled the disk at the attacker's pace. Refusals of one kind (API, step, outcome) from one
//! client (its address; IPv6 by /64, the unit an attacker gets for free) are now aggregated
//! per window: the first is written as before, the others only counted, and when the window
//! has passed one summary event says how many more there were. So one client costs at most
//! two writes per kind per window, whatever its rate.
//!
//! The table is bounded: past [`Refusals::capacity`] clients, new ones share one entry per
//! kind (no address), so an attacker with many addresses costs one more entry per kind, not
//! one per address. A window of zero turns aggregation off (every refusal is written).
//!
//! Only refusals are aggregated, never a call that changed anything, and never a wrong code
//! or signature (each of those is evidence about one account, and is bounded by its limits).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::rules::audit::{Api, AuditOutcome, Step};
use crate::rules::clock::Timestamp;

/// A kind of refusal from one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefusalKey {
    pub api: Api,
    pub step: Step,
    pub outcome: AuditOutcome,
    /// The client (IPv6 by /64); `None` for the shared entry of clients past the capacity.
    pub client: Option<IpAddr>,
}

impl RefusalKey {
    pub fn new(api: Api, step: Step, outcome: AuditOutcome, client: Option<IpAddr>) -> RefusalKey {
        RefusalKey { api, step, outcome, client: client.map(group) }
    }
}

/// An IPv6 client by its /64 (one subscriber's allocation); IPv4 as is.
fn group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// What to do with one refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write its event: the first of its kind in a window.
    Record,
    /// Only count it: the window's summary will.
    Count,
}

/// How many refusals of a kind were counted and not written, in the window that opened at
/// `since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub key: RefusalKey,
    pub more: u32,
    pub since: Timestamp,
}

impl Summary {
    /// The summary event's message (the event carries the kind and the client).
    pub fn message(&self) -> String {
        format!("{} more refused like this from this client in the window of the first", self.more)
    }
}

struct Entry {
    opened: Timestamp,
    more: u32,
}

/// The refusal table of one node.
pub struct Refusals {
    window: Duration,
    capacity: usize,
    entries: HashMap<RefusalKey, Entry>,
}

impl Refusals {
    /// Clients tracked one by one before new ones share an entry.
    pub const CAPACITY: usize = 100_000;

    pub fn new(window: Duration, capacity: usize) -> Refusals {
        Refusals { window, capacity, entries: HashMap::new() }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether to write this refusal's event, and the summary of the window it closes, if
    /// that window counted any.
    pub fn admit(&mut self, mut key: RefusalKey, now: Timestamp) -> (Admit, Option<Summary>) {
        if self.window.is_zero() {
            return (Admit::Record, None);
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            key.client = None;
        }
        match self.entries.get_mut(&key) {
            Some(e) if now.since(e.opened) < self.window => {
                e.more = e.more.saturating_add(1);
                (Admit::Count, None)
            }
            Some(e) => {
                let closed = (e.more > 0).then_some(Summary { key, more: e.more, since: e.opened });
                *e = Entry { opened: now, more: 0 };
                (Admit::Record, closed)
            }
            None => {
                self.entries.insert(key, Entry { opened: now, more: 0 });
                (Admit::Record, None)
            }
        }
    }

    /// The summaries of every window that has ended by `now`; their entries are forgotten.
    pub fn due(&mut self, now: Timestamp) -> Vec<Summary> {
        let window = self.window;
        let mut out = Vec::new();
        self.entries.retain(|key, e| {
            let open = now.since(e.opened) < window;
            if !open && e.more > 0 {
                out.push(Summary { key: *key, more: e.more, since: e.opened });
            }
            open
        });
        out
    }

    /// Every summary with a count, whether or not its window ended (at shutdown).
    pub fn drain(&mut self) -> Vec<Summary> {
        let out = self
            .entries
            .iter()
            .filter(|(_, e)| e.more > 0)
            .map(|(key, e)| Summary { key: *key, more: e.more, since: e.opened })
            .collect();
        self.entries.clear();
        out
    }

    /// Entries held (for tests and a gauge).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn key(ip: &str) -> RefusalKey {
        RefusalKey::new(Api::Login, Step::Parse, AuditOutcome::Rejected, Some(ip.parse().unwrap()))
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + secs * 1000)
    }

    #[test]
    fn one_write_per_kind_and_client_per_window_then_one_summary() {
        let mut r = Refusals::new(MINUTE, 10);
        assert_eq!(r.admit(key("192.0.2.1"), at(0)), (Admit::Record, None));
        for s in 1..60 {
            assert_eq!(r.admit(key("192.0.2.1"), at(s)).0, Admit::Count);
        }
        assert_eq!(r.admit(key("192.0.2.2"), at(1)).0, Admit::Record, "another client");
        let other_kind = RefusalKey { step: Step::Token, ..key("192.0.2.1") };
        assert_eq!(r.admit(other_kind, at(1)).0, Admit::Record, "another kind");
        let (admit, closed) = r.admit(key("192.0.2.1"), at(60));
        assert_eq!(admit, Admit::Record, "a new window");
        assert_eq!(closed, Some(Summary { key: key("192.0.2.1"), more: 59, since: at(0) }));
    }

    #[test]
    fn ended_windows_are_summarised_once_and_forgotten() {
        let mut r = Refusals::new(MINUTE, 10);
        r.admit(key("192.0.2.1"), at(0));
        r.admit(key("192.0.2.1"), at(1));
        r.admit(key("192.0.2.2"), at(30));
        assert!(r.due(at(59)).is_empty());
        assert_eq!(r.due(at(60)), vec![Summary { key: key("192.0.2.1"), more: 1, since: at(0) }]);
        assert_eq!(r.len(), 1, "the ended window is forgotten; the open one stays");
        assert!(r.due(at(120)).is_empty(), "a window with nothing counted needs no summary");
        assert!(r.is_empty());
    }

    #[test]
    fn ipv6_clients_are_their_64_and_the_table_is_bounded() {
        let mut r = Refusals::new(MINUTE, 2);
        r.admit(key("2001:db8:1:2::1"), at(0));
        assert_eq!(r.admit(key("2001:db8:1:2:ffff::9"), at(1)).0, Admit::Count, "the same /64");
        r.admit(key("2001:db8:1:3::1"), at(1));
        // Full: every new client shares one entry.
        for i in 0..1000 {
            let ip = format!("198.51.100.{}", i % 250);
            let admit = r.admit(key(&ip), at(2)).0;
            assert_eq!(admit, if i == 0 { Admit::Record } else { Admit::Count });
        }
        assert_eq!(r.len(), 3);
        let summaries = r.drain();
        assert!(summaries.iter().any(|s| s.key.client.is_none() && s.more == 999), "{summaries:?}");
    }

    #[test]
    fn a_zero_window_writes_everything() {
        let mut r = Refusals::new(Duration::ZERO, 10);
        for s in 0..5 {
            assert_eq!(r.admit(key("192.0.2.1"), at(s)), (Admit::Record, None));
        }
        assert!(r.is_empty());
    }
}
