//! [`OverflowMailbox`]: a bounded FIFO between many producers and one
//! consumer whose downstream may be slow or gone (issue #6: bridges; later
//! cross-node forwarding). Memory is bounded by `memory_bytes`, the whole
//! queue by `max_bytes`; past the memory bound entries go to the store
//! (`roost_storage` FIFO queue in `bridge_queues`), in order.
//!
//! # Modes
//! - [`OverflowMode::Memory`]: RAM only, never touches the store; the queue
//!   is capped by `max_bytes` (`memory_bytes` is not used).
//! - [`OverflowMode::VolatileOffload`]: disk only to cap RAM. The store's
//!   queue is cleared at open; an entry goes to disk only when it does not
//!   fit in memory, and leaves the disk when it is taken.
//! - [`OverflowMode::Durable`]: every entry is committed to the store when
//!   pushed (survives a restart and `kill -9`) and removed only when the
//!   consumer acknowledges it ([`OverflowMailbox::ack`]). Memory is a cache
//!   of the oldest not-yet-taken entries. After a reopen, or a
//!   [`OverflowMailbox::rewind`] by a restarted consumer, every
//!   unacknowledged entry is delivered again, in order.
//!
//! # Invariants (and why)
//! - **The memory segment is a prefix of the queue.** The queue (entries
//!   pushed and not yet taken) is `memory ++ disk-only`, in seq order. A push
//!   goes to memory only when nothing is on disk behind memory
//!   (`disk_len == 0`) and it fits in `memory_bytes`; otherwise it goes to
//!   the disk, behind everything there. So once anything spilled, every
//!   newer entry follows it to disk until the consumer has taken the whole
//!   disk segment: no entry can overtake an older one, and the consumer
//!   takes from memory while memory is non-empty and pages the disk only
//!   when memory is empty. Strict FIFO falls out of the layout; no merge is
//!   needed.
//! - **Seqs increase in push order.** A push holds the mailbox lock across
//!   its store commit, so the seq a producer gets and the position of its
//!   entry (memory or disk) are decided together. In durable mode the seq
//!   is the store's; in volatile mode the mailbox numbers entries itself and
//!   maps a disk run to store seqs by a constant offset (one run is on disk
//!   at a time, consecutive in both numberings).
//! - **Memory stays at or under `memory_bytes`** (payload bytes), and the
//!   queued bytes (memory + disk-only) at or under `max_bytes` after every
//!   push: past it the *oldest* queued entries are dropped (memory first,
//!   then disk in the same atomic batch as the push) and counted in
//!   `dropped_queue_full`, with a warning at most every 10 s. With a store,
//!   a drop frees at least `max_bytes / 64` (one range delete per chunk,
//!   not per push: see `excess`), so the queue may sit up to that much
//!   under the cap after a drop; every entry dropped is counted. An entry
//!   larger than `max_bytes` alone is refused and counted the same way.
//!   Entries the consumer took and has not acknowledged (its inflight
//!   window, which the consumer bounds) are not queued and never dropped.
//! - **Producers never wait for the consumer.** A push is a short lock,
//!   plus an inline store commit when it spills or in durable mode. Without
//!   `storage.sync` a commit is a memtable insert and a write(2) to the WAL:
//!   microseconds, like the publisher's own commit in `broker::store_then_
//!   push`, and what a `kill -9` leaves is in the WAL; with `storage.sync`
//!   it runs under `block_in_place`. The consumer reads disk pages without
//!   the lock (re-checking afterwards for entries a producer dropped
//!   meanwhile), so producers never wait for a disk read.
//! - **One consumer.** [`OverflowMailbox::take`], [`OverflowMailbox::ack`]
//!   and [`OverflowMailbox::rewind`] are called by one consumer at a time
//!   (the bridge actor); producers may be on any thread.
//! - **Wake-ups are coalesced** like the session inbox's: only the push
//!   that finds no wake pending calls `wake`; `take` clears it. The
//!   consumer's ractor mailbox holds at most one wake message.
//!
//! Expired entries (`request_ttl`, measured from the wall-clock push time,
//! so it keeps running across restarts) are dropped when taken and counted
//! in `dropped_expired`; in durable mode they leave the store with the next
//! acknowledgement that reaches them (at once when nothing before them is
//! unacknowledged).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use roost_storage::{Batch, FifoItem, Storage, StorageError};
use tracing::warn;

use crate::broker::{blocking, unix_ms};

/// Where a mailbox keeps what does not fit in memory (issue #6 `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowMode {
    Memory,
    VolatileOffload,
    Durable,
}

