//! Named FIFO queues in the `bridge_queues` column family: the disk side of
//! the overflow mailboxes (bridges, later cross-node forwarding).
//!
//! A queue is a name, its entries ([`FifoItem`]: opaque bytes and when they
//! were queued) under consecutive seqs, and a meta record (`FifoMeta`:
//! `next_seq`, `first_seq`, `len`, `bytes`) written in the same atomic batch
//! as every change to the queue, so after a crash the meta and the entries
//! agree. Seqs are assigned at commit under the commit lock, start at 1 and
//! are never reused while the queue exists ([`Batch::queue_clear`] deletes
//! it, meta included, and starts it over at 1).
//!
//! Removal is by seq range: acknowledged entries
//! ([`Batch::queue_remove_through`]), a range in the middle
//! ([`Batch::queue_remove`], for a mailbox that drops queued entries while
//! earlier ones still wait for an acknowledgement), or "the oldest entries
//! from this seq on until this many bytes are freed"
//! ([`Batch::queue_drop_oldest`], for a byte cap). A removal reads the keys
//! it removes (their payload lengths keep `bytes` exact) and deletes them:
//! one by one for a short run, with one range delete for a long one (see
//! [`POINT_DELETES_MAX`] for why). What each removal did is in the
//! [`CommitReceipt`].
//!
//! Operations of one batch see the earlier ones of the same batch: a
//! `FifoPlan` keeps each queue's meta, the entries the batch pushed and the
//! ranges it deleted on top of the engine's view.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Range, RangeInclusive};

use crate::batch::{Batch, CommitReceipt};
use crate::engine::Op;
use crate::error::{RecordError, Result, StorageError};
use crate::keys::{self, ColumnFamily};
use crate::record::{FifoItem, FifoMeta};
use crate::storage::{Registry, Storage};

const CF: ColumnFamily = ColumnFamily::BridgeQueues;

/// One entry of a FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoEntry {
    pub seq: u64,
    pub item: FifoItem,
}

/// A page of a FIFO queue, in seq order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FifoPage {
    pub entries: Vec<FifoEntry>,
    /// Seqs in this page whose entry could not be decoded (reported and
    /// counted). They stay in the queue until removed.
    pub corrupt: Vec<u64>,
}

impl FifoPage {
    /// The last seq this page covered: continue with
    /// `queue_page(name, last, n)`. `None` when the page is empty.
    pub fn last_seq(&self) -> Option<u64> {
        let entry = self.entries.last().map(|e| e.seq);
        entry.max(self.corrupt.last().copied())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.corrupt.is_empty()
    }
}

/// The state of a FIFO queue ([`Storage::queue_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FifoStats {
    /// Entries in the queue.
    pub len: u64,
    /// Sum of their payload lengths.
    pub bytes: u64,
    /// The seq of the oldest entry; `next_seq` when the queue is empty.
    pub first_seq: u64,
    /// The seq the next pushed entry gets.
    pub next_seq: u64,
}

impl From<FifoMeta> for FifoStats {
    fn from(m: FifoMeta) -> FifoStats {
        FifoStats {
            len: m.len,
            bytes: m.bytes,
            first_seq: m.first_seq,
            next_seq: m.next_seq,
        }
    }
}

/// What one removal of a batch removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FifoRemoval {
    /// Entries removed (corrupt ones included).
    pub count: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// The highest seq removed; `None` when nothing was.
    pub last_seq: Option<u64>,
}

/// A FIFO operation of a [`Batch`]. Values are encoded when added.
#[derive(Debug)]
pub(crate) enum FifoOp {
    /// Encoded items with their payload lengths.
    Push(String, Vec<(Vec<u8>, u64)>),
    Remove(String, RangeInclusive<u64>),
    /// From this seq on, until at least this many bytes are freed.
    DropOldest(String, u64, u64),
    Clear(String),
}

impl FifoOp {
    pub(crate) fn name(&self) -> &str {
        match self {
            FifoOp::Push(name, _)
            | FifoOp::Remove(name, _)
            | FifoOp::DropOldest(name, ..)
            | FifoOp::Clear(name) => name,
        }
    }
}

