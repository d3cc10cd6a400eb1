//! The backlog's publishers: each sends its share of numbered QoS 1
//! messages as fast as the broker acknowledges them, within a window of
//! unacknowledged messages, and records which of its messages the broker
//! accepted (PUBACK reason 0x00: queued for the subscriber).
//!
//! One task writes (taking a window slot per message, each wait bounded by
//! `ack_timeout`); another reads the PUBACKs, matches each to the message
//! its packet id was given to, and gives the slot back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bytestring::ByteString;
use roost_protocol::packet::{Packet, QoS};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::filler::Builder;
use super::BacklogConfig;
use crate::bench::load::{nanos_since, BATCH, CLOSE_WAIT};
use crate::bench::payload::Stamp;
use crate::client::{publish, Client, PacketReader, PacketWriter};

/// PUBACK reason: the message matched no subscription (5.0). It is a
/// success code, but the message is not in anyone's queue.
const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
/// Marks a packet id with nothing outstanding.
const FREE: u64 = u64::MAX;

/// Live progress, readable while the phase runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    /// PUBACKs (publish phase) or deliveries (drain phase).
    pub acked: AtomicU64,
}

/// A set of sequence numbers (a bitmap): what one publisher's messages
/// the broker accepted, or what the drain received.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// Bit `seq`: in the set.
    bits: Vec<u64>,
    count: u64,
}

/// Sequence numbers at or above this are never inserted (bounds the bitmap).
const MAX_SEQ: u64 = 1 << 34;

impl Accepted {
    pub fn with_len(n: u64) -> Accepted {
        Accepted {
            bits: vec![0; n.min(MAX_SEQ).div_ceil(64) as usize],
            count: 0,
        }
    }

    /// Adds `seq` (growing the bitmap; ignored past `MAX_SEQ`).
    pub fn insert(&mut self, seq: u64) {
        if seq >= MAX_SEQ {
            return;
        }
        let (w, b) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & b == 0 {
            self.bits[w] |= b;
            self.count += 1;
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, 1u64 << (seq % 64));
        self.bits.get(w).is_some_and(|word| word & b != 0)
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The first accepted seq at or after `from`, if any.
    pub fn next_from(&self, from: u64) -> Option<u64> {
        let mut w = (from / 64) as usize;
        let mut word = *self.bits.get(w)? & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                return Some(w as u64 * 64 + u64::from(word.trailing_zeros()));
            }
            w += 1;
            word = *self.bits.get(w)?;
        }
    }
}

/// One publisher's outcome.
#[derive(Debug, Clone, Default)]
pub struct PublisherResult {
    pub sent: u64,
    pub acked: u64,
    /// PUBACK reason >= 0x80: refused (e.g. the subscriber's queue is full).
    pub refused: u64,
    /// PUBACK reason 0x10: no subscriber had the message.
    pub no_subscribers: u64,
    /// Reason codes seen other than 0x00, with counts.
    pub reasons: Vec<(u8, u64)>,
    pub accepted: Accepted,
    pub error: Option<String>,
}

/// Every publisher's outcome.
#[derive(Debug, Default)]
pub struct Published {
    pub publishers: Vec<PublisherResult>,
}

impl Published {
    pub fn accepted_total(&self) -> u64 {
        self.publishers.iter().map(|p| p.accepted.count()).sum()
    }
}

/// The running publishers.
pub struct Running {
    tasks: Vec<JoinHandle<PublisherResult>>,
    pub counters: Arc<Counters>,
}

/// Spawns one task per publisher client.
pub fn start(cfg: &BacklogConfig, topic: &ByteString, clients: Vec<Client>) -> Running {
    let counters = Arc::new(Counters::default());
    let tasks = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let plan = Plan {
                id: i as u32,
                count: cfg.share(i),
                topic: topic.clone(),
                payload: cfg.payload,
                window: cfg.window,
                ack_timeout: cfg.ack_timeout,
            };
            tokio::spawn(run_one(c, plan, counters.clone()))
        })
        .collect();
    Running { tasks, counters }
}

