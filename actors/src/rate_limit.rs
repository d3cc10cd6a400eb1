//! Token buckets for overload protection: the accept rate of a listener
//! (`mqtt.max_connection_rate`) and the publish rate of one client
//! (`mqtt.max_publish_rate`, `mqtt.max_publish_bytes_rate`).
//!
//! Pure: the caller passes the current time and gets back how long to wait;
//! the waiting (and the counting of waits) is the caller's. A bucket fills at
//! `rate` tokens per second up to one second's worth (`rate`, at least one
//! token): a client may burst that much after a quiet second, as EMQX's
//! limiter with its default capacity allows.
//!
//! Per-connection state is what decides the size: a [`PublishLimiter`] is
//! two `f64` and one `Instant` (32 bytes, inline in the connection's reader
//! task, no allocation); the rates are read from the broker config at each
//! call rather than copied into every connection.

use std::time::{Duration, Instant};

/// The buckets' clock for their callers: tokio's, so that tests with paused
/// time drive it.
pub fn tokio_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Tokens in a bucket of `rate` per second. Rates and bursts are passed in
/// by the owner (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    /// May go negative: a cost larger than what is left (one PUBLISH bigger
    /// than the byte burst) is taken whole, and the debt is repaid by
    /// waiting. Every cost is then paid exactly once, so the long-run rate is
    /// `rate` whatever the sizes.
    tokens: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: u64) -> TokenBucket {
        TokenBucket {
            tokens: burst(rate),
        }
    }

    /// Adds what `elapsed` earned at `rate`, up to the burst.
    pub fn refill(&mut self, rate: u64, elapsed: Duration) {
        self.tokens = (self.tokens + rate as f64 * elapsed.as_secs_f64()).min(burst(rate));
    }

    pub fn take(&mut self, cost: f64) {
        self.tokens -= cost;
    }

    /// How long until the bucket holds `level` tokens (zero if it does).
    pub fn time_until(&self, rate: u64, level: f64) -> Duration {
        let missing = level - self.tokens;
        if missing <= 0.0 || rate == 0 {
            return Duration::ZERO;
        }
        // Rounded up to the microsecond: waking a hair early would only
        // cause a second, tiny wait.
        Duration::from_micros((missing / rate as f64 * 1e6).ceil() as u64)
    }

    pub fn tokens(&self) -> f64 {
        self.tokens
    }
}

/// One second's worth, at least one token (a rate below one per second
/// still lets one through).
fn burst(rate: u64) -> f64 {
    (rate as f64).max(1.0)
}

/// The accept side of a listener: one token per accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimiter {
    /// Connections per second; 0 = unlimited.
    rate: u64,
    bucket: TokenBucket,
    last: Instant,
}

impl AcceptLimiter {
    pub fn new(rate: u32, now: Instant) -> AcceptLimiter {
        AcceptLimiter {
            rate: rate.into(),
            bucket: TokenBucket::full(rate.into()),
            last: now,
        }
    }

    /// Takes a token for one connection. Returns how long to wait before
    /// serving it (zero: at once); the token is taken either way.
    pub fn admit(&mut self, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.bucket
            .refill(self.rate, now.saturating_duration_since(self.last));
        self.last = now;
        let wait = self.bucket.time_until(self.rate, 1.0);
        self.bucket.take(1.0);
        wait
    }
}

/// A client's publish rate limits, from the broker config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishLimits {
    /// PUBLISH packets per second; 0 = unlimited.
    pub messages: u32,
    /// Bytes of PUBLISH packets (whole packets, fixed header included) per
    /// second; 0 = unlimited.
    pub bytes: u64,
}

impl PublishLimits {
    pub fn is_unlimited(&self) -> bool {
        self.messages == 0 && self.bytes == 0
    }
}

/// One connection's publish buckets, shared refill time. The reader asks it
/// after every PUBLISH whether to stop reading, and for how long: a client
/// over its rate is slowed down (its socket is not read, TCP pushes back),
/// never disconnected.
#[derive(Debug, Clone, Copy)]
pub struct PublishLimiter {
    messages: TokenBucket,
    bytes: TokenBucket,
    last: Instant,
}

impl PublishLimiter {
    /// `None` when neither limit is set: nothing to keep, nothing to check.
    pub fn new(limits: PublishLimits, now: Instant) -> Option<PublishLimiter> {
        (!limits.is_unlimited()).then(|| PublishLimiter {
            messages: TokenBucket::full(limits.messages.into()),
            bytes: TokenBucket::full(limits.bytes),
            last: now,
        })
    }

    /// Accounts for one PUBLISH of `size` bytes received at `now`. Returns
    /// how long to stop reading before the next packet: until a message
    /// token is there for the next PUBLISH and the byte debt is repaid.
    pub fn publish(&mut self, limits: PublishLimits, size: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        if limits.messages > 0 {
            self.messages.refill(limits.messages.into(), elapsed);
            self.messages.take(1.0);
        }
        if limits.bytes > 0 {
            self.bytes.refill(limits.bytes, elapsed);
            self.bytes.take(size as f64);
        }
        self.pause(limits, now)
    }

