//! The consumer's side of an [`OverflowMailbox`]: take, acknowledge,
//! rewind, and the stats snapshot.

use std::sync::atomic::Ordering;

use roost_storage::{Batch, FifoPage, StorageError};
use tracing::warn;

use super::{
    OverflowEntry, OverflowError, OverflowMailbox, OverflowMode, OverflowStats, State, Taken,
};
use crate::broker::{blocking, unix_ms};

impl OverflowMailbox {
    /// Take up to `max` entries, oldest first: from memory while it holds
    /// any, else one page from the disk (so at most `max` entries are read
    /// into memory). Expired ones are dropped and counted on the way; an
    /// empty result means the mailbox is empty. Clears the pending wake:
    /// a push after this wakes the consumer again.
    pub fn take(&self, max: usize) -> Result<Vec<OverflowEntry>, OverflowError> {
        self.take_at(max, unix_ms())
    }

    /// [`OverflowMailbox::take`] at the given wall-clock time.
    pub fn take_at(&self, max: usize, now_ms: u64) -> Result<Vec<OverflowEntry>, OverflowError> {
        self.scheduled.store(false, Ordering::Release);
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        // Loop while a whole batch expired and more is queued.
        while self.take_once(max, now_ms, &mut out)? && out.is_empty() {}
        // Expired or unreadable entries at the acknowledgement frontier
        // leave the store now.
        self.ack_inner(None)?;
        Ok(out)
    }

    /// One batch from memory or one page from disk into `out`. Returns
    /// whether any entry was taken (delivered or expired).
    fn take_once(
        &self,
        max: usize,
        now_ms: u64,
        out: &mut Vec<OverflowEntry>,
    ) -> Result<bool, OverflowError> {
        let mut st = self.state.lock();
        if !st.mem.is_empty() {
            let n = max.min(st.mem.len());
            let batch: Vec<_> = st.mem.drain(..n).collect();
            for e in batch {
                st.mem_bytes -= e.payload.len() as u64;
                st.cursor = e.seq + 1;
                self.hand_over(&mut st, e, now_ms, out);
            }
            return Ok(true);
        }
        if st.disk_len == 0 {
            return Ok(false);
        }
        let limit = max.min(usize::try_from(st.disk_len).unwrap_or(usize::MAX));
        let offset = self.store_offset(&st);
        let after = st.cursor.wrapping_sub(1).wrapping_sub(offset);
        drop(st);
        // Read without the lock: producers keep pushing (to disk, behind
        // this page) and may drop the oldest entries meanwhile.
        let page = self.read_page(after, limit)?;
        let mut st = self.state.lock();
        self.take_page(&mut st, page, offset, now_ms, out)
    }

    fn store_offset(&self, st: &State) -> u64 {
        match self.config.mode {
            OverflowMode::VolatileOffload => st.offset,
            _ => 0,
        }
    }

    fn read_page(&self, after: u64, limit: usize) -> Result<FifoPage, OverflowError> {
        let Some(storage) = &self.storage else {
            return Ok(FifoPage::default());
        };
        blocking(|| storage.queue_page(&self.name, after, limit)).map_err(|e| self.failed(e))
    }

    fn take_page(
        &self,
        st: &mut State,
        page: FifoPage,
        offset: u64,
        now_ms: u64,
        out: &mut Vec<OverflowEntry>,
    ) -> Result<bool, OverflowError> {
        // Entries below the cursor were dropped by a producer meanwhile.
        let cursor = st.cursor;
        let mut entries: Vec<_> = page
            .entries
            .into_iter()
            .map(|e| (e.seq, Some(e.item)))
            .chain(page.corrupt.into_iter().map(|s| (s, None)))
            .map(|(store_seq, item)| (store_seq, store_seq.wrapping_add(offset), item))
            .filter(|(_, seq, _)| *seq >= cursor)
            .collect();
        entries.sort_unstable_by_key(|(store_seq, ..)| *store_seq);
        let Some(&(last_store, last, _)) = entries.last() else {
            if st.disk_len > 0 && st.cursor == cursor {
                // The store has nothing where we expected entries: trust it.
                warn!(mailbox = %self.name, disk_len = st.disk_len, "overflow_disk_resync");
                st.disk_len = 0;
                st.disk_bytes = 0;
            }
            return Ok(false);
        };
        let bytes: u64 = entries
            .iter()
            .filter_map(|(_, _, item)| item.as_ref().map(|i| i.payload.len() as u64))
            .sum();
        let freed = if self.config.mode == OverflowMode::VolatileOffload {
            // Volatile: taken entries leave the disk now.
            let mut batch = Batch::new();
            batch.queue_remove_through(&self.name, last_store);
            let receipt = self.commit(batch).map_err(|e| self.failed(e))?;
            receipt.queue_removals.first().map_or(bytes, |r| r.1.bytes)
        } else {
            bytes
        };
        st.disk_len = st.disk_len.saturating_sub(entries.len() as u64);
        st.disk_bytes = st.disk_bytes.saturating_sub(freed);
        st.cursor = last + 1;
        for (_, seq, item) in entries {
            match item {
                Some(item) => {
                    let e = OverflowEntry {
                        seq,
                        enqueued_at_ms: item.enqueued_at_ms,
                        payload: item.payload,
                    };
                    self.hand_over(st, e, now_ms, out);
                }
                // Unreadable (reported and counted by the store): skipped.
                None => st.window.push_back(Taken {
                    seq,
                    len: 0,
                    skipped: true,
                    kept: None,
                }),
            }
        }
        Ok(true)
    }

