//! The session actor: one per client id, child of the registry.
//!
//! Owns the client's [`SessionState`] (subscriptions, inflight window, queue),
//! its will, and its expiry. It outlives connections: a client that comes
//! back with clean start off finds it again, with everything queued while it
//! was away. While a connection is attached the session encodes deliveries
//! straight into that connection's [`Outbound`] buffer.
//!
//! A persistent session (session expiry > 0) with a store keeps its record
//! (subscriptions, expiry, will) and its queue in it (`durable.rs`): it
//! survives a restart and a `kill -9` of the node, and a crash of this actor
//! (the registry reads it back on the next CONNECT).
//!
//! Local-only message type: never serialized, never mirrored to peers.

mod durable;
pub mod handover;

pub use durable::{record_expired, record_expiry_left_ms};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use roost_protocol::channel::{suback, unsuback, ConnectInfo, SubscribeRequest};
use roost_protocol::packet::{reason, LastWill, Packet, ProtocolVersion, QoS, RetainHandling};
use roost_protocol::session::SessionState;
use roost_protocol::{codec, topic, ClientId, Delivery, Message};
use roost_storage::{QueuedMessage, SessionRecord, StoredProtocol, StoredSubscription};
use tracing::{debug, error, info, warn};

use self::durable::{DurableQueue, Loaded, MEMORY_WINDOW};
use self::handover::{HandoverMessage, SessionHandover};

use crate::broker::{BrokerCtx, Counters};
use crate::connection::ConnectionMsg;
use crate::inbox::{Inbox, STORE_ALL, STORE_NONE, STORE_QOS12};
use crate::outbound::{Outbound, SendError};
use crate::router::{retained_opts, RouteEntry, RouterMsg};

pub enum SessionMsg {
    /// A connection takes this session over (CONNECT accepted).
    Attach(Box<AttachRequest>, RpcReplyPort<Attached>),
    /// The CONNACK is written: resend what is unacknowledged.
    Resume,
    /// The inbox has deliveries.
    Drain,
    Subscribe {
        packet_id: u16,
        requests: Vec<SubscribeRequest>,
    },
    Unsubscribe {
        packet_id: u16,
        filters: Vec<ByteString>,
    },
    PubAck(u16),
    PubRec(u16, u8),
    PubComp(u16),
    /// The attached connection ended.
    Closed(Box<Closed>),
    /// A clean-start CONNECT replaces this session: close the connection,
    /// drop the routes, stop. Answers once the routes are gone.
    Discard(u8, RpcReplyPort<()>),
    /// Close the attached connection with a reason (admin kick, shutdown).
    Kick(u8),
    Timer {
        generation: u64,
        kind: TimerKind,
    },
    Info(RpcReplyPort<SessionInfo>),
    /// The client reconnected to another node, without clean start: close
    /// the connection (0x8E), hand everything over, end here (routes and
    /// store go; no will beyond what a takeover publishes).
    /// With a redirect: what still routes to this client here for a few
    /// seconds follows it to the new node (`RouteTable::add_redirect`).
    HandOver(
        Option<Arc<dyn crate::router::ClientRedirect>>,
        RpcReplyPort<Box<SessionHandover>>,
    ),
    /// The same client's session from another node: both nodes held one
    /// (a partition, or a node that was down while its client connected
    /// elsewhere) and this one is the newer. The other's messages join
    /// this session's queue, behind what it holds; its subscriptions do not
    /// (the newest connection's are the client's). Answers how many
    /// messages were kept.
    Absorb(Vec<roost_storage::QueuedMessage>, RpcReplyPort<usize>),
    /// Note the identities of the messages this session gets (`seen`, and
    /// every one from now on), and skip a second copy of any: from another
    /// session of its client merged into it ([`SessionMsg::Absorb`]), or a
    /// message its old node redirected after it moved here that its own
    /// routes brought too. Sent when the session was made while a node
    /// that may hold another session of its client could not be asked
    /// (`for_ms` `None`: until the bound), and when it moved here (for the
    /// seconds the old node redirects).
    WatchTwins {
        seen: Vec<roost_protocol::MessageId>,
        for_ms: Option<u64>,
    },
}

/// Most message identities a session notes while it watches for a twin
/// ([`SessionMsg::WatchTwins`]): about 6 MB. Past it, it stops noting (and
/// logs it); a later merge may then duplicate, never lose.
const TWIN_WATCH_MAX: usize = 200_000;

/// A timed twin watch lasts at least this long after the session last
/// absorbed messages (a merge, or messages its old node redirected).
const TWIN_WATCH_AFTER_ABSORB: Duration = Duration::from_secs(30);