/// One queue as a commit in progress sees it.
struct Slot {
    prefix: Vec<u8>,
    meta: FifoMeta,
    dirty: bool,
    /// Cleared by this batch: the engine's entries are gone.
    cleared: bool,
    /// Entries pushed by this batch: seq -> payload length.
    pushed: BTreeMap<u64, u64>,
    /// Ranges deleted by this batch (hide the engine's entries).
    deleted: Vec<RangeInclusive<u64>>,
}

/// The FIFO part of a commit's plan (see `batch.rs`).
#[derive(Default)]
pub(crate) struct FifoPlan {
    slots: HashMap<String, Slot>,
    ops: Vec<Op>,
    pushes: Vec<(String, Range<u64>)>,
    removals: Vec<(String, FifoRemoval)>,
}

impl FifoPlan {
    pub(crate) fn add(&mut self, storage: &Storage, registry: &Registry, op: FifoOp) -> Result<()> {
        let name = op.name().to_string();
        if !self.slots.contains_key(&name) {
            let prefix = prefix(&name)?;
            let meta = match registry.fifos.get(&name) {
                Some(meta) => *meta,
                None => storage.load_fifo_meta(&prefix)?,
            };
            let slot = Slot {
                prefix,
                meta,
                dirty: false,
                cleared: false,
                pushed: BTreeMap::new(),
                deleted: Vec::new(),
            };
            self.slots.insert(name.clone(), slot);
        }
        let Some(slot) = self.slots.get_mut(&name) else {
            return Ok(());
        };
        match op {
            FifoOp::Push(_, values) => {
                let range = push(slot, values, &mut self.ops);
                self.pushes.push((name, range));
            }
            FifoOp::Remove(_, range) => {
                let removal = remove(storage, slot, range, &mut self.ops)?;
                self.removals.push((name, removal));
            }
            FifoOp::DropOldest(_, from, min_bytes) => {
                let from = from.max(slot.meta.first_seq);
                let (mut freed, mut last) = (0u64, None);
                if min_bytes > 0 {
                    present(storage, slot, from, &mut |seq, len| {
                        freed += len;
                        last = Some(seq);
                        freed < min_bytes
                    })?;
                }
                let removal = match last {
                    Some(last) => remove(storage, slot, from..=last, &mut self.ops)?,
                    None => FifoRemoval::default(),
                };
                self.removals.push((name, removal));
            }
            FifoOp::Clear(_) => {
                let end = keys::queue_end(&slot.prefix);
                self.ops.push(Op::DeleteRange(CF, slot.prefix.clone(), end));
                slot.meta = FifoMeta::EMPTY;
                slot.dirty = true;
                slot.cleared = true;
                slot.pushed.clear();
                slot.deleted.clear();
            }
        }
        Ok(())
    }

    /// Append the engine operations (metas last) to `ops` and the outcomes
    /// to `receipt`; returns the metas to cache in the registry.
    pub(crate) fn finish(
        self,
        ops: &mut Vec<Op>,
        receipt: &mut CommitReceipt,
    ) -> Result<Vec<(String, FifoMeta)>> {
        ops.extend(self.ops);
        let mut metas = Vec::with_capacity(self.slots.len());
        for (name, slot) in self.slots {
            // A cleared queue left empty has no meta record at all.
            let gone = slot.cleared && slot.meta == FifoMeta::EMPTY;
            if slot.dirty && !gone {
                let value = crate::record::encode("fifo meta", &slot.meta)?;
                ops.push(Op::Put(CF, slot.prefix, value));
            }
            metas.push((name, slot.meta));
        }
        receipt.queue_pushes = self.pushes;
        receipt.queue_removals = self.removals;
        Ok(metas)
    }
}

fn prefix(name: &str) -> Result<Vec<u8>> {
    keys::fifo_prefix(name).ok_or(StorageError::QueueName { len: name.len() })
}

fn push(slot: &mut Slot, values: Vec<(Vec<u8>, u64)>, ops: &mut Vec<Op>) -> Range<u64> {
    let first = slot.meta.next_seq;
    for (value, len) in values {
        let seq = slot.meta.next_seq;
        ops.push(Op::Put(CF, keys::fifo_key(&slot.prefix, seq), value));
        slot.pushed.insert(seq, len);
        slot.meta.next_seq += 1;
        slot.meta.len += 1;
        slot.meta.bytes = slot.meta.bytes.saturating_add(len);
        slot.dirty = true;
    }
    first..slot.meta.next_seq
}

