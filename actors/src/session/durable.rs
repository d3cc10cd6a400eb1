//! A persistent session's durable queue, as its session actor sees it.
//!
//! The queue itself is in the store (`roost-storage`): publishers append to
//! it before acknowledging (`broker::publish`), so the store is the truth
//! and the session's memory is a bounded window onto it:
//! - a stored delivery pushed by a publisher carries its seq. While the
//!   client is online the session keeps it (up to `PENDING_MAX`) and hands
//!   it over in seq order; offline, it keeps nothing, since the message is
//!   on disk;
//! - whenever the next seq is not in memory (a publisher's push is still
//!   on its way, the inbox was full, the session was offline or just
//!   restored) the session pages the queue in from the store, in order, at
//!   most `MEMORY_WINDOW` messages in memory at a time;
//! - what happens to a stored message after that (sent, released, done) is
//!   the [`StoreOp`] journal of `SessionState`, written here before the
//!   packets it implies are sent.
//!
//! Seqs of one queue are consecutive and only the session removes them
//! (once handed over), so "everything from `next_seq` on" is exactly what
//! is on disk and not yet in memory, whatever order pushes arrive in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use roost_protocol::session::{SessionState, StoreOp};
use roost_protocol::{ClientId, Delivery};
use roost_storage::{Batch, InflightStage, InflightState, SessionRecord, Storage, StorageError};

use crate::broker::{blocking, unix_ms};

/// Most stored messages handed over to `SessionState`'s queue at a time.
pub(super) const MEMORY_WINDOW: usize = 512;
/// Most pushed deliveries kept while waiting for an earlier seq.
const PENDING_MAX: usize = 1024;

/// A message read back from the store.
pub(super) enum Loaded {
    /// Not sent yet (or sent at QoS 0 and lost with the node).
    New(Delivery),
    /// It was inflight: resend with DUP and this id, or its PUBREL.
    Inflight {
        packet_id: u16,
        delivery: Delivery,
        released: bool,
    },
}

pub(super) struct DurableQueue {
    storage: Storage,
    client_id: ClientId,
    /// The first seq not handed over to `SessionState` yet.
    next_seq: u64,
    /// Pushed deliveries with seq >= `next_seq`, not handed over yet.
    pending: BTreeMap<u64, Delivery>,
    /// Messages from `next_seq` on may be on disk only.
    behind: bool,
    ops: Vec<StoreOp>,
}

impl DurableQueue {
    /// `restored`: the queue may hold messages (a session read back from the
    /// store); a new session's queue is empty.
    pub(super) fn new(storage: Storage, client_id: ClientId, restored: bool) -> DurableQueue {
        DurableQueue {
            storage,
            client_id,
            next_seq: 1,
            pending: BTreeMap::new(),
            behind: restored,
            ops: Vec::new(),
        }
    }

    /// A stored delivery arrived through the inbox.
    pub(super) fn offer(&mut self, d: Delivery, online: bool) {
        let Some(seq) = d.stored else { return };
        if seq < self.next_seq {
            return; // already read from the store
        }
        if online && self.pending.len() < PENDING_MAX {
            self.pending.insert(seq, d);
        } else {
            self.behind = true;
        }
    }

    /// A stored delivery did not fit in the inbox: it is on disk only.
    pub(super) fn mark_behind(&mut self) {
        self.behind = true;
    }

    /// What waits in memory beyond the session's own queue, for flow
    /// control. What is on disk only does not count: it costs no memory,
    /// and the queue's bound (`max_mqueue_len`) refuses what is beyond.
    pub(super) fn backlog(&self) -> usize {
        self.pending.len()
    }