/// The identities a session watching for a twin got.
struct SeenIds {
    ids: HashSet<roost_protocol::MessageId>,
    full: bool,
    /// When the watch ends (`None`: never, only the bound).
    until: Option<Instant>,
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for SessionMsg {}

/// A session handing itself over to another node waits this long, its
/// routes gone, for publishes already routed to it to reach its queue.
const HANDOVER_SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Longest a takeover waits for the old connection to hand off.
const HANDOFF_TIMEOUT_MS: u64 = 2_000;

#[derive(Debug, Clone, Copy)]
pub enum TimerKind {
    Expire,
    Will,
}

pub struct AttachRequest {
    pub info: ConnectInfo,
    pub conn: ActorRef<ConnectionMsg>,
    pub conn_id: u64,
    pub outbound: Arc<Outbound>,
}

pub struct Attached {
    pub session_present: bool,
    pub awaiting_rel: HashSet<u16>,
    /// The session is persistent and stored: the connection stores its
    /// inbound QoS 2 state before each PUBREC and PUBCOMP.
    pub stored: bool,
}

pub struct Closed {
    pub conn_id: u64,
    pub publish_will: bool,
    pub session_expiry: Option<u32>,
    pub awaiting_rel: HashSet<u16>,
}

/// A snapshot for `roost ctl clients show` and tests.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub client_id: ClientId,
    pub connected: bool,
    pub subscriptions: Vec<String>,
    pub inflight: usize,
    pub queued: usize,
    pub dropped_queue_full: u64,
    pub inbox_dropped: u64,
    /// When its connection last came (connected) or went (offline): ms
    /// since the Unix epoch. Orders two sessions of one client on two
    /// nodes: the newest connection wins.
    pub since_ms: u64,
}

/// The attached connection. Dropping it without `detach` (the session actor
/// died) tells the connection to close: a connection never outlives its
/// session unnoticed.
struct ConnLink {
    conn: Option<ActorRef<ConnectionMsg>>,
    /// The connection wrote its CONNACK (`SessionMsg::Resume`): nothing
    /// may be written before it. [MQTT-3.2.0-1]
    resumed: bool,
    conn_id: u64,
    outbound: Arc<Outbound>,
    version: ProtocolVersion,
    aliases: OutboundAliases,
}

impl ConnLink {
    fn detach(mut self) -> ActorRef<ConnectionMsg> {
        self.conn.take().expect("conn is set until detach")
    }

    /// Encode `packets` into the connection's buffer under one lock, with
    /// topic aliases. A PUBLISH over the client's Maximum Packet Size is not
    /// written [MQTT-3.1.2-24] and leaves no alias behind (the client never
    /// saw its topic); its packet id goes to `unsent`. Returns the number of
    /// packets written.
    /// Returns (PUBLISH packets written by QoS, QoS 0 messages dropped
    /// because the client is behind). A QoS 0 message is dropped once the outbound buffer is past
    /// half its limit: QoS 0 may be lost, and a slow reader of QoS 0 streams
    /// keeps its connection (QoS 1/2 stay bounded by the inflight window).
    fn write(
        &mut self,
        packets: &mut [Packet],
        unsent: &mut Vec<u16>,
    ) -> Result<([u64; 3], u64), SendError> {
        let (version, aliases) = (self.version, &mut self.aliases);
        let max = self.outbound.max_packet_size() as usize;
        let soft = self.outbound.limit() / 2;
        self.outbound.encode_with(|buf| {
            let (mut written, mut dropped) = ([0u64; 3], 0);
            for p in packets.iter_mut() {
                if matches!(p, Packet::Publish(p) if p.qos == QoS::AtMostOnce) && buf.len() > soft {
                    dropped += 1;
                    continue;
                }
                let start = buf.len();
                let new_alias = match p {
                    Packet::Publish(p) => aliases.apply(p),
                    _ => None,
                };
                if codec::encode(p, version, buf).is_ok() && buf.len() - start <= max {
                    if let Packet::Publish(p) = p {
                        written[p.qos as usize] += 1;
                    }
                    continue;
                }
                buf.truncate(start);
                if let Some(topic) = new_alias {
                    aliases.map.remove(&topic);
                }
                match p {
                    Packet::Publish(p) if p.packet_id != 0 => unsent.push(p.packet_id),
                    Packet::Publish(_) => {}
                    other => warn!(kind = other.kind(), "encode_failed"),
                }
            }
            (written, dropped)
        })
    }
}

impl Drop for ConnLink {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.cast(ConnectionMsg::SessionLost);
        }
    }
}

/// Outbound topic aliases, per connection. [MQTT-3.3.2-9]
struct OutboundAliases {
    max: u16,
    map: HashMap<ByteString, u16>,
}

impl OutboundAliases {
    /// Replace the topic by its alias, or set up a new alias. Returns the
    /// topic of a new alias, so that the caller can take it back if the
    /// packet is not sent after all.
    fn apply(&mut self, p: &mut roost_protocol::Publish) -> Option<ByteString> {
        if self.max == 0 {
            return None;
        }
        if let Some(&alias) = self.map.get(&p.topic) {
            p.properties.topic_alias = Some(alias);
            p.topic = ByteString::new();
            None
        } else if self.map.len() < usize::from(self.max) {
            let alias = self.map.len() as u16 + 1;
            self.map.insert(p.topic.clone(), alias);
            p.properties.topic_alias = Some(alias);
            Some(p.topic.clone())
        } else {
            None
        }
    }
}

pub struct Session;

pub struct SessionArgs {
    pub client_id: ClientId,
    pub ctx: Arc<BrokerCtx>,
    pub inbox: Arc<Inbox>,
    /// A session read back from the store (node start, or a CONNECT after
    /// this client's session actor crashed).
    pub restored: Option<Box<SessionRecord>>,
}

