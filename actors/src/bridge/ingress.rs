//! The MQTT ingress bridge: subscribes to `remote_topics` on the remote
//! broker and publishes what arrives locally, on `local_prefix + (remote
//! topic without remote_prefix)`.
//!
//! # Semantics
//! - A remote PUBLISH is published locally inline (`broker::publish`: the
//!   local publish path never waits, its queues are bounded and count their
//!   drops), then acknowledged to the remote (QoS 1 PUBACK): at least once.
//!   The remote's window bounds what is in flight: its own inflight limit,
//!   and for 5.0 our Receive Maximum (`max_inflight`).
//! - The subscription is made on every connect (`qos` 0 or 1); with
//!   `clean_start = false` the remote keeps the session and queues for the
//!   bridge while it is away.
//! - Paused: the bridge disconnects and stays away until resumed (a
//!   persistent remote session queues meanwhile, on the remote).
//! - A message whose local topic is not a valid topic name is acknowledged
//!   and dropped (`rejected`), with a warning at most every 10 s.
//! - Keep alive and reconnect backoff as for egress.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_protocol::message::ClientId;
use roost_protocol::packet::{
    Ack, Packet, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use roost_protocol::{codec, Message};
use tokio::net::tcp::OwnedWriteHalf;
use tracing::{info, warn};

use super::actor::BridgeArgs;
use super::conn::{self, Established};
use super::{BridgeHandle, BridgeKind, IngressConfig, LinkState, Queued};
use crate::broker::{self, BrokerCtx};

/// Largest packet an ingress bridge accepts (announced to a 5.0 remote).
const MAX_INGRESS_PACKET: u32 = 16 << 20;
/// The packet id of the bridge's SUBSCRIBE.
const SUBSCRIBE_ID: u16 = 1;

pub struct IngressBridge;

pub enum IngressMsg {
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
        packet: Box<Packet>,
        queued: Queued,
    },
    Lost {
        gen: u64,
        reason: String,
    },
    /// Paused or resumed by an operator.
    Control,
    Tick,
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for IngressMsg {}

struct Link {
    gen: u64,
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
    last_recv: Instant,
}

pub struct IngressState {
    handle: Arc<BridgeHandle>,
    ctx: Arc<BrokerCtx>,
    ingress: IngressConfig,
    publisher: ClientId,
    gen: u64,
    link: Option<Link>,
    connecting: Option<JoinHandle<()>>,
    retry: Option<JoinHandle<()>>,
    tick: Option<JoinHandle<()>>,
    backoff: Duration,
}

impl Drop for IngressState {
    fn drop(&mut self) {
        // Also after a panic (ractor does not call post_stop then).
        for t in [
            self.link.take().map(|l| l.reader),
            self.connecting.take(),
            self.retry.take(),
            self.tick.take(),
        ]
        .into_iter()
        .flatten()
        {
            t.abort();
        }
        self.handle.set_control(None);
        self.handle.set_state(LinkState::Disconnected);
    }
}

impl Actor for IngressBridge {
    type Msg = IngressMsg;
    type State = IngressState;
    type Arguments = BridgeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<IngressMsg>,
        args: BridgeArgs,
    ) -> Result<IngressState, ActorProcessingErr> {
        let BridgeArgs { handle, ctx } = args;
        let BridgeKind::MqttIngress(ingress) = handle.config.kind.clone() else {
            return Err(format!("bridge {}: not an ingress bridge", handle.name()).into());
        };
        let me = myself.clone();
        handle.set_control(Some(Box::new(move || {
            let _ = me.cast(IngressMsg::Control);
        })));
        let ka = handle.config.keep_alive;
        let tick = (!ka.is_zero()).then(|| myself.send_interval(ka / 2, || IngressMsg::Tick));
        myself.cast(IngressMsg::Connect)?;
        Ok(IngressState {
            publisher: ClientId::new(format!("$bridge/{}", handle.name())),
            backoff: handle.config.reconnect_min,
            handle,
            ctx,
            ingress,
            gen: 0,
            link: None,
            connecting: None,
            retry: None,
            tick,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<IngressMsg>,
        msg: IngressMsg,
        st: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            IngressMsg::Connect => {
                st.retry = None;
                st.connect(&myself)
            }
            IngressMsg::Connected { gen, link } if gen == st.gen => {
                st.connected(&myself, *link).await
            }
            IngressMsg::ConnectFailed { gen, error } if gen == st.gen => {
                st.connecting = None;
                warn!(bridge = st.name(), remote = %st.handle.config.remote, %error, "bridge_connect_failed");
                st.retry_later(&myself);
            }
            IngressMsg::Packet { gen, packet, .. } if st.is_current(gen) => {
                st.received(&myself, *packet).await
            }
            IngressMsg::Lost { gen, reason } if st.is_current(gen) => st.lost(&myself, &reason),
            IngressMsg::Control => st.control(&myself).await,
            IngressMsg::Tick => st.keep_alive(&myself).await,
            // A message of an earlier connection.
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<IngressMsg>,
        st: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
        st.disconnect().await;
        info!(bridge = st.name(), "bridge_stopped");
        Ok(())
    }
}

impl IngressState {
    fn name(&self) -> &str {
        self.handle.name()
    }

    fn is_current(&self, gen: u64) -> bool {
        self.link.as_ref().is_some_and(|l| l.gen == gen)
    }

    fn connect(&mut self, myself: &ActorRef<IngressMsg>) {
        if self.link.is_some() || self.connecting.is_some() || self.handle.is_paused() {
            return;
        }
        self.gen += 1;
        let gen = self.gen;
        self.handle.set_state(LinkState::Connecting);
        let cfg = self.handle.config.clone();
        let me = myself.clone();
        self.connecting = Some(tokio::spawn(async move {
            let msg = match conn::establish(&cfg, MAX_INGRESS_PACKET).await {
                Ok(link) => IngressMsg::Connected {
                    gen,
                    link: Box::new(link),
                },
                Err(error) => IngressMsg::ConnectFailed { gen, error },
            };
            let _ = me.cast(msg);
        }));
    }

    fn retry_later(&mut self, myself: &ActorRef<IngressMsg>) {
        self.handle.set_state(LinkState::Disconnected);
        let (me, backoff) = (myself.clone(), self.backoff);
        self.retry = Some(tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = me.cast(IngressMsg::Connect);
        }));
        self.backoff = (self.backoff * 2).min(self.handle.config.reconnect_max);
    }

    async fn connected(&mut self, myself: &ActorRef<IngressMsg>, link: Established) {
        self.connecting = None;
        let cfg = &self.handle.config;
        let Established {
            writer,
            reader,
            buf,
            connack,
        } = link;
        let (gen, me, me2) = (self.gen, myself.clone(), myself.clone());
        let reader = tokio::spawn(conn::read_loop(
            reader,
            buf,
            cfg.protocol,
            MAX_INGRESS_PACKET,
            self.handle.actor_queue.clone(),
            move |p, queued| {
                let packet = Box::new(p);
                me.cast(IngressMsg::Packet {
                    gen,
                    packet,
                    queued,
                })
                .is_ok()
            },
            move |reason| {
                let _ = me2.cast(IngressMsg::Lost { gen, reason });
            },
        ));
        self.link = Some(Link {
            gen,
            writer,
            reader,
            last_recv: Instant::now(),
        });
        info!(
            bridge = self.name(),
            remote = %cfg.remote,
            session_present = connack.session_present,
            "bridge_connected"
        );
        let qos = cfg.qos;
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: SUBSCRIBE_ID,
            filters: self
                .ingress
                .remote_topics
                .iter()
                .map(|f| SubscribeFilter {
                    filter: ByteString::from(f.as_str()),
                    options: SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                })
                .collect(),
            properties: Default::default(),
        });
        if let Err(e) = self.send(&subscribe).await {
            self.lost(myself, &e);
        }
    }

    fn lost(&mut self, myself: &ActorRef<IngressMsg>, reason: &str) {
        if let Some(link) = self.link.take() {
            link.reader.abort();
        }
        warn!(bridge = self.name(), remote = %self.handle.config.remote, reason, "bridge_disconnected");
        if !self.handle.is_paused() {
            self.retry_later(myself);
        } else {
            self.handle.set_state(LinkState::Disconnected);
        }
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), String> {
        let mut out = BytesMut::new();
        codec::encode(packet, self.handle.config.protocol, &mut out).map_err(|e| e.to_string())?;
        let timeout = self.handle.config.connect_timeout;
        match self.link.as_mut() {
            Some(link) => conn::write(&mut link.writer, &out, timeout).await,
            None => Ok(()),
        }
    }

    async fn received(&mut self, myself: &ActorRef<IngressMsg>, packet: Packet) {
        if let Some(link) = self.link.as_mut() {
            link.last_recv = Instant::now();
        }
        match packet {
            Packet::Publish(p) => {
                let ack = (p.qos != QoS::AtMostOnce).then_some(p.packet_id);
                self.publish_locally(p);
                if let Some(id) = ack {
                    if let Err(e) = self.send(&Packet::PubAck(Ack::new(id))).await {
                        self.lost(myself, &e);
                    }
                }
            }
            Packet::SubAck(a) => {
                for (filter, code) in self.ingress.remote_topics.iter().zip(&a.reason_codes) {
                    if *code >= 0x80 {
                        warn!(bridge = self.name(), filter = %filter, code, "bridge_subscribe_refused");
                    }
                }
                self.backoff = self.handle.config.reconnect_min;
                self.handle.set_state(LinkState::Connected);
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => self.lost(
                myself,
                &format!("DISCONNECT {:#04x} from the remote", d.reason),
            ),
            other => warn!(
                bridge = self.name(),
                kind = other.kind(),
                "bridge_unexpected_packet"
            ),
        }
    }

    /// The remote's message on its local topic, routed like any publish.
    fn publish_locally(&mut self, p: Publish) {
        let c = &self.handle.counters;
        c.received.fetch_add(1, Ordering::Relaxed);
        let cfg = &self.handle.config;
        let rest = p
            .topic
            .strip_prefix(cfg.remote_prefix.as_str())
            .unwrap_or(&p.topic);
        let topic = format!("{}{rest}", self.ingress.local_prefix);
        if let Err(e) = roost_protocol::topic::validate_topic_name(&topic) {
            c.dropped_rejected.fetch_add(1, Ordering::Relaxed);
            if c.may_log_drop() {
                warn!(bridge = self.name(), topic, error = %e, "bridge_ingress_topic_invalid");
            }
            return;
        }
        let mut msg = Message::from_publish(p, self.publisher.clone(), Instant::now());
        msg.topic = ByteString::from(topic);
        // At most QoS 1 was subscribed.
        msg.qos = msg.qos.min(QoS::AtLeastOnce);
        msg.id = roost_protocol::MessageId::next();
        broker::publish(&self.ctx, Arc::new(msg));
        c.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Paused: leave the remote until resumed; resumed: connect again.
    async fn control(&mut self, myself: &ActorRef<IngressMsg>) {
        if self.handle.is_paused() {
            self.disconnect().await;
            if let Some(r) = self.retry.take() {
                r.abort();
            }
            self.handle.set_state(LinkState::Disconnected);
        } else {
            self.backoff = self.handle.config.reconnect_min;
            self.connect(myself);
        }
    }

    /// A clean DISCONNECT, if connected.
    async fn disconnect(&mut self) {
        if let Some(c) = self.connecting.take() {
            c.abort();
            // The attempt's generation is over.
            self.gen += 1;
        }
        if self.link.is_some() {
            let _ = self.send(&Packet::Disconnect(Default::default())).await;
        }
        if let Some(link) = self.link.take() {
            link.reader.abort();
        }
    }

    async fn keep_alive(&mut self, myself: &ActorRef<IngressMsg>) {
        let ka = self.handle.config.keep_alive;
        let Some(link) = &self.link else {
            return;
        };
        if link.last_recv.elapsed() > ka.mul_f32(1.5) {
            return self.lost(myself, "keep alive timeout");
        }
        if let Err(e) = self.send(&Packet::PingReq).await {
            self.lost(myself, &e);
        }
    }
}