    /// Up to `room` messages from `next_seq` on, in seq order: from memory
    /// when the next one is there, else a page from the store.
    pub(super) fn load(&mut self, room: usize, out: &mut Vec<Loaded>) -> Result<(), StorageError> {
        let mut n = 0;
        while n < room {
            if let Some(d) = self.pending.remove(&self.next_seq) {
                self.next_seq += 1;
                out.push(Loaded::New(d));
                n += 1;
                continue;
            }
            if !self.behind && self.pending.is_empty() {
                break;
            }
            let want = room - n;
            let page = self
                .storage
                .page(&self.client_id, self.next_seq - 1, want)?;
            if !page.corrupt.is_empty() {
                // Reported and counted by the store; drop them for good.
                let mut b = Batch::new();
                for &seq in &page.corrupt {
                    b.remove(&self.client_id, seq);
                }
                self.storage.commit(b)?;
            }
            let Some(last) = page.last_seq() else {
                // Nothing on disk from `next_seq` on.
                self.behind = false;
                match self.pending.keys().next() {
                    // Cannot happen (a pushed seq is on disk until the
                    // session removes it); never stall on it.
                    Some(&first) => {
                        self.next_seq = first;
                        continue;
                    }
                    None => break,
                }
            };
            let (now, now_ms) = (Instant::now(), unix_ms());
            let got = page.entries.len() + page.corrupt.len();
            for e in page.entries {
                self.pending.remove(&e.seq);
                let q = e.message;
                let message = q.message.into_message(now, now_ms).with_id(q.id.into());
                let delivery = Delivery {
                    message: Arc::new(message),
                    opts: q.delivery.into(),
                    stored: Some(e.seq),
                };
                out.push(match e.inflight {
                    None => Loaded::New(delivery),
                    Some(InflightState { packet_id, stage }) => Loaded::Inflight {
                        packet_id,
                        delivery,
                        released: stage == InflightStage::Released,
                    },
                });
                n += 1;
            }
            self.next_seq = last + 1;
            self.pending = self.pending.split_off(&self.next_seq);
            if got < want {
                self.behind = false;
            }
        }
        Ok(())
    }

    /// Write what `session` journaled since the last call (one batch).
    pub(super) fn write_journal(&mut self, session: &mut SessionState) -> Result<(), StorageError> {
        session.take_journal(&mut self.ops);
        if self.ops.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        for op in self.ops.drain(..) {
            match op {
                StoreOp::Sent { seq, packet_id } => b.set_inflight(
                    &self.client_id,
                    seq,
                    InflightState {
                        packet_id,
                        stage: InflightStage::Published,
                    },
                ),
                StoreOp::Released { seq, packet_id } => b.set_inflight(
                    &self.client_id,
                    seq,
                    InflightState {
                        packet_id,
                        stage: InflightStage::Released,
                    },
                ),
                StoreOp::Done(seq) => b.remove(&self.client_id, seq),
            };
        }
        self.commit(b)
    }

    /// Store the session record (replacing the previous one).
    pub(super) fn put_record(&self, record: &SessionRecord) -> Result<(), StorageError> {
        let mut b = Batch::new();
        b.put_session(&self.client_id, record);
        self.commit(b)
    }

    /// Start a new session: whatever was stored under this client id
    /// (record and queue) is replaced, in one write.
    pub(super) fn put_new(&self, record: &SessionRecord) -> Result<(), StorageError> {
        let mut b = Batch::new();
        b.delete_session(&self.client_id)
            .put_session(&self.client_id, record);
        self.commit(b)
    }

    /// Append `messages` to the end of the queue (at most `max_len` in the
    /// queue; the rest is refused). They are on disk only: the next `load`
    /// pages them in. How many were queued.
    pub(super) fn append(
        &mut self,
        messages: &[roost_storage::QueuedMessage],
        max_len: u64,
    ) -> Result<usize, StorageError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let mut b = Batch::new();
        b.append_bounded(&self.client_id, messages, max_len);
        let receipt = blocking(|| self.storage.commit(b))?;
        self.behind = true;
        Ok(match receipt.appends.first() {
            Some((_, roost_storage::AppendOutcome::Queued(seqs))) => seqs.clone().count(),
            _ => 0,
        })
    }

    /// The session ended: its record and queue go.
    pub(super) fn delete(&self) -> Result<(), StorageError> {
        let mut b = Batch::new();
        b.delete_session(&self.client_id);
        self.commit(b)
    }

    fn commit(&self, b: Batch) -> Result<(), StorageError> {
        if self.storage.options().sync {
            blocking(|| self.storage.commit(b)).map(drop)
        } else {
            self.storage.commit(b).map(drop)
        }
    }
}

/// Whether a stored session's expiry passed (`now_ms`: wall clock). A
/// session stored while its client was connected counts as disconnected
/// at `now_ms` (the node stopped with it).
pub fn record_expired(record: &SessionRecord, now_ms: u64) -> bool {
    match (record.expiry_interval_secs, record.disconnected_at_ms) {
        (u32::MAX, _) => false,
        (0, _) => true,
        (secs, Some(at)) => at.saturating_add(u64::from(secs) * 1000) <= now_ms,
        (_, None) => false,
    }
}

/// Milliseconds left before a stored session expires, counted from
/// `now_ms`; `None` when it never expires.
pub fn record_expiry_left_ms(record: &SessionRecord, now_ms: u64) -> Option<u64> {
    let secs = record.expiry_interval_secs;
    if secs == u32::MAX {
        return None;
    }
    let at = record.disconnected_at_ms.unwrap_or(now_ms);
    Some(
        at.saturating_add(u64::from(secs) * 1000)
            .saturating_sub(now_ms),
    )
}
