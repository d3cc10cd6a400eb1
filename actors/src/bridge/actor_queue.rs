//! A bridge actor's own ractor mailbox, measured and bounded.
//!
//! ractor mailboxes are unbounded and do not tell their length. Two kinds of
//! bridge messages come with traffic, and these are the ones that could pile
//! up:
//! - wakes from the overflow mailbox: at most one is pending at a time
//!   (`OverflowMailbox::wake`);
//! - packets from the remote, cast by the link's reader task: a remote
//!   sending faster than the actor handles them (QoS 0 publishes to an
//!   ingress bridge whose local publishes wait) would grow the mailbox
//!   without bound.
//!
//! Each such message carries a [`Queued`], which counts it from the send
//! until the message is dropped, that is, once the actor handled it (or
//! when a stopped actor's mailbox is dropped). The reader task takes one
//! with [`ActorQueue::enter_packet`]: it waits while [`READ_AHEAD`] packets
//! are queued, so a fast remote is held back by TCP instead of being
//! buffered here. The other messages (timers, connection results) are one
//! per period or per connection attempt.
//!
//! `/metrics` shows the count and its peak since start
//! (`roost_bridge_actor_queued_messages`, `..._peak`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Packets from the remote that may wait in the actor's mailbox.
pub const READ_AHEAD: usize = 64;

/// The count of a bridge actor's queued messages. Held by the
/// `BridgeHandle`, so it outlives the actor's restarts.
#[derive(Debug)]
pub struct ActorQueue {
    queued: AtomicU64,
    peak: AtomicU64,
    read_ahead: Arc<Semaphore>,
}

/// One message counted in an [`ActorQueue`] until it is dropped.
#[derive(Debug)]
pub struct Queued {
    queue: Arc<ActorQueue>,
    _read_ahead: Option<OwnedSemaphorePermit>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.queue.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for ActorQueue {
    fn default() -> Self {
        ActorQueue {
            queued: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            read_ahead: Arc::new(Semaphore::new(READ_AHEAD)),
        }
    }
}

impl ActorQueue {
    /// Count one message about to be sent.
    pub fn enter(self: &Arc<Self>) -> Queued {
        self.count(None)
    }

    /// Count one packet from the remote about to be sent, after waiting
    /// while [`READ_AHEAD`] of them are queued.
    pub async fn enter_packet(self: &Arc<Self>) -> Queued {
        let permit = self.read_ahead.clone().acquire_owned().await;
        // The semaphore is never closed.
        self.count(permit.ok())
    }

    fn count(self: &Arc<Self>, permit: Option<OwnedSemaphorePermit>) -> Queued {
        let n = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
        Queued {
            queue: self.clone(),
            _read_ahead: permit,
        }
    }

    /// Messages sent and not yet handled.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// The most there ever were since the node started.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}
