//! The backlog's drain: the subscriber is back and receives its queue,
//! acknowledging every message, while each delivery is checked against
//! what the publishers had acknowledged.
//!
//! Per publisher, the next delivery must be the next accepted sequence
//! number ([`Order`]): anything else is counted as a duplicate, a message
//! arriving ahead of an earlier one (reordered), or one that was never
//! accepted (unexpected). What never arrives is lost. Payload bytes are
//! checked too ([`super::filler::Checker`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use roost_protocol::packet::{Ack, Packet, QoS};
use tokio::time::{timeout, Instant};

use super::filler::Checker;
use super::publish::{Accepted, Counters, Published};
use super::BacklogConfig;
use crate::bench::load::CLOSE_WAIT;
use crate::client::{Client, PacketReader, PacketWriter};

/// After the last expected message, how long to keep reading for extra
/// deliveries (duplicates).
const LINGER: Duration = Duration::from_secs(1);
/// Anomalies described one by one in the report; the rest are counted.
const MAX_EXAMPLES: usize = 10;

/// The drain's outcome.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// Every PUBLISH received.
    pub received: u64,
    /// Deliveries that were the next expected message of their publisher.
    pub in_order: u64,
    pub duplicates: u64,
    /// A new message while an earlier accepted one had not arrived yet.
    pub reordered: u64,
    /// Not from our publishers, not accepted by the broker, or not numbered.
    pub unexpected: u64,
    /// Payload bytes or size not what was published.
    pub corrupt: u64,
    /// Delivered at a QoS other than 1.
    pub wrong_qos: u64,
    /// Accepted but never received.
    pub lost: u64,
    /// From CONNACK to the last expected message (or the stop).
    pub seconds: f64,
    /// Every accepted message arrived.
    pub complete: bool,
    /// Why the drain stopped early, if it did.
    pub error: Option<String>,
    /// The first anomalies, described.
    pub examples: Vec<String>,
}

/// What one publisher's messages should look like in the drain.
struct Track {
    accepted: Accepted,
    received: Accepted,
    /// The next accepted seq not received yet, in order.
    next: Option<u64>,
}

/// The per-publisher order check.
pub struct Order {
    tracks: Vec<Track>,
}

/// What one delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    InOrder,
    Duplicate,
    Reordered,
    Unexpected,
}

impl Order {
    pub fn new(published: &Published) -> Order {
        let tracks = published
            .publishers
            .iter()
            .map(|p| Track {
                next: p.accepted.next_from(0),
                received: Accepted::default(),
                accepted: p.accepted.clone(),
            })
            .collect();
        Order { tracks }
    }

    pub fn record(&mut self, publisher: u32, seq: u64) -> Seen {
        let Some(t) = self.tracks.get_mut(publisher as usize) else {
            return Seen::Unexpected;
        };
        if !t.accepted.contains(seq) {
            return Seen::Unexpected;
        }
        if t.received.contains(seq) {
            return Seen::Duplicate;
        }
        t.received.insert(seq);
        if t.next == Some(seq) {
            // Skip what already arrived ahead of its turn.
            let mut n = t.accepted.next_from(seq + 1);
            while let Some(s) = n.filter(|&s| t.received.contains(s)) {
                n = t.accepted.next_from(s + 1);
            }
            t.next = n;
            Seen::InOrder
        } else {
            Seen::Reordered
        }
    }

    /// Accepted messages not received.
    pub fn lost(&self) -> u64 {
        self.tracks
            .iter()
            .map(|t| t.accepted.count().saturating_sub(t.received.count()))
            .sum()
    }
}

/// Receives the backlog on `client` (just reconnected) until every
/// accepted message arrived, or nothing arrived for `ack_timeout`.
pub async fn run(
    cfg: &BacklogConfig,
    client: Client,
    published: &Published,
    counters: Arc<Counters>,
) -> Drained {
    let expected = published.accepted_total();
    let started = Instant::now();
    let (mut reader, mut writer) = client.split();
    let mut state = State {
        order: Order::new(published),
        checker: Checker::new(cfg.payload),
        d: Drained::default(),
        unique: 0,
    };
    let result = receive(
        cfg,
        &mut reader,
        &mut writer,
        &mut state,
        expected,
        &counters,
    )
    .await;
    state.d.seconds = started.elapsed().as_secs_f64();
    state.d.complete = state.unique >= expected;
    if let Err(e) = result {
        state.d.error = Some(format!("{e:#}"));
    } else if state.d.complete {
        // Anything more is a duplicate or a stranger: look for it briefly.
        let linger = Instant::now() + LINGER;
        let extra = async {
            loop {
                let step = receive_once(&mut reader, &mut writer, &mut state, cfg.ack_timeout);
                if let Err(e) = step.await {
                    return e;
                }
            }
        };
        if let Ok(e) = tokio::time::timeout_at(linger, extra).await {
            state.d.error = Some(format!("after the backlog: {e:#}"));
        }
    }
    writer.disconnect(CLOSE_WAIT).await;
    state.d.lost = state.order.lost();
    state.d
}

