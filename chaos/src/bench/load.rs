//! The load clients: a publisher loop and a subscriber loop over
//! [`crate::client`], shared by every bench scenario (and, later, by the
//! chaos scenarios).
//!
//! A publisher writes batches of stamped PUBLISHes until its stop time:
//! as fast as TCP allows at QoS 0, within a window of unacknowledged
//! messages at QoS 1, or at a fixed rate. A subscriber records every
//! delivery in a [`SeqTracker`] and a latency histogram until told to stop.
//!
//! Live progress is published through atomics ([`PubCounters`],
//! [`SubCounters`]) so the coordinator can sample rates at the edges of the
//! measurement window without stopping anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bytestring::ByteString;
use hdrhistogram::Histogram;
use roost_protocol::packet::{Ack, Packet, QoS};
use tokio::sync::{watch, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::payload::{PayloadBuilder, Stamp};
use super::track::SeqTracker;
use crate::client::{publish, Client, PacketReader, PacketWriter};

/// Messages encoded into one write.
pub const BATCH: usize = 64;
/// How long a writer may stay blocked past its stop time.
pub const WRITE_GRACE: Duration = Duration::from_secs(5);
/// How long a subscriber may stay blocked writing its PUBACKs.
const ACK_FLUSH_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for a clean DISCONNECT.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What one publisher does.
#[derive(Debug, Clone)]
pub struct PublisherPlan {
    pub id: u32,
    pub topic: ByteString,
    pub qos: QoS,
    pub payload_len: usize,
    /// Messages per second; `None` for as fast as allowed.
    pub rate: Option<f64>,
    /// Unacknowledged QoS 1 messages allowed in flight (lowered to the
    /// broker's Receive Maximum when it announces one).
    pub window: usize,
    /// The run's time origin: payload timestamps count from it.
    pub epoch: Instant,
    pub stop_at: Instant,
    /// After `stop_at`, how long to wait for outstanding PUBACKs.
    pub ack_wait: Duration,
}

/// Progress of one publisher, readable while it runs.
#[derive(Debug, Default)]
pub struct PubCounters {
    /// Messages fully handed to the socket.
    pub sent: AtomicU64,
    /// Successful PUBACKs received (QoS 1).
    pub acked: AtomicU64,
    /// PUBACKs refusing the message (5.0 reason code >= 0x80).
    pub rejected: AtomicU64,
}

/// Runs one publisher to completion: publishes until `stop_at`, waits for
/// PUBACKs, disconnects. Counters stay valid whatever the outcome.
pub async fn run_publisher(
    client: Client,
    plan: PublisherPlan,
    counters: Arc<PubCounters>,
) -> Result<()> {
    let limit = client.receive_maximum.map_or(usize::MAX, usize::from);
    let (reader, mut writer) = client.split();
    let qos1 = plan.qos == QoS::AtLeastOnce;
    let slots = plan.window.min(limit).max(1);
    let window = Arc::new(Semaphore::new(if qos1 { slots } else { 0 }));
    let acks = tokio::spawn(ack_loop(reader, window.clone(), counters.clone()));
    let result = publish_loop(&mut writer, &plan, &window, &counters).await;
    if qos1 {
        let all = u32::try_from(slots).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(plan.ack_wait, window.acquire_many(all)).await;
    }
    // The ack reader's error (a DISCONNECT with a reason) explains a failed
    // write better than the write error itself.
    let ack_error = if acks.is_finished() {
        acks.await.ok().and_then(Result::err)
    } else {
        acks.abort();
        None
    };
    writer.disconnect(CLOSE_WAIT).await;
    match ack_error {
        Some(e) => Err(e),
        None => result,
    }
}

async fn publish_loop(
    writer: &mut PacketWriter,
    plan: &PublisherPlan,
    window: &Semaphore,
    counters: &PubCounters,
) -> Result<()> {
    let mut payloads = PayloadBuilder::new(plan.payload_len);
    let mut seq = 0u64;
    let started = Instant::now();
    while Instant::now() < plan.stop_at {
        let mut n = BATCH;
        if let Some(rate) = plan.rate {
            n = match due(started, rate, seq) {
                Ok(d) => usize::try_from(d).unwrap_or(BATCH).min(BATCH),
                Err(next) => {
                    tokio::time::sleep_until(next.min(plan.stop_at)).await;
                    continue;
                }
            };
        }
        if plan.qos == QoS::AtLeastOnce {
            n = acquire_window(window, n, plan.stop_at).await;
        }
        for _ in 0..n {
            let sent_ns = nanos_since(plan.epoch);
            let payload = payloads.build(Stamp {
                publisher: plan.id,
                seq,
                sent_ns,
            });
            let id = if plan.qos == QoS::AtMostOnce {
                0
            } else {
                writer.next_packet_id()
            };
            writer.queue_publish(&publish(&plan.topic, plan.qos, id, payload))?;
            seq += 1;
        }
        let flushed = timeout_at(plan.stop_at + WRITE_GRACE, writer.flush()).await;
        counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        match flushed {
            Ok(r) => r?,
            Err(_) => bail!("publisher {}: write blocked past the stop time", plan.id),
        }
    }
    Ok(())
}

/// `Ok(n)`: messages due now at `rate` (n >= 1). `Err(t)`: none due before `t`.
fn due(started: Instant, rate: f64, sent: u64) -> Result<u64, Instant> {
    let elapsed = started.elapsed().as_secs_f64();
    let target = (elapsed * rate).floor() as u64 + 1;
    if target > sent {
        Ok(target - sent)
    } else {
        Err(started + Duration::from_secs_f64(sent as f64 / rate))
    }
}

/// Takes up to `want` window slots, waiting for at least one until
/// `stop_at`. Returns how many were taken (0 at the stop time).
async fn acquire_window(window: &Semaphore, want: usize, stop_at: Instant) -> usize {
    match timeout_at(stop_at, window.acquire()).await {
        Ok(Ok(permit)) => permit.forget(),
        _ => return 0,
    }
    let mut got = 1;
    while got < want {
        match window.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        got += 1;
    }
    got
}

/// Reads PUBACKs, returning their slots to the window.
async fn ack_loop(
    mut reader: PacketReader,
    window: Arc<Semaphore>,
    counters: Arc<PubCounters>,
) -> Result<()> {
    loop {
        if !reader.fill().await? {
            return Ok(());
        }
        let (mut acked, mut rejected) = (0, 0);
        while let Some(packet) = reader.next_buffered()? {
            match packet {
                // 5.0 reason codes >= 0x80 refuse the message. [MQTT-3.4.2.1]
                Packet::PubAck(a) if a.reason >= 0x80 => rejected += 1,
                Packet::PubAck(_) => acked += 1,
                Packet::Disconnect(d) => {
                    bail!("broker disconnected the publisher: {:#04x}", d.reason)
                }
                _ => {}
            }
        }
        counters.acked.fetch_add(acked as u64, Ordering::Relaxed);
        counters
            .rejected
            .fetch_add(rejected as u64, Ordering::Relaxed);
        window.add_permits(acked + rejected);
    }
}

/// Nanoseconds since `epoch`, saturating.
pub fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Which deliveries count towards the latency histogram: those sent inside
/// the measurement window, in nanoseconds since the run's epoch.
#[derive(Debug, Clone, Copy)]
pub struct LatencyWindow {
    pub epoch: Instant,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// Progress of one subscriber, readable while it runs.
#[derive(Debug, Default)]
pub struct SubCounters {
    pub received: AtomicU64,
    pub unique: AtomicU64,
}

/// What a subscriber hands back when it stops.
pub struct SubOutcome {
    pub tracker: SeqTracker,
    /// Nanoseconds from publish to delivery.
    pub latency: Histogram<u64>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// A latency histogram: 1 ns to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// Receives until `stop` turns true (or is dropped), acknowledging QoS 1
/// deliveries in batches. A connection error ends the loop and is kept in
/// the outcome with everything counted so far (only creating the histogram
/// can fail the call).
pub async fn run_subscriber(
    client: Client,
    mut tracker: SeqTracker,
    window: LatencyWindow,
    counters: Arc<SubCounters>,
    mut stop: watch::Receiver<bool>,
) -> Result<SubOutcome> {
    let (mut reader, mut writer) = client.split();
    let mut latency = new_histogram()?;
    let mut error = None;
    while !*stop.borrow() {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            filled = reader.fill() => {
                let step = match filled {
                    Ok(true) => {
                        let (t, l) = (&mut tracker, &mut latency);
                        handle_buffered(&mut reader, &mut writer, t, l, window).await
                    }
                    Ok(false) => Err(anyhow!("broker closed the connection")),
                    Err(e) => Err(e),
                };
                let c = tracker.counts();
                counters.received.store(c.received, Ordering::Relaxed);
                counters.unique.store(c.unique, Ordering::Relaxed);
                if let Err(e) = step {
                    error = Some(format!("{e:#}"));
                    break;
                }
            }
        }
    }
    writer.disconnect(CLOSE_WAIT).await;
    Ok(SubOutcome {
        tracker,
        latency,
        error,
    })
}

/// Handles every complete packet in the read buffer, then writes the PUBACKs.
async fn handle_buffered(
    reader: &mut PacketReader,
    writer: &mut PacketWriter,
    tracker: &mut SeqTracker,
    latency: &mut Histogram<u64>,
    window: LatencyWindow,
) -> Result<()> {
    // One clock read per socket read: the messages of a read arrived together.
    let now_ns = nanos_since(window.epoch);
    while let Some(packet) = reader.next_buffered()? {
        let publish = match packet {
            Packet::Publish(p) => p,
            Packet::Disconnect(d) => bail!("broker disconnected the subscriber: {:#04x}", d.reason),
            _ => continue,
        };
        if publish.qos == QoS::AtLeastOnce {
            writer.queue(&Packet::PubAck(Ack::new(publish.packet_id)))?;
        }
        let Some(stamp) = Stamp::parse(&publish.payload) else {
            tracker.record(u32::MAX, 0);
            continue;
        };
        tracker.record(stamp.publisher, stamp.seq);
        if (window.from_ns..window.to_ns).contains(&stamp.sent_ns) {
            let _ = latency.record(now_ns.saturating_sub(stamp.sent_ns).max(1));
        }
    }
    tokio::time::timeout(ACK_FLUSH_WAIT, writer.flush())
        .await
        .map_err(|_| anyhow!("PUBACK write blocked for {ACK_FLUSH_WAIT:?}"))?
}