    /// How long from `now` until the next PUBLISH may be read (zero: at
    /// once): a message token for it, and no byte debt.
    pub fn pause(&self, limits: PublishLimits, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last);
        let mut wait = Duration::ZERO;
        if limits.messages > 0 {
            let rate = u64::from(limits.messages);
            let until = self.messages.time_until(rate, 1.0);
            wait = wait.max(until.saturating_sub(elapsed));
        }
        if limits.bytes > 0 {
            let until = self.bytes.time_until(limits.bytes, 0.0);
            wait = wait.max(until.saturating_sub(elapsed));
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_one_second_worth() {
        let mut b = TokenBucket::full(10);
        assert_eq!(b.tokens(), 10.0);
        b.take(10.0);
        b.refill(10, 300 * MS);
        assert!((b.tokens() - 3.0).abs() < 1e-9, "{}", b.tokens());
        b.refill(10, Duration::from_secs(60));
        assert_eq!(b.tokens(), 10.0, "capped at the burst");
    }

    #[test]
    fn time_until_is_the_missing_tokens_over_the_rate() {
        let mut b = TokenBucket::full(4);
        b.take(5.0); // one in debt
        assert_eq!(b.time_until(4, 0.0), 250 * MS);
        assert_eq!(b.time_until(4, 1.0), 500 * MS);
        b.refill(4, 250 * MS);
        assert_eq!(b.time_until(4, 0.0), Duration::ZERO);
    }

    #[test]
    fn a_rate_below_one_still_lets_one_through() {
        let mut b = TokenBucket::full(0);
        assert_eq!(b.tokens(), 1.0);
        b.take(1.0);
        assert_eq!(b.time_until(0, 1.0), Duration::ZERO, "rate 0: never waits");
    }

    #[test]
    fn accept_limiter_passes_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut l = AcceptLimiter::new(2, t0);
        assert_eq!(l.admit(t0), Duration::ZERO);
        assert_eq!(l.admit(t0), Duration::ZERO);
        // The third connection waits for the next token: half a second.
        assert_eq!(l.admit(t0), 500 * MS);
        // Its token is taken: the fourth waits one interval more.
        assert_eq!(l.admit(t0), 1000 * MS);
        // Two seconds later two tokens were earned, debt repaid: no wait.
        assert_eq!(l.admit(t0 + 2000 * MS), Duration::ZERO);
    }

    #[test]
    fn accept_limiter_without_a_rate_never_waits() {
        let t0 = Instant::now();
        let mut l = AcceptLimiter::new(0, t0);
        for _ in 0..10_000 {
            assert_eq!(l.admit(t0), Duration::ZERO);
        }
    }

    #[test]
    fn unlimited_publish_limits_keep_no_state() {
        assert!(PublishLimiter::new(PublishLimits::default(), Instant::now()).is_none());
        assert!(std::mem::size_of::<Option<PublishLimiter>>() <= 32);
    }

    #[test]
    fn message_rate_passes_the_burst_then_paces_each_publish() {
        let limits = PublishLimits {
            messages: 10,
            bytes: 0,
        };
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(limits, t0).unwrap();
        for _ in 0..9 {
            assert_eq!(l.publish(limits, 100, t0), Duration::ZERO);
        }
        // The tenth empties the bucket: the next one must wait 100 ms.
        assert_eq!(l.publish(limits, 100, t0), 100 * MS);
        // The client waited: it may send one, then wait again.
        assert_eq!(l.publish(limits, 100, t0 + 100 * MS), 100 * MS);
        assert_eq!(l.publish(limits, 100, t0 + 200 * MS), 100 * MS);
    }

    #[test]
    fn message_rate_over_a_long_run_is_exact() {
        let limits = PublishLimits {
            messages: 50,
            bytes: 0,
        };
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(limits, t0).unwrap();
        // A client that always sends as soon as it is allowed to.
        let (mut now, mut last_sent) = (t0, t0);
        for _ in 0..550 {
            last_sent = now;
            now += l.publish(limits, 10, now);
        }
        // 50 in the burst, then 500 at 50/s: the last is sent at 10 s.
        let took = last_sent - t0;
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_millis(10_010),
            "{took:?}"
        );
    }

    #[test]
    fn byte_rate_takes_a_packet_larger_than_the_burst_and_waits_for_the_debt() {
        let limits = PublishLimits {
            messages: 0,
            bytes: 1_000,
        };
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(limits, t0).unwrap();
        assert_eq!(l.publish(limits, 400, t0), Duration::ZERO);
        assert_eq!(
            l.publish(limits, 600, t0),
            Duration::ZERO,
            "exactly the burst"
        );
        // 3,000 bytes at once: taken, then 3 s to repay.
        assert_eq!(l.publish(limits, 3_000, t0), 3_000 * MS);
        assert_eq!(l.publish(limits, 500, t0 + 3_000 * MS), 500 * MS);
    }

    #[test]
    fn pause_counts_down_from_the_last_publish() {
        let limits = PublishLimits {
            messages: 10,
            bytes: 0,
        };
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(limits, t0).unwrap();
        for _ in 0..10 {
            l.publish(limits, 1, t0);
        }
        assert_eq!(l.pause(limits, t0), 100 * MS);
        assert_eq!(l.pause(limits, t0 + 40 * MS), 60 * MS);
        assert_eq!(l.pause(limits, t0 + 500 * MS), Duration::ZERO);
    }

    #[test]
    fn the_stricter_of_both_limits_decides() {
        let limits = PublishLimits {
            messages: 100,
            bytes: 1_000,
        };
        let t0 = Instant::now();
        let mut l = PublishLimiter::new(limits, t0).unwrap();
        // 1,000-byte messages: the byte rate (1/s) is the binding one.
        assert_eq!(l.publish(limits, 1_000, t0), Duration::ZERO);
        assert_eq!(l.publish(limits, 1_000, t0), 1_000 * MS);
    }
}
