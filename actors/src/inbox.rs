//! A session's delivery inbox: bounded, and woken once per batch.
//!
//! ractor mailboxes are unbounded, so deliveries do not go through the
//! session actor's mailbox one by one. Publishers push into this queue under
//! a short lock; only the push that finds the session idle sends it one
//! `Drain` message, and the session then takes everything queued at once.
//! Under load one actor message carries hundreds of deliveries.
//!
//! When the inbox is full (the session actor is stuck or far behind) the new
//! delivery is dropped and counted: the queue is bounded, as every queue on
//! the publish path is.
//!
//! Flow control: the inbox also publishes the session's *backlog* (inbox plus
//! the session's own message queue). Past a high watermark the session is
//! congested, and a publisher that just delivered to it pauses (reading no
//! more from its socket, so TCP slows the client) until the backlog is back
//! under the low watermark, or until `max_publish_delay`. A session that
//! makes no progress at all (its client does not read or acknowledge) is
//! *stalled*: publishers do not wait for it, and its bounded queue drops the
//! oldest messages, counted. One stuck subscriber therefore cannot stall
//! the publishers, while a subscriber that is merely slower than its
//! publishers is not flooded into dropping acknowledged messages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roost_protocol::{Delivery, QoS};
use tokio::sync::Notify;

/// A session that made no progress for this long is stalled: publishers
/// stop waiting for it.
const STALL_AFTER: Duration = Duration::from_millis(500);

pub struct Inbox {
    queue: Mutex<VecDeque<Delivery>>,
    capacity: usize,
    /// A `Drain` is on its way to (or being handled by) the session.
    scheduled: AtomicBool,
    dropped: AtomicU64,
    wake: Box<dyn Fn() + Send + Sync>,
    /// Deliveries in `queue` (readable without the lock).
    pending: AtomicUsize,
    /// The session's message queue length, set by the session.
    queued: AtomicUsize,
    /// Backlog above which the session is congested, and below which
    /// waiting publishers resume.
    high_watermark: usize,
    low_watermark: usize,
    /// Milliseconds since `epoch` of the session's last progress (a drain,
    /// an acknowledgement).
    progress_ms: AtomicU64,
    /// The backlog fell under the low watermark.
    relieved: Notify,
    /// Which deliveries the publisher stores in the session's durable queue
    /// before pushing them (`STORE_*`), set by the session.
    store: AtomicU8,
    /// A stored delivery did not fit: the session reads its durable queue.
    behind: AtomicBool,
}

/// Nothing is stored: a clean session.
pub const STORE_NONE: u8 = 0;
/// QoS 1 and 2 deliveries are stored: a persistent session whose client is
/// connected (QoS 0 goes straight out).
pub const STORE_QOS12: u8 = 1;
/// Every delivery is stored: a persistent session whose client is away and
/// which queues QoS 0 (`mqueue_store_qos0`).
pub const STORE_ALL: u8 = 2;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Inbox {
    /// `wake` sends the session its `Drain` message.
    /// `high_watermark` is the backlog (inbox + session queue) at which
    /// publishers start waiting; they resume under half of it.
    pub fn new(capacity: usize, high_watermark: usize, wake: Box<dyn Fn() + Send + Sync>) -> Inbox {
        Inbox {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            scheduled: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            wake,
            pending: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            high_watermark: high_watermark.max(2),
            low_watermark: high_watermark.max(2) / 2,
            progress_ms: AtomicU64::new(now_ms()),
            relieved: Notify::new(),
            store: AtomicU8::new(STORE_NONE),
            behind: AtomicBool::new(false),
        }
    }

    /// Set which deliveries are stored first (`STORE_*`).
    pub fn set_store(&self, mode: u8) {
        self.store.store(mode, Ordering::Relaxed);
    }

    /// Whether a delivery at `qos` goes to the durable queue first.
    pub fn wants_store(&self, qos: QoS) -> bool {
        match self.store.load(Ordering::Relaxed) {
            STORE_NONE => false,
            STORE_QOS12 => qos != QoS::AtMostOnce,
            _ => true,
        }
    }

    /// Queue a delivery that is already in the session's durable queue. It
    /// is never dropped: when the inbox is full the session is told to read
    /// its durable queue instead.
    pub fn push_stored(&self, d: Delivery) {
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity {
                self.behind.store(true, Ordering::Release);
            } else {
                q.push_back(d);
                self.pending.store(q.len(), Ordering::Relaxed);
            }
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            (self.wake)();
        }
    }

    /// Whether a stored delivery was not pushed since the last call.
    pub fn take_behind(&self) -> bool {
        self.behind.swap(false, Ordering::AcqRel)
    }

    fn backlog(&self) -> usize {
        self.pending.load(Ordering::Relaxed) + self.queued.load(Ordering::Relaxed)
    }

    /// Congested and not stalled: a publisher should wait for it.
    pub fn congested(&self) -> bool {
        self.backlog() >= self.high_watermark && !self.stalled()
    }

    fn stalled(&self) -> bool {
        now_ms().saturating_sub(self.progress_ms.load(Ordering::Relaxed))
            > STALL_AFTER.as_millis() as u64
    }

    /// The session reports its queue length, and whether messages moved
    /// toward its client since the last report (sent or acknowledged). An
    /// offline session only fills its queue: that is no progress, so it
    /// soon counts as stalled and publishers do not wait for it.
    pub fn report(&self, session_queue_len: usize, progressed: bool) {
        self.queued.store(session_queue_len, Ordering::Relaxed);
        if progressed {
            self.progress_ms.store(now_ms(), Ordering::Relaxed);
        }
        if self.backlog() < self.low_watermark {
            self.relieved.notify_waiters();
        }
    }

    /// Wait until the backlog is under the low watermark, the session
    /// stalls, or `limit` passes. Returns how long it waited.
    pub async fn wait_relieved(&self, limit: Duration) -> Duration {
        // Re-checked at least every STALL_AFTER: the stall clock moves.
        let done = || self.backlog() < self.low_watermark || self.stalled();
        crate::valve::wait_until(&self.relieved, STALL_AFTER, limit, done).await
    }

    /// Queue a delivery; false if it was dropped because the inbox is full.
    pub fn push(&self, d: Delivery) -> bool {
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity {
                drop(q);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            q.push_back(d);
            self.pending.store(q.len(), Ordering::Relaxed);
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            (self.wake)();
        }
        true
    }

    /// Take everything queued. The session calls this on `Drain`.
    pub fn drain_into(&self, out: &mut VecDeque<Delivery>) {
        // Reset first: a push racing with us either lands before the swap
        // below (and is taken now) or schedules a new Drain.
        self.scheduled.store(false, Ordering::Release);
        let mut q = self.queue.lock();
        std::mem::swap(&mut *q, out);
        self.pending.store(0, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
