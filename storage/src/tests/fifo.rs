//! The FIFO queues of `bridge_queues` (`fifo.rs`): the behaviour suite on
//! both engines, reopening a RocksDB store, and a `VecDeque` model.

use std::collections::VecDeque;

use bytes::Bytes;
use proptest::prelude::*;

use super::{raw_put, Fixture, TempDir};
use crate::keys::{self, ColumnFamily};
use crate::{Batch, FifoItem, FifoRemoval, FifoStats, Storage, StorageError, StorageOptions};

/// Item `i`: its payload is `i` (8 bytes BE) then `pad` bytes.
fn item(i: u64, pad: usize) -> FifoItem {
    let mut payload = i.to_be_bytes().to_vec();
    payload.resize(8 + pad, 0xAB);
    FifoItem {
        enqueued_at_ms: 1_700_000_000_000 + i,
        payload: Bytes::from(payload),
    }
}

fn index(item: &FifoItem) -> u64 {
    let bytes: [u8; 8] = item.payload[..8].try_into().expect("8-byte index");
    u64::from_be_bytes(bytes)
}

/// Every (seq, index) of the queue, paged in pages of `limit`.
fn all(s: &Storage, name: &str, limit: usize) -> Vec<(u64, u64)> {
    let (mut after, mut out) = (0, Vec::new());
    loop {
        let page = s.queue_page(name, after, limit).unwrap();
        let Some(last) = page.last_seq() else {
            return out;
        };
        assert!(page.entries.len() <= limit);
        out.extend(page.entries.iter().map(|e| (e.seq, index(&e.item))));
        after = last;
    }
}

fn stats(len: u64, bytes: u64, first_seq: u64, next_seq: u64) -> FifoStats {
    FifoStats {
        len,
        bytes,
        first_seq,
        next_seq,
    }
}

macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod rocksdb {
            $(#[test] fn $name() {
                let f = super::Fixture::rocks(stringify!($name));
                super::$name(&f.storage);
            })*
        }
        mod memory {
            $(#[test] fn $name() {
                let f = super::Fixture::memory();
                super::$name(&f.storage);
            })*
        }
    };
}

both_engines!(
    fifo_push_assigns_consecutive_seqs_and_counts_bytes,
    fifo_item_round_trips,
    fifo_queues_are_separate,
    fifo_remove_through_acknowledges_a_prefix,
    fifo_remove_in_the_middle_keeps_first_seq_and_bytes_exact,
    fifo_drop_oldest_frees_at_least_the_bytes_asked,
    fifo_clear_deletes_everything_and_restarts_seqs,
    fifo_batch_operations_see_earlier_ones,
    fifo_page_of_100k_entries_is_bounded_and_in_order,
    fifo_name_too_long_is_refused,
    fifo_corrupt_entry_is_reported_and_still_removable,
    fifo_stats_of_an_unknown_queue_are_empty,
);

fn fifo_push_assigns_consecutive_seqs_and_counts_bytes(s: &Storage) {
    assert_eq!(s.queue_push("q", &[item(0, 2), item(1, 0)]).unwrap(), 1..3);
    assert_eq!(s.queue_push("q", &[]).unwrap(), 3..3);
    assert_eq!(s.queue_push("q", &[item(2, 10)]).unwrap(), 3..4);
    assert_eq!(s.queue_stats("q").unwrap(), stats(3, 10 + 8 + 18, 1, 4));
    assert_eq!(all(s, "q", 2), [(1, 0), (2, 1), (3, 2)]);
    assert_eq!(s.stats().commits, 3);
}

fn fifo_item_round_trips(s: &Storage) {
    let it = FifoItem {
        enqueued_at_ms: u64::MAX,
        payload: Bytes::from_static(b"\x00\xffopaque"),
    };
    s.queue_push("q", std::slice::from_ref(&it)).unwrap();
    let page = s.queue_page("q", 0, 10).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!((page.entries[0].seq, &page.entries[0].item), (1, &it));
}

