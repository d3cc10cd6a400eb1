//! The overflow mailbox on the in-memory store and on RocksDB.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roost_storage::{Storage, StorageOptions};

use super::{
    DropReason, OverflowConfig, OverflowMailbox, OverflowMode, OverflowStats, PushOutcome,
};

/// A fresh dir under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "roost-overflow-test-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rocks(dir: &TempDir) -> Storage {
    Storage::open(dir.path(), StorageOptions::default()).expect("open store")
}

fn memory_store() -> Storage {
    Storage::in_memory(StorageOptions::default())
}

fn config(mode: OverflowMode, memory_bytes: u64, max_bytes: u64) -> OverflowConfig {
    OverflowConfig {
        mode,
        memory_bytes,
        max_bytes,
        request_ttl: None,
    }
}

fn open(config: OverflowConfig, storage: &Storage) -> OverflowMailbox {
    OverflowMailbox::open(
        "bridge:test",
        config,
        Some(storage.clone()),
        Box::new(|| {}),
    )
    .expect("open mailbox")
}

/// Payload: producer (1 byte), index (4 bytes BE), then padding to `len`.
fn payload(producer: u8, i: u32, len: usize) -> Bytes {
    let mut p = vec![producer];
    p.extend_from_slice(&i.to_be_bytes());
    p.resize(len.max(5), 0x5A);
    Bytes::from(p)
}

fn parse(p: &Bytes) -> (u8, u32) {
    (p[0], u32::from_be_bytes([p[1], p[2], p[3], p[4]]))
}

/// Take and acknowledge everything; the (producer, index) in order.
fn drain(m: &OverflowMailbox, batch: usize) -> Vec<(u8, u32)> {
    let mut out = Vec::new();
    loop {
        let taken = m.take(batch).unwrap();
        let Some(last) = taken.last().map(|e| e.seq) else {
            return out;
        };
        out.extend(taken.iter().map(|e| parse(&e.payload)));
        m.ack(last).unwrap();
    }
}

fn indices(v: &[(u8, u32)]) -> Vec<u32> {
    v.iter().map(|e| e.1).collect()
}

