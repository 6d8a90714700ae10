//! The ledger: every message the dispatcher accepted and has not yet finished with.
//!
//! It lives outside the dispatcher actor (in the dispatcher's shared state) so that a restarted actor
//! adopts every message where the failed one left it, and its size is the bound of the
//! delivery queue. A `parking_lot` mutex, held only for map operations, never across an
//! `.await`.

use std::sync::Arc;

use rand::RngExt;
use rustc_hash::FxHashMap;
use tokio::time::Instant;
use uuid::Uuid;

use super::provider::SendResult;
use crate::ports::OutboundMessage;

/// Where a message stands. The indexes are lanes (providers).
#[derive(Debug)]
pub(crate) enum Stage {
    /// Accepted; the actor has not routed it yet.
    New,
    /// In a provider's batch buffer.
    Buffered(usize),
    /// Part of a provider call that has not finished.
    InFlight(usize),
    /// The call finished with this result; the actor has not acted on it yet.
    Returned(usize, SendResult),
    /// Waiting for a retry (backoff, `Retry-After`, or every provider's breaker open).
    Waiting(Instant),
}

pub(crate) struct Entry {
    pub message: Arc<OutboundMessage>,
    /// Stable across attempts: gateways may deduplicate retries with it.
    pub delivery_id: Uuid,
    /// Provider calls this message was part of.
    pub attempts: u32,
    pub stage: Stage,
    /// Lanes (bit per lane) that carried this code before and are not routed to again (a
    /// failover after a receipt, `receipts`).
    pub tried: u64,
}

#[derive(Default)]
pub(crate) struct Ledger {
    entries: FxHashMap<u64, Entry>,
    next_id: u64,
}

impl Ledger {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a message and returns its id (ids grow, so they also order arrivals); it is not
    /// routed to the lanes in `tried` (a failover, or a requested way that starts further down
    /// the route); 0 for any lane.
    pub fn insert_avoiding(&mut self, message: Arc<OutboundMessage>, tried: u64) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        // A v4 UUID from the thread RNG (`Uuid::new_v4` would make a system call per message).
        let delivery_id = uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid();
        self.entries.insert(id, Entry { message, delivery_id, attempts: 0, stage: Stage::New, tried });
        id
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Entry> {
        self.entries.get_mut(&id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id);
        if self.entries.capacity() > 4 * self.entries.len().max(1024) {
            // Give memory back after a burst.
            self.entries.shrink_to_fit();
        }
        entry
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.entries.iter().map(|(&id, e)| (id, e))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.entries.keys().copied().collect()
    }
}