    /// Register a taken entry in the window; deliver it unless expired.
    fn hand_over(
        &self,
        st: &mut State,
        e: OverflowEntry,
        now_ms: u64,
        out: &mut Vec<OverflowEntry>,
    ) {
        let len = e.payload.len() as u64;
        let expired = self.config.request_ttl.is_some_and(|ttl| {
            let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            e.enqueued_at_ms.saturating_add(ttl) <= now_ms
        });
        let kept = (!expired && self.config.mode != OverflowMode::Durable).then(|| e.clone());
        st.window.push_back(Taken {
            seq: e.seq,
            len,
            skipped: expired,
            kept,
        });
        st.window_bytes += len;
        if !expired {
            out.push(e);
        } else if !st.expired_before.remove(&e.seq) {
            self.dropped_expired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The downstream acknowledged every delivered entry up to and
    /// including `through`. In durable mode they (and expired entries
    /// among them) are removed from the store, in one commit.
    pub fn ack(&self, through: u64) -> Result<(), OverflowError> {
        self.ack_inner(Some(through))
    }

    fn ack_inner(&self, through: Option<u64>) -> Result<(), OverflowError> {
        let mut st = self.state.lock();
        let (mut n, mut acked, mut bytes, mut last) = (0, 0, 0, None);
        for t in &st.window {
            let covered = through.is_some_and(|through| t.seq <= through);
            if !covered && !t.skipped {
                break;
            }
            n += 1;
            acked += u64::from(!t.skipped);
            bytes += t.len;
            last = Some(t.seq);
        }
        let Some(last) = last else {
            return Ok(());
        };
        if self.config.mode == OverflowMode::Durable {
            let mut batch = Batch::new();
            batch.queue_remove_through(&self.name, last);
            self.commit(batch).map_err(|e| self.failed(e))?;
        }
        st.window.drain(..n);
        st.window_bytes -= bytes;
        self.note_backlog(&st);
        self.acked.fetch_add(acked, Ordering::Relaxed);
        Ok(())
    }

    /// The consumer restarted (or its link dropped): what it took and did
    /// not acknowledge is delivered again, first, in order (at least once):
    /// read back from the store in durable mode, from the entries the
    /// window kept in the others.
    pub fn rewind(&self) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(first) = st.window.front().map(|t| t.seq) else {
            return;
        };
        if self.config.mode != OverflowMode::Durable {
            let window = std::mem::take(&mut st.window);
            for e in window.into_iter().rev().filter_map(|t| t.kept) {
                st.mem_bytes += e.payload.len() as u64;
                st.mem.push_front(e);
            }
            if let Some(front) = st.mem.front() {
                st.cursor = st.cursor.min(front.seq);
            }
        } else {
            // Memory is no longer a prefix of the queue: it all counts as
            // disk-only again (it is on disk too), and is read from there.
            st.disk_len += st.window.len() as u64 + st.mem.len() as u64;
            st.disk_bytes += st.window_bytes + st.mem_bytes;
            st.mem.clear();
            st.mem_bytes = 0;
            st.cursor = first;
            let expired = st.window.iter().filter(|t| t.skipped).map(|t| t.seq);
            st.expired_before.extend(expired);
        }
        st.window.clear();
        st.window_bytes = 0;
        self.note_backlog(st);
    }

    /// The consumer is gone for good (a cluster member removed): drop
    /// everything, queued and taken, from memory and from the store.
    /// Returns how many entries went (not counted as drops).
    pub fn discard(&self) -> Result<u64, OverflowError> {
        let mut st = self.state.lock();
        let n = st.mem.len() as u64 + st.disk_len + st.window.len() as u64;
        if self.storage.is_some() {
            let mut batch = Batch::new();
            batch.queue_clear(&self.name);
            self.commit(batch).map_err(|e| self.failed(e))?;
        }
        let next = st.next_seq;
        *st = State {
            next_seq: next,
            cursor: next,
            ..State::default()
        };
        self.note_backlog(&st);
        Ok(n)
    }

    /// Queued entries (memory and disk-only), not counting the window.
    pub fn len(&self) -> u64 {
        let st = self.state.lock();
        st.mem.len() as u64 + st.disk_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot for metrics.
    pub fn stats(&self) -> OverflowStats {
        let st = self.state.lock();
        OverflowStats {
            memory_messages: st.mem.len() as u64,
            memory_bytes: st.mem_bytes,
            disk_messages: st.disk_len,
            disk_bytes: st.disk_bytes,
            unacked_messages: st.window.len() as u64,
            unacked_bytes: st.window_bytes,
            pushed: self.pushed.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_expired: self.dropped_expired.load(Ordering::Relaxed),
            dropped_store_error: self.dropped_store_error.load(Ordering::Relaxed),
        }
    }

    fn failed(&self, source: StorageError) -> OverflowError {
        OverflowError::Storage {
            name: self.name.clone(),
            source,
        }
    }
}
