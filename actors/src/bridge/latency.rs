//! A bridge's delivery latency: time from a message's push into the
//! mailbox to the downstream's acknowledgement, as a histogram with exact
//! counts (every acknowledged message is observed once), lock-free.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in milliseconds (the last bucket, +Inf, is
/// implicit). Wide: a replay after an outage acknowledges messages that
/// waited minutes or hours.
pub const BUCKETS_MS: [u64; 16] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
    3_600_000,
];

/// See the module doc.
#[derive(Debug, Default)]
pub struct Latency {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [AtomicU64; BUCKETS_MS.len() + 1],
    sum_ms: AtomicU64,
}

/// A copy for metrics: cumulative counts as Prometheus wants them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// (upper bound in ms, observations <= it), ascending; `u64::MAX` is +Inf.
    pub buckets: Vec<(u64, u64)>,
    pub count: u64,
    pub sum_ms: u64,
}

impl Latency {
    pub fn observe_ms(&self, ms: u64) {
        let i = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let buckets = BUCKETS_MS
            .iter()
            .copied()
            .chain([u64::MAX])
            .zip(&self.counts)
            .map(|(bound, c)| {
                total += c.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect();
        LatencySnapshot {
            buckets,
            count: total,
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets_exactly() {
        let l = Latency::default();
        for ms in [0, 1, 2, 7, 4_000_000] {
            l.observe_ms(ms);
        }
        let s = l.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.sum_ms, 4_000_010);
        assert_eq!(s.buckets[0], (1, 2));
        assert_eq!(s.buckets[1], (5, 3));
        assert_eq!(s.buckets[2], (10, 4));
        assert_eq!(s.buckets[BUCKETS_MS.len() - 1], (3_600_000, 4));
        assert_eq!(*s.buckets.last().unwrap(), (u64::MAX, 5));
    }
}