fn fifo_queues_are_separate(s: &Storage) {
    // "a" and "a\0..." share bytes but not a prefix: the length differs.
    for (n, name) in ["a", "a\0\0\0\0\0\0\0\x01", "b", ""].iter().enumerate() {
        s.queue_push(name, &[item(n as u64, 0)]).unwrap();
    }
    for (n, name) in ["a", "a\0\0\0\0\0\0\0\x01", "b", ""].iter().enumerate() {
        assert_eq!(all(s, name, 10), [(1, n as u64)]);
        assert_eq!(s.queue_stats(name).unwrap().len, 1);
    }
    let mut batch = Batch::new();
    batch.queue_clear("a");
    s.commit(batch).unwrap();
    assert_eq!(all(s, "a\0\0\0\0\0\0\0\x01", 10), [(1, 1)]);
}

fn fifo_remove_through_acknowledges_a_prefix(s: &Storage) {
    let items: Vec<_> = (0..5).map(|i| item(i, 2)).collect();
    s.queue_push("q", &items).unwrap();
    let removed = s.queue_remove_through("q", 2).unwrap();
    let want = FifoRemoval {
        count: 2,
        bytes: 20,
        last_seq: Some(2),
    };
    assert_eq!(removed, want);
    assert_eq!(s.queue_stats("q").unwrap(), stats(3, 30, 3, 6));
    // Acknowledging again, or less, removes nothing.
    assert_eq!(s.queue_remove_through("q", 2).unwrap().count, 0);
    assert_eq!(all(s, "q", 10), [(3, 2), (4, 3), (5, 4)]);
    assert_eq!(s.queue_remove_through("q", u64::MAX).unwrap().count, 3);
    assert_eq!(s.queue_stats("q").unwrap(), stats(0, 0, 6, 6));
    // Seqs go on after the queue emptied.
    assert_eq!(s.queue_push("q", &[item(9, 0)]).unwrap(), 6..7);
    assert_eq!(s.queue_stats("q").unwrap(), stats(1, 8, 6, 7));
}

fn fifo_remove_in_the_middle_keeps_first_seq_and_bytes_exact(s: &Storage) {
    let items: Vec<_> = (0..6).map(|i| item(i, i as usize)).collect();
    s.queue_push("q", &items).unwrap();
    let mut batch = Batch::new();
    batch.queue_remove("q", 3..=4);
    let receipt = s.commit(batch).unwrap();
    let removal = receipt.queue_removals[0].1;
    assert_eq!((removal.count, removal.bytes), (2, 8 + 2 + 8 + 3));
    assert_eq!(s.queue_stats("q").unwrap().first_seq, 1);
    // Removing the prefix skips the gap: the first seq is 5.
    s.queue_remove_through("q", 2).unwrap();
    assert_eq!(s.queue_stats("q").unwrap(), stats(2, 8 + 4 + 8 + 5, 5, 7));
    assert_eq!(all(s, "q", 1), [(5, 4), (6, 5)]);
}

fn fifo_drop_oldest_frees_at_least_the_bytes_asked(s: &Storage) {
    let items: Vec<_> = (0..5).map(|i| item(i, 2)).collect(); // 10 bytes each
    s.queue_push("q", &items).unwrap();
    let mut batch = Batch::new();
    batch
        .queue_drop_oldest("q", 2, 11)
        .queue_drop_oldest("q", 0, 0)
        .queue_drop_oldest("q", 0, 1000);
    let receipt = s.commit(batch).unwrap();
    let drops: Vec<_> = receipt.queue_removals.iter().map(|(_, r)| *r).collect();
    let removal = |count, bytes, last| FifoRemoval {
        count,
        bytes,
        last_seq: last,
    };
    assert_eq!(
        drops,
        [
            removal(2, 20, Some(3)),
            removal(0, 0, None),
            removal(3, 30, Some(5)),
        ]
    );
    assert_eq!(s.queue_stats("q").unwrap(), stats(0, 0, 6, 6));
}

