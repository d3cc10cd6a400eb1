//! Publisher flow control for a consumer that is not a session: a
//! [`RouteSink`](crate::router::RouteSink) (a cluster peer's forward queue)
//! publishes its backlog here, and a publisher that just offered it a
//! message pauses while the backlog is over the high watermark, the way it
//! pauses for a congested session's [`Inbox`](crate::inbox::Inbox).
//!
//! The consumer reports progress (an acknowledgement from the downstream);
//! a consumer that is closed (its link is down) or made no progress for
//! [`STALL_AFTER`] is not waited for: its bounded queue drops the oldest,
//! counted, as before. So a merely slower downstream slows its publishers
//! instead of losing what they were acknowledged, and a dead one cannot
//! stall them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A consumer that made no progress for this long is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(1);

pub struct Valve {
    high: u64,
    low: u64,
    level: AtomicU64,
    open: AtomicBool,
    /// Milliseconds since `epoch` of the last progress.
    progress_ms: AtomicU64,
    epoch: Instant,
    relieved: Notify,
}

impl Valve {
    /// Congested at `high` (bytes, messages: the caller's unit) and
    /// relieved under `low`. Starts closed.
    pub fn new(high: u64, low: u64) -> Valve {
        Valve {
            high,
            low: low.min(high),
            level: AtomicU64::new(0),
            open: AtomicBool::new(false),
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            relieved: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The consumer's current backlog.
    pub fn set_level(&self, level: u64) {
        self.level.store(level, Ordering::Relaxed);
        if level < self.low {
            self.relieved.notify_waiters();
        }
    }

    pub fn level(&self) -> u64 {
        self.level.load(Ordering::Relaxed)
    }

    /// The consumer can take messages (`true`: its link came up) or cannot
    /// (`false`: waiters are released at once).
    pub fn set_open(&self, open: bool) {
        if open {
            self.progress();
        }
        self.open.store(open, Ordering::Release);
        if !open {
            self.relieved.notify_waiters();
        }
    }

    /// The consumer moved messages on (e.g. an acknowledgement arrived).
    pub fn progress(&self) {
        self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn flowing(&self) -> bool {
        self.open.load(Ordering::Acquire)
            && self
                .now_ms()
                .saturating_sub(self.progress_ms.load(Ordering::Relaxed))
                <= STALL_AFTER.as_millis() as u64
    }

    /// Over the high watermark and still flowing: publishers should wait.
    pub fn congested(&self) -> bool {
        self.level() >= self.high && self.flowing()
    }

    /// Wait until the backlog is under the low watermark, the consumer
    /// closes or stalls, or `limit` passes. Returns how long it waited.
    pub async fn wait_relieved(&self, limit: Duration) -> Duration {
        let done = || self.level() < self.low || !self.flowing();
        wait_until(&self.relieved, STALL_AFTER / 4, limit, done).await
    }
}

/// Wait until `done()` holds: checked at every notification of `notify`
/// and at least every `recheck` (for conditions that change with the
/// clock, a stall), for at most `limit`. Returns how long it waited.
pub async fn wait_until(
    notify: &Notify,
    recheck: Duration,
    limit: Duration,
    done: impl Fn() -> bool,
) -> Duration {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return start.elapsed();
        }
        let step = (tokio::time::Instant::now() + recheck).min(deadline);
        if tokio::time::timeout_at(step, notified).await.is_err()
            && tokio::time::Instant::now() >= deadline
        {
            return start.elapsed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congested_only_over_high_and_while_flowing() {
        let v = Valve::new(100, 50);
        v.set_level(200);
        assert!(!v.congested(), "closed: never congested");
        v.set_open(true);
        assert!(v.congested());
        v.set_level(99);
        assert!(!v.congested());
        v.set_level(100);
        v.set_open(false);
        assert!(!v.congested());
    }

    #[tokio::test]
    async fn waiters_resume_under_low_or_when_closed() {
        let v = std::sync::Arc::new(Valve::new(100, 50));
        v.set_open(true);
        v.set_level(150);
        let w = v.clone();
        let t = tokio::spawn(async move { w.wait_relieved(Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        v.set_level(70); // still over low
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!t.is_finished());
        v.set_level(10);
        let waited = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert!(waited < Duration::from_secs(5));

        v.set_level(150);
        let w = v.clone();
        let t = tokio::spawn(async move { w.wait_relieved(Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        v.set_open(false);
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_stalled_consumer_is_not_waited_for() {
        let v = Valve::new(100, 50);
        v.set_open(true);
        v.set_level(150);
        let waited = v.wait_relieved(Duration::from_secs(30)).await;
        // Released by the stall, not by the 30 s limit.
        assert!(
            waited >= STALL_AFTER && waited < Duration::from_secs(20),
            "{waited:?}"
        );
        assert!(!v.congested());
    }
}