/// A removal of at most this many entries deletes them one by one; a
/// larger one writes one range delete.
///
/// Range tombstones are cheap to write and costly to read past: every
/// iterator over the column family fragments all those still in the
/// memtable. A bridge replaying a backlog removes a run of 32 acknowledged
/// entries at a time and writes nothing else, so the memtable never flushes,
/// and with one range delete per run a replay of 778k entries slowed from
/// thousands to under 600 entries/s. The point tombstones of acknowledged
/// runs sit below the queue's first live seq, where no read of the queue
/// starts, so they cost a read nothing. Drops at the byte cap free
/// `max_bytes / 64` at a time: those stay range deletes, a few per cap's
/// worth of traffic.
#[cfg(not(test))]
pub(crate) const POINT_DELETES_MAX: usize = 256;
/// Small in this crate's tests, so their short queues take both ways.
#[cfg(test)]
pub(crate) const POINT_DELETES_MAX: usize = 3;

/// Remove every entry in `range` (point deletes for a short run, one range
/// delete for a long one: [`POINT_DELETES_MAX`]), keeping the meta exact.
fn remove(
    storage: &Storage,
    slot: &mut Slot,
    range: RangeInclusive<u64>,
    ops: &mut Vec<Op>,
) -> Result<FifoRemoval> {
    let (from, through) = (range.start().max(&slot.meta.first_seq), *range.end());
    let from = *from;
    let mut removal = FifoRemoval::default();
    if slot.meta.len == 0 || from > through {
        return Ok(removal);
    }
    let mut seqs = Vec::new();
    present(storage, slot, from, &mut |seq, len| {
        if seq > through {
            return false;
        }
        removal.count += 1;
        removal.bytes += len;
        removal.last_seq = Some(seq);
        if seqs.len() <= POINT_DELETES_MAX {
            seqs.push(seq);
        }
        true
    })?;
    if removal.count == 0 {
        return Ok(removal);
    }
    if seqs.len() <= POINT_DELETES_MAX {
        for seq in seqs {
            ops.push(Op::Delete(CF, keys::fifo_key(&slot.prefix, seq)));
        }
    } else {
        let end = match through.checked_add(1) {
            Some(next) => keys::fifo_key(&slot.prefix, next),
            None => keys::queue_end(&slot.prefix),
        };
        ops.push(Op::DeleteRange(CF, keys::fifo_key(&slot.prefix, from), end));
    }
    slot.deleted.push(from..=through);
    slot.pushed.retain(|seq, _| !(from..=through).contains(seq));
    slot.meta.len = slot.meta.len.saturating_sub(removal.count);
    slot.meta.bytes = slot.meta.bytes.saturating_sub(removal.bytes);
    slot.dirty = true;
    if slot.meta.len == 0 {
        slot.meta.first_seq = slot.meta.next_seq;
    } else if from <= slot.meta.first_seq {
        let mut first = None;
        present(storage, slot, through.saturating_add(1), &mut |seq, _| {
            first = Some(seq);
            false
        })?;
        slot.meta.first_seq = first.unwrap_or(slot.meta.next_seq);
    }
    Ok(removal)
}

