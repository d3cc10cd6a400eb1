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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use ractor::message::BoxedDowncastErr;
use ractor::message::SerializedMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use roost_actors::broker::{dispatch_from_peer, dispatch_shared_from_peer, unix_ms, Counters};
use roost_actors::overflow::{OverflowConfig, OverflowMailbox, OverflowMode, PushOutcome};
use roost_actors::router::{ClientRedirect, Congested, RouteSink};
use roost_actors::valve::Valve;
use roost_protocol::{ClientId, DeliveryOpts, Message, MessageId};
use roost_storage::{DeliveryRecord, ForwardedProperties, QueuedMessage, StoredMessage, StoredQos};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use crate::shared::ClusterShared;
use crate::wire::{self, Data, DataRef};

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
    /// The last seq of each frame sent and not acknowledged, oldest first
    /// (at most about `forward_window`). An acknowledgement removes the
    /// frames it covers, so a partial one (see `Ingress`) counts right.
    pub in_flight: Mutex<VecDeque<u64>>,
    pub forwarded: AtomicU64,
    pub up: AtomicBool,
    /// Flow control: publishers that offered this peer a message pause
    /// while its backlog is over `forward_buffer / 16` bytes and the peer
    /// is acknowledging (see `roost_actors::valve`).
    pub valve: Arc<Valve>,
    /// The valve's low watermark: a push that leaves the backlog under it
    /// cannot congest anyone and does not publish its level.
    valve_low: u64,
}

impl PeerLink {
    /// The link to `peer`, its queue bounded by `forward_buffer` bytes:
    /// in `durable` storage (every entry committed before the publisher is
    /// acknowledged, the oldest `forward_buffer / 4` cached in memory; what
    /// a previous run left is sent first), or in memory only.
    pub fn new(
        peer: &str,
        forward_buffer: u64,
        durable: Option<roost_storage::Storage>,
    ) -> Result<PeerLink, String> {
        let (mode, memory_bytes) = match durable {
            Some(_) => (OverflowMode::Durable, (forward_buffer / 4).max(64 << 10)),
            None => (OverflowMode::Memory, forward_buffer),
        };
        let config = OverflowConfig {
            mode,
            memory_bytes: memory_bytes.min(forward_buffer),
            max_bytes: forward_buffer,
            request_ttl: None,
        };
        let mailbox = OverflowMailbox::open(&sink_name(peer), config, durable, Box::new(|| {}))
            .map_err(|e| e.to_string())?;
        let high = (forward_buffer / 16).max(64 << 10);
        Ok(PeerLink {
            peer: peer.to_owned(),
            mailbox: Arc::new(mailbox),
            remote: RwLock::new(None),
            in_flight: Mutex::new(VecDeque::new()),
            forwarded: AtomicU64::new(0),
            up: AtomicBool::new(false),
            valve: Arc::new(Valve::new(high, high / 2)),
            valve_low: high / 2,
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
    /// To one client's session on the receiver: its session moved there
    /// from the sender, whose router still got messages for it
    /// (`RouteTable::add_redirect`).
    ToClient {
        client: String,
        delivery: DeliveryRecord,
        /// The message also went to the receiver through its routes:
        /// deliver only if they did not reach the client.
        also_routed: bool,
        message: StoredMessage,
    },
}

/// [`Forwarded`] as the ingress reads it, borrowing from the frame.
/// Declared like [`Forwarded`], variant for variant.
#[derive(Debug, Deserialize)]
enum ForwardedRef<'a> {
    Normal(#[serde(borrow)] StoredRef<'a>),
    Shared {
        group: &'a str,
        filter: &'a str,
        #[serde(borrow)]
        message: StoredRef<'a>,
    },
    ToClient {
        client: &'a str,
        delivery: DeliveryRecord,
        also_routed: bool,
        #[serde(borrow)]
        message: StoredRef<'a>,
    },
}

/// [`StoredMessage`] as the ingress reads it: declared like it, field for
/// field (`forwarded_entries_read_in_place_equal_the_stored_message` checks
/// it), with the strings and the payload borrowed.
#[derive(Debug, Deserialize)]
struct StoredRef<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: StoredQos,
    retain: bool,
    publisher: &'a str,
    expires_at_ms: Option<u64>,
    properties: ForwardedProperties,
}

impl StoredRef<'_> {
    /// What `StoredMessage::into_message` gives, with the topic, the
    /// publisher and the payload in one allocation instead of three (a
    /// visible share of the receiving node's CPU went to malloc and to
    /// freeing them on the subscribers' threads). The buffer holds only
    /// this message: nothing keeps a whole frame alive.
    fn into_message(self, now: Instant, now_ms: u64) -> Message {
        let (t, p) = (self.topic.len(), self.publisher.len());
        let mut buf = Vec::with_capacity(t + p + self.payload.len());
        buf.extend_from_slice(self.topic.as_bytes());
        buf.extend_from_slice(self.publisher.as_bytes());
        buf.extend_from_slice(self.payload);
        let buf = Bytes::from(buf);
        let text = |range: std::ops::Range<usize>| {
            ByteString::try_from(buf.slice(range)).expect("copied from a str")
        };
        let left_ms = self.expires_at_ms.map(|at| at.saturating_sub(now_ms));
        let expiry_interval = left_ms.map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX));
        Message {
            id: MessageId::NONE,
            topic: text(0..t),
            payload: buf.slice(t + p..),
            qos: self.qos.into(),
            retain: self.retain,
            publisher: ClientId(text(t..t + p)),
            properties: self.properties.into_publish_properties(expiry_interval),
            expires_at: left_ms.map(|ms| now + Duration::from_millis(ms)),
        }
    }
}