impl Running {
    /// Waits for every publisher. Each is bounded by its own timeouts (a
    /// PUBACK per `ack_timeout`), so this ends.
    pub async fn finish(self) -> Published {
        let mut publishers = Vec::new();
        for (i, t) in self.tasks.into_iter().enumerate() {
            publishers.push(t.await.unwrap_or_else(|e| PublisherResult {
                error: Some(format!("publisher {i}: task failed: {e}")),
                ..PublisherResult::default()
            }));
        }
        Published { publishers }
    }
}

struct Plan {
    id: u32,
    count: u64,
    topic: ByteString,
    payload: usize,
    window: usize,
    ack_timeout: Duration,
}

/// What the PUBACK reader shares with the writer: packet id -> seq.
struct Outstanding {
    seq_of: Vec<u64>,
}

async fn run_one(client: Client, plan: Plan, counters: Arc<Counters>) -> PublisherResult {
    let limit = client.receive_maximum.map_or(usize::MAX, usize::from);
    // Below 65,535 so a packet id is never reused while outstanding.
    let slots = plan.window.min(limit).clamp(1, 60_000);
    let (reader, mut writer) = client.split();
    let window = Arc::new(Semaphore::new(slots));
    let table = Arc::new(Mutex::new(Outstanding {
        seq_of: vec![FREE; 65_536],
    }));
    let acks = tokio::spawn(ack_loop(
        reader,
        plan.count,
        plan.ack_timeout,
        window.clone(),
        table.clone(),
        counters.clone(),
    ));
    let written = write_loop(&mut writer, &plan, &window, &table, &counters).await;
    let (sent, write_error) = match written {
        Ok(n) => (n, None),
        Err((n, e)) => (n, Some(e)),
    };
    // Every PUBACK, or the reader's own timeout (ack_timeout with nothing).
    let mut result = match acks.await {
        Ok(r) => r,
        Err(e) => PublisherResult {
            error: Some(format!("PUBACK reader failed: {e}")),
            ..PublisherResult::default()
        },
    };
    writer.disconnect(CLOSE_WAIT).await;
    result.sent = sent;
    if let Some(e) = write_error {
        // The reader's error (the broker's DISCONNECT) explains more.
        result.error.get_or_insert(e);
    }
    if let Some(e) = &mut result.error {
        *e = format!("publisher {}: {e}", plan.id);
    }
    result
}

