//! A recording subscriber: a persistent session subscribed to
//! `chaos/<run_id>/#` at QoS 2, recording every PUBLISH it receives.
//!
//! QoS 1: recorded, then PUBACK. QoS 2 (the receiver's "method B" of the
//! MQTT spec, 4.3.3): the first PUBLISH of a packet id is recorded and
//! answered with PUBREC, the packet id is kept until its PUBREL (answered
//! with PUBCOMP); a PUBLISH of a packet id still awaiting PUBREL is the
//! same delivery (PUBREC again, not recorded). The awaiting ids are session
//! state: kept across a reconnection that finds the session, dropped with
//! it when the broker answers Session Present = 0 (the subscriber then
//! subscribes again).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Result};
use bytestring::ByteString;
use roost_protocol::packet::{
    Ack, Packet, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::sync::{oneshot, watch};
use tokio::time::timeout;

use super::conn::{final_disconnect, Check, Dialer, Liveness, CLOSE_WAIT, TICK, WRITE_TIMEOUT};
use super::record::{lock, Incoming, Recorder};
use crate::bench::payload::Stamp;
use crate::client::{Client, PacketReader, PacketWriter};

enum End {
    Stopped,
    Lost(String),
}

pub(crate) struct Subscriber {
    pub(crate) rec: Arc<Recorder>,
    pub(crate) index: usize,
    /// `chaos/<run_id>/`: every topic of the run starts with it.
    pub(crate) prefix: String,
    pub(crate) dialer: Dialer,
    pub(crate) stop: watch::Receiver<bool>,
    /// Told the outcome of the first SUBACK.
    pub(crate) ready: Option<oneshot::Sender<Result<QoS, String>>>,
}

struct State {
    s: Subscriber,
    /// QoS 2 packet ids received and not yet released.
    awaiting_rel: HashSet<u16>,
    /// A SUBACK granted the subscription in the current session.
    subscribed: bool,
    /// The SUBSCRIBE waiting for its SUBACK.
    sub_pending: Option<u16>,
    last_id: u16,
    batch: Vec<Incoming>,
}

impl Subscriber {
    /// Runs until told to stop; `first` is the connection made by
    /// `Load::start` (already recorded), with a new session.
    pub(crate) async fn run(self, first: Client) {
        let index = self.index;
        let rec = self.rec.clone();
        let mut st = State {
            s: self,
            awaiting_rel: HashSet::new(),
            subscribed: false,
            sub_pending: None,
            last_id: 0,
            batch: Vec::new(),
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
                End::Stopped => break,
                End::Lost(why) => {
                    rec.subs[index].connected.store(false, Ordering::Relaxed);
                    rec.sub_event(index, format!("connection lost: {why}"));
                }
            }
        }
        rec.subs[index].connected.store(false, Ordering::Relaxed);
        if let Some(ready) = st.s.ready.take() {
            let _ = ready.send(Err("stopped before subscribing".into()));
        }
    }
}

impl State {
    fn stopped(&self) -> bool {
        *self.s.stop.borrow()
    }

    async fn dial(&mut self) -> Option<Client> {
        if self.stopped() {
            return None;
        }
        let dialer = self.s.dialer.clone();
        tokio::select! {
            c = dialer.reconnect() => {
                let present = c.client.session_present;
                let mut what = format!("connected to node {} (session present: {present})", c.node);
                if c.failures > 0 {
                    what += &format!(
                        " after {} failed attempts, last: {}",
                        c.failures,
                        c.last_error.as_deref().unwrap_or("-")
                    );
                }
                if !present {
                    self.awaiting_rel.clear();
                    self.subscribed = false;
                }
                self.s.rec.sub_connected(self.s.index, what, !present);
                Some(c.client)
            }
            _ = self.s.stop.changed() => None,
        }
    }

