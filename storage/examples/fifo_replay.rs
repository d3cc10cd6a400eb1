//! Measures the replay of a long FIFO queue, the way a bridge drains its
//! overflow mailbox after an outage: the queue is filled with N entries,
//! the store is closed and opened again (as after a restart), then read in
//! pages of 64 while the entries read are removed in acknowledged runs of
//! 32. Prints the replay rate for each tenth of the queue, so a rate that
//! falls with the length of the backlog shows (docs/BENCHMARKS.md, "Bridge
//! outage").
//!
//! ```sh
//! cargo run --release -p roost-storage --example fifo_replay -- [ENTRIES] [PAYLOAD_BYTES]
//! ```

use std::time::Instant;

use bytes::Bytes;
use roost_storage::{FifoItem, Storage};

const QUEUE: &str = "bridge:replay";
const PAGE: usize = 64;
const ACK_RUN: u64 = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let payload: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("roost-fifo-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = run(&dir, entries, payload);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(
    dir: &std::path::Path,
    entries: u64,
    payload: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    {
        let storage = Storage::open(dir, Default::default())?;
        let mut pushed = 0u64;
        while pushed < entries {
            let n = (entries - pushed).min(256);
            let items: Vec<FifoItem> = (pushed..pushed + n)
                .map(|i| FifoItem {
                    enqueued_at_ms: 0,
                    payload: Bytes::from(filler(i, payload)),
                })
                .collect();
            storage.queue_push(QUEUE, &items)?;
            pushed += n;
        }
    }
    println!(
        "filled {entries} entries of {payload} bytes in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let storage = Storage::open(dir, Default::default())?;
    let tenth = (entries / 10).max(1);
    let (start, mut mark) = (Instant::now(), Instant::now());
    let (mut after, mut removed, mut read, mut next_mark) = (0u64, 0u64, 0u64, tenth);
    loop {
        let page = storage.queue_page(QUEUE, after, PAGE)?;
        let Some(last) = page.last_seq() else { break };
        for entry in &page.entries {
            if entry.item.payload.len() != payload {
                return Err(
                    format!("entry {} has {} bytes", entry.seq, entry.item.payload.len()).into(),
                );
            }
        }
        read += page.entries.len() as u64;
        after = last;
        // Acknowledged in runs, as the bridge settles them.
        while removed + ACK_RUN <= read || (removed < read && page.entries.len() < PAGE) {
            let through = (removed + ACK_RUN).min(read);
            storage.queue_remove_through(QUEUE, through)?;
            removed = through;
            if removed >= next_mark || removed == entries {
                let secs = mark.elapsed().as_secs_f64();
                println!(
                    "  replayed {:>3}%: {:>9.0} entries/s",
                    removed * 100 / entries,
                    (removed + tenth - next_mark) as f64 / secs
                );
                next_mark = removed + tenth;
                mark = Instant::now();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "replayed {removed} entries in {secs:.1} s: {:.0} entries/s; queue left: {}",
        removed as f64 / secs,
        storage.queue_stats(QUEUE)?.len
    );
    Ok(())
}

/// Bytes derived from the entry number, so compression cannot remove them.
fn filler(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