pub struct SessionActorState {
    client_id: ClientId,
    ctx: Arc<BrokerCtx>,
    inbox: Arc<Inbox>,
    session: SessionState,
    link: Option<ConnLink>,
    expiry: u32,
    /// Boxed: 216 B inline in every session actor's task, most clients
    /// have no will.
    will: Option<Box<LastWill>>,
    awaiting_rel: HashSet<u16>,
    /// Bumped on every attach/detach: a timer from an older generation is
    /// stale and ignored.
    generation: u64,
    attached_before: bool,
    /// Drop counts already added to the node-wide counters.
    reported: roost_protocol::session::SessionStats,
    batch: VecDeque<Delivery>,
    out: Vec<Packet>,
    /// Protocol of the last connection (stored with the session).
    version: ProtocolVersion,
    /// The store side of a persistent session (boxed: most sessions are
    /// clean and never have one).
    durable: Option<Box<DurableQueue>>,
    loaded: Vec<Loaded>,
    /// See [`SessionInfo::since_ms`].
    since_ms: u64,
    /// See [`SessionMsg::WatchTwins`].
    twins: Option<Box<SeenIds>>,
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionActorState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Deliveries pushed before our ref was known to the inbox.
        let _ = myself.cast(SessionMsg::Drain);
        let mut st = SessionActorState {
            session: SessionState::new(args.ctx.config.session.clone()),
            client_id: args.client_id,
            ctx: args.ctx,
            inbox: args.inbox,
            link: None,
            expiry: 0,
            will: None,
            awaiting_rel: HashSet::new(),
            generation: 0,
            attached_before: false,
            reported: Default::default(),
            batch: VecDeque::new(),
            out: Vec::new(),
            version: ProtocolVersion::V311,
            durable: None,
            loaded: Vec::new(),
            since_ms: crate::broker::unix_ms(),
            twins: None,
        };
        if let Some(record) = args.restored {
            Box::pin(st.restore(&myself, *record)).await;
        }
        Ok(st)
    }

    // Not an `async fn`: one async block keeps the arguments once, and
    // ractor boxes this future (twice its size) in every session actor.
    #[allow(clippy::manual_async_fn)] // see above
    fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut Self::State,
    ) -> impl std::future::Future<Output = Result<(), ActorProcessingErr>> + Send {
        async move {
            match msg {
                SessionMsg::Drain => st.drain(),
                SessionMsg::Attach(req, reply) => Box::pin(st.attach(*req, reply)).await,
                SessionMsg::Resume => {
                    if let Some(l) = st.link.as_mut() {
                        l.resumed = true;
                    }
                    // Stored messages first go to the queue, behind what
                    // was inflight: resume sends in order.
                    st.load_durable(false);
                    st.session.resume(Instant::now(), &mut st.out);
                    st.flush();
                }
                SessionMsg::PubAck(id) => {
                    let r = st.session.puback(id, Instant::now(), &mut st.out);
                    st.after_ack("puback", id, r);
                }
                SessionMsg::PubRec(id, code) => {
                    let r = st.session.pubrec(id, code, Instant::now(), &mut st.out);
                    st.after_ack("pubrec", id, r);
                }
                SessionMsg::PubComp(id) => {
                    let r = st.session.pubcomp(id, Instant::now(), &mut st.out);
                    st.after_ack("pubcomp", id, r);
                }
                SessionMsg::Subscribe {
                    packet_id,
                    requests,
                } => Box::pin(st.subscribe(packet_id, requests)).await,
                SessionMsg::Unsubscribe { packet_id, filters } => {
                    Box::pin(st.unsubscribe(packet_id, filters)).await
                }
                // Boxed: rare and deep; unboxed they would size every session
                // actor's task for their worst case (idle memory).
                SessionMsg::Closed(c) => Box::pin(st.closed(&myself, *c)).await,
                SessionMsg::Kick(code) => st.kick(code),
                SessionMsg::Discard(code, reply) => {
                    st.kick(code);
                    Box::pin(st.end(&myself, "discarded")).await;
                    let _ = reply.send(());
                }
                SessionMsg::Timer { generation, kind } if generation == st.generation => match kind
                {
                    TimerKind::Will => {
                        st.publish_will();
                        st.store_record();
                    }
                    TimerKind::Expire => Box::pin(st.end(&myself, "expired")).await,
                },
                SessionMsg::Timer { .. } => {}
                SessionMsg::Info(reply) => {
                    let _ = reply.send(st.info());
                }
                SessionMsg::Absorb(messages, reply) => {
                    let _ = reply.send(st.absorb(messages));
                }
                SessionMsg::WatchTwins { seen, for_ms } => {
                    let until = for_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
                    let t = st.twins.get_or_insert_with(|| {
                        debug!(client_id = %st.client_id, "session_watching_for_twin");
                        Box::new(SeenIds {
                            ids: HashSet::new(),
                            full: false,
                            until,
                        })
                    });
                    // An open-ended watch stays open-ended.
                    t.until = match (t.until, until) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                    for id in seen {
                        t.note(&st.client_id, id);
                    }
                }
                SessionMsg::HandOver(redirect, reply) => {
                    // Before the state is taken: a message routed from now
                    // on follows the client (one routed in between may be
                    // in both: a duplicate, never a loss).
                    if let Some(sink) = redirect {
                        let subs = st
                            .session
                            .subscriptions()
                            .iter()
                            .filter(|(f, _)| !f.starts_with("$share/"))
                            .map(|(f, s)| (f.to_string(), s.clone()))
                            .collect();
                        st.ctx.routes.add_redirect(
                            &st.client_id,
                            subs,
                            sink,
                            crate::router::REDIRECT_TTL,
                        );
                        // No new publish routes here from now on; one that
                        // chose this session just before is storing its
                        // copy (microseconds): let it land in the queue
                        // the hand-over reads.
                        Box::pin(st.remove_routes()).await;
                        tokio::time::sleep(HANDOVER_SETTLE).await;
                    }
                    // The connection's inbound QoS 2 state goes along: the
                    // client's DUP resends on the new node are duplicates.
                    Box::pin(st.take_over_link_waiting()).await;
                    let mut handover = st.hand_over();
                    handover.record.awaiting_pubrel = st.awaiting_rel.iter().copied().collect();
                    Box::pin(st.end(&myself, "taken over by another node")).await;
                    let _ = reply.send(Box::new(handover));
                }
            }
            Ok(())
        }
    }
}