/// A mailbox's bounds, by value (from the bridge's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowConfig {
    pub mode: OverflowMode,
    /// Payload bytes kept in memory (`buffer.memory_bytes`); past it entries
    /// go to the store. Not used in `Memory` mode.
    pub memory_bytes: u64,
    /// Queued payload bytes in memory and on disk together
    /// (`buffer.max_bytes`); past it the oldest are dropped.
    pub max_bytes: u64,
    /// Entries older than this when taken are dropped (`request_ttl`).
    pub request_ttl: Option<Duration>,
}

/// One entry handed to the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowEntry {
    /// Acknowledge with [`OverflowMailbox::ack`] up to this.
    pub seq: u64,
    /// Wall clock (ms since the Unix epoch) of the push.
    pub enqueued_at_ms: u64,
    pub payload: Bytes,
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Queued { seq: u64 },
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than `max_bytes` on its own (`dropped_queue_full`).
    QueueFull,
    /// The store commit failed (`dropped_store_error`).
    StoreError,
}

/// A snapshot of a mailbox's gauges and counters, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverflowStats {
    /// Queued entries held in memory, and their payload bytes.
    pub memory_messages: u64,
    pub memory_bytes: u64,
    /// Queued entries only on disk (not in memory), and their bytes.
    pub disk_messages: u64,
    pub disk_bytes: u64,
    /// Taken and not yet acknowledged (the consumer's window).
    pub unacked_messages: u64,
    pub unacked_bytes: u64,
    pub pushed: u64,
    pub acked: u64,
    pub dropped_queue_full: u64,
    pub dropped_expired: u64,
    pub dropped_store_error: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OverflowError {
    #[error("overflow mailbox {name}: mode {mode:?} needs a store")]
    NoStore { name: String, mode: OverflowMode },
    #[error("overflow mailbox {name}: storage failed")]
    Storage {
        name: String,
        #[source]
        source: StorageError,
    },
}

/// A mailbox with a store drops at least `max_bytes / this` at a time.
const DROP_CHUNK_DIVISOR: u64 = 64;

/// How often a dropping mailbox may log.
const LOG_EVERY_MS: u64 = 10_000;

/// One taken, unacknowledged entry.
#[derive(Debug, Clone)]
struct Taken {
    seq: u64,
    len: u64,
    /// Not delivered (expired, or unreadable on disk): acknowledged
    /// implicitly once everything before it is.
    skipped: bool,
    /// The entry itself, without a durable store to read it back from: a
    /// rewind queues it again (a refcount of the payload, no copy).
    kept: Option<OverflowEntry>,
}

#[derive(Debug, Default)]
struct State {
    /// The oldest queued entries (a prefix of the queue).
    mem: VecDeque<OverflowEntry>,
    mem_bytes: u64,
    /// Queued entries behind `mem`, only on disk.
    disk_len: u64,
    disk_bytes: u64,
    /// The seq of the next push.
    next_seq: u64,
    /// Every queued entry has a seq of at least this; every taken one less.
    cursor: u64,
    /// Volatile mode: mailbox seq - store seq of the entries on disk.
    offset: u64,
    /// Taken, not acknowledged, in seq order.
    window: VecDeque<Taken>,
    window_bytes: u64,
    /// Seqs already counted as expired before a rewind.
    expired_before: BTreeSet<u64>,
}

/// See the module doc. Share it in an `Arc`.
pub struct OverflowMailbox {
    name: String,
    config: OverflowConfig,
    storage: Option<Storage>,
    state: Mutex<State>,
    scheduled: AtomicBool,
    wake: RwLock<Box<dyn Fn() + Send + Sync>>,
    pushed: AtomicU64,
    acked: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_expired: AtomicU64,
    dropped_store_error: AtomicU64,
    last_log_ms: AtomicU64,
    /// Queued plus unacknowledged bytes, as of the last push or
    /// acknowledgement (readable without the lock).
    backlog: AtomicU64,
}