/// The route-table side of a peer: encodes and queues, never waits.
pub struct PeerSink {
    pub link: Arc<PeerLink>,
}

thread_local! {
    /// The last message this thread encoded for a peer, and its encoding:
    /// a message routed to several peers is encoded once (the route table
    /// offers it to each peer's sink in turn, on the publisher's thread).
    /// Holding the `Arc` keeps the pointer comparison sound.
    static LAST_ENCODED: RefCell<Option<(Arc<Message>, Bytes)>> = const { RefCell::new(None) };
}

/// `StoredMessage::from_message` reads the clocks only for a message with
/// an expiry: the others get a fixed instant and no clock call (two clock
/// reads per forwarded message were a visible share of the publish path).
fn stored(msg: &Message) -> StoredMessage {
    static NO_EXPIRY: OnceLock<Instant> = OnceLock::new();
    if msg.expires_at.is_some() {
        StoredMessage::from_message(msg, Instant::now(), unix_ms())
    } else {
        StoredMessage::from_message(msg, *NO_EXPIRY.get_or_init(Instant::now), 0)
    }
}

/// A forward entry: the postcard [`Forwarded`], then the message's
/// identity (two varints). An entry stored before identities existed ends
/// after the `Forwarded`: its message has none ([`read_entry`]).
fn encode_entry(entry: &Forwarded, id: MessageId, hint: usize) -> postcard::Result<Bytes> {
    let buf = postcard::to_extend(entry, Vec::with_capacity(hint + 20))?;
    postcard::to_extend(&(id.boot, id.seq), buf).map(Bytes::from)
}

/// An entry written by [`encode_entry`] (or before identities existed).
fn read_entry(bytes: &[u8]) -> postcard::Result<(ForwardedRef<'_>, MessageId)> {
    let (entry, rest) = postcard::take_from_bytes::<ForwardedRef>(bytes)?;
    if rest.is_empty() {
        return Ok((entry, MessageId::NONE));
    }
    let (boot, seq) = postcard::from_bytes::<(u64, u64)>(rest)?;
    Ok((entry, MessageId { boot, seq }))
}

/// Bytes an encoded entry of `msg` needs, about (no regrowth for messages
/// without many properties).
fn entry_hint(msg: &Message) -> usize {
    msg.topic.len() + msg.payload.len() + msg.publisher.0.len() + 48
}