impl SeenIds {
    /// Note `id`; false if it was noted before (a second copy).
    fn note(&mut self, client: &ClientId, id: roost_protocol::MessageId) -> bool {
        if id.is_none() {
            return true;
        }
        if self.ids.contains(&id) {
            return false;
        }
        if self.full {
            return true;
        }
        if self.ids.len() >= TWIN_WATCH_MAX {
            self.full = true;
            warn!(client_id = %client, max = TWIN_WATCH_MAX, "session_twin_watch_full: a later merge may duplicate");
            return true;
        }
        self.ids.insert(id);
        true
    }
}

impl SessionActorState {
    fn drain(&mut self) {
        self.inbox.drain_into(&mut self.batch);
        let behind = self.inbox.take_behind();
        let now = Instant::now();
        let online = self.online();
        if let Some(dq) = self.durable.as_mut().filter(|_| behind) {
            dq.mark_behind();
        }
        while let Some(d) = self.batch.pop_front() {
            #[cfg(feature = "test-hooks")]
            crate::test_hooks::maybe_panic_session(&d.message.topic);
            if let Some(t) = self.twins.as_mut() {
                if t.until.is_some_and(|u| now >= u) {
                    self.twins = None;
                } else if !t.note(&self.client_id, d.message.id) {
                    // A second copy (a redirect and a route both brought it).
                    Counters::inc(&self.ctx.counters.merge_duplicates_skipped);
                    continue;
                }
            }
            match self.durable.as_mut() {
                Some(dq) if d.stored.is_some() => dq.offer(d, online),
                _ => self.session.deliver(d, online, now, &mut self.out),
            }
        }
        if online {
            self.load_durable(true);
        }
        // Progress = messages went out toward the client, not into the queue.
        let progressed = !self.out.is_empty();
        self.flush();
        self.report(progressed);
    }

    fn report(&mut self, progressed: bool) {
        let beyond = self.durable.as_ref().map_or(0, |dq| dq.backlog());
        self.inbox
            .report(self.session.mqueue_len() + beyond, progressed);
        self.publish_drop_counts();
    }

    /// Hand stored messages over to the session's queue while it holds
    /// fewer than `MEMORY_WINDOW`; `online`: deliver them (send what the
    /// window takes) rather than only queue them.
    fn load_durable(&mut self, online: bool) {
        let Some(dq) = self.durable.as_mut() else {
            return;
        };
        let room = MEMORY_WINDOW.saturating_sub(self.session.mqueue_len());
        if room == 0 {
            return;
        }
        if let Err(e) = dq.load(room, &mut self.loaded) {
            Counters::inc(&self.ctx.counters.storage_errors);
            error!(client_id = %self.client_id, error = %e, "session_queue_read_failed");
        }
        let now = Instant::now();
        for l in self.loaded.drain(..) {
            match l {
                Loaded::New(d) => self.session.deliver(d, online, now, &mut self.out),
                Loaded::Inflight {
                    packet_id,
                    delivery,
                    released,
                } => self.session.restore_inflight(packet_id, delivery, released),
            }
        }
    }

    /// Write the session's journal to the store, before the packets it
    /// implies are sent.
    fn write_journal(&mut self) {
        let Some(dq) = self.durable.as_mut() else {
            return;
        };
        if let Err(e) = dq.write_journal(&mut self.session) {
            Counters::inc(&self.ctx.counters.storage_errors);
            error!(client_id = %self.client_id, error = %e, "session_journal_write_failed");
        }
    }

    /// The record of this session as stored.
    fn record(&self) -> SessionRecord {
        SessionRecord {
            protocol: StoredProtocol::from(self.version),
            subscriptions: self
                .session
                .subscriptions()
                .iter()
                .map(|(filter, sub)| StoredSubscription {
                    filter: filter.to_string(),
                    options: sub.options.into(),
                    identifier: sub.identifier,
                })
                .collect(),
            expiry_interval_secs: self.expiry,
            disconnected_at_ms: self.link.is_none().then(crate::broker::unix_ms),
            will: self.will.as_deref().map(Into::into),
            // The connection stores the inbound QoS 2 state itself, before
            // every PUBREC and PUBCOMP (`Batch::set_awaiting_rel`); a copy
            // here could only be older.
            awaiting_pubrel: Vec::new(),
        }
    }

