//! The bridge actor: one remote connection, a bounded inflight window fed
//! from the overflow mailbox, reconnect with backoff. See the module doc of
//! `bridge` for the ack semantics.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_protocol::codec;
use roost_protocol::packet::{Packet, Publish, QoS};
use tokio::net::tcp::OwnedWriteHalf;
use tracing::{info, warn};

use super::conn::{self, Established};
use super::{decode_record, BridgeHandle, BridgeSink, LinkState, Queued};
use crate::broker::{unix_ms, BrokerCtx};
use crate::overflow::{OverflowEntry, OverflowMailbox};

pub struct Bridge;

pub struct BridgeArgs {
    pub handle: Arc<BridgeHandle>,
    pub ctx: Arc<BrokerCtx>,
}

pub enum BridgeMsg {
    /// The mailbox has entries (at most one pending, see `OverflowMailbox`).
    Wake(Queued),
    /// Start a connection attempt.
    Connect,
    Connected {
        gen: u64,
        link: Box<Established>,
    },
    ConnectFailed {
        gen: u64,
        error: String,
    },
    /// A packet from the remote (at most `READ_AHEAD` queued).
    Packet {
        gen: u64,
        packet: Inbound,
        queued: Queued,
    },
    /// The connection ended.
    Lost {
        gen: u64,
        reason: String,
    },
    /// Keep alive check.
    Tick,
    /// Is the remote taking (`blocked` detection)?
    Check,
}

/// What the bridge needs of a packet from the remote (the reader task
/// reduces it, so the actor's messages stay small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    PubAck {
        packet_id: u16,
        reason: u8,
    },
    PingResp,
    Disconnect {
        reason: u8,
    },
    /// Anything else (a remote should send nothing else to a publisher).
    Other(&'static str),
}