fn fifo_clear_deletes_everything_and_restarts_seqs(s: &Storage) {
    s.queue_push("q", &[item(0, 0), item(1, 0)]).unwrap();
    let mut batch = Batch::new();
    batch.queue_clear("q");
    s.commit(batch).unwrap();
    assert_eq!(s.queue_stats("q").unwrap(), stats(0, 0, 1, 1));
    assert!(s.queue_page("q", 0, 10).unwrap().is_empty());
    // No meta record is left behind.
    let prefix = keys::fifo_prefix("q").unwrap();
    assert_eq!(
        s.engine().get(ColumnFamily::BridgeQueues, &prefix).unwrap(),
        None
    );
    assert_eq!(s.queue_push("q", &[item(7, 0)]).unwrap(), 1..2);
}

fn fifo_batch_operations_see_earlier_ones(s: &Storage) {
    s.queue_push("q", &[item(0, 0), item(1, 0)]).unwrap();
    let mut batch = Batch::new();
    batch
        .queue_push("q", &[item(2, 0), item(3, 0)])
        .queue_remove_through("q", 3)
        .queue_drop_oldest("q", 0, 1)
        .queue_push("q", &[item(4, 0)])
        .queue_clear("other")
        .queue_push("other", &[item(5, 0)]);
    let receipt = s.commit(batch).unwrap();
    assert_eq!(
        receipt.queue_pushes,
        [
            ("q".into(), 3..5),
            ("q".into(), 5..6),
            ("other".into(), 1..2)
        ]
    );
    let removed: Vec<_> = receipt.queue_removals.iter().map(|r| r.1.count).collect();
    assert_eq!(removed, [3, 1]); // seqs 1..=3, then 4 (pushed by this batch)
    assert_eq!(all(s, "q", 10), [(5, 4)]);
    assert_eq!(s.queue_stats("q").unwrap(), stats(1, 8, 5, 6));
    assert_eq!(all(s, "other", 10), [(1, 5)]);
}

fn fifo_page_of_100k_entries_is_bounded_and_in_order(s: &Storage) {
    const N: u64 = 100_000;
    const LIMIT: usize = 1000;
    for start in (0..N).step_by(5000) {
        let chunk: Vec<_> = (start..start + 5000).map(|i| item(i, 0)).collect();
        let mut batch = Batch::new();
        batch
            .queue_push("big", &chunk)
            .queue_push("big2", &chunk[..1]);
        s.commit(batch).unwrap();
    }
    assert_eq!(s.queue_stats("big").unwrap(), stats(N, N * 8, 1, N + 1));
    let (mut after, mut seen, mut pages) = (0, 0, 0);
    loop {
        let page = s.queue_page("big", after, LIMIT).unwrap();
        let Some(last) = page.last_seq() else { break };
        assert!(page.entries.len() <= LIMIT);
        for e in &page.entries {
            assert_eq!((e.seq, index(&e.item)), (seen + 1, seen));
            seen += 1;
        }
        after = last;
        pages += 1;
        // Acknowledge as a consumer would, a page at a time.
        if pages % 10 == 0 {
            s.queue_remove_through("big", last).unwrap();
        }
    }
    assert_eq!((seen, pages), (N, N / LIMIT as u64));
    assert_eq!(s.queue_stats("big").unwrap(), stats(0, 0, N + 1, N + 1));
    assert_eq!(s.queue_stats("big2").unwrap().len, N / 5000);
}