impl std::fmt::Debug for OverflowMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverflowMailbox")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OverflowMailbox {
    /// Open the mailbox `name` (also the store queue's name: unique per
    /// node). Volatile mode clears what a previous run left on disk;
    /// durable mode picks it up: every stored entry is queued again. Blocks
    /// on the store (call it from the consumer's `pre_start`).
    pub fn open(
        name: &str,
        config: OverflowConfig,
        storage: Option<Storage>,
        wake: Box<dyn Fn() + Send + Sync>,
    ) -> Result<OverflowMailbox, OverflowError> {
        let storage = match config.mode {
            OverflowMode::Memory => None,
            mode => Some(storage.ok_or_else(|| OverflowError::NoStore {
                name: name.to_string(),
                mode,
            })?),
        };
        let mut state = State {
            next_seq: 1,
            cursor: 1,
            ..State::default()
        };
        if let Some(storage) = &storage {
            let failed = |source| OverflowError::Storage {
                name: name.to_string(),
                source,
            };
            if config.mode == OverflowMode::VolatileOffload {
                let mut batch = Batch::new();
                batch.queue_clear(name);
                storage.commit(batch).map_err(failed)?;
            } else {
                let stats = storage.queue_stats(name).map_err(failed)?;
                state.next_seq = stats.next_seq;
                state.cursor = stats.first_seq;
                state.disk_len = stats.len;
                state.disk_bytes = stats.bytes;
            }
        }
        Ok(OverflowMailbox {
            name: name.to_string(),
            config,
            storage,
            state: Mutex::new(state),
            scheduled: AtomicBool::new(false),
            wake: RwLock::new(wake),
            pushed: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_expired: AtomicU64::new(0),
            dropped_store_error: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &OverflowConfig {
        &self.config
    }

    /// Replace the wake hook (a restarted consumer has a new address) and
    /// wake it if anything is queued.
    pub fn set_wake(&self, wake: Box<dyn Fn() + Send + Sync>) {
        *self.wake.write() = wake;
        self.scheduled.store(false, Ordering::Release);
        if !self.is_empty() {
            self.wake();
        }
    }

    /// Wake the consumer again if anything is queued, even if a wake is
    /// pending (a consumer that left a wake unanswered, e.g. a paused
    /// bridge, asks for a new one).
    pub fn rewake(&self) {
        self.scheduled.store(false, Ordering::Release);
        if !self.is_empty() {
            self.wake();
        }
    }

    fn wake(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            (self.wake.read())();
        }
    }

    /// Queue `payload` (stamped with the wall clock). Never waits for the
    /// consumer.
    pub fn push(&self, payload: Bytes) -> PushOutcome {
        self.push_at(payload, unix_ms())
    }

    /// [`OverflowMailbox::push`] with the push time given.
    pub fn push_at(&self, payload: Bytes, now_ms: u64) -> PushOutcome {
        let len = payload.len() as u64;
        if len > self.config.max_bytes {
            self.count_queue_full(1);
            return PushOutcome::Dropped(DropReason::QueueFull);
        }
        let entry = OverflowEntry {
            seq: 0,
            enqueued_at_ms: now_ms,
            payload,
        };
        let outcome = {
            let mut st = self.state.lock();
            let outcome = match self.config.mode {
                OverflowMode::Memory => Ok(self.push_memory(&mut st, entry)),
                OverflowMode::VolatileOffload => self.push_volatile(&mut st, entry),
                OverflowMode::Durable => self.push_durable(&mut st, entry),
            };
            self.note_backlog(&st);
            outcome
        };
        match outcome {
            Ok(seq) => {
                self.pushed.fetch_add(1, Ordering::Relaxed);
                self.wake();
                PushOutcome::Queued { seq }
            }
            Err(e) => {
                self.dropped_store_error.fetch_add(1, Ordering::Relaxed);
                if self.may_log() {
                    warn!(mailbox = %self.name, error = %e, "overflow_store_failed");
                }
                PushOutcome::Dropped(DropReason::StoreError)
            }
        }
    }

    fn note_backlog(&self, st: &State) {
        let bytes = st.mem_bytes + st.disk_bytes + st.window_bytes;
        self.backlog.store(bytes, Ordering::Relaxed);
    }

    /// Bytes queued and taken-but-unacknowledged, as of the last push,
    /// acknowledgement or rewind. Lock-free: for flow control.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Bytes to free so that `len` more fits under `max_bytes`. With a
    /// store, at least `max_bytes / DROP_CHUNK_DIVISOR` once anything must
    /// go: each drop is a range delete in the store, and a queue that stays
    /// at its cap would otherwise delete one entry per push (thousands of
    /// range tombstones, which every later read of the queue must skip).
    /// Every dropped entry is still counted.
    fn excess(&self, st: &State, len: u64) -> u64 {
        let need = (st.mem_bytes + st.disk_bytes + len).saturating_sub(self.config.max_bytes);
        if need == 0 || self.storage.is_none() {
            return need;
        }
        need.max(self.config.max_bytes / DROP_CHUNK_DIVISOR)
    }

    /// Drop the oldest memory entries until `need` bytes are freed; returns
    /// what is left to free.
    fn drop_from_memory(&self, st: &mut State, mut need: u64) -> u64 {
        let mut dropped = 0;
        while need > 0 {
            let Some(old) = st.mem.pop_front() else { break };
            let len = old.payload.len() as u64;
            st.mem_bytes -= len;
            st.cursor = old.seq + 1;
            need = need.saturating_sub(len);
            dropped += 1;
        }
        self.count_queue_full(dropped);
        need
    }

    fn push_memory(&self, st: &mut State, mut entry: OverflowEntry) -> u64 {
        let need = self.excess(st, entry.payload.len() as u64);
        self.drop_from_memory(st, need);
        entry.seq = st.next_seq;
        st.next_seq += 1;
        st.mem_bytes += entry.payload.len() as u64;
        st.mem.push_back(entry);
        entry_seq(st)
    }

    fn push_volatile(&self, st: &mut State, mut entry: OverflowEntry) -> Result<u64, StorageError> {
        let len = entry.payload.len() as u64;
        let need = self.drop_from_memory(st, self.excess(st, len));
        let to_memory = st.disk_len == 0 && st.mem_bytes + len <= self.config.memory_bytes;
        entry.seq = st.next_seq;
        if to_memory {
            // Nothing on disk: `need` was all freed from memory.
            st.next_seq += 1;
            st.mem_bytes += len;
            st.mem.push_back(entry);
            return Ok(entry_seq(st));
        }
        let mut batch = Batch::new();
        if need > 0 && st.disk_len > 0 {
            batch.queue_drop_oldest(&self.name, 0, need);
        }
        batch.queue_push(&self.name, &[item(&entry)]);
        let receipt = self.commit(batch)?;
        if let Some((_, removal)) = receipt.queue_removals.first() {
            // The disk is consecutive from `cursor` (memory is empty here).
            st.disk_len -= removal.count;
            st.disk_bytes = st.disk_bytes.saturating_sub(removal.bytes);
            st.cursor += removal.count;
            self.count_queue_full(removal.count);
        }
        if let Some((_, seqs)) = receipt.queue_pushes.first() {
            st.offset = entry.seq.wrapping_sub(seqs.start);
        }
        st.next_seq += 1;
        st.disk_len += 1;
        st.disk_bytes += len;
        Ok(entry.seq)
    }

    fn push_durable(&self, st: &mut State, mut entry: OverflowEntry) -> Result<u64, StorageError> {
        let len = entry.payload.len() as u64;
        let need = self.excess(st, len);
        let mut batch = Batch::new();
        if need > 0 {
            batch.queue_drop_oldest(&self.name, st.cursor, need);
        }
        batch.queue_push(&self.name, &[item(&entry)]);
        let receipt = self.commit(batch)?;
        if let Some((_, removal)) = receipt.queue_removals.first() {
            // The oldest queued entries: memory's (also on disk), then the
            // disk-only ones.
            let through = removal.last_seq.unwrap_or(0);
            let (mut mem_count, mut mem_freed) = (0, 0);
            while let Some(old) = st.mem.pop_front() {
                if old.seq > through {
                    st.mem.push_front(old);
                    break;
                }
                mem_count += 1;
                mem_freed += old.payload.len() as u64;
            }
            st.mem_bytes -= mem_freed;
            st.disk_len = st.disk_len.saturating_sub(removal.count - mem_count);
            st.disk_bytes = st
                .disk_bytes
                .saturating_sub(removal.bytes.saturating_sub(mem_freed));
            st.cursor = st.cursor.max(through + 1);
            self.count_queue_full(removal.count);
        }
        entry.seq = receipt
            .queue_pushes
            .first()
            .map_or(st.next_seq, |(_, seqs)| seqs.start);
        st.next_seq = entry.seq + 1;
        if st.disk_len == 0 && st.mem_bytes + len <= self.config.memory_bytes {
            st.mem_bytes += len;
            st.mem.push_back(entry);
            Ok(entry_seq(st))
        } else {
            st.disk_len += 1;
            st.disk_bytes += len;
            Ok(st.next_seq - 1)
        }
    }

    fn commit(&self, batch: Batch) -> Result<roost_storage::CommitReceipt, StorageError> {
        let Some(storage) = &self.storage else {
            return Ok(Default::default());
        };
        if storage.options().sync {
            blocking(|| storage.commit(batch))
        } else {
            storage.commit(batch)
        }
    }

    fn count_queue_full(&self, n: u64) {
        if n == 0 {
            return;
        }
        let total = self.dropped_queue_full.fetch_add(n, Ordering::Relaxed) + n;
        if self.may_log() {
            warn!(
                mailbox = %self.name,
                dropped = n,
                dropped_queue_full = total,
                max_bytes = self.config.max_bytes,
                "overflow_dropped_queue_full"
            );
        }
    }

    /// At most one warning per mailbox every `LOG_EVERY_MS`.
    fn may_log(&self) -> bool {
        let now = unix_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= LOG_EVERY_MS
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

fn entry_seq(st: &State) -> u64 {
    st.mem.back().map_or(0, |e| e.seq)
}

fn item(entry: &OverflowEntry) -> FifoItem {
    FifoItem {
        enqueued_at_ms: entry.enqueued_at_ms,
        payload: entry.payload.clone(),
    }
}

mod consumer;

#[cfg(test)]
mod tests;