impl From<Packet> for Inbound {
    fn from(p: Packet) -> Inbound {
        match p {
            Packet::PubAck(a) => Inbound::PubAck {
                packet_id: a.packet_id,
                reason: a.reason,
            },
            Packet::PingResp => Inbound::PingResp,
            Packet::Disconnect(d) => Inbound::Disconnect { reason: d.reason },
            other => Inbound::Other(other.kind()),
        }
    }
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for BridgeMsg {}

/// Settled messages told to the mailbox at once (see `settle`).
const ACK_EVERY: usize = 32;

/// A publish taken from the mailbox and not yet settled.
struct Inflight {
    seq: u64,
    packet_id: u16,
    topic: ByteString,
    retain: bool,
    payload: Bytes,
    /// Push time (ms since the epoch), for the latency histogram.
    enqueued_at_ms: u64,
    /// Acknowledged by the remote (or needs no ack): may be acked to the
    /// mailbox once everything before it is.
    done: bool,
}

struct Link {
    gen: u64,
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
    window: usize,
    max_packet: usize,
    last_recv: Instant,
}

pub struct BridgeState {
    handle: Arc<BridgeHandle>,
    mailbox: Arc<OverflowMailbox>,
    gen: u64,
    link: Option<Link>,
    connecting: Option<JoinHandle<()>>,
    tick: Option<JoinHandle<()>>,
    check: JoinHandle<()>,
    backoff: Duration,
    /// The last PUBACK, or when the window last became non-empty: no
    /// progress for `ack_timeout` while messages wait for a PUBACK is
    /// `blocked`.
    progress_at: Instant,
    inflight: VecDeque<Inflight>,
    next_packet_id: u16,
    /// Settled at the front of the window, not yet told to the mailbox:
    /// (last seq, count).
    unacked_run: (Option<u64>, usize),
    out: BytesMut,
}

impl Drop for BridgeState {
    fn drop(&mut self) {
        // Also after a panic (ractor does not call post_stop then).
        if let Some(l) = self.link.take() {
            l.reader.abort();
        }
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        if let Some(t) = self.tick.take() {
            t.abort();
        }
        self.check.abort();
        self.handle.set_state(LinkState::Disconnected);
    }
}

impl Actor for Bridge {
    type Msg = BridgeMsg;
    type State = BridgeState;
    type Arguments = BridgeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BridgeMsg>,
        args: BridgeArgs,
    ) -> Result<BridgeState, ActorProcessingErr> {
        let BridgeArgs { handle, ctx } = args;
        let mailbox = open_mailbox(&handle, &ctx).await?;
        let (me, queue) = (myself.clone(), handle.actor_queue.clone());
        mailbox.set_wake(Box::new(move || {
            let _ = me.cast(BridgeMsg::Wake(queue.enter()));
        }));
        let sink = Arc::new(BridgeSink {
            mailbox: mailbox.clone(),
        });
        ctx.routes
            .attach_sink(handle.name(), &handle.config.local_topics, sink);
        let ka = handle.config.keep_alive;
        let tick = (!ka.is_zero()).then(|| myself.send_interval(ka / 2, || BridgeMsg::Tick));
        let every = (handle.config.ack_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let check = myself.send_interval(every, || BridgeMsg::Check);
        myself.cast(BridgeMsg::Connect)?;
        Ok(BridgeState {
            check,
            progress_at: Instant::now(),
            backoff: handle.config.reconnect_min,
            handle,
            mailbox,
            gen: 0,
            link: None,
            connecting: None,
            tick,
            inflight: VecDeque::new(),
            next_packet_id: 0,
            unacked_run: (None, 0),
            out: BytesMut::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<BridgeMsg>,
        msg: BridgeMsg,
        st: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BridgeMsg::Wake(_queued) => st.pump(&myself).await,
            BridgeMsg::Connect => st.connect(&myself),
            BridgeMsg::Connected { gen, link } if gen == st.gen => {
                st.connected(&myself, *link).await
            }
            BridgeMsg::ConnectFailed { gen, error } if gen == st.gen => {
                st.connecting = None;
                warn!(bridge = st.name(), remote = %st.handle.config.remote, %error, "bridge_connect_failed");
                st.retry_later(&myself);
            }
            BridgeMsg::Packet { gen, packet, .. } if st.is_current(gen) => {
                st.received(&myself, packet).await
            }
            BridgeMsg::Lost { gen, reason } if st.is_current(gen) => st.lost(&myself, &reason),
            BridgeMsg::Tick => st.keep_alive(&myself).await,
            BridgeMsg::Check => {
                st.flush_acks();
                st.check_progress()
            }
            // A message of an earlier connection.
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<BridgeMsg>,
        st: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(mut link) = st.link.take() {
            link.reader.abort();
            let mut out = BytesMut::new();
            let disconnect = Packet::Disconnect(Default::default());
            if codec::encode(&disconnect, st.handle.config.protocol, &mut out).is_ok() {
                let _ = conn::write(&mut link.writer, &out, Duration::from_millis(500)).await;
            }
        }
        info!(bridge = st.name(), "bridge_stopped");
        Ok(())
    }
}

/// The handle's mailbox, opened by the first start (on a blocking thread:
/// durable mode reads the store); a restarted actor rewinds it.
pub(super) async fn open_mailbox(
    handle: &Arc<BridgeHandle>,
    ctx: &Arc<BrokerCtx>,
) -> Result<Arc<OverflowMailbox>, ActorProcessingErr> {
    if let Some(m) = handle.mailbox() {
        m.rewind();
        return Ok(m);
    }
    let name = format!("bridge/{}", handle.name());
    let config = handle.config.buffer.clone();
    let storage = ctx.storage.clone();
    let opened = tokio::task::spawn_blocking(move || {
        OverflowMailbox::open(&name, config, storage, Box::new(|| {}))
    })
    .await??;
    let m = Arc::new(opened);
    *handle.mailbox.lock() = Some(m.clone());
    Ok(m)
}

impl BridgeState {
    fn name(&self) -> &str {
        self.handle.name()
    }

    fn is_current(&self, gen: u64) -> bool {
        self.link.as_ref().is_some_and(|l| l.gen == gen)
    }

    fn connect(&mut self, myself: &ActorRef<BridgeMsg>) {
        if self.link.is_some() || self.connecting.is_some() {
            return;
        }
        self.gen += 1;
        let gen = self.gen;
        self.handle.set_state(LinkState::Connecting);
        info!(bridge = self.name(), remote = %self.handle.config.remote, "bridge_connecting");
        let cfg = self.handle.config.clone();
        let me = myself.clone();
        self.connecting = Some(tokio::spawn(async move {
            let msg = match conn::establish(&cfg, conn::MAX_ACK_PACKET).await {
                Ok(link) => BridgeMsg::Connected {
                    gen,
                    link: Box::new(link),
                },
                Err(error) => BridgeMsg::ConnectFailed { gen, error },
            };
            let _ = me.cast(msg);
        }));
    }

    fn retry_later(&mut self, myself: &ActorRef<BridgeMsg>) {
        self.handle.set_state(LinkState::Disconnected);
        myself.send_after(self.backoff, || BridgeMsg::Connect);
        self.backoff = (self.backoff * 2).min(self.handle.config.reconnect_max);
    }

    async fn connected(&mut self, myself: &ActorRef<BridgeMsg>, link: Established) {
        self.connecting = None;
        let cfg = &self.handle.config;
        let Established {
            writer,
            reader,
            buf,
            connack,
        } = link;
        let receive_max = connack.properties.receive_maximum.unwrap_or(u16::MAX);
        let max_packet = connack.properties.maximum_packet_size.unwrap_or(u32::MAX);
        let (gen, me, me2) = (self.gen, myself.clone(), myself.clone());
        let reader = tokio::spawn(conn::read_loop(
            reader,
            buf,
            cfg.protocol,
            conn::MAX_ACK_PACKET,
            self.handle.actor_queue.clone(),
            move |p, queued| {
                let packet = p.into();
                me.cast(BridgeMsg::Packet {
                    gen,
                    packet,
                    queued,
                })
                .is_ok()
            },
            move |reason| {
                let _ = me2.cast(BridgeMsg::Lost { gen, reason });
            },
        ));
        self.link = Some(Link {
            gen: self.gen,
            writer,
            reader,
            window: usize::from(cfg.max_inflight.min(receive_max).max(1)),
            max_packet: usize::try_from(max_packet).unwrap_or(usize::MAX),
            last_recv: Instant::now(),
        });
        self.backoff = cfg.reconnect_min;
        self.handle.set_state(LinkState::Connected);
        info!(
            bridge = self.name(),
            remote = %cfg.remote,
            session_present = connack.session_present,
            resend = self.inflight.iter().filter(|i| !i.done).count(),
            "bridge_connected"
        );
        if let Err(e) = self.resend().await {
            return self.lost(myself, &e);
        }
        self.pump(myself).await;
    }

    fn lost(&mut self, myself: &ActorRef<BridgeMsg>, reason: &str) {
        if let Some(link) = self.link.take() {
            link.reader.abort();
        }
        warn!(bridge = self.name(), remote = %self.handle.config.remote, reason, inflight = self.inflight.len(), "bridge_disconnected");
        self.retry_later(myself);
    }

    /// After a reconnect: the unacknowledged window again, in order, DUP.
    async fn resend(&mut self) -> Result<(), String> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let (protocol, qos) = (self.handle.config.protocol, self.handle.config.qos);
        for i in self.inflight.iter().filter(|i| !i.done) {
            let p = publish(i, qos, true);
            codec::encode_publish(&p, protocol, &mut out).map_err(|e| e.to_string())?;
            self.handle.counters.retried.fetch_add(1, Ordering::Relaxed);
        }
        let r = self.write(&out).await;
        self.out = out;
        r
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let timeout = self.handle.config.connect_timeout;
        match self.link.as_mut() {
            Some(link) if !bytes.is_empty() => conn::write(&mut link.writer, bytes, timeout).await,
            _ => Ok(()),
        }
    }

    /// Fill the window from the mailbox while connected and not paused
    /// (`BridgeHandle::resume` wakes the actor again).
    async fn pump(&mut self, myself: &ActorRef<BridgeMsg>) {
        loop {
            if self.handle.is_paused() {
                return;
            }
            let Some(link) = &self.link else { return };
            let room = link.window.saturating_sub(self.unacked());
            // Refill when half the window is free (or it is empty): one
            // read of the queue per run, not per PUBACK.
            if room == 0 || (self.unacked() > 0 && room < link.window.div_ceil(2)) {
                return;
            }
            let entries = match self.mailbox.take(room) {
                Ok(e) if e.is_empty() => return,
                Ok(e) => e,
                Err(e) => {
                    warn!(bridge = self.name(), error = %e, "bridge_mailbox_read_failed");
                    return;
                }
            };
            if self.unacked() == 0 {
                // The window starts filling: time runs from now.
                self.progress_at = Instant::now();
            }
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            for e in entries {
                self.stage(e, &mut out);
            }
            let written = self.write(&out).await;
            self.out = out;
            if let Err(e) = written {
                return self.lost(myself, &e);
            }
            if self.handle.config.qos == QoS::AtMostOnce {
                let now = unix_ms();
                let mut n = 0;
                for i in self.inflight.iter_mut().filter(|i| !i.done) {
                    i.done = true;
                    n += 1;
                    let waited = now.saturating_sub(i.enqueued_at_ms);
                    self.handle.latency.observe_ms(waited);
                }
                self.handle
                    .counters
                    .sent
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            self.settle();
        }
    }

    /// Encode one taken entry into `out` and put it in the window.
    fn stage(&mut self, e: OverflowEntry, out: &mut BytesMut) {
        let handle = self.handle.clone();
        let c = &handle.counters;
        let Some((topic, retain, payload)) = decode_record(&e.payload) else {
            c.dropped_corrupt.fetch_add(1, Ordering::Relaxed);
            warn!(bridge = self.name(), seq = e.seq, "bridge_record_corrupt");
            return self.push_done(e.seq);
        };
        let cfg = &handle.config;
        let topic = if cfg.remote_prefix.is_empty() {
            topic
        } else {
            ByteString::from(format!("{}{}", cfg.remote_prefix, &*topic))
        };
        let packet_id = match cfg.qos {
            QoS::AtMostOnce => 0,
            _ => self.next_packet_id(),
        };
        let entry = Inflight {
            seq: e.seq,
            packet_id,
            topic,
            retain,
            payload,
            enqueued_at_ms: e.enqueued_at_ms,
            done: false,
        };
        let start = out.len();
        let encoded = codec::encode_publish(&publish(&entry, cfg.qos, false), cfg.protocol, out);
        let max = self.link.as_ref().map_or(usize::MAX, |l| l.max_packet);
        if encoded.is_err() || out.len() - start > max {
            out.truncate(start);
            c.dropped_too_large.fetch_add(1, Ordering::Relaxed);
            warn!(bridge = self.name(), topic = %entry.topic, "bridge_message_too_large");
            return self.push_done(e.seq);
        }
        self.inflight.push_back(entry);
    }

    fn push_done(&mut self, seq: u64) {
        self.inflight.push_back(Inflight {
            seq,
            packet_id: 0,
            topic: ByteString::new(),
            retain: false,
            payload: Bytes::new(),
            enqueued_at_ms: 0,
            done: true,
        });
    }

    fn unacked(&self) -> usize {
        self.inflight.iter().filter(|i| !i.done).count()
    }

    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|i| !i.done && i.packet_id == id) {
                return id;
            }
        }
    }

