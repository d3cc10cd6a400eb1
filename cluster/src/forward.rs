//! Cross-node delivery.
//!
//! A peer with routes is a [`RouteSink`] of the local route table: the
//! publishing connection offers a matching message to the peer's
//! [`OverflowMailbox`] (bounded in bytes; the oldest are dropped and counted
//! past it) and goes on: it never waits for the network. The `forwarder`
//! actor drains each peer's mailbox in batches (one `Data::Forward` per
//! batch, not per subscriber) to the peer's `ingress` actor, with a window
//! of unacknowledged batches. The peer's `ingress` publishes each message to
//! its own sessions and acknowledges the batch; the acknowledgement removes
//! it from the mailbox. When the link drops, what was sent and not
//! acknowledged is sent again once it is back; the receiver skips seqs it
//! already applied, so a message is delivered once per link incarnation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use ractor::message::BoxedDowncastErr;
use ractor::message::SerializedMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_actors::broker::{dispatch_from_peer, dispatch_shared_from_peer, unix_ms, Counters};
use roost_actors::overflow::{OverflowConfig, OverflowMailbox, OverflowMode, PushOutcome};
use roost_actors::router::{RouteOutcome, RouteSink};
use roost_actors::valve::Valve;
use roost_protocol::Message;
use roost_storage::StoredMessage;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use crate::shared::ClusterShared;
use crate::wire::{self, Data};

/// Route-table sink name of a peer.
pub fn sink_name(peer: &str) -> String {
    format!("peer:{peer}")
}

/// What this node keeps per peer for forwarding.
pub struct PeerLink {
    pub peer: String,
    pub mailbox: Arc<OverflowMailbox>,
    /// The peer's ingress actor while the link is up.
    pub remote: RwLock<Option<ActorRef<IngressMsg>>>,
    /// Batches sent and not acknowledged.
    pub in_flight: AtomicU64,
    pub forwarded: AtomicU64,
    pub up: AtomicBool,
    /// Flow control: publishers that offered this peer a message pause
    /// while its backlog is over `forward_buffer / 16` bytes and the peer
    /// is acknowledging (see `roost_actors::valve`).
    pub valve: Arc<Valve>,
}

impl PeerLink {
    pub fn new(peer: &str, forward_buffer: u64) -> Result<PeerLink, String> {
        let config = OverflowConfig {
            mode: OverflowMode::Memory,
            memory_bytes: forward_buffer,
            max_bytes: forward_buffer,
            request_ttl: None,
        };
        let mailbox = OverflowMailbox::open(&sink_name(peer), config, None, Box::new(|| {}))
            .map_err(|e| e.to_string())?;
        let high = (forward_buffer / 16).max(64 << 10);
        Ok(PeerLink {
            peer: peer.to_owned(),
            mailbox: Arc::new(mailbox),
            remote: RwLock::new(None),
            in_flight: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            up: AtomicBool::new(false),
            valve: Arc::new(Valve::new(high, high / 2)),
        })
    }

    /// Publish the mailbox's backlog to the valve.
    fn update_valve(&self) {
        self.valve.set_level(self.mailbox.backlog_bytes());
    }
}

/// One entry of a forward queue (and of a `Data::Forward` batch).
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    /// To the receiver's sessions whose subscriptions match.
    Normal(StoredMessage),
    /// To one of the receiver's members of a shared group: the sender
    /// picked the receiver for it.
    Shared {
        group: String,
        filter: String,
        message: StoredMessage,
    },
}

/// The route-table side of a peer: encodes and queues, never waits.
pub struct PeerSink {
    pub link: Arc<PeerLink>,
}

impl PeerSink {
    fn push(&self, entry: &Forwarded) {
        match postcard::to_stdvec(entry) {
            Ok(bytes) => {
                if let PushOutcome::Dropped(reason) = self.link.mailbox.push(Bytes::from(bytes)) {
                    debug!(peer = %self.link.peer, ?reason, "cluster_forward_dropped");
                }
                self.link.update_valve();
            }
            Err(e) => warn!(peer = %self.link.peer, error = %e, "cluster_forward_encode_failed"),
        }
    }
}

impl RouteSink for PeerSink {
    fn offer(&self, msg: &Arc<Message>) {
        let stored = StoredMessage::from_message(msg, Instant::now(), unix_ms());
        self.push(&Forwarded::Normal(stored));
    }

