//! A recording publisher: numbered messages at a fixed rate, QoS 0, 1 or 2,
//! over a persistent session that survives reconnections.
//!
//! State per in-flight message: its seq, its packet id, and (QoS 2) whether
//! the PUBREC came (PUBREL sent). On a reconnection that finds the session
//! (Session Present = 1) every in-flight message is sent again in seq
//! order, as MQTT requires [MQTT-4.4.0-1]: a PUBLISH with DUP and its
//! original packet id, or the PUBREL of a QoS 2 message already received.
//! Without the session (Session Present = 0, e.g. a node that lost it),
//! QoS 1 messages are sent again the same way (at least once allows it)
//! and QoS 2 ones are abandoned: sending them again could deliver them
//! twice, and they were never acknowledged.
//!
//! The rate does not catch up after an outage: messages due more than
//! [`CATCH_UP`] ago are skipped (never created), so a reconnect does not
//! burst.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use bytestring::ByteString;
use roost_protocol::packet::{Ack, Packet, QoS};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};

use super::conn::{final_disconnect, Check, Dialer, Liveness, CLOSE_WAIT, TICK, WRITE_TIMEOUT};
use super::record::Recorder;
use crate::bench::payload::{PayloadBuilder, Stamp};
use crate::client::{publish, Client, PacketReader, PacketWriter};

/// Unacknowledged QoS 1/2 messages per publisher, at most (lowered to the
/// broker's Receive Maximum).
pub const MAX_INFLIGHT: usize = 64;
/// After being told to stop, how long a publisher keeps waiting for the
/// acknowledgements of its in-flight messages (reconnecting if need be).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How far behind its schedule a publisher may fall before skipping ahead.
const CATCH_UP: Duration = Duration::from_secs(1);
/// Messages created in one go, at most.
const BATCH: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Inflight {
    packet_id: u16,
    /// QoS 2: PUBREC received, PUBREL sent.
    released: bool,
}

enum End {
    /// Stopped and drained (or the drain time ran out).
    Done,
    Lost(String),
}

pub(crate) struct Publisher {
    pub(crate) rec: Arc<Recorder>,
    pub(crate) index: usize,
    pub(crate) qos: QoS,
    pub(crate) topic: ByteString,
    pub(crate) payload: usize,
    pub(crate) interval: Duration,
    pub(crate) dialer: Dialer,
    pub(crate) stop: watch::Receiver<bool>,
}

/// The running state of one publisher.
struct State {
    p: Publisher,
    payloads: PayloadBuilder,
    /// By seq: resends go in seq order.
    inflight: BTreeMap<u64, Inflight>,
    by_id: HashMap<u16, u64>,
    last_id: u16,
    window: usize,
    next_due: Instant,
    /// Drain deadline, once told to stop.
    stopping: Option<Instant>,
    capped: bool,
    /// QoS 0 messages queued, acknowledged once written.
    unwritten_qos0: Vec<u64>,
    /// New messages queued and not yet written.
    unwritten: u64,
}

impl Publisher {
    /// Runs until told to stop and drained; `first` is the connection made
    /// by `Load::start` (already recorded).
    pub(crate) async fn run(self, first: Client) {
        let index = self.index;
        let rec = self.rec.clone();
        let mut st = State {
            payloads: PayloadBuilder::new(self.payload),
            p: self,
            inflight: BTreeMap::new(),
            by_id: HashMap::new(),
            last_id: 0,
            window: MAX_INFLIGHT,
            next_due: Instant::now(),
            stopping: None,
            capped: false,
            unwritten_qos0: Vec::new(),
            unwritten: 0,
        };
        let mut next = Some(first);
        loop {
            let client = match next.take() {
                Some(c) => c,
                None => match st.dial().await {
                    Some(c) => c,
                    None => break,
                },
            };
            match st.serve(client).await {
                End::Done => break,
                End::Lost(why) => {
                    rec.pubs[index].connected.store(false, Ordering::Relaxed);
                    rec.pub_event(index, format!("connection lost: {why}"));
                }
            }
            if st.finished() {
                break;
            }
        }
        rec.pubs[index].connected.store(false, Ordering::Relaxed);
        let left = st.inflight.len();
        let what = if left == 0 {
            "stopped, nothing in flight".to_string()
        } else {
            format!("stopped with {left} messages unacknowledged")
        };
        rec.pub_event(index, what);
    }
}