fn fifo_name_too_long_is_refused(s: &Storage) {
    let name = "x".repeat(65_536);
    let mut batch = Batch::new();
    batch.queue_push(&name, &[item(0, 0)]);
    let err = s.commit(batch).unwrap_err();
    assert!(
        matches!(err, StorageError::QueueName { len: 65_536 }),
        "{err}"
    );
    assert!(s.queue_page(&name, 0, 1).is_err());
    // The longest allowed name works.
    let name = "x".repeat(65_535);
    assert_eq!(s.queue_push(&name, &[item(0, 0)]).unwrap(), 1..2);
}

fn fifo_corrupt_entry_is_reported_and_still_removable(s: &Storage) {
    s.queue_push("q", &[item(0, 0), item(1, 0), item(2, 0)])
        .unwrap();
    let prefix = keys::fifo_prefix("q").unwrap();
    raw_put(
        s,
        ColumnFamily::BridgeQueues,
        &keys::fifo_key(&prefix, 2),
        &[1, 0xff],
    );
    let page = s.queue_page("q", 0, 10).unwrap();
    let seqs: Vec<_> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!((seqs, page.corrupt), (vec![1, 3], vec![2]));
    assert_eq!(s.stats().corrupt_records, 1);
    let removal = s.queue_remove_through("q", 2).unwrap();
    assert_eq!(removal.count, 2);
    assert_eq!(s.queue_stats("q").unwrap().len, 1);
}

fn fifo_stats_of_an_unknown_queue_are_empty(s: &Storage) {
    assert_eq!(s.queue_stats("nobody").unwrap(), stats(0, 0, 1, 1));
    assert_eq!(s.queue_remove_through("nobody", 5).unwrap().count, 0);
    assert!(s.queue_page("nobody", 0, 5).unwrap().is_empty());
}

#[test]
fn fifo_queue_survives_reopen_with_its_meta() {
    let dir = TempDir::new("fifo-reopen");
    {
        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        s.queue_push("q", &(0..5).map(|i| item(i, 1)).collect::<Vec<_>>())
            .unwrap();
        s.queue_remove_through("q", 2).unwrap();
    }
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert_eq!(s.queue_stats("q").unwrap(), stats(3, 27, 3, 6));
    assert_eq!(all(&s, "q", 10), [(3, 2), (4, 3), (5, 4)]);
    assert_eq!(s.queue_push("q", &[item(5, 0)]).unwrap(), 6..7);
}

#[test]
fn fifo_missing_meta_is_rebuilt_from_the_entries() {
    let dir = TempDir::new("fifo-meta");
    {
        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        s.queue_push("q", &(0..4).map(|i| item(i, 1)).collect::<Vec<_>>())
            .unwrap();
        s.queue_remove_through("q", 1).unwrap();
        // Damage the meta record.
        let prefix = keys::fifo_prefix("q").unwrap();
        raw_put(&s, ColumnFamily::BridgeQueues, &prefix, &[1]);
    }
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert_eq!(s.queue_stats("q").unwrap(), stats(3, 27, 2, 5));
    assert_eq!(s.stats().corrupt_records, 1);
}

#[derive(Debug, Clone)]
enum Op {
    Push(u8, u8),
    RemoveThrough(u64),
    RemoveRange(u64, u64),
    DropOldest(u64, u64),
    Page(u64, usize),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6, 0u8..20).prop_map(|(n, pad)| Op::Push(n, pad)),
        2 => (0u64..50).prop_map(Op::RemoveThrough),
        1 => (0u64..50, 0u64..6).prop_map(|(a, n)| Op::RemoveRange(a, a + n)),
        2 => (0u64..50, 0u64..80).prop_map(|(from, bytes)| Op::DropOldest(from, bytes)),
        2 => (0u64..50, 0usize..8).prop_map(|(after, limit)| Op::Page(after, limit)),
        1 => Just(Op::Clear),
    ]
}

/// The model: (seq, index, payload length) in FIFO order.
struct Model {
    queue: VecDeque<(u64, u64, u64)>,
    next_seq: u64,
    next_index: u64,
}

