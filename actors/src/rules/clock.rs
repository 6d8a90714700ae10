//! Wall-clock time as an argument.
//!
//! Every rule that depends on time (code lifetime, cooldowns, token expiry) takes a
//! [`Timestamp`] from a [`Clock`] instead of reading the system clock itself, so tests move
//! time forward with a [`ManualClock`] instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the UNIX epoch.
///
/// Milliseconds (not `Instant`) because timestamps are persisted, compared across nodes and
/// written to the audit trail; 64 bits of milliseconds last far longer than any deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The instant `d` after this one (saturating, never wraps).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis().min(u64::MAX as u128) as u64))
    }

    /// How long after `earlier` this instant is; zero if it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Time left until `later`; zero once it has passed.
    pub fn until(self, later: Timestamp) -> Duration {
        later.since(self)
    }

    pub fn system_now() -> Self {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Timestamp(ms)
    }
}

/// A [`Timestamp`] in 6 bytes (48 bits of milliseconds: until the year 10889), for the maps that
/// hold one per live challenge or rate-limit window, millions of them. Byte-aligned, so it adds
/// no padding to the structs that hold it; big-endian, so its derived order is the timestamp's.
/// Later instants are stored as [`CompactTimestamp::MAX`], which no clock reaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CompactTimestamp([u8; 6]);

impl CompactTimestamp {
    pub const MAX: CompactTimestamp = CompactTimestamp([u8::MAX; 6]);

    pub const fn new(t: Timestamp) -> Self {
        let ms = if t.0 > (1 << 48) - 1 { (1 << 48) - 1 } else { t.0 };
        let b = ms.to_be_bytes();
        CompactTimestamp([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    pub const fn get(self) -> Timestamp {
        let b = self.0;
        Timestamp(u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]))
    }
}

impl From<Timestamp> for CompactTimestamp {
    fn from(t: Timestamp) -> Self {
        CompactTimestamp::new(t)
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::system_now()
    }
}

/// A clock that only moves when told to. Starts at the current system time so timestamps
/// written with it look plausible in the audit trail.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicU64::new(start.as_millis()))
    }

    pub fn starting_now() -> Self {
        Self::new(Timestamp::system_now())
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.plus(Duration::from_secs(1)).as_millis(), 2_000);
        assert_eq!(t.since(Timestamp::from_millis(2_000)), Duration::ZERO);
        assert_eq!(t.until(Timestamp::from_millis(1_500)), Duration::from_millis(500));
        assert_eq!(Timestamp::from_millis(u64::MAX).plus(Duration::from_secs(1)).as_millis(), u64::MAX);
    }

    #[test]
    fn compact_timestamps_keep_value_and_order() {
        let (a, b) = (Timestamp::from_millis(1_700_000_000_000), Timestamp::from_millis(1_700_000_000_001));
        assert_eq!(CompactTimestamp::new(a).get(), a);
        assert_eq!(CompactTimestamp::default().get(), Timestamp::default());
        assert!(CompactTimestamp::new(a) < CompactTimestamp::new(b));
        // 2^48 - 1 ms is the year 10889: later instants saturate, as `Timestamp::plus` does.
        let last = Timestamp::from_millis((1 << 48) - 1);
        assert_eq!(CompactTimestamp::new(last).get(), last);
        assert_eq!(CompactTimestamp::new(Timestamp::from_millis(u64::MAX)), CompactTimestamp::MAX);
        assert_eq!(CompactTimestamp::MAX.get(), last);
        assert_eq!(std::mem::size_of::<CompactTimestamp>(), 6);
        assert_eq!(std::mem::align_of::<CompactTimestamp>(), 1);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_millis(10));
        assert_eq!(c.now().as_millis(), 10);
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now().as_millis(), 15);
    }
}