impl State {
    fn finished(&self) -> bool {
        self.stopping
            .is_some_and(|deadline| self.inflight.is_empty() || Instant::now() >= deadline)
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now() + DRAIN_TIMEOUT);
        }
    }

    /// Reconnects (home node first); `None` when stopped meanwhile.
    async fn dial(&mut self) -> Option<Client> {
        let dialer = self.p.dialer.clone();
        let attempt = dialer.reconnect();
        tokio::pin!(attempt);
        loop {
            if self.finished() {
                return None;
            }
            let deadline = self.stopping;
            tokio::select! {
                c = &mut attempt => {
                    self.on_reconnect(&c);
                    return Some(c.client);
                }
                _ = self.p.stop.changed(), if self.stopping.is_none() => self.begin_stop(),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            }
        }
    }

    fn on_reconnect(&mut self, c: &super::conn::Connected) {
        let present = c.client.session_present;
        let mut what = format!("connected to node {} (session present: {present})", c.node);
        if c.failures > 0 {
            what += &format!(
                " after {} failed attempts, last: {}",
                c.failures,
                c.last_error.as_deref().unwrap_or("-")
            );
        }
        if !present && self.p.qos == QoS::ExactlyOnce && !self.inflight.is_empty() {
            what += &format!("; {} QoS 2 messages abandoned", self.inflight.len());
            self.inflight.clear();
            self.by_id.clear();
        }
        self.p.rec.pub_connected(self.p.index, what, !present);
    }

    /// Runs one connection until it breaks or the publisher is done.
    async fn serve(&mut self, client: Client) -> End {
        self.window = client
            .receive_maximum
            .map_or(MAX_INFLIGHT, |m| usize::from(m).clamp(1, MAX_INFLIGHT));
        let (mut reader, mut writer) = client.split();
        if let Err(e) = self.resend(&mut writer) {
            return End::Lost(format!("{e:#}"));
        }
        let mut live = Liveness::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(e) = self.write(&mut writer).await {
                return End::Lost(e);
            }
            if self.finished() {
                writer.close_with(final_disconnect(), CLOSE_WAIT).await;
                return End::Done;
            }
            let sending = self.stopping.is_none()
                && !self.capped
                && (self.p.qos == QoS::AtMostOnce || self.inflight.len() < self.window);
            let (due, drain) = (self.next_due, self.stopping);
            tokio::select! {
                r = reader.fill() => match r {
                    Ok(true) => {
                        live.input();
                        if let Err(e) = self.handle_input(&mut reader, &mut writer) {
                            return End::Lost(format!("{e:#}"));
                        }
                    }
                    Ok(false) => return End::Lost("closed by the broker".into()),
                    Err(e) => return End::Lost(format!("{e:#}")),
                },
                _ = sleep_until(due), if sending => {
                    if let Err(e) = self.send_due(&mut writer) {
                        return End::Lost(format!("{e:#}"));
                    }
                }
                _ = tick.tick() => match live.check() {
                    Check::Fine => {}
                    Check::SendPing => {
                        if let Err(e) = writer.queue(&Packet::PingReq) {
                            return End::Lost(format!("{e:#}"));
                        }
                    }
                    Check::Dead => return End::Lost("no answer to PINGREQ".into()),
                },
                _ = self.p.stop.changed(), if self.stopping.is_none() => self.begin_stop(),
                _ = sleep_until(drain.unwrap_or_else(Instant::now)), if drain.is_some() => {}
            }
        }
    }

    /// Writes what is queued, bounded by [`WRITE_TIMEOUT`]; then the QoS 0
    /// messages in it count as acknowledged.
    async fn write(&mut self, writer: &mut PacketWriter) -> Result<(), String> {
        if writer.buffered() > 0 {
            let written = match timeout(WRITE_TIMEOUT, writer.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("write blocked for {WRITE_TIMEOUT:?}")),
            };
            if let Err(e) = written {
                self.unwritten_qos0.clear();
                self.unwritten = 0;
                return Err(e);
            }
        }
        let rec = &self.p.rec;
        rec.sent.fetch_add(self.unwritten, Ordering::Relaxed);
        self.unwritten = 0;
        rec.acked(self.p.index, &self.unwritten_qos0);
        self.unwritten_qos0.clear();
        Ok(())
    }

    /// Queues the in-flight messages again after a reconnection.
    fn resend(&mut self, writer: &mut PacketWriter) -> Result<()> {
        let inflight: Vec<(u64, Inflight)> = self.inflight.iter().map(|(&s, &f)| (s, f)).collect();
        for (seq, f) in inflight {
            if f.released {
                writer.queue(&Packet::PubRel(Ack::new(f.packet_id)))?;
            } else {
                self.queue_message(writer, seq, f.packet_id, true)?;
            }
        }
        Ok(())
    }

    fn queue_message(
        &mut self,
        writer: &mut PacketWriter,
        seq: u64,
        packet_id: u16,
        dup: bool,
    ) -> Result<()> {
        let rec = &self.p.rec;
        let sent_at = rec.sent_at(self.p.index, seq).unwrap_or(rec.started);
        let sent_ns = u64::try_from(sent_at.saturating_duration_since(rec.started).as_nanos())
            .unwrap_or(u64::MAX);
        let payload = self.payloads.build(Stamp {
            publisher: self.p.index as u32,
            seq,
            sent_ns,
        });
        let mut packet = publish(&self.p.topic, self.p.qos, packet_id, payload);
        packet.dup = dup;
        writer.queue_publish(&packet)
    }

    /// Creates and queues the messages due now.
    fn send_due(&mut self, writer: &mut PacketWriter) -> Result<()> {
        let now = Instant::now();
        if now > self.next_due + CATCH_UP {
            self.next_due = now;
        }
        let mut n = 0;
        while self.next_due <= now
            && n < BATCH
            && (self.p.qos == QoS::AtMostOnce || self.inflight.len() < self.window)
        {
            let Some((seq, _)) = self.p.rec.new_message(self.p.index, self.p.qos) else {
                self.capped = true;
                self.p
                    .rec
                    .pub_event(self.p.index, "history full: no more new messages".into());
                break;
            };
            self.next_due += self.p.interval;
            n += 1;
            self.unwritten += 1;
            if self.p.qos == QoS::AtMostOnce {
                self.unwritten_qos0.push(seq);
                self.queue_message(writer, seq, 0, false)?;
            } else {
                let packet_id = self.next_packet_id();
                self.inflight.insert(
                    seq,
                    Inflight {
                        packet_id,
                        released: false,
                    },
                );
                self.by_id.insert(packet_id, seq);
                self.queue_message(writer, seq, packet_id, false)?;
            }
        }
        Ok(())
    }

    /// A packet id not in use, 1..=65535 wrapping. [MQTT-2.2.1-3]
    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            if !self.by_id.contains_key(&self.last_id) {
                return self.last_id;
            }
        }
    }

    fn finish_message(&mut self, packet_id: u16) -> Option<u64> {
        let seq = self.by_id.remove(&packet_id)?;
        self.inflight.remove(&seq);
        Some(seq)
    }

    /// Handles every complete packet read: acknowledgements and QoS 2 steps.
    fn handle_input(&mut self, reader: &mut PacketReader, writer: &mut PacketWriter) -> Result<()> {
        let mut acked = Vec::new();
        let result = self.handle_packets(reader, writer, &mut acked);
        self.p.rec.acked(self.p.index, &acked);
        result
    }

    fn handle_packets(
        &mut self,
        reader: &mut PacketReader,
        writer: &mut PacketWriter,
        acked: &mut Vec<u64>,
    ) -> Result<()> {
        let qos = self.p.qos;
        while let Some(packet) = reader.next_buffered()? {
            match packet {
                Packet::PubAck(a) if qos == QoS::AtLeastOnce => {
                    if let Some(seq) = self.finish_message(a.packet_id) {
                        // 5.0 reason codes >= 0x80 refuse the message.
                        if a.reason < 0x80 {
                            acked.push(seq);
                        } else {
                            self.p.rec.refused(self.p.index, seq, a.reason);
                        }
                    }
                }
                Packet::PubRec(a) if qos == QoS::ExactlyOnce => {
                    let Some(&seq) = self.by_id.get(&a.packet_id) else {
                        // Not ours (any more): release it anyway so the
                        // broker can forget it. [MQTT-4.3.3]
                        writer.queue(&Packet::PubRel(Ack::with_reason(a.packet_id, 0x92)))?;
                        continue;
                    };
                    if a.reason >= 0x80 {
                        self.finish_message(a.packet_id);
                        self.p.rec.refused(self.p.index, seq, a.reason);
                        continue;
                    }
                    if let Some(f) = self.inflight.get_mut(&seq) {
                        f.released = true;
                    }
                    writer.queue(&Packet::PubRel(Ack::new(a.packet_id)))?;
                }
                Packet::PubComp(a) if qos == QoS::ExactlyOnce => {
                    let released = self
                        .by_id
                        .get(&a.packet_id)
                        .and_then(|seq| self.inflight.get(seq))
                        .is_some_and(|f| f.released);
                    if released {
                        if let Some(seq) = self.finish_message(a.packet_id) {
                            acked.push(seq);
                        }
                    }
                }
                Packet::Disconnect(d) => {
                    bail!("the broker sent DISCONNECT {:#04x}", d.reason)
                }
                _ => {}
            }
        }
        Ok(())
    }
}