    async fn serve(&mut self, client: Client) -> End {
        let (mut reader, mut writer) = client.split();
        self.sub_pending = None;
        if !self.subscribed {
            if let Err(e) = self.queue_subscribe(&mut writer) {
                return End::Lost(format!("{e:#}"));
            }
        }
        let mut live = Liveness::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if writer.buffered() > 0 {
                match timeout(WRITE_TIMEOUT, writer.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return End::Lost(format!("{e:#}")),
                    Err(_) => return End::Lost(format!("write blocked for {WRITE_TIMEOUT:?}")),
                }
            }
            if self.stopped() {
                writer.close_with(final_disconnect(), CLOSE_WAIT).await;
                return End::Stopped;
            }
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
                _ = tick.tick() => match live.check() {
                    Check::Fine => {}
                    Check::SendPing => {
                        if let Err(e) = writer.queue(&Packet::PingReq) {
                            return End::Lost(format!("{e:#}"));
                        }
                    }
                    Check::Dead => return End::Lost("no answer to PINGREQ".into()),
                },
                // Loops back to the stop check above; a dropped sender
                // (the `Load` is gone) stops too.
                r = self.s.stop.changed() => if r.is_err() {
                    writer.close_with(final_disconnect(), CLOSE_WAIT).await;
                    return End::Stopped;
                },
            }
        }
    }

    fn queue_subscribe(&mut self, writer: &mut PacketWriter) -> Result<()> {
        self.last_id = self.last_id.checked_add(1).unwrap_or(1);
        let packet_id = self.last_id;
        let filter = format!("{}#", self.s.prefix);
        writer.queue(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: ByteString::from(filter),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: Default::default(),
        }))?;
        self.sub_pending = Some(packet_id);
        Ok(())
    }

    /// Handles every complete packet read, then records the deliveries
    /// (also when a packet ends the connection).
    fn handle_input(&mut self, reader: &mut PacketReader, writer: &mut PacketWriter) -> Result<()> {
        let at = std::time::Instant::now();
        let mut batch = std::mem::take(&mut self.batch);
        let result = self.handle_packets(reader, writer, &mut batch);
        self.s.rec.deliveries(self.s.index, &batch, at);
        batch.clear();
        self.batch = batch;
        result
    }

    fn handle_packets(
        &mut self,
        reader: &mut PacketReader,
        writer: &mut PacketWriter,
        batch: &mut Vec<Incoming>,
    ) -> Result<()> {
        while let Some(packet) = reader.next_buffered()? {
            match packet {
                Packet::Publish(p) => {
                    let mut item = self.classify(&p);
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => writer.queue(&Packet::PubAck(Ack::new(p.packet_id)))?,
                        QoS::ExactlyOnce => {
                            if !self.awaiting_rel.insert(p.packet_id) {
                                item = Incoming::Repeat;
                            }
                            writer.queue(&Packet::PubRec(Ack::new(p.packet_id)))?;
                        }
                    }
                    batch.push(item);
                }
                Packet::PubRel(a) => {
                    // 0x92: Packet Identifier not found. [MQTT-3.7.2.1]
                    let reason = if self.awaiting_rel.remove(&a.packet_id) {
                        0
                    } else {
                        0x92
                    };
                    writer.queue(&Packet::PubComp(Ack::with_reason(a.packet_id, reason)))?;
                }
                Packet::SubAck(a) if Some(a.packet_id) == self.sub_pending => {
                    self.sub_pending = None;
                    let code = a.reason_codes.first().copied().unwrap_or(0x80);
                    match QoS::from_u8(code) {
                        Some(granted) => {
                            self.subscribed = true;
                            lock(&self.s.rec.subs[self.s.index].log).history.granted =
                                Some(granted);
                            if let Some(ready) = self.s.ready.take() {
                                let _ = ready.send(Ok(granted));
                            }
                        }
                        None => {
                            let msg = format!("SUBSCRIBE refused with {code:#04x}");
                            if let Some(ready) = self.s.ready.take() {
                                let _ = ready.send(Err(msg.clone()));
                            }
                            bail!(msg);
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

    /// What a PUBLISH is to this run.
    fn classify(&self, p: &Publish) -> Incoming {
        let Some(rest) = p.topic.strip_prefix(self.s.prefix.as_str()) else {
            return Incoming::Foreign;
        };
        if let Some(i) = rest.strip_prefix("probe/") {
            return i.parse().map_or(Incoming::Foreign, Incoming::Probe);
        }
        match Stamp::parse(&p.payload) {
            Some(stamp) if rest.parse::<u32>() == Ok(stamp.publisher) => Incoming::Message {
                publisher: stamp.publisher,
                seq: stamp.seq,
                qos: p.qos,
                dup: p.dup,
            },
            _ => Incoming::Foreign,
        }
    }
}