    fn offer_shared(&self, msg: &Arc<Message>, group: &str, filter: &str) {
        let message = StoredMessage::from_message(msg, Instant::now(), unix_ms());
        self.push(&Forwarded::Shared {
            group: group.to_owned(),
            filter: filter.to_owned(),
            message,
        });
    }

    fn valve(&self) -> Option<&Arc<Valve>> {
        Some(&self.link.valve)
    }
}

/// Messages to the forwarder (local only).
pub enum ForwarderMsg {
    /// Something may be sendable to this peer.
    Wake(String),
    /// The link to this peer came up (with its ingress actor) or went down.
    Up(String, ActorRef<IngressMsg>),
    Down(String),
}

impl ractor::Message for ForwarderMsg {}

pub struct Forwarder;

pub struct ForwarderArgs {
    pub shared: Arc<ClusterShared>,
}

impl Actor for Forwarder {
    type Msg = ForwarderMsg;
    type State = Arc<ClusterShared>;
    type Arguments = ForwarderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ForwarderMsg>,
        args: ForwarderArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let shared = args.shared;
        *shared.forwarder.write() = Some(myself.clone());
        // A restarted forwarder picks up every link: what was taken and not
        // acknowledged is sent again.
        for link in shared.links.read().values() {
            link.mailbox.rewind();
            link.in_flight.store(0, Ordering::Release);
            wire_wake(link, &myself);
        }
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ForwarderMsg>,
        msg: ForwarderMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ForwarderMsg::Up(peer, remote) => {
                if let Some(link) = shared.link(&peer) {
                    link.mailbox.rewind();
                    link.in_flight.store(0, Ordering::Release);
                    *link.remote.write() = Some(remote);
                    link.up.store(true, Ordering::Release);
                    link.update_valve();
                    link.valve.set_open(true);
                    pump(shared, &link);
                }
            }
            ForwarderMsg::Down(peer) => {
                if let Some(link) = shared.link(&peer) {
                    link.up.store(false, Ordering::Release);
                    link.valve.set_open(false);
                    *link.remote.write() = None;
                    link.mailbox.rewind();
                    link.in_flight.store(0, Ordering::Release);
                    link.update_valve();
                }
            }
            ForwarderMsg::Wake(peer) => {
                if let Some(link) = shared.link(&peer) {
                    pump(shared, &link);
                }
            }
        }
        Ok(())
    }
}

/// Point the mailbox's wake hook at the forwarder.
pub fn wire_wake(link: &Arc<PeerLink>, forwarder: &ActorRef<ForwarderMsg>) {
    let f = forwarder.clone();
    let peer = link.peer.clone();
    link.mailbox.set_wake(Box::new(move || {
        let _ = f.cast(ForwarderMsg::Wake(peer.clone()));
    }));
}

/// Send batches while the window allows and the mailbox has something.
fn pump(shared: &ClusterShared, link: &Arc<PeerLink>) {
    if !link.up.load(Ordering::Acquire) {
        return;
    }
    let Some(remote) = link.remote.read().clone() else {
        return;
    };
    let window = shared.settings.forward_window as u64;
    while link.in_flight.load(Ordering::Acquire) < window {
        let entries = match link.mailbox.take(shared.settings.forward_batch) {
            Ok(e) => e,
            Err(e) => {
                warn!(peer = %link.peer, error = %e, "cluster_forward_take_failed");
                return;
            }
        };
        if entries.is_empty() {
            return;
        }
        let n = entries.len() as u64;
        let batch = Data::Forward {
            from: shared.settings.node_name.clone(),
            incarnation: shared.incarnation,
            entries: entries
                .into_iter()
                .map(|e| (e.seq, e.payload.to_vec()))
                .collect(),
        };
        link.in_flight.fetch_add(1, Ordering::AcqRel);
        if remote.cast(IngressMsg::Wire(batch)).is_err() {
            // The remote actor is gone: the link is going down; the batch is
            // sent again once it is back (rewind on Up).
            return;
        }
        link.forwarded.fetch_add(n, Ordering::Relaxed);
        Counters::add(&shared.counters.forwarded, n);
    }
}

/// Wait (at most `limit`) for the local subscribers `out` congested.
async fn wait_congested(out: RouteOutcome, limit: Duration) -> Duration {
    if out.congested.is_empty() || limit.is_zero() {
        return Duration::ZERO;
    }
    let start = Instant::now();
    for c in out.congested {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        c.wait_relieved(left).await;
    }
    start.elapsed()
}