    /// Acknowledge to the mailbox every settled entry at the front.
    ///
    /// The mailbox is told in runs of `ACK_EVERY` (or when nothing is in
    /// flight, or at the next `Check`): each acknowledgement is a range
    /// delete in the store, and one per PUBACK would leave a tombstone per
    /// message for every later read of the queue to skip. A kill before
    /// the run is told sends those again (at least once).
    fn settle(&mut self) {
        while self.inflight.front().is_some_and(|i| i.done) {
            if let Some(i) = self.inflight.pop_front() {
                self.unacked_run.0 = Some(i.seq);
                self.unacked_run.1 += 1;
            }
        }
        if self.unacked_run.1 >= ACK_EVERY || self.inflight.is_empty() {
            self.flush_acks();
        }
        self.handle
            .inflight
            .store(self.inflight.len() as u64, Ordering::Relaxed);
    }

    /// Acknowledge the settled run to the mailbox.
    fn flush_acks(&mut self) {
        if let (Some(seq), _) = std::mem::take(&mut self.unacked_run) {
            if let Err(e) = self.mailbox.ack(seq) {
                warn!(bridge = self.name(), error = %e, "bridge_mailbox_ack_failed");
            }
        }
    }

    async fn received(&mut self, myself: &ActorRef<BridgeMsg>, packet: Inbound) {
        if let Some(link) = self.link.as_mut() {
            link.last_recv = Instant::now();
        }
        match packet {
            Inbound::PubAck { packet_id, reason } => {
                let c = &self.handle.counters;
                let hit = self
                    .inflight
                    .iter_mut()
                    .find(|i| !i.done && i.packet_id == packet_id);
                self.progress_at = Instant::now();
                match hit {
                    Some(i) => {
                        i.done = true;
                        if reason >= 0x80 {
                            c.dropped_rejected.fetch_add(1, Ordering::Relaxed);
                            warn!(bridge = self.handle.name(), topic = %i.topic, reason, "bridge_publish_rejected");
                        } else {
                            c.sent.fetch_add(1, Ordering::Relaxed);
                            let waited = unix_ms().saturating_sub(i.enqueued_at_ms);
                            self.handle.latency.observe_ms(waited);
                        }
                    }
                    None => warn!(
                        bridge = self.handle.name(),
                        packet_id, "bridge_puback_unknown_packet_id"
                    ),
                }
                self.settle();
                self.check_progress();
                self.pump(myself).await;
            }
            Inbound::PingResp => {}
            Inbound::Disconnect { reason } => {
                self.lost(myself, &format!("DISCONNECT {reason:#04x} from the remote"))
            }
            Inbound::Other(kind) => warn!(bridge = self.name(), kind, "bridge_unexpected_packet"),
        }
    }