    /// Store the record of a persistent session (its subscriptions, will,
    /// expiry changed).
    fn store_record(&mut self) {
        let Some(dq) = self.durable.as_ref() else {
            return;
        };
        if let Err(e) = dq.put_record(&self.record()) {
            Counters::inc(&self.ctx.counters.storage_errors);
            error!(client_id = %self.client_id, error = %e, "session_record_write_failed");
        }
    }

    /// Read back a stored session: subscriptions (routes), will, expiry;
    /// its queue is paged in when a client attaches.
    async fn restore(&mut self, myself: &ActorRef<SessionMsg>, record: SessionRecord) {
        let Some(storage) = self.ctx.storage.clone() else {
            return;
        };
        let now_ms = crate::broker::unix_ms();
        self.since_ms = record.disconnected_at_ms.unwrap_or(now_ms);
        self.version = record.protocol.into();
        self.expiry = record.expiry_interval_secs;
        self.attached_before = true;
        self.awaiting_rel = record.awaiting_pubrel.iter().copied().collect();
        self.durable = Some(Box::new(DurableQueue::new(
            storage,
            self.client_id.clone(),
            true,
        )));
        for s in &record.subscriptions {
            let sub = roost_protocol::session::Subscription {
                options: s.options.into(),
                identifier: s.identifier,
            };
            let filter = ByteString::from(s.filter.as_str());
            self.session.subscribe(filter.clone(), sub.clone());
            self.add_route(filter, sub).await;
        }
        self.inbox.set_store(self.offline_store_mode());
        // The will: published when its delay (counted from the disconnect)
        // is over, or now if it already is.
        let will = record.will.clone().map(LastWill::from);
        let disconnected = record.disconnected_at_ms.unwrap_or(now_ms);
        self.will = will.map(Box::new);
        let expiry_left = record_expiry_left_ms(&record, now_ms);
        if let Some(delay) = self
            .will
            .as_ref()
            .map(|w| u64::from(w.properties.delay_interval.unwrap_or(0)) * 1000)
        {
            let left = (disconnected + delay).saturating_sub(now_ms);
            if left == 0 {
                self.publish_will();
                self.store_record();
            } else if expiry_left.is_none_or(|e| left < e) {
                self.start_timer_ms(myself, left, TimerKind::Will);
            }
        }
        if let Some(left) = expiry_left {
            self.start_timer_ms(myself, left, TimerKind::Expire);
        }
        info!(client_id = %self.client_id, subscriptions = record.subscriptions.len(), "session_restored");
    }

    fn offline_store_mode(&self) -> u8 {
        if self.ctx.config.session.mqueue_store_qos0 {
            STORE_ALL
        } else {
            STORE_QOS12
        }
    }

    /// Write every packet in `out` to the attached connection. A message
    /// too large for the client is discarded as if its delivery had
    /// completed [MQTT-3.1.2-25]: it frees its slot in the window, and what
    /// that lets out of the queue is written in the next round.
    fn flush(&mut self) {
        self.write_journal();
        let mut unsent = Vec::new();
        while !self.out.is_empty() {
            let Some(link) = self.link.as_mut() else {
                self.out.clear();
                return;
            };
            if !link.resumed {
                // Written after the CONNACK, by `Resume`.
                return;
            }
            let result = link.write(&mut self.out, &mut unsent);
            self.out.clear();
            match result {
                Ok((written, dropped)) => {
                    let c = &self.ctx.counters;
                    for (qos, n) in written.into_iter().enumerate() {
                        Counters::add(&c.publish_sent[qos], n);
                    }
                    Counters::add(&c.messages_delivered, written.iter().sum());
                    if dropped > 0 {
                        Counters::add(&self.ctx.counters.messages_dropped_slow_consumer, dropped);
                        debug!(client_id = %self.client_id, dropped, "qos0_dropped_slow_consumer");
                    }
                }
                Err(SendError::Overflow) => {
                    warn!(client_id = %self.client_id, "outbound_buffer_overflow");
                    Counters::inc(&self.ctx.counters.connections_force_closed);
                    self.kick(reason::QUOTA_EXCEEDED);
                    return;
                }
                Err(_) => return,
            }
            if !unsent.is_empty() {
                let (client_id, dropped) = (&self.client_id, unsent.len());
                debug!(%client_id, dropped, "publish_exceeds_client_max_packet_size");
            }
            let now = Instant::now();
            for id in unsent.drain(..) {
                self.session.discard_unsendable(id, now, &mut self.out);
            }
            self.write_journal();
        }
        self.write_journal();
    }

    /// Add this session's new drops to the node-wide counters (metrics).
    fn publish_drop_counts(&mut self) {
        let st = &self.session.stats;
        let c = &self.ctx.counters;
        Counters::add(
            &c.messages_dropped_queue_full,
            st.dropped_queue_full - self.reported.dropped_queue_full,
        );
        Counters::add(
            &c.messages_dropped_expired,
            st.dropped_expired - self.reported.dropped_expired,
        );
        self.reported = st.clone();
    }

    fn after_ack(
        &mut self,
        kind: &'static str,
        packet_id: u16,
        r: Result<(), roost_protocol::session::AckError>,
    ) {
        if let Err(e) = r {
            warn!(client_id = %self.client_id, packet_id, kind, error = %e, "ack_unknown_packet_id");
        }
        self.load_durable(self.online());
        self.flush();
        self.report(true);
    }