impl PeerSink {
    fn push(&self, bytes: Bytes) {
        // A peer's mailbox has no `request_ttl`: the push time is never
        // read, so it is not taken from the clock.
        if let PushOutcome::Dropped(reason) = self.link.mailbox.push_at(bytes, 0) {
            debug!(peer = %self.link.peer, ?reason, "cluster_forward_dropped");
        }
        // Only a backlog at or over the low watermark matters to the valve
        // (pushes only raise it; acknowledgements publish it exactly).
        let backlog = self.link.mailbox.backlog_bytes();
        if backlog >= self.link.valve_low {
            self.link.valve.set_level(backlog);
        }
    }

    fn encode_failed(&self, e: postcard::Error) {
        warn!(peer = %self.link.peer, error = %e, "cluster_forward_encode_failed");
    }
}

impl RouteSink for PeerSink {
    fn offer(&self, msg: &Arc<Message>) {
        let cached = LAST_ENCODED.with_borrow(|last| {
            last.as_ref()
                .filter(|(m, _)| Arc::ptr_eq(m, msg))
                .map(|(_, b)| b.clone())
        });
        let bytes = match cached {
            Some(b) => b,
            None => match encode_entry(&Forwarded::Normal(stored(msg)), msg.id, entry_hint(msg)) {
                Ok(b) => {
                    LAST_ENCODED.set(Some((msg.clone(), b.clone())));
                    b
                }
                Err(e) => return self.encode_failed(e),
            },
        };
        self.push(bytes);
    }

    fn offer_shared(&self, msg: &Arc<Message>, group: &str, filter: &str) {
        let message = stored(msg);
        let entry = Forwarded::Shared {
            group: group.to_owned(),
            filter: filter.to_owned(),
            message,
        };
        match encode_entry(&entry, msg.id, entry_hint(msg) + group.len() + filter.len()) {
            Ok(b) => self.push(b),
            Err(e) => self.encode_failed(e),
        }
    }

    fn valve(&self) -> Option<&Arc<Valve>> {
        Some(&self.link.valve)
    }
}

/// [`ClientRedirect`] to a peer: messages for a client whose session moved
/// to it, through the same forward queue as the rest (in order with them).
pub struct ClientSink {
    pub sink: PeerSink,
    /// [`sink_name`] of the peer.
    pub target: String,
}

impl ClientRedirect for ClientSink {
    fn offer_to(
        &self,
        client: &ClientId,
        msg: &Arc<Message>,
        opts: DeliveryOpts,
        also_routed: bool,
    ) {
        let entry = Forwarded::ToClient {
            client: client.to_string(),
            delivery: DeliveryRecord::from(&opts),
            also_routed,
            message: stored(msg),
        };
        match encode_entry(&entry, msg.id, entry_hint(msg) + client.0.len() + 16) {
            Ok(b) => self.sink.push(b),
            Err(e) => self.sink.encode_failed(e),
        }
    }