/// Several producer threads push numbered entries while one consumer takes
/// and acknowledges: memory fills, spills to disk, drains, and memory is
/// used again; each producer's entries arrive in order, none lost or
/// duplicated, and seqs only grow.
fn concurrent_producers_keep_fifo_order(mode: OverflowMode, storage: &Storage) {
    const PRODUCERS: u8 = 4;
    const EACH: u32 = 3000;
    let m = Arc::new(open(config(mode, 4_000, u64::MAX), storage));
    let max_disk = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let len = 20 + (i as usize * 7 + usize::from(p) * 13) % 180;
                    assert!(matches!(
                        m.push(payload(p, i, len)),
                        PushOutcome::Queued { .. }
                    ));
                    if i % 500 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
        })
        .collect();
    let mut next = [0u32; PRODUCERS as usize];
    let (mut last_seq, mut received) = (0u64, 0u32);
    while received < u32::from(PRODUCERS) * EACH {
        let s = m.stats();
        max_disk.fetch_max(s.disk_messages, Ordering::Relaxed);
        assert!(s.memory_bytes <= 4_000, "memory over its bound: {s:?}");
        let taken = m.take(64).unwrap();
        for e in &taken {
            assert!(e.seq > last_seq, "seq {} after {last_seq}", e.seq);
            last_seq = e.seq;
            let (p, i) = parse(&e.payload);
            assert_eq!(i, next[usize::from(p)], "producer {p} out of order");
            next[usize::from(p)] += 1;
            received += 1;
        }
        match taken.last() {
            Some(e) => m.ack(e.seq).unwrap(),
            None => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    assert!(m.take(64).unwrap().is_empty());
    assert!(
        max_disk.load(Ordering::Relaxed) > 0,
        "never spilled to disk"
    );
    let s = m.stats();
    let total = u64::from(PRODUCERS) * u64::from(EACH);
    assert_eq!((s.pushed, s.acked, s.dropped_queue_full), (total, total, 0));
    assert_eq!(
        (s.disk_messages, s.memory_messages, s.unacked_messages),
        (0, 0, 0)
    );
    // Back to memory once the disk is drained.
    m.push(payload(9, 0, 10));
    assert_eq!((m.stats().memory_messages, m.stats().disk_messages), (1, 0));
    if mode == OverflowMode::VolatileOffload {
        assert_eq!(storage.queue_stats(m.name()).unwrap().len, 0);
    }
}

#[test]
fn volatile_order_under_concurrent_producers_in_memory_store() {
    concurrent_producers_keep_fifo_order(OverflowMode::VolatileOffload, &memory_store());
}

#[test]
fn durable_order_under_concurrent_producers_in_memory_store() {
    concurrent_producers_keep_fifo_order(OverflowMode::Durable, &memory_store());
}

#[test]
fn volatile_order_under_concurrent_producers_on_rocksdb() {
    let dir = TempDir::new("volatile-order");
    concurrent_producers_keep_fifo_order(OverflowMode::VolatileOffload, &rocks(&dir));
}

#[test]
fn durable_order_under_concurrent_producers_on_rocksdb() {
    let dir = TempDir::new("durable-order");
    concurrent_producers_keep_fifo_order(OverflowMode::Durable, &rocks(&dir));
}

fn memory_stays_bounded_while_disk_holds_the_rest(mode: OverflowMode) {
    let storage = memory_store();
    let m = open(config(mode, 1_000, u64::MAX), &storage);
    for i in 0..1000 {
        m.push(payload(0, i, 100));
    }
    let s = m.stats();
    assert_eq!((s.memory_messages, s.memory_bytes), (10, 1000));
    assert_eq!((s.disk_messages, s.disk_bytes), (990, 99_000));
    // Take a little: memory empties first, then the disk is paged.
    let first = m.take(15).unwrap();
    assert_eq!(first.len(), 10, "a batch comes from memory or disk");
    assert!(m.stats().memory_bytes <= 1000);
    let mut got = indices(&first.iter().map(|e| parse(&e.payload)).collect::<Vec<_>>());
    m.ack(first.last().unwrap().seq).unwrap();
    got.extend(indices(&drain(&m, 100)));
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn volatile_memory_stays_under_memory_bytes_while_disk_holds_the_rest() {
    memory_stays_bounded_while_disk_holds_the_rest(OverflowMode::VolatileOffload);
}

#[test]
fn durable_memory_stays_under_memory_bytes_while_disk_holds_the_rest() {
    memory_stays_bounded_while_disk_holds_the_rest(OverflowMode::Durable);
}

/// 25 entries of 100 bytes under a 1000-byte cap: the 15 oldest are
/// dropped, counted exactly, and the 10 newest come out in order.
fn byte_cap_drops_the_oldest(mode: OverflowMode, storage: &Storage) {
    let m = open(config(mode, 300, 1_000), storage);
    for i in 0..25 {
        assert!(matches!(
            m.push(payload(0, i, 100)),
            PushOutcome::Queued { .. }
        ));
    }
    let s = m.stats();
    assert_eq!(s.dropped_queue_full, 15);
    assert_eq!(s.memory_bytes + s.disk_bytes, 1_000);
    assert_eq!(s.memory_messages + s.disk_messages, 10);
    assert_eq!(indices(&drain(&m, 4)), (15..25).collect::<Vec<_>>());
    // Too large on its own: refused, counted the same way.
    let big = m.push(payload(0, 99, 1_001));
    assert_eq!(big, PushOutcome::Dropped(DropReason::QueueFull));
    assert_eq!(m.stats().dropped_queue_full, 16);
    assert_eq!(m.stats().pushed, 25);
}

#[test]
fn memory_byte_cap_drops_the_oldest_and_counts_them() {
    byte_cap_drops_the_oldest(OverflowMode::Memory, &memory_store());
}

#[test]
fn volatile_byte_cap_drops_the_oldest_across_memory_and_disk() {
    let storage = memory_store();
    byte_cap_drops_the_oldest(OverflowMode::VolatileOffload, &storage);
    assert_eq!(storage.queue_stats("bridge:test").unwrap().len, 0);
}

#[test]
fn durable_byte_cap_drops_the_oldest_from_the_store_too() {
    let dir = TempDir::new("durable-cap");
    let storage = rocks(&dir);
    byte_cap_drops_the_oldest(OverflowMode::Durable, &storage);
    // Everything delivered was acknowledged: the store is empty.
    assert_eq!(storage.queue_stats("bridge:test").unwrap().len, 0);
}

#[test]
fn durable_cap_never_drops_taken_unacknowledged_entries() {
    let storage = memory_store();
    let m = open(config(OverflowMode::Durable, 200, 500), &storage);
    for i in 0..5 {
        m.push(payload(0, i, 100));
    }
    let window = m.take(2).unwrap();
    assert_eq!(window.len(), 2);
    for i in 5..9 {
        m.push(payload(0, i, 100));
    }
    // Queued: 2..9 = 7 entries > 5 allowed: 2, 3 dropped, not 0 and 1.
    assert_eq!(m.stats().dropped_queue_full, 2);
    m.ack(window[1].seq).unwrap();
    assert_eq!(indices(&drain(&m, 3)), [4, 5, 6, 7, 8]);
    assert_eq!(storage.queue_stats("bridge:test").unwrap().len, 0);
}

#[test]
fn durable_reopen_redelivers_every_unacknowledged_entry_in_order() {
    let dir = TempDir::new("durable-reopen");
    {
        let storage = rocks(&dir);
        let m = open(config(OverflowMode::Durable, 500, u64::MAX), &storage);
        for i in 0..100 {
            m.push(payload(0, i, 50));
        }
        let taken = m.take(30).unwrap();
        assert_eq!(taken.len(), 10); // memory holds 10
        let more = m.take(30).unwrap(); // then a disk page
        assert_eq!(more.len(), 30);
        m.ack(more[9].seq).unwrap(); // entries 0..20 acknowledged
        assert_eq!(m.stats().acked, 20);
    } // the node stops: mailbox and store dropped, nothing flushed
    let storage = rocks(&dir);
    let m = open(config(OverflowMode::Durable, 500, u64::MAX), &storage);
    let s = m.stats();
    assert_eq!((s.disk_messages, s.disk_bytes), (80, 80 * 50));
    assert_eq!(indices(&drain(&m, 7)), (20..100).collect::<Vec<_>>());
    // Seqs continue after the old ones.
    let PushOutcome::Queued { seq } = m.push(payload(0, 100, 5)) else {
        panic!("not queued");
    };
    assert_eq!(seq, 101);
}

#[test]
fn durable_rewind_redelivers_after_a_consumer_restart() {
    let storage = memory_store();
    let m = open(config(OverflowMode::Durable, 300, u64::MAX), &storage);
    for i in 0..10 {
        m.push(payload(0, i, 100));
    }
    let taken = m.take(2).unwrap();
    m.ack(taken[0].seq).unwrap();
    let _lost_with_the_consumer = m.take(5).unwrap();
    m.rewind();
    assert_eq!(m.stats().unacked_messages, 0);
    assert_eq!(indices(&drain(&m, 3)), (1..10).collect::<Vec<_>>());
}

#[test]
fn volatile_reopen_starts_empty() {
    let dir = TempDir::new("volatile-reopen");
    {
        let storage = rocks(&dir);
        let m = open(
            config(OverflowMode::VolatileOffload, 100, u64::MAX),
            &storage,
        );
        for i in 0..50 {
            m.push(payload(0, i, 50));
        }
        assert_eq!(storage.queue_stats("bridge:test").unwrap().len, 48);
    }
    let storage = rocks(&dir);
    let m = open(
        config(OverflowMode::VolatileOffload, 100, u64::MAX),
        &storage,
    );
    assert_eq!(m.stats(), OverflowStats::default());
    assert!(m.take(10).unwrap().is_empty());
    assert_eq!(storage.queue_stats("bridge:test").unwrap().len, 0);
}

#[test]
fn memory_mode_never_touches_the_store() {
    let storage = memory_store();
    let before = storage.stats().commits;
    let m = open(config(OverflowMode::Memory, 10, 10_000), &storage);
    for i in 0..200 {
        m.push(payload(0, i, 40)); // 8000 bytes: far past memory_bytes
    }
    assert_eq!(m.stats().memory_messages, 200);
    assert_eq!(indices(&drain(&m, 16)), (0..200).collect::<Vec<_>>());
    assert_eq!(storage.stats().commits, before);
    // Nor does it need one.
    let alone = OverflowMailbox::open(
        "m",
        config(OverflowMode::Memory, 1, 1),
        None,
        Box::new(|| {}),
    );
    assert!(alone.is_ok());
    let err = OverflowMailbox::open(
        "d",
        config(OverflowMode::Durable, 1, 1),
        None,
        Box::new(|| {}),
    );
    assert!(err.is_err());
}

#[test]
fn volatile_mode_commits_only_when_it_spills() {
    let storage = memory_store();
    let m = open(
        config(OverflowMode::VolatileOffload, 1_000, u64::MAX),
        &storage,
    );
    let before = storage.stats().commits;
    for i in 0..10 {
        m.push(payload(0, i, 100));
    }
    assert_eq!(storage.stats().commits, before);
    m.push(payload(0, 10, 100));
    assert_eq!(storage.stats().commits, before + 1);
}

fn ttl_drops_expired_entries_when_taken(mode: OverflowMode) {
    let storage = memory_store();
    let mut cfg = config(mode, 250, u64::MAX);
    cfg.request_ttl = Some(Duration::from_secs(10));
    let m = open(cfg, &storage);
    for i in 0..10 {
        m.push_at(payload(0, i, 100), 1_000_000 + u64::from(i) * 1_000);
    }
    // At +15 s, entries pushed before +5 s (0..=5) are expired. Memory
    // holds 0 and 1, both expired: the same take goes on to the disk.
    let got = m.take_at(100, 1_015_000).unwrap();
    let all: Vec<u32> = got.iter().map(|e| parse(&e.payload).1).collect();
    let last = got.last().map(|e| e.seq);
    assert!(m.take_at(100, 1_015_000).unwrap().is_empty());
    assert_eq!(all, [6, 7, 8, 9]);
    assert_eq!(m.stats().dropped_expired, 6);
    m.ack(last.unwrap()).unwrap();
    assert_eq!(m.stats().acked, 4);
    assert_eq!(storage.queue_stats("bridge:test").unwrap().len, 0);
}

#[test]
fn volatile_ttl_drops_expired_entries_when_taken() {
    ttl_drops_expired_entries_when_taken(OverflowMode::VolatileOffload);
}

#[test]
fn durable_ttl_drops_expired_entries_and_removes_them_from_the_store() {
    ttl_drops_expired_entries_when_taken(OverflowMode::Durable);
}

#[test]
fn wake_is_called_once_per_take() {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let wake = Box::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let cfg = config(OverflowMode::Memory, 0, u64::MAX);
    let m = OverflowMailbox::open("w", cfg, None, wake).unwrap();
    for i in 0..100 {
        m.push(payload(0, i, 10));
    }
    assert_eq!(wakes.load(Ordering::Relaxed), 1);
    assert_eq!(m.take(10).unwrap().len(), 10);
    m.push(payload(0, 100, 10));
    m.push(payload(0, 101, 10));
    assert_eq!(wakes.load(Ordering::Relaxed), 2);
}

#[test]
fn memory_and_volatile_rewind_redeliver_the_window_in_order() {
    for mode in [OverflowMode::Memory, OverflowMode::VolatileOffload] {
        let storage = memory_store();
        let m = open(config(mode, 300, u64::MAX), &storage);
        for i in 0..10 {
            m.push(payload(0, i, 100));
        }
        let taken = m.take(2).unwrap();
        m.ack(taken[0].seq).unwrap();
        let _lost_with_the_link = m.take(5).unwrap();
        m.rewind();
        let s = m.stats();
        assert_eq!(s.unacked_messages, 0, "{mode:?}");
        assert_eq!(
            indices(&drain(&m, 3)),
            (1..10).collect::<Vec<_>>(),
            "{mode:?}"
        );
        assert_eq!(m.stats().acked, 10, "{mode:?}");
    }
}