impl Model {
    fn stats(&self) -> FifoStats {
        FifoStats {
            len: self.queue.len() as u64,
            bytes: self.queue.iter().map(|e| e.2).sum(),
            first_seq: self.queue.front().map_or(self.next_seq, |e| e.0),
            next_seq: self.next_seq,
        }
    }

    fn remove(&mut self, keep: impl Fn(u64) -> bool) -> FifoRemoval {
        let mut removal = FifoRemoval::default();
        for &(seq, _, len) in self.queue.iter().filter(|e| !keep(e.0)) {
            removal.count += 1;
            removal.bytes += len;
            removal.last_seq = Some(seq);
        }
        self.queue.retain(|e| keep(e.0));
        removal
    }
}

fn apply(s: &Storage, model: &mut Model, op: &Op) {
    let mut batch = Batch::new();
    let mut want = None;
    match *op {
        Op::Push(n, pad) => {
            let items: Vec<_> = (0..u64::from(n))
                .map(|i| item(model.next_index + i, usize::from(pad)))
                .collect();
            batch.queue_push("q", &items);
            for (i, it) in items.iter().enumerate() {
                let e = (
                    model.next_seq + i as u64,
                    index(it),
                    it.payload.len() as u64,
                );
                model.queue.push_back(e);
            }
            model.next_seq += u64::from(n);
            model.next_index += u64::from(n);
        }
        Op::RemoveThrough(seq) => {
            batch.queue_remove_through("q", seq);
            want = Some(model.remove(|s| s > seq));
        }
        Op::RemoveRange(a, b) => {
            batch.queue_remove("q", a..=b);
            want = Some(model.remove(|s| s < a || s > b));
        }
        Op::DropOldest(from, bytes) => {
            batch.queue_drop_oldest("q", from, bytes);
            let mut freed = 0;
            let mut through = 0;
            for &(seq, _, len) in model.queue.iter().filter(|e| e.0 >= from) {
                if freed >= bytes {
                    break;
                }
                freed += len;
                through = seq;
            }
            want = Some(model.remove(|s| s < from || s > through));
        }
        Op::Page(after, limit) => {
            let page = s.queue_page("q", after, limit).unwrap();
            let got: Vec<_> = page
                .entries
                .iter()
                .map(|e| (e.seq, index(&e.item)))
                .collect();
            let expected: Vec<_> = model
                .queue
                .iter()
                .filter(|e| e.0 > after)
                .take(limit)
                .map(|e| (e.0, e.1))
                .collect();
            assert_eq!(got, expected);
            return;
        }
        Op::Clear => {
            batch.queue_clear("q");
            model.queue.clear();
            model.next_seq = 1;
        }
    }
    let receipt = s.commit(batch).unwrap();
    if let Some(want) = want {
        assert_eq!(receipt.queue_removals[0].1, want);
    }
    assert_eq!(s.queue_stats("q").unwrap(), model.stats());
}

fn run(s: &Storage, ops: &[Op]) {
    let mut model = Model {
        queue: VecDeque::new(),
        next_seq: 1,
        next_index: 0,
    };
    for op in ops {
        apply(s, &mut model, op);
    }
    let got = all(s, "q", 3);
    let want: Vec<_> = model.queue.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(got, want);
    // The stored meta agrees too, not only the cached one.
    s.forget_fifo_metas();
    assert_eq!(s.queue_stats("q").unwrap(), model.stats());
}

proptest! {
    #[test]
    fn memory_fifo_agrees_with_vecdeque_model(ops in prop::collection::vec(op(), 0..80)) {
        run(&Fixture::memory().storage, &ops);
    }
}

proptest! {
    // Fewer cases: each opens a RocksDB store in a fresh dir.
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn rocksdb_fifo_agrees_with_vecdeque_model(ops in prop::collection::vec(op(), 0..80)) {
        run(&Fixture::rocks("fifo-model").storage, &ops);
    }
}