    /// Attached, and the CONNACK is written: deliveries go out.
    fn online(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.resumed)
    }

    /// [MQTT-3.1.4-3] the attached connection (if any) is taken over: it
    /// gets DISCONNECT 0x8E. An old will without delay is due now; one
    /// with a delay is cancelled by the new connection. [MQTT-3.1.3-9]
    fn take_over_link(&mut self) {
        let Some(old) = self.link.take() else {
            return;
        };
        info!(client_id = %self.client_id, "takeover_begin");
        let _ = old
            .detach()
            .cast(ConnectionMsg::Kick(reason::SESSION_TAKEN_OVER));
        self.will_at_takeover();
    }

    /// [`Self::take_over_link`] for a new connection of the same client:
    /// the old connection finishes the packets it is handling, hands over
    /// its inbound QoS 2 state and closes, before the new one gets the
    /// session. Otherwise a QoS 2 PUBLISH the old connection routed in the
    /// meantime and the client resends (DUP) on the new one would be routed
    /// twice. [MQTT-4.3.3-9] Bounded: a stuck old connection is kicked.
    async fn take_over_link_waiting(&mut self) {
        let Some(old) = self.link.take() else {
            return;
        };
        info!(client_id = %self.client_id, "takeover_begin");
        let conn = old.detach();
        match ractor::call_t!(
            conn,
            |reply| ConnectionMsg::HandOff(reason::SESSION_TAKEN_OVER, reply),
            HANDOFF_TIMEOUT_MS
        ) {
            Ok(ids) => self.awaiting_rel.extend(ids),
            Err(_) => {
                let _ = conn.cast(ConnectionMsg::Kick(reason::SESSION_TAKEN_OVER));
            }
        }
        self.will_at_takeover();
    }

    fn will_at_takeover(&mut self) {
        if self
            .will
            .as_ref()
            .is_some_and(|w| w.properties.delay_interval.unwrap_or(0) == 0)
        {
            self.publish_will();
        }
        self.will = None;
    }

    /// Everything this session holds for its client, in order, for another
    /// node: inflight, queue, what waits in the inbox, what is only on
    /// disk. Expired messages are left out. The session is empty after.
    /// See [`SessionMsg::Absorb`]. A persistent session stores them in its
    /// queue (bounded by `max_mqueue_len`, as a publish would), a clean one
    /// delivers them like routed messages. What was inflight on the other
    /// node goes as new messages: the other connection never acknowledged
    /// it. Released QoS 2 exchanges (only a PUBREL owed there) are done.
    fn absorb(&mut self, mut queued: Vec<roost_storage::QueuedMessage>) -> usize {
        if let Some(t) = self.twins.as_mut() {
            // Redirects are still coming (a peer's late backlog): their
            // route-borne twins may too, so a timed watch lasts as long.
            if let Some(u) = t.until.as_mut() {
                *u = (*u).max(Instant::now() + TWIN_WATCH_AFTER_ABSORB);
            }
            // The other session's copies of messages this one got too;
            // the rest noted, so that a copy coming later is skipped.
            let client = &self.client_id;
            let before = queued.len();
            queued.retain(|q| t.note(client, q.id.into()));
            let skipped = (before - queued.len()) as u64;
            if skipped > 0 {
                Counters::add(&self.ctx.counters.merge_duplicates_skipped, skipped);
                info!(client_id = %self.client_id, skipped, "session_merge_duplicates_skipped");
            }
        }
        let (now, now_ms) = (Instant::now(), crate::broker::unix_ms());
        let n = queued.len();
        let online = self.online();
        let kept = if let Some(dq) = self.durable.as_mut() {
            let max = self.ctx.config.session.max_mqueue_len as u64;
            match dq.append(&queued, max) {
                Ok(n) => n,
                Err(e) => {
                    Counters::inc(&self.ctx.counters.storage_errors);
                    error!(client_id = %self.client_id, error = %e, "session_absorb_store_failed");
                    0
                }
            }
        } else {
            for q in queued {
                let message = q.message.into_message(now, now_ms).with_id(q.id.into());
                let d = Delivery {
                    message: Arc::new(message),
                    opts: q.delivery.into(),
                    stored: None,
                };
                self.session.deliver(d, online, now, &mut self.out);
            }
            n
        };
        if kept < n {
            warn!(client_id = %self.client_id, refused = n - kept, "session_absorb_queue_full");
        }
        if online {
            self.load_durable(true);
        }
        let progressed = !self.out.is_empty();
        self.flush();
        self.report(progressed);
        kept
    }

    fn hand_over(&mut self) -> SessionHandover {
        self.take_over_link();
        // A delayed will of an offline session is cancelled by the new
        // connection, wherever it is. [MQTT-3.1.3-9]
        self.will = None;
        let (now, now_ms) = (Instant::now(), crate::broker::unix_ms());
        let entry = |d: &Delivery| QueuedMessage::from_delivery(&d.message, &d.opts, now, now_ms);
        let mut messages = Vec::new();
        let (inflight, queued) = self.session.take_all();
        for (packet_id, d) in inflight {
            messages.push(match d {
                Some(d) => HandoverMessage::published(entry(&d), packet_id),
                None => HandoverMessage::released(packet_id),
            });
        }
        for d in queued.iter().filter(|d| !d.message.is_expired(now)) {
            messages.push(HandoverMessage::queued(entry(d)));
        }
        // Stored deliveries are on disk too: read below, in seq order.
        self.inbox.drain_into(&mut self.batch);
        let fresh: Vec<Delivery> = self
            .batch
            .drain(..)
            .filter(|d| d.stored.is_none())
            .collect();
        if let Some(dq) = self.durable.as_mut() {
            dq.mark_behind();
            loop {
                let before = self.loaded.len();
                if let Err(e) = dq.load(MEMORY_WINDOW, &mut self.loaded) {
                    Counters::inc(&self.ctx.counters.storage_errors);
                    error!(client_id = %self.client_id, error = %e, "session_queue_read_failed");
                    break;
                }
                if self.loaded.len() == before {
                    break;
                }
            }
            for l in self.loaded.drain(..) {
                messages.push(match l {
                    Loaded::New(d) if d.message.is_expired(now) => continue,
                    Loaded::New(d) => HandoverMessage::queued(entry(&d)),
                    Loaded::Inflight {
                        packet_id,
                        released: true,
                        ..
                    } => HandoverMessage::released(packet_id),
                    Loaded::Inflight {
                        packet_id,
                        delivery,
                        ..
                    } => HandoverMessage::published(entry(&delivery), packet_id),
                });
            }
        }
        for d in fresh.iter().filter(|d| !d.message.is_expired(now)) {
            messages.push(HandoverMessage::queued(entry(d)));
        }
        let record = self.record();
        info!(client_id = %self.client_id, messages = messages.len(), "session_handed_over");
        SessionHandover { record, messages }
    }

    async fn attach(&mut self, req: AttachRequest, reply: RpcReplyPort<Attached>) {
        self.take_over_link_waiting().await;
        self.generation += 1;
        // A session that served a connection before is resumed. A clean
        // start always gets a fresh session actor from the registry.
        let session_present = std::mem::replace(&mut self.attached_before, true);
        let info = req.info;
        self.since_ms = crate::broker::unix_ms();
        self.session
            .set_client_receive_maximum(info.receive_maximum);
        self.expiry = info.session_expiry;
        self.will = info.will.clone().map(Box::new);
        self.version = info.version;
        self.link = Some(ConnLink {
            conn: Some(req.conn),
            resumed: false,
            conn_id: req.conn_id,
            outbound: req.outbound,
            version: info.version,
            aliases: OutboundAliases {
                max: info.topic_alias_maximum,
                map: HashMap::new(),
            },
        });
        let awaiting_rel = std::mem::take(&mut self.awaiting_rel);
        self.attach_store(session_present);
        let _ = reply.send(Attached {
            session_present,
            awaiting_rel,
            stored: self.durable.is_some(),
        });
    }

    /// Store the session as the new connection made it, before the
    /// CONNACK: a persistent session is created (or updated) in the store;
    /// a new clean session removes whatever an earlier one left there.
    fn attach_store(&mut self, session_present: bool) {
        let Some(storage) = self.ctx.storage.as_ref() else {
            return;
        };
        if self.durable.is_none() && self.expiry > 0 {
            let dq = DurableQueue::new(storage.clone(), self.client_id.clone(), false);
            if let Err(e) = dq.put_new(&self.record()) {
                Counters::inc(&self.ctx.counters.storage_errors);
                error!(client_id = %self.client_id, error = %e, "session_record_write_failed");
            }
            self.durable = Some(Box::new(dq));
        } else if self.durable.is_some() {
            self.store_record();
        } else if !session_present && storage.has_session(&self.client_id) {
            let dq = DurableQueue::new(storage.clone(), self.client_id.clone(), false);
            if let Err(e) = dq.delete() {
                Counters::inc(&self.ctx.counters.storage_errors);
                error!(client_id = %self.client_id, error = %e, "session_delete_failed");
            }
        }
        if self.durable.is_some() {
            self.inbox.set_store(STORE_QOS12);
        }
    }

    async fn subscribe(&mut self, packet_id: u16, requests: Vec<SubscribeRequest>) {
        let Some(version) = self.link.as_ref().map(|l| l.version) else {
            return;
        };
        let mut codes = Vec::with_capacity(requests.len());
        let mut retained = Vec::new();
        let now = Instant::now();
        for req in requests {
            if let Some(code) = req.refused {
                codes.push(code);
                continue;
            }
            let max = self.ctx.config.max_subscriptions;
            let existed = self.session.subscriptions().contains_key(&req.filter);
            if max > 0 && !existed && self.session.subscriptions().len() >= max {
                codes.push(reason::QUOTA_EXCEEDED);
                continue;
            }
            let sub = req.subscription.clone();
            self.session.subscribe(req.filter.clone(), sub.clone());
            self.add_route(req.filter.clone(), sub.clone()).await;
            codes.push(sub.options.qos as u8);
            let shared = matches!(topic::parse_shared(&req.filter), Ok(Some(_)));
            let send = match sub.options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => !existed,
                RetainHandling::Never => false,
            };
            // Retained messages are not sent to shared subscriptions. [MQTT-4.8.2]
            if send && !shared {
                for m in self.ctx.retained.matching(&req.filter, now) {
                    retained.push(Delivery::new(m.clone(), retained_opts(&m, &sub)));
                }
            }
        }
        // Stored before the SUBACK: an acknowledged subscription survives.
        self.store_record();
        self.out.push(suback(version, packet_id, codes));
        self.flush();
        for d in retained {
            self.session.deliver(d, true, now, &mut self.out);
        }
        self.flush();
    }

    async fn add_route(
        &self,
        filter: ByteString,
        subscription: roost_protocol::session::Subscription,
    ) {
        let Some(router) = self.ctx.router() else {
            return;
        };
        let entry = RouteEntry {
            subscription,
            inbox: self.inbox.clone(),
        };
        let client = self.client_id.clone();
        let r = ractor::call!(router, |reply| RouterMsg::Subscribe {
            client,
            filter,
            entry,
            reply
        });
        if let Err(e) = r {
            warn!(client_id = %self.client_id, error = %e, "route_add_failed");
        }
    }

    async fn unsubscribe(&mut self, packet_id: u16, filters: Vec<ByteString>) {
        let Some(version) = self.link.as_ref().map(|l| l.version) else {
            return;
        };
        let mut codes = Vec::with_capacity(filters.len());
        for f in filters {
            let existed = self.session.unsubscribe(&f);
            if existed {
                if let Some(router) = self.ctx.router() {
                    let client = self.client_id.clone();
                    let _ = ractor::call!(router, |reply| RouterMsg::Unsubscribe {
                        client,
                        filter: f,
                        reply
                    });
                }
            }
            codes.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.store_record();
        self.out.push(unsuback(version, packet_id, codes));
        self.flush();
    }

    async fn closed(&mut self, myself: &ActorRef<SessionMsg>, c: Closed) {
        if self.link.as_ref().map(|l| l.conn_id) != Some(c.conn_id) {
            return; // an old connection, already taken over
        }
        if let Some(link) = self.link.take() {
            link.detach();
        }
        self.since_ms = crate::broker::unix_ms();
        self.generation += 1;
        self.awaiting_rel = c.awaiting_rel;
        if let Some(e) = c.session_expiry {
            self.expiry = e;
        }
        if !c.publish_will {
            self.will = None;
        }
        let will_delay = self
            .will
            .as_ref()
            .map(|w| w.properties.delay_interval.unwrap_or(0));
        if self.expiry == 0 {
            self.end(myself, "connection_closed").await;
            return;
        }
        if self.durable.is_some() {
            self.inbox.set_store(self.offline_store_mode());
        }
        match will_delay {
            Some(0) => self.publish_will(),
            // [MQTT-3.1.2-...] the will waits for min(delay, session expiry).
            Some(d) if d < self.expiry => self.start_timer(myself, d, TimerKind::Will),
            _ => {}
        }
        // With the disconnect time: expiry goes on counting across restarts.
        self.store_record();
        if self.expiry != u32::MAX {
            self.start_timer(myself, self.expiry, TimerKind::Expire);
        }
    }

    fn start_timer(&self, myself: &ActorRef<SessionMsg>, secs: u32, kind: TimerKind) {
        self.start_timer_ms(myself, u64::from(secs) * 1000, kind);
    }

    fn start_timer_ms(&self, myself: &ActorRef<SessionMsg>, ms: u64, kind: TimerKind) {
        let generation = self.generation;
        myself.send_after(Duration::from_millis(ms), move || SessionMsg::Timer {
            generation,
            kind,
        });
    }

    fn publish_will(&mut self) {
        if let Some(w) = self.will.take() {
            let msg = Message::from_will(*w, self.client_id.clone(), Instant::now())
                .with_id(roost_protocol::MessageId::next());
            debug!(client_id = %self.client_id, topic = %msg.topic, "will_published");
            crate::broker::publish(&self.ctx, Arc::new(msg));
        }
    }

    fn kick(&mut self, code: u8) {
        if let Some(link) = self.link.as_ref() {
            if let Some(conn) = link.conn.as_ref() {
                let _ = conn.cast(ConnectionMsg::Kick(code));
            }
        }
    }

    /// The session ends: will due now, routes dropped, actor stopped.
    async fn end(&mut self, myself: &ActorRef<SessionMsg>, why: &'static str) {
        self.publish_will();
        self.inbox.set_store(STORE_NONE);
        if let Some(dq) = self.durable.take() {
            if let Err(e) = dq.delete() {
                Counters::inc(&self.ctx.counters.storage_errors);
                error!(client_id = %self.client_id, error = %e, "session_delete_failed");
            }
        }
        if let Some(link) = self.link.take() {
            link.detach();
        }
        self.remove_routes().await;
        debug!(client_id = %self.client_id, why, "session_ended");
        myself.stop(Some(why.to_string()));
    }

    /// This session's routes out of the route table (answers once done).
    async fn remove_routes(&self) {
        if let Some(router) = self.ctx.router() {
            let filters: Vec<ByteString> = self.session.subscriptions().keys().cloned().collect();
            let client = self.client_id.clone();
            let _ = ractor::call!(router, |reply| RouterMsg::RemoveClient {
                client,
                filters: Some(filters),
                reply: Some(reply)
            });
        }
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            client_id: self.client_id.clone(),
            connected: self.link.is_some(),
            subscriptions: self
                .session
                .subscriptions()
                .keys()
                .map(|k| k.to_string())
                .collect(),
            inflight: self.session.inflight_len(),
            queued: self.session.mqueue_len(),
            dropped_queue_full: self.session.stats.dropped_queue_full,
            inbox_dropped: self.inbox.dropped(),
            since_ms: self.since_ms,
        }
    }
}