/// Visit the entries of the queue with a seq of at least `from`, as this
/// batch leaves them so far, in seq order: `(seq, payload length)`, until
/// `visit` returns false. Entries pushed by this batch have seqs above
/// every stored one, so they come last.
fn present(
    storage: &Storage,
    slot: &Slot,
    from: u64,
    visit: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<()> {
    let mut more = true;
    if !slot.cleared {
        let lower = keys::fifo_key(&slot.prefix, from);
        let upper = keys::queue_end(&slot.prefix);
        let mut failed = None;
        storage
            .engine()
            .scan(CF, &lower, Some(&upper), &mut |key, value| {
                let seq = match keys::parse_fifo_key(&slot.prefix, key) {
                    Ok(Some(seq)) => seq,
                    Ok(None) => return true,
                    Err(why) => {
                        storage.report_corrupt(CF, key, &RecordError::BadKey(why));
                        return true;
                    }
                };
                if slot.deleted.iter().any(|r| r.contains(&seq)) {
                    return true;
                }
                match storage.decode_or_report::<FifoItem>(CF, key, value) {
                    Ok(item) => {
                        let len = item.map_or(0, |i| i.payload.len() as u64);
                        more = visit(seq, len);
                        more
                    }
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    if more {
        for (&seq, &len) in slot.pushed.range(from..) {
            if !visit(seq, len) {
                break;
            }
        }
    }
    Ok(())
}

impl Storage {
    /// Up to `limit` entries of a FIFO queue with a seq above `after_seq`
    /// (0: from the start), in seq order. Memory is bounded by `limit`
    /// whatever the queue's length: page a long queue with successive calls
    /// (`after_seq` = the previous page's [`FifoPage::last_seq`]).
    pub fn queue_page(&self, name: &str, after_seq: u64, limit: usize) -> Result<FifoPage> {
        let prefix = prefix(name)?;
        let mut page = FifoPage::default();
        let Some(from) = after_seq.checked_add(1) else {
            return Ok(page);
        };
        if limit == 0 {
            return Ok(page);
        }
        let lower = keys::fifo_key(&prefix, from);
        let upper = keys::queue_end(&prefix);
        let mut failed = None;
        self.engine()
            .scan(CF, &lower, Some(&upper), &mut |key, value| {
                let seq = match keys::parse_fifo_key(&prefix, key) {
                    Ok(Some(seq)) => seq,
                    Ok(None) => return true,
                    Err(why) => {
                        self.report_corrupt(CF, key, &RecordError::BadKey(why));
                        return true;
                    }
                };
                match self.decode_or_report::<FifoItem>(CF, key, value) {
                    Ok(Some(item)) => page.entries.push(FifoEntry { seq, item }),
                    Ok(None) => page.corrupt.push(seq),
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
                page.entries.len() + page.corrupt.len() < limit
            })?;
        failed.map_or(Ok(page), Err)
    }

    /// A FIFO queue's length, bytes and seqs. Reads one meta record the
    /// first time a queue is touched after open, then O(1). An unknown queue
    /// is empty, with `next_seq` 1.
    pub fn queue_stats(&self, name: &str) -> Result<FifoStats> {
        let prefix = prefix(name)?;
        let mut registry = self.registry().lock();
        if let Some(meta) = registry.fifos.get(name) {
            return Ok((*meta).into());
        }
        let meta = self.load_fifo_meta(&prefix)?;
        registry.fifos.insert(name.to_string(), meta);
        Ok(meta.into())
    }

    /// [`Batch::queue_push`], committed alone: the seqs the items got.
    pub fn queue_push(&self, name: &str, items: &[FifoItem]) -> Result<Range<u64>> {
        let mut batch = Batch::new();
        batch.queue_push(name, items);
        let receipt = self.commit(batch)?;
        Ok(receipt
            .queue_pushes
            .into_iter()
            .next()
            .map_or(0..0, |(_, seqs)| seqs))
    }

    /// [`Batch::queue_remove_through`], committed alone.
    pub fn queue_remove_through(&self, name: &str, seq: u64) -> Result<FifoRemoval> {
        let mut batch = Batch::new();
        batch.queue_remove_through(name, seq);
        let receipt = self.commit(batch)?;
        Ok(receipt
            .queue_removals
            .first()
            .map_or_else(Default::default, |r| r.1))
    }

    /// A queue's meta record; rebuilt by scanning the queue when it is
    /// missing or corrupt (reported).
    pub(crate) fn load_fifo_meta(&self, prefix: &[u8]) -> Result<FifoMeta> {
        if let Some(value) = self.engine().get(CF, prefix)? {
            if let Some(meta) = self.decode_or_report(CF, prefix, &value)? {
                return Ok(meta);
            }
        }
        let mut meta = FifoMeta::EMPTY;
        let mut failed = None;
        let upper = keys::queue_end(prefix);
        self.engine()
            .scan(CF, prefix, Some(&upper), &mut |key, value| {
                let Ok(Some(seq)) = keys::parse_fifo_key(prefix, key) else {
                    return true;
                };
                let item = match self.decode_or_report::<FifoItem>(CF, key, value) {
                    Ok(item) => item,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                };
                if meta.len == 0 {
                    meta.first_seq = seq;
                }
                meta.len += 1;
                meta.bytes += item.map_or(0, |i| i.payload.len() as u64);
                meta.next_seq = meta.next_seq.max(seq.saturating_add(1));
                true
            })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if meta.len == 0 {
            meta.first_seq = meta.next_seq;
        }
        Ok(meta)
    }
}