/// Publishes `plan.count` messages; returns how many were written, or that
/// count with the error that stopped it.
async fn write_loop(
    writer: &mut PacketWriter,
    plan: &Plan,
    window: &Semaphore,
    table: &Mutex<Outstanding>,
    counters: &Counters,
) -> Result<u64, (u64, String)> {
    let epoch = Instant::now();
    let mut payloads = Builder::new(plan.payload);
    let mut seq = 0u64;
    while seq < plan.count {
        // At least one slot, waiting at most ack_timeout; then what is free.
        match timeout(plan.ack_timeout, window.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            Ok(Err(_)) => return Err((seq, "PUBACK reader stopped".into())),
            Err(_) => {
                return Err((
                    seq,
                    format!(
                        "no PUBACK within {:?} with the window full ({} sent)",
                        plan.ack_timeout, seq
                    ),
                ))
            }
        }
        let mut n = 1;
        while n < BATCH as u64 && seq + n < plan.count {
            match window.try_acquire() {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
            n += 1;
        }
        let ids: Vec<u16> = (0..n).map(|_| writer.next_packet_id()).collect();
        {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            for (k, &id) in ids.iter().enumerate() {
                if t.seq_of[usize::from(id)] != FREE {
                    return Err((seq, format!("packet id {id} reused while outstanding")));
                }
                t.seq_of[usize::from(id)] = seq + k as u64;
            }
        }
        for (k, &id) in ids.iter().enumerate() {
            let payload = payloads.build(Stamp {
                publisher: plan.id,
                seq: seq + k as u64,
                sent_ns: nanos_since(epoch),
            });
            let p = publish(&plan.topic, QoS::AtLeastOnce, id, payload);
            writer
                .queue_publish(&p)
                .map_err(|e| (seq, format!("{e:#}")))?;
        }
        match timeout(plan.ack_timeout, writer.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err((seq, format!("{e:#}"))),
            Err(_) => {
                return Err((
                    seq,
                    format!(
                        "write blocked for {:?} (the broker stopped reading)",
                        plan.ack_timeout
                    ),
                ))
            }
        }
        seq += n;
        counters.sent.fetch_add(n, Ordering::Relaxed);
    }
    Ok(seq)
}

/// Reads PUBACKs until all `count` came, each within `ack_timeout` of the
/// previous read.
async fn ack_loop(
    reader: PacketReader,
    count: u64,
    ack_timeout: Duration,
    window: Arc<Semaphore>,
    table: Arc<Mutex<Outstanding>>,
    counters: Arc<Counters>,
) -> PublisherResult {
    let mut r = PublisherResult {
        accepted: Accepted::with_len(count),
        ..PublisherResult::default()
    };
    let outcome = read_acks(
        reader,
        (count, ack_timeout),
        &window,
        &table,
        &counters,
        &mut r,
    )
    .await;
    if let Err(e) = outcome {
        r.error = Some(format!("{e:#}"));
    }
    // Wake a writer waiting for a slot: it sees the closed window.
    window.close();
    r
}

async fn read_acks(
    mut reader: PacketReader,
    (count, ack_timeout): (u64, Duration),
    window: &Semaphore,
    table: &Mutex<Outstanding>,
    counters: &Counters,
    r: &mut PublisherResult,
) -> Result<()> {
    let mut done = 0u64;
    while done < count {
        let filled = timeout(ack_timeout, reader.fill()).await.map_err(|_| {
            anyhow!("no PUBACK within {ack_timeout:?} ({done} of {count} acknowledged)")
        })??;
        if !filled {
            bail!("the broker closed the connection ({done} of {count} acknowledged)");
        }
        let mut freed = 0;
        while let Some(packet) = reader.next_buffered()? {
            let ack = match packet {
                Packet::PubAck(a) => a,
                Packet::Disconnect(d) => {
                    bail!("the broker disconnected the publisher: {:#04x}", d.reason)
                }
                _ => continue,
            };
            let seq = {
                let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::replace(&mut t.seq_of[usize::from(ack.packet_id)], FREE)
            };
            if seq == FREE {
                bail!(
                    "PUBACK for packet id {} that is not outstanding",
                    ack.packet_id
                );
            }
            match ack.reason {
                0 => {
                    r.acked += 1;
                    r.accepted.insert(seq);
                }
                code => {
                    if code >= 0x80 {
                        r.refused += 1;
                    } else if code == NO_MATCHING_SUBSCRIBERS {
                        r.no_subscribers += 1;
                    } else {
                        r.acked += 1;
                        r.accepted.insert(seq);
                    }
                    match r.reasons.iter_mut().find(|(c, _)| *c == code) {
                        Some((_, n)) => *n += 1,
                        None => r.reasons.push((code, 1)),
                    }
                }
            }
            done += 1;
            freed += 1;
        }
        counters.acked.fetch_add(freed as u64, Ordering::Relaxed);
        window.add_permits(freed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_finds_the_next_seq() {
        let mut a = Accepted::with_len(200);
        for s in [0, 1, 63, 64, 130, 199] {
            a.insert(s);
        }
        a.insert(1);
        a.insert(MAX_SEQ); // absurd: ignored
        assert_eq!(a.count(), 6);
        assert!(a.contains(63) && !a.contains(62) && !a.contains(500));
        assert_eq!(a.next_from(0), Some(0));
        assert_eq!(a.next_from(2), Some(63));
        assert_eq!(a.next_from(65), Some(130));
        assert_eq!(a.next_from(199), Some(199));
        assert_eq!(a.next_from(200), None);
        assert_eq!(Accepted::with_len(0).next_from(0), None);
    }
}
