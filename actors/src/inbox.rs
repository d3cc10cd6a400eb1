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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use roost_protocol::Delivery;

pub struct Inbox {
    queue: Mutex<VecDeque<Delivery>>,
    capacity: usize,
    /// A `Drain` is on its way to (or being handled by) the session.
    scheduled: AtomicBool,
    dropped: AtomicU64,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Inbox {
    /// `wake` sends the session its `Drain` message.
    pub fn new(capacity: usize, wake: Box<dyn Fn() + Send + Sync>) -> Inbox {
        Inbox {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            scheduled: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            wake,
        }
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