/// The ingress actor's messages: only what peers send.
pub enum IngressMsg {
    Wire(Data),
}

impl ractor::Message for IngressMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let IngressMsg::Wire(d) = self;
        wire::encode(&d)
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        wire::decode(bytes).map(IngressMsg::Wire)
    }
}

/// Receives forwarded messages (publishes them to local sessions) and the
/// acknowledgements of ours.
pub struct Ingress;

pub struct IngressArgs {
    pub shared: Arc<ClusterShared>,
}

pub struct IngressState {
    shared: Arc<ClusterShared>,
    /// (sender, its incarnation) -> the last seq applied.
    applied: HashMap<String, (u64, u64)>,
}

impl Actor for Ingress {
    type Msg = IngressMsg;
    type State = IngressState;
    type Arguments = IngressArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<IngressMsg>,
        args: IngressArgs,
    ) -> Result<IngressState, ActorProcessingErr> {
        ractor::pg::join(wire::DATA_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(IngressState {
            shared: args.shared,
            applied: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<IngressMsg>,
        IngressMsg::Wire(msg): IngressMsg,
        state: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &state.shared;
        match msg {
            Data::Forward {
                from,
                incarnation,
                entries,
            } => {
                let last = state
                    .applied
                    .entry(from.clone())
                    .or_insert((incarnation, 0));
                if last.0 != incarnation {
                    *last = (incarnation, 0);
                }
                let mut through = last.1;
                let (now, now_ms) = (Instant::now(), unix_ms());
                let mut applied = 0u64;
                // Flow control across nodes, as for a local publisher: after
                // a message that congested a local subscriber, wait for it
                // (at most `max_publish_delay` per batch) before the next.
                // The batch's acknowledgement waits with it, so the sender's
                // window closes and its publishers pause on its valve.
                let limit = shared.ctx.config.max_publish_delay;
                let mut paused = Duration::ZERO;
                for (seq, bytes) in entries {
                    if seq <= last.1 {
                        Counters::inc(&shared.counters.duplicates_skipped);
                        through = through.max(seq);
                        continue;
                    }
                    match postcard::from_bytes::<Forwarded>(&bytes) {
                        Ok(Forwarded::Normal(stored)) => {
                            let msg = Arc::new(stored.into_message(now, now_ms));
                            let out = dispatch_from_peer(&shared.ctx, msg);
                            paused += wait_congested(out, limit.saturating_sub(paused)).await;
                            applied += 1;
                        }
                        Ok(Forwarded::Shared {
                            group,
                            filter,
                            message,
                        }) => {
                            let msg = Arc::new(message.into_message(now, now_ms));
                            let out = dispatch_shared_from_peer(&shared.ctx, msg, &group, &filter);
                            if out.delivered == 0 {
                                Counters::inc(&shared.counters.shared_no_member);
                                debug!(peer = %from, %group, %filter, "cluster_shared_member_gone");
                            }
                            paused += wait_congested(out, limit.saturating_sub(paused)).await;
                            applied += 1;
                        }
                        Err(e) => {
                            Counters::inc(&shared.counters.undecodable);
                            warn!(peer = %from, seq, error = %e, "cluster_forward_undecodable");
                        }
                    }
                    through = through.max(seq);
                    last.1 = seq;
                }
                Counters::add(&shared.counters.received, applied);
                let Some(remote) = shared.link(&from).and_then(|l| l.remote.read().clone()) else {
                    return Ok(());
                };
                let ack = IngressMsg::Wire(Data::Ack {
                    from: shared.settings.node_name.clone(),
                    incarnation,
                    through,
                });
                let _ = remote.cast(ack);
            }
            Data::Ack {
                from,
                incarnation,
                through,
            } => {
                if incarnation != shared.incarnation {
                    return Ok(());
                }
                if let Some(link) = shared.link(&from) {
                    if let Err(e) = link.mailbox.ack(through) {
                        warn!(peer = %from, error = %e, "cluster_forward_ack_failed");
                    }
                    link.valve.progress();
                    link.update_valve();
                    let _ = link
                        .in_flight
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            Some(n.saturating_sub(1))
                        });
                    if let Some(f) = shared.forwarder.read().clone() {
                        let _ = f.cast(ForwarderMsg::Wake(from));
                    }
                }
            }
        }
        Ok(())
    }
}