struct State {
    order: Order,
    checker: Checker,
    d: Drained,
    unique: u64,
}

async fn receive(
    cfg: &BacklogConfig,
    reader: &mut PacketReader,
    writer: &mut PacketWriter,
    state: &mut State,
    expected: u64,
    counters: &Counters,
) -> Result<()> {
    while state.unique < expected {
        receive_once(reader, writer, state, cfg.ack_timeout)
            .await
            .map_err(|e| anyhow!("{e:#} ({} of {expected} messages received)", state.unique))?;
        counters.acked.store(state.unique, Ordering::Relaxed);
    }
    Ok(())
}

/// One read: handles every complete packet, then writes the PUBACKs.
async fn receive_once(
    reader: &mut PacketReader,
    writer: &mut PacketWriter,
    state: &mut State,
    wait: Duration,
) -> Result<()> {
    let filled = timeout(wait, reader.fill())
        .await
        .map_err(|_| anyhow!("drain stalled: no delivery for {wait:?}"))??;
    if !filled {
        bail!("the broker closed the connection");
    }
    while let Some(packet) = reader.next_buffered()? {
        let p = match packet {
            Packet::Publish(p) => p,
            Packet::Disconnect(d) => {
                bail!("the broker disconnected the subscriber: {:#04x}", d.reason)
            }
            _ => continue,
        };
        if p.qos != QoS::AtMostOnce {
            writer.queue(&Packet::PubAck(Ack::new(p.packet_id)))?;
        }
        state.account(&p.payload, p.qos, p.dup);
    }
    timeout(wait, writer.flush())
        .await
        .map_err(|_| anyhow!("PUBACK write blocked for {wait:?}"))?
}

impl State {
    fn account(&mut self, payload: &[u8], qos: QoS, dup: bool) {
        let d = &mut self.d;
        d.received += 1;
        if qos != QoS::AtLeastOnce {
            d.wrong_qos += 1;
            example(d, format!("a delivery at {qos:?} instead of QoS 1"));
        }
        let stamp = match self.checker.check(payload) {
            Ok(s) => s,
            Err(e) => {
                d.corrupt += 1;
                example(d, e);
                match crate::bench::payload::Stamp::parse(payload) {
                    Some(s) => s,
                    None => {
                        d.unexpected += 1;
                        return;
                    }
                }
            }
        };
        let (p, s) = (stamp.publisher, stamp.seq);
        match self.order.record(p, s) {
            Seen::InOrder => {
                d.in_order += 1;
                self.unique += 1;
            }
            Seen::Reordered => {
                d.reordered += 1;
                self.unique += 1;
                example(d, format!("message {p}/{s} arrived before an earlier one"));
            }
            Seen::Duplicate => {
                d.duplicates += 1;
                example(d, format!("message {p}/{s} arrived again (dup flag {dup})"));
            }
            Seen::Unexpected => {
                d.unexpected += 1;
                example(
                    d,
                    format!("message {p}/{s} was not acknowledged by the broker"),
                );
            }
        }
    }
}

fn example(d: &mut Drained, what: String) {
    if d.examples.len() < MAX_EXAMPLES {
        d.examples.push(what);
    }
}

#[cfg(test)]
mod tests {
    use super::super::publish::PublisherResult;
    use super::*;

    fn published(accepted: &[&[u64]], len: u64) -> Published {
        Published {
            publishers: accepted
                .iter()
                .map(|seqs| {
                    let mut a = Accepted::with_len(len);
                    for &s in *seqs {
                        a.insert(s);
                    }
                    PublisherResult {
                        accepted: a,
                        ..PublisherResult::default()
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn interleaved_publishers_in_their_own_order_are_in_order() {
        let mut o = Order::new(&published(&[&[0, 1, 2], &[0, 1]], 3));
        for (p, s) in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)] {
            assert_eq!(o.record(p, s), Seen::InOrder, "{p}/{s}");
        }
        assert_eq!(o.lost(), 0);
    }

    #[test]
    fn refused_messages_are_skipped_and_anomalies_counted() {
        // Seq 1 was refused by the broker: 0 then 2 is in order.
        let mut o = Order::new(&published(&[&[0, 2, 3, 4]], 5));
        assert_eq!(o.record(0, 0), Seen::InOrder);
        assert_eq!(o.record(0, 1), Seen::Unexpected);
        assert_eq!(o.record(0, 2), Seen::InOrder);
        assert_eq!(o.record(0, 2), Seen::Duplicate);
        assert_eq!(o.record(0, 4), Seen::Reordered);
        assert_eq!(o.record(0, 3), Seen::InOrder);
        assert_eq!(o.record(7, 0), Seen::Unexpected);
        assert_eq!(o.lost(), 0);
        let mut o = Order::new(&published(&[&[0, 1, 2]], 3));
        assert_eq!(o.record(0, 1), Seen::Reordered);
        assert_eq!(o.lost(), 2);
    }
}