    fn target(&self) -> &str {
        &self.target
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
            link.in_flight.lock().clear();
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
                    link.in_flight.lock().clear();
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
                    link.in_flight.lock().clear();
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
///
/// A batch is up to `forward_batch` entries taken at once, sent as one or
/// more `Data::Forward` frames of at most `forward_batch_bytes` each (one
/// entry larger than that goes alone); each frame is acknowledged and
/// counts in the window. The entries' bytes are the mailbox's own
/// (`Bytes`, shared), copied only when ractor_cluster writes the frame.
fn pump(shared: &ClusterShared, link: &Arc<PeerLink>) {
    if !link.up.load(Ordering::Acquire) {
        return;
    }
    let Some(remote) = link.remote.read().clone() else {
        return;
    };
    let settings = &shared.settings;
    let window = settings.forward_window as u64;
    let max_bytes = settings.forward_batch_bytes.max(1);
    while (link.in_flight.lock().len() as u64) < window {
        let taken = match link.mailbox.take(settings.forward_batch) {
            Ok(e) => e,
            Err(e) => {
                warn!(peer = %link.peer, error = %e, "cluster_forward_take_failed");
                return;
            }
        };
        if taken.is_empty() {
            return;
        }
        let mut taken = taken.into_iter().peekable();
        while taken.peek().is_some() {
            let mut entries = Vec::new();
            let mut bytes = 0;
            while let Some(e) =
                taken.next_if(|e| entries.is_empty() || bytes + e.payload.len() <= max_bytes)
            {
                bytes += e.payload.len();
                entries.push((e.seq, e.payload));
            }
            let n = entries.len() as u64;
            let last = entries.last().map_or(0, |(seq, _)| *seq);
            let batch = Data::Forward {
                from: settings.node_name.clone(),
                incarnation: shared.incarnation,
                entries,
            };
            link.in_flight.lock().push_back(last);
            if remote.cast(IngressMsg::Wire(batch)).is_err() {
                // The remote actor is gone: the link is going down; the
                // batch is sent again once it is back (rewind on Up).
                return;
            }
            link.forwarded.fetch_add(n, Ordering::Relaxed);
            Counters::add(&shared.counters.forwarded, n);
        }
    }
}

/// Acknowledge to `peer` everything of its queue up to `through`.
fn send_ack(shared: &ClusterShared, peer: &str, incarnation: u64, through: u64) {
    let Some(remote) = shared.link(peer).and_then(|l| l.remote.read().clone()) else {
        return;
    };
    let _ = remote.cast(IngressMsg::Wire(Data::Ack {
        from: shared.settings.node_name.clone(),
        incarnation,
        through,
    }));
}

/// The ingress actor's messages: only what peers send.
pub enum IngressMsg {
    /// Sent to a peer's ingress (ractor_cluster serializes it), or given
    /// to the local one.
    Wire(Data),
    /// Received from a peer: a whole frame of our wire version, read in
    /// place by the ingress ([`wire::read_data`]).
    Frame(Vec<u8>),
}

impl ractor::Message for IngressMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            IngressMsg::Wire(d) => wire::encode_data(&d),
            IngressMsg::Frame(args) => Ok(SerializedMessage::Cast {
                variant: String::new(),
                args,
                metadata: None,
            }),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        wire::check_frame(bytes).map(IngressMsg::Frame)
    }
}

/// Note what was applied from `from` (per message: it must survive a
/// restart of the ingress mid-frame). The entry exists (made at the start
/// of the frame): no allocation on this path.
/// Identities remembered per sender: well over a forward window.
const APPLIED_IDS_MAX: usize = 65_536;

/// The message identities applied from one sender, the oldest forgotten
/// past [`APPLIED_IDS_MAX`].
#[derive(Default)]
pub struct AppliedIds {
    set: std::collections::HashSet<MessageId>,
    order: std::collections::VecDeque<MessageId>,
}