    /// `blocked` while sent messages have waited for a PUBACK longer than
    /// `ack_timeout` with no PUBACK meanwhile; `connected` again on the next.
    fn check_progress(&mut self) {
        if self.link.is_none() {
            return;
        }
        let stalled =
            self.unacked() > 0 && self.progress_at.elapsed() > self.handle.config.ack_timeout;
        if stalled {
            if self.handle.state() != LinkState::Blocked {
                warn!(
                    bridge = self.name(),
                    unacked = self.unacked(),
                    ack_timeout_ms = self.handle.config.ack_timeout.as_millis() as u64,
                    "bridge_blocked"
                );
            }
            self.handle.set_state(LinkState::Blocked);
        } else {
            self.handle.set_state(LinkState::Connected);
        }
    }

    async fn keep_alive(&mut self, myself: &ActorRef<BridgeMsg>) {
        let ka = self.handle.config.keep_alive;
        let Some(link) = &self.link else {
            return;
        };
        if link.last_recv.elapsed() > ka.mul_f32(1.5) {
            return self.lost(myself, "keep alive timeout");
        }
        let mut out = BytesMut::new();
        if codec::encode(&Packet::PingReq, self.handle.config.protocol, &mut out).is_ok() {
            if let Err(e) = self.write(&out).await {
                self.lost(myself, &e);
            }
        }
    }
}

fn publish(i: &Inflight, qos: QoS, dup: bool) -> Publish {
    Publish {
        dup: dup && qos != QoS::AtMostOnce,
        qos,
        retain: i.retain,
        topic: i.topic.clone(),
        packet_id: i.packet_id,
        payload: i.payload.clone(),
        ..Default::default()
    }
}