impl AppliedIds {
    /// Whether `id` is new here (and now noted). A message with no
    /// identity always is.
    pub fn first_time(&mut self, id: MessageId) -> bool {
        if id.is_none() {
            return true;
        }
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > APPLIED_IDS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

fn record_applied(shared: &ClusterShared, from: &str, last: (u64, u64)) {
    if let Some(e) = shared.applied.lock().get_mut(from) {
        *e = last;
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
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<IngressMsg>,
        msg: IngressMsg,
        state: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
        let frame = match msg {
            IngressMsg::Frame(frame) => frame,
            // Given locally (not through ractor_cluster): read the same way.
            IngressMsg::Wire(d) => match wire::encode_data(&d) {
                Ok(SerializedMessage::Cast { args, .. }) => args,
                _ => return Ok(()),
            },
        };
        let data = match wire::read_data(&frame) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, len = frame.len(), "cluster_decode_failed");
                return Ok(());
            }
        };
        let shared = &state.shared;
        match data {
            DataRef::Forward {
                from,
                incarnation,
                entries,
            } => {
                shared.heard_from(from);
                // What was applied outlives this actor (`ClusterShared`):
                // after a restart of the cluster subtree (a heal) the
                // senders resend their unacknowledged window, and it must
                // not be published twice.
                let mut last = {
                    let mut applied = shared.applied.lock();
                    let last = applied.entry(from.to_owned()).or_insert((incarnation, 0));
                    if last.0 != incarnation {
                        *last = (incarnation, 0);
                    }
                    *last
                };
                let mut through = last.1;
                // The identities applied from this sender, across its
                // restarts: a sender killed before our acknowledgement
                // came resends its stored window under a new incarnation
                // (new seqs), and those messages were published here
                // already.
                // Out of the map while this frame is applied (only this
                // actor uses it), back in after it.
                let mut ids = shared.applied_ids.lock().remove(from).unwrap_or_default();
                let (now, now_ms) = (Instant::now(), unix_ms());
                let mut applied = 0u64;
                // Flow control across nodes, as for a local publisher: after
                // a message that congested a local subscriber, wait for it
                // (at most `max_publish_delay` at a time) before the next.
                // The frame's acknowledgement waits with it, so the sender's
                // window closes and its publishers pause on its valve. Once
                // `max_publish_delay` was spent waiting, what is applied is
                // acknowledged (the sender sees progress, so its link does
                // not count as stalled) and the wait budget starts again: a
                // large frame gets as much waiting per message as a small
                // one, as a publisher gets per read batch.
                let limit = shared.ctx.config.max_publish_delay;
                let mut paused = Duration::ZERO;
                for (seq, bytes) in entries {
                    if seq <= last.1 {
                        Counters::inc(&shared.counters.duplicates_skipped);
                        through = through.max(seq);
                        continue;
                    }
                    let decoded = read_entry(bytes);
                    if let Ok((_, id)) = &decoded {
                        if !ids.first_time(*id) {
                            Counters::inc(&shared.counters.duplicates_skipped);
                            through = through.max(seq);
                            last.1 = seq;
                            record_applied(shared, from, last);
                            continue;
                        }
                    }
                    match decoded {
                        Ok((ForwardedRef::Normal(stored), id)) => {
                            let msg = Arc::new(stored.into_message(now, now_ms).with_id(id));
                            let out = dispatch_from_peer(&shared.ctx, msg);
                            paused +=
                                Congested::wait_all(out.congested, limit.saturating_sub(paused))
                                    .await;
                            applied += 1;
                        }
                        Ok((
                            ForwardedRef::Shared {
                                group,
                                filter,
                                message,
                            },
                            id,
                        )) => {
                            let msg = Arc::new(message.into_message(now, now_ms).with_id(id));
                            let out = dispatch_shared_from_peer(&shared.ctx, msg, group, filter);
                            if out.delivered == 0 {
                                Counters::inc(&shared.counters.shared_no_member);
                                debug!(peer = %from, %group, %filter, "cluster_shared_member_gone");
                            }
                            paused +=
                                Congested::wait_all(out.congested, limit.saturating_sub(paused))
                                    .await;
                            applied += 1;
                        }
                        Ok((
                            ForwardedRef::ToClient {
                                client,
                                delivery,
                                also_routed,
                                message,
                            },
                            id,
                        )) => {
                            let msg = message.into_message(now, now_ms).with_id(id);
                            // The same message came just before through the
                            // routes: if they reached the client, done.
                            if also_routed
                                && shared
                                    .ctx
                                    .routes
                                    .client_matches(&ClientId::new(client), &msg.topic)
                            {
                                through = through.max(seq);
                                last.1 = seq;
                                record_applied(shared, from, last);
                                continue;
                            }
                            let queued = QueuedMessage {
                                delivery,
                                message: StoredMessage::from_message(&msg, now, now_ms),
                                id: id.into(),
                            };
                            crate::takeover::redirected(shared, client, queued);
                            applied += 1;
                        }
                        Err(e) => {
                            Counters::inc(&shared.counters.undecodable);
                            warn!(peer = %from, seq, error = %e, "cluster_forward_undecodable");
                        }
                    }
                    through = through.max(seq);
                    last.1 = seq;
                    record_applied(shared, from, last);
                    if !limit.is_zero() && paused >= limit {
                        send_ack(shared, from, incarnation, through);
                        paused = Duration::ZERO;
                    }
                }
                shared.applied_ids.lock().insert(from.to_owned(), ids);
                Counters::add(&shared.counters.received, applied);
                send_ack(shared, from, incarnation, through);
            }
            DataRef::Ack {
                from,
                incarnation,
                through,
            } => {
                shared.heard_from(from);
                if incarnation != shared.incarnation {
                    return Ok(());
                }
                if let Some(link) = shared.link(from) {
                    if let Err(e) = link.mailbox.ack(through) {
                        warn!(peer = %from, error = %e, "cluster_forward_ack_failed");
                    }
                    link.valve.progress();
                    link.update_valve();
                    {
                        let mut frames = link.in_flight.lock();
                        while frames.front().is_some_and(|last| *last <= through) {
                            frames.pop_front();
                        }
                    }
                    if let Some(f) = shared.forwarder.read().clone() {
                        let _ = f.cast(ForwarderMsg::Wake(from.to_owned()));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roost_protocol::packet::PublishProperties;
    use roost_protocol::QoS;

    fn message(topic: &str, publisher: &str, payload: &[u8], expiry: Option<u32>) -> Message {
        let properties = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: expiry,
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"cd")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..PublishProperties::default()
        };
        let now = Instant::now();
        Message {
            id: MessageId::next(),
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload),
            qos: QoS::AtLeastOnce,
            retain: true,
            publisher: ClientId::new(publisher),
            properties,
            expires_at: expiry.map(|s| now + Duration::from_secs(u64::from(s))),
        }
    }

    #[test]
    fn forwarded_entries_read_in_place_equal_the_stored_message() {
        let (now, now_ms) = (Instant::now(), unix_ms());
        for m in [
            message("a/b", "pub-1", b"hello", None),
            message("a/\u{e9}", "", b"", Some(30)),
            message("x", "p", &[0u8; 300], Some(0)),
        ] {
            let stored = StoredMessage::from_message(&m, now, now_ms);
            let later = (now + Duration::from_millis(1500), now_ms + 1500);
            let want = stored.clone().into_message(later.0, later.1);

            let bytes = encode_entry(&Forwarded::Normal(stored.clone()), m.id, 8).unwrap();
            let (ForwardedRef::Normal(r), id) = read_entry(&bytes).unwrap() else {
                panic!("not normal")
            };
            assert_eq!(id, m.id);
            assert_eq!(r.into_message(later.0, later.1), want);
            // An entry stored before identities: read, with none.
            let old = postcard::to_allocvec(&Forwarded::Normal(stored.clone())).unwrap();
            let (ForwardedRef::Normal(r), id) = read_entry(&old).unwrap() else {
                panic!("not normal")
            };
            assert_eq!(id, MessageId::NONE);
            assert_eq!(r.into_message(later.0, later.1), want);

            let shared = Forwarded::Shared {
                group: "g".into(),
                filter: "a/#".into(),
                message: stored,
            };
            let bytes = encode_entry(&shared, m.id, 8).unwrap();
            let (
                ForwardedRef::Shared {
                    group,
                    filter,
                    message,
                },
                id,
            ) = read_entry(&bytes).unwrap()
            else {
                panic!("not shared")
            };
            assert_eq!(id, m.id);
            assert_eq!((group, filter), ("g", "a/#"));
            assert_eq!(message.into_message(later.0, later.1), want);
        }
    }

    #[test]
    fn applied_ids_skip_a_resent_message_and_forget_the_oldest() {
        let mut ids = AppliedIds::default();
        let first = MessageId::next();
        assert!(ids.first_time(first));
        assert!(!ids.first_time(first), "the same message again");
        assert!(ids.first_time(MessageId::NONE));
        assert!(
            ids.first_time(MessageId::NONE),
            "no identity: never skipped"
        );
        for _ in 0..APPLIED_IDS_MAX {
            assert!(ids.first_time(MessageId::next()));
        }
        assert!(ids.first_time(first), "forgotten past the bound");
        assert_eq!(ids.set.len(), APPLIED_IDS_MAX);
    }

    #[test]
    fn a_message_without_expiry_is_stored_without_reading_the_clock() {
        let m = message("t", "p", b"x", None);
        let (now, now_ms) = (Instant::now(), unix_ms());
        assert_eq!(stored(&m), StoredMessage::from_message(&m, now, now_ms));
    }
}
